// Synchronous round trip: vkGetFenceStatus on a fence that is already signalled, a call whose
// answer the guest must get from the host. Measured two ways:
//   back to back: calls follow each other at once, so bypassd's decoder is still spinning on
//     the ring when the next one arrives (the best case);
//   after idle: each call follows a 1 ms pause, long enough for bypassd's decoder to have
//     stopped spinning and gone to sleep on the ring's futex, so the call includes a wake-up.
// Natively the call is a few tens of nanoseconds; it is measured the same way for reference.
#include <thread>
#include <vector>

#include "bench_util.h"
#include "check.h"
#include "commands.h"
#include "vk_check.h"

namespace bypass::bench {

void run_sync_rtt(const samples::Context& ctx, Scale scale, Report& out) {
  VkDevice device = ctx.device();
  const uint32_t hot_calls = pick(scale, 500, 20'000, 50'000);
  const uint32_t idle_calls = pick(scale, 20, 200, 500);
  constexpr auto kIdleGap = std::chrono::milliseconds(1);
  auto fence = samples::create_fence(device, /*signaled=*/true);

  samples::ResultCheck check("vkGetFenceStatus results");
  auto call = [&](uint64_t index) {
    const VkResult r = vkGetFenceStatus(device, fence.get());
    check.expect_equal("vkGetFenceStatus result of call", index, static_cast<uint64_t>(r), VK_SUCCESS);
  };

  for (uint32_t i = 0; i < hot_calls / 10 + 10; ++i) call(i);  // warm-up
  // Back to back: the mean over the loop (no clock reads inside), then per-call samples for
  // the median and tail. The CPU time covers the back-to-back calls only.
  CpuMeter cpu;
  cpu.start();
  auto start = Clock::now();
  for (uint32_t i = 0; i < hot_calls; ++i) call(i);
  const double hot_mean_us = seconds_between(start, Clock::now()) * 1e6 / hot_calls;
  std::vector<double> hot;
  hot.reserve(hot_calls);
  for (uint32_t i = 0; i < hot_calls; ++i) {
    const auto t0 = Clock::now();
    call(i);
    hot.push_back(seconds_between(t0, Clock::now()) * 1e6);
  }
  cpu.stop();

  std::vector<double> idle;
  idle.reserve(idle_calls);
  for (uint32_t i = 0; i < idle_calls; ++i) {
    std::this_thread::sleep_for(kIdleGap);
    const auto t0 = Clock::now();
    call(i);
    idle.push_back(seconds_between(t0, Clock::now()) * 1e6);
  }
  check.finish();

  double idle_sum = 0;
  for (double v : idle) idle_sum += v;
  out.set("hot_calls", hot_calls);
  out.set("idle_calls", idle_calls);
  out.set("idle_gap_us", std::chrono::duration<double, std::micro>(kIdleGap).count());
  out.set("hot_mean_us", hot_mean_us);
  out.set("hot_median_us", median(hot));
  out.set("hot_p99_us", percentile(hot, 99));
  out.set("idle_mean_us", idle_sum / idle_calls);
  out.set("idle_median_us", median(idle));
  out.set("idle_p99_us", percentile(idle, 99));
  cpu.report(out);
}

}  // namespace bypass::bench
