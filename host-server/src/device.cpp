// Device-level handlers: device creation (extension filtering, the device's dispatch table)
// and destruction, and pool resets that free their children.
#include <cstring>
#include <string>
#include <vector>

#include "bypass/host/session.h"
#include "bypass/wire/ownership.h"

namespace bypass::host {

namespace {

Session& session(wire::HostContext& c) { return static_cast<Session&>(c); }

}  // namespace

void handle_vkCreateDevice(wire::HostContext& c, wire::Args_vkCreateDevice& a) {
  Session& s = session(c);
  auto inst_dispatch = s.dispatch_ptr(wire::handle_bits(a.physicalDevice));
  if (!inst_dispatch) {
    a.result = VK_ERROR_INITIALIZATION_FAILED;
    return;
  }
  VkDeviceCreateInfo info = *a.pCreateInfo;
  std::vector<const char*> exts;
  bool has_host_memory = false;
  for (uint32_t i = 0; i < info.enabledExtensionCount; ++i) {
    const char* e = info.ppEnabledExtensionNames[i];
    if (wire::guest_side_extension(e)) continue;
    if (std::strcmp(e, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME) == 0) has_host_memory = true;
    exts.push_back(e);
  }
  // Shared guest memory is imported as host pointers when the driver can.
  uint32_t n = 0;
  inst_dispatch->vkEnumerateDeviceExtensionProperties(a.physicalDevice, nullptr, &n, nullptr);
  std::vector<VkExtensionProperties> avail(n);
  inst_dispatch->vkEnumerateDeviceExtensionProperties(a.physicalDevice, nullptr, &n, avail.data());
  for (auto& p : avail)
    if (!has_host_memory && std::strcmp(p.extensionName, VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME) == 0) {
      exts.push_back(VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME);
      has_host_memory = true;
    }
  info.enabledExtensionCount = static_cast<uint32_t>(exts.size());
  info.ppEnabledExtensionNames = exts.data();
  info.enabledLayerCount = 0;
  info.ppEnabledLayerNames = nullptr;
  a.result = inst_dispatch->vkCreateDevice(a.physicalDevice, &info, nullptr, a.pDevice);
  if (a.result != VK_SUCCESS) return;
  auto d = std::make_shared<wire::Dispatch>(*inst_dispatch);
  auto gdpa = vkGetDeviceProcAddr;
  wire::load_device_dispatch(*d, gdpa, *a.pDevice);
  const uint64_t dev = wire::handle_bits(*a.pDevice);
  s.set_dispatch(dev, std::move(d));
  s.add_object(VK_OBJECT_TYPE_DEVICE, a.id_pDevice, dev, wire::handle_bits(a.physicalDevice));
  s.set_device_info(dev, wire::handle_bits(a.physicalDevice), has_host_memory);
}

// What the guest left alive under the device is destroyed with it: the driver does not free a
// device's children, so each would leak in bypassd for the rest of its life.
void handle_vkDestroyDevice(wire::HostContext& c, wire::Args_vkDestroyDevice& a) {
  Session& s = session(c);
  const uint64_t dev = wire::handle_bits(a.device);
  if (!a.device || !s.dispatch_ptr(dev)) return;
  if (!s.destroy_ok("vkDestroyDevice", "device", dev)) return;
  s.destroy_device(dev);
  s.remove_object(VK_OBJECT_TYPE_DEVICE, dev);
}

void handle_vkResetDescriptorPool(wire::HostContext& c, wire::Args_vkResetDescriptorPool& a) {
  wire::default_vkResetDescriptorPool(c, a);
  session(c).remove_owned(wire::handle_bits(a.descriptorPool));
}

}  // namespace bypass::host
