// The session protocol on top of the transport: message kinds, the handshake constants and
// the few control commands that are bypass's own rather than Vulkan's.
#pragma once

#include <cstdint>

#include "bypass/wire/gen/schema_hash.h"

namespace bypass::wire {

// 4: records of codegen/data/async_unasked.txt may ask for no reply, and then get none.
inline constexpr uint32_t kProtocolVersion = 4;

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
  // Read: MemoryRange; reply: MemoryReadReply, `runs` MemoryRun, then the bytes of each run
  // in order: the parts of the range that differ from the guest's copy (host-server/include/bypass/host/guest_view.h).
  kCtlMemoryRead = 0xF003,
  // External memory (imported or exported as an fd) that is host-visible: payload uint64
  // memory id; reply: ExternalMemoryReply. When `shared`, the host sent the fd of the pages
  // (tag kFdTagMemoryBase + id) before the reply and the guest maps it at `file_offset`;
  // otherwise the guest shadows the memory with kCtlMemoryWrite/kCtlMemoryRead.
  kCtlExternalMemory = 0xF004,
  // Presentation through memshare (host-server/src/presentation.h). Join: no payload; reply:
  // uint64 domain id; the host sent the guest's end of a memshare socket (tag kFdTagPresent)
  // before the reply. Name: PresentNameRequest; reply: the 16-byte memshare name of that
  // range of host-visible memory, readable by the guest's domain.
  kCtlPresentJoin = 0xF005,
  kCtlPresentName = 0xF006,
  // A VM guest's host-visible memory (no fd crosses a VM boundary): payload uint64 memory id;
  // reply MemoryPlacement: where the memory lies in the session's shared heap
  // (transport::Channel::shared_heap(), the slot's part of the VM's shared-memory device).
  // The host also pushes this reply unasked, as pushed_seq(kPushMemoryPlacement, id), before the
  // reply of the vkAllocateMemory that placed it: the ICD needs no second round trip. A socket
  // session's small host-visible allocations are pushed a placement too, in the small-memory
  // heap (kFdTagSmallMemoryHeap) instead of an fd of their own.
  kCtlMemoryPlacement = 0xF007,
  // A read barrier that rides behind a waiting call in the same batch (shadow memory): payload
  // MemoryReadAfter; reply as kCtlMemoryRead. The host reads only if the call it follows was
  // the last one answered and was answered VK_SUCCESS, so the call's work is done; otherwise
  // the reply has no runs and kMemoryReadSkipped, and nothing of what the host knows of the
  // guest's copy changed. One round trip for the wait and the read.
  kCtlMemoryReadAfter = 0xF008,
};

// Replies the host sends unasked carry a sequence number no call has: the top bit set, a kind
// and a tag (a memory id). They travel just before the reply of the call they belong to, so
// the guest finds them already read when that reply comes, as it finds fds sent before a reply.
inline constexpr uint64_t kPushedSeqBit = uint64_t{1} << 63;
inline constexpr uint64_t kPushMemoryPlacement = 1;
constexpr uint64_t pushed_seq(uint64_t kind, uint64_t tag) {
  return kPushedSeqBit | (kind << 56) | (tag & ((uint64_t{1} << 56) - 1));
}

struct MemoryPlacement {
  uint64_t offset;  // from the start of the shared heap
  uint64_t size;
};

struct PresentNameRequest {
  uint64_t memory_id;
  uint64_t offset;
  uint64_t size;
};

struct ExternalMemoryReply {
  uint64_t file_offset;
  uint32_t shared;
  uint32_t reserved;
};

struct MemoryRange {
  uint64_t memory_id;  // VkDeviceMemory id
  uint64_t offset;
  uint64_t size;
};

struct MemoryReadAfter {
  MemoryRange range;
  uint64_t calls_back;  // the call it follows: this many records wanting a reply back (1: the last)
};

struct MemoryReadReply {
  uint32_t runs;
  uint32_t flags;  // kMemoryReadSkipped
};
inline constexpr uint32_t kMemoryReadSkipped = 1;  // kCtlMemoryReadAfter: not read (see there)
// The memory is no longer there: another thread of the guest freed it after this thread's
// barrier chose it and before the barrier's record arrived. Nothing read; a write to such
// memory is dropped. (An id above every id the session has used still ends the session.)
inline constexpr uint32_t kMemoryReadGone = 2;

struct MemoryRun {
  uint64_t offset;  // in the memory, not in the range asked for
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

// Tags of the fds that travel on the session socket (SCM_RIGHTS), each sent before the
// record or reply that uses it, so the receiver finds it when it reads that record.
// host -> guest: the memfd behind host-visible memory shared with the guest (+ memory id)
inline constexpr uint64_t kFdTagMemoryBase = 0;
// host -> guest: an fd vkGetMemoryFdKHR exported from the driver (+ memory id)
inline constexpr uint64_t kFdTagExportBase = uint64_t{1} << 62;
// guest -> host: the fd of a VkImportMemoryFdInfoKHR (+ id of the memory being allocated)
inline constexpr uint64_t kFdTagImportBase = uint64_t{2} << 62;
// guest -> host: the fd vkGetMemoryFdPropertiesKHR asks about (+ the 31-bit nonce the guest
// puts in the command's fd argument)
inline constexpr uint64_t kFdTagProbeBase = uint64_t{3} << 62;
// host -> guest: the guest's end of its memshare socket (kCtlPresentJoin)
inline constexpr uint64_t kFdTagPresent = (uint64_t{1} << 62) - 1;
// host -> guest: the memfd of the session's small-memory heap, once, before the first placement
// pushed in it (kPushMemoryPlacement on a socket session; its size is the file's)
inline constexpr uint64_t kFdTagSmallMemoryHeap = (uint64_t{1} << 62) - 2;

}  // namespace bypass::wire
