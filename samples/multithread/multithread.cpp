// multithread: several threads record command buffers in parallel, each from its own command
// pool, each drawing one horizontal band of a 32x32 grid of tiles (1024 draws per frame, one
// push-constant block each), and everything is submitted together.
//
//   --mode secondary (default): each thread records a secondary command buffer that inherits
//     the render pass; the main thread executes them all inside one render pass instance.
//   --mode primary: each thread records a primary command buffer with its own render pass
//     instance (the first clears, the rest load); one vkQueueSubmit carries all of them plus
//     the main thread's readback, in order.
//
// Tile colours change every frame, so replaying a stale command buffer shows. Tile edges lie
// on pixel boundaries, so the whole image is compared exactly with the CPU's.
#include <cstdio>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "args.h"
#include "check.h"
#include "commands.h"
#include "context.h"
#include "pipeline.h"
#include "resources.h"
#include "sample_main.h"
#include "vk_check.h"

namespace bypass::samples {
namespace {

constexpr uint32_t kWidth = 256;
constexpr uint32_t kHeight = 256;
constexpr VkFormat kFormat = VK_FORMAT_R8G8B8A8_UNORM;
constexpr uint32_t kGrid = 32;           // tiles per row and column
constexpr uint32_t kTilePx = 8;          // tile pitch
constexpr uint32_t kInsetPx = 1;         // background gap on each side of a tile
constexpr uint32_t kMaxThreads = kGrid;  // at least one row per thread
constexpr Rgba kBackground = {16, 16, 16, 255};

constexpr uint32_t kVertexSpirv[] = {
#include "tiles.vert.inc"
};
constexpr uint32_t kFragmentSpirv[] = {
#include "tiles.frag.inc"
};

struct TilePush {
  float rect[4];
  float color[4];
  float target_size[2];
};

// A fixed function of tile and frame: the same colours on every run and every driver.
Rgba tile_color(uint32_t tx, uint32_t ty, uint32_t frame) {
  uint32_t h = (ty * kGrid + tx) * 0x9E3779B1u + frame * 0x85EBCA77u;
  h ^= h >> 15;
  h *= 0x2C1B3C6Du;
  h ^= h >> 12;
  // Keep tiles visibly different from the background.
  return {static_cast<uint8_t>(64 + (h & 0xBF)), static_cast<uint8_t>(64 + ((h >> 8) & 0xBF)),
          static_cast<uint8_t>(64 + ((h >> 16) & 0xBF)), 255};
}

// Rows [first, last) of the grid belong to thread t of n.
uint32_t band_start(uint32_t t, uint32_t n) { return t * kGrid / n; }

void record_band(VkCommandBuffer cmd, VkPipeline pipeline, VkPipelineLayout layout, uint32_t thread, uint32_t threads,
                 uint32_t frame) {
  vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_GRAPHICS, pipeline);
  // Dynamic state is not inherited by secondary command buffers: every buffer sets its own.
  record_full_viewport(cmd, kWidth, kHeight);
  for (uint32_t ty = band_start(thread, threads); ty < band_start(thread + 1, threads); ++ty) {
    for (uint32_t tx = 0; tx < kGrid; ++tx) {
      const Rgba c = tile_color(tx, ty, frame);
      const TilePush push{
          {static_cast<float>(tx * kTilePx + kInsetPx), static_cast<float>(ty * kTilePx + kInsetPx),
           static_cast<float>((tx + 1) * kTilePx - kInsetPx), static_cast<float>((ty + 1) * kTilePx - kInsetPx)},
          {c[0] / 255.0f, c[1] / 255.0f, c[2] / 255.0f, c[3] / 255.0f},
          {static_cast<float>(kWidth), static_cast<float>(kHeight)}};
      vkCmdPushConstants(cmd, layout, VK_SHADER_STAGE_VERTEX_BIT | VK_SHADER_STAGE_FRAGMENT_BIT, 0, sizeof(push),
                         &push);
      vkCmdDraw(cmd, 4, 1, 0, 0);
    }
  }
}

void check_image(const Rgba8Image& image, uint32_t frame) {
  ResultCheck check("multithread frame " + std::to_string(frame));
  for (uint32_t y = 0; y < kHeight; ++y) {
    for (uint32_t x = 0; x < kWidth; ++x) {
      const uint32_t ix = x % kTilePx, iy = y % kTilePx;
      const bool in_tile = ix >= kInsetPx && ix < kTilePx - kInsetPx && iy >= kInsetPx && iy < kTilePx - kInsetPx;
      check.expect_pixel(image, x, y, in_tile ? tile_color(x / kTilePx, y / kTilePx, frame) : kBackground);
    }
  }
  check.finish();
}

// Runs `work(t)` on `threads` threads at once and rethrows the first exception any of them
// threw, after all have been joined.
template <typename Work>
void run_parallel(uint32_t threads, const Work& work) {
  std::vector<std::exception_ptr> errors(threads);
  {
    std::vector<std::jthread> workers;
    workers.reserve(threads);
    for (uint32_t t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        try {
          work(t);
        } catch (...) {
          errors[t] = std::current_exception();
        }
      });
    }
  }  // jthreads join here
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

