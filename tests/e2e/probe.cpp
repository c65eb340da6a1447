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

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

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

bool create_device(Objects& o) {
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
  VkDeviceCreateInfo info{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  info.queueCreateInfoCount = 1;
  info.pQueueCreateInfos = &queue;
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

int run_free_in_flight() {
  Objects o;
  if (!create_instance(o) || !create_device(o)) return 1;
  uint32_t n = 1;
  VkPhysicalDevice pd;
  vkEnumeratePhysicalDevices(o.instance, &n, &pd);
  VkQueue queue;
  vkGetDeviceQueue(o.device, 0, 0, &queue);
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
  std::fprintf(stderr,
               "usage: %s create-instance|wait-fence|hold|fill-memory MIB|record-bomb "
               "[MILLIONS]|free-in-flight|debug-messengers|icd-create-instance LIB\n",
               argv[0]);
  return 2;
}
