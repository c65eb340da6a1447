// Shader modules, pipeline layouts and the two pipeline shapes the samples use: a plain
// graphics pipeline (one colour attachment, no depth, dynamic viewport and scissor) for a
// render pass or for dynamic rendering, and a compute pipeline.
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <span>
#include <vector>

#include "handles.h"

namespace bypass::samples {

UniqueShaderModule create_shader_module(VkDevice device, std::span<const uint32_t> spirv);

UniquePipelineLayout create_pipeline_layout(VkDevice device, std::span<const VkDescriptorSetLayout> set_layouts,
                                            std::span<const VkPushConstantRange> push_constants);

struct GraphicsPipelineDesc {
  VkShaderModule vertex = VK_NULL_HANDLE;
  VkShaderModule fragment = VK_NULL_HANDLE;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  // Either a render pass (subpass 0) or, when null, dynamic rendering into `color_format`.
  VkRenderPass render_pass = VK_NULL_HANDLE;
  VkFormat color_format = VK_FORMAT_UNDEFINED;
  std::vector<VkVertexInputBindingDescription> bindings;
  std::vector<VkVertexInputAttributeDescription> attributes;
  VkPrimitiveTopology topology = VK_PRIMITIVE_TOPOLOGY_TRIANGLE_LIST;
  // Specialization constants of the fragment stage (kept alive by the caller until the call returns).
  const VkSpecializationInfo* fragment_specialization = nullptr;
};

UniquePipeline create_graphics_pipeline(VkDevice device, const GraphicsPipelineDesc& desc);

UniquePipeline create_compute_pipeline(VkDevice device, VkShaderModule module, VkPipelineLayout layout);

// A render pass with one colour attachment and one subpass. Its external dependencies order
// it after earlier colour writes and transfer reads of the same image and before later colour
// passes and transfer reads, which covers every way the samples chain passes and readbacks.
struct ColorPassDesc {
  VkFormat format = VK_FORMAT_R8G8B8A8_UNORM;
  VkAttachmentLoadOp load_op = VK_ATTACHMENT_LOAD_OP_CLEAR;
  VkImageLayout initial_layout = VK_IMAGE_LAYOUT_UNDEFINED;
  VkImageLayout final_layout = VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL;
};
UniqueRenderPass create_color_render_pass(VkDevice device, const ColorPassDesc& desc);

UniqueFramebuffer create_framebuffer(VkDevice device, VkRenderPass pass, VkImageView view, uint32_t width,
                                     uint32_t height);

// Sets viewport and scissor to the whole `width` x `height` target.
void record_full_viewport(VkCommandBuffer cmd, uint32_t width, uint32_t height);

}  // namespace bypass::samples
