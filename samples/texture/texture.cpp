// texture: staging upload of a procedural texture, mip chain by vkCmdBlitImage, sampled onto
// four quads rendered offscreen with dynamic rendering (Vulkan 1.3 core).
//
// The 128x128 texture is a checkerboard of 16x16-texel cells whose colours also vary per cell,
// so every mip level differs. It is copied from a host-visible staging buffer into a
// device-local image; levels 1..7 are each blitted (linear filter, exactly 2:1) from the one
// above. The 256x256 target shows one quadrant per case:
//   top-left     level 0 at 1:1 (textureLod 0)      top-right     level 3 magnified (lod 3)
//   bottom-left  level 5 magnified (lod 5)           bottom-right  repeated 4x, implicit lod 2
// and every pixel is compared with a CPU model of the same mip chain and bilinear sampling.
// Barriers and submits use synchronization2 (vkCmdPipelineBarrier2, vkQueueSubmit2).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
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
constexpr VkFormat kTargetFormat = VK_FORMAT_R8G8B8A8_UNORM;
// UNORM, not SRGB: the blit then averages the stored values, which the CPU model can repeat.
constexpr VkFormat kTextureFormat = VK_FORMAT_R8G8B8A8_UNORM;
constexpr uint32_t kTextureSize = 128;
constexpr uint32_t kMipLevels = 8;  // 128, 64, ..., 1
constexpr uint32_t kCellTexels = 16;
constexpr Rgba kBackground = {0, 0, 0, 255};
// Covers the rounding of each blit level (the spec leaves ties open), the driver's filter
// weight precision and a level of detail computed a hair away from 2.0.
constexpr int kTolerance = 3;

constexpr uint32_t kVertexSpirv[] = {
#include "texture.vert.inc"
};
constexpr uint32_t kFragmentSpirv[] = {
#include "texture.frag.inc"
};

struct Vertex {
  float x, y, u, v;
};
constexpr Vertex kQuad[4] = {{0, 0, 0, 0}, {1, 0, 1, 0}, {0, 1, 0, 1}, {1, 1, 1, 1}};
constexpr uint16_t kQuadIndices[6] = {0, 1, 2, 2, 1, 3};

struct QuadPush {
  float offset[2];
  float scale[2];
  float uv_scale;
  float lod;  // < 0: implicit
};

struct QuadCase {
  uint32_t x0, y0;  // top-left pixel of the quadrant
  float uv_scale;
  float lod;
  uint32_t expected_level;
};
constexpr QuadCase kCases[4] = {
    {0, 0, 1.0f, 0.0f, 0},
    {128, 0, 1.0f, 3.0f, 3},
    {0, 128, 1.0f, 5.0f, 5},
    // 4 repeats of 128 texels over 128 pixels: 4 texels per pixel, level of detail 2.
    {128, 128, 4.0f, -1.0f, 2},
};

// One mip level on the CPU.
struct Level {
  uint32_t size;
  std::vector<uint8_t> texels;  // RGBA8
  const uint8_t* at(uint32_t x, uint32_t y) const { return texels.data() + (y * size + x) * 4; }
};

Level make_texture() {
  Level level{kTextureSize, std::vector<uint8_t>(kTextureSize * kTextureSize * 4)};
  for (uint32_t y = 0; y < kTextureSize; ++y) {
    for (uint32_t x = 0; x < kTextureSize; ++x) {
      const uint32_t cx = x / kCellTexels, cy = y / kCellTexels;
      uint8_t* t = level.texels.data() + (y * kTextureSize + x) * 4;
      t[0] = ((cx + cy) & 1) != 0 ? 230 : 20;
      t[1] = static_cast<uint8_t>(20 + 30 * cx);
      t[2] = static_cast<uint8_t>(20 + 30 * cy);
      t[3] = 255;
    }
  }
  return level;
}

