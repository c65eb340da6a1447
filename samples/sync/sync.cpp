// sync: checks that fences, binary and timeline semaphores, events, queries and idle waits
// behave exactly as the Vulkan spec says, including timeouts and waits that another thread
// (or the GPU) ends. The result file lists each check and its outcome; it is the same on any
// conformant driver, so the e2e tests compare the bypass run with the native one.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "args.h"
#include "check.h"
#include "context.h"
#include "output.h"
#include "sample_main.h"
#include "vk_check.h"

namespace bypass::samples {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kMs = 1'000'000;

class Log {
 public:
  explicit Log(ResultCheck& check) : check_(check) {}
  void expect(const std::string& what, VkResult got, VkResult want) {
    text_ += what + ": " + vk_result_name(got) + "\n";
    check_.expect(got == want, what + ": got " + vk_result_name(got) + ", want " + vk_result_name(want));
  }
  void expect_value(const std::string& what, uint64_t got, uint64_t want) {
    text_ += what + ": " + std::to_string(got) + "\n";
    check_.expect(got == want, what + ": got " + std::to_string(got) + ", want " + std::to_string(want));
  }
  void expect_true(const std::string& what, bool ok) {
    text_ += what + ": " + (ok ? "yes" : "no") + "\n";
    check_.expect(ok, what);
  }
  const std::string& text() const { return text_; }

