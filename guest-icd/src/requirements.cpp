// Buffer memory requirements answered in the guest when a buffer made the same way was asked
// about before.
//
// A buffer's requirements (size, alignment, memory types, and whether it wants a dedicated
// allocation) depend only on how it was created: Vulkan 1.3 (maintenance4) makes that a rule,
// since vkGetDeviceBufferMemoryRequirements must answer from a create info alone what
// vkGetBufferMemoryRequirements2 answers for a buffer created with it. Programs that create
// their staging and uniform buffers afresh each frame (ffmpeg's Vulkan filters: six a frame)
// paid a round trip each. The ICD keeps, per device, the answer for each create info it has
// seen (BufferRequirements) and the create info of each live buffer; a question about a buffer
// whose create info has an answer is answered here, bit for bit what the driver said before.
//
// Only on devices of Vulkan 1.3 or later, for create infos whose whole chain the ICD knows
// (external memory handle types, an opaque capture address), and for answers whose chain asks
// nothing but VkMemoryDedicatedRequirements; everything else goes to bypassd as before.
#include <cstring>
#include <string>

#include "objects.h"

namespace bypass::icd {

namespace {

template <class T>
void append(std::string& key, const T& value) {
  key.append(reinterpret_cast<const char*>(&value), sizeof value);
}

// The create info as bytes, or false when its chain has a structure this code does not know
// (which might change the answer in a way the key would not show).
bool buffer_key(const VkBufferCreateInfo& info, std::string* key) {
  append(*key, info.flags);
  append(*key, info.size);
  append(*key, info.usage);
  append(*key, info.sharingMode);
  if (info.sharingMode == VK_SHARING_MODE_CONCURRENT) {
    append(*key, info.queueFamilyIndexCount);
    if (info.queueFamilyIndexCount && !info.pQueueFamilyIndices) return false;
    for (uint32_t i = 0; i < info.queueFamilyIndexCount; ++i) append(*key, info.pQueueFamilyIndices[i]);
  }
  for (auto* p = static_cast<const VkBaseInStructure*>(info.pNext); p; p = p->pNext) {
    append(*key, p->sType);
    switch (p->sType) {
      case VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO:
        append(*key, reinterpret_cast<const VkExternalMemoryBufferCreateInfo*>(p)->handleTypes);
        break;
      case VK_STRUCTURE_TYPE_BUFFER_OPAQUE_CAPTURE_ADDRESS_CREATE_INFO:
        append(*key, reinterpret_cast<const VkBufferOpaqueCaptureAddressCreateInfo*>(p)->opaqueCaptureAddress);
        break;
      default:
        return false;
    }
  }
  return true;
}

// Whether the device answers by create info (Vulkan 1.3 or later), asked once.
bool answers_by_info(Device* dev) {
  std::call_once(dev->requirements.once, [dev] {
    VkPhysicalDeviceProperties props{};
    icd_vkGetPhysicalDeviceProperties(reinterpret_cast<VkPhysicalDevice>(dev->physical), &props);
    dev->requirements.by_info = props.apiVersion >= VK_API_VERSION_1_3;
  });
  return dev->requirements.by_info;
}

// The dedicated-allocation part of an answer's chain, or false when the chain asks for
// anything else.
bool dedicated_only(const VkMemoryRequirements2& req, VkMemoryDedicatedRequirements** dedicated) {
  *dedicated = nullptr;
  for (auto* p = static_cast<VkBaseOutStructure*>(req.pNext); p; p = p->pNext) {
    if (p->sType != VK_STRUCTURE_TYPE_MEMORY_DEDICATED_REQUIREMENTS) return false;
    *dedicated = reinterpret_cast<VkMemoryDedicatedRequirements*>(p);
  }
  return true;
}

// The kept answer for `buffer`, if any (with its dedicated part when `need_dedicated`).
bool kept_answer(Device* dev, uint64_t buffer, bool need_dedicated, BufferRequirements::Answer* out) {
  std::lock_guard lock(dev->requirements.mu);
  auto key = dev->requirements.buffers.find(buffer);
  if (key == dev->requirements.buffers.end()) return false;
  auto answer = dev->requirements.answers.find(key->second);
  if (answer == dev->requirements.answers.end() || (need_dedicated && !answer->second.has_dedicated)) return false;
  *out = answer->second;
  return true;
}

void keep_answer(Device* dev, uint64_t buffer, const BufferRequirements::Answer& a) {
  std::lock_guard lock(dev->requirements.mu);
  auto key = dev->requirements.buffers.find(buffer);
  if (key == dev->requirements.buffers.end()) return;
  auto& answers = dev->requirements.answers;
  if (answers.size() >= BufferRequirements::kMaxAnswers && !answers.count(key->second)) answers.clear();
  BufferRequirements::Answer& kept = answers[key->second];
  if (kept.has_dedicated && !a.has_dedicated) return;  // the fuller answer stays
  kept = a;
}

}  // namespace

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateBuffer(VkDevice device, const VkBufferCreateInfo* pCreateInfo,
                                                  const VkAllocationCallbacks* pAllocator, VkBuffer* pBuffer) {
  auto* dev = as<Device>(device);
  *pBuffer = wire::handle_from_bits<VkBuffer>(dev->conn->new_id());
  const VkResult r = forward_vkCreateBuffer(device, pCreateInfo, pAllocator, pBuffer);
  std::string key;
  if (r == VK_SUCCESS && answers_by_info(dev) && buffer_key(*pCreateInfo, &key)) {
    std::lock_guard lock(dev->requirements.mu);
    dev->requirements.buffers[wire::handle_bits(*pBuffer)] = std::move(key);
  }
  return r;
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroyBuffer(VkDevice device, VkBuffer buffer,
                                               const VkAllocationCallbacks* pAllocator) {
  if (buffer != VK_NULL_HANDLE) {
    auto* dev = as<Device>(device);
    std::lock_guard lock(dev->requirements.mu);
    dev->requirements.buffers.erase(wire::handle_bits(buffer));
  }
  forward_vkDestroyBuffer(device, buffer, pAllocator);
}

VKAPI_ATTR void VKAPI_CALL icd_vkGetBufferMemoryRequirements2(VkDevice device,
                                                              const VkBufferMemoryRequirementsInfo2* pInfo,
                                                              VkMemoryRequirements2* pMemoryRequirements) {
  auto* dev = as<Device>(device);
  const uint64_t buffer = wire::handle_bits(pInfo->buffer);
  VkMemoryDedicatedRequirements* dedicated = nullptr;
  const bool plain = !pInfo->pNext && dedicated_only(*pMemoryRequirements, &dedicated);
  BufferRequirements::Answer a;
  if (plain && kept_answer(dev, buffer, dedicated != nullptr, &a)) {
    pMemoryRequirements->memoryRequirements = a.requirements;
    if (dedicated) {
      dedicated->prefersDedicatedAllocation = a.prefers_dedicated;
      dedicated->requiresDedicatedAllocation = a.requires_dedicated;
    }
    return;
  }
  forward_vkGetBufferMemoryRequirements2(device, pInfo, pMemoryRequirements);
  if (!plain) return;
  a.requirements = pMemoryRequirements->memoryRequirements;
  a.has_dedicated = dedicated != nullptr;
  if (dedicated) {
    a.prefers_dedicated = dedicated->prefersDedicatedAllocation;
    a.requires_dedicated = dedicated->requiresDedicatedAllocation;
  }
  keep_answer(dev, buffer, a);
}

VKAPI_ATTR void VKAPI_CALL icd_vkGetBufferMemoryRequirements(VkDevice device, VkBuffer buffer,
                                                             VkMemoryRequirements* pMemoryRequirements) {
  auto* dev = as<Device>(device);
  BufferRequirements::Answer a;
  if (kept_answer(dev, wire::handle_bits(buffer), false, &a)) {
    *pMemoryRequirements = a.requirements;
    return;
  }
  forward_vkGetBufferMemoryRequirements(device, buffer, pMemoryRequirements);
  a.requirements = *pMemoryRequirements;
  keep_answer(dev, wire::handle_bits(buffer), a);
}

}  // namespace bypass::icd
