// Frame loop: what a renderer does every frame. Each frame is recorded afresh into a command
// buffer from its own pool: one render pass over a 256x256 target, 1,000 quads, each with its
// own push constants, a descriptor set switch every 5 draws (16 material sets holding uniform
// buffers), a pipeline switch every 50 draws (4 pipelines whose fragment programs differ),
// then submitted with a fence; two frames are in flight, as with double buffering.
//
// Through the bypass every command is encoded into the batch and replayed by bypassd, so the
// frame rate shows what remoting costs a draw-heavy frame. After the timed frames one more
// frame is read back and every cell checked, so dropped or misordered draws fail the run.
#include <array>
#include <cmath>
#include <cstring>
#include <string>

#include "bench_util.h"
#include "check.h"
#include "commands.h"
#include "pipeline.h"
#include "resources.h"
#include "vk_check.h"

namespace bypass::bench {
namespace {

using samples::vk_check;

constexpr uint32_t kVertexSpirv[] = {
#include "quad.vert.inc"
};
constexpr uint32_t kFragmentSpirv[] = {
#include "quad.frag.inc"
};

constexpr uint32_t kWidth = 256;
constexpr uint32_t kHeight = 256;
constexpr VkFormat kFormat = VK_FORMAT_R8G8B8A8_UNORM;
constexpr uint32_t kDraws = 1000;
constexpr uint32_t kGrid = 32;  // cells per row; draw d covers cell (d % 32, d / 32)
constexpr uint32_t kCellPx = 8;
constexpr uint32_t kInsetPx = 1;  // background gap on each side of a quad
constexpr uint32_t kPipelines = 4;
constexpr uint32_t kMaterials = 16;
constexpr uint32_t kDrawsPerPipeline = 50;
constexpr uint32_t kDrawsPerMaterial = 5;
constexpr uint32_t kFramesInFlight = 2;
constexpr VkDeviceSize kMaterialStride = 256;  // >= every device's minUniformBufferOffsetAlignment

struct DrawPush {
  float rect[4];
  float target_size[2];
  float shade;
  float pad;
};
static_assert(sizeof(DrawPush) == 32);

struct MaterialData {
  float color[4];
  float params[4];
};

// Commands recorded per frame (for the commands-per-second figure).
constexpr uint32_t kCommandsPerFrame = 2 /*begin, end*/ + 2 /*render pass*/ + 2 /*viewport, scissor*/ +
                                       kDraws * 2 /*push, draw*/ + kDraws / kDrawsPerMaterial +
                                       kDraws / kDrawsPerPipeline;

samples::UniquePipeline create_pipeline(VkDevice device, VkShaderModule vs, VkShaderModule fs, VkPipelineLayout layout,
                                        VkRenderPass pass, int32_t variant) {
  // The fragment shader's variant (constant 0) makes the pipelines differ, as a real program's do.
  const VkSpecializationMapEntry entry{0, 0, sizeof(int32_t)};
  const VkSpecializationInfo spec{1, &entry, sizeof(variant), &variant};
  samples::GraphicsPipelineDesc desc;
  desc.vertex = vs;
  desc.fragment = fs;
  desc.layout = layout;
  desc.render_pass = pass;
  desc.topology = VK_PRIMITIVE_TOPOLOGY_TRIANGLE_STRIP;
  desc.fragment_specialization = &spec;
  return samples::create_graphics_pipeline(device, desc);
}

struct Scene {
  VkRenderPass pass;
  VkFramebuffer framebuffer;
  VkPipelineLayout layout;
  std::array<VkPipeline, kPipelines> pipelines;
  std::array<VkDescriptorSet, kMaterials> sets;
};

void record_frame(VkCommandBuffer cmd, const Scene& s, uint32_t frame) {
  VkRenderPassBeginInfo begin{VK_STRUCTURE_TYPE_RENDER_PASS_BEGIN_INFO};
  VkClearValue clear{};
  clear.color = {{0.0f, 0.0f, 0.0f, 1.0f}};
  begin.renderPass = s.pass;
  begin.framebuffer = s.framebuffer;
  begin.renderArea = {{0, 0}, {kWidth, kHeight}};
  begin.clearValueCount = 1;
  begin.pClearValues = &clear;
  vkCmdBeginRenderPass(cmd, &begin, VK_SUBPASS_CONTENTS_INLINE);
  samples::record_full_viewport(cmd, kWidth, kHeight);
  const VkShaderStageFlags stages = VK_SHADER_STAGE_VERTEX_BIT | VK_SHADER_STAGE_FRAGMENT_BIT;
  for (uint32_t d = 0; d < kDraws; ++d) {
    if (d % kDrawsPerPipeline == 0)
      vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_GRAPHICS,
                        s.pipelines[(d / kDrawsPerPipeline + frame) % kPipelines]);
    if (d % kDrawsPerMaterial == 0)
      vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_GRAPHICS, s.layout, 0, 1,
                              &s.sets[(d / kDrawsPerMaterial + frame) % kMaterials], 0, nullptr);
    const uint32_t tx = d % kGrid, ty = d / kGrid;
    const DrawPush push{
        {static_cast<float>(tx * kCellPx + kInsetPx), static_cast<float>(ty * kCellPx + kInsetPx),
         static_cast<float>((tx + 1) * kCellPx - kInsetPx), static_cast<float>((ty + 1) * kCellPx - kInsetPx)},
        {static_cast<float>(kWidth), static_cast<float>(kHeight)},
        0.5f + 0.5f * static_cast<float>((d * 7 + frame) % 8) / 7.0f,
        0.0f};
    vkCmdPushConstants(cmd, s.layout, stages, 0, sizeof(push), &push);
    vkCmdDraw(cmd, 4, 1, 0, 0);
  }
  vkCmdEndRenderPass(cmd);
}

