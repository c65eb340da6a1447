#include "context.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "vk_check.h"

namespace bypass::samples {
namespace {

constexpr const char* kValidationLayer = "VK_LAYER_KHRONOS_validation";
// Long enough for the slowest sample under validation on a loaded 2-core machine; short
// enough that a host that stopped answering reads as an error, not a hang.
constexpr uint64_t kFenceTimeoutNs = 60ull * 1000 * 1000 * 1000;

// Incremented by the messenger callback, which the layer may call from any thread that makes
// a Vulkan call; read by sample_main after every such thread has been joined and the instance
// destroyed, so relaxed ordering suffices (the joins order the accesses).
std::atomic<uint32_t> g_validation_errors{0};

const char* validation_env() {
  const char* v = std::getenv("BYPASS_SAMPLE_VALIDATION");
  return v == nullptr ? "" : v;
}

VKAPI_ATTR VkBool32 VKAPI_CALL on_debug_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                VkDebugUtilsMessageTypeFlagsEXT /*types*/,
                                                const VkDebugUtilsMessengerCallbackDataEXT* data, void* /*user*/) {
  const char* message = data != nullptr && data->pMessage != nullptr ? data->pMessage : "";
  if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
    g_validation_errors.fetch_add(1, std::memory_order_relaxed);
    std::fprintf(stderr, "validation error: %s\n", message);
  } else if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) {
    std::fprintf(stderr, "validation warning: %s\n", message);
  }
  return VK_FALSE;  // never abort the call: the count decides the exit status
}

VkDebugUtilsMessengerCreateInfoEXT messenger_info() {
  VkDebugUtilsMessengerCreateInfoEXT info{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
  info.messageSeverity =
      VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
  info.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
  info.pfnUserCallback = on_debug_message;
  return info;
}

bool has_layer(const char* name) {
  uint32_t count = 0;
  vk_check(vkEnumerateInstanceLayerProperties(&count, nullptr), "vkEnumerateInstanceLayerProperties");
  std::vector<VkLayerProperties> layers(count);
  vk_check(vkEnumerateInstanceLayerProperties(&count, layers.data()), "vkEnumerateInstanceLayerProperties");
  for (const auto& l : layers) {
    if (std::strcmp(l.layerName, name) == 0) return true;
  }
  return false;
}

bool has_instance_extension(const char* layer, const char* name) {
  uint32_t count = 0;
  vk_check(vkEnumerateInstanceExtensionProperties(layer, &count, nullptr), "vkEnumerateInstanceExtensionProperties");
  std::vector<VkExtensionProperties> extensions(count);
  vk_check(vkEnumerateInstanceExtensionProperties(layer, &count, extensions.data()),
           "vkEnumerateInstanceExtensionProperties");
  for (const auto& e : extensions) {
    if (std::strcmp(e.extensionName, name) == 0) return true;
  }
  return false;
}

bool has_device_extension(VkPhysicalDevice pd, const char* name) {
  uint32_t count = 0;
  vk_check(vkEnumerateDeviceExtensionProperties(pd, nullptr, &count, nullptr), "vkEnumerateDeviceExtensionProperties");
  std::vector<VkExtensionProperties> extensions(count);
  vk_check(vkEnumerateDeviceExtensionProperties(pd, nullptr, &count, extensions.data()),
           "vkEnumerateDeviceExtensionProperties");
  for (const auto& e : extensions) {
    if (std::strcmp(e.extensionName, name) == 0) return true;
  }
  return false;
}

std::string version_string(uint32_t v) {
  return std::to_string(VK_API_VERSION_MAJOR(v)) + "." + std::to_string(VK_API_VERSION_MINOR(v)) + "." +
         std::to_string(VK_API_VERSION_PATCH(v));
}

}  // namespace

uint32_t validation_error_count() { return g_validation_errors.load(std::memory_order_relaxed); }

bool validation_requested() {
  std::string v = validation_env();
  return v == "1" || v == "sync";
}

Context::Context(const ContextOptions& options) {
  try {
    create_instance(options);
    pick_physical_device(options);
    create_device(options);
  } catch (...) {
    // The destructor does not run for a half-made object: release what was made.
    if (device_ != VK_NULL_HANDLE) vkDestroyDevice(device_, nullptr);
    if (messenger_ != VK_NULL_HANDLE) {
      auto destroy = reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
          vkGetInstanceProcAddr(instance_, "vkDestroyDebugUtilsMessengerEXT"));
      if (destroy != nullptr) destroy(instance_, messenger_, nullptr);
    }
    if (instance_ != VK_NULL_HANDLE) vkDestroyInstance(instance_, nullptr);
    throw;
  }
}

Context::~Context() {
  if (device_ != VK_NULL_HANDLE) vkDeviceWaitIdle(device_);
  if (device_ != VK_NULL_HANDLE) vkDestroyDevice(device_, nullptr);
  if (messenger_ != VK_NULL_HANDLE) {
    auto destroy = reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
        vkGetInstanceProcAddr(instance_, "vkDestroyDebugUtilsMessengerEXT"));
    if (destroy != nullptr) destroy(instance_, messenger_, nullptr);
  }
  if (instance_ != VK_NULL_HANDLE) vkDestroyInstance(instance_, nullptr);
}

