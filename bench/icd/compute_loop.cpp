// Compute loop: submit a recorded dispatch, wait for its fence, reset the fence, again, as a
// compute application that needs each result before the next step does. The small job (one
// 64-invocation workgroup) measures what a submit-and-wait cycle costs; the large job (1M
// invocations, 64 steps each) measures whether that cost disappears under real work.
//
// Through the bypass the submit is sent without waiting, the fence wait is a synchronous call
// that bypassd answers from a waiter thread, and the reset is sent without waiting.
#include <string>
#include <vector>

#include "bench_util.h"
#include "check.h"
#include "commands.h"
#include "pipeline.h"
#include "resources.h"
#include "vk_check.h"

namespace bypass::bench {
namespace {

using samples::vk_check;

constexpr uint32_t kComputeSpirv[] = {
#include "work.comp.inc"
};

constexpr uint32_t kLocalSize = 64;
constexpr uint32_t kSeed = 12345;

struct Params {
  uint32_t count;
  uint32_t rounds;
  uint32_t seed;
};

uint32_t step(uint32_t x, uint32_t times) {
  for (uint32_t i = 0; i < times; ++i) x = x * 1664525u + 1013904223u + kSeed;
  return x;
}

struct Job {
  const char* name;
  uint32_t count;
  uint32_t rounds;
  uint32_t iterations;
  uint32_t warmup;
  uint32_t checked;  // elements the CPU recomputes (evenly spread)
};

void run_job(const samples::Context& ctx, const Job& job, Report& out) {
  VkDevice device = ctx.device();
  samples::Buffer data(ctx, VkDeviceSize{job.count} * 4, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT,
                       samples::MemoryUse::kReadback);
  auto values = data.mapped<uint32_t>();
  for (uint32_t i = 0; i < job.count; ++i) values[i] = i;
  data.flush();

  auto set_layout =
      create_single_binding_layout(device, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, VK_SHADER_STAGE_COMPUTE_BIT);
  const VkDescriptorSetLayout set_layouts[] = {set_layout.get()};
  const VkPushConstantRange push_range{VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(Params)};
  auto layout = samples::create_pipeline_layout(device, set_layouts, std::span(&push_range, 1));
  auto module = samples::create_shader_module(device, kComputeSpirv);
  auto pipeline = samples::create_compute_pipeline(device, module.get(), layout.get());
  auto pool = create_pool(device, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1);
  VkDescriptorSet set = allocate_set(device, pool.get(), set_layout.get());
  write_buffer_descriptor(device, set, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, data.get(), 0, VK_WHOLE_SIZE);

  // Recorded once, submitted every iteration.
  auto cmd_pool = samples::create_command_pool(device, ctx.queue_family());
  VkCommandBuffer cmd =
      samples::allocate_command_buffers(device, cmd_pool.get(), VK_COMMAND_BUFFER_LEVEL_PRIMARY, 1)[0];
  samples::begin_command_buffer(cmd);
  vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.get());
  vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout.get(), 0, 1, &set, 0, nullptr);
  const Params params{job.count, job.rounds, kSeed};
  vkCmdPushConstants(cmd, layout.get(), VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof params, &params);
  vkCmdDispatch(cmd, (job.count + kLocalSize - 1) / kLocalSize, 1, 1);
  samples::record_memory_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                                 VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                                 VK_ACCESS_HOST_READ_BIT | VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
  samples::end_command_buffer(cmd);
  auto fence = samples::create_fence(device);

  auto iterate = [&] {
    submit(ctx.queue(), cmd, fence.get());
    wait_and_reset(device, fence.get());
  };
  for (uint32_t i = 0; i < job.warmup; ++i) iterate();
  std::vector<double> per_iteration;
  per_iteration.reserve(job.iterations);
  CpuMeter cpu;
  cpu.start();
  const auto start = Clock::now();
  auto last = start;
  for (uint32_t i = 0; i < job.iterations; ++i) {
    iterate();
    const auto now = Clock::now();
    per_iteration.push_back(seconds_between(last, now) * 1e6);
    last = now;
  }
  const double elapsed = seconds_between(start, last);
  cpu.stop();

  data.invalidate();
  const uint32_t total_rounds = job.rounds * (job.warmup + job.iterations);
  samples::ResultCheck check(std::string(job.name) + " results");
  for (uint32_t k = 0; k < job.checked; ++k) {
    const uint32_t i = static_cast<uint32_t>(uint64_t{k} * job.count / job.checked);
    check.expect_equal("element", i, values[i], step(i, total_rounds));
  }
  check.finish();

  out.set("elements", job.count);
  out.set("rounds", job.rounds);
  out.set("iterations", job.iterations);
  out.set("seconds", elapsed);
  out.set("iterations_per_s", job.iterations / elapsed);
  out.set("us_per_iteration", elapsed * 1e6 / job.iterations);
  out.set("median_us_per_iteration", median(per_iteration));
  cpu.report(out);
}

}  // namespace

void run_compute_small(const samples::Context& ctx, Scale scale, Report& out) {
  run_job(ctx, {"compute_small", kLocalSize, 16, pick(scale, 50, 4000, 10000), pick(scale, 5, 100, 200), kLocalSize},
          out);
}

void run_compute_large(const samples::Context& ctx, Scale scale, Report& out) {
  run_job(ctx, {"compute_large", 1u << 20, 16, pick(scale, 2, 10, 30), pick(scale, 1, 2, 3), 1024}, out);
}

}  // namespace bypass::bench