 private:
  ResultCheck& check_;
  std::string text_;
};

struct Cmd {
  VkDevice device;
  VkCommandPool pool = VK_NULL_HANDLE;
  VkCommandBuffer cb = VK_NULL_HANDLE;
  Cmd(VkDevice d, uint32_t family) : device(d) {
    VkCommandPoolCreateInfo pi{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pi.queueFamilyIndex = family;
    vk_check(vkCreateCommandPool(d, &pi, nullptr, &pool), "vkCreateCommandPool");
    VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    ai.commandPool = pool;
    ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    ai.commandBufferCount = 1;
    vk_check(vkAllocateCommandBuffers(d, &ai, &cb), "vkAllocateCommandBuffers");
  }
  ~Cmd() { vkDestroyCommandPool(device, pool, nullptr); }
  void begin() {
    vk_check(vkResetCommandBuffer(cb, 0), "vkResetCommandBuffer");
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    vk_check(vkBeginCommandBuffer(cb, &bi), "vkBeginCommandBuffer");
  }
  void end() { vk_check(vkEndCommandBuffer(cb), "vkEndCommandBuffer"); }
};

void check_fences(const Context& ctx, Log& log) {
  VkDevice dev = ctx.device();
  VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkFence fence, signaled;
  vk_check(vkCreateFence(dev, &fi, nullptr, &fence), "vkCreateFence");
  fi.flags = VK_FENCE_CREATE_SIGNALED_BIT;
  vk_check(vkCreateFence(dev, &fi, nullptr, &signaled), "vkCreateFence");
  log.expect("fence created unsignaled: status", vkGetFenceStatus(dev, fence), VK_NOT_READY);
  log.expect("fence created signaled: status", vkGetFenceStatus(dev, signaled), VK_SUCCESS);
  log.expect("wait on unsignaled fence, timeout 0", vkWaitForFences(dev, 1, &fence, VK_TRUE, 0), VK_TIMEOUT);
  const auto t0 = Clock::now();
  log.expect("wait on unsignaled fence, timeout 20 ms", vkWaitForFences(dev, 1, &fence, VK_TRUE, 20 * kMs), VK_TIMEOUT);
  log.expect_true("that wait lasted at least 20 ms", Clock::now() - t0 >= std::chrono::milliseconds(20));
  VkFence both[2] = {fence, signaled};
  log.expect("wait any of (unsignaled, signaled)", vkWaitForFences(dev, 2, both, VK_FALSE, 0), VK_SUCCESS);
  log.expect("wait all of (unsignaled, signaled), timeout 0", vkWaitForFences(dev, 2, both, VK_TRUE, 0), VK_TIMEOUT);
  VkSubmitInfo empty{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  vk_check(vkQueueSubmit(ctx.queue(), 1, &empty, fence), "vkQueueSubmit");
  log.expect("wait on submitted fence", vkWaitForFences(dev, 1, &fence, VK_TRUE, 5000 * kMs), VK_SUCCESS);
  log.expect("submitted fence: status", vkGetFenceStatus(dev, fence), VK_SUCCESS);
  log.expect("reset fences", vkResetFences(dev, 1, &fence), VK_SUCCESS);
  log.expect("reset fence: status", vkGetFenceStatus(dev, fence), VK_NOT_READY);
  vkDestroyFence(dev, fence, nullptr);
  vkDestroyFence(dev, signaled, nullptr);
}

void check_binary_semaphores(const Context& ctx, Log& log) {
  VkDevice dev = ctx.device();
  VkSemaphoreCreateInfo si{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO};
  VkSemaphore sem;
  vk_check(vkCreateSemaphore(dev, &si, nullptr, &sem), "vkCreateSemaphore");
  VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkFence fence;
  vk_check(vkCreateFence(dev, &fi, nullptr, &fence), "vkCreateFence");
  VkSubmitInfo signal{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  signal.signalSemaphoreCount = 1;
  signal.pSignalSemaphores = &sem;
  VkPipelineStageFlags stage = VK_PIPELINE_STAGE_ALL_COMMANDS_BIT;
  VkSubmitInfo wait{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  wait.waitSemaphoreCount = 1;
  wait.pWaitSemaphores = &sem;
  wait.pWaitDstStageMask = &stage;
  log.expect("submit signalling a binary semaphore", vkQueueSubmit(ctx.queue(), 1, &signal, VK_NULL_HANDLE),
             VK_SUCCESS);
  log.expect("submit waiting on it, with a fence", vkQueueSubmit(ctx.queue(), 1, &wait, fence), VK_SUCCESS);
  log.expect("the fence signals", vkWaitForFences(dev, 1, &fence, VK_TRUE, 5000 * kMs), VK_SUCCESS);
  vkDestroyFence(dev, fence, nullptr);
  vkDestroySemaphore(dev, sem, nullptr);
}

void check_timeline_semaphores(const Context& ctx, Log& log) {
  VkDevice dev = ctx.device();
  VkSemaphoreTypeCreateInfo ti{VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO};
  ti.semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE;
  ti.initialValue = 5;
  VkSemaphoreCreateInfo si{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, &ti};
  VkSemaphore sem;
  vk_check(vkCreateSemaphore(dev, &si, nullptr, &sem), "vkCreateSemaphore");
  uint64_t value = 0;
  log.expect("timeline counter query", vkGetSemaphoreCounterValue(dev, sem, &value), VK_SUCCESS);
  log.expect_value("initial timeline value", value, 5);
  VkSemaphoreSignalInfo sig{VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO};
  sig.semaphore = sem;
  sig.value = 10;
  log.expect("host signal to 10", vkSignalSemaphore(dev, &sig), VK_SUCCESS);
  vkGetSemaphoreCounterValue(dev, sem, &value);
  log.expect_value("value after host signal", value, 10);
  VkSemaphoreWaitInfo wi{VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO};
  wi.semaphoreCount = 1;
  wi.pSemaphores = &sem;
  uint64_t want = 10;
  wi.pValues = &want;
  log.expect("host wait for 10", vkWaitSemaphores(dev, &wi, 0), VK_SUCCESS);
  want = 20;
  log.expect("host wait for 20, timeout 10 ms", vkWaitSemaphores(dev, &wi, 10 * kMs), VK_TIMEOUT);
  // A GPU signal to 20.
  uint64_t signal_value = 20;
  VkTimelineSemaphoreSubmitInfo tsi{VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO};
  tsi.signalSemaphoreValueCount = 1;
  tsi.pSignalSemaphoreValues = &signal_value;
  VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO, &tsi};
  submit.signalSemaphoreCount = 1;
  submit.pSignalSemaphores = &sem;
  log.expect("submit signalling 20", vkQueueSubmit(ctx.queue(), 1, &submit, VK_NULL_HANDLE), VK_SUCCESS);
  log.expect("host wait for 20", vkWaitSemaphores(dev, &wi, 5000 * kMs), VK_SUCCESS);
  // A wait that another thread ends: the waiting thread blocks in the driver (on the host,
  // for bypass) while this thread's signal must still get through.
  std::atomic<VkResult> waited{VK_NOT_READY};
  std::thread waiter([&] {
    uint64_t w = 30;
    VkSemaphoreWaitInfo info = wi;
    info.pValues = &w;
    waited = vkWaitSemaphores(dev, &info, 10'000 * kMs);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  log.expect_value("waiter still blocked before the signal", waited.load() == VK_NOT_READY, 1);
  sig.value = 30;
  log.expect("host signal to 30 from another thread", vkSignalSemaphore(dev, &sig), VK_SUCCESS);
  waiter.join();
  log.expect("the blocked wait for 30 returns", waited.load(), VK_SUCCESS);
  vkDestroySemaphore(dev, sem, nullptr);
}

void check_events(const Context& ctx, Log& log) {
  VkDevice dev = ctx.device();
  VkEventCreateInfo ei{VK_STRUCTURE_TYPE_EVENT_CREATE_INFO};
  VkEvent ev;
  vk_check(vkCreateEvent(dev, &ei, nullptr, &ev), "vkCreateEvent");
  log.expect("new event: status", vkGetEventStatus(dev, ev), VK_EVENT_RESET);
  log.expect("host set", vkSetEvent(dev, ev), VK_SUCCESS);
  log.expect("after set: status", vkGetEventStatus(dev, ev), VK_EVENT_SET);
  log.expect("host reset", vkResetEvent(dev, ev), VK_SUCCESS);
  log.expect("after reset: status", vkGetEventStatus(dev, ev), VK_EVENT_RESET);
  // The GPU sets it.
  Cmd cmd(dev, ctx.queue_family());
  cmd.begin();
  vkCmdSetEvent(cmd.cb, ev, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT);
  cmd.end();
  VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkFence fence;
  vk_check(vkCreateFence(dev, &fi, nullptr, &fence), "vkCreateFence");
  VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  submit.commandBufferCount = 1;
  submit.pCommandBuffers = &cmd.cb;
  vk_check(vkQueueSubmit(ctx.queue(), 1, &submit, fence), "vkQueueSubmit");
  log.expect("submit with vkCmdSetEvent completes", vkWaitForFences(dev, 1, &fence, VK_TRUE, 5000 * kMs), VK_SUCCESS);
  log.expect("after the GPU set it: status", vkGetEventStatus(dev, ev), VK_EVENT_SET);
  vkDestroyFence(dev, fence, nullptr);
  vkDestroyEvent(dev, ev, nullptr);
}

void check_queries(const Context& ctx, Log& log) {
  VkDevice dev = ctx.device();
  if (ctx.properties().limits.timestampComputeAndGraphics == VK_FALSE) {
    log.expect_true("timestamps supported", false);
    return;
  }
  VkQueryPoolCreateInfo qi{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
  qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
  qi.queryCount = 2;
  VkQueryPool pool;
  vk_check(vkCreateQueryPool(dev, &qi, nullptr, &pool), "vkCreateQueryPool");
  vkResetQueryPool(dev, pool, 0, 2);
  uint64_t results[4] = {~0ull, ~0ull, ~0ull, ~0ull};
  log.expect("results of unwritten queries",
             vkGetQueryPoolResults(dev, pool, 0, 2, sizeof(results), results, 16, VK_QUERY_RESULT_64_BIT),
             VK_NOT_READY);
  log.expect("results with availability, unwritten",
             vkGetQueryPoolResults(dev, pool, 0, 2, sizeof(results), results, 16,
                                   VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WITH_AVAILABILITY_BIT),
             VK_NOT_READY);
  log.expect_value("availability of query 0 before the submit", results[1], 0);
  Cmd cmd(dev, ctx.queue_family());
  cmd.begin();
  vkCmdWriteTimestamp(cmd.cb, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, pool, 0);
  vkCmdWriteTimestamp(cmd.cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, pool, 1);
  cmd.end();
  VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  submit.commandBufferCount = 1;
  submit.pCommandBuffers = &cmd.cb;
  vk_check(vkQueueSubmit(ctx.queue(), 1, &submit, VK_NULL_HANDLE), "vkQueueSubmit");
  log.expect(
      "results with WAIT",
      vkGetQueryPoolResults(dev, pool, 0, 2, sizeof(results), results, 16,
                            VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT | VK_QUERY_RESULT_WITH_AVAILABILITY_BIT),
      VK_SUCCESS);
  log.expect_value("availability of query 0", results[1], 1);
  log.expect_value("availability of query 1", results[3], 1);
  log.expect_true("timestamps ordered", results[2] >= results[0]);
  log.expect("queue wait idle", vkQueueWaitIdle(ctx.queue()), VK_SUCCESS);
  log.expect("device wait idle", vkDeviceWaitIdle(dev), VK_SUCCESS);
  vkDestroyQueryPool(dev, pool, nullptr);
}

void run(int argc, char** argv) {
  CommonArgs args;
  ArgParser parser("sync",
                   "Checks fences, semaphores (binary and timeline), events, queries and idle waits\n"
                   "against the Vulkan spec. --out writes one line per check with its outcome.",
                   args);
  if (!parser.parse(argc, argv)) return;
  ContextOptions options;
  options.app_name = "bypass-sync";
  options.min_api_version = VK_API_VERSION_1_2;
  options.timeline_semaphore = true;
  options.host_query_reset = true;
  Context ctx(options);
  ResultCheck check("sync");
  Log log(check);
  for (uint32_t frame = 0; frame < args.frames; ++frame) {
    check_fences(ctx, log);
    check_binary_semaphores(ctx, log);
    check_timeline_semaphores(ctx, log);
    check_events(ctx, log);
    check_queries(ctx, log);
  }
  if (!args.out.empty())
    write_file(args.out, std::span(reinterpret_cast<const uint8_t*>(log.text().data()), log.text().size()));
  check.finish();
  std::printf("sync: OK, %llu checks x %u round(s) on %s%s%s\n", static_cast<unsigned long long>(check.checked()),
              args.frames, ctx.properties().deviceName, args.out.empty() ? "" : ", wrote ", args.out.c_str());
}

}  // namespace
}  // namespace bypass::samples

int main(int argc, char** argv) {
  return bypass::samples::sample_main("sync", [&] { bypass::samples::run(argc, argv); });
}
