// Private data (vkSetPrivateData / vkGetPrivateData) on the objects only the guest has:
// swapchains, surfaces, descriptor update templates and debug messengers and callbacks live in
// the ICD, and the host's driver has never heard of them. Their data is kept here, per slot, and
// forgotten when the object is destroyed (a swapchain's handle may come back for a new one,
// which must start at zero). Every other object's data goes to the host's driver, where the
// object's handle is an id like any other (vk.xml's objecttype, docs/codegen.md).
#include <map>
#include <mutex>
#include <tuple>

#include "objects.h"

namespace bypass::icd {

namespace {

bool guest_side(VkObjectType type) {
  switch (type) {
    case VK_OBJECT_TYPE_SWAPCHAIN_KHR:
    case VK_OBJECT_TYPE_SURFACE_KHR:
    case VK_OBJECT_TYPE_DESCRIPTOR_UPDATE_TEMPLATE:
    case VK_OBJECT_TYPE_DEBUG_UTILS_MESSENGER_EXT:
    case VK_OBJECT_TYPE_DEBUG_REPORT_CALLBACK_EXT:
      return true;
    default:
      return false;
  }
}

struct GuestPrivateData {
  std::mutex mu;
  // (slot, object type, object handle) -> data
  std::map<std::tuple<uint64_t, VkObjectType, uint64_t>, uint64_t> data;
};

GuestPrivateData& store() {
  static GuestPrivateData* s = new GuestPrivateData;  // used from exit handlers too: never destroyed
  return *s;
}

}  // namespace

void forget_private_data(VkObjectType type, uint64_t handle) {
  GuestPrivateData& s = store();
  std::lock_guard lock(s.mu);
  std::erase_if(s.data, [&](const auto& e) { return std::get<1>(e.first) == type && std::get<2>(e.first) == handle; });
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkSetPrivateData(VkDevice device, VkObjectType objectType, uint64_t objectHandle,
                                                    VkPrivateDataSlot privateDataSlot, uint64_t data) {
  if (!guest_side(objectType)) return forward_vkSetPrivateData(device, objectType, objectHandle, privateDataSlot, data);
  GuestPrivateData& s = store();
  std::lock_guard lock(s.mu);
  s.data[{wire::handle_bits(privateDataSlot), objectType, objectHandle}] = data;
  return VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL icd_vkGetPrivateData(VkDevice device, VkObjectType objectType, uint64_t objectHandle,
                                                VkPrivateDataSlot privateDataSlot, uint64_t* pData) {
  if (!guest_side(objectType))
    return forward_vkGetPrivateData(device, objectType, objectHandle, privateDataSlot, pData);
  GuestPrivateData& s = store();
  std::lock_guard lock(s.mu);
  auto it = s.data.find({wire::handle_bits(privateDataSlot), objectType, objectHandle});
  *pData = it == s.data.end() ? 0 : it->second;
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroyPrivateDataSlot(VkDevice device, VkPrivateDataSlot privateDataSlot,
                                                        const VkAllocationCallbacks*) {
  forward_vkDestroyPrivateDataSlot(device, privateDataSlot, nullptr);
  GuestPrivateData& s = store();
  std::lock_guard lock(s.mu);
  const uint64_t slot = wire::handle_bits(privateDataSlot);
  std::erase_if(s.data, [&](const auto& e) { return std::get<0>(e.first) == slot; });
}

}  // namespace bypass::icd
