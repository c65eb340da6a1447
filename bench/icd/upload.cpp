// Upload: 256 MiB of texels through a 64 MiB host-visible staging buffer into a device-local
// 8192x8192 RGBA8 image with optimal tiling, in four bands: memcpy a band into the staging
// buffer, vkCmdCopyBufferToImage, submit, wait, next band. That is the loading path of any
// application that streams textures. One untimed pass first, so neither side pays first-touch
// page faults in the timed ones; afterwards a few regions are read back and compared.
#include <algorithm>
#include <cstring>
#include <vector>

#include "bench_util.h"
#include "check.h"
#include "commands.h"
#include "resources.h"
#include "vk_check.h"

namespace bypass::bench {

void run_upload(const samples::Context& ctx, Scale scale, Report& out) {
  VkDevice device = ctx.device();
  const uint32_t side = pick(scale, 1024, 8192, 8192);
  const uint32_t passes = pick(scale, 1, 1, 2);
  const uint32_t bands = 4;
  const uint32_t band_rows = side / bands;
  const size_t row_bytes = size_t{side} * 4;
  const size_t band_bytes = row_bytes * band_rows;
  const size_t total = row_bytes * side;
  constexpr double kMiB = 1024.0 * 1024.0;

  samples::Image image(
      ctx, {.width = side,
            .height = side,
            .format = VK_FORMAT_R8G8B8A8_UNORM,
            // Sampled, as a texture is (the samples' Image also makes a view, which needs it).
            .usage = VK_IMAGE_USAGE_TRANSFER_DST_BIT | VK_IMAGE_USAGE_TRANSFER_SRC_BIT | VK_IMAGE_USAGE_SAMPLED_BIT});
  samples::Buffer staging(ctx, band_bytes, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, samples::MemoryUse::kUpload);
  constexpr uint32_t kProbe = 64;  // read back kProbe x kProbe texels from each band
  samples::Buffer readback(ctx, VkDeviceSize{kProbe} * kProbe * 4 * bands, VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                           samples::MemoryUse::kReadback);
  std::vector<uint32_t> source(total / 4);
  for (size_t i = 0; i < source.size(); ++i) source[i] = static_cast<uint32_t>(i * 2654435761u) ^ 0xA5A5A5A5u;
  uint8_t* staged = staging.mapped<uint8_t>().data();
  std::memset(staged, 0, band_bytes);

  auto pool = samples::create_command_pool(device, ctx.queue_family());
  auto cmds = samples::allocate_command_buffers(device, pool.get(), VK_COMMAND_BUFFER_LEVEL_PRIMARY, bands + 2);
  auto fence = samples::create_fence(device);

  // The layout change happens once; every band's copy then writes TRANSFER_DST_OPTIMAL.
  samples::begin_command_buffer(cmds[bands]);
  samples::record_image_barrier(cmds[bands], {.image = image.get(),
                                              .old_layout = VK_IMAGE_LAYOUT_UNDEFINED,
                                              .new_layout = VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL,
                                              .src_stage = VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT,
                                              .dst_stage = VK_PIPELINE_STAGE_TRANSFER_BIT,
                                              .dst_access = VK_ACCESS_TRANSFER_WRITE_BIT});
  samples::end_command_buffer(cmds[bands]);
  submit(ctx.queue(), cmds[bands], fence.get());
  wait_and_reset(device, fence.get());
  for (uint32_t b = 0; b < bands; ++b) {
    samples::begin_command_buffer(cmds[b]);
    VkBufferImageCopy region{};
    region.imageSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
    region.imageOffset = {0, static_cast<int32_t>(b * band_rows), 0};
    region.imageExtent = {side, band_rows, 1};
    vkCmdCopyBufferToImage(cmds[b], staging.get(), image.get(), VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, 1, &region);
    // The next band's memcpy overwrites the staging buffer after this fence.
    samples::record_memory_barrier(cmds[b], VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT,
                                   VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_WRITE_BIT);
    samples::end_command_buffer(cmds[b]);
  }

  std::vector<double> mib_s;
  double copy_s_total = 0, gpu_s_total = 0;
  CpuMeter cpu;
  for (uint32_t pass = 0; pass < passes + 1; ++pass) {
    double copy_s = 0, gpu_s = 0;
    if (pass > 0) cpu.start();
    const auto start = Clock::now();
    for (uint32_t b = 0; b < bands; ++b) {
      const auto t0 = Clock::now();
      std::memcpy(staged, reinterpret_cast<const uint8_t*>(source.data()) + b * band_bytes, band_bytes);
      staging.flush();
      const auto t1 = Clock::now();
      submit(ctx.queue(), cmds[b], fence.get());
      wait_and_reset(device, fence.get());
      copy_s += seconds_between(t0, t1);
      gpu_s += seconds_between(t1, Clock::now());
    }
    const double elapsed = seconds_between(start, Clock::now());
    if (pass == 0) continue;
    cpu.stop();  // first touch of the image's and the staging buffer's pages
    mib_s.push_back(static_cast<double>(total) / kMiB / elapsed);
    copy_s_total += copy_s;
    gpu_s_total += gpu_s;
  }

  // Read back a kProbe x kProbe square from the middle of every band and compare.
  VkCommandBuffer check_cmd = cmds[bands + 1];
  samples::begin_command_buffer(check_cmd);
  samples::record_image_barrier(check_cmd, {.image = image.get(),
                                            .old_layout = VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL,
                                            .new_layout = VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL,
                                            .src_stage = VK_PIPELINE_STAGE_TRANSFER_BIT,
                                            .src_access = VK_ACCESS_TRANSFER_WRITE_BIT,
                                            .dst_stage = VK_PIPELINE_STAGE_TRANSFER_BIT,
                                            .dst_access = VK_ACCESS_TRANSFER_READ_BIT});
  std::vector<VkBufferImageCopy> regions(bands);
  for (uint32_t b = 0; b < bands; ++b) {
    regions[b].bufferOffset = VkDeviceSize{b} * kProbe * kProbe * 4;
    regions[b].imageSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
    regions[b].imageOffset = {static_cast<int32_t>(side / 2 + b * 17),
                              static_cast<int32_t>(b * band_rows + band_rows / 2), 0};
    regions[b].imageExtent = {kProbe, kProbe, 1};
  }
  vkCmdCopyImageToBuffer(check_cmd, image.get(), VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, readback.get(), bands,
                         regions.data());
  samples::record_memory_barrier(check_cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                                 VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
  samples::end_command_buffer(check_cmd);
  submit(ctx.queue(), check_cmd, fence.get());
  wait_and_reset(device, fence.get());
  readback.invalidate();
  auto got = readback.mapped<const uint32_t>();
  samples::ResultCheck check("uploaded texels");
  for (uint32_t b = 0; b < bands; ++b) {
    for (uint32_t y = 0; y < kProbe; ++y) {
      for (uint32_t x = 0; x < kProbe; ++x) {
        const size_t ix = static_cast<size_t>(regions[b].imageOffset.x) + x;
        const size_t iy = static_cast<size_t>(regions[b].imageOffset.y) + y;
        check.expect_equal("texel", iy * side + ix, got[(size_t{b} * kProbe + y) * kProbe + x], source[iy * side + ix]);
      }
    }
  }
  check.finish();

  out.set("bytes", static_cast<double>(total));
  out.set("passes", passes);
  out.set("mib_s", median(mib_s));
  out.set("memcpy_ms_per_pass", copy_s_total * 1e3 / passes);
  out.set("copy_ms_per_pass", gpu_s_total * 1e3 / passes);
  cpu.report(out);
}

}  // namespace bypass::bench