// A 2:1 linear blit samples exactly between four texels: their mean, rounded.
std::vector<Level> make_mip_chain(Level base) {
  std::vector<Level> chain{std::move(base)};
  while (chain.back().size > 1) {
    const Level& src = chain.back();
    Level dst{src.size / 2, std::vector<uint8_t>(src.size / 2 * src.size / 2 * 4)};
    for (uint32_t y = 0; y < dst.size; ++y) {
      for (uint32_t x = 0; x < dst.size; ++x) {
        for (uint32_t c = 0; c < 4; ++c) {
          const uint32_t sum = src.at(2 * x, 2 * y)[c] + src.at(2 * x + 1, 2 * y)[c] + src.at(2 * x, 2 * y + 1)[c] +
                               src.at(2 * x + 1, 2 * y + 1)[c];
          dst.texels[(y * dst.size + x) * 4 + c] = static_cast<uint8_t>((sum + 2) / 4);
        }
      }
    }
    chain.push_back(std::move(dst));
  }
  return chain;
}

// Bilinear sample with REPEAT addressing, as the sampler is set up.
Rgba sample_bilinear(const Level& level, double u, double v) {
  const double tu = u * level.size - 0.5, tv = v * level.size - 0.5;
  const double fu = std::floor(tu), fv = std::floor(tv);
  const double au = tu - fu, av = tv - fv;
  const auto wrap = [&](double i) {
    const auto n = static_cast<int64_t>(level.size);
    return static_cast<uint32_t>(((static_cast<int64_t>(i) % n) + n) % n);
  };
  const uint32_t x0 = wrap(fu), x1 = wrap(fu + 1), y0 = wrap(fv), y1 = wrap(fv + 1);
  Rgba out{};
  for (int c = 0; c < 4; ++c) {
    const double top = level.at(x0, y0)[c] * (1 - au) + level.at(x1, y0)[c] * au;
    const double bottom = level.at(x0, y1)[c] * (1 - au) + level.at(x1, y1)[c] * au;
    out[c] = static_cast<uint8_t>(std::lround(top * (1 - av) + bottom * av));
  }
  return out;
}

void check_image(const Rgba8Image& image, const std::vector<Level>& chain, uint32_t frame) {
  ResultCheck check("texture frame " + std::to_string(frame));
  for (const QuadCase& q : kCases) {
    const Level& level = chain[q.expected_level];
    for (uint32_t y = 0; y < 128; ++y) {
      for (uint32_t x = 0; x < 128; ++x) {
        const double u = (x + 0.5) / 128.0 * q.uv_scale, v = (y + 0.5) / 128.0 * q.uv_scale;
        check.expect_pixel(image, q.x0 + x, q.y0 + y, sample_bilinear(level, u, v), kTolerance);
      }
    }
  }
  check.finish();
}

// vkCmdPipelineBarrier2 with one image barrier over the colour aspect.
void image_barrier2(VkCommandBuffer cmd, VkImage image, uint32_t base_mip, uint32_t mip_count, VkImageLayout old_layout,
                    VkImageLayout new_layout, VkPipelineStageFlags2 src_stage, VkAccessFlags2 src_access,
                    VkPipelineStageFlags2 dst_stage, VkAccessFlags2 dst_access) {
  VkImageMemoryBarrier2 barrier{VK_STRUCTURE_TYPE_IMAGE_MEMORY_BARRIER_2};
  barrier.srcStageMask = src_stage;
  barrier.srcAccessMask = src_access;
  barrier.dstStageMask = dst_stage;
  barrier.dstAccessMask = dst_access;
  barrier.oldLayout = old_layout;
  barrier.newLayout = new_layout;
  barrier.srcQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
  barrier.dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
  barrier.image = image;
  barrier.subresourceRange = {VK_IMAGE_ASPECT_COLOR_BIT, base_mip, mip_count, 0, 1};
  VkDependencyInfo dep{VK_STRUCTURE_TYPE_DEPENDENCY_INFO};
  dep.imageMemoryBarrierCount = 1;
  dep.pImageMemoryBarriers = &barrier;
  vkCmdPipelineBarrier2(cmd, &dep);
}

