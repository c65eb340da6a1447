// lifecycle_probe: a hostile guest for the object-lifetime and limit tests (issue 13). It links
// only the Vulkan loader and runs through the bypass ICD; every mode does something a correct
// application never does, and bypassd must survive it.
//
//   lifecycle_probe destroy-waited-fence   one thread waits on an unsignaled fence with no
//                                          timeout; another destroys the fence meanwhile
//   lifecycle_probe destroy-waited-device  the same, destroying the device
//   lifecycle_probe instance-rounds N      N rounds: an instance with a device and children
//                                          (fence, semaphore, buffer, image, host-visible
//                                          memory, command pool and buffer, query pool), then
//                                          vkDestroyInstance with all of it still alive
//   lifecycle_probe device-rounds N        on one instance, N rounds of a device and children,
//                                          then vkDestroyDevice with the children alive; prints
//                                          "warm: N", waits for a line on stdin, does N more
//                                          rounds, prints "rounds: N", waits for EOF on stdin
//                                          (the test measures bypassd at both pauses)
//   lifecycle_probe truncate-memory        maps host-visible memory, reopens the memfd behind
//                                          the mapping (/proc/self/map_files) and truncates it,
//                                          has the host's driver fill a buffer in it, then
//                                          tries to grow it
//   lifecycle_probe wait-behind-waits N    N threads wait forever; a wait on work that finishes
//                                          must still return
//   lifecycle_probe pending-waits N        N threads each wait with no timeout on a fence
//                                          nothing signals
//   lifecycle_probe create-fences N        creates N fences, then vkDeviceWaitIdle
//   lifecycle_probe destroy-in-flight N    submits 4 GiB of fills into a buffer and a copy of
//                                          its start into a second buffer, then destroys the
//                                          first, frees its memory and destroys the command
//                                          pool while that runs; asks bypassd something and
//                                          prints "answered in flight: yes" when the answer
//                                          came before the work was done, allocates as much
//                                          memory again ("allocated again: yes"), then "copy:
//                                          right" when the copy holds the last fill. Then 2N rounds of
//                                          the same with 64 MiB of fills into 4 MiB, each
//                                          waited and checked, paced like device-rounds ("warm:
//                                          N", a line on stdin, "rounds: N wrong: W answered in
//                                          flight: F", EOF on stdin)
//   lifecycle_probe abandon N              submits N GiB of fills into a 64 MiB buffer (1024:
//                                          about a minute of lavapipe's time here), prints
//                                          "submitted", and waits to be killed
//
// Output is one "name: VK_RESULT (number)" line per call that matters, flushed at once, and
// "name: errno-name" for system calls. Exit status 0 when the probe ran to its end (whatever
// bypassd answered), 2 on bad arguments.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <vulkan/vulkan.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

const char* result_name(VkResult r) {
  switch (r) {
    case VK_SUCCESS:
      return "VK_SUCCESS";
    case VK_NOT_READY:
      return "VK_NOT_READY";
    case VK_TIMEOUT:
      return "VK_TIMEOUT";
    case VK_ERROR_OUT_OF_HOST_MEMORY:
      return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
      return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED:
      return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST:
      return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED:
      return "VK_ERROR_MEMORY_MAP_FAILED";
    default:
      return "VkResult";
  }
}

VkResult report(const char* what, VkResult r) {
  std::printf("%s: %s (%d)\n", what, result_name(r), static_cast<int>(r));
  std::fflush(stdout);
  return r;
}

void say(const char* text) {
  std::printf("%s\n", text);
  std::fflush(stdout);
}

