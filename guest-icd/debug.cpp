// VK_EXT_debug_utils and VK_EXT_debug_report live in the guest: callbacks are guest
// function pointers, so messengers are guest objects and messages are delivered here.
#include <mutex>
#include <unordered_map>

#include "objects.h"

namespace bypass::icd {

namespace {
std::mutex g_mu;
std::unordered_map<uint64_t, VkDebugUtilsMessengerCreateInfoEXT> g_messengers;
std::unordered_map<uint64_t, VkDebugReportCallbackCreateInfoEXT> g_reports;
}  // namespace

VKAPI_ATTR VkResult VKAPI_CALL bypass_hw_vkCreateDebugUtilsMessengerEXT(VkInstance instance,
                                                                 const VkDebugUtilsMessengerCreateInfoEXT* pCreateInfo,
                                                                 const VkAllocationCallbacks*,
                                                                 VkDebugUtilsMessengerEXT* pMessenger) {
  const uint64_t id = connection_of(instance)->new_id();
  std::lock_guard lock(g_mu);
  g_messengers[id] = *pCreateInfo;
  g_messengers[id].pNext = nullptr;
  *pMessenger = wire::handle_from_bits<VkDebugUtilsMessengerEXT>(id);
  return VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL bypass_hw_vkDestroyDebugUtilsMessengerEXT(VkInstance, VkDebugUtilsMessengerEXT messenger,
                                                              const VkAllocationCallbacks*) {
  std::lock_guard lock(g_mu);
  g_messengers.erase(wire::handle_bits(messenger));
}

VKAPI_ATTR void VKAPI_CALL bypass_hw_vkSubmitDebugUtilsMessageEXT(VkInstance, VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                           VkDebugUtilsMessageTypeFlagsEXT types,
                                                           const VkDebugUtilsMessengerCallbackDataEXT* pCallbackData) {
  std::lock_guard lock(g_mu);
  for (auto& [id, m] : g_messengers)
    if ((m.messageSeverity & severity) && (m.messageType & types))
      m.pfnUserCallback(severity, types, pCallbackData, m.pUserData);
}

VKAPI_ATTR VkResult VKAPI_CALL bypass_hw_vkCreateDebugReportCallbackEXT(VkInstance instance,
                                                                 const VkDebugReportCallbackCreateInfoEXT* pCreateInfo,
                                                                 const VkAllocationCallbacks*,
                                                                 VkDebugReportCallbackEXT* pCallback) {
  const uint64_t id = connection_of(instance)->new_id();
  std::lock_guard lock(g_mu);
  g_reports[id] = *pCreateInfo;
  g_reports[id].pNext = nullptr;
  *pCallback = wire::handle_from_bits<VkDebugReportCallbackEXT>(id);
  return VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL bypass_hw_vkDestroyDebugReportCallbackEXT(VkInstance, VkDebugReportCallbackEXT callback,
                                                              const VkAllocationCallbacks*) {
  std::lock_guard lock(g_mu);
  g_reports.erase(wire::handle_bits(callback));
}

VKAPI_ATTR void VKAPI_CALL bypass_hw_vkDebugReportMessageEXT(VkInstance, VkDebugReportFlagsEXT flags,
                                                      VkDebugReportObjectTypeEXT objectType, uint64_t object,
                                                      size_t location, int32_t messageCode, const char* pLayerPrefix,
                                                      const char* pMessage) {
  std::lock_guard lock(g_mu);
  for (auto& [id, r] : g_reports)
    if (r.flags & flags) r.pfnCallback(flags, objectType, object, location, messageCode, pLayerPrefix, pMessage, r.pUserData);
}

}  // namespace bypass::icd
