// Buffer and image memory requirements answered in the guest when an object made the same way
// was asked about before.
//
// An object's requirements (size, alignment, memory types, and whether it wants a dedicated
// allocation) depend only on how it was created: Vulkan 1.3 (maintenance4) makes that a rule,
// since vkGetDeviceBufferMemoryRequirements and vkGetDeviceImageMemoryRequirements must answer
// from a create info alone what vkGet*MemoryRequirements2 answer for an object created with it.
// Programs that create their staging buffers and intermediate images afresh each frame
// (ffmpeg's Vulkan filters: six buffers a frame) paid a round trip each. The ICD keeps, per
// device, the answer for each create info it has seen (KeptRequirements) and the create info
// of each live buffer and image; a question about an object whose create info has an answer is
// answered here, bit for bit what the driver said before.
//
// Only on devices of Vulkan 1.3 or later, for create infos whose whole chain the ICD knows, and
// for questions whose chains ask nothing but VkMemoryDedicatedRequirements (no image plane);
// everything else goes to bypassd as before.
#include <cstring>
#include <string>

#include "objects.h"

namespace bypass::icd {

namespace {

template <class T>
void append(std::string& key, const T& value) {
  key.append(reinterpret_cast<const char*>(&value), sizeof value);
}

template <class T>
bool append_array(std::string& key, uint32_t count, const T* values) {
  append(key, count);
  if (count && !values) return false;
  key.append(reinterpret_cast<const char*>(values), sizeof(T) * count);
  return true;
}

// The create info as bytes, or false when its chain has a structure this code does not know
// (which might change the answer in a way the key would not show).
bool buffer_key(const VkBufferCreateInfo& info, std::string* key) {
  key->push_back('b');
  append(*key, info.flags);
  append(*key, info.size);
  append(*key, info.usage);
  append(*key, info.sharingMode);
  if (info.sharingMode == VK_SHARING_MODE_CONCURRENT &&
      !append_array(*key, info.queueFamilyIndexCount, info.pQueueFamilyIndices))
    return false;
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

bool image_key(const VkImageCreateInfo& info, std::string* key) {
  key->push_back('i');
  append(*key, info.flags);
  append(*key, info.imageType);
  append(*key, info.format);
  append(*key, info.extent);
  append(*key, info.mipLevels);
  append(*key, info.arrayLayers);
  append(*key, info.samples);
  append(*key, info.tiling);
  append(*key, info.usage);
  append(*key, info.sharingMode);
  append(*key, info.initialLayout);
  if (info.sharingMode == VK_SHARING_MODE_CONCURRENT &&
      !append_array(*key, info.queueFamilyIndexCount, info.pQueueFamilyIndices))
    return false;
  for (auto* p = static_cast<const VkBaseInStructure*>(info.pNext); p; p = p->pNext) {
    append(*key, p->sType);
    switch (p->sType) {
      case VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_IMAGE_CREATE_INFO:
        append(*key, reinterpret_cast<const VkExternalMemoryImageCreateInfo*>(p)->handleTypes);
        break;
      case VK_STRUCTURE_TYPE_IMAGE_FORMAT_LIST_CREATE_INFO: {
        const auto* list = reinterpret_cast<const VkImageFormatListCreateInfo*>(p);
        if (!append_array(*key, list->viewFormatCount, list->pViewFormats)) return false;
        break;
      }
      case VK_STRUCTURE_TYPE_IMAGE_STENCIL_USAGE_CREATE_INFO:
        append(*key, reinterpret_cast<const VkImageStencilUsageCreateInfo*>(p)->stencilUsage);
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

// Notes a new object's create info key (`make_key` fills it, or says the chain is unknown).
template <class MakeKey>
void note_object(Device* dev, uint64_t object, MakeKey make_key) {
  std::string key;
  if (!answers_by_info(dev) || !make_key(&key)) return;
  std::lock_guard lock(dev->requirements.mu);
  dev->requirements.objects[object] = std::move(key);
}

void forget_object(Device* dev, uint64_t object) {
  std::lock_guard lock(dev->requirements.mu);
  dev->requirements.objects.erase(object);
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

// The kept answer for `object`, if any (with its dedicated part when `need_dedicated`).
bool kept_answer(Device* dev, uint64_t object, bool need_dedicated, KeptRequirements::Answer* out) {
  std::lock_guard lock(dev->requirements.mu);
  auto key = dev->requirements.objects.find(object);
  if (key == dev->requirements.objects.end()) return false;
  auto answer = dev->requirements.answers.find(key->second);
  if (answer == dev->requirements.answers.end() || (need_dedicated && !answer->second.has_dedicated)) return false;
  *out = answer->second;
  return true;
}

void keep_answer(Device* dev, uint64_t object, const KeptRequirements::Answer& a) {
  std::lock_guard lock(dev->requirements.mu);
  auto key = dev->requirements.objects.find(object);
  if (key == dev->requirements.objects.end()) return;
  auto& answers = dev->requirements.answers;
  if (answers.size() >= KeptRequirements::kMaxAnswers && !answers.count(key->second)) answers.clear();
  KeptRequirements::Answer& kept = answers[key->second];
  if (kept.has_dedicated && !a.has_dedicated) return;  // the fuller answer stays
  kept = a;
}

// vkGet*MemoryRequirements2 for `object`: from the kept answer, or from bypassd through
// `forward` (then kept). `plain_info`: the question's own chain is empty.
template <class Forward>
void requirements2(Device* dev, uint64_t object, bool plain_info, VkMemoryRequirements2* req, Forward forward) {
  VkMemoryDedicatedRequirements* dedicated = nullptr;
  const bool plain = plain_info && dedicated_only(*req, &dedicated);
  KeptRequirements::Answer a;
  if (plain && kept_answer(dev, object, dedicated != nullptr, &a)) {
    req->memoryRequirements = a.requirements;
    if (dedicated) {
      dedicated->prefersDedicatedAllocation = a.prefers_dedicated;
      dedicated->requiresDedicatedAllocation = a.requires_dedicated;
    }
    return;
  }
  forward();
  if (!plain) return;
  a.requirements = req->memoryRequirements;
  a.has_dedicated = dedicated != nullptr;
  if (dedicated) {
    a.prefers_dedicated = dedicated->prefersDedicatedAllocation;
    a.requires_dedicated = dedicated->requiresDedicatedAllocation;
  }
  keep_answer(dev, object, a);
}

// vkGet*MemoryRequirements (the first version) for `object`, likewise.
template <class Forward>
void requirements1(Device* dev, uint64_t object, VkMemoryRequirements* req, Forward forward) {
  KeptRequirements::Answer a;
  if (kept_answer(dev, object, false, &a)) {
    *req = a.requirements;
    return;
  }
  forward();
  a.requirements = *req;
  keep_answer(dev, object, a);
}

// vkCreateBuffer/vkCreateImage: a new id for *handle, the generated call (`forward`), then the
// create info's key noted for the new object.
template <class Handle, class Forward, class MakeKey>
VkResult create_noted(VkDevice device, Handle* handle, Forward forward, MakeKey make_key) {
  auto* dev = as<Device>(device);
  *handle = wire::handle_from_bits<Handle>(dev->conn->new_id());
  const VkResult r = forward();
  if (r == VK_SUCCESS) note_object(dev, wire::handle_bits(*handle), make_key);
  return r;
}

}  // namespace

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateBuffer(VkDevice device, const VkBufferCreateInfo* pCreateInfo,
                                                  const VkAllocationCallbacks* pAllocator, VkBuffer* pBuffer) {
  const VkResult r = create_noted(
      device, pBuffer, [&] { return forward_vkCreateBuffer(device, pCreateInfo, pAllocator, pBuffer); },
      [&](std::string* k) { return buffer_key(*pCreateInfo, k); });
  if (r == VK_SUCCESS)
    note_usage(as<Device>(device), wire::handle_bits(*pBuffer), buffer_usage_read_only(*pCreateInfo));
  return r;
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroyBuffer(VkDevice device, VkBuffer buffer,
                                               const VkAllocationCallbacks* pAllocator) {
  if (buffer != VK_NULL_HANDLE) {
    forget_object(as<Device>(device), wire::handle_bits(buffer));
    forget_usage(as<Device>(device), wire::handle_bits(buffer));
  }
  forward_vkDestroyBuffer(device, buffer, pAllocator);
}

VKAPI_ATTR void VKAPI_CALL icd_vkGetBufferMemoryRequirements2(VkDevice device,
                                                              const VkBufferMemoryRequirementsInfo2* pInfo,
                                                              VkMemoryRequirements2* pMemoryRequirements) {
  requirements2(as<Device>(device), wire::handle_bits(pInfo->buffer), pInfo->pNext == nullptr, pMemoryRequirements,
                [&] { forward_vkGetBufferMemoryRequirements2(device, pInfo, pMemoryRequirements); });
}

VKAPI_ATTR void VKAPI_CALL icd_vkGetBufferMemoryRequirements(VkDevice device, VkBuffer buffer,
                                                             VkMemoryRequirements* pMemoryRequirements) {
  requirements1(as<Device>(device), wire::handle_bits(buffer), pMemoryRequirements,
                [&] { forward_vkGetBufferMemoryRequirements(device, buffer, pMemoryRequirements); });
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateImage(VkDevice device, const VkImageCreateInfo* pCreateInfo,
                                                 const VkAllocationCallbacks* pAllocator, VkImage* pImage) {
  const VkResult r = create_noted(
      device, pImage, [&] { return forward_vkCreateImage(device, pCreateInfo, pAllocator, pImage); },
      [&](std::string* k) { return image_key(*pCreateInfo, k); });
  if (r == VK_SUCCESS) note_usage(as<Device>(device), wire::handle_bits(*pImage), image_usage_read_only(*pCreateInfo));
  return r;
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroyImage(VkDevice device, VkImage image, const VkAllocationCallbacks* pAllocator) {
  if (image != VK_NULL_HANDLE) {
    forget_object(as<Device>(device), wire::handle_bits(image));
    forget_usage(as<Device>(device), wire::handle_bits(image));
  }
  forward_vkDestroyImage(device, image, pAllocator);
}

VKAPI_ATTR void VKAPI_CALL icd_vkGetImageMemoryRequirements2(VkDevice device,
                                                             const VkImageMemoryRequirementsInfo2* pInfo,
                                                             VkMemoryRequirements2* pMemoryRequirements) {
  requirements2(as<Device>(device), wire::handle_bits(pInfo->image), pInfo->pNext == nullptr, pMemoryRequirements,
                [&] { forward_vkGetImageMemoryRequirements2(device, pInfo, pMemoryRequirements); });
}

VKAPI_ATTR void VKAPI_CALL icd_vkGetImageMemoryRequirements(VkDevice device, VkImage image,
                                                            VkMemoryRequirements* pMemoryRequirements) {
  requirements1(as<Device>(device), wire::handle_bits(image), pMemoryRequirements,
                [&] { forward_vkGetImageMemoryRequirements(device, image, pMemoryRequirements); });
}

}  // namespace bypass::icd