// Every cell the frame drew is lit at its centre, every gap and undrawn cell is the clear
// colour: a dropped, misplaced or extra draw shows.
void check_frame(const samples::Rgba8Image& image) {
  samples::ResultCheck check("frame loop image");
  for (uint32_t cell = 0; cell < kGrid * kGrid; ++cell) {
    const uint32_t x = (cell % kGrid) * kCellPx, y = (cell / kGrid) * kCellPx;
    const uint8_t* centre = image.at(x + kCellPx / 2, y + kCellPx / 2);
    const bool lit = centre[0] > 8 || centre[1] > 8 || centre[2] > 8;
    check.expect(lit == (cell < kDraws), "cell " + std::to_string(cell) + (lit ? " drawn" : " not drawn"));
    check.expect_pixel(image, x, y, {0, 0, 0, 255});  // the gap at the cell's corner
  }
  check.finish();
}

}  // namespace

void run_frame_loop(const samples::Context& ctx, Scale scale, Report& out) {
  VkDevice device = ctx.device();
  const uint32_t frames = pick(scale, 10, 60, 200);
  const uint32_t warmup = pick(scale, 2, 6, 10);

  samples::Image target(ctx, {.width = kWidth,
                              .height = kHeight,
                              .format = kFormat,
                              .usage = VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT | VK_IMAGE_USAGE_TRANSFER_SRC_BIT});
  samples::Buffer readback(ctx, kWidth * kHeight * 4, VK_BUFFER_USAGE_TRANSFER_DST_BIT, samples::MemoryUse::kReadback);
  samples::Buffer materials(ctx, kMaterialStride * kMaterials, VK_BUFFER_USAGE_UNIFORM_BUFFER_BIT,
                            samples::MemoryUse::kUpload);
  for (uint32_t m = 0; m < kMaterials; ++m) {
    const float t = static_cast<float>(m) / kMaterials;
    const MaterialData data{{0.3f + 0.7f * t, 0.9f - 0.6f * t, 0.5f + 0.4f * std::sin(6.0f * t), 1.0f},
                            {1.0f - t, t, 0.5f, 1.0f + static_cast<float>(m % 4)}};
    std::memcpy(materials.mapped<uint8_t>().data() + m * kMaterialStride, &data, sizeof data);
  }
  materials.flush();

  auto pass = samples::create_color_render_pass(device, {.format = kFormat});
  auto framebuffer = samples::create_framebuffer(device, pass.get(), target.view(), kWidth, kHeight);
  auto set_layout = create_single_binding_layout(device, VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER,
                                                 VK_SHADER_STAGE_VERTEX_BIT | VK_SHADER_STAGE_FRAGMENT_BIT);
  const VkDescriptorSetLayout set_layouts[] = {set_layout.get()};
  const VkPushConstantRange push_range{VK_SHADER_STAGE_VERTEX_BIT | VK_SHADER_STAGE_FRAGMENT_BIT, 0, sizeof(DrawPush)};
  auto layout = samples::create_pipeline_layout(device, set_layouts, std::span(&push_range, 1));
  auto vs = samples::create_shader_module(device, kVertexSpirv);
  auto fs = samples::create_shader_module(device, kFragmentSpirv);
  std::array<samples::UniquePipeline, kPipelines> pipelines;
  for (uint32_t p = 0; p < kPipelines; ++p)
    pipelines[p] = create_pipeline(device, vs.get(), fs.get(), layout.get(), pass.get(), static_cast<int32_t>(p));
  auto pool = create_pool(device, VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER, kMaterials);

  Scene scene{pass.get(), framebuffer.get(), layout.get(), {}, {}};
  for (uint32_t p = 0; p < kPipelines; ++p) scene.pipelines[p] = pipelines[p].get();
  for (uint32_t m = 0; m < kMaterials; ++m) {
    scene.sets[m] = allocate_set(device, pool.get(), set_layout.get());
    write_buffer_descriptor(device, scene.sets[m], VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER, materials.get(),
                            m * kMaterialStride, sizeof(MaterialData));
  }

  // One pool per frame in flight, reset as a whole when its frame comes round again.
  std::array<samples::UniqueCommandPool, kFramesInFlight> pools;
  std::array<VkCommandBuffer, kFramesInFlight> cmds{};
  std::array<samples::UniqueFence, kFramesInFlight> fences;
  for (uint32_t i = 0; i < kFramesInFlight; ++i) {
    pools[i] = samples::create_command_pool(device, ctx.queue_family(), VK_COMMAND_POOL_CREATE_TRANSIENT_BIT);
    cmds[i] = samples::allocate_command_buffers(device, pools[i].get(), VK_COMMAND_BUFFER_LEVEL_PRIMARY, 1)[0];
    fences[i] = samples::create_fence(device, /*signaled=*/true);
  }

  double record_s = 0;
  auto one_frame = [&](uint32_t frame, bool readback_too) {
    const uint32_t slot = frame % kFramesInFlight;
    VkFence fence = fences[slot].get();
    wait_and_reset(device, fence);
    vk_check(vkResetCommandPool(device, pools[slot].get(), 0), "vkResetCommandPool");
    const auto t0 = Clock::now();
    samples::begin_command_buffer(cmds[slot], VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT);
    record_frame(cmds[slot], scene, frame);
    if (readback_too) samples::record_copy_image_to_buffer(cmds[slot], target.get(), kWidth, kHeight, readback.get());
    samples::end_command_buffer(cmds[slot]);
    record_s += seconds_between(t0, Clock::now());
    submit(ctx.queue(), cmds[slot], fence);
  };
  auto drain = [&] {
    for (auto& f : fences) {
      VkFence fence = f.get();
      vk_check(vkWaitForFences(device, 1, &fence, VK_TRUE, 60'000'000'000ull), "vkWaitForFences");
    }
  };

  for (uint32_t f = 0; f < warmup; ++f) one_frame(f, false);
  drain();
  record_s = 0;
  CpuMeter cpu;
  cpu.start();
  const auto start = Clock::now();
  for (uint32_t f = 0; f < frames; ++f) one_frame(warmup + f, false);
  drain();
  const double elapsed = seconds_between(start, Clock::now());
  cpu.stop();

  one_frame(warmup + frames, true);
  drain();
  check_frame(samples::read_rgba8(readback, kWidth, kHeight));

  out.set("frames", frames);
  out.set("draws_per_frame", kDraws);
  out.set("commands_per_frame", kCommandsPerFrame);
  out.set("seconds", elapsed);
  out.set("fps", frames / elapsed);
  out.set("ms_per_frame", elapsed * 1e3 / frames);
  out.set("record_ms_per_frame", record_s * 1e3 / frames);
  cpu.report(out);
}

}  // namespace bypass::bench
