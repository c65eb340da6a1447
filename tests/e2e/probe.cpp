// probe: a tiny Vulkan guest for the end-to-end tests. It links only the Vulkan loader, so the
// environment decides whether it runs natively or through the bypass ICD.
//
//   probe create-instance   vkCreateInstance, then the physical devices; prints each VkResult
//                           and how long vkCreateInstance took
//   probe wait-fence        creates a device and an unsignaled fence, prints "waiting", then
//                           waits on the fence with no timeout: returns only when the device
//                           is lost (the tests kill bypassd meanwhile)
//   probe hold              creates a device, prints "ready", and waits for EOF on stdin before
//                           destroying everything
//   probe record-bomb [M]   hostile: records M million (default 20) commands into one command
//                           buffer, checking the host each million, then ends it
//   probe free-in-flight    hostile but possible: submits a long vkCmdFillBuffer run on
//                           host-visible memory and frees that memory without waiting, then
//                           waits for the queue. Invalid usage, so the result is undefined for
//                           the guest (natively, lavapipe crashes the program itself), but a
//                           shared host must survive it and serve its other guests on
//   probe debug-messengers  two instances, each with a debug-utils messenger and a debug-report
//                           callback: messages submitted on one instance reach that instance's
//                           callbacks only, filtered by severity/type/flags, and none after the
//                           messenger is destroyed; prints the callback counts after each step
//   probe fill-memory MIB   allocates host-visible memory in blocks of MIB MiB until an
//                           allocation fails (at most 64 blocks), writes each block through its
//                           mapping, prints how many blocks fit and the failing VkResult, frees
//                           them all and allocates one block again: a VM guest's device heap
//                           running full (VK_ERROR_OUT_OF_DEVICE_MEMORY, not a crash)
//   probe feedback          fences answered from bypassd's completion feedback: a submission held
//                           back by a timeline semaphore (signalled later with vkSignalSemaphore)
//                           must not report its fence signalled, by status, wait or timeout, before
//                           that; a thread waiting without timeout returns only after it; reset
//                           and resubmitted fences, waitAny over a held and a finished fence, and
//                           200 fill-wait-reset rounds whose data is checked when the wait returns.
//                           Prints "FAIL: ..." and exits 1 on a wrong answer
//   probe feedback-polls    zero-timeout polls the guest answers itself: 2000 fill rounds, each
//                           polled (vkWaitForFences with timeout 0 until signalled) or polled
//                           after vkQueueWaitIdle, vkDeviceWaitIdle or a wait for a later fence,
//                           which must find the fence signalled at once; the fill is checked
//   probe timeline-waits    timeline semaphore waits: 400 fill rounds signalled by timeline
//                           semaphores only, each waited for with vkWaitSemaphores (one value,
//                           all or any of two, with a timeout) and checked; initial values and
//                           vkSignalSemaphore; then a submission held back by a gate (wait-before-
//                           signal) and a wait for a lower value the program signals meanwhile,
//                           which must return before the gate opens
//   probe pipelines         three compute pipelines, each used in the submission after its
//                           creation: plain, with creation feedback, and with
//                           FAIL_ON_PIPELINE_COMPILE_REQUIRED; prints each result, whether the
//                           feedback was filled in and whether each copy came out right
//   probe repeat-queries    the same physical-device queries asked again answer as the first
//                           time (the ICD keeps their answers), extension enumeration with a
//                           short array between full ones; prints the counts it saw
//   probe memory-requirements  buffers of 12 create infos (sizes, usages, concurrent sharing,
//                           exportable memory) and images of 6 (formats, tilings, mip levels and
//                           layers, 3D, a view format list): prints each one's requirements (v1,
//                           v2 and v2 with VkMemoryDedicatedRequirements), prints "asked" and
//                           waits for a line on stdin; then 50 more objects of each create info,
//                           each asked the three ways and checked against the first answers,
//                           prints "memory-requirements: ok" (or FAIL lines) and waits for EOF
//   probe feedback-wait     creates a submission held back by a semaphore nobody signals, prints
//                           "waiting", then waits on its fence with no timeout (the tests kill
//                           bypassd meanwhile: the wait must end with VK_ERROR_DEVICE_LOST)
//   probe feedback-scribble hostile to itself: writes garbage over the completion feedback block
//                           in its own mapping of the session region, then runs the fence rounds:
//                           answers stay right (the guest asks bypassd when the block makes no
//                           sense) and bypassd, which never reads the block back, carries on
//   probe small-memory      host-visible allocations of many sizes (4 KiB to 2 MiB, 48 MiB in all,
//                           more than bypassd's small-memory heap holds): each written through
//                           its mapping, its first half copied into its second by the device,
//                           all checked after every copy ran (the GPU sees what the CPU wrote,
//                           and no two allocations share bytes); then 500 rounds of allocate,
//                           write, fill on the device, check and free. Prints the counts of this
//                           process's mappings of bypassd's memory files ("device-memory D
//                           small-memory S", and the small-memory file's inode), at the peak
//                           and after the rounds, then "small-memory: ok" and waits for EOF
//   probe icd-create-instance LIB
//                           the same as create-instance, but calls the ICD library LIB directly
//                           (dlopen, the loader-ICD interface), so the VkResult printed is the
//                           ICD's own: the loader replaces a failing driver's result with
//                           VK_ERROR_INCOMPATIBLE_DRIVER when no driver is left
//
// Output is one "name: VK_RESULT (number)" line per call, flushed at once, so a test can
// read it while the probe still runs. Exit status: 0 if every call succeeded, 1 if one
// failed, 2 on bad arguments.
#include <dlfcn.h>
#include <vulkan/vk_icd.h>
#include <vulkan/vulkan.h>

#include <sys/mman.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <string>
#include <thread>
#include <vector>

#include "handles.h"
#include "pipeline.h"
#include "resources.h"

