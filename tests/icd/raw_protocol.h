// Speaking bypass's protocol without the ICD: records, batches and a device set up the way the
// ICD sets one up. For the hostile-guest tools (raw_client.cpp) and the session fuzzer
// (tests/fuzz/session_fuzz.cpp).
#pragma once

#include <cstring>
#include <vector>

#include "bypass/transport/channel.h"
#include "bypass/wire/gen/commands.h"
#include "bypass/wire/protocol.h"
#include "bypass/wire/runtime.h"

namespace bypass::test {

// Ids go on the wire as they are: the raw guest chooses them itself.
class IdentityHandles final : public wire::HandleMap {
 public:
  uint64_t to_wire(VkObjectType, uint64_t handle) override { return handle; }
  bool from_wire(VkObjectType, uint64_t id, uint64_t* handle) override {
    *handle = id;
    return true;
  }
};

// Appends one record (header + payload padded to 8 bytes) to a batch.
inline void append_record(std::vector<std::byte>& batch, uint16_t command, uint16_t flags, const void* data,
                          size_t size) {
  const size_t padded = (size + 7) & ~size_t{7};
  wire::RecordHeader h{static_cast<uint32_t>(sizeof(h) + padded), command, flags};
  const size_t at = batch.size();
  batch.resize(at + sizeof(h) + padded);
  std::memcpy(batch.data() + at, &h, sizeof(h));
  if (size) std::memcpy(batch.data() + at + sizeof(h), data, size);
}

inline constexpr uint64_t kInstanceId = 1, kPhysicalDeviceId = 100, kDeviceId = 200, kMemoryId = 300;

// An instance and a device (with `extensions`), made the way the ICD makes them. `call` sends
// one record that wants a reply and waits for it: false when none came.
template <class Call>
bool setup_device(Call&& call, std::vector<const char*> extensions = {}, const void* features = nullptr) {
  IdentityHandles ids;
  wire::Builder b(1024);
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.apiVersion = VK_API_VERSION_1_1;
  VkInstanceCreateInfo instance_info{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  instance_info.pApplicationInfo = &app;
  VkInstance instance = reinterpret_cast<VkInstance>(uintptr_t{kInstanceId});
  wire::encode_vkCreateInstance(b, ids, &instance_info, nullptr, &instance);
  if (!call(wire::kCmd_vkCreateInstance, b.GetBufferPointer(), b.GetSize())) return false;
  wire::EnumeratePhysicalDevicesRequest req{kInstanceId, kPhysicalDeviceId, 1, 0};
  if (!call(wire::kCtlEnumeratePhysicalDevices, &req, sizeof(req))) return false;
  const float priority = 1.0f;
  VkDeviceQueueCreateInfo queue{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  queue.queueCount = 1;
  queue.pQueuePriorities = &priority;
  VkDeviceCreateInfo device_info{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, features};
  device_info.queueCreateInfoCount = 1;
  device_info.pQueueCreateInfos = &queue;
  device_info.enabledExtensionCount = static_cast<uint32_t>(extensions.size());
  device_info.ppEnabledExtensionNames = extensions.data();
  VkDevice device = reinterpret_cast<VkDevice>(uintptr_t{kDeviceId});
  b.Clear();
  wire::encode_vkCreateDevice(b, ids, reinterpret_cast<VkPhysicalDevice>(uintptr_t{kPhysicalDeviceId}), &device_info,
                              nullptr, &device);
  return call(wire::kCmd_vkCreateDevice, b.GetBufferPointer(), b.GetSize());
}

}  // namespace bypass::test