void Context::create_instance(const ContextOptions& options) {
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = options.app_name;
  app.applicationVersion = 1;
  app.pEngineName = "bypass-samples";
  app.engineVersion = 1;
  // The highest version the samples are written against; the device may report less.
  app.apiVersion = VK_API_VERSION_1_3;

  std::vector<const char*> layers;
  std::vector<const char*> extensions;
  VkDebugUtilsMessengerCreateInfoEXT debug_info = messenger_info();
  VkValidationFeatureEnableEXT sync_enable = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
  VkValidationFeaturesEXT features{VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT};
  const void* chain = nullptr;

  const bool validation = validation_requested();
  if (validation) {
    if (!has_layer(kValidationLayer)) {
      throw std::runtime_error(std::string("BYPASS_SAMPLE_VALIDATION is set but ") + kValidationLayer +
                               " is not installed");
    }
    layers.push_back(kValidationLayer);
    // The layer implements VK_EXT_debug_utils itself, so the driver need not.
    if (!has_instance_extension(nullptr, VK_EXT_DEBUG_UTILS_EXTENSION_NAME) &&
        !has_instance_extension(kValidationLayer, VK_EXT_DEBUG_UTILS_EXTENSION_NAME)) {
      throw std::runtime_error("VK_EXT_debug_utils is not available for validation messages");
    }
    extensions.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    // Chained into the instance info, the messenger also sees instance create/destroy.
    chain = &debug_info;
    if (std::string(validation_env()) == "sync" &&
        has_instance_extension(kValidationLayer, VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME)) {
      extensions.push_back(VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME);
      features.enabledValidationFeatureCount = 1;
      features.pEnabledValidationFeatures = &sync_enable;
      features.pNext = &debug_info;
      chain = &features;
    }
  }

  VkInstanceCreateInfo info{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  info.pNext = chain;
  info.pApplicationInfo = &app;
  info.enabledLayerCount = static_cast<uint32_t>(layers.size());
  info.ppEnabledLayerNames = layers.data();
  info.enabledExtensionCount = static_cast<uint32_t>(extensions.size());
  info.ppEnabledExtensionNames = extensions.data();
  vk_check(vkCreateInstance(&info, nullptr, &instance_), "vkCreateInstance");

  if (validation) {
    auto create = reinterpret_cast<PFN_vkCreateDebugUtilsMessengerEXT>(
        vkGetInstanceProcAddr(instance_, "vkCreateDebugUtilsMessengerEXT"));
    if (create == nullptr) throw std::runtime_error("vkCreateDebugUtilsMessengerEXT not found");
    vk_check(create(instance_, &debug_info, nullptr, &messenger_), "vkCreateDebugUtilsMessengerEXT");
  }
}

void Context::pick_physical_device(const ContextOptions& options) {
  uint32_t count = 0;
  vk_check(vkEnumeratePhysicalDevices(instance_, &count, nullptr), "vkEnumeratePhysicalDevices");
  std::vector<VkPhysicalDevice> devices(count);
  vk_check(vkEnumeratePhysicalDevices(instance_, &count, devices.data()), "vkEnumeratePhysicalDevices");
  if (count == 0) throw std::runtime_error("no Vulkan physical device found");

  std::string rejected;
  for (VkPhysicalDevice pd : devices) {
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(pd, &props);
    if (props.apiVersion < options.min_api_version) {
      rejected += std::string(" ") + props.deviceName + " (Vulkan " + version_string(props.apiVersion) + ");";
      continue;
    }
    std::string missing;
    for (const char* ext : options.device_extensions)
      if (!has_device_extension(pd, ext)) missing += std::string(missing.empty() ? "" : ", ") + ext;
    if (!missing.empty()) {
      rejected += std::string(" ") + props.deviceName + " (no " + missing + ");";
      continue;
    }
    uint32_t family_count = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &family_count, nullptr);
    std::vector<VkQueueFamilyProperties> families(family_count);
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &family_count, families.data());
    for (uint32_t i = 0; i < family_count; ++i) {
      const VkQueueFlags want = VK_QUEUE_GRAPHICS_BIT | VK_QUEUE_COMPUTE_BIT;
      if ((families[i].queueFlags & want) == want && families[i].queueCount > 0) {
        physical_device_ = pd;
        queue_family_ = i;
        properties_ = props;
        vkGetPhysicalDeviceMemoryProperties(pd, &memory_properties_);
        return;
      }
    }
    rejected += std::string(" ") + props.deviceName + " (no graphics+compute queue);";
  }
  throw std::runtime_error("no suitable Vulkan device (need Vulkan " + version_string(options.min_api_version) +
                           " and a graphics+compute queue):" + rejected);
}