VkInstance create_instance() {
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "bypass-lifecycle-probe";
  app.apiVersion = VK_API_VERSION_1_1;
  VkInstanceCreateInfo info{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  info.pApplicationInfo = &app;
  VkInstance instance = VK_NULL_HANDLE;
  if (vkCreateInstance(&info, nullptr, &instance) != VK_SUCCESS) return VK_NULL_HANDLE;
  return instance;
}

VkPhysicalDevice first_physical(VkInstance instance) {
  uint32_t n = 1;
  VkPhysicalDevice pd = VK_NULL_HANDLE;
  VkResult r = vkEnumeratePhysicalDevices(instance, &n, &pd);
  return (r == VK_SUCCESS || r == VK_INCOMPLETE) && n ? pd : VK_NULL_HANDLE;
}

VkDevice create_device(VkPhysicalDevice pd) {
  const float priority = 1.0f;
  VkDeviceQueueCreateInfo queue{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  queue.queueCount = 1;
  queue.pQueuePriorities = &priority;
  VkDeviceCreateInfo info{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  info.queueCreateInfoCount = 1;
  info.pQueueCreateInfos = &queue;
  VkDevice device = VK_NULL_HANDLE;
  if (vkCreateDevice(pd, &info, nullptr, &device) != VK_SUCCESS) return VK_NULL_HANDLE;
  return device;
}

uint32_t host_visible_type(VkPhysicalDevice pd, uint32_t bits) {
  VkPhysicalDeviceMemoryProperties props;
  vkGetPhysicalDeviceMemoryProperties(pd, &props);
  for (uint32_t i = 0; i < props.memoryTypeCount; ++i)
    if ((bits & (1u << i)) && (props.memoryTypes[i].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)) return i;
  return 0;
}

struct Setup {
  VkInstance instance = VK_NULL_HANDLE;
  VkPhysicalDevice physical = VK_NULL_HANDLE;
  VkDevice device = VK_NULL_HANDLE;
  bool ok() const { return device != VK_NULL_HANDLE; }
};

Setup setup() {
  Setup s;
  // The ICD gives bypassd one second to accept a connection; on a loaded machine a round may
  // miss that now and then, which is not what the rounds test.
  for (int tries = 0; tries < 3 && !s.instance; ++tries) {
    if (tries) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    s.instance = create_instance();
  }
  if (!s.instance) return s;
  s.physical = first_physical(s.instance);
  if (s.physical) s.device = create_device(s.physical);
  return s;
}

// A call that needs bypassd's answer: everything appended before it has reached bypassd.
VkResult sync_with_host(VkPhysicalDevice pd) {
  VkImageFormatProperties props;
  return vkGetPhysicalDeviceImageFormatProperties(pd, VK_FORMAT_R8G8B8A8_UNORM, VK_IMAGE_TYPE_2D,
                                                  VK_IMAGE_TILING_OPTIMAL, VK_IMAGE_USAGE_SAMPLED_BIT, 0, &props);
}

// One of each kind of child a device can hold, left alive on purpose.
void create_children(VkPhysicalDevice pd, VkDevice device) {
  VkFenceCreateInfo finfo{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkFence fence;
  vkCreateFence(device, &finfo, nullptr, &fence);
  VkSemaphoreCreateInfo sinfo{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO};
  VkSemaphore semaphore;
  vkCreateSemaphore(device, &sinfo, nullptr, &semaphore);
  VkBufferCreateInfo binfo{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  binfo.size = 1 << 16;
  binfo.usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  VkBuffer buffer;
  vkCreateBuffer(device, &binfo, nullptr, &buffer);
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(device, buffer, &req);
  VkMemoryAllocateInfo ainfo{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ainfo.allocationSize = req.size;
  ainfo.memoryTypeIndex = host_visible_type(pd, req.memoryTypeBits);
  VkDeviceMemory memory;
  if (vkAllocateMemory(device, &ainfo, nullptr, &memory) == VK_SUCCESS) vkBindBufferMemory(device, buffer, memory, 0);
  VkImageCreateInfo iinfo{VK_STRUCTURE_TYPE_IMAGE_CREATE_INFO};
  iinfo.imageType = VK_IMAGE_TYPE_2D;
  iinfo.format = VK_FORMAT_R8G8B8A8_UNORM;
  iinfo.extent = {64, 64, 1};
  iinfo.mipLevels = 1;
  iinfo.arrayLayers = 1;
  iinfo.samples = VK_SAMPLE_COUNT_1_BIT;
  iinfo.usage = VK_IMAGE_USAGE_SAMPLED_BIT;
  VkImage image;
  vkCreateImage(device, &iinfo, nullptr, &image);
  VkCommandPoolCreateInfo pinfo{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  VkCommandPool pool;
  vkCreateCommandPool(device, &pinfo, nullptr, &pool);
  VkCommandBufferAllocateInfo cinfo{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cinfo.commandPool = pool;
  cinfo.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cinfo.commandBufferCount = 2;
  VkCommandBuffer cmds[2];
  vkAllocateCommandBuffers(device, &cinfo, cmds);
  VkQueryPoolCreateInfo qinfo{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
  qinfo.queryType = VK_QUERY_TYPE_OCCLUSION;
  qinfo.queryCount = 1 << 16;  // large enough (lavapipe: 512 KiB) that a leak shows in RSS
  VkQueryPool queries;
  vkCreateQueryPool(device, &qinfo, nullptr, &queries);
}

// A wait nothing will end but the session's end, on a thread of its own.
std::thread wait_forever(VkDevice device, VkFence fence, const char* what) {
  return std::thread([=] { report(what, vkWaitForFences(device, 1, &fence, VK_TRUE, UINT64_MAX)); });
}

int destroy_waited(bool whole_device) {
  Setup s = setup();
  if (!s.ok()) return report("setup", VK_ERROR_INITIALIZATION_FAILED), 0;
  VkFenceCreateInfo finfo{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkFence fence;
  report("vkCreateFence", vkCreateFence(s.device, &finfo, nullptr, &fence));
  std::thread waiter = wait_forever(s.device, fence, "vkWaitForFences");
  // Long enough for the wait to reach bypassd and go to a waiter thread there.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  say(whole_device ? "destroying the device" : "destroying the fence");
  if (whole_device) {
    vkDestroyDevice(s.device, nullptr);
    report("sync", sync_with_host(s.physical));  // sends the destroy, learns what bypassd made of it
  } else {
    vkDestroyFence(s.device, fence, nullptr);
    report("vkDeviceWaitIdle", vkDeviceWaitIdle(s.device));
  }
  waiter.join();
  if (!whole_device) vkDestroyDevice(s.device, nullptr);
  vkDestroyInstance(s.instance, nullptr);
  say("done");
  return 0;
}

int rounds(bool instance_level, int n) {
  Setup keep;
  if (!instance_level) {
    keep.instance = create_instance();
    keep.physical = keep.instance ? first_physical(keep.instance) : VK_NULL_HANDLE;
    if (!keep.physical) return report("setup", VK_ERROR_INITIALIZATION_FAILED), 0;
  }
  for (int i = 0; i < (instance_level ? n : 2 * n); ++i) {
    if (!instance_level && i == n) {
      report("sync", sync_with_host(keep.physical));
      std::printf("warm: %d\n", n);
      std::fflush(stdout);
      char line[16];
      if (!std::fgets(line, sizeof line, stdin)) return 0;
    }
    Setup s = instance_level ? setup() : Setup{keep.instance, keep.physical, create_device(keep.physical)};
    if (!s.ok()) {
      std::printf("round %d: setup failed\n", i);
      return 0;
    }
    create_children(s.physical, s.device);
    if (instance_level) {
      vkDestroyInstance(s.instance, nullptr);  // the device and its children still alive
    } else {
      vkDestroyDevice(s.device, nullptr);  // its children still alive
    }
  }
  if (!instance_level) {
    report("sync", sync_with_host(keep.physical));
  }
  std::printf("rounds: %d\n", n);
  std::fflush(stdout);
  if (!instance_level) {
    while (std::fgetc(stdin) != EOF) {
    }
    vkDestroyInstance(keep.instance, nullptr);
  }
  return 0;
}

// The memfd behind a mapping, reopened through /proc/self/map_files (the ICD closed its fd).
int reopen_mapping(const void* ptr) {
  FILE* maps = std::fopen("/proc/self/maps", "re");
  if (!maps) return -1;
  const auto addr = reinterpret_cast<uintptr_t>(ptr);
  char line[512];
  int fd = -1;
  while (std::fgets(line, sizeof line, maps)) {
    uintptr_t start = 0, end = 0;
    if (std::sscanf(line, "%" SCNxPTR "-%" SCNxPTR, &start, &end) != 2 || addr < start || addr >= end) continue;
    char path[128];
    std::snprintf(path, sizeof path, "/proc/self/map_files/%" PRIxPTR "-%" PRIxPTR, start, end);
    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) std::printf("open %s: %s\n", path, strerrorname_np(errno));
    break;
  }
  std::fclose(maps);
  return fd;
}

// A buffer of `size` bytes bound to host-visible memory of its own.
bool host_visible_buffer(const Setup& s, VkDeviceSize size, VkBuffer* buffer, VkDeviceMemory* memory,
                         VkBufferUsageFlags usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT) {
  VkBufferCreateInfo binfo{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  binfo.size = size;
  binfo.usage = usage;
  report("vkCreateBuffer", vkCreateBuffer(s.device, &binfo, nullptr, buffer));
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(s.device, *buffer, &req);
  VkMemoryAllocateInfo ainfo{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ainfo.allocationSize = req.size;
  ainfo.memoryTypeIndex = host_visible_type(s.physical, req.memoryTypeBits);
  if (report("vkAllocateMemory", vkAllocateMemory(s.device, &ainfo, nullptr, memory)) != VK_SUCCESS) return false;
  vkBindBufferMemory(s.device, *buffer, *memory, 0);
  return true;
}

// A command pool and a primary command buffer from it, begun.
VkCommandBuffer begin_commands(const Setup& s, VkCommandPool* pool) {
  VkCommandPoolCreateInfo pinfo{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  vkCreateCommandPool(s.device, &pinfo, nullptr, pool);
  VkCommandBufferAllocateInfo cinfo{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cinfo.commandPool = *pool;
  cinfo.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cinfo.commandBufferCount = 1;
  VkCommandBuffer cmd;
  vkAllocateCommandBuffers(s.device, &cinfo, &cmd);
  VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  vkBeginCommandBuffer(cmd, &begin);
  return cmd;
}

int truncate_memory() {
  Setup s = setup();
  if (!s.ok()) return report("setup", VK_ERROR_INITIALIZATION_FAILED), 0;
  constexpr VkDeviceSize kSize = 1 << 20;
  VkBuffer buffer;
  VkDeviceMemory memory;
  if (!host_visible_buffer(s, kSize, &buffer, &memory)) return 0;
  void* ptr = nullptr;
  if (report("vkMapMemory", vkMapMemory(s.device, memory, 0, VK_WHOLE_SIZE, 0, &ptr)) != VK_SUCCESS) return 0;
  const int fd = reopen_mapping(ptr);
  if (fd < 0) {
    say("reopen: failed");
    return 0;
  }
  std::printf("ftruncate: %s\n", ftruncate(fd, 0) == 0 ? "done" : strerrorname_np(errno));
  std::fflush(stdout);
  // The host's driver writes every page of the memory now (a SIGBUS in bypassd if truncated).
  VkQueue queue;
  vkGetDeviceQueue(s.device, 0, 0, &queue);
  VkCommandPool pool;
  VkCommandBuffer cmd = begin_commands(s, &pool);
  vkCmdFillBuffer(cmd, buffer, 0, VK_WHOLE_SIZE, 0x5a5a5a5au);
  vkEndCommandBuffer(cmd);
  VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  submit.commandBufferCount = 1;
  submit.pCommandBuffers = &cmd;
  report("vkQueueSubmit", vkQueueSubmit(queue, 1, &submit, VK_NULL_HANDLE));
  if (report("vkQueueWaitIdle", vkQueueWaitIdle(queue)) == VK_SUCCESS) {
    const auto* words = static_cast<const uint32_t*>(ptr);
    bool same = true;
    for (size_t i = 0; i < kSize / 4; ++i) same = same && words[i] == 0x5a5a5a5au;
    say(same ? "fill: every word written" : "fill: wrong contents");
  }
  std::printf("grow: %s\n", ftruncate(fd, 1 << 30) == 0 ? "done" : strerrorname_np(errno));
  std::fflush(stdout);
  close(fd);
  vkDestroyCommandPool(s.device, pool, nullptr);
  vkDestroyBuffer(s.device, buffer, nullptr);
  vkFreeMemory(s.device, memory, nullptr);
  vkDestroyDevice(s.device, nullptr);
  vkDestroyInstance(s.instance, nullptr);
  say("done");
  return 0;
}

int pending_waits(int n) {
  Setup s = setup();
  if (!s.ok()) return report("setup", VK_ERROR_INITIALIZATION_FAILED), 0;
  VkFenceCreateInfo finfo{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkFence fence;
  report("vkCreateFence", vkCreateFence(s.device, &finfo, nullptr, &fence));
  std::vector<std::thread> waiters;
  for (int i = 0; i < n; ++i) waiters.push_back(wait_forever(s.device, fence, "vkWaitForFences"));
  for (auto& t : waiters) t.join();
  vkDestroyFence(s.device, fence, nullptr);
  vkDestroyDevice(s.device, nullptr);
  vkDestroyInstance(s.instance, nullptr);
  say("done");
  return 0;
}

// N threads wait forever on one fence; then a wait on work that really finishes (a fence after
// a few hundred ms of fills, long enough to go to a waiter thread in bypassd) must return,
// however many waits are already pending ahead of it.
int wait_behind_waits(int n) {
  Setup s = setup();
  if (!s.ok()) return report("setup", VK_ERROR_INITIALIZATION_FAILED), 0;
  VkFenceCreateInfo finfo{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkFence never, done;
  report("vkCreateFence", vkCreateFence(s.device, &finfo, nullptr, &never));
  report("vkCreateFence", vkCreateFence(s.device, &finfo, nullptr, &done));
  for (int i = 0; i < n; ++i) wait_forever(s.device, never, "vkWaitForFences (never)").detach();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // all on bypassd's waiter threads
  constexpr VkDeviceSize kSize = 64 << 20;
  VkBuffer buffer;
  VkDeviceMemory memory;
  if (!host_visible_buffer(s, kSize, &buffer, &memory)) return 0;
  VkQueue queue;
  vkGetDeviceQueue(s.device, 0, 0, &queue);
  VkCommandPool pool;
  VkCommandBuffer cmd = begin_commands(s, &pool);
  for (uint32_t i = 0; i < 16; ++i) vkCmdFillBuffer(cmd, buffer, 0, VK_WHOLE_SIZE, i);  // 1 GiB of writes
  vkEndCommandBuffer(cmd);
  VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  submit.commandBufferCount = 1;
  submit.pCommandBuffers = &cmd;
  report("vkQueueSubmit", vkQueueSubmit(queue, 1, &submit, done));
  const auto start = std::chrono::steady_clock::now();
  const VkResult r = vkWaitForFences(s.device, 1, &done, VK_TRUE, UINT64_MAX);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("wait behind %d pending waits: %s after %.0f ms\n", n, r == VK_SUCCESS ? "VK_SUCCESS" : "failed", ms);
  std::fflush(stdout);
  // The other waits never end: leave without tearing down (bypassd ends the session).
  std::_Exit(0);
}

int create_fences(int n) {
  Setup s = setup();
  if (!s.ok()) return report("setup", VK_ERROR_INITIALIZATION_FAILED), 0;
  VkFenceCreateInfo finfo{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  int created = 0;
  for (int i = 0; i < n; ++i) {
    VkFence fence;
    if (vkCreateFence(s.device, &finfo, nullptr, &fence) == VK_SUCCESS) ++created;
  }
  std::printf("vkCreateFence succeeded %d times\n", created);
  report("vkDeviceWaitIdle", vkDeviceWaitIdle(s.device));
  vkDestroyDevice(s.device, nullptr);
  vkDestroyInstance(s.instance, nullptr);
  say("done");
  return 0;
}

}  // namespace

// A buffer, its memory (mapped) and a fence: what a round of destroy-in-flight keeps to check.
struct Kept {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  const uint32_t* words = nullptr;
  VkFence fence = VK_NULL_HANDLE;
};

constexpr VkDeviceSize kCopyBytes = 4096;

// Fills a buffer of `size` bytes `fills` times (the last time with `value`), copies its first
// kCopyBytes into a kept buffer, submits that with a fence, then destroys the filled buffer,
// frees its memory and destroys the command pool while the work runs: invalid usage, which
// bypassd must survive, and which must not stall its answers.
bool fill_copy_destroy(const Setup& s, VkQueue queue, VkDeviceSize size, uint32_t fills, uint32_t value, Kept* kept) {
  VkBuffer source;
  VkDeviceMemory source_memory;
  if (!host_visible_buffer(s, size, &source, &source_memory,
                           VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT) ||
      !host_visible_buffer(s, kCopyBytes, &kept->buffer, &kept->memory))
    return false;
  void* ptr = nullptr;
  if (vkMapMemory(s.device, kept->memory, 0, VK_WHOLE_SIZE, 0, &ptr) != VK_SUCCESS) return false;
  kept->words = static_cast<const uint32_t*>(ptr);
  VkFenceCreateInfo finfo{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  vkCreateFence(s.device, &finfo, nullptr, &kept->fence);
  VkCommandPool pool;
  VkCommandBuffer cmd = begin_commands(s, &pool);
  for (uint32_t i = 0; i < fills; ++i) vkCmdFillBuffer(cmd, source, 0, VK_WHOLE_SIZE, i + 1 == fills ? value : i);
  VkMemoryBarrier barrier{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  barrier.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
  barrier.dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT;
  vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &barrier, 0, nullptr,
                       0, nullptr);
  VkBufferCopy region{0, 0, kCopyBytes};
  vkCmdCopyBuffer(cmd, source, kept->buffer, 1, &region);
  vkEndCommandBuffer(cmd);
  VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  submit.commandBufferCount = 1;
  submit.pCommandBuffers = &cmd;
  if (vkQueueSubmit(queue, 1, &submit, kept->fence) != VK_SUCCESS) return false;
  vkDestroyBuffer(s.device, source, nullptr);
  vkFreeMemory(s.device, source_memory, nullptr);
  vkDestroyCommandPool(s.device, pool, nullptr);
  return true;
}

bool copied(const Kept& k, uint32_t value) {
  for (size_t i = 0; i < kCopyBytes / 4; ++i)
    if (k.words[i] != value) return false;
  return true;
}

void release(const Setup& s, Kept& k) {
  vkDestroyFence(s.device, k.fence, nullptr);
  vkDestroyBuffer(s.device, k.buffer, nullptr);
  vkFreeMemory(s.device, k.memory, nullptr);
  k = Kept{};
}

int destroy_in_flight(int n) {
  Setup s = setup();
  if (!s.ok()) return report("setup", VK_ERROR_INITIALIZATION_FAILED), 0;
  VkQueue queue;
  vkGetDeviceQueue(s.device, 0, 0, &queue);
  // A question only bypassd can answer (nothing in the guest knows an event's state): a round
  // trip, behind the destroys in the same stream.
  VkEventCreateInfo einfo{VK_STRUCTURE_TYPE_EVENT_CREATE_INFO};
  VkEvent event;
  vkCreateEvent(s.device, &einfo, nullptr, &event);
  Kept k;
  if (!fill_copy_destroy(s, queue, 64 << 20, 64, 0x5a17c0de, &k))
    return report("setup", VK_ERROR_INITIALIZATION_FAILED), 0;
  report("vkGetEventStatus", vkGetEventStatus(s.device, event));
  std::printf("answered in flight: %s\n", vkGetFenceStatus(s.device, k.fence) == VK_NOT_READY ? "yes" : "no");
  // As much memory again while the freed memory's work still runs (the test's --max-memory
  // holds one such block, not two): natively it fits, so it must here.
  VkBuffer again;
  VkDeviceMemory again_memory;
  if (host_visible_buffer(s, 64 << 20, &again, &again_memory)) {
    say("allocated again: yes");
    vkDestroyBuffer(s.device, again, nullptr);
    vkFreeMemory(s.device, again_memory, nullptr);
  }
  report("vkWaitForFences", vkWaitForFences(s.device, 1, &k.fence, VK_TRUE, UINT64_MAX));
  say(copied(k, 0x5a17c0de) ? "copy: right" : "copy: wrong");
  release(s, k);
  int wrong = 0, in_flight = 0;
  for (int i = 0; i < 2 * n; ++i) {
    if (i == n) {
      report("vkGetEventStatus", vkGetEventStatus(s.device, event));
      std::printf("warm: %d\n", n);
      std::fflush(stdout);
      char line[16];
      if (!std::fgets(line, sizeof line, stdin)) return 0;
    }
    const uint32_t value = 0x1000u + static_cast<uint32_t>(i);
    if (!fill_copy_destroy(s, queue, 4 << 20, 16, value, &k)) return report("round", VK_ERROR_INITIALIZATION_FAILED), 0;
    vkGetEventStatus(s.device, event);  // the destroys reach bypassd now, while the fills run
    in_flight += vkGetFenceStatus(s.device, k.fence) == VK_NOT_READY;
    vkWaitForFences(s.device, 1, &k.fence, VK_TRUE, UINT64_MAX);
    wrong += !copied(k, value);
    release(s, k);
  }
  report("vkGetEventStatus", vkGetEventStatus(s.device, event));
  std::printf("rounds: %d wrong: %d answered in flight: %d\n", n, wrong, in_flight);
  std::fflush(stdout);
  while (std::fgetc(stdin) != EOF) {
  }
  vkDestroyEvent(s.device, event, nullptr);
  vkDestroyDevice(s.device, nullptr);
  vkDestroyInstance(s.instance, nullptr);
  say("done");
  return 0;
}

// Work that keeps the driver busy long after its guest is gone.
int abandon(int gib) {
  Setup s = setup();
  if (!s.ok()) return report("setup", VK_ERROR_INITIALIZATION_FAILED), 0;
  VkQueue queue;
  vkGetDeviceQueue(s.device, 0, 0, &queue);
  VkBuffer buffer;
  VkDeviceMemory memory;
  if (!host_visible_buffer(s, 64 << 20, &buffer, &memory)) return report("setup", VK_ERROR_INITIALIZATION_FAILED), 0;
  VkCommandPool pool;
  VkCommandBuffer cmd = begin_commands(s, &pool);
  for (int i = 0; i < gib * 16; ++i) vkCmdFillBuffer(cmd, buffer, 0, VK_WHOLE_SIZE, static_cast<uint32_t>(i));
  vkEndCommandBuffer(cmd);
  VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  submit.commandBufferCount = 1;
  submit.pCommandBuffers = &cmd;
  report("vkQueueSubmit", vkQueueSubmit(queue, 1, &submit, VK_NULL_HANDLE));
  VkEventCreateInfo einfo{VK_STRUCTURE_TYPE_EVENT_CREATE_INFO};
  VkEvent event;
  report("vkCreateEvent", vkCreateEvent(s.device, &einfo, nullptr, &event));
  report("vkGetEventStatus", vkGetEventStatus(s.device, event));  // the submit has reached bypassd
  say("submitted");
  for (;;) pause();
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  const int n = argc > 2 ? std::atoi(argv[2]) : 0;
  if (mode == "destroy-waited-fence") return destroy_waited(false);
  if (mode == "destroy-waited-device") return destroy_waited(true);
  if (mode == "instance-rounds" && n > 0) return rounds(true, n);
  if (mode == "device-rounds" && n > 0) return rounds(false, n);
  if (mode == "truncate-memory") return truncate_memory();
  if (mode == "pending-waits" && n > 0) return pending_waits(n);
  if (mode == "wait-behind-waits" && n > 0) return wait_behind_waits(n);
  if (mode == "create-fences" && n > 0) return create_fences(n);
  if (mode == "destroy-in-flight" && n > 0) return destroy_in_flight(n);
  if (mode == "abandon" && n > 0) return abandon(n);
  std::fprintf(stderr,
               "usage: %s destroy-waited-fence|destroy-waited-device|truncate-memory|"
               "instance-rounds N|device-rounds N|pending-waits N|wait-behind-waits N|create-fences N|"
               "destroy-in-flight N|abandon N\n",
               argv[0]);
  return 2;
}
