// Instance-level handlers: instance creation and destruction, global queries and physical
// device enumeration.
#include <spdlog/spdlog.h>

#include <cstring>
#include <string>
#include <vector>

#include "bypass/host/config.h"
#include "bypass/host/session.h"
#include "bypass/wire/ownership.h"

namespace bypass::host {

namespace {

Session& session(wire::HostContext& c) { return static_cast<Session&>(c); }

}  // namespace

void handle_vkCreateInstance(wire::HostContext& c, wire::Args_vkCreateInstance& a) {
  Session& s = session(c);
  VkInstanceCreateInfo info = *a.pCreateInfo;
  std::vector<const char*> exts;
  for (uint32_t i = 0; i < info.enabledExtensionCount; ++i)
    if (!wire::guest_side_extension(info.ppEnabledExtensionNames[i])) exts.push_back(info.ppEnabledExtensionNames[i]);
  info.enabledExtensionCount = static_cast<uint32_t>(exts.size());
  info.ppEnabledExtensionNames = exts.data();
  info.enabledLayerCount = 0;  // layers run in the guest, above the ICD
  info.ppEnabledLayerNames = nullptr;
  auto create = reinterpret_cast<PFN_vkCreateInstance>(s.gipa()(nullptr, "vkCreateInstance"));
  a.result = create(&info, nullptr, a.pInstance);
  if (a.result != VK_SUCCESS) return;
  auto d = std::make_shared<wire::Dispatch>();
  wire::load_instance_dispatch(*d, s.gipa(), *a.pInstance);
  s.set_dispatch(wire::handle_bits(*a.pInstance), std::move(d));
  s.add_object(VK_OBJECT_TYPE_INSTANCE, a.id_pInstance, wire::handle_bits(*a.pInstance), 0);
}

// Devices the guest left alive go first, each with its children: the driver does not destroy
// them with their instance (each would keep its memory and its threads in bypassd).
void handle_vkDestroyInstance(wire::HostContext& c, wire::Args_vkDestroyInstance& a) {
  Session& s = session(c);
  const uint64_t inst = wire::handle_bits(a.instance);
  auto d = s.dispatch_ptr(inst);
  if (!d) return;
  if (!s.destroy_ok("vkDestroyInstance", "instance", inst)) return;
  for (const ObjectEntry& e : s.objects().entries()) {
    if (e.type != VK_OBJECT_TYPE_DEVICE) continue;
    const ObjectEntry* physical = s.objects().entry_of_handle(e.owner);
    if (physical && physical->owner == inst) s.destroy_device(e.handle);
  }
  d->vkDestroyInstance(a.instance, nullptr);
  s.remove_object(VK_OBJECT_TYPE_INSTANCE, inst);
}

void handle_vkEnumerateInstanceExtensionProperties(wire::HostContext& c,
                                                   wire::Args_vkEnumerateInstanceExtensionProperties& a) {
  auto fn = reinterpret_cast<PFN_vkEnumerateInstanceExtensionProperties>(
      session(c).gipa()(nullptr, "vkEnumerateInstanceExtensionProperties"));
  a.result = fn(a.pLayerName, a.pPropertyCount, a.pProperties);
}

void handle_vkEnumerateInstanceVersion(wire::HostContext& c, wire::Args_vkEnumerateInstanceVersion& a) {
  auto fn = reinterpret_cast<PFN_vkEnumerateInstanceVersion>(session(c).gipa()(nullptr, "vkEnumerateInstanceVersion"));
  a.result = fn ? fn(a.pApiVersion) : (*a.pApiVersion = VK_API_VERSION_1_0, VK_SUCCESS);
}

bool handle_enumerate_physical_devices(Session& s, const uint8_t* data, size_t size) {
  wire::EnumeratePhysicalDevicesRequest req;
  if (size != sizeof(req)) return s.fail("EnumeratePhysicalDevices", "bad request size");
  std::memcpy(&req, data, sizeof(req));
  uint64_t inst_bits = 0;
  if (!s.objects().lookup(VK_OBJECT_TYPE_INSTANCE, req.instance_id, &inst_bits))
    return s.decode.fail("EnumeratePhysicalDevices", "unknown instance id", wire::Fault::kInvalidUsage);
  if (req.max_devices > 64) return s.fail("EnumeratePhysicalDevices", "too many devices requested");
  auto inst = wire::handle_from_bits<VkInstance>(inst_bits);
  auto d = s.dispatch_ptr(inst_bits);
  uint32_t n = 0;
  d->vkEnumeratePhysicalDevices(inst, &n, nullptr);
  std::vector<VkPhysicalDevice> devs(n);
  d->vkEnumeratePhysicalDevices(inst, &n, devs.data());
  devs.resize(n);
  uint32_t count = 0;
  for (VkPhysicalDevice pd : devs) {
    if (count >= req.max_devices) break;
    VkPhysicalDeviceProperties props;
    d->vkGetPhysicalDeviceProperties(pd, &props);
    if (!s.config().device_name.empty() && !std::strstr(props.deviceName, s.config().device_name.c_str())) continue;
    const uint64_t id = req.first_id + count;
    const uint64_t bits = wire::handle_bits(pd);
    if (s.objects().id_of(bits) == 0) {
      if (const char* why = s.refuse_new_id(VK_OBJECT_TYPE_PHYSICAL_DEVICE, id)) return s.fail("EnumeratePhysicalDevices", why);
      s.add_object(VK_OBJECT_TYPE_PHYSICAL_DEVICE, id, bits, inst_bits);
    }
    ++count;
  }
  // Reply: the count, then the id of each device (a device enumerated before keeps its id).
  std::vector<uint64_t> reply{count};
  count = 0;
  for (VkPhysicalDevice pd : devs) {
    const uint64_t id = s.objects().id_of(wire::handle_bits(pd));
    if (id && reply.size() <= req.max_devices) reply.push_back(id);
  }
  reply[0] = reply.size() - 1;
  s.send_raw_reply(s.reply_seq, wire::kCtlEnumeratePhysicalDevices, VK_SUCCESS, reply.data(), reply.size() * 8);
  return true;
}


}  // namespace bypass::host