void Context::create_device(const ContextOptions& options) {
  const float priority = 1.0f;
  VkDeviceQueueCreateInfo queue_info{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  queue_info.queueFamilyIndex = queue_family_;
  queue_info.queueCount = 1;
  queue_info.pQueuePriorities = &priority;

  VkPhysicalDeviceVulkan13Features enable13{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES};
  const bool want13 = options.dynamic_rendering || options.synchronization2;
  if (want13) {
    if (options.min_api_version < VK_API_VERSION_1_3) {
      throw std::logic_error("Vulkan 1.3 features need min_api_version 1.3");
    }
    VkPhysicalDeviceVulkan13Features supported{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES};
    VkPhysicalDeviceFeatures2 features2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
    features2.pNext = &supported;
    vkGetPhysicalDeviceFeatures2(physical_device_, &features2);
    if (options.dynamic_rendering && !supported.dynamicRendering) {
      throw std::runtime_error(std::string(properties_.deviceName) + " lacks the Vulkan 1.3 feature dynamicRendering");
    }
    if (options.synchronization2 && !supported.synchronization2) {
      throw std::runtime_error(std::string(properties_.deviceName) + " lacks the Vulkan 1.3 feature synchronization2");
    }
    enable13.dynamicRendering = options.dynamic_rendering ? VK_TRUE : VK_FALSE;
    enable13.synchronization2 = options.synchronization2 ? VK_TRUE : VK_FALSE;
  }

  VkPhysicalDeviceVulkan12Features enable12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  const bool want12 = options.timeline_semaphore || options.host_query_reset;
  if (want12) {
    if (options.min_api_version < VK_API_VERSION_1_2) {
      throw std::logic_error("Vulkan 1.2 features need min_api_version 1.2");
    }
    VkPhysicalDeviceVulkan12Features supported{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceFeatures2 features2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
    features2.pNext = &supported;
    vkGetPhysicalDeviceFeatures2(physical_device_, &features2);
    if ((options.timeline_semaphore && !supported.timelineSemaphore) ||
        (options.host_query_reset && !supported.hostQueryReset)) {
      throw std::runtime_error(std::string(properties_.deviceName) + " lacks a required Vulkan 1.2 feature");
    }
    enable12.timelineSemaphore = options.timeline_semaphore ? VK_TRUE : VK_FALSE;
    enable12.hostQueryReset = options.host_query_reset ? VK_TRUE : VK_FALSE;
    enable12.pNext = want13 ? &enable13 : nullptr;
  }

  VkDeviceCreateInfo info{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  info.pNext = want12 ? static_cast<void*>(&enable12) : want13 ? static_cast<void*>(&enable13) : nullptr;
  info.queueCreateInfoCount = 1;
  info.pQueueCreateInfos = &queue_info;
  info.enabledExtensionCount = static_cast<uint32_t>(options.device_extensions.size());
  info.ppEnabledExtensionNames = options.device_extensions.data();
  vk_check(vkCreateDevice(physical_device_, &info, nullptr, &device_), "vkCreateDevice");
  vkGetDeviceQueue(device_, queue_family_, 0, &queue_);
}

uint32_t Context::find_memory_type(uint32_t type_bits, VkMemoryPropertyFlags required,
                                   VkMemoryPropertyFlags preferred) const {
  for (VkMemoryPropertyFlags want : {required | preferred, required}) {
    for (uint32_t i = 0; i < memory_properties_.memoryTypeCount; ++i) {
      if ((type_bits & (1u << i)) != 0 && (memory_properties_.memoryTypes[i].propertyFlags & want) == want) {
        return i;
      }
    }
  }
  throw std::runtime_error("no memory type with property flags " + std::to_string(required) +
                           " among allowed type bits " + std::to_string(type_bits));
}

void Context::require_format_features(VkFormat format, VkFormatFeatureFlags features) const {
  VkFormatProperties props;
  vkGetPhysicalDeviceFormatProperties(physical_device_, format, &props);
  if ((props.optimalTilingFeatures & features) != features) {
    throw std::runtime_error("format " + std::to_string(format) + " lacks optimal-tiling features " +
                             std::to_string(features) + " (has " + std::to_string(props.optimalTilingFeatures) + ")");
  }
}

void Context::submit_and_wait(const VkSubmitInfo& submit, VkFence fence) const {
  UniqueFence own;
  if (fence == VK_NULL_HANDLE) {
    VkFenceCreateInfo info{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    vk_check(vkCreateFence(device_, &info, nullptr, own.put(device_)), "vkCreateFence");
    fence = own.get();
  }
  vk_check(vkQueueSubmit(queue_, 1, &submit, fence), "vkQueueSubmit");
  wait_fence(fence);
  // Leave a caller's fence unsignaled, ready for its next submit.
  if (own.get() == VK_NULL_HANDLE) vk_check(vkResetFences(device_, 1, &fence), "vkResetFences");
}

void Context::wait_fence(VkFence fence) const {
  VkResult r = vkWaitForFences(device_, 1, &fence, VK_TRUE, kFenceTimeoutNs);
  if (r == VK_TIMEOUT) {
    // Leaving with work in flight would make the destructors race the GPU: wait it out.
    vkDeviceWaitIdle(device_);
    throw std::runtime_error("GPU work did not finish within 60 s");
  }
  vk_check(r, "vkWaitForFences");
}

}  // namespace bypass::samples
