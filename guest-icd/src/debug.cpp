// VK_EXT_debug_utils and VK_EXT_debug_report live in the guest: callbacks are guest
// function pointers, so messengers are guest objects and messages are delivered here.
#include <mutex>
#include <unordered_map>
#include <vector>

#include "objects.h"

namespace bypass::icd {

namespace {

// The messengers (or report callbacks) of every instance, by their id. A message goes to the
// callbacks of the instance it was submitted on, called without the lock held so that a
// callback may create or destroy messengers itself.
template <class CreateInfo>
class Registry {
 public:
  uint64_t add(VkInstance instance, const CreateInfo& info) {
    const uint64_t id = connection_of(instance)->new_id();
    std::lock_guard lock(mu_);
    Entry& e = entries_[id];
    e.instance = instance;
    e.info = info;
    e.info.pNext = nullptr;
    return id;
  }
  void remove(uint64_t id) {
    std::lock_guard lock(mu_);
    entries_.erase(id);
  }
  // The create infos of `instance`'s callbacks that `wants` accepts.
  template <class Wants>
  std::vector<CreateInfo> of(VkInstance instance, Wants wants) {
    std::vector<CreateInfo> out;
    std::lock_guard lock(mu_);
    for (auto& [id, e] : entries_)
      if (e.instance == instance && wants(e.info)) out.push_back(e.info);
    return out;
  }

 private:
  struct Entry {
    VkInstance instance;
    CreateInfo info;
  };
  std::mutex mu_;
  std::unordered_map<uint64_t, Entry> entries_;
};

Registry<VkDebugUtilsMessengerCreateInfoEXT> g_messengers;
Registry<VkDebugReportCallbackCreateInfoEXT> g_reports;

}  // namespace

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateDebugUtilsMessengerEXT(VkInstance instance,
                                                                  const VkDebugUtilsMessengerCreateInfoEXT* pCreateInfo,
                                                                  const VkAllocationCallbacks*,
                                                                  VkDebugUtilsMessengerEXT* pMessenger) {
  *pMessenger = wire::handle_from_bits<VkDebugUtilsMessengerEXT>(g_messengers.add(instance, *pCreateInfo));
  return VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroyDebugUtilsMessengerEXT(VkInstance, VkDebugUtilsMessengerEXT messenger,
                                                               const VkAllocationCallbacks*) {
  forget_private_data(VK_OBJECT_TYPE_DEBUG_UTILS_MESSENGER_EXT, wire::handle_bits(messenger));
  g_messengers.remove(wire::handle_bits(messenger));
}

VKAPI_ATTR void VKAPI_CALL icd_vkSubmitDebugUtilsMessageEXT(VkInstance instance,
                                                            VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                            VkDebugUtilsMessageTypeFlagsEXT types,
                                                            const VkDebugUtilsMessengerCallbackDataEXT* pCallbackData) {
  auto wants = [&](const VkDebugUtilsMessengerCreateInfoEXT& m) {
    return (m.messageSeverity & severity) && (m.messageType & types);
  };
  for (const auto& m : g_messengers.of(instance, wants)) m.pfnUserCallback(severity, types, pCallbackData, m.pUserData);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateDebugReportCallbackEXT(VkInstance instance,
                                                                  const VkDebugReportCallbackCreateInfoEXT* pCreateInfo,
                                                                  const VkAllocationCallbacks*,
                                                                  VkDebugReportCallbackEXT* pCallback) {
  *pCallback = wire::handle_from_bits<VkDebugReportCallbackEXT>(g_reports.add(instance, *pCreateInfo));
  return VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroyDebugReportCallbackEXT(VkInstance, VkDebugReportCallbackEXT callback,
                                                               const VkAllocationCallbacks*) {
  forget_private_data(VK_OBJECT_TYPE_DEBUG_REPORT_CALLBACK_EXT, wire::handle_bits(callback));
  g_reports.remove(wire::handle_bits(callback));
}

VKAPI_ATTR void VKAPI_CALL icd_vkDebugReportMessageEXT(VkInstance instance, VkDebugReportFlagsEXT flags,
                                                       VkDebugReportObjectTypeEXT objectType, uint64_t object,
                                                       size_t location, int32_t messageCode, const char* pLayerPrefix,
                                                       const char* pMessage) {
  auto wants = [&](const VkDebugReportCallbackCreateInfoEXT& r) { return (r.flags & flags) != 0; };
  for (const auto& r : g_reports.of(instance, wants))
    r.pfnCallback(flags, objectType, object, location, messageCode, pLayerPrefix, pMessage, r.pUserData);
}

}  // namespace bypass::icd
