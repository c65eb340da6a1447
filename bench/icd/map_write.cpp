// Mapped-memory writes: the application memcpy()s into memory it mapped from a host-visible
// allocation, then submits a copy that reads it (into a readback buffer, which is checked, so
// the device provably saw this iteration's bytes). Beside every mapped write the same bytes
// are memcpy()'d into ordinary, already-touched process memory: the plain memcpy of the same
// run, which is what a zero-copy mapping should match.
//
// Through the bypass the mapping is the memfd bypassd imported into its driver, so the write
// is the only copy; a bypass that shadowed the memory would pay a second copy at submit time
// (that shows in cycle_gib_s).
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "bench_util.h"
#include "check.h"
#include "commands.h"
#include "resources.h"
#include "vk_check.h"

namespace bypass::bench {
namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

}  // namespace

void run_map_write(const samples::Context& ctx, Scale scale, Report& out) {
  VkDevice device = ctx.device();
  const size_t bytes = size_t{pick(scale, 1, 16, 32)} << 20;
  const uint32_t iterations = pick(scale, 3, 16, 40);
  const uint32_t warmup = 2;
  constexpr size_t kPage = 4096;
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

  samples::Buffer mapped(ctx, bytes, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, samples::MemoryUse::kUpload);
  samples::Buffer readback(ctx, bytes, VK_BUFFER_USAGE_TRANSFER_DST_BIT, samples::MemoryUse::kReadback);
  // Page-aligned like the mapping, and touched once, so neither side pays first-touch faults.
  std::unique_ptr<uint8_t, FreeDeleter> plain(static_cast<uint8_t*>(std::aligned_alloc(kPage, bytes)));
  std::unique_ptr<uint8_t, FreeDeleter> source(static_cast<uint8_t*>(std::aligned_alloc(kPage, bytes)));
  if (!plain || !source) throw std::bad_alloc();
  std::memset(plain.get(), 0, bytes);
  for (size_t i = 0; i < bytes; ++i) source.get()[i] = static_cast<uint8_t>(i * 131 + (i >> 12));
  uint8_t* dst = mapped.mapped<uint8_t>().data();
  std::memset(dst, 0, bytes);

  auto pool = samples::create_command_pool(device, ctx.queue_family());
  VkCommandBuffer cmd = samples::allocate_command_buffers(device, pool.get(), VK_COMMAND_BUFFER_LEVEL_PRIMARY, 1)[0];
  samples::begin_command_buffer(cmd);
  const VkBufferCopy region{0, 0, bytes};
  vkCmdCopyBuffer(cmd, mapped.get(), readback.get(), 1, &region);
  samples::record_memory_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                                 VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
  samples::end_command_buffer(cmd);
  auto fence = samples::create_fence(device);

  samples::ResultCheck check("mapped write readback");
  std::vector<double> memcpy_gib_s, mapped_gib_s, cycle_gib_s, mapped_vs_memcpy;
  CpuMeter cpu;  // the mapped writes and their submits (the plain memcpy is left out)
  for (uint32_t it = 0; it < warmup + iterations; ++it) {
    // A new stamp in every page of the source, so a stale page in the readback shows.
    const uint32_t stamp = 0x5EED0000u + it;
    for (size_t p = 0; p < bytes; p += kPage) std::memcpy(source.get() + p, &stamp, 4);

    double plain_s = 0, mapped_s = 0;
    // Alternate which copy goes first, so cache warmth from the source read favours neither.
    for (int turn = 0; turn < 2; ++turn) {
      const bool plain_turn = (turn == 0) == (it % 2 == 0);
      if (!plain_turn && it >= warmup) cpu.start();
      const auto t0 = Clock::now();
      std::memcpy(plain_turn ? plain.get() : dst, source.get(), bytes);
      (plain_turn ? plain_s : mapped_s) = seconds_between(t0, Clock::now());
      if (!plain_turn && it >= warmup) cpu.stop();
    }
    if (it >= warmup) cpu.start();
    const auto t1 = Clock::now();
    mapped.flush();
    submit(ctx.queue(), cmd, fence.get());
    wait_and_reset(device, fence.get());
    const double submit_s = seconds_between(t1, Clock::now());
    if (it >= warmup) cpu.stop();

    readback.invalidate();
    const uint8_t* got = readback.mapped<const uint8_t>().data();
    for (size_t p = 0; p < bytes; p += kPage) {
      uint32_t word;
      std::memcpy(&word, got + p, 4);
      check.expect_equal("stamp of page", p / kPage, word, stamp);
    }
    const size_t probe = (it * 7919 * kPage + 1234) % (bytes - 8);
    check.expect(std::memcmp(got + probe, source.get() + probe, 8) == 0, "bytes at " + std::to_string(probe));
    if (it < warmup) continue;
    const double gib = static_cast<double>(bytes) / kGiB;
    memcpy_gib_s.push_back(gib / plain_s);
    mapped_gib_s.push_back(gib / mapped_s);
    cycle_gib_s.push_back(gib / (mapped_s + submit_s));
    mapped_vs_memcpy.push_back(plain_s / mapped_s);
  }
  check.finish();

  out.set("bytes", static_cast<double>(bytes));
  out.set("iterations", iterations);
  out.set("memcpy_gib_s", median(memcpy_gib_s));
  out.set("mapped_gib_s", median(mapped_gib_s));
  out.set("cycle_gib_s", median(cycle_gib_s));
  out.set("mapped_vs_memcpy", median(mapped_vs_memcpy));
  cpu.report(out);
}

}  // namespace bypass::bench