namespace {

const char* result_name(VkResult r) {
  switch (r) {
#define BYPASS_RESULT(R) \
  case R:                \
    return #R;
    BYPASS_RESULT(VK_SUCCESS)
    BYPASS_RESULT(VK_NOT_READY)
    BYPASS_RESULT(VK_TIMEOUT)
    BYPASS_RESULT(VK_INCOMPLETE)
    BYPASS_RESULT(VK_ERROR_OUT_OF_HOST_MEMORY)
    BYPASS_RESULT(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    BYPASS_RESULT(VK_ERROR_INITIALIZATION_FAILED)
    BYPASS_RESULT(VK_ERROR_DEVICE_LOST)
    BYPASS_RESULT(VK_ERROR_MEMORY_MAP_FAILED)
    BYPASS_RESULT(VK_ERROR_LAYER_NOT_PRESENT)
    BYPASS_RESULT(VK_ERROR_EXTENSION_NOT_PRESENT)
    BYPASS_RESULT(VK_ERROR_FEATURE_NOT_PRESENT)
    BYPASS_RESULT(VK_ERROR_INCOMPATIBLE_DRIVER)
    BYPASS_RESULT(VK_ERROR_UNKNOWN)
    BYPASS_RESULT(VK_PIPELINE_COMPILE_REQUIRED)
#undef BYPASS_RESULT
    default:
      return "VkResult";
  }
}

bool report(const char* what, VkResult r) {
  std::printf("%s: %s (%d)\n", what, result_name(r), static_cast<int>(r));
  std::fflush(stdout);
  return r == VK_SUCCESS;
}

// Owns what the probe creates, destroyed in reverse order whatever happened.
struct Objects {
  VkInstance instance = VK_NULL_HANDLE;
  VkDevice device = VK_NULL_HANDLE;
  VkFence fence = VK_NULL_HANDLE;
  ~Objects() {
    if (fence) vkDestroyFence(device, fence, nullptr);
    if (device) vkDestroyDevice(device, nullptr);
    if (instance) vkDestroyInstance(instance, nullptr);
  }
};

bool create_instance(Objects& o) {
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "bypass-probe";
  app.apiVersion = VK_API_VERSION_1_1;
  VkInstanceCreateInfo info{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  info.pApplicationInfo = &app;
  const auto start = std::chrono::steady_clock::now();
  VkResult r = vkCreateInstance(&info, nullptr, &o.instance);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("vkCreateInstance took %.1f ms\n", ms);
  if (r != VK_SUCCESS) o.instance = VK_NULL_HANDLE;
  return report("vkCreateInstance", r);
}

bool create_device(Objects& o, const std::vector<const char*>& extensions = {}, const void* features = nullptr) {
  uint32_t n = 0;
  if (!report("vkEnumeratePhysicalDevices", vkEnumeratePhysicalDevices(o.instance, &n, nullptr))) return false;
  std::vector<VkPhysicalDevice> devices(n);
  if (n == 0 || !report("vkEnumeratePhysicalDevices", vkEnumeratePhysicalDevices(o.instance, &n, devices.data())))
    return false;
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(devices[0], &props);
  std::printf("device: %s\n", props.deviceName);
  const float priority = 1.0f;
  VkDeviceQueueCreateInfo queue{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  queue.queueFamilyIndex = 0;
  queue.queueCount = 1;
  queue.pQueuePriorities = &priority;
  VkDeviceCreateInfo info{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, features};
  info.queueCreateInfoCount = 1;
  info.pQueueCreateInfos = &queue;
  info.enabledExtensionCount = static_cast<uint32_t>(extensions.size());
  info.ppEnabledExtensionNames = extensions.data();
  VkResult r = vkCreateDevice(devices[0], &info, nullptr, &o.device);
  if (r != VK_SUCCESS) o.device = VK_NULL_HANDLE;
  return report("vkCreateDevice", r);
}

// A command pool and one primary command buffer from it.
bool create_command_buffer(Objects& o, VkCommandPool* pool, VkCommandBuffer* cmd) {
  VkCommandPoolCreateInfo pinfo{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  if (!report("vkCreateCommandPool", vkCreateCommandPool(o.device, &pinfo, nullptr, pool))) return false;
  VkCommandBufferAllocateInfo cinfo{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cinfo.commandPool = *pool;
  cinfo.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cinfo.commandBufferCount = 1;
  return report("vkAllocateCommandBuffers", vkAllocateCommandBuffers(o.device, &cinfo, cmd));
}

int run_create_instance() {
  Objects o;
  if (!create_instance(o)) return 1;
  uint32_t n = 0;
  bool ok = report("vkEnumeratePhysicalDevices", vkEnumeratePhysicalDevices(o.instance, &n, nullptr));
  std::printf("physical devices: %u\n", n);
  return ok ? 0 : 1;
}

int run_wait_fence() {
  Objects o;
  if (!create_instance(o) || !create_device(o)) return 1;
  VkFenceCreateInfo info{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  if (!report("vkCreateFence", vkCreateFence(o.device, &info, nullptr, &o.fence))) return 1;
  std::printf("waiting\n");
  std::fflush(stdout);
  // Nothing will signal the fence: only a lost device ends this wait.
  VkResult r = vkWaitForFences(o.device, 1, &o.fence, VK_TRUE, UINT64_MAX);
  report("vkWaitForFences", r);
  // Once lost, the device stays lost: the next call must say so at once, not hang.
  report("vkDeviceWaitIdle", vkDeviceWaitIdle(o.device));
  return r == VK_SUCCESS ? 0 : 1;
}

uint32_t host_visible_type(VkPhysicalDevice pd, uint32_t bits) {
  VkPhysicalDeviceMemoryProperties props;
  vkGetPhysicalDeviceMemoryProperties(pd, &props);
  for (uint32_t i = 0; i < props.memoryTypeCount; ++i)
    if ((bits & (1u << i)) && (props.memoryTypes[i].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)) return i;
  return UINT32_MAX;
}

// An instance and a device on the first physical device, and that device's first queue.
bool open_device(Objects& o, VkPhysicalDevice* pd, VkQueue* queue, const std::vector<const char*>& extensions = {},
                 const void* features = nullptr) {
  if (!create_instance(o) || !create_device(o, extensions, features)) return false;
  uint32_t n = 1;
  vkEnumeratePhysicalDevices(o.instance, &n, pd);
  vkGetDeviceQueue(o.device, 0, 0, queue);
  return true;
}

int run_free_in_flight() {
  Objects o;
  VkPhysicalDevice pd;
  VkQueue queue;
  if (!open_device(o, &pd, &queue)) return 1;
  constexpr VkDeviceSize kSize = 64 << 20;
  VkBufferCreateInfo binfo{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  binfo.size = kSize;
  binfo.usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  VkBuffer buffer;
  if (!report("vkCreateBuffer", vkCreateBuffer(o.device, &binfo, nullptr, &buffer))) return 1;
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(o.device, buffer, &req);
  VkMemoryAllocateInfo ainfo{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ainfo.allocationSize = req.size;
  ainfo.memoryTypeIndex = host_visible_type(pd, req.memoryTypeBits);
  VkDeviceMemory memory;
  if (!report("vkAllocateMemory", vkAllocateMemory(o.device, &ainfo, nullptr, &memory))) return 1;
  if (!report("vkBindBufferMemory", vkBindBufferMemory(o.device, buffer, memory, 0))) return 1;
  VkCommandPool pool;
  VkCommandBuffer cmd;
  if (!create_command_buffer(o, &pool, &cmd)) return 1;
  VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  vkBeginCommandBuffer(cmd, &begin);
  for (uint32_t i = 0; i < 256; ++i) vkCmdFillBuffer(cmd, buffer, 0, VK_WHOLE_SIZE, i);  // 16 GiB of writes
  vkEndCommandBuffer(cmd);
  VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  submit.commandBufferCount = 1;
  submit.pCommandBuffers = &cmd;
  if (!report("vkQueueSubmit", vkQueueSubmit(queue, 1, &submit, VK_NULL_HANDLE))) return 1;
  // The invalid part: the fills are still running when the memory goes. Only the memory,
  // which bypassd owns (a memfd mapping it imported into the driver); the buffer object
  // stays valid until the queue is idle.
  vkFreeMemory(o.device, memory, nullptr);
  std::printf("freed while in flight\n");
  std::fflush(stdout);
  report("vkQueueWaitIdle", vkQueueWaitIdle(queue));
  vkDestroyBuffer(o.device, buffer, nullptr);
  vkDestroyCommandPool(o.device, pool, nullptr);
  return 0;
}

int run_fill_memory(uint64_t mib) {
  Objects o;
  if (!create_instance(o) || !create_device(o)) return 1;
  uint32_t n = 1;
  VkPhysicalDevice pd;
  vkEnumeratePhysicalDevices(o.instance, &n, &pd);
  VkMemoryAllocateInfo info{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  info.allocationSize = mib << 20;
  info.memoryTypeIndex = host_visible_type(pd, ~0u);
  std::vector<VkDeviceMemory> blocks;
  VkResult r = VK_SUCCESS;
  while (blocks.size() < 64) {
    VkDeviceMemory m = VK_NULL_HANDLE;
    r = vkAllocateMemory(o.device, &info, nullptr, &m);
    if (r != VK_SUCCESS) break;
    void* p = nullptr;
    if (vkMapMemory(o.device, m, 0, VK_WHOLE_SIZE, 0, &p) == VK_SUCCESS) {
      std::memset(p, static_cast<int>(blocks.size() + 1), info.allocationSize);
      vkUnmapMemory(o.device, m);
    }
    blocks.push_back(m);
  }
  std::printf("filled: %zu blocks of %llu MiB, then %s\n", blocks.size(), static_cast<unsigned long long>(mib),
              result_name(r));
  for (VkDeviceMemory m : blocks) vkFreeMemory(o.device, m, nullptr);
  VkDeviceMemory again = VK_NULL_HANDLE;
  if (!report("vkAllocateMemory after freeing", vkAllocateMemory(o.device, &info, nullptr, &again))) return 1;
  vkFreeMemory(o.device, again, nullptr);
  std::fflush(stdout);
  return r == VK_ERROR_OUT_OF_DEVICE_MEMORY ? 0 : 1;
}

// Hostile: records commands without end (dynamic state, which is valid anywhere in a command
// buffer), checking every million that the host is still there, then ends the buffer. Each
// command costs the host driver memory; bypassd's per-session data limit must stop it there,
// not in the server's or another guest's memory. Prints the result of whatever failed.
int run_record_bomb(uint64_t millions) {
  Objects o;
  if (!create_instance(o) || !create_device(o)) return 1;
  VkCommandPool pool;
  VkCommandBuffer cmd;
  if (!create_command_buffer(o, &pool, &cmd)) return 1;
  VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  if (!report("vkBeginCommandBuffer", vkBeginCommandBuffer(cmd, &begin))) return 1;
  VkFenceCreateInfo finfo{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  if (!report("vkCreateFence", vkCreateFence(o.device, &finfo, nullptr, &o.fence))) return 1;
  const VkViewport viewport{0, 0, 64, 64, 0, 1};
  for (uint64_t m = 0; m < millions; ++m) {
    for (int i = 0; i < 1000000; ++i) vkCmdSetViewport(cmd, 0, 1, &viewport);
    const VkResult r = vkGetFenceStatus(o.device, o.fence);
    std::printf("recorded %llu million\n", static_cast<unsigned long long>(m + 1));
    std::fflush(stdout);
    if (r != VK_NOT_READY) return report("vkGetFenceStatus", r) ? 0 : 1;
  }
  const VkResult r = vkEndCommandBuffer(cmd);
  report("vkEndCommandBuffer", r);
  // A synchronous call tells whether the host is still with us.
  const VkResult idle = vkDeviceWaitIdle(o.device);
  report("vkDeviceWaitIdle", idle);
  vkDestroyCommandPool(o.device, pool, nullptr);
  return r == VK_SUCCESS && idle == VK_SUCCESS ? 0 : 1;
}

int run_hold() {
  Objects o;
  if (!create_instance(o) || !create_device(o)) return 1;
  VkFenceCreateInfo info{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  if (!report("vkCreateFence", vkCreateFence(o.device, &info, nullptr, &o.fence))) return 1;
  std::printf("ready\n");
  std::fflush(stdout);
  char buf[256];
  while (std::fgets(buf, sizeof(buf), stdin)) {
  }
  return report("vkDeviceWaitIdle", vkDeviceWaitIdle(o.device)) ? 0 : 1;
}

// The loader-ICD interface by hand: negotiate, then vkCreateInstance from the ICD itself.
int run_icd_create_instance(const char* lib) {
  void* so = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
  if (!so) {
    std::fprintf(stderr, "probe: dlopen %s: %s\n", lib, dlerror());
    return 2;
  }
  auto negotiate =
      reinterpret_cast<PFN_vkNegotiateLoaderICDInterfaceVersion>(dlsym(so, "vk_icdNegotiateLoaderICDInterfaceVersion"));
  auto gipa = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(so, "vk_icdGetInstanceProcAddr"));
  if (!negotiate || !gipa) {
    std::fprintf(stderr, "probe: %s lacks the loader-ICD entry points\n", lib);
    return 2;
  }
  uint32_t version = 5;
  if (!report("vk_icdNegotiateLoaderICDInterfaceVersion", negotiate(&version))) return 1;
  auto create = reinterpret_cast<PFN_vkCreateInstance>(gipa(VK_NULL_HANDLE, "vkCreateInstance"));
  if (!create) {
    std::fprintf(stderr, "probe: the ICD has no vkCreateInstance\n");
    return 2;
  }
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "bypass-probe";
  app.apiVersion = VK_API_VERSION_1_1;
  VkInstanceCreateInfo info{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  info.pApplicationInfo = &app;
  VkInstance instance = VK_NULL_HANDLE;
  const auto start = std::chrono::steady_clock::now();
  VkResult r = create(&info, nullptr, &instance);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("vkCreateInstance took %.1f ms\n", ms);
  report("vkCreateInstance", r);
  if (r == VK_SUCCESS) {
    auto destroy = reinterpret_cast<PFN_vkDestroyInstance>(gipa(instance, "vkDestroyInstance"));
    if (destroy) destroy(instance, nullptr);
  }
  // The library stays loaded: its static destructors run at exit, as under the loader.
  return r == VK_SUCCESS ? 0 : 1;
}

// ---------------------------------------------------------------- completion feedback
// (guest-icd/src/sync.cpp, host-server/src/feedback.cpp)

bool g_failed = false;
void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what);
    std::fflush(stdout);
    g_failed = true;
  }
}

struct FenceRig;
void open_gate(FenceRig& g);

struct FenceRig {
  Objects o;
  VkQueue queue = VK_NULL_HANDLE;
  VkCommandPool pool = VK_NULL_HANDLE;
  VkCommandBuffer fill = VK_NULL_HANDLE;  // fills `buffer`
  VkSemaphore gate = VK_NULL_HANDLE;      // timeline: a held submission waits for `gate_value`
  uint64_t gate_value = 0;
  VkSemaphore timeline = VK_NULL_HANDLE;  // timeline: submissions signal `timeline_value`
  uint64_t timeline_value = 0;
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  uint32_t* mapped = nullptr;
  VkFence fence2 = VK_NULL_HANDLE;
  bool lost = false;
  ~FenceRig() {
    if (!o.device || lost) return;
    if (gate) open_gate(*this);  // nothing stays held back
    vkDeviceWaitIdle(o.device);
    if (fence2) vkDestroyFence(o.device, fence2, nullptr);
    if (buffer) vkDestroyBuffer(o.device, buffer, nullptr);
    if (memory) vkFreeMemory(o.device, memory, nullptr);
    if (gate) vkDestroySemaphore(o.device, gate, nullptr);
    if (timeline) vkDestroySemaphore(o.device, timeline, nullptr);
    if (pool) vkDestroyCommandPool(o.device, pool, nullptr);
  }
};

constexpr VkDeviceSize kFillBytes = 1 << 20;

bool make_rig(FenceRig& g) {
  Objects& o = g.o;
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "bypass-probe";
  app.apiVersion = VK_API_VERSION_1_2;
  VkInstanceCreateInfo iinfo{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  iinfo.pApplicationInfo = &app;
  if (!report("vkCreateInstance", vkCreateInstance(&iinfo, nullptr, &o.instance))) {
    o.instance = VK_NULL_HANDLE;
    return false;
  }
  uint32_t n = 1;
  VkPhysicalDevice pd;
  vkEnumeratePhysicalDevices(o.instance, &n, &pd);
  if (n == 0) return false;
  const float priority = 1.0f;
  VkDeviceQueueCreateInfo queue{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  queue.queueCount = 1;
  queue.pQueuePriorities = &priority;
  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  f12.timelineSemaphore = VK_TRUE;
  VkDeviceCreateInfo dinfo{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  dinfo.pNext = &f12;
  dinfo.queueCreateInfoCount = 1;
  dinfo.pQueueCreateInfos = &queue;
  if (!report("vkCreateDevice", vkCreateDevice(pd, &dinfo, nullptr, &o.device))) {
    o.device = VK_NULL_HANDLE;
    return false;
  }
  vkGetDeviceQueue(o.device, 0, 0, &g.queue);
  VkFenceCreateInfo finfo{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  if (!report("vkCreateFence", vkCreateFence(o.device, &finfo, nullptr, &o.fence))) return false;
  if (!report("vkCreateFence", vkCreateFence(o.device, &finfo, nullptr, &g.fence2))) return false;
  VkSemaphoreTypeCreateInfo tinfo{VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO};
  tinfo.semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE;
  VkSemaphoreCreateInfo sinfo{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO};
  sinfo.pNext = &tinfo;
  if (!report("vkCreateSemaphore", vkCreateSemaphore(o.device, &sinfo, nullptr, &g.gate))) return false;
  if (!report("vkCreateSemaphore", vkCreateSemaphore(o.device, &sinfo, nullptr, &g.timeline))) return false;
  VkCommandPoolCreateInfo pinfo{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pinfo.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  if (!report("vkCreateCommandPool", vkCreateCommandPool(o.device, &pinfo, nullptr, &g.pool))) return false;
  VkCommandBufferAllocateInfo cinfo{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cinfo.commandPool = g.pool;
  cinfo.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cinfo.commandBufferCount = 1;
  if (!report("vkAllocateCommandBuffers", vkAllocateCommandBuffers(o.device, &cinfo, &g.fill))) return false;

  VkBufferCreateInfo binfo{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  binfo.size = kFillBytes;
  binfo.usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  if (!report("vkCreateBuffer", vkCreateBuffer(o.device, &binfo, nullptr, &g.buffer))) return false;
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(o.device, g.buffer, &req);
  VkMemoryAllocateInfo ainfo{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ainfo.allocationSize = req.size;
  ainfo.memoryTypeIndex = host_visible_type(pd, req.memoryTypeBits);
  if (!report("vkAllocateMemory", vkAllocateMemory(o.device, &ainfo, nullptr, &g.memory))) return false;
  if (!report("vkBindBufferMemory", vkBindBufferMemory(o.device, g.buffer, g.memory, 0))) return false;
  void* p = nullptr;
  if (!report("vkMapMemory", vkMapMemory(o.device, g.memory, 0, VK_WHOLE_SIZE, 0, &p))) return false;
  g.mapped = static_cast<uint32_t*>(p);
  return true;
}

// A submission that also signals the next value of the rig's timeline semaphore.
bool submit_signalling(FenceRig& g, VkCommandBuffer cmd, VkFence fence) {
  const uint64_t value = ++g.timeline_value;
  VkTimelineSemaphoreSubmitInfo ti{VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO};
  ti.signalSemaphoreValueCount = 1;
  ti.pSignalSemaphoreValues = &value;
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.pNext = &ti;
  si.commandBufferCount = cmd ? 1 : 0;
  si.pCommandBuffers = &cmd;
  si.signalSemaphoreCount = 1;
  si.pSignalSemaphores = &g.timeline;
  return vkQueueSubmit(g.queue, 1, &si, fence) == VK_SUCCESS;
}

VkResult wait_timeline(FenceRig& g, uint64_t value, uint64_t timeout) {
  VkSemaphoreWaitInfo wi{VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO};
  wi.semaphoreCount = 1;
  wi.pSemaphores = &g.timeline;
  wi.pValues = &value;
  return vkWaitSemaphores(g.o.device, &wi, timeout);
}

// A submission that waits for the gate's next value, which only open_gate signals (from the host
// side of the API, vkSignalSemaphore): its fence must not signal before. With `signal_value`, it
// also signals that value of the rig's timeline.
bool submit_held(FenceRig& g, VkFence fence, uint64_t signal_value = 0) {
  const uint64_t wait_value = g.gate_value + 1;
  const VkPipelineStageFlags stage = VK_PIPELINE_STAGE_ALL_COMMANDS_BIT;
  VkTimelineSemaphoreSubmitInfo ti{VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO};
  ti.waitSemaphoreValueCount = 1;
  ti.pWaitSemaphoreValues = &wait_value;
  ti.signalSemaphoreValueCount = signal_value ? 1 : 0;
  ti.pSignalSemaphoreValues = &signal_value;
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.pNext = &ti;
  si.waitSemaphoreCount = 1;
  si.pWaitSemaphores = &g.gate;
  si.pWaitDstStageMask = &stage;
  si.signalSemaphoreCount = signal_value ? 1 : 0;
  si.pSignalSemaphores = &g.timeline;
  if (signal_value) g.timeline_value = signal_value;
  return vkQueueSubmit(g.queue, 1, &si, fence) == VK_SUCCESS;
}

void open_gate(FenceRig& g) {
  VkSemaphoreSignalInfo info{VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO};
  info.semaphore = g.gate;
  info.value = ++g.gate_value;
  vkSignalSemaphore(g.o.device, &info);
}

// Records a fill of the buffer with `value` and submits it with the rig's fence.
bool submit_fill(FenceRig& g, uint32_t value) {
  VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  vkResetCommandBuffer(g.fill, 0);
  vkBeginCommandBuffer(g.fill, &begin);
  vkCmdFillBuffer(g.fill, g.buffer, 0, kFillBytes, value);
  vkEndCommandBuffer(g.fill);
  return submit_signalling(g, g.fill, g.o.fence);
}

// Fill-wait-reset rounds: when the wait or status says the fence signalled, the fill is in memory.
void fill_rounds(FenceRig& g, uint32_t rounds) {
  VkDevice dev = g.o.device;
  for (uint32_t i = 1; i <= rounds && !g_failed; ++i) {
    expect(submit_fill(g, i), "fill submission");
    if (i % 2) {
      expect(vkWaitForFences(dev, 1, &g.o.fence, VK_TRUE, UINT64_MAX) == VK_SUCCESS, "fill wait");
    } else {
      VkResult r;
      while ((r = vkGetFenceStatus(dev, g.o.fence)) == VK_NOT_READY) std::this_thread::yield();
      expect(r == VK_SUCCESS, "fill status poll");
    }
    expect(vkGetFenceStatus(dev, g.o.fence) == VK_SUCCESS, "status after the wait");
    // A fence and a semaphore signalled by one submission need not signal in the same instant (lavapipe
    // signals the fence first): wait, but never long.
    expect(wait_timeline(g, g.timeline_value, 1'000'000'000) == VK_SUCCESS,
           "the timeline value of a finished submission");
    uint64_t value = 0;
    expect(vkGetSemaphoreCounterValue(dev, g.timeline, &value) == VK_SUCCESS && value == g.timeline_value,
           "the timeline semaphore holds the value of the finished submission");
    expect(g.mapped[0] == i && g.mapped[kFillBytes / 4 - 1] == i, "the fill is complete when its fence is signalled");
    expect(vkResetFences(dev, 1, &g.o.fence) == VK_SUCCESS, "reset");
    expect(vkGetFenceStatus(dev, g.o.fence) == VK_NOT_READY, "a reset fence is not signalled");
  }
}

// A submission held back by the event: nothing may call its fence signalled until the event is set.
void held_rounds(FenceRig& g) {
  VkDevice dev = g.o.device;
  using Clock = std::chrono::steady_clock;
  for (int round = 0; round < 3 && !g_failed; ++round) {
    expect(submit_held(g, g.o.fence), "held submission");
    // A fence-only submission behind it: it cannot signal before the held work either.
    expect(submit_signalling(g, VK_NULL_HANDLE, g.fence2), "fence-only submission");
    expect(wait_timeline(g, g.timeline_value, 0) == VK_TIMEOUT, "a held timeline value is not reached");
    expect(wait_timeline(g, g.timeline_value, 10'000'000) == VK_TIMEOUT, "a held timeline value's wait times out");
    expect(vkGetFenceStatus(dev, g.o.fence) == VK_NOT_READY, "a held fence's status is VK_NOT_READY");
    expect(vkGetFenceStatus(dev, g.fence2) == VK_NOT_READY, "the fence behind it is VK_NOT_READY");
    expect(vkWaitForFences(dev, 1, &g.o.fence, VK_TRUE, 0) == VK_TIMEOUT, "a held fence's wait(0) times out");
    const auto t0 = Clock::now();
    expect(vkWaitForFences(dev, 1, &g.o.fence, VK_TRUE, 30'000'000) == VK_TIMEOUT,
           "a held fence's 30 ms wait times out");
    expect(Clock::now() - t0 >= std::chrono::milliseconds(30), "a 30 ms wait lasts 30 ms");
    VkFence both[2] = {g.o.fence, g.fence2};
    expect(vkWaitForFences(dev, 2, both, VK_FALSE, 10'000'000) == VK_TIMEOUT, "waitAny over two held fences");
    std::atomic<bool> returned{false};
    VkResult waited = VK_ERROR_UNKNOWN;
    Clock::time_point returned_at;
    std::thread waiter([&] {
      waited = vkWaitForFences(dev, 2, both, VK_TRUE, UINT64_MAX);
      returned_at = Clock::now();
      returned.store(true);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    expect(!returned.load(), "a wait without timeout on held fences does not return before the gate opens");
    uint64_t before = 0;
    expect(vkGetSemaphoreCounterValue(dev, g.gate, &before) == VK_SUCCESS && before == g.gate_value,
           "the gate's value before it opens");
    VkSemaphoreWaitInfo swi{VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO};
    const uint64_t next = g.gate_value + 1;
    swi.semaphoreCount = 1;
    swi.pSemaphores = &g.gate;
    swi.pValues = &next;
    expect(vkWaitSemaphores(dev, &swi, 10'000'000) == VK_TIMEOUT, "a wait for the gate's next value times out");
    expect(vkGetFenceStatus(dev, g.o.fence) == VK_NOT_READY, "still VK_NOT_READY while another thread waits");
    const auto set_at = Clock::now();
    open_gate(g);
    waiter.join();
    expect(waited == VK_SUCCESS, "the waiting thread's wait succeeds once the gate opened");
    expect(returned_at >= set_at, "the waiting thread returned only after the gate opened");
    uint64_t value = 0;
    expect(vkGetSemaphoreCounterValue(dev, g.gate, &value) == VK_SUCCESS && value == g.gate_value,
           "the timeline semaphore holds the value signalled");
    expect(vkGetFenceStatus(dev, g.o.fence) == VK_SUCCESS, "signalled after the wait");
    expect(vkWaitForFences(dev, 2, both, VK_FALSE, 0) == VK_SUCCESS, "waitAny(0) after the wait");
    expect(wait_timeline(g, g.timeline_value, 1'000'000'000) == VK_SUCCESS, "the timeline value once the work is done");
    expect(vkResetFences(dev, 2, both) == VK_SUCCESS, "reset both");
    expect(vkWaitForFences(dev, 1, &g.o.fence, VK_TRUE, 0) == VK_TIMEOUT, "a reset fence's wait(0) times out");
    expect(vkGetFenceStatus(dev, g.fence2) == VK_NOT_READY, "a reset fence's status is VK_NOT_READY");
  }
}

// A fill of the buffer with `value` that signals the next value of the rig's timeline and, with
// `other`, the next value of that semaphore too; no fence.
bool submit_fill_signalling(FenceRig& g, uint32_t value, VkSemaphore other, uint64_t* other_value) {
  VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  vkResetCommandBuffer(g.fill, 0);
  vkBeginCommandBuffer(g.fill, &begin);
  vkCmdFillBuffer(g.fill, g.buffer, 0, kFillBytes, value);
  vkEndCommandBuffer(g.fill);
  const VkSemaphore sems[2] = {g.timeline, other};
  const uint64_t values[2] = {++g.timeline_value, other ? ++*other_value : 0};
  VkTimelineSemaphoreSubmitInfo ti{VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO};
  ti.signalSemaphoreValueCount = other ? 2 : 1;
  ti.pSignalSemaphoreValues = values;
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.pNext = &ti;
  si.commandBufferCount = 1;
  si.pCommandBuffers = &g.fill;
  si.signalSemaphoreCount = other ? 2 : 1;
  si.pSignalSemaphores = sems;
  return vkQueueSubmit(g.queue, 1, &si, VK_NULL_HANDLE) == VK_SUCCESS;
}

VkResult wait_values(VkDevice dev, std::initializer_list<VkSemaphore> sems, std::initializer_list<uint64_t> values,
                     bool any, uint64_t timeout) {
  const std::vector<VkSemaphore> s(sems);
  const std::vector<uint64_t> v(values);
  VkSemaphoreWaitInfo wi{VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO};
  wi.flags = any ? VK_SEMAPHORE_WAIT_ANY_BIT : 0;
  wi.semaphoreCount = static_cast<uint32_t>(s.size());
  wi.pSemaphores = s.data();
  wi.pValues = v.data();
  return vkWaitSemaphores(dev, &wi, timeout);
}

// Timeline waits (guest-icd/src/sync.cpp): fill rounds signalled by timeline semaphores only,
// each waited for with vkWaitSemaphores (one value, all of two, any of two, with a timeout),
// the fill in memory when the wait returns; values reached before any submission (an initial
// value, vkSignalSemaphore) succeed. Then wait-before-signal: a submission held back by the gate
// signals the timeline; a thread waits for a lower value of it, which the program signals from
// the host side with vkSignalSemaphore while the submission is still held: natively the wait
// returns then, before the gate opens, and so must it through bypass (a wait on the held
// submission's completion would hang).
void timeline_rounds(FenceRig& g, uint32_t rounds) {
  VkDevice dev = g.o.device;
  using Clock = std::chrono::steady_clock;
  VkSemaphoreTypeCreateInfo tinfo{VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO};
  tinfo.semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE;
  tinfo.initialValue = 7;
  VkSemaphoreCreateInfo sinfo{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO};
  sinfo.pNext = &tinfo;
  VkSemaphore other = VK_NULL_HANDLE;
  if (!report("vkCreateSemaphore", vkCreateSemaphore(dev, &sinfo, nullptr, &other))) {
    g_failed = true;
    return;
  }
  uint64_t other_value = 7;
  expect(wait_values(dev, {other}, {7}, false, 0) == VK_SUCCESS, "the initial value is reached");
  for (uint32_t i = 1; i <= rounds && !g_failed; ++i) {
    const bool both = i % 2 == 0;
    const uint64_t other_before = other_value;
    expect(submit_fill_signalling(g, i, both ? other : VK_NULL_HANDLE, &other_value), "fill submission");
    switch (i % 4) {
      case 0:
        expect(wait_values(dev, {g.timeline, other}, {g.timeline_value, other_value}, true, UINT64_MAX) == VK_SUCCESS,
               "a wait for either of two values one submission signals");
        break;
      case 1:
        expect(wait_values(dev, {g.timeline}, {g.timeline_value}, false, UINT64_MAX) == VK_SUCCESS,
               "a wait for the value the fill signals");
        break;
      case 2:
        expect(wait_values(dev, {other, g.timeline}, {other_value, g.timeline_value}, false, UINT64_MAX) == VK_SUCCESS,
               "a wait for both values the fill signals");
        break;
      default:
        // A value reached before (other_before) and one still pending.
        expect(
            wait_values(dev, {other, g.timeline}, {other_before, g.timeline_value}, false, 1'000'000'000) == VK_SUCCESS,
            "a wait with a timeout for a reached and a pending value");
        break;
    }
    expect(g.mapped[0] == i && g.mapped[kFillBytes / 4 - 1] == i, "the fill is complete when the wait returns");
    uint64_t value = 0;
    expect(vkGetSemaphoreCounterValue(dev, g.timeline, &value) == VK_SUCCESS && value == g.timeline_value,
           "the timeline holds the value waited for");
    if (i % 50 == 0) {
      // Nothing pending on `other` (a signal must stay below pending ones).
      expect(wait_values(dev, {other}, {other_value}, false, UINT64_MAX) == VK_SUCCESS, "the fill's other value");
      VkSemaphoreSignalInfo info{VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO};
      info.semaphore = other;
      info.value = other_value += 3;
      expect(vkSignalSemaphore(dev, &info) == VK_SUCCESS, "vkSignalSemaphore");
      expect(wait_values(dev, {other}, {other_value}, false, UINT64_MAX) == VK_SUCCESS,
             "a wait for the value vkSignalSemaphore set");
    }
  }

  // Wait-before-signal.
  const uint64_t held_value = g.timeline_value + 10;
  expect(submit_held(g, VK_NULL_HANDLE, held_value), "held submission");
  const uint64_t low = held_value - 5;
  expect(wait_values(dev, {g.timeline}, {low}, false, 10'000'000) == VK_TIMEOUT,
         "a wait for a value nothing reached yet times out");
  std::atomic<bool> returned{false};
  VkResult waited = VK_ERROR_UNKNOWN;
  std::thread waiter([&] {
    waited = wait_values(dev, {g.timeline}, {low}, false, UINT64_MAX);
    returned.store(true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  expect(!returned.load(), "the wait does not return before the value is signalled");
  VkSemaphoreSignalInfo info{VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO};
  info.semaphore = g.timeline;
  info.value = low;
  expect(vkSignalSemaphore(dev, &info) == VK_SUCCESS, "vkSignalSemaphore below the held signal");
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (!returned.load() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  expect(returned.load(), "the wait returns once vkSignalSemaphore reached its value, the submission still held");
  if (!returned.load()) open_gate(g);  // let the waiter go, failed
  waiter.join();
  expect(waited == VK_SUCCESS, "the waiting thread's wait succeeds");
  expect(wait_values(dev, {g.timeline}, {held_value}, false, 0) == VK_TIMEOUT, "the held value is not reached");
  open_gate(g);
  expect(wait_values(dev, {g.timeline}, {held_value}, false, UINT64_MAX) == VK_SUCCESS,
         "the held value once the gate opened");
  vkDestroySemaphore(dev, other, nullptr);
}

// Zero-timeout polls, which the guest answers itself while nothing could have told it otherwise
// (guest-icd/src/sync.cpp, not_done_here): a poll that says "signalled" finds the fill in memory,
// and once a call answered by the host told of the submission (an idle wait, a wait for a later
// fence on the queue), a poll says signalled at once. No timeline waits here: they turn the
// guest's own answers off.
void poll_rounds(FenceRig& g, uint32_t rounds) {
  VkDevice dev = g.o.device;
  VkFence both[2] = {g.o.fence, g.fence2};
  // Created signalled: no submission the guest knows of, so a wait that includes it is asked of
  // the host, whose answer then tells of the other fence's submission too.
  VkFenceCreateInfo finfo{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO, nullptr, VK_FENCE_CREATE_SIGNALED_BIT};
  VkFence signalled = VK_NULL_HANDLE;
  expect(vkCreateFence(dev, &finfo, nullptr, &signalled) == VK_SUCCESS, "a fence created signalled");
  for (uint32_t i = 1; i <= rounds && !g_failed; ++i) {
    expect(submit_fill(g, i), "fill submission");
    switch (i % 5) {
      case 0: {
        VkResult r;
        while ((r = vkWaitForFences(dev, 1, &g.o.fence, VK_TRUE, 0)) == VK_TIMEOUT) std::this_thread::yield();
        expect(r == VK_SUCCESS, "fill wait(0) poll");
        break;
      }
      case 1:
        expect(vkQueueWaitIdle(g.queue) == VK_SUCCESS, "vkQueueWaitIdle");
        expect(vkGetFenceStatus(dev, g.o.fence) == VK_SUCCESS, "signalled once vkQueueWaitIdle returned");
        break;
      case 2:
        expect(vkDeviceWaitIdle(dev) == VK_SUCCESS, "vkDeviceWaitIdle");
        expect(vkWaitForFences(dev, 1, &g.o.fence, VK_TRUE, 0) == VK_SUCCESS,
               "wait(0) says signalled once vkDeviceWaitIdle returned");
        break;
      case 3:
        // A later submission's fence signalled: every signal operation before it on the queue
        // happened too.
        expect(submit_signalling(g, VK_NULL_HANDLE, g.fence2), "fence-only submission behind the fill");
        expect(vkWaitForFences(dev, 1, &g.fence2, VK_TRUE, UINT64_MAX) == VK_SUCCESS, "wait for the later fence");
        expect(vkGetFenceStatus(dev, g.o.fence) == VK_SUCCESS, "signalled once a later fence on the queue was");
        break;
      default: {
        // The same, with the wait answered by the host.
        expect(submit_signalling(g, VK_NULL_HANDLE, g.fence2), "fence-only submission behind the fill");
        VkFence later[2] = {signalled, g.fence2};
        expect(vkWaitForFences(dev, 2, later, VK_TRUE, UINT64_MAX) == VK_SUCCESS,
               "wait for a fence created signalled and the later fence");
        expect(vkGetFenceStatus(dev, g.o.fence) == VK_SUCCESS, "signalled once the host said a later fence was");
        break;
      }
    }
    expect(g.mapped[0] == i && g.mapped[kFillBytes / 4 - 1] == i, "the fill is complete when a poll says signalled");
    expect(vkResetFences(dev, 2, both) == VK_SUCCESS, "reset");
    expect(vkGetFenceStatus(dev, g.o.fence) == VK_NOT_READY, "a reset fence is not signalled");
  }
  vkDestroyFence(dev, signalled, nullptr);
}

// The same queries asked again and with other arguments answer as the first time (the ICD
// answers repeated ones from a copy: Connection::answer_never_changes): extension enumeration
// with a short array (VK_INCOMPLETE) between full ones, format properties of every core format
// asked three times, and image format properties for two usages.
int run_repeat_queries() {
  Objects o;
  if (!create_instance(o)) return 1;
  uint32_t n = 1;
  VkPhysicalDevice pd;
  if (vkEnumeratePhysicalDevices(o.instance, &n, &pd) < 0 || n == 0) return 1;
  auto extensions = [&](uint32_t capacity, VkResult* r) {
    uint32_t count = 0;
    vkEnumerateDeviceExtensionProperties(pd, nullptr, &count, nullptr);
    std::vector<VkExtensionProperties> list(capacity == 0 ? count : capacity);
    count = static_cast<uint32_t>(list.size());
    *r = vkEnumerateDeviceExtensionProperties(pd, nullptr, &count, list.data());
    list.resize(count);
    std::vector<std::string> names;
    for (const auto& e : list) names.push_back(e.extensionName);
    return names;
  };
  VkResult r1, r2, r3, r4;
  const auto full = extensions(0, &r1);
  const auto one = extensions(1, &r2);
  const auto again = extensions(0, &r3);
  const auto one_again = extensions(1, &r4);
  expect(r1 == VK_SUCCESS && r3 == VK_SUCCESS && full == again && full.size() > 1, "full extension lists agree");
  expect(r2 == VK_INCOMPLETE && r4 == VK_INCOMPLETE && one.size() == 1 && one == one_again && one[0] == full[0],
         "a one-entry array is VK_INCOMPLETE, with the first extension, each time");
  uint32_t supported = 0;
  for (int f = VK_FORMAT_UNDEFINED; f <= VK_FORMAT_ASTC_12x12_SRGB_BLOCK; ++f) {
    VkFormatProperties first, second, third;
    vkGetPhysicalDeviceFormatProperties(pd, static_cast<VkFormat>(f), &first);
    vkGetPhysicalDeviceFormatProperties(pd, static_cast<VkFormat>(f), &second);
    vkGetPhysicalDeviceFormatProperties(pd, static_cast<VkFormat>(f), &third);
    expect(std::memcmp(&first, &second, sizeof first) == 0 && std::memcmp(&first, &third, sizeof first) == 0,
           "a format's properties are the same each time");
    if (first.optimalTilingFeatures) ++supported;
  }
  VkImageFormatProperties sampled{}, storage{}, sampled_again{};
  const VkResult a = vkGetPhysicalDeviceImageFormatProperties(
      pd, VK_FORMAT_R8G8B8A8_UNORM, VK_IMAGE_TYPE_2D, VK_IMAGE_TILING_OPTIMAL, VK_IMAGE_USAGE_SAMPLED_BIT, 0, &sampled);
  const VkResult b = vkGetPhysicalDeviceImageFormatProperties(
      pd, VK_FORMAT_D32_SFLOAT, VK_IMAGE_TYPE_3D, VK_IMAGE_TILING_OPTIMAL, VK_IMAGE_USAGE_STORAGE_BIT, 0, &storage);
  const VkResult c =
      vkGetPhysicalDeviceImageFormatProperties(pd, VK_FORMAT_R8G8B8A8_UNORM, VK_IMAGE_TYPE_2D, VK_IMAGE_TILING_OPTIMAL,
                                               VK_IMAGE_USAGE_SAMPLED_BIT, 0, &sampled_again);
  expect(a == VK_SUCCESS && c == VK_SUCCESS && std::memcmp(&sampled, &sampled_again, sizeof sampled) == 0,
         "image format properties are the same each time");
  std::printf("extensions %zu, formats with optimal features %u, 3D depth storage image: %s\n", full.size(), supported,
              result_name(b));
  std::printf("repeat-queries: %s\n", g_failed ? "failed" : "ok");
  return g_failed ? 1 : 0;
}

struct Answers {
  VkMemoryRequirements v1{}, v2{}, v2d{};
  VkMemoryDedicatedRequirements dedicated{VK_STRUCTURE_TYPE_MEMORY_DEDICATED_REQUIREMENTS};
};

Answers ask_buffer(VkDevice dev, const VkBufferCreateInfo& info) {
  Answers a;
  VkBuffer buffer;
  if (vkCreateBuffer(dev, &info, nullptr, &buffer) != VK_SUCCESS) {
    expect(false, "vkCreateBuffer");
    return a;
  }
  vkGetBufferMemoryRequirements(dev, buffer, &a.v1);
  VkBufferMemoryRequirementsInfo2 which{VK_STRUCTURE_TYPE_BUFFER_MEMORY_REQUIREMENTS_INFO_2};
  which.buffer = buffer;
  VkMemoryRequirements2 plain{VK_STRUCTURE_TYPE_MEMORY_REQUIREMENTS_2};
  vkGetBufferMemoryRequirements2(dev, &which, &plain);
  a.v2 = plain.memoryRequirements;
  VkMemoryRequirements2 with{VK_STRUCTURE_TYPE_MEMORY_REQUIREMENTS_2};
  with.pNext = &a.dedicated;
  vkGetBufferMemoryRequirements2(dev, &which, &with);
  a.v2d = with.memoryRequirements;
  a.dedicated.pNext = nullptr;
  vkDestroyBuffer(dev, buffer, nullptr);
  return a;
}

Answers ask_image(VkDevice dev, const VkImageCreateInfo& info) {
  Answers a;
  VkImage image;
  if (vkCreateImage(dev, &info, nullptr, &image) != VK_SUCCESS) {
    expect(false, "vkCreateImage");
    return a;
  }
  vkGetImageMemoryRequirements(dev, image, &a.v1);
  VkImageMemoryRequirementsInfo2 which{VK_STRUCTURE_TYPE_IMAGE_MEMORY_REQUIREMENTS_INFO_2};
  which.image = image;
  VkMemoryRequirements2 plain{VK_STRUCTURE_TYPE_MEMORY_REQUIREMENTS_2};
  vkGetImageMemoryRequirements2(dev, &which, &plain);
  a.v2 = plain.memoryRequirements;
  VkMemoryRequirements2 with{VK_STRUCTURE_TYPE_MEMORY_REQUIREMENTS_2};
  with.pNext = &a.dedicated;
  vkGetImageMemoryRequirements2(dev, &which, &with);
  a.v2d = with.memoryRequirements;
  a.dedicated.pNext = nullptr;
  vkDestroyImage(dev, image, nullptr);
  return a;
}

void print_answers(const char* what, size_t i, const Answers& a) {
  std::printf(
      "%s %zu: size %llu alignment %llu types 0x%x, v2 %s, dedicated prefers %u requires %u\n", what, i,
      static_cast<unsigned long long>(a.v1.size), static_cast<unsigned long long>(a.v1.alignment), a.v1.memoryTypeBits,
      std::memcmp(&a.v1, &a.v2, sizeof a.v1) == 0 && std::memcmp(&a.v1, &a.v2d, sizeof a.v1) == 0 ? "same" : "differs",
      a.dedicated.prefersDedicatedAllocation, a.dedicated.requiresDedicatedAllocation);
}

bool same(const Answers& a, const Answers& b) {
  return std::memcmp(&a.v1, &b.v1, sizeof a.v1) == 0 && std::memcmp(&a.v2, &b.v2, sizeof a.v2) == 0 &&
         std::memcmp(&a.v2d, &b.v2d, sizeof a.v2d) == 0 &&
         a.dedicated.prefersDedicatedAllocation == b.dedicated.prefersDedicatedAllocation &&
         a.dedicated.requiresDedicatedAllocation == b.dedicated.requiresDedicatedAllocation;
}

// Memory requirements asked again for buffers and images made the same way (the ICD answers
// those from the first answer: requirements.cpp) equal the first answers, which the test
// compares with native.
int run_memory_requirements() {
  Objects o;
  if (!create_instance(o) || !create_device(o)) return 1;
  static const uint32_t kFamilies[] = {0, 0};
  VkExternalMemoryBufferCreateInfo exportable{VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO};
  exportable.handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT;
  std::vector<VkBufferCreateInfo> buffers;
  const VkDeviceSize sizes[] = {1, 256, 65536 + 3, 4 << 20};
  const VkBufferUsageFlags usages[] = {VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                                       VK_BUFFER_USAGE_UNIFORM_BUFFER_BIT,
                                       VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_VERTEX_BUFFER_BIT};
  for (VkDeviceSize size : sizes)
    for (VkBufferUsageFlags usage : usages) {
      VkBufferCreateInfo info{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
      info.size = size;
      info.usage = usage;
      buffers.push_back(info);
    }
  buffers[1].sharingMode = VK_SHARING_MODE_CONCURRENT;  // one family twice: valid, and in the key
  buffers[1].queueFamilyIndexCount = 1;
  buffers[1].pQueueFamilyIndices = kFamilies;
  buffers[4].pNext = &exportable;
  static const VkFormat kViewFormats[] = {VK_FORMAT_R8G8B8A8_UNORM, VK_FORMAT_R8G8B8A8_SRGB};
  VkImageFormatListCreateInfo view_formats{VK_STRUCTURE_TYPE_IMAGE_FORMAT_LIST_CREATE_INFO};
  view_formats.viewFormatCount = 2;
  view_formats.pViewFormats = kViewFormats;
  auto image = [](VkImageType type, VkFormat format, VkExtent3D extent, VkImageTiling tiling, VkImageUsageFlags usage) {
    VkImageCreateInfo info{VK_STRUCTURE_TYPE_IMAGE_CREATE_INFO};
    info.imageType = type;
    info.format = format;
    info.extent = extent;
    info.mipLevels = 1;
    info.arrayLayers = 1;
    info.samples = VK_SAMPLE_COUNT_1_BIT;
    info.tiling = tiling;
    info.usage = usage;
    return info;
  };
  constexpr VkImageUsageFlags kSampled = VK_IMAGE_USAGE_SAMPLED_BIT | VK_IMAGE_USAGE_TRANSFER_DST_BIT;
  std::vector<VkImageCreateInfo> images = {
      image(VK_IMAGE_TYPE_2D, VK_FORMAT_R8G8B8A8_UNORM, {256, 256, 1}, VK_IMAGE_TILING_OPTIMAL, kSampled),
      image(VK_IMAGE_TYPE_2D, VK_FORMAT_R8G8B8A8_UNORM, {64, 48, 1}, VK_IMAGE_TILING_LINEAR,
            VK_IMAGE_USAGE_TRANSFER_SRC_BIT | VK_IMAGE_USAGE_TRANSFER_DST_BIT),
      image(VK_IMAGE_TYPE_2D, VK_FORMAT_D32_SFLOAT, {128, 128, 1}, VK_IMAGE_TILING_OPTIMAL,
            VK_IMAGE_USAGE_DEPTH_STENCIL_ATTACHMENT_BIT),
      image(VK_IMAGE_TYPE_2D, VK_FORMAT_R8G8B8A8_UNORM, {100, 60, 1}, VK_IMAGE_TILING_OPTIMAL, kSampled),
      image(VK_IMAGE_TYPE_3D, VK_FORMAT_R8_UNORM, {32, 32, 8}, VK_IMAGE_TILING_OPTIMAL, kSampled),
      image(VK_IMAGE_TYPE_2D, VK_FORMAT_R8G8B8A8_UNORM, {128, 128, 1}, VK_IMAGE_TILING_OPTIMAL, kSampled),
  };
  images[3].mipLevels = 4;
  images[3].arrayLayers = 2;
  images[5].flags = VK_IMAGE_CREATE_MUTABLE_FORMAT_BIT;
  images[5].pNext = &view_formats;
  std::vector<Answers> first_buffers, first_images;
  for (size_t i = 0; i < buffers.size(); ++i) {
    first_buffers.push_back(ask_buffer(o.device, buffers[i]));
    print_answers("buffer", i, first_buffers.back());
  }
  for (size_t i = 0; i < images.size(); ++i) {
    first_images.push_back(ask_image(o.device, images[i]));
    print_answers("image", i, first_images.back());
  }
  std::printf("asked\n");
  std::fflush(stdout);
  char line[16];
  if (!std::fgets(line, sizeof line, stdin)) return 1;
  for (int round = 0; round < 50 && !g_failed; ++round) {
    for (size_t i = 0; i < buffers.size(); ++i)
      expect(same(ask_buffer(o.device, buffers[i]), first_buffers[i]),
             "a buffer made the same way has the same requirements");
    for (size_t i = 0; i < images.size(); ++i)
      expect(same(ask_image(o.device, images[i]), first_images[i]),
             "an image made the same way has the same requirements");
  }
  std::printf("memory-requirements: %s\n", g_failed ? "failed" : "ok");
  std::fflush(stdout);
  while (std::fgetc(stdin) != EOF) {
  }
  return g_failed ? 1 : 0;
}

// This process's mappings of bypassd's memory files (guest-icd/src/memory.cpp), by memfd name,
// and the inode of the small-memory heap's file (0: none).
struct MemoryMappings {
  int device_memory = 0;
  int small_memory = 0;
  unsigned long small_inode = 0;
};
MemoryMappings memory_mappings() {
  MemoryMappings m;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("memfd:bypass-device-memory") != std::string::npos) ++m.device_memory;
    if (line.find("memfd:bypass-small-memory") != std::string::npos) {
      ++m.small_memory;
      // address perms offset dev inode path
      char perms[8], dev[16];
      unsigned long long start, end, offset;
      std::sscanf(line.c_str(), "%llx-%llx %7s %llx %15s %lu", &start, &end, perms, &offset, dev, &m.small_inode);
    }
  }
  return m;
}

void print_mappings(const char* when) {
  const MemoryMappings m = memory_mappings();
  std::printf("%s: device-memory %d small-memory %d inode %lu\n", when, m.device_memory, m.small_memory, m.small_inode);
  std::fflush(stdout);
}

// One host-visible allocation with a buffer over all of it, mapped.
struct Block {
  VkDeviceMemory memory = VK_NULL_HANDLE;
  VkBuffer buffer = VK_NULL_HANDLE;
  uint32_t* words = nullptr;
  VkDeviceSize size = 0;
};

bool make_block(VkDevice device, VkPhysicalDevice pd, VkDeviceSize size, Block* b,
                VkBufferUsageFlags usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                bool map = true) {
  VkBufferCreateInfo binfo{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  binfo.size = size;
  binfo.usage = usage;
  if (!report("vkCreateBuffer", vkCreateBuffer(device, &binfo, nullptr, &b->buffer))) return false;
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(device, b->buffer, &req);
  VkMemoryAllocateInfo ainfo{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ainfo.allocationSize = req.size;
  ainfo.memoryTypeIndex = host_visible_type(pd, req.memoryTypeBits);
  void* p = nullptr;
  if (!report("vkAllocateMemory", vkAllocateMemory(device, &ainfo, nullptr, &b->memory)) ||
      !report("vkBindBufferMemory", vkBindBufferMemory(device, b->buffer, b->memory, 0)) ||
      (map && !report("vkMapMemory", vkMapMemory(device, b->memory, 0, VK_WHOLE_SIZE, 0, &p))))
    return false;
  b->words = static_cast<uint32_t*>(p);
  b->size = size;
  return true;
}

void free_block(VkDevice device, Block& b) {
  vkDestroyBuffer(device, b.buffer, nullptr);
  vkFreeMemory(device, b.memory, nullptr);  // unmaps it
  b = Block{};
}

// Block `tag`'s pattern: its first half, word by word.
uint32_t pattern(uint32_t tag, size_t word) { return tag * 0x9E3779B9u ^ static_cast<uint32_t>(word * 2654435761u); }

void write_first_half(Block& b, uint32_t tag) {
  const size_t half = b.size / 2 / sizeof(uint32_t);
  for (size_t w = 0; w < half; ++w) b.words[w] = pattern(tag, w);
}

// Both halves hold the pattern: the CPU's writes reached the device, its copy reached us.
bool check_both_halves(const Block& b, uint32_t tag) {
  const size_t half = b.size / 2 / sizeof(uint32_t);
  for (size_t w = 0; w < half; ++w)
    if (b.words[w] != pattern(tag, w) || b.words[half + w] != pattern(tag, w)) return false;
  return true;
}

void copy_halves(VkCommandBuffer cmd, const Block& b) {
  const VkDeviceSize half = b.size / 2 / sizeof(uint32_t) * sizeof(uint32_t);
  const VkBufferCopy region{0, half, half};
  vkCmdCopyBuffer(cmd, b.buffer, b.buffer, 1, &region);
}

bool submit_and_wait(VkDevice device, VkQueue queue, VkCommandBuffer cmd, VkFence fence) {
  VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  submit.commandBufferCount = 1;
  submit.pCommandBuffers = &cmd;
  return report("vkQueueSubmit", vkQueueSubmit(queue, 1, &submit, fence)) &&
         vkWaitForFences(device, 1, &fence, VK_TRUE, UINT64_MAX) == VK_SUCCESS &&
         vkResetFences(device, 1, &fence) == VK_SUCCESS;
}

// A command pool with one primary command buffer, and the probe's fence.
bool create_commands_and_fence(Objects& o, VkCommandPool* pool, VkCommandBuffer* cmd) {
  if (!create_command_buffer(o, pool, cmd)) return false;
  VkFenceCreateInfo finfo{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  return report("vkCreateFence", vkCreateFence(o.device, &finfo, nullptr, &o.fence));
}

// A device, its queue, a command pool with one primary command buffer, and the probe's fence.
struct CommandRig {
  Objects o;
  VkPhysicalDevice pd = VK_NULL_HANDLE;
  VkQueue queue = VK_NULL_HANDLE;
  VkCommandPool pool = VK_NULL_HANDLE;
  VkCommandBuffer cmd = VK_NULL_HANDLE;
};

bool open_command_rig(CommandRig& r, const std::vector<const char*>& extensions = {}, const void* features = nullptr) {
  return open_device(r.o, &r.pd, &r.queue, extensions, features) && create_commands_and_fence(r.o, &r.pool, &r.cmd);
}

// The compute pipeline of run_host_pointer: the second half of a storage buffer becomes a copy
// of the first (shaders/copy_half.comp), the buffer bound through a descriptor set. Made with
// the samples' helpers (samples/common/pipeline.h), which end the program on a failure.
struct CopyHalfPipeline {
  bypass::samples::UniqueDescriptorSetLayout set_layout;
  bypass::samples::UniquePipelineLayout layout;
  bypass::samples::UniqueShaderModule module;
  bypass::samples::UniquePipeline pipeline;
  bypass::samples::UniqueDescriptorPool pool;
  VkDescriptorSet set = VK_NULL_HANDLE;
};

bool create_copy_half(VkDevice device, VkBuffer buffer, CopyHalfPipeline& p) {
  static constexpr uint32_t kCode[] = {
#include "copy_half.comp.inc"
  };
  VkDescriptorSetLayoutBinding binding{0, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT};
  VkDescriptorSetLayoutCreateInfo sinfo{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  sinfo.bindingCount = 1;
  sinfo.pBindings = &binding;
  VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1};
  VkDescriptorPoolCreateInfo pinfo{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
  pinfo.maxSets = 1;
  pinfo.poolSizeCount = 1;
  pinfo.pPoolSizes = &size;
  if (!report("vkCreateDescriptorSetLayout",
              vkCreateDescriptorSetLayout(device, &sinfo, nullptr, p.set_layout.put(device))) ||
      !report("vkCreateDescriptorPool", vkCreateDescriptorPool(device, &pinfo, nullptr, p.pool.put(device))))
    return false;
  const VkDescriptorSetLayout set_layouts[] = {p.set_layout.get()};
  const VkPushConstantRange push[] = {{VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(uint32_t)}};
  p.layout = bypass::samples::create_pipeline_layout(device, set_layouts, push);
  p.module = bypass::samples::create_shader_module(device, kCode);
  p.pipeline = bypass::samples::create_compute_pipeline(device, p.module.get(), p.layout.get());
  VkDescriptorSetAllocateInfo ainfo{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
  ainfo.descriptorPool = p.pool.get();
  ainfo.descriptorSetCount = 1;
  ainfo.pSetLayouts = set_layouts;
  if (!report("vkAllocateDescriptorSets", vkAllocateDescriptorSets(device, &ainfo, &p.set))) return false;
  VkDescriptorBufferInfo binfo{buffer, 0, VK_WHOLE_SIZE};
  VkWriteDescriptorSet write{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
  write.dstSet = p.set;
  write.descriptorCount = 1;
  write.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
  write.pBufferInfo = &binfo;
  vkUpdateDescriptorSets(device, 1, &write, 0, nullptr);
  return true;
}

// VK_EXT_external_memory_host: a buffer on the application's own pages (aligned_alloc). Each
// round the CPU writes a pattern into the first half, the device copies it over the second half,
// and the CPU reads the second half after the fence; the mapping is the application's pointer.
// The device reaches the import a different way each round: a copy in the submitted command
// buffer, a copy in a secondary command buffer, a compute shader through a descriptor set; and a
// submission that does not reach it (a fill of another buffer, waited for) comes between the
// CPU's writes and the one that does. The ICD mirrors imports only around submissions that reach
// them (guest-icd/src/import_tracker.cpp): each of these ways must count.
int run_host_pointer() {
  Objects o;
  VkPhysicalDevice pd;
  VkQueue queue;
  if (!open_device(o, &pd, &queue, {VK_EXT_EXTERNAL_MEMORY_HOST_EXTENSION_NAME})) return 1;
  VkPhysicalDeviceExternalMemoryHostPropertiesEXT host{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT};
  VkPhysicalDeviceProperties2 props{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, &host};
  vkGetPhysicalDeviceProperties2(pd, &props);
  const size_t align = host.minImportedHostPointerAlignment;
  std::printf("alignment: %zu\n", align);
  const size_t size = std::max<size_t>(align, 256 << 10);
  void* app = std::aligned_alloc(align, size);
  std::memset(app, 0, size);
  auto get_props = reinterpret_cast<PFN_vkGetMemoryHostPointerPropertiesEXT>(
      vkGetDeviceProcAddr(o.device, "vkGetMemoryHostPointerPropertiesEXT"));
  if (!get_props) return std::printf("FAIL: no vkGetMemoryHostPointerPropertiesEXT\n"), 1;
  VkMemoryHostPointerPropertiesEXT pointer{VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT};
  if (!report("vkGetMemoryHostPointerPropertiesEXT",
              get_props(o.device, VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT, app, &pointer)))
    return 1;
  VkExternalMemoryBufferCreateInfo external{VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO};
  external.handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
  VkBufferCreateInfo binfo{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, &external};
  binfo.size = size;
  binfo.usage =
      VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_STORAGE_BUFFER_BIT;
  VkBuffer buffer;
  if (!report("vkCreateBuffer", vkCreateBuffer(o.device, &binfo, nullptr, &buffer))) return 1;
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(o.device, buffer, &req);
  VkImportMemoryHostPointerInfoEXT import{VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT};
  import.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
  import.pHostPointer = app;
  VkMemoryAllocateInfo ainfo{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, &import};
  ainfo.allocationSize = size;
  ainfo.memoryTypeIndex = host_visible_type(pd, req.memoryTypeBits & pointer.memoryTypeBits);
  VkDeviceMemory memory;
  void* mapped = nullptr;
  if (!report("vkAllocateMemory", vkAllocateMemory(o.device, &ainfo, nullptr, &memory)) ||
      !report("vkBindBufferMemory", vkBindBufferMemory(o.device, buffer, memory, 0)) ||
      !report("vkMapMemory", vkMapMemory(o.device, memory, 0, VK_WHOLE_SIZE, 0, &mapped)))
    return 1;
  std::printf("mapping: %s\n", mapped == app ? "the application's pointer" : "another pointer");
  // A buffer on ordinary memory, for the submissions that do not reach the import.
  VkBufferCreateInfo oinfo{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  oinfo.size = size;
  oinfo.usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  VkBuffer other;
  VkDeviceMemory other_memory;
  if (!report("vkCreateBuffer", vkCreateBuffer(o.device, &oinfo, nullptr, &other))) return 1;
  vkGetBufferMemoryRequirements(o.device, other, &req);
  VkMemoryAllocateInfo oainfo{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  oainfo.allocationSize = req.size;
  oainfo.memoryTypeIndex = host_visible_type(pd, req.memoryTypeBits);
  if (!report("vkAllocateMemory", vkAllocateMemory(o.device, &oainfo, nullptr, &other_memory)) ||
      !report("vkBindBufferMemory", vkBindBufferMemory(o.device, other, other_memory, 0)))
    return 1;
  CopyHalfPipeline copy_half;
  if (!create_copy_half(o.device, buffer, copy_half)) return 1;
  VkCommandPool pool;
  VkCommandBuffer cmd, secondary, unrelated;
  if (!create_commands_and_fence(o, &pool, &cmd)) return 1;
  VkCommandBufferAllocateInfo cinfo{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cinfo.commandPool = pool;
  cinfo.commandBufferCount = 1;
  cinfo.level = VK_COMMAND_BUFFER_LEVEL_SECONDARY;
  if (!report("vkAllocateCommandBuffers", vkAllocateCommandBuffers(o.device, &cinfo, &secondary))) return 1;
  cinfo.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  if (!report("vkAllocateCommandBuffers", vkAllocateCommandBuffers(o.device, &cinfo, &unrelated))) return 1;
  const VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  VkCommandBufferInheritanceInfo inheritance{VK_STRUCTURE_TYPE_COMMAND_BUFFER_INHERITANCE_INFO};
  const VkCommandBufferBeginInfo begin_secondary{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, nullptr, 0, &inheritance};
  auto* words = static_cast<uint32_t*>(app);
  const size_t half = size / 2 / sizeof(uint32_t);
  const VkBufferCopy region{0, half * sizeof(uint32_t), half * sizeof(uint32_t)};
  const char* kWays[] = {"a copy", "a secondary command buffer", "a compute shader's descriptor set",
                         "a copy after an unrelated submission"};
  for (uint32_t round = 0; round < 60 && !g_failed; ++round) {
    const uint32_t way = round % 4;
    // A few scattered words change each round after the first, as a frame's data does.
    for (size_t i = 0; i < half; i += round == 0 ? 1 : 997) words[i] = round * 1000003u + static_cast<uint32_t>(i);
    if (way == 3) {
      vkBeginCommandBuffer(unrelated, &begin);
      vkCmdFillBuffer(unrelated, other, 0, VK_WHOLE_SIZE, round);
      vkEndCommandBuffer(unrelated);
      if (!submit_and_wait(o.device, queue, unrelated, o.fence)) return 1;
      // The CPU's writes are still there, and still only in the first half.
      expect(words[0] == round * 1000003u && words[half] != words[0], "an unrelated submission left the import alone");
    }
    vkResetCommandBuffer(cmd, 0);
    vkBeginCommandBuffer(cmd, &begin);
    if (way == 0 || way == 3) {
      vkCmdCopyBuffer(cmd, buffer, buffer, 1, &region);
    } else if (way == 1) {
      vkBeginCommandBuffer(secondary, &begin_secondary);
      vkCmdCopyBuffer(secondary, buffer, buffer, 1, &region);
      vkEndCommandBuffer(secondary);
      vkCmdExecuteCommands(cmd, 1, &secondary);
    } else {
      const uint32_t half_words = static_cast<uint32_t>(half);
      vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, copy_half.pipeline.get());
      vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, copy_half.layout.get(), 0, 1, &copy_half.set, 0,
                              nullptr);
      vkCmdPushConstants(cmd, copy_half.layout.get(), VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(half_words), &half_words);
      vkCmdDispatch(cmd, (half_words + 63) / 64, 1, 1);
    }
    vkEndCommandBuffer(cmd);
    if (!submit_and_wait(o.device, queue, cmd, o.fence)) return 1;
    if (std::memcmp(words, words + half, half * sizeof(uint32_t)) != 0) {
      std::printf("round %u, through %s:\n", round, kWays[way]);
      expect(false, "the device's copy reached the application's pages");
    }
  }
  vkDestroyCommandPool(o.device, pool, nullptr);
  vkDestroyBuffer(o.device, other, nullptr);
  vkFreeMemory(o.device, other_memory, nullptr);
  vkDestroyBuffer(o.device, buffer, nullptr);
  vkFreeMemory(o.device, memory, nullptr);
  std::free(app);
  std::printf("host-pointer: %s\n", g_failed ? "failed" : "ok");
  return g_failed ? 1 : 0;
}

// vkGetQueryPoolResults without the wait bit: of two timestamp queries only the first was
// written, so the second's bytes stay as the application left them (0xab), but for its
// availability word when asked. Prints what each buffer holds afterwards.
int run_query_not_ready() {
  CommandRig rig;
  if (!open_command_rig(rig)) return 1;
  auto& [o, pd, queue, pool, cmd] = rig;
  VkQueryPoolCreateInfo qi{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
  qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
  qi.queryCount = 2;
  VkQueryPool queries;
  if (!report("vkCreateQueryPool", vkCreateQueryPool(o.device, &qi, nullptr, &queries))) return 1;
  const VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  vkBeginCommandBuffer(cmd, &begin);
  vkCmdResetQueryPool(cmd, queries, 0, 2);
  vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries, 0);
  vkEndCommandBuffer(cmd);
  if (!submit_and_wait(o.device, queue, cmd, o.fence)) return 1;
  for (VkQueryResultFlags extra : {VkQueryResultFlags{0}, VkQueryResultFlags{VK_QUERY_RESULT_WITH_AVAILABILITY_BIT}}) {
    uint64_t words[4];
    std::memset(words, 0xab, sizeof(words));
    const VkResult r =
        vkGetQueryPoolResults(o.device, queries, 0, 2, sizeof(words), words, 16, VK_QUERY_RESULT_64_BIT | extra);
    const char* name = extra ? "with availability" : "values only";
    std::printf("%s: %s, first %s, first available %s, second %s, second available %s\n", name, result_name(r),
                words[0] != 0xababababababababull ? "written" : "untouched", extra ? (words[1] == 1 ? "1" : "?") : "-",
                words[2] != 0xababababababababull ? "written" : "untouched",
                extra ? (words[3] == 0 ? "0" : "?") : (words[3] == 0xababababababababull ? "-" : "written"));
  }
  vkDestroyQueryPool(o.device, queries, nullptr);
  vkDestroyCommandPool(o.device, pool, nullptr);
  return 0;
}

// Query results the ICD answers from a pool's mirror (guest-icd/src/queries.cpp), against the
// driver's own: timestamps written, reset on the host, reset in a command buffer, written in a
// secondary, asked in 32 bits. Every answer's result and availability is printed (the test
// compares them with a native run); values are checked against a copy the application made
// with vkCmdCopyQueryPoolResults in the same command buffer. Then, on "go" from stdin, 200 calls
// for queries long done (the test counts bypassd's replies).
int run_query_mirror() {
  Objects o;
  VkPhysicalDevice pd;
  VkQueue queue;
  VkPhysicalDeviceHostQueryResetFeaturesEXT host_reset{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_HOST_QUERY_RESET_FEATURES_EXT};
  host_reset.hostQueryReset = VK_TRUE;
  if (!open_device(o, &pd, &queue, {VK_EXT_HOST_QUERY_RESET_EXTENSION_NAME}, &host_reset)) return 1;
  auto reset_pool = reinterpret_cast<PFN_vkResetQueryPoolEXT>(vkGetDeviceProcAddr(o.device, "vkResetQueryPoolEXT"));
  if (!reset_pool) return std::printf("FAIL: no vkResetQueryPoolEXT\n"), 1;
  VkCommandPool pool;
  VkCommandBuffer cmd, secondary;
  if (!create_commands_and_fence(o, &pool, &cmd)) return 1;
  VkCommandBufferAllocateInfo cinfo{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cinfo.commandPool = pool;
  cinfo.level = VK_COMMAND_BUFFER_LEVEL_SECONDARY;
  cinfo.commandBufferCount = 1;
  if (!report("vkAllocateCommandBuffers", vkAllocateCommandBuffers(o.device, &cinfo, &secondary))) return 1;
  Block copy;  // the application's own copy of the results
  if (!make_block(o.device, pd, 4096, &copy)) return 1;
  constexpr uint32_t kQueries = 8;
  VkQueryPoolCreateInfo qi{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
  qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
  qi.queryCount = kQueries;
  VkQueryPool queries;
  if (!report("vkCreateQueryPool", vkCreateQueryPool(o.device, &qi, nullptr, &queries))) return 1;
  const VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  constexpr VkQueryResultFlags k64 = VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WITH_AVAILABILITY_BIT;
  // Asks for queries [first, first + count) with availability, 64-bit; prints the result and
  // each availability word.
  auto ask = [&](const char* what, uint32_t first, uint32_t count, VkQueryResultFlags flags, uint64_t* words) {
    std::fill(words, words + 2 * count, 0xababababababababull);
    const VkResult r = vkGetQueryPoolResults(o.device, queries, first, count, 16 * count, words, 16, flags);
    std::printf("%s: %s, available", what, result_name(r));
    for (uint32_t i = 0; i < count; ++i)
      std::printf(" %s", words[2 * i + 1] == 1 ? "1" : words[2 * i + 1] == 0 ? "0" : "?");
    std::printf("\n");
    return r;
  };
  uint64_t words[2 * kQueries];

  // Rounds: reset, two timestamps around a fill, the application's copy; the answer must be
  // the copy's bytes, and the second timestamp not before the first.
  uint32_t same = 0;
  for (uint32_t round = 0; round < 20; ++round) {
    vkBeginCommandBuffer(cmd, &begin);
    vkCmdResetQueryPool(cmd, queries, 0, kQueries);
    vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, queries, 0);
    vkCmdFillBuffer(cmd, copy.buffer, 2048, 1024, round);
    vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries, 1);
    vkCmdCopyQueryPoolResults(cmd, queries, 0, 2, copy.buffer, 0, 16, k64 | VK_QUERY_RESULT_WAIT_BIT);
    VkMemoryBarrier host_read{VK_STRUCTURE_TYPE_MEMORY_BARRIER, nullptr, VK_ACCESS_TRANSFER_WRITE_BIT,
                              VK_ACCESS_HOST_READ_BIT};
    vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &host_read, 0, nullptr,
                         0, nullptr);
    vkEndCommandBuffer(cmd);
    if (!submit_and_wait(o.device, queue, cmd, o.fence)) return 1;
    std::fill(words, words + 4, 0);
    const VkResult r = vkGetQueryPoolResults(o.device, queries, 0, 2, 32, words, 16, k64);
    if (r == VK_SUCCESS && std::memcmp(words, copy.words, 32) == 0 && words[2] >= words[0]) ++same;
  }
  std::printf("rounds whose answer is the application's copy: %u of 20\n", same);
  ask("after the rounds", 0, 2, k64, words);
  ask("after the rounds, waiting", 0, 2, k64 | VK_QUERY_RESULT_WAIT_BIT, words);

  // Reset on the host: nothing available any more, whatever the mirror still holds.
  reset_pool(o.device, queries, 0, kQueries);
  ask("reset on the host", 0, 2, k64, words);

  // Written again, then reset by a command buffer that writes nothing.
  vkBeginCommandBuffer(cmd, &begin);
  vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries, 0);
  vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries, 1);
  vkEndCommandBuffer(cmd);
  if (!submit_and_wait(o.device, queue, cmd, o.fence)) return 1;
  ask("written again", 0, 2, k64, words);
  vkBeginCommandBuffer(cmd, &begin);
  vkCmdResetQueryPool(cmd, queries, 0, kQueries);
  vkEndCommandBuffer(cmd);
  if (!submit_and_wait(o.device, queue, cmd, o.fence)) return 1;
  ask("reset in a command buffer", 0, 2, k64, words);

  // Written, then reset and one of them written again in the same command buffer.
  vkBeginCommandBuffer(cmd, &begin);
  vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries, 0);
  vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries, 1);
  vkCmdResetQueryPool(cmd, queries, 0, 2);
  vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries, 1);
  vkEndCommandBuffer(cmd);
  if (!submit_and_wait(o.device, queue, cmd, o.fence)) return 1;
  ask("written, reset, one written again", 0, 2, k64, words);

  // Written by a secondary command buffer.
  reset_pool(o.device, queries, 0, kQueries);
  VkCommandBufferInheritanceInfo inheritance{VK_STRUCTURE_TYPE_COMMAND_BUFFER_INHERITANCE_INFO};
  const VkCommandBufferBeginInfo begin_secondary{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, nullptr, 0, &inheritance};
  vkBeginCommandBuffer(secondary, &begin_secondary);
  vkCmdWriteTimestamp(secondary, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries, 2);
  vkEndCommandBuffer(secondary);
  vkBeginCommandBuffer(cmd, &begin);
  vkCmdExecuteCommands(cmd, 1, &secondary);
  vkEndCommandBuffer(cmd);
  if (!submit_and_wait(o.device, queue, cmd, o.fence)) return 1;
  ask("written in a secondary", 2, 2, k64, words);

  // 32-bit results, which the ICD leaves to the driver.
  uint32_t small[2] = {0xabababab, 0xabababab};
  const VkResult r32 =
      vkGetQueryPoolResults(o.device, queries, 2, 1, sizeof small, small, 8, VK_QUERY_RESULT_WITH_AVAILABILITY_BIT);
  std::printf("32-bit: %s, available %u\n", result_name(r32), small[1]);

  // Queries long done, asked again and again.
  vkBeginCommandBuffer(cmd, &begin);
  vkCmdResetQueryPool(cmd, queries, 0, kQueries);
  for (uint32_t q = 0; q < kQueries; ++q) vkCmdWriteTimestamp(cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries, q);
  vkEndCommandBuffer(cmd);
  if (!submit_and_wait(o.device, queue, cmd, o.fence)) return 1;
  std::printf("ready\n");
  std::fflush(stdout);
  char line[16];
  if (!std::fgets(line, sizeof line, stdin)) return 1;
  uint32_t answered = 0;
  for (uint32_t i = 0; i < 200; ++i)
    answered += vkGetQueryPoolResults(o.device, queries, i % kQueries, 1, 16, words, 16,
                                      k64 | (i % 2 ? VK_QUERY_RESULT_WAIT_BIT : 0)) == VK_SUCCESS;
  std::printf("polled: %u of 200 answered\n", answered);
  std::fflush(stdout);
  while (std::fgets(line, sizeof line, stdin)) {
  }  // the session stays while the test reads bypassd's counts
  vkDestroyQueryPool(o.device, queries, nullptr);
  free_block(o.device, copy);
  vkDestroyCommandPool(o.device, pool, nullptr);
  std::printf("query-mirror: %s\n", g_failed ? "failed" : "ok");
  return g_failed ? 1 : 0;
}

// vkGetDeviceProcAddr hands out a command of an extension only to a device that enabled it,
// an alias of a core command included (dEQP-VK's api.version_check.entry_points); core
// commands always. Prints what each name gives on a device without and with the extensions.
int run_proc_addr() {
  Objects o;
  if (!create_instance(o)) return 1;
  const char* names[] = {"vkTrimCommandPool",
                         "vkTrimCommandPoolKHR",
                         "vkCmdPushDescriptorSetKHR",
                         "vkBindBufferMemory2KHR",
                         "vkGetBufferMemoryRequirements2KHR",
                         "vkCreateSwapchainKHR",
                         "vkCmdBeginRenderingKHR",
                         "vkGetMemoryHostPointerPropertiesEXT"};
  for (bool with : {false, true}) {
    std::vector<const char*> extensions;
    if (with)
      extensions = {VK_KHR_MAINTENANCE1_EXTENSION_NAME, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME,
                    VK_KHR_BIND_MEMORY_2_EXTENSION_NAME, VK_KHR_GET_MEMORY_REQUIREMENTS_2_EXTENSION_NAME};
    if (!create_device(o, extensions)) return 1;
    for (const char* n : names)
      std::printf("%s, %s: %s\n", with ? "with the extensions" : "without", n,
                  vkGetDeviceProcAddr(o.device, n) ? "a function" : "NULL");
    vkDestroyDevice(o.device, nullptr);
    o.device = VK_NULL_HANDLE;
  }
  return 0;
}

int run_small_memory() {
  CommandRig rig;
  if (!open_command_rig(rig)) return 1;
  auto& [o, pd, queue, pool, cmd] = rig;
  const VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};

  // Sizes of ffmpeg's frames and small buffers, pages, a 1 MiB block and one past the limit.
  const VkDeviceSize sizes[] = {4096, 23040, 69120, 230400, 1 << 20, (2 << 20) + 4096};
  std::vector<Block> blocks;
  VkDeviceSize total = 0;
  for (uint32_t i = 0; total < (VkDeviceSize{48} << 20); ++i) {
    Block b;
    if (!make_block(o.device, pd, sizes[i % std::size(sizes)], &b)) return 1;
    write_first_half(b, i);
    total += b.size;
    blocks.push_back(b);
  }
  vkBeginCommandBuffer(cmd, &begin);
  for (const Block& b : blocks) copy_halves(cmd, b);
  vkEndCommandBuffer(cmd);
  if (!submit_and_wait(o.device, queue, cmd, o.fence)) return 1;
  for (uint32_t i = 0; i < blocks.size(); ++i) expect(check_both_halves(blocks[i], i), "a block holds its pattern");
  std::printf("blocks: %zu, %llu MiB\n", blocks.size(), static_cast<unsigned long long>(total >> 20));
  print_mappings("peak");
  for (Block& b : blocks) free_block(o.device, b);

  for (uint32_t round = 0; round < 500 && !g_failed; ++round) {
    Block b;
    if (!make_block(o.device, pd, sizes[round % 4], &b)) return 1;
    write_first_half(b, round);
    vkResetCommandBuffer(cmd, 0);
    vkBeginCommandBuffer(cmd, &begin);
    copy_halves(cmd, b);
    vkEndCommandBuffer(cmd);
    if (!submit_and_wait(o.device, queue, cmd, o.fence)) return 1;
    expect(check_both_halves(b, round), "a block of the rounds holds its pattern");
    free_block(o.device, b);
  }
  print_mappings("after rounds");
  vkDestroyCommandPool(o.device, pool, nullptr);
  // A call with an answer: bypassd has run every free before it when the test reads its stats.
  report("vkDeviceWaitIdle", vkDeviceWaitIdle(o.device));
  std::printf("small-memory: %s\n", g_failed ? "failed" : "ok");
  std::fflush(stdout);
  while (std::fgetc(stdin) != EOF) {
  }
  return g_failed ? 1 : 0;
}

// Pipelines the ICD creates without waiting (guest-icd/src/pipelines.cpp) and those it waits for.
// Three rounds, each a compute pipeline of copy_half used in the submission right after its
// creation, the second half of a buffer checked: a plain create (sent without asking), one with
// VkPipelineCreationFeedbackCreateInfo (waited for: the driver fills the feedback in, and it
// must arrive), and one with VK_PIPELINE_CREATE_FAIL_ON_PIPELINE_COMPILE_REQUIRED_BIT (waited
// for: the driver's own result). Prints what a native run prints too.
int run_pipelines() {
  // The device enables what the second and third rounds use (the instance asks for Vulkan 1.1).
  VkPhysicalDevicePipelineCreationCacheControlFeaturesEXT cache_control{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_CREATION_CACHE_CONTROL_FEATURES_EXT};
  cache_control.pipelineCreationCacheControl = VK_TRUE;
  CommandRig rig;
  if (!open_command_rig(
          rig,
          {VK_EXT_PIPELINE_CREATION_FEEDBACK_EXTENSION_NAME, VK_EXT_PIPELINE_CREATION_CACHE_CONTROL_EXTENSION_NAME},
          &cache_control))
    return 1;
  auto& [o, pd, queue, pool, cmd] = rig;
  constexpr uint32_t kHalfWords = 4096;
  Block block;
  if (!make_block(o.device, pd, 2 * kHalfWords * sizeof(uint32_t), &block, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT))
    return 1;
  CopyHalfPipeline copy_half;  // its layout, module and descriptor set; the pipelines are made below
  if (!create_copy_half(o.device, block.buffer, copy_half)) return 1;
  const VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  for (uint32_t round = 0; round < 3 && !g_failed; ++round) {
    VkPipelineCreationFeedback whole{}, stage{};
    VkPipelineCreationFeedbackCreateInfo feedback{VK_STRUCTURE_TYPE_PIPELINE_CREATION_FEEDBACK_CREATE_INFO};
    feedback.pPipelineCreationFeedback = &whole;
    feedback.pipelineStageCreationFeedbackCount = 1;
    feedback.pPipelineStageCreationFeedbacks = &stage;
    VkComputePipelineCreateInfo info{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
    info.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
    info.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    info.stage.module = copy_half.module.get();
    info.stage.pName = "main";
    info.layout = copy_half.layout.get();
    if (round == 1) info.pNext = &feedback;
    if (round == 2) info.flags = VK_PIPELINE_CREATE_FAIL_ON_PIPELINE_COMPILE_REQUIRED_BIT;
    VkPipeline pipeline = VK_NULL_HANDLE;
    const VkResult r = vkCreateComputePipelines(o.device, VK_NULL_HANDLE, 1, &info, nullptr, &pipeline);
    std::printf("round %u: vkCreateComputePipelines %s\n", round, result_name(r));
    if (round == 1)
      std::printf("round 1: feedback %s\n",
                  (whole.flags & VK_PIPELINE_CREATION_FEEDBACK_VALID_BIT) ? "filled in" : "not filled in");
    if (r != VK_SUCCESS) continue;  // VK_PIPELINE_COMPILE_REQUIRED: no pipeline to use
    for (uint32_t w = 0; w < 2 * kHalfWords; ++w) block.words[w] = w < kHalfWords ? pattern(round, w) : 0;
    vkResetCommandBuffer(cmd, 0);
    vkBeginCommandBuffer(cmd, &begin);
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
    vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, copy_half.layout.get(), 0, 1, &copy_half.set, 0,
                            nullptr);
    vkCmdPushConstants(cmd, copy_half.layout.get(), VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(kHalfWords), &kHalfWords);
    vkCmdDispatch(cmd, kHalfWords / 64, 1, 1);
    bypass::samples::record_memory_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                                           VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    vkEndCommandBuffer(cmd);
    if (!submit_and_wait(o.device, queue, cmd, o.fence)) return 1;
    bool same = true;
    for (uint32_t w = 0; w < kHalfWords && same; ++w) same = block.words[kHalfWords + w] == pattern(round, w);
    std::printf("round %u: copy %s\n", round, same ? "right" : "wrong");
    expect(same, "the pipeline copies the first half over the second");
    vkDestroyPipeline(o.device, pipeline, nullptr);
  }
  free_block(o.device, block);
  vkDestroyCommandPool(o.device, pool, nullptr);
  std::printf("pipelines: %s\n", g_failed ? "failed" : "ok");
  return g_failed ? 1 : 0;
}

// Shadow memory's reads after waits (run with BYPASS_MEMORY=shadow; natively it is the same
// program): a mapped staging buffer the device only reads (TRANSFER_SRC), a mapped buffer it
// writes, and 32 MiB it writes that the program never maps. Each round writes the staging
// buffer, copies it into the other two, waits for the fence and checks the written buffer.
int run_shadow_reads() {
  CommandRig rig;
  if (!open_command_rig(rig)) return 1;
  auto& [o, pd, queue, pool, cmd] = rig;
  constexpr VkDeviceSize kSize = 1 << 20;
  Block staging, written, unmapped;
  if (!make_block(o.device, pd, kSize, &staging, VK_BUFFER_USAGE_TRANSFER_SRC_BIT) ||
      !make_block(o.device, pd, kSize, &written,
                  VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT) ||
      !make_block(o.device, pd, VkDeviceSize{32} << 20, &unmapped, VK_BUFFER_USAGE_TRANSFER_DST_BIT, false))
    return 1;
  constexpr uint32_t kRounds = 5;
  const VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  for (uint32_t round = 0; round < kRounds && !g_failed; ++round) {
    for (size_t w = 0; w < kSize / sizeof(uint32_t); ++w) staging.words[w] = pattern(round, w);
    vkResetCommandBuffer(cmd, 0);
    vkBeginCommandBuffer(cmd, &begin);
    const VkBufferCopy region{0, 0, kSize};
    vkCmdCopyBuffer(cmd, staging.buffer, written.buffer, 1, &region);
    vkCmdCopyBuffer(cmd, staging.buffer, unmapped.buffer, 1, &region);
    bypass::samples::record_memory_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                                           VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
    vkEndCommandBuffer(cmd);
    if (!submit_and_wait(o.device, queue, cmd, o.fence)) return 1;
    bool same = true;
    for (size_t w = 0; w < kSize / sizeof(uint32_t) && same; ++w) same = written.words[w] == pattern(round, w);
    expect(same, "after the wait the written buffer holds the round's pattern");
  }
  std::printf("waits: %u\n", kRounds);
  for (Block* b : {&staging, &written, &unmapped}) free_block(o.device, *b);
  vkDestroyCommandPool(o.device, pool, nullptr);
  std::printf("shadow-reads: %s\n", g_failed ? "failed" : "ok");
  return g_failed ? 1 : 0;
}

int run_feedback_polls() {
  FenceRig g;
  if (!make_rig(g)) return 1;
  poll_rounds(g, 2000);
  std::printf("feedback-polls: %s\n", g_failed ? "failed" : "ok");
  return g_failed ? 1 : 0;
}

int run_feedback() {
  FenceRig g;
  if (!make_rig(g)) return 1;
  held_rounds(g);
  fill_rounds(g, 200);
  std::printf("feedback: %s\n", g_failed ? "failed" : "ok");
  return g_failed ? 1 : 0;
}

int run_timeline_waits() {
  FenceRig g;
  if (!make_rig(g)) return 1;
  timeline_rounds(g, 400);
  std::printf("timeline-waits: %s\n", g_failed ? "failed" : "ok");
  return g_failed ? 1 : 0;
}

int run_feedback_wait() {
  FenceRig g;
  if (!make_rig(g)) return 1;
  if (!submit_held(g, g.o.fence)) return 1;
  std::printf("waiting\n");
  std::fflush(stdout);
  VkResult r = vkWaitForFences(g.o.device, 1, &g.o.fence, VK_TRUE, UINT64_MAX);
  report("vkWaitForFences", r);
  report("vkDeviceWaitIdle", vkDeviceWaitIdle(g.o.device));
  g.lost = r == VK_ERROR_DEVICE_LOST;
  if (g.lost) g.gate = VK_NULL_HANDLE;
  return r == VK_SUCCESS ? 0 : 1;
}

// The session region as this process maps it: the ICD's mapping of bypassd's memfd.
std::byte* find_session_region() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("bypass-session") == std::string::npos) continue;
    return reinterpret_cast<std::byte*>(std::strtoull(line.c_str(), nullptr, 16));
  }
  return nullptr;
}

int run_feedback_scribble() {
  FenceRig g;
  if (!make_rig(g)) return 1;
  fill_rounds(g, 20);
  std::byte* region = find_session_region();
  expect(region != nullptr, "the session region is mapped");
  if (!region) return 1;
  // transport::layout: the control page at 4096, the feedback block 1024 bytes into it.
  std::byte* block = region + 4096 + 1024;
  // Every word: sequence, stop flag, sleepers, slots. Slots far ahead make every answer unsure.
  std::memset(block, 0xff, 4096 - 1024);
  fill_rounds(g, 50);
  held_rounds(g);
  // Slots set back to 0: published serials bypassd does not write again.
  std::memset(block, 0, 4096 - 1024);
  fill_rounds(g, 300);
  held_rounds(g);
  std::printf("feedback-scribble: %s\n", g_failed ? "failed" : "ok");
  return g_failed ? 1 : 0;
}

}  // namespace

// ---------------------------------------------------------------- debug-messengers
struct Counts {
  int utils = 0;
  int report = 0;
};

VKAPI_ATTR VkBool32 VKAPI_CALL count_utils(VkDebugUtilsMessageSeverityFlagBitsEXT, VkDebugUtilsMessageTypeFlagsEXT,
                                           const VkDebugUtilsMessengerCallbackDataEXT* data, void* user) {
  // Only the probe's own messages count: a layer or the loader may add its own.
  if (data && data->pMessageIdName && std::string(data->pMessageIdName) == "bypass-probe")
    ++static_cast<Counts*>(user)->utils;
  return VK_FALSE;
}

VKAPI_ATTR VkBool32 VKAPI_CALL count_report(VkDebugReportFlagsEXT, VkDebugReportObjectTypeEXT, uint64_t, size_t,
                                            int32_t, const char* prefix, const char*, void* user) {
  if (prefix && std::string(prefix) == "bypass-probe") ++static_cast<Counts*>(user)->report;
  return VK_FALSE;
}

int run_debug_messengers() {
  const char* extensions[] = {VK_EXT_DEBUG_UTILS_EXTENSION_NAME, VK_EXT_DEBUG_REPORT_EXTENSION_NAME};
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "bypass-probe";
  app.apiVersion = VK_API_VERSION_1_1;
  VkInstanceCreateInfo info{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  info.pApplicationInfo = &app;
  info.enabledExtensionCount = 2;
  info.ppEnabledExtensionNames = extensions;
  VkInstance inst[2] = {};
  Counts counts[2];
  VkDebugUtilsMessengerEXT messenger[2] = {};
  VkDebugReportCallbackEXT callback[2] = {};
  for (int i = 0; i < 2; ++i) {
    if (!report("vkCreateInstance", vkCreateInstance(&info, nullptr, &inst[i]))) return 1;
    auto create_messenger = reinterpret_cast<PFN_vkCreateDebugUtilsMessengerEXT>(
        vkGetInstanceProcAddr(inst[i], "vkCreateDebugUtilsMessengerEXT"));
    auto create_report = reinterpret_cast<PFN_vkCreateDebugReportCallbackEXT>(
        vkGetInstanceProcAddr(inst[i], "vkCreateDebugReportCallbackEXT"));
    VkDebugUtilsMessengerCreateInfoEXT mi{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
    mi.messageSeverity =
        VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
    mi.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT;
    mi.pfnUserCallback = count_utils;
    mi.pUserData = &counts[i];
    VkDebugReportCallbackCreateInfoEXT ri{VK_STRUCTURE_TYPE_DEBUG_REPORT_CALLBACK_CREATE_INFO_EXT};
    ri.flags = VK_DEBUG_REPORT_ERROR_BIT_EXT;
    ri.pfnCallback = count_report;
    ri.pUserData = &counts[i];
    if (!create_messenger || !create_report ||
        !report("vkCreateDebugUtilsMessengerEXT", create_messenger(inst[i], &mi, nullptr, &messenger[i])) ||
        !report("vkCreateDebugReportCallbackEXT", create_report(inst[i], &ri, nullptr, &callback[i])))
      return 1;
  }
  auto submit = [&](int i, VkDebugUtilsMessageSeverityFlagBitsEXT severity) {
    auto fn = reinterpret_cast<PFN_vkSubmitDebugUtilsMessageEXT>(
        vkGetInstanceProcAddr(inst[i], "vkSubmitDebugUtilsMessageEXT"));
    VkDebugUtilsMessengerCallbackDataEXT data{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CALLBACK_DATA_EXT};
    data.pMessageIdName = "bypass-probe";
    data.pMessage = "hello";
    fn(inst[i], severity, VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT, &data);
  };
  auto report_message = [&](int i, VkDebugReportFlagsEXT flags) {
    auto fn = reinterpret_cast<PFN_vkDebugReportMessageEXT>(vkGetInstanceProcAddr(inst[i], "vkDebugReportMessageEXT"));
    fn(inst[i], flags, VK_DEBUG_REPORT_OBJECT_TYPE_UNKNOWN_EXT, 0, 0, 7, "bypass-probe", "hello");
  };
  auto print = [&](const char* step) {
    std::printf("%s: A utils=%d report=%d, B utils=%d report=%d\n", step, counts[0].utils, counts[0].report,
                counts[1].utils, counts[1].report);
  };
  submit(0, VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT);
  print("warning on A");
  submit(1, VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT);
  print("error on B");
  submit(0, VK_DEBUG_UTILS_MESSAGE_SEVERITY_VERBOSE_BIT_EXT);
  print("verbose on A (filtered)");
  report_message(1, VK_DEBUG_REPORT_ERROR_BIT_EXT);
  print("report error on B");
  report_message(0, VK_DEBUG_REPORT_INFORMATION_BIT_EXT);
  print("report information on A (filtered)");
  auto destroy_callbacks = [&](int i) {
    reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
        vkGetInstanceProcAddr(inst[i], "vkDestroyDebugUtilsMessengerEXT"))(inst[i], messenger[i], nullptr);
    reinterpret_cast<PFN_vkDestroyDebugReportCallbackEXT>(
        vkGetInstanceProcAddr(inst[i], "vkDestroyDebugReportCallbackEXT"))(inst[i], callback[i], nullptr);
  };
  destroy_callbacks(0);
  submit(0, VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT);
  report_message(0, VK_DEBUG_REPORT_ERROR_BIT_EXT);
  print("A's callbacks destroyed, error on A");
  destroy_callbacks(1);
  for (VkInstance i : inst) vkDestroyInstance(i, nullptr);
  return 0;
}

// Vulkan from an exit handler, as GL through zink does (waffle, piglit): by then the thread's
// thread_local objects are destroyed, and the ICD's per-thread buffers must still work. Records
// of every kind (fixed-layout with arrays, tables, a call with a reply) and the teardown run in
// the handler; the process must exit 0, with no heap corruption reported by glibc.
Objects* g_exit_objects = nullptr;
VkCommandPool g_exit_pool = VK_NULL_HANDLE;
VkCommandBuffer g_exit_cmd = VK_NULL_HANDLE;

void exit_handler_calls() {
  Objects& o = *g_exit_objects;
  for (int round = 0; round < 50; ++round) {
    VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    vkResetCommandBuffer(g_exit_cmd, 0);
    vkBeginCommandBuffer(g_exit_cmd, &begin);
    const VkRect2D scissors[4] = {};
    vkCmdSetScissor(g_exit_cmd, 0, 1 + round % 4, scissors);  // fixed-layout, with an array
    const float blend[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    vkCmdSetBlendConstants(g_exit_cmd, blend);
    vkEndCommandBuffer(g_exit_cmd);
    vkResetFences(o.device, 1, &o.fence);  // fixed-layout, a handle array
    VkFenceCreateInfo info{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence extra = VK_NULL_HANDLE;
    vkCreateFence(o.device, &info, nullptr, &extra);  // a table
    vkGetFenceStatus(o.device, extra);                // a reply
    vkDestroyFence(o.device, extra, nullptr);
  }
  vkFreeCommandBuffers(o.device, g_exit_pool, 1, &g_exit_cmd);
  vkDestroyCommandPool(o.device, g_exit_pool, nullptr);
  delete g_exit_objects;  // fence, device, instance
  std::printf("exit handler: Vulkan calls done\n");
  std::fflush(stdout);
}

int run_exit_handler() {
  g_exit_objects = new Objects;
  Objects& o = *g_exit_objects;
  if (!create_instance(o) || !create_device(o)) return 1;
  VkFenceCreateInfo info{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  if (!report("vkCreateFence", vkCreateFence(o.device, &info, nullptr, &o.fence))) return 1;
  if (!create_command_buffer(o, &g_exit_pool, &g_exit_cmd)) return 1;
  // Touch the per-thread buffers now, so that thread exit has something to destroy.
  VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  vkBeginCommandBuffer(g_exit_cmd, &begin);
  const VkRect2D scissor{};
  vkCmdSetScissor(g_exit_cmd, 0, 1, &scissor);
  vkEndCommandBuffer(g_exit_cmd);
  report("vkGetFenceStatus", vkGetFenceStatus(o.device, o.fence) == VK_NOT_READY ? VK_SUCCESS : VK_ERROR_UNKNOWN);
  std::atexit(exit_handler_calls);
  std::exit(0);
}

int main(int argc, char** argv) {
  const std::string mode = argc >= 2 ? argv[1] : "";
  if (mode == "icd-create-instance" && argc == 3) return run_icd_create_instance(argv[2]);
  if (mode == "create-instance") return run_create_instance();
  if (mode == "wait-fence") return run_wait_fence();
  if (mode == "hold") return run_hold();
  if (mode == "fill-memory" && argc == 3) return run_fill_memory(std::strtoull(argv[2], nullptr, 10));
  if (mode == "record-bomb") return run_record_bomb(argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 20);
  if (mode == "free-in-flight") return run_free_in_flight();
  if (mode == "debug-messengers") return run_debug_messengers();
  if (mode == "feedback") return run_feedback();
  if (mode == "exit-handler") return run_exit_handler();
  if (mode == "feedback-wait") return run_feedback_wait();
  if (mode == "feedback-scribble") return run_feedback_scribble();
  if (mode == "feedback-polls") return run_feedback_polls();
  if (mode == "timeline-waits") return run_timeline_waits();
  if (mode == "repeat-queries") return run_repeat_queries();
  if (mode == "memory-requirements") return run_memory_requirements();
  if (mode == "small-memory") return run_small_memory();
  if (mode == "shadow-reads") return run_shadow_reads();
  if (mode == "pipelines") return run_pipelines();
  if (mode == "host-pointer") return run_host_pointer();
  if (mode == "query-mirror") return run_query_mirror();
  if (mode == "proc-addr") return run_proc_addr();
  if (mode == "query-not-ready") return run_query_not_ready();
  std::fprintf(stderr,
               "usage: %s create-instance|wait-fence|hold|fill-memory MIB|record-bomb "
               "[MILLIONS]|free-in-flight|debug-messengers|feedback|feedback-wait|feedback-scribble|feedback-polls|"
               "timeline-waits|repeat-queries|memory-requirements|small-memory|shadow-reads|"
               "icd-create-instance LIB\n",
               argv[0]);
  return 2;
}
