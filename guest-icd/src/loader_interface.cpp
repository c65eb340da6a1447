// The three symbols the Vulkan loader looks for in an ICD (loader interface version 5+);
// the version script keeps everything else hidden.
#include <cstring>

#include "objects.h"

namespace bypass::icd {

const EntryPoint* find_entry_point(const char* name) {
  size_t lo = 0, hi = kEntryPointCount;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = std::strcmp(kEntryPoints[mid].name, name);
    if (c == 0) return kEntryPoints[mid].fn ? &kEntryPoints[mid] : nullptr;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return nullptr;
}

VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL icd_vkGetInstanceProcAddr(VkInstance instance, const char* pName) {
  if (!pName) return nullptr;
  if (std::strcmp(pName, "vkGetInstanceProcAddr") == 0)
    return reinterpret_cast<PFN_vkVoidFunction>(icd_vkGetInstanceProcAddr);
  if (std::strcmp(pName, "vkGetDeviceProcAddr") == 0)
    return reinterpret_cast<PFN_vkVoidFunction>(icd_vkGetDeviceProcAddr);
  // The one command the wire does not carry (a guest pointer) that the ICD answers itself.
  if (instance && std::strcmp(pName, "vkGetMemoryHostPointerPropertiesEXT") == 0)
    return reinterpret_cast<PFN_vkVoidFunction>(icd_vkGetMemoryHostPointerPropertiesEXT);
  const EntryPoint* e = find_entry_point(pName);
  if (!e) return nullptr;
  // Without an instance only global commands may be queried.
  if (!instance && e->level != 0) return nullptr;
  return e->fn;
}

namespace {

// Whether a command of `origin` (a core version, or the extensions that have the command,
// comma-separated: the entry point table's) is the device's: core, or one of the extensions
// enabled on the device or its instance (a device command of an instance extension, such as
// VK_EXT_debug_utils's vkCmdBeginDebugUtilsLabelEXT). As a driver answers, a command of an
// extension not enabled is NULL, an alias of a core command included (dEQP-VK's
// api.version_check.entry_points).
bool enabled_for(const Device* dev, std::string_view origin) {
  if (origin.starts_with("VK_VERSION_")) return true;
  auto has = [](const std::vector<std::string>& list, std::string_view x) {
    return std::find(list.begin(), list.end(), x) != list.end();
  };
  const auto* inst = dev->physical ? dev->physical->instance : nullptr;
  while (!origin.empty()) {
    const size_t comma = origin.find(',');
    const std::string_view x = origin.substr(0, comma);
    if (has(dev->extensions, x) || (inst && has(inst->extensions, x))) return true;
    origin = comma == std::string_view::npos ? std::string_view{} : origin.substr(comma + 1);
  }
  return false;
}

}  // namespace

VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL icd_vkGetDeviceProcAddr(VkDevice device, const char* pName) {
  if (!pName) return nullptr;
  if (std::strcmp(pName, "vkGetDeviceProcAddr") == 0)
    return reinterpret_cast<PFN_vkVoidFunction>(icd_vkGetDeviceProcAddr);
  const auto* dev = as<Device>(device);
  if (std::strcmp(pName, "vkGetMemoryHostPointerPropertiesEXT") == 0)
    return !dev || enabled_for(dev, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME)
               ? reinterpret_cast<PFN_vkVoidFunction>(icd_vkGetMemoryHostPointerPropertiesEXT)
               : nullptr;
  const EntryPoint* e = find_entry_point(pName);
  if (!e || e->level != 3) return nullptr;
  return !dev || enabled_for(dev, e->origin) ? e->fn : nullptr;
}

}  // namespace bypass::icd

using bypass::icd::EntryPoint;

extern "C" {

__attribute__((visibility("default"))) VKAPI_ATTR VkResult VKAPI_CALL
vk_icdNegotiateLoaderICDInterfaceVersion(uint32_t* pSupportedVersion) {
  if (*pSupportedVersion > 7) *pSupportedVersion = 7;
  if (*pSupportedVersion < 5) return VK_ERROR_INCOMPATIBLE_DRIVER;
  return VK_SUCCESS;
}

__attribute__((visibility("default"))) VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL
vk_icdGetInstanceProcAddr(VkInstance instance, const char* pName) {
  return bypass::icd::icd_vkGetInstanceProcAddr(instance, pName);
}

__attribute__((visibility("default"))) VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL
vk_icdGetPhysicalDeviceProcAddr(VkInstance, const char* pName) {
  const EntryPoint* e = bypass::icd::find_entry_point(pName);
  return e && e->level == 2 ? e->fn : nullptr;
}

}  // extern "C"
