// Descriptor update templates stay in the guest: an update through a template is rewritten
// into the VkWriteDescriptorSet array it stands for, whose layout the wire knows.
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "objects.h"

namespace bypass::icd {

namespace {

struct Template {
  std::vector<VkDescriptorUpdateTemplateEntry> entries;
  VkPipelineBindPoint bind_point = VK_PIPELINE_BIND_POINT_GRAPHICS;  // push descriptor templates
};

std::mutex g_mu;
std::unordered_map<uint64_t, Template> g_templates;

// Builds the writes for one update; storage keeps the arrays the writes point into.
struct Writes {
  std::vector<VkWriteDescriptorSet> writes;
  std::vector<std::vector<VkDescriptorImageInfo>> images;
  std::vector<std::vector<VkDescriptorBufferInfo>> buffers;
  std::vector<std::vector<VkBufferView>> views;
  std::vector<VkWriteDescriptorSetInlineUniformBlock> inline_blocks;
};

bool build_writes(uint64_t tmpl, VkDescriptorSet set, const void* pData, Writes& w) {
  std::lock_guard lock(g_mu);
  auto it = g_templates.find(tmpl);
  if (it == g_templates.end()) return false;
  const auto* base = static_cast<const uint8_t*>(pData);
  w.writes.reserve(it->second.entries.size());
  w.inline_blocks.reserve(it->second.entries.size());
  for (const auto& e : it->second.entries) {
    VkWriteDescriptorSet wr{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    wr.dstSet = set;
    wr.dstBinding = e.dstBinding;
    wr.dstArrayElement = e.dstArrayElement;
    wr.descriptorCount = e.descriptorCount;
    wr.descriptorType = e.descriptorType;
    const uint8_t* p = base + e.offset;
    switch (e.descriptorType) {
      case VK_DESCRIPTOR_TYPE_SAMPLER:
      case VK_DESCRIPTOR_TYPE_COMBINED_IMAGE_SAMPLER:
      case VK_DESCRIPTOR_TYPE_SAMPLED_IMAGE:
      case VK_DESCRIPTOR_TYPE_STORAGE_IMAGE:
      case VK_DESCRIPTOR_TYPE_INPUT_ATTACHMENT: {
        auto& v = w.images.emplace_back(e.descriptorCount);
        for (uint32_t i = 0; i < e.descriptorCount; ++i) std::memcpy(&v[i], p + i * e.stride, sizeof(v[i]));
        wr.pImageInfo = v.data();
        break;
      }
      case VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER:
      case VK_DESCRIPTOR_TYPE_STORAGE_BUFFER:
      case VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER_DYNAMIC:
      case VK_DESCRIPTOR_TYPE_STORAGE_BUFFER_DYNAMIC: {
        auto& v = w.buffers.emplace_back(e.descriptorCount);
        for (uint32_t i = 0; i < e.descriptorCount; ++i) std::memcpy(&v[i], p + i * e.stride, sizeof(v[i]));
        wr.pBufferInfo = v.data();
        break;
      }
      case VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER:
      case VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER: {
        auto& v = w.views.emplace_back(e.descriptorCount);
        for (uint32_t i = 0; i < e.descriptorCount; ++i) std::memcpy(&v[i], p + i * e.stride, sizeof(v[i]));
        wr.pTexelBufferView = v.data();
        break;
      }
      case VK_DESCRIPTOR_TYPE_INLINE_UNIFORM_BLOCK: {
        // descriptorCount is a byte count here, dstArrayElement a byte offset.
        auto& ib = w.inline_blocks.emplace_back();
        ib.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET_INLINE_UNIFORM_BLOCK;
        ib.dataSize = e.descriptorCount;
        ib.pData = p;
        wr.pNext = &ib;
        break;
      }
      default:
        return false;
    }
    w.writes.push_back(wr);
  }
  return true;
}

}  // namespace

VKAPI_ATTR VkResult VKAPI_CALL
icd_vkCreateDescriptorUpdateTemplate(VkDevice device, const VkDescriptorUpdateTemplateCreateInfo* pCreateInfo,
                                     const VkAllocationCallbacks*, VkDescriptorUpdateTemplate* pTemplate) {
  const uint64_t id = connection_of(device)->new_id();
  Template t;
  t.entries.assign(pCreateInfo->pDescriptorUpdateEntries,
                   pCreateInfo->pDescriptorUpdateEntries + pCreateInfo->descriptorUpdateEntryCount);
  if (pCreateInfo->templateType == VK_DESCRIPTOR_UPDATE_TEMPLATE_TYPE_PUSH_DESCRIPTORS_KHR)
    t.bind_point = pCreateInfo->pipelineBindPoint;
  std::lock_guard lock(g_mu);
  g_templates[id] = std::move(t);
  *pTemplate = wire::handle_from_bits<VkDescriptorUpdateTemplate>(id);
  return VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroyDescriptorUpdateTemplate(VkDevice, VkDescriptorUpdateTemplate tmpl,
                                                                 const VkAllocationCallbacks*) {
  forget_private_data(VK_OBJECT_TYPE_DESCRIPTOR_UPDATE_TEMPLATE, wire::handle_bits(tmpl));
  std::lock_guard lock(g_mu);
  g_templates.erase(wire::handle_bits(tmpl));
}

VKAPI_ATTR void VKAPI_CALL icd_vkUpdateDescriptorSetWithTemplate(VkDevice device, VkDescriptorSet set,
                                                                 VkDescriptorUpdateTemplate tmpl, const void* pData) {
  Writes w;
  if (!build_writes(wire::handle_bits(tmpl), set, pData, w)) return;
  static auto update = entry<PFN_vkUpdateDescriptorSets>("vkUpdateDescriptorSets");
  update(device, static_cast<uint32_t>(w.writes.size()), w.writes.data(), 0, nullptr);
}

VKAPI_ATTR void VKAPI_CALL icd_vkCmdPushDescriptorSetWithTemplateKHR(VkCommandBuffer commandBuffer,
                                                                     VkDescriptorUpdateTemplate tmpl,
                                                                     VkPipelineLayout layout, uint32_t set,
                                                                     const void* pData) {
  Writes w;
  if (!build_writes(wire::handle_bits(tmpl), VK_NULL_HANDLE, pData, w)) return;
  VkPipelineBindPoint bind_point;
  {
    std::lock_guard lock(g_mu);
    bind_point = g_templates[wire::handle_bits(tmpl)].bind_point;
  }
  static auto push = entry<PFN_vkCmdPushDescriptorSetKHR>("vkCmdPushDescriptorSetKHR");
  push(commandBuffer, bind_point, layout, set, static_cast<uint32_t>(w.writes.size()), w.writes.data());
}

}  // namespace bypass::icd
