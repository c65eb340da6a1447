// The session protocol on top of the transport: message kinds, the handshake constants and
// the few control commands that are bypass's own rather than Vulkan's.
#pragma once

#include <cstdint>

#include "schema_hash.h"

namespace bypass::wire {

inline constexpr uint32_t kProtocolVersion = 1;

// Transport message kinds.
enum MessageKind : uint32_t {
  kMsgBatch = 1,  // guest -> host: a sequence of records (RecordHeader + payload)
  kMsgReply = 2,  // host -> guest: ReplyHeader + reply FlatBuffer (or control reply bytes)
  kMsgError = 3,  // host -> guest: the session is ending; payload is the reason (text)
};

// Control commands share the record format; their ids sit above every Vulkan command id.
enum ControlCommand : uint16_t {
  // payload EnumeratePhysicalDevices; reply: uint32 count, then count host-side ids are
  // registered as ids[first_id .. first_id + count).
  kCtlEnumeratePhysicalDevices = 0xF000,
  // payload: none; reply: StatsReply. Used by tests and bypassctl-style tools.
  kCtlSessionStats = 0xF001,
  // Shadow memory (BYPASS_MEMORY=shadow, the network path): the guest keeps its own copy of
  // host-visible memory and moves dirty pages with these. Write: MemoryRange + bytes, no reply.
  kCtlMemoryWrite = 0xF002,
  // Read: MemoryRange; reply: the bytes of the range.
  kCtlMemoryRead = 0xF003,
};

struct MemoryRange {
  uint64_t memory_id;  // VkDeviceMemory id
  uint64_t offset;
  uint64_t size;
};

struct EnumeratePhysicalDevicesRequest {
  uint64_t instance_id;
  uint64_t first_id;
  uint32_t max_devices;
  uint32_t reserved;
};

struct StatsReply {
  uint64_t objects;
  uint64_t records;
  uint64_t bytes;
  uint64_t memory_bytes;
};

// Socket fd tags for memory shared by the host (VkDeviceMemory id).
inline constexpr uint64_t kFdTagMemoryBase = 0;

}  // namespace bypass::wire