void submit2_and_wait(const Context& ctx, VkCommandBuffer cmd, VkFence fence) {
  VkCommandBufferSubmitInfo cmd_info{VK_STRUCTURE_TYPE_COMMAND_BUFFER_SUBMIT_INFO};
  cmd_info.commandBuffer = cmd;
  VkSubmitInfo2 submit{VK_STRUCTURE_TYPE_SUBMIT_INFO_2};
  submit.commandBufferInfoCount = 1;
  submit.pCommandBufferInfos = &cmd_info;
  vk_check(vkQueueSubmit2(ctx.queue(), 1, &submit, fence), "vkQueueSubmit2");
  ctx.wait_fence(fence);
  vk_check(vkResetFences(ctx.device(), 1, &fence), "vkResetFences");
}

// Uploads level 0 from `staging` and blits each further level from the one above it; leaves
// every level in SHADER_READ_ONLY_OPTIMAL for the fragment shader.
void record_upload_and_mips(VkCommandBuffer cmd, VkImage texture, VkBuffer staging) {
  image_barrier2(cmd, texture, 0, kMipLevels, VK_IMAGE_LAYOUT_UNDEFINED, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL,
                 VK_PIPELINE_STAGE_2_NONE, VK_ACCESS_2_NONE,
                 VK_PIPELINE_STAGE_2_COPY_BIT | VK_PIPELINE_STAGE_2_BLIT_BIT, VK_ACCESS_2_TRANSFER_WRITE_BIT);
  VkBufferImageCopy copy{};
  copy.imageSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
  copy.imageExtent = {kTextureSize, kTextureSize, 1};
  vkCmdCopyBufferToImage(cmd, staging, texture, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, 1, &copy);

  for (uint32_t level = 1; level < kMipLevels; ++level) {
    // The level above was written by the copy (level 1) or the previous blit.
    image_barrier2(cmd, texture, level - 1, 1, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL,
                   VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, VK_PIPELINE_STAGE_2_COPY_BIT | VK_PIPELINE_STAGE_2_BLIT_BIT,
                   VK_ACCESS_2_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_2_BLIT_BIT, VK_ACCESS_2_TRANSFER_READ_BIT);
    const int32_t src = static_cast<int32_t>(kTextureSize >> (level - 1));
    const int32_t dst = static_cast<int32_t>(kTextureSize >> level);
    VkImageBlit blit{};
    blit.srcSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, level - 1, 0, 1};
    blit.srcOffsets[1] = {src, src, 1};
    blit.dstSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, level, 0, 1};
    blit.dstOffsets[1] = {dst, dst, 1};
    vkCmdBlitImage(cmd, texture, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, texture, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, 1,
                   &blit, VK_FILTER_LINEAR);
  }
  image_barrier2(cmd, texture, 0, kMipLevels - 1, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL,
                 VK_IMAGE_LAYOUT_SHADER_READ_ONLY_OPTIMAL, VK_PIPELINE_STAGE_2_BLIT_BIT, VK_ACCESS_2_NONE,
                 VK_PIPELINE_STAGE_2_FRAGMENT_SHADER_BIT, VK_ACCESS_2_SHADER_SAMPLED_READ_BIT);
  image_barrier2(cmd, texture, kMipLevels - 1, 1, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL,
                 VK_IMAGE_LAYOUT_SHADER_READ_ONLY_OPTIMAL, VK_PIPELINE_STAGE_2_BLIT_BIT, VK_ACCESS_2_TRANSFER_WRITE_BIT,
                 VK_PIPELINE_STAGE_2_FRAGMENT_SHADER_BIT, VK_ACCESS_2_SHADER_SAMPLED_READ_BIT);
}

