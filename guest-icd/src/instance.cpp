// Instance and physical device commands the ICD writes by hand: connecting to bypassd,
// enumerating the host's physical devices as guest objects, and the identity and extension
// lists the guest sees.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bypass/base/log.h"
#include "bypass/wire/ownership.h"
#include "config.h"
#include "objects.h"

namespace bypass::icd {

namespace {

// Extensions the guest sees only if bypass can honour them: who owns each is
// codegen/data/extensions.txt (wire::kExtensions).
bool exposed_extension(const char* name, bool instance) {
  const wire::ExtensionInfo* x = wire::find_extension(name);
  if (!x || x->instance != instance) return false;
  // No fd crosses a VM boundary (BYPASS_ENDPOINT=ivshmem:...) or the network (grpc://).
  if (x->needs_fds && !Connection::endpoint_carries_fds()) return false;
  // Host pointers of the guest mean nothing to the host driver (kBypassd; the ICD offers
  // VK_EXT_external_memory_host itself, by mirroring: see the device list below and memory.cpp);
  // memory fds do: they are the host driver's own, passed over the session socket.
  return x->owner == wire::ExtensionOwner::kHost || x->owner == wire::ExtensionOwner::kGuest;
}

// The ICD's own extensions (WSI, debug callbacks): exposed whether or not the host driver lists
// them, since the host needs no display and the callbacks stay in the guest.
void add_own_extensions(std::vector<VkExtensionProperties>& list, bool instance) {
  for (size_t i = 0; i < wire::kExtensionCount; ++i) {
    const wire::ExtensionInfo& x = wire::kExtensions[i];
    if (x.owner != wire::ExtensionOwner::kGuest || x.instance != instance) continue;
    bool have = false;
    for (auto& e : list) have |= !std::strcmp(e.extensionName, x.name);
    if (have) continue;
    VkExtensionProperties p{};
    std::snprintf(p.extensionName, sizeof(p.extensionName), "%s", x.name);
    p.specVersion = x.spec_version;
    list.push_back(p);
  }
}

VkResult copy_out(const std::vector<VkExtensionProperties>& list, uint32_t* count, VkExtensionProperties* props) {
  if (!props) {
    *count = static_cast<uint32_t>(list.size());
    return VK_SUCCESS;
  }
  const uint32_t n = std::min<uint32_t>(*count, static_cast<uint32_t>(list.size()));
  std::copy_n(list.begin(), n, props);
  *count = n;
  return n < list.size() ? VK_INCOMPLETE : VK_SUCCESS;
}

std::mutex g_instance_ext_mu;
std::vector<VkExtensionProperties> g_instance_exts;
bool g_instance_exts_known = false;
std::chrono::steady_clock::time_point g_unreachable_until;
std::string g_unreachable_error;

// Asks the host once per process, on a short-lived connection. An unreachable host is
// remembered for a second, so the loader's queries before vkCreateInstance cost one attempt.
std::vector<VkExtensionProperties> host_instance_extensions() {
  std::lock_guard lock(g_instance_ext_mu);
  if (g_instance_exts_known) return g_instance_exts;
  if (std::chrono::steady_clock::now() < g_unreachable_until) return {};
  auto opened = Connection::open();
  if (!opened) {
    g_unreachable_until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    g_unreachable_error = opened.error().message;
    return {};
  }
  const std::unique_ptr<Connection> conn = std::move(opened).value();
  uint32_t n = 0;
  std::vector<VkExtensionProperties> host;
  wire::Builder& b = thread_builder();
  Reply& r = thread_reply();
  for (int attempt = 0; attempt < 2; ++attempt) {
    VkExtensionProperties* out = attempt ? host.data() : nullptr;
    wire::encode_vkEnumerateInstanceExtensionProperties(b, conn->handles(), nullptr, &n, out);
    if (!conn->call(wire::kCmd_vkEnumerateInstanceExtensionProperties, b, r)) return {};
    auto c = r.context(conn->handles());
    wire::decode_reply_vkEnumerateInstanceExtensionProperties(c, r.data(), r.size(), nullptr, &n, out);
    if (!attempt) host.resize(n);
  }
  host.resize(n);
  for (auto& e : host)
    if (exposed_extension(e.extensionName, true)) g_instance_exts.push_back(e);
  add_own_extensions(g_instance_exts, true);
  g_instance_exts_known = true;
  return g_instance_exts;
}

// Copies `text` into a fixed char array, truncating and NUL-terminating.
template <size_t N>
void set_text(char (&dst)[N], const std::string& text) {
  const size_t n = std::min(text.size(), N - 1);
  std::memcpy(dst, text.data(), n);
  std::memset(dst + n, 0, N - n);
}

void rewrite_identity(VkPhysicalDeviceProperties& p) {
  set_text(p.deviceName, "bypass (" + std::string(p.deviceName) + ")");
}

void rewrite_uuid(uint8_t* uuid) {
  // Distinct from the host device's, stable across runs: bypass over that device.
  static const char kTag[] = "bypass";
  for (size_t i = 0; i < VK_UUID_SIZE; ++i) uuid[i] ^= static_cast<uint8_t>(kTag[i % 6]);
}

void rewrite_driver(char (&name)[VK_MAX_DRIVER_NAME_SIZE], char (&info)[VK_MAX_DRIVER_INFO_SIZE]) {
  set_text(info, "bypass over " + std::string(name) + " " + std::string(info));
  set_text(name, "bypass");
}

}  // namespace

VKAPI_ATTR VkResult VKAPI_CALL icd_vkEnumerateInstanceExtensionProperties(const char* pLayerName,
                                                                          uint32_t* pPropertyCount,
                                                                          VkExtensionProperties* pProperties) {
  if (pLayerName) return VK_ERROR_LAYER_NOT_PRESENT;
  return copy_out(host_instance_extensions(), pPropertyCount, pProperties);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkEnumerateInstanceLayerProperties(uint32_t* pPropertyCount, VkLayerProperties*) {
  *pPropertyCount = 0;
  return VK_SUCCESS;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkEnumerateInstanceVersion(uint32_t* pApiVersion) {
  *pApiVersion = VK_API_VERSION_1_3;
  return VK_SUCCESS;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateInstance(const VkInstanceCreateInfo* pCreateInfo,
                                                    const VkAllocationCallbacks*, VkInstance* pInstance) {
  std::string error;
  const bool known_unreachable = [&] {
    std::lock_guard lock(g_instance_ext_mu);
    error = g_unreachable_error;
    return !g_instance_exts_known && std::chrono::steady_clock::now() < g_unreachable_until;
  }();
  if (known_unreachable) {
    base::log(base::LogLevel::kError, "%s", error.c_str());
    return VK_ERROR_INITIALIZATION_FAILED;
  }
  auto opened = Connection::open();
  if (!opened) {
    base::log(base::LogLevel::kError, "%s", opened.error().message.c_str());
    return VK_ERROR_INITIALIZATION_FAILED;
  }
  std::unique_ptr<Connection> conn = std::move(opened).value();
  for (uint32_t i = 0; i < pCreateInfo->enabledExtensionCount; ++i) {
    const char* e = pCreateInfo->ppEnabledExtensionNames[i];
    bool known = false;
    for (auto& x : host_instance_extensions()) known |= !std::strcmp(x.extensionName, e);
    const wire::ExtensionInfo* x = wire::find_extension(e);
    if (!known && !(x && x->owner == wire::ExtensionOwner::kLoader)) return VK_ERROR_EXTENSION_NOT_PRESENT;
  }
  if (shadow_memory_enabled()) conn->set_memory_hooks(shadow_hooks());
  auto* inst = new_object<Instance>(conn.get(), VK_OBJECT_TYPE_INSTANCE, conn->new_id());
  inst->owned = std::move(conn);
  if (pCreateInfo->pApplicationInfo) inst->api_version = pCreateInfo->pApplicationInfo->apiVersion;
  for (uint32_t i = 0; i < pCreateInfo->enabledExtensionCount; ++i)
    inst->extensions.emplace_back(pCreateInfo->ppEnabledExtensionNames[i]);
  VkInstance handle = reinterpret_cast<VkInstance>(inst);
  wire::Builder& b = thread_builder();
  wire::encode_vkCreateInstance(b, inst->conn->handles(), pCreateInfo, nullptr, &handle);
  Reply& r = thread_reply();
  VkResult result = VK_ERROR_INITIALIZATION_FAILED;
  if (inst->conn->call(wire::kCmd_vkCreateInstance, b, r)) {
    auto c = r.context(inst->conn->handles());
    result = wire::decode_reply_vkCreateInstance(c, r.data(), r.size(), pCreateInfo, nullptr, &handle);
  }
  if (result != VK_SUCCESS) {
    auto owned = std::move(inst->owned);
    delete_object(inst);
    return result;
  }
  *pInstance = handle;
  return VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroyInstance(VkInstance instance, const VkAllocationCallbacks*) {
  if (!instance) return;
  auto* inst = as<Instance>(instance);
  forward_vkDestroyInstance(instance, nullptr);
  inst->conn->flush();
  for (auto* pd : inst->physical_devices) delete_object(pd);
  auto owned = std::move(inst->owned);  // closes the session after the object is gone
  delete_object(inst);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkEnumeratePhysicalDevices(VkInstance instance, uint32_t* pPhysicalDeviceCount,
                                                              VkPhysicalDevice* pPhysicalDevices) {
  auto* inst = as<Instance>(instance);
  std::lock_guard lock(inst->mu);
  if (!inst->enumerated) {
    constexpr uint32_t kMax = 16;
    wire::EnumeratePhysicalDevicesRequest req{inst->id, inst->conn->reserve_ids(kMax), kMax, 0};
    Reply& r = thread_reply();
    if (!inst->conn->call_raw(wire::kCtlEnumeratePhysicalDevices, &req, sizeof(req), r))
      return VK_ERROR_INITIALIZATION_FAILED;
    uint64_t count = 0;
    if (r.size() < 8) return VK_ERROR_INITIALIZATION_FAILED;
    std::memcpy(&count, r.data(), 8);
    if (count > kMax || r.size() < 8 * (count + 1)) return VK_ERROR_INITIALIZATION_FAILED;
    for (uint64_t i = 0; i < count; ++i) {
      uint64_t id;
      std::memcpy(&id, r.data() + 8 * (i + 1), 8);
      auto* pd = new_object<PhysicalDevice>(inst->conn, VK_OBJECT_TYPE_PHYSICAL_DEVICE, id);
      pd->instance = inst;
      inst->physical_devices.push_back(pd);
    }
    inst->enumerated = true;
  }
  const uint32_t total = static_cast<uint32_t>(inst->physical_devices.size());
  if (!pPhysicalDevices) {
    *pPhysicalDeviceCount = total;
    return VK_SUCCESS;
  }
  const uint32_t n = std::min(*pPhysicalDeviceCount, total);
  for (uint32_t i = 0; i < n; ++i) pPhysicalDevices[i] = reinterpret_cast<VkPhysicalDevice>(inst->physical_devices[i]);
  *pPhysicalDeviceCount = n;
  return n < total ? VK_INCOMPLETE : VK_SUCCESS;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkEnumeratePhysicalDeviceGroups(VkInstance instance, uint32_t* pCount,
                                                                   VkPhysicalDeviceGroupProperties* pGroups) {
  uint32_t n = 0;
  VkResult r = icd_vkEnumeratePhysicalDevices(instance, &n, nullptr);
  if (r < 0) return r;
  std::vector<VkPhysicalDevice> devs(n);
  icd_vkEnumeratePhysicalDevices(instance, &n, devs.data());
  if (!pGroups) {
    *pCount = n;
    return VK_SUCCESS;
  }
  const uint32_t k = std::min(*pCount, n);
  for (uint32_t i = 0; i < k; ++i) {
    pGroups[i].physicalDeviceCount = 1;
    pGroups[i].physicalDevices[0] = devs[i];
    pGroups[i].subsetAllocation = VK_FALSE;
  }
  *pCount = k;
  return k < n ? VK_INCOMPLETE : VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL icd_vkGetPhysicalDeviceProperties(VkPhysicalDevice physicalDevice,
                                                             VkPhysicalDeviceProperties* pProperties) {
  forward_vkGetPhysicalDeviceProperties(physicalDevice, pProperties);
  rewrite_identity(*pProperties);
}

VKAPI_ATTR void VKAPI_CALL icd_vkGetPhysicalDeviceProperties2(VkPhysicalDevice physicalDevice,
                                                              VkPhysicalDeviceProperties2* pProperties) {
  forward_vkGetPhysicalDeviceProperties2(physicalDevice, pProperties);
  rewrite_identity(pProperties->properties);
  for (auto* p = static_cast<VkBaseOutStructure*>(pProperties->pNext); p; p = p->pNext) {
    switch (p->sType) {
      case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES: {
        auto* id = reinterpret_cast<VkPhysicalDeviceIDProperties*>(p);
        rewrite_uuid(id->deviceUUID);
        rewrite_uuid(id->driverUUID);
        break;
      }
      case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_PROPERTIES: {
        auto* v = reinterpret_cast<VkPhysicalDeviceVulkan11Properties*>(p);
        rewrite_uuid(v->deviceUUID);
        rewrite_uuid(v->driverUUID);
        break;
      }
      case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES: {
        auto* d = reinterpret_cast<VkPhysicalDeviceDriverProperties*>(p);
        rewrite_driver(d->driverName, d->driverInfo);
        break;
      }
      case VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_PROPERTIES: {
        auto* v = reinterpret_cast<VkPhysicalDeviceVulkan12Properties*>(p);
        rewrite_driver(v->driverName, v->driverInfo);
        break;
      }
      default:
        break;
    }
  }
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkEnumerateDeviceExtensionProperties(VkPhysicalDevice physicalDevice,
                                                                        const char* pLayerName,
                                                                        uint32_t* pPropertyCount,
                                                                        VkExtensionProperties* pProperties) {
  if (pLayerName) return VK_ERROR_LAYER_NOT_PRESENT;
  uint32_t n = 0;
  VkResult r = forward_vkEnumerateDeviceExtensionProperties(physicalDevice, nullptr, &n, nullptr);
  std::vector<VkExtensionProperties> host(n);
  if (r >= 0) r = forward_vkEnumerateDeviceExtensionProperties(physicalDevice, nullptr, &n, host.data());
  if (r < 0) return r;
  host.resize(n);
  std::vector<VkExtensionProperties> list;
  for (auto& e : host)
    if (exposed_extension(e.extensionName, false) ||
        (!std::strcmp(e.extensionName, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME) && config().host_pointers))
      list.push_back(e);  // host pointers: mirrored by the ICD (memory.cpp), where the driver imports them
  add_own_extensions(list, false);
  return copy_out(list, pPropertyCount, pProperties);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkEnumerateDeviceLayerProperties(VkPhysicalDevice, uint32_t* pPropertyCount,
                                                                    VkLayerProperties*) {
  *pPropertyCount = 0;
  return VK_SUCCESS;
}

const VkPhysicalDeviceMemoryProperties& memory_properties(PhysicalDevice* pd) {
  std::call_once(pd->memory_once, [pd] {
    auto fn = entry<PFN_vkGetPhysicalDeviceMemoryProperties>("vkGetPhysicalDeviceMemoryProperties");
    fn(reinterpret_cast<VkPhysicalDevice>(pd), &pd->memory);
  });
  return pd->memory;
}

}  // namespace bypass::icd
