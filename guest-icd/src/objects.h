// The ICD's dispatchable objects and the guest-side state hand-written commands keep.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bypass/icd/connection.h"
#include "bypass/icd/gen/entrypoints.h"
#include "bypass/memshare/shadow_region.h"

namespace bypass::icd {

struct PhysicalDevice;

struct Instance : Object {
  std::unique_ptr<Connection> owned;
  std::vector<std::string> extensions;  // enabled at vkCreateInstance
  std::mutex mu;
  bool enumerated = false;
  std::vector<PhysicalDevice*> physical_devices;
  uint32_t api_version = VK_API_VERSION_1_0;
};

struct PhysicalDevice : Object {
  Instance* instance = nullptr;
  std::once_flag memory_once;
  VkPhysicalDeviceMemoryProperties memory{};
};

struct Device;

struct Queue : Object {
  Device* device = nullptr;
};

// A query a command buffer writes or resets, in recording order (queries.cpp). `written`: by
// vkCmdWriteTimestamp(2) or vkCmdEndQuery, which the command buffer's end copies into the
// pool's mirror; otherwise reset, or written where no copy follows (a secondary command buffer,
// vkCmdEndQueryIndexedEXT), so the mirror does not hold it.
struct QueryOp {
  uint64_t pool = 0;
  uint32_t first = 0, count = 0;
  bool written = false;
};

struct CommandBuffer : Object {
  Device* device = nullptr;
  uint64_t pool = 0;
  bool secondary = false;            // VK_COMMAND_BUFFER_LEVEL_SECONDARY
  bool copies_queries = false;       // a primary of a graphics or compute family, not protected
  std::vector<QueryOp> query_ops;    // noted while recording
  std::vector<QueryOp> query_final;  // from vkEndCommandBuffer: what a submission does to the pools
  // A begin or reset: the command buffer's contents, and so its query operations, are gone.
  void forget_queries() {
    query_ops.clear();
    query_final.clear();
  }
};

// VK_EXT_external_memory_host: memory "imported" from the application's own pages. The host
// driver cannot see guest pointers, so the memory is ordinary host-visible memory (ptr), and the
// barriers that move shadow memory copy between the application's pages and it: at a write
// barrier the application's pages that changed, at a read barrier the memory's pages that
// changed (host_pointer_* in shadow_memory.cpp). `synced` holds what both held after the last
// barrier, so that only changed bytes move (imports of overlapping pages then merge). vkFreeMemory
// clears `memory` under `mu` before it unmaps.
struct HostPointerMirror {
  std::mutex mu;
  std::byte* app = nullptr;     // the application's pages
  std::byte* memory = nullptr;  // the allocation's mapping; nullptr once freed
  size_t size = 0;
  std::vector<std::byte> synced;
};

struct Mapping {
  void* ptr = nullptr;
  size_t size = 0;
  // The mmap of the host's pages (nullptr for a shadow); ptr lies inside it.
  void* map_base = nullptr;
  size_t map_size = 0;
  // BYPASS_MEMORY=shadow: the guest's own copy, whose dirty pages barriers move.
  std::shared_ptr<memshare::ShadowRegion> shadow;
  // VK_EXT_external_memory_host: the application's pages this memory mirrors.
  std::shared_ptr<HostPointerMirror> host_pointer;
  // Read back only by its own vkInvalidateMappedMemoryRanges (the swapchain's readback memory,
  // which its presenter thread reads): the read barriers of the application's waits leave it
  // out. Two threads reading one shadow at once race (the host sends what changed to whichever
  // asks first), and the application's waits would race the presenter for every frame.
  bool explicit_reads = false;
  // Whether the device may write this memory: a buffer or image whose usage lets the device
  // write it was bound to it, it was bound by vkQueueBindSparse, or it is external memory. The
  // read barriers of waits leave out shadows of memory the device cannot have changed (a
  // staging buffer, vertex, index and uniform buffers, sampled images); an explicit
  // vkInvalidateMappedMemoryRanges still reads.
  bool device_writes = false;
};

// What vkGet{Buffer,Image}MemoryRequirements(2) answered, by create info (requirements.cpp).
struct KeptRequirements {
  struct Answer {
    VkMemoryRequirements requirements{};
    bool has_dedicated = false;  // the answer to a chain with VkMemoryDedicatedRequirements
    VkBool32 prefers_dedicated = VK_FALSE;
    VkBool32 requires_dedicated = VK_FALSE;
  };
  static constexpr size_t kMaxAnswers = 4096;  // then the kept answers start over
  std::once_flag once;
  bool by_info = false;  // the device is Vulkan 1.3 or later
  std::mutex mu;
  std::unordered_map<uint64_t, std::string> objects;  // live VkBuffer/VkImage id -> its create info's key
  std::unordered_map<std::string, Answer> answers;    // create info key -> the driver's answer
};

// What vkGetQueryPoolResults needs to know of a pool (queries.cpp), and the pool's mirror, made
// at the first vkGetQueryPoolResults of the pool: a host-visible buffer the ICD made, into which
// every primary command buffer that writes a query of the pool copies it (values and
// availability, 64-bit) as it ends. A query whose latest submission is done and that submission
// copied it (`states`) is answered from the mirror.
struct QueryPoolInfo {
  struct State {
    uint64_t serial = 0;    // the latest submission that wrote or reset the query (0: none known)
    bool mirrored = false;  // that submission copied it into the mirror
  };
  VkQueryType type = VK_QUERY_TYPE_OCCLUSION;
  VkQueryPipelineStatisticFlags statistics = 0;
  uint32_t count = 0;
  bool mirror_tried = false;                // made, or found impossible, once
  VkBuffer mirror_buffer = VK_NULL_HANDLE;  // none: every call goes to bypassd
  VkDeviceMemory mirror_memory = VK_NULL_HANDLE;
  const std::byte* mirror = nullptr;  // its mapping
  uint32_t stride = 0;                // bytes per query in it
  std::vector<State> states;
};

struct Device : Object {
  PhysicalDevice* physical = nullptr;
  std::vector<std::string> extensions;  // enabled at vkCreateDevice (vkGetDeviceProcAddr)
  KeptRequirements requirements;
  std::mutex mu;
  std::map<std::tuple<uint32_t, uint32_t, uint32_t>, Queue*> queues;  // flags, family, index
  std::unordered_map<uint64_t, std::vector<CommandBuffer*>> pool_buffers;
  std::unordered_map<uint64_t, Mapping> memory;             // VkDeviceMemory id -> shared mapping
  std::unordered_map<uint64_t, QueryPoolInfo> query_pools;  // VkQueryPool id -> its type
  std::unordered_map<uint64_t, bool> command_pool_copies;   // VkCommandPool id -> CommandBuffer::copies_queries
  // Live buffers and images whose usage lets the device only read them (memory.cpp).
  std::unordered_set<uint64_t> read_only_resources;
  // The read barriers of waits on shadows: windows read, and shadows left out because the device
  // cannot write their memory, with their bytes (logged at vkDestroyDevice, level info).
  std::atomic<uint64_t> wait_read_windows{0};
  std::atomic<uint64_t> wait_reads_left_out{0};
  std::atomic<uint64_t> wait_bytes_left_out{0};
  // Pipelines created without waiting for bypassd and waited for (pipelines.cpp; logged at
  // vkDestroyDevice, level info).
  std::atomic<uint64_t> pipelines_unasked{0};
  std::atomic<uint64_t> pipelines_waited{0};
  // vkWaitSemaphores answered in the guest (values reached, or waited for on the completion
  // feedback) and asked of bypassd (sync.cpp; logged at vkDestroyDevice, level info).
  std::atomic<uint64_t> timeline_waits_here{0};
  std::atomic<uint64_t> timeline_waits_asked{0};
};

// Query mirrors (queries.cpp): a submission of these command buffers as submission `serial`
// (nothing to do, and no lock taken, when none writes or resets a query).
void queries_submitted(Device* dev, const std::vector<CommandBuffer*>& cbs, uint64_t serial);

template <class T>
T* new_object(Connection* conn, VkObjectType type, uint64_t id) {
  auto* o = new T();
  set_loader_magic_value(o);
  o->id = id;
  o->conn = conn;
  o->type = type;
  conn->register_object(o);
  return o;
}

template <class T>
void delete_object(T* o) {
  if (!o) return;
  o->conn->unregister_object(o);
  delete o;
}

template <class T, class H>
T* as(H h) {
  return reinterpret_cast<T*>(h);
}

// Looks up an entry point by name (kEntryPoints is sorted).
const EntryPoint* find_entry_point(const char* name);
template <class PFN>
PFN entry(const char* name) {
  const EntryPoint* e = find_entry_point(name);
  return e ? reinterpret_cast<PFN>(e->fn) : nullptr;
}

// Shadow memory (BYPASS_MEMORY=shadow): hooks installed on each connection, and the barriers
// flush/invalidate use directly.
bool shadow_memory_enabled();
// Whether the device may write memory (Mapping::device_writes, memory.cpp): a new buffer's or
// image's usage, its end, and a binding of `memory` to `resource` (0: any use, as sparse binds).
void note_usage(Device* dev, uint64_t resource, bool read_only);
void forget_usage(Device* dev, uint64_t resource);
void note_binding(Device* dev, uint64_t memory, uint64_t resource);
bool buffer_usage_read_only(const VkBufferCreateInfo& info);
bool image_usage_read_only(const VkImageCreateInfo& info);
MemoryHooks* shadow_hooks();
void shadow_write_barrier(Device* dev, uint64_t memory_id, memshare::Range range);
void shadow_read_barrier(Device* dev, uint64_t memory_id, memshare::Range range);

// VK_EXT_external_memory_host (memory.cpp, shadow_memory.cpp): the start of a mirror (the
// application's pages copied in), and the two directions.
void host_pointer_start(HostPointerMirror& m);
// What the completion feedback block (and what else this process learned) shows of submission
// `serial` (sync.cpp).
ImportTracker::Seen seen_by_feedback(Connection* conn, uint64_t serial);
void host_pointer_write(HostPointerMirror& m);  // application -> memory, changed pages
void host_pointer_read(HostPointerMirror& m);   // memory -> application, changed pages
VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetMemoryHostPointerPropertiesEXT(
    VkDevice device, VkExternalMemoryHandleTypeFlagBits handleType, const void* pHostPointer,
    VkMemoryHostPointerPropertiesEXT* pMemoryHostPointerProperties);

// Private data kept in the guest (private_data.cpp): an object only the guest has is destroyed.
void forget_private_data(VkObjectType type, uint64_t handle);

// Cached once per physical device.
const VkPhysicalDeviceMemoryProperties& memory_properties(PhysicalDevice* pd);

}  // namespace bypass::icd