void run(int argc, char** argv) {
  CommonArgs args;
  args.frames = 2;
  ArgParser parser("texture",
                   "Uploads a procedural texture, builds its mip chain with vkCmdBlitImage and\n"
                   "samples four mip cases onto quads (256x256, dynamic rendering); checks every "
                   "pixel.",
                   args);
  if (!parser.parse(argc, argv)) return;

  Context ctx({.app_name = "bypass-texture",
               .min_api_version = VK_API_VERSION_1_3,
               .dynamic_rendering = true,
               .synchronization2 = true});
  VkDevice device = ctx.device();
  ctx.require_format_features(kTextureFormat, VK_FORMAT_FEATURE_SAMPLED_IMAGE_BIT |
                                                  VK_FORMAT_FEATURE_SAMPLED_IMAGE_FILTER_LINEAR_BIT |
                                                  VK_FORMAT_FEATURE_BLIT_SRC_BIT | VK_FORMAT_FEATURE_BLIT_DST_BIT |
                                                  VK_FORMAT_FEATURE_TRANSFER_DST_BIT);
  ctx.require_format_features(kTargetFormat,
                              VK_FORMAT_FEATURE_COLOR_ATTACHMENT_BIT | VK_FORMAT_FEATURE_TRANSFER_SRC_BIT);

  const std::vector<Level> chain = make_mip_chain(make_texture());

  // Resources.
  Image texture(
      ctx, {.width = kTextureSize,
            .height = kTextureSize,
            .mip_levels = kMipLevels,
            .format = kTextureFormat,
            .usage = VK_IMAGE_USAGE_TRANSFER_SRC_BIT | VK_IMAGE_USAGE_TRANSFER_DST_BIT | VK_IMAGE_USAGE_SAMPLED_BIT});
  Image target(ctx, {.width = kWidth,
                     .height = kHeight,
                     .format = kTargetFormat,
                     .usage = VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT | VK_IMAGE_USAGE_TRANSFER_SRC_BIT});
  Buffer staging(ctx, chain[0].texels.size(), VK_BUFFER_USAGE_TRANSFER_SRC_BIT, MemoryUse::kUpload);
  Buffer vertices(ctx, sizeof(kQuad), VK_BUFFER_USAGE_VERTEX_BUFFER_BIT, MemoryUse::kUpload);
  Buffer indices(ctx, sizeof(kQuadIndices), VK_BUFFER_USAGE_INDEX_BUFFER_BIT, MemoryUse::kUpload);
  Buffer readback(ctx, kWidth * kHeight * 4, VK_BUFFER_USAGE_TRANSFER_DST_BIT, MemoryUse::kReadback);
  std::copy(chain[0].texels.begin(), chain[0].texels.end(), staging.mapped<uint8_t>().begin());
  std::copy(std::begin(kQuad), std::end(kQuad), vertices.mapped<Vertex>().begin());
  std::copy(std::begin(kQuadIndices), std::end(kQuadIndices), indices.mapped<uint16_t>().begin());
  staging.flush();
  vertices.flush();
  indices.flush();

  UniqueCommandPool pool =
      create_command_pool(device, ctx.queue_family(), VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT);
  VkCommandBuffer cmd = allocate_command_buffers(device, pool.get(), VK_COMMAND_BUFFER_LEVEL_PRIMARY, 1)[0];
  UniqueFence fence = create_fence(device);

  begin_command_buffer(cmd, VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT);
  record_upload_and_mips(cmd, texture.get(), staging.get());
  end_command_buffer(cmd);
  submit2_and_wait(ctx, cmd, fence.get());

  // Sampler and descriptor.
  VkSamplerCreateInfo sampler_info{VK_STRUCTURE_TYPE_SAMPLER_CREATE_INFO};
  sampler_info.magFilter = VK_FILTER_LINEAR;
  sampler_info.minFilter = VK_FILTER_LINEAR;
  sampler_info.mipmapMode = VK_SAMPLER_MIPMAP_MODE_LINEAR;
  sampler_info.addressModeU = VK_SAMPLER_ADDRESS_MODE_REPEAT;
  sampler_info.addressModeV = VK_SAMPLER_ADDRESS_MODE_REPEAT;
  sampler_info.addressModeW = VK_SAMPLER_ADDRESS_MODE_REPEAT;
  sampler_info.maxLod = VK_LOD_CLAMP_NONE;
  UniqueSampler sampler;
  vk_check(vkCreateSampler(device, &sampler_info, nullptr, sampler.put(device)), "vkCreateSampler");

  VkDescriptorSetLayoutBinding binding{};
  binding.binding = 0;
  binding.descriptorType = VK_DESCRIPTOR_TYPE_COMBINED_IMAGE_SAMPLER;
  binding.descriptorCount = 1;
  binding.stageFlags = VK_SHADER_STAGE_FRAGMENT_BIT;
  VkDescriptorSetLayoutCreateInfo set_layout_info{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  set_layout_info.bindingCount = 1;
  set_layout_info.pBindings = &binding;
  UniqueDescriptorSetLayout set_layout;
  vk_check(vkCreateDescriptorSetLayout(device, &set_layout_info, nullptr, set_layout.put(device)),
           "vkCreateDescriptorSetLayout");
  VkDescriptorPoolSize pool_size{VK_DESCRIPTOR_TYPE_COMBINED_IMAGE_SAMPLER, 1};
  VkDescriptorPoolCreateInfo pool_info{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
  pool_info.maxSets = 1;
  pool_info.poolSizeCount = 1;
  pool_info.pPoolSizes = &pool_size;
  UniqueDescriptorPool descriptor_pool;
  vk_check(vkCreateDescriptorPool(device, &pool_info, nullptr, descriptor_pool.put(device)), "vkCreateDescriptorPool");
  const VkDescriptorSetLayout set_layout_handle = set_layout.get();
  VkDescriptorSetAllocateInfo set_info{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
  set_info.descriptorPool = descriptor_pool.get();
  set_info.descriptorSetCount = 1;
  set_info.pSetLayouts = &set_layout_handle;
  VkDescriptorSet set = VK_NULL_HANDLE;
  vk_check(vkAllocateDescriptorSets(device, &set_info, &set), "vkAllocateDescriptorSets");
  VkDescriptorImageInfo image_info{sampler.get(), texture.view(), VK_IMAGE_LAYOUT_SHADER_READ_ONLY_OPTIMAL};
  VkWriteDescriptorSet write{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
  write.dstSet = set;
  write.dstBinding = 0;
  write.descriptorCount = 1;
  write.descriptorType = VK_DESCRIPTOR_TYPE_COMBINED_IMAGE_SAMPLER;
  write.pImageInfo = &image_info;
  vkUpdateDescriptorSets(device, 1, &write, 0, nullptr);

  // Pipeline for dynamic rendering (no render pass object).
  const VkPushConstantRange push_range{VK_SHADER_STAGE_VERTEX_BIT | VK_SHADER_STAGE_FRAGMENT_BIT, 0, sizeof(QuadPush)};
  UniquePipelineLayout layout =
      create_pipeline_layout(device, std::span(&set_layout_handle, 1), std::span(&push_range, 1));
  UniqueShaderModule vs = create_shader_module(device, kVertexSpirv);
  UniqueShaderModule fs = create_shader_module(device, kFragmentSpirv);
  UniquePipeline pipeline =
      create_graphics_pipeline(device, {.vertex = vs.get(),
                                        .fragment = fs.get(),
                                        .layout = layout.get(),
                                        .color_format = kTargetFormat,
                                        .bindings = {{0, sizeof(Vertex), VK_VERTEX_INPUT_RATE_VERTEX}},
                                        .attributes = {{0, 0, VK_FORMAT_R32G32_SFLOAT, offsetof(Vertex, x)},
                                                       {1, 0, VK_FORMAT_R32G32_SFLOAT, offsetof(Vertex, u)}}});

  FrameTimer timer;
  Rgba8Image image;
  for (uint32_t frame = 0; frame < args.frames; ++frame) {
    timer.start();
    begin_command_buffer(cmd, VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT);
    // The previous frame's readback copy must finish before the image is overwritten.
    image_barrier2(cmd, target.get(), 0, 1, VK_IMAGE_LAYOUT_UNDEFINED, VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL,
                   VK_PIPELINE_STAGE_2_COPY_BIT, VK_ACCESS_2_NONE, VK_PIPELINE_STAGE_2_COLOR_ATTACHMENT_OUTPUT_BIT,
                   VK_ACCESS_2_COLOR_ATTACHMENT_WRITE_BIT);
    VkRenderingAttachmentInfo color{VK_STRUCTURE_TYPE_RENDERING_ATTACHMENT_INFO};
    color.imageView = target.view();
    color.imageLayout = VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL;
    color.loadOp = VK_ATTACHMENT_LOAD_OP_CLEAR;
    color.storeOp = VK_ATTACHMENT_STORE_OP_STORE;
    for (int c = 0; c < 4; ++c) color.clearValue.color.float32[c] = kBackground[c] / 255.0f;
    VkRenderingInfo rendering{VK_STRUCTURE_TYPE_RENDERING_INFO};
    rendering.renderArea = {{0, 0}, {kWidth, kHeight}};
    rendering.layerCount = 1;
    rendering.colorAttachmentCount = 1;
    rendering.pColorAttachments = &color;
    vkCmdBeginRendering(cmd, &rendering);
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_GRAPHICS, pipeline.get());
    record_full_viewport(cmd, kWidth, kHeight);
    vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_GRAPHICS, layout.get(), 0, 1, &set, 0, nullptr);
    const VkBuffer vb = vertices.get();
    const VkDeviceSize offset = 0;
    vkCmdBindVertexBuffers(cmd, 0, 1, &vb, &offset);
    vkCmdBindIndexBuffer(cmd, indices.get(), 0, VK_INDEX_TYPE_UINT16);
    for (const QuadCase& q : kCases) {
      const QuadPush push{{q.x0 * 2.0f / kWidth - 1.0f, q.y0 * 2.0f / kHeight - 1.0f},
                          {128 * 2.0f / kWidth, 128 * 2.0f / kHeight},
                          q.uv_scale,
                          q.lod};
      vkCmdPushConstants(cmd, layout.get(), VK_SHADER_STAGE_VERTEX_BIT | VK_SHADER_STAGE_FRAGMENT_BIT, 0, sizeof(push),
                         &push);
      vkCmdDrawIndexed(cmd, 6, 1, 0, 0, 0);
    }
    vkCmdEndRendering(cmd);
    image_barrier2(cmd, target.get(), 0, 1, VK_IMAGE_LAYOUT_COLOR_ATTACHMENT_OPTIMAL,
                   VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, VK_PIPELINE_STAGE_2_COLOR_ATTACHMENT_OUTPUT_BIT,
                   VK_ACCESS_2_COLOR_ATTACHMENT_WRITE_BIT, VK_PIPELINE_STAGE_2_COPY_BIT, VK_ACCESS_2_TRANSFER_READ_BIT);
    record_copy_image_to_buffer(cmd, target.get(), kWidth, kHeight, readback.get());
    VkMemoryBarrier2 to_host{VK_STRUCTURE_TYPE_MEMORY_BARRIER_2};
    to_host.srcStageMask = VK_PIPELINE_STAGE_2_COPY_BIT;
    to_host.srcAccessMask = VK_ACCESS_2_TRANSFER_WRITE_BIT;
    to_host.dstStageMask = VK_PIPELINE_STAGE_2_HOST_BIT;
    to_host.dstAccessMask = VK_ACCESS_2_HOST_READ_BIT;
    VkDependencyInfo dep{VK_STRUCTURE_TYPE_DEPENDENCY_INFO};
    dep.memoryBarrierCount = 1;
    dep.pMemoryBarriers = &to_host;
    vkCmdPipelineBarrier2(cmd, &dep);
    end_command_buffer(cmd);
    submit2_and_wait(ctx, cmd, fence.get());
    timer.stop();

    image = read_rgba8(readback, kWidth, kHeight);
    const bool last = frame + 1 == args.frames;
    if (last && !args.out.empty()) write_png(args.out, image);
    try {
      check_image(image, chain, frame);
    } catch (const CheckError&) {
      if (!last && !args.out.empty()) write_png(args.out, image);
      throw;
    }
  }
  if (args.timing) timer.report("texture");
  std::printf("texture: OK, %u frame(s), %u mip levels on %s%s%s\n", args.frames, kMipLevels,
              ctx.properties().deviceName, args.out.empty() ? "" : ", wrote ", args.out.c_str());
}

}  // namespace
}  // namespace bypass::samples

int main(int argc, char** argv) {
  return bypass::samples::sample_main("texture", [&] { bypass::samples::run(argc, argv); });
}