void run(int argc, char** argv) {
  CommonArgs args;
  args.frames = 3;
  uint32_t threads = 4;
  std::string mode = "secondary";
  ArgParser parser("multithread",
                   "Records a 32x32 tile grid (256x256) from several threads in parallel, each\n"
                   "with its own command pool, submits it together and checks every pixel.",
                   args);
  parser.add_uint("--threads", "N", "recording threads", &threads, 1, kMaxThreads);
  parser.add_choice("--mode", "what each thread records", {"secondary", "primary"}, &mode);
  if (!parser.parse(argc, argv)) return;
  const bool secondary = mode == "secondary";

  Context ctx({.app_name = "bypass-multithread"});
  VkDevice device = ctx.device();
  ctx.require_format_features(kFormat, VK_FORMAT_FEATURE_COLOR_ATTACHMENT_BIT | VK_FORMAT_FEATURE_TRANSFER_SRC_BIT);

  Image target(ctx, {.width = kWidth,
                     .height = kHeight,
                     .format = kFormat,
                     .usage = VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT | VK_IMAGE_USAGE_TRANSFER_SRC_BIT});
  Buffer readback(ctx, kWidth * kHeight * 4, VK_BUFFER_USAGE_TRANSFER_DST_BIT, MemoryUse::kReadback);

  // Secondary mode: one pass, cleared, ending ready for the copy. Primary mode: the first
  // thread's pass clears, the others load; all stay in COLOR_ATTACHMENT_OPTIMAL and the main
  // thread's barrier moves the image to TRANSFER_SRC. The passes differ only in load op and
  // layouts, so they are compatible: one framebuffer and one pipeline serve all of them.
  UniqueRenderPass clear_pass = create_color_render_pass(
      device,
      {.format = kFormat,
       .load_op = VK_ATTACHMENT_LOAD_OP_CLEAR,
       .initial_layout = VK_IMAGE_LAYOUT_UNDEFINED,
       .final_layout = secondary ? VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL : VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL});
  UniqueRenderPass load_pass =
      create_color_render_pass(device, {.format = kFormat,
                                        .load_op = VK_ATTACHMENT_LOAD_OP_LOAD,
                                        .initial_layout = VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL,
                                        .final_layout = VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL});
  UniqueFramebuffer framebuffer = create_framebuffer(device, clear_pass.get(), target.view(), kWidth, kHeight);

  const VkPushConstantRange push_range{VK_SHADER_STAGE_VERTEX_BIT | VK_SHADER_STAGE_FRAGMENT_BIT, 0, sizeof(TilePush)};
  UniquePipelineLayout layout = create_pipeline_layout(device, {}, std::span(&push_range, 1));
  UniqueShaderModule vs = create_shader_module(device, kVertexSpirv);
  UniqueShaderModule fs = create_shader_module(device, kFragmentSpirv);
  UniquePipeline pipeline = create_graphics_pipeline(device, {.vertex = vs.get(),
                                                              .fragment = fs.get(),
                                                              .layout = layout.get(),
                                                              .render_pass = clear_pass.get(),
                                                              .topology = VK_PRIMITIVE_TOPOLOGY_TRIANGLE_STRIP});

  // One pool per recording thread (pools are externally synchronized), one for the main thread.
  std::vector<UniqueCommandPool> pools;
  std::vector<VkCommandBuffer> thread_cmds;
  for (uint32_t t = 0; t < threads; ++t) {
    pools.push_back(create_command_pool(device, ctx.queue_family(), VK_COMMAND_POOL_CREATE_TRANSIENT_BIT));
    thread_cmds.push_back(allocate_command_buffers(
        device, pools.back().get(), secondary ? VK_COMMAND_BUFFER_LEVEL_SECONDARY : VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        1)[0]);
  }
  UniqueCommandPool main_pool = create_command_pool(device, ctx.queue_family(), VK_COMMAND_POOL_CREATE_TRANSIENT_BIT);
  VkCommandBuffer main_cmd = allocate_command_buffers(device, main_pool.get(), VK_COMMAND_BUFFER_LEVEL_PRIMARY, 1)[0];
  UniqueFence fence = create_fence(device);

  VkClearValue clear{};
  for (int c = 0; c < 4; ++c) clear.color.float32[c] = kBackground[c] / 255.0f;
  auto begin_pass = [&](VkCommandBuffer cmd, VkRenderPass pass, VkSubpassContents contents) {
    VkRenderPassBeginInfo begin{VK_STRUCTURE_TYPE_RENDER_PASS_BEGIN_INFO};
    begin.renderPass = pass;
    begin.framebuffer = framebuffer.get();
    begin.renderArea = {{0, 0}, {kWidth, kHeight}};
    begin.clearValueCount = 1;
    begin.pClearValues = &clear;
    vkCmdBeginRenderPass(cmd, &begin, contents);
  };
  auto record_readback = [&](VkCommandBuffer cmd) {
    record_copy_image_to_buffer(cmd, target.get(), kWidth, kHeight, readback.get());
    record_memory_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                          VK_ACCESS_HOST_READ_BIT);
  };

  FrameTimer timer;
  Rgba8Image image;
  for (uint32_t frame = 0; frame < args.frames; ++frame) {
    timer.start();
    // The previous frame's fence was waited on: every pool's buffers are idle and resettable.
    run_parallel(threads, [&](uint32_t t) {
      VkCommandBuffer cmd = thread_cmds[t];
      vk_check(vkResetCommandPool(device, pools[t].get(), 0), "vkResetCommandPool");
      if (secondary) {
        VkCommandBufferInheritanceInfo inheritance{VK_STRUCTURE_TYPE_COMMAND_BUFFER_INHERITANCE_INFO};
        inheritance.renderPass = clear_pass.get();
        inheritance.subpass = 0;
        inheritance.framebuffer = framebuffer.get();
        begin_command_buffer(
            cmd, VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT | VK_COMMAND_BUFFER_USAGE_RENDER_PASS_CONTINUE_BIT,
            &inheritance);
        record_band(cmd, pipeline.get(), layout.get(), t, threads, frame);
      } else {
        begin_command_buffer(cmd, VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT);
        begin_pass(cmd, t == 0 ? clear_pass.get() : load_pass.get(), VK_SUBPASS_CONTENTS_INLINE);
        record_band(cmd, pipeline.get(), layout.get(), t, threads, frame);
        vkCmdEndRenderPass(cmd);
      }
      end_command_buffer(cmd);
    });

    vk_check(vkResetCommandPool(device, main_pool.get(), 0), "vkResetCommandPool");
    begin_command_buffer(main_cmd, VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT);
    std::vector<VkCommandBuffer> submit_cmds;
    if (secondary) {
      begin_pass(main_cmd, clear_pass.get(), VK_SUBPASS_CONTENTS_SECONDARY_COMMAND_BUFFERS);
      vkCmdExecuteCommands(main_cmd, threads, thread_cmds.data());
      vkCmdEndRenderPass(main_cmd);  // leaves the image in TRANSFER_SRC_OPTIMAL
      record_readback(main_cmd);
      submit_cmds = {main_cmd};
    } else {
      record_image_barrier(main_cmd, {.image = target.get(),
                                      .old_layout = VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL,
                                      .new_layout = VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL,
                                      .src_stage = VK_PIPELINE_STAGE_COLOR_ATTACHMENT_OUTPUT_BIT,
                                      .src_access = VK_ACCESS_COLOR_ATTACHMENT_WRITE_BIT,
                                      .dst_stage = VK_PIPELINE_STAGE_TRANSFER_BIT,
                                      .dst_access = VK_ACCESS_TRANSFER_READ_BIT});
      record_readback(main_cmd);
      submit_cmds = thread_cmds;
      submit_cmds.push_back(main_cmd);
    }
    end_command_buffer(main_cmd);

    VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    submit.commandBufferCount = static_cast<uint32_t>(submit_cmds.size());
    submit.pCommandBuffers = submit_cmds.data();
    ctx.submit_and_wait(submit, fence.get());
    timer.stop();

    image = read_rgba8(readback, kWidth, kHeight);
    const bool last = frame + 1 == args.frames;
    if (last && !args.out.empty()) write_png(args.out, image);
    try {
      check_image(image, frame);
    } catch (const CheckError&) {
      if (!last && !args.out.empty()) write_png(args.out, image);
      throw;
    }
  }
  if (args.timing) timer.report("multithread");
  std::printf(
      "multithread: OK, %u frame(s), %u thread(s), %s command buffers, %u draws/frame on "
      "%s%s%s\n",
      args.frames, threads, mode.c_str(), kGrid * kGrid, ctx.properties().deviceName,
      args.out.empty() ? "" : ", wrote ", args.out.c_str());
}

}  // namespace
}  // namespace bypass::samples

int main(int argc, char** argv) {
  return bypass::samples::sample_main("multithread", [&] { bypass::samples::run(argc, argv); });
}
