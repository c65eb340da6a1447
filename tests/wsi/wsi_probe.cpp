// wsi_probe: a small X11 Vulkan program for the presentation tests. It links only the Vulkan
// loader, libxcb and libX11, so the environment decides whether it runs natively (lavapipe's
// own WSI) or through the bypass ICD; the tests run both and compare.
//
//   wsi_probe caps                 surface capabilities, formats, present modes and present
//                                  support of a 320x240 window, one canonical line each
//   wsi_probe present [--mode M] [--frames N] [--xlib]
//                                  N frames, each cleared to its own color, acquire and present
//                                  with semaphores and a fence per frame; then the window's
//                                  pixels must be the last frame's color everywhere. Also
//                                  checks acquire with timeout 0 / 1 ms when every image is
//                                  acquired (NOT_READY / TIMEOUT) and an acquire fence.
//   wsi_probe resize               presents, resizes the window, presents until acquire or
//                                  present reports it, recreates the swapchain (oldSwapchain)
//                                  at the new size and checks the new size's pixels
//   wsi_probe destroy-window       destroys the window under a live swapchain; acquire and
//                                  present must return an error, never crash
//   wsi_probe loop [--seconds S]   presents until killed (or S seconds), printing "frame K"
//   wsi_probe headless [--frames N] VK_EXT_headless_surface: N presents without a window
//   wsi_probe private-data         private data (Vulkan 1.3) on a headless swapchain, its surface
//                                  and the device; a swapchain made after the first was destroyed
//                                  starts at zero
//   wsi_probe send-escape NAME     sends an Escape key press to the top-level window NAME
//                                  (glxgears quits on it)
//
// Output: "key: value" lines, flushed at once. Exit status 0 when every check held, 1 when
// one failed (the line starting with "FAIL" says which), 2 on bad arguments.
#include <X11/Xlib-xcb.h>
#include <X11/Xlib.h>
#include <xcb/xcb.h>

#define VK_USE_PLATFORM_XCB_KHR
#define VK_USE_PLATFORM_XLIB_KHR
#include <vulkan/vulkan.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#undef None
#undef Status
#undef Bool

namespace {

using Clock = std::chrono::steady_clock;

const char* result_name(VkResult r) {
  switch (r) {
    // clang-format off
#define R(x) \
  case x:    \
    return #x;
    R(VK_SUCCESS) R(VK_NOT_READY) R(VK_TIMEOUT) R(VK_INCOMPLETE) R(VK_SUBOPTIMAL_KHR) R(VK_ERROR_OUT_OF_DATE_KHR)
    R(VK_ERROR_SURFACE_LOST_KHR) R(VK_ERROR_DEVICE_LOST) R(VK_ERROR_OUT_OF_HOST_MEMORY)
    R(VK_ERROR_OUT_OF_DEVICE_MEMORY) R(VK_ERROR_INITIALIZATION_FAILED) R(VK_ERROR_EXTENSION_NOT_PRESENT)
    R(VK_ERROR_NATIVE_WINDOW_IN_USE_KHR) R(VK_ERROR_UNKNOWN)
#undef R
    default:
      return "VkResult(other)";
  }
  // clang-format on
}

int g_failures = 0;

void fail(const std::string& what) {
  std::printf("FAIL: %s\n", what.c_str());
  std::fflush(stdout);
  ++g_failures;
}

void line(const char* key, const std::string& value) {
  std::printf("%s: %s\n", key, value.c_str());
  std::fflush(stdout);
}

#define CHECK_VK(expr)                                     \
  do {                                                     \
    const VkResult r_ = (expr);                            \
    if (r_ != VK_SUCCESS) {                                \
      fail(std::string(#expr) + " -> " + result_name(r_)); \
      std::exit(1);                                        \
    }                                                      \
  } while (0)

struct Args {
  std::string command;
  std::string mode = "fifo";
  std::string name;
  int frames = 60;
  double seconds = 0;
  bool xlib = false;
};

VkPresentModeKHR mode_of(const std::string& m) {
  if (m == "immediate") return VK_PRESENT_MODE_IMMEDIATE_KHR;
  if (m == "mailbox") return VK_PRESENT_MODE_MAILBOX_KHR;
  if (m == "fifo_relaxed") return VK_PRESENT_MODE_FIFO_RELAXED_KHR;
  return VK_PRESENT_MODE_FIFO_KHR;
}

// The color frame k is cleared to: exact in UNORM, different for neighbouring frames.
void frame_color(uint32_t k, uint8_t rgb[3]) {
  rgb[0] = static_cast<uint8_t>((k * 53 + 17) % 256);
  rgb[1] = static_cast<uint8_t>((k * 97 + 41) % 256);
  rgb[2] = static_cast<uint8_t>((k * 29 + 101) % 256);
}

// ---------------------------------------------------------------- the window
struct Window {
  Display* dpy = nullptr;  // --xlib: the surface is made from this Display
  xcb_connection_t* conn = nullptr;
  xcb_window_t id = 0;
  uint32_t width = 0, height = 0;

  void open(bool xlib, uint32_t w, uint32_t h) {
    width = w;
    height = h;
    if (xlib) {
      dpy = XOpenDisplay(nullptr);
      if (!dpy) {
        fail("XOpenDisplay");
        std::exit(1);
      }
      conn = XGetXCBConnection(dpy);
    } else {
      conn = xcb_connect(nullptr, nullptr);
      if (xcb_connection_has_error(conn)) {
        fail("xcb_connect");
        std::exit(1);
      }
    }
    const xcb_screen_t* screen = xcb_setup_roots_iterator(xcb_get_setup(conn)).data;
    id = xcb_generate_id(conn);
    const uint32_t values[] = {screen->black_pixel, XCB_EVENT_MASK_STRUCTURE_NOTIFY};
    xcb_create_window(conn, XCB_COPY_FROM_PARENT, id, screen->root, 0, 0, static_cast<uint16_t>(w),
                      static_cast<uint16_t>(h), 0, XCB_WINDOW_CLASS_INPUT_OUTPUT, screen->root_visual,
                      XCB_CW_BACK_PIXEL | XCB_CW_EVENT_MASK, values);
    xcb_map_window(conn, id);
    sync();
  }
  void sync() { std::free(xcb_get_input_focus_reply(conn, xcb_get_input_focus(conn), nullptr)); }
  void resize(uint32_t w, uint32_t h) {
    const uint32_t v[] = {w, h};
    xcb_configure_window(conn, id, XCB_CONFIG_WINDOW_WIDTH | XCB_CONFIG_WINDOW_HEIGHT, v);
    sync();
    width = w;
    height = h;
  }
  void destroy() {
    xcb_destroy_window(conn, id);
    sync();
  }
  // Counts the window's pixels that are not `rgb`; -1 when the image cannot be read.
  long mismatches(const uint8_t rgb[3], uint32_t w, uint32_t h) {
    xcb_get_image_reply_t* img =
        xcb_get_image_reply(conn,
                            xcb_get_image(conn, XCB_IMAGE_FORMAT_Z_PIXMAP, id, 0, 0, static_cast<uint16_t>(w),
                                          static_cast<uint16_t>(h), ~0u),
                            nullptr);
    if (!img) return -1;
    const uint8_t* p = xcb_get_image_data(img);
    const int len = xcb_get_image_data_length(img);
    long bad = 0;
    if (len < static_cast<int>(w * h * 4)) bad = -1;
    for (uint32_t i = 0; bad >= 0 && i < w * h; ++i)
      if (p[4 * i] != rgb[2] || p[4 * i + 1] != rgb[1] || p[4 * i + 2] != rgb[0]) ++bad;
    std::free(img);
    return bad;
  }
  void close() {
    if (dpy)
      XCloseDisplay(dpy);
    else if (conn)
      xcb_disconnect(conn);
    dpy = nullptr;
    conn = nullptr;
  }
};

// ---------------------------------------------------------------- Vulkan
struct Gpu {
  VkInstance instance = VK_NULL_HANDLE;
  VkPhysicalDevice pd = VK_NULL_HANDLE;
  VkDevice device = VK_NULL_HANDLE;
  VkQueue queue = VK_NULL_HANDLE;
  uint32_t family = 0;
  VkSurfaceKHR surface = VK_NULL_HANDLE;
  VkCommandPool pool = VK_NULL_HANDLE;
  uint32_t api = VK_API_VERSION_1_1;
  const void* device_features = nullptr;  // chained into VkDeviceCreateInfo

  void create_instance(bool headless) {
    std::vector<const char*> exts = {VK_KHR_SURFACE_EXTENSION_NAME};
    if (headless)
      exts.push_back(VK_EXT_HEADLESS_SURFACE_EXTENSION_NAME);
    else {
      exts.push_back(VK_KHR_XCB_SURFACE_EXTENSION_NAME);
      exts.push_back(VK_KHR_XLIB_SURFACE_EXTENSION_NAME);
    }
    VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.pApplicationName = "wsi_probe";
    app.apiVersion = api;
    VkInstanceCreateInfo ci{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    ci.pApplicationInfo = &app;
    ci.enabledExtensionCount = static_cast<uint32_t>(exts.size());
    ci.ppEnabledExtensionNames = exts.data();
    CHECK_VK(vkCreateInstance(&ci, nullptr, &instance));
    uint32_t n = 1;
    VkResult r = vkEnumeratePhysicalDevices(instance, &n, &pd);
    if ((r != VK_SUCCESS && r != VK_INCOMPLETE) || n == 0) {
      fail("no physical device");
      std::exit(1);
    }
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(pd, &props);
    line("device", props.deviceName);
  }
  void surface_for(Window& w) {
    if (w.dpy) {
      VkXlibSurfaceCreateInfoKHR ci{VK_STRUCTURE_TYPE_XLIB_SURFACE_CREATE_INFO_KHR};
      ci.dpy = w.dpy;
      ci.window = w.id;
      CHECK_VK(vkCreateXlibSurfaceKHR(instance, &ci, nullptr, &surface));
    } else {
      VkXcbSurfaceCreateInfoKHR ci{VK_STRUCTURE_TYPE_XCB_SURFACE_CREATE_INFO_KHR};
      ci.connection = w.conn;
      ci.window = w.id;
      CHECK_VK(vkCreateXcbSurfaceKHR(instance, &ci, nullptr, &surface));
    }
  }
  void headless_surface() {
    VkHeadlessSurfaceCreateInfoEXT ci{VK_STRUCTURE_TYPE_HEADLESS_SURFACE_CREATE_INFO_EXT};
    auto fn =
        reinterpret_cast<PFN_vkCreateHeadlessSurfaceEXT>(vkGetInstanceProcAddr(instance, "vkCreateHeadlessSurfaceEXT"));
    if (!fn) {
      fail("vkCreateHeadlessSurfaceEXT missing");
      std::exit(1);
    }
    CHECK_VK(fn(instance, &ci, nullptr, &surface));
  }
  void create_device() {
    uint32_t n = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, nullptr);
    bool found = false;
    for (uint32_t i = 0; i < n && !found; ++i) {
      VkBool32 ok = VK_FALSE;
      CHECK_VK(vkGetPhysicalDeviceSurfaceSupportKHR(pd, i, surface, &ok));
      if (ok) {
        family = i;
        found = true;
      }
    }
    if (!found) {
      fail("no queue family can present");
      std::exit(1);
    }
    const float prio = 1.0f;
    VkDeviceQueueCreateInfo qi{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    qi.queueFamilyIndex = family;
    qi.queueCount = 1;
    qi.pQueuePriorities = &prio;
    const char* ext = VK_KHR_SWAPCHAIN_EXTENSION_NAME;
    VkDeviceCreateInfo ci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, device_features};
    ci.queueCreateInfoCount = 1;
    ci.pQueueCreateInfos = &qi;
    ci.enabledExtensionCount = 1;
    ci.ppEnabledExtensionNames = &ext;
    CHECK_VK(vkCreateDevice(pd, &ci, nullptr, &device));
    vkGetDeviceQueue(device, family, 0, &queue);
    VkCommandPoolCreateInfo pi{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pi.queueFamilyIndex = family;
    CHECK_VK(vkCreateCommandPool(device, &pi, nullptr, &pool));
  }
  void destroy() {
    if (device) {
      vkDeviceWaitIdle(device);
      vkDestroyCommandPool(device, pool, nullptr);
      vkDestroyDevice(device, nullptr);
    }
    if (surface) vkDestroySurfaceKHR(instance, surface, nullptr);
    if (instance) vkDestroyInstance(instance, nullptr);
  }
};

// Per-frame-in-flight sync objects, reused round robin.
constexpr uint32_t kSlots = 2;

struct Frames {
  VkDevice device = VK_NULL_HANDLE;
  VkCommandBuffer cb[kSlots]{};
  VkSemaphore acquired[kSlots]{};
  VkSemaphore rendered[kSlots]{};
  VkFence done[kSlots]{};

  void create(Gpu& g) {
    device = g.device;
    VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    ai.commandPool = g.pool;
    ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    ai.commandBufferCount = kSlots;
    CHECK_VK(vkAllocateCommandBuffers(device, &ai, cb));
    for (uint32_t i = 0; i < kSlots; ++i) {
      VkSemaphoreCreateInfo si{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO};
      CHECK_VK(vkCreateSemaphore(device, &si, nullptr, &acquired[i]));
      CHECK_VK(vkCreateSemaphore(device, &si, nullptr, &rendered[i]));
      VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
      fi.flags = VK_FENCE_CREATE_SIGNALED_BIT;
      CHECK_VK(vkCreateFence(device, &fi, nullptr, &done[i]));
    }
  }
  // After an acquire failed, its semaphore may be left in any state: start over with fresh ones.
  void renew_semaphores() {
    vkDeviceWaitIdle(device);
    for (uint32_t i = 0; i < kSlots; ++i) {
      vkDestroySemaphore(device, acquired[i], nullptr);
      vkDestroySemaphore(device, rendered[i], nullptr);
      VkSemaphoreCreateInfo si{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO};
      CHECK_VK(vkCreateSemaphore(device, &si, nullptr, &acquired[i]));
      CHECK_VK(vkCreateSemaphore(device, &si, nullptr, &rendered[i]));
    }
  }
  void destroy() {
    vkDeviceWaitIdle(device);
    for (uint32_t i = 0; i < kSlots; ++i) {
      vkDestroySemaphore(device, acquired[i], nullptr);
      vkDestroySemaphore(device, rendered[i], nullptr);
      vkDestroyFence(device, done[i], nullptr);
    }
  }
};

struct Swapchain {
  VkSwapchainKHR handle = VK_NULL_HANDLE;
  VkExtent2D extent{};
  std::vector<VkImage> images;

  VkResult create(Gpu& g, VkPresentModeKHR mode, VkExtent2D want, VkSwapchainKHR old) {
    VkSurfaceCapabilitiesKHR caps;
    VkResult r = vkGetPhysicalDeviceSurfaceCapabilitiesKHR(g.pd, g.surface, &caps);
    if (r != VK_SUCCESS) return r;
    extent = caps.currentExtent.width == 0xFFFFFFFFu ? want : caps.currentExtent;
    VkSwapchainCreateInfoKHR ci{VK_STRUCTURE_TYPE_SWAPCHAIN_CREATE_INFO_KHR};
    ci.surface = g.surface;
    ci.minImageCount = caps.minImageCount;
    ci.imageFormat = VK_FORMAT_B8G8R8A8_UNORM;
    ci.imageColorSpace = VK_COLOR_SPACE_SRGB_NONLINEAR_KHR;
    ci.imageExtent = extent;
    ci.imageArrayLayers = 1;
    ci.imageUsage = VK_IMAGE_USAGE_TRANSFER_DST_BIT | VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT;
    ci.imageSharingMode = VK_SHARING_MODE_EXCLUSIVE;
    ci.preTransform = VK_SURFACE_TRANSFORM_IDENTITY_BIT_KHR;
    ci.compositeAlpha = VK_COMPOSITE_ALPHA_OPAQUE_BIT_KHR;
    ci.presentMode = mode;
    ci.clipped = VK_TRUE;
    ci.oldSwapchain = old;
    r = vkCreateSwapchainKHR(g.device, &ci, nullptr, &handle);
    if (r != VK_SUCCESS) return r;
    uint32_t n = 0;
    vkGetSwapchainImagesKHR(g.device, handle, &n, nullptr);
    images.resize(n);
    return vkGetSwapchainImagesKHR(g.device, handle, &n, images.data());
  }
  void destroy(Gpu& g) {
    if (handle) vkDestroySwapchainKHR(g.device, handle, nullptr);
    handle = VK_NULL_HANDLE;
  }
};

void record_clear(VkCommandBuffer cb, VkImage image, uint32_t k) {
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  CHECK_VK(vkBeginCommandBuffer(cb, &bi));
  VkImageMemoryBarrier b{VK_STRUCTURE_TYPE_IMAGE_MEMORY_BARRIER};
  b.srcAccessMask = 0;
  b.dstAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
  b.oldLayout = VK_IMAGE_LAYOUT_UNDEFINED;
  b.newLayout = VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL;
  b.srcQueueFamilyIndex = b.dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
  b.image = image;
  b.subresourceRange = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 1, 0, 1};
  vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 0, nullptr, 0, nullptr, 1,
                       &b);
  uint8_t rgb[3];
  frame_color(k, rgb);
  VkClearColorValue c{};
  c.float32[0] = rgb[0] / 255.0f;
  c.float32[1] = rgb[1] / 255.0f;
  c.float32[2] = rgb[2] / 255.0f;
  c.float32[3] = 1.0f;
  vkCmdClearColorImage(cb, image, VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL, &c, 1, &b.subresourceRange);
  b.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
  b.dstAccessMask = 0;
  b.oldLayout = VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL;
  b.newLayout = VK_IMAGE_LAYOUT_PRESENT_SRC_KHR;
  vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, 0, 0, nullptr, 0,
                       nullptr, 1, &b);
  CHECK_VK(vkEndCommandBuffer(cb));
}

struct FrameResult {
  VkResult acquire = VK_SUCCESS;
  VkResult present = VK_SUCCESS;
};

// One frame k: acquire (semaphore), clear, submit (waits acquire, signals rendered, fence),
// present (waits rendered).
FrameResult draw_frame(Gpu& g, Frames& f, Swapchain& s, uint32_t k) {
  FrameResult out;
  const uint32_t slot = k % kSlots;
  CHECK_VK(vkWaitForFences(g.device, 1, &f.done[slot], VK_TRUE, UINT64_MAX));
  uint32_t index = 0;
  out.acquire = vkAcquireNextImageKHR(g.device, s.handle, UINT64_MAX, f.acquired[slot], VK_NULL_HANDLE, &index);
  if (out.acquire != VK_SUCCESS && out.acquire != VK_SUBOPTIMAL_KHR) return out;
  CHECK_VK(vkResetFences(g.device, 1, &f.done[slot]));
  record_clear(f.cb[slot], s.images[index], k);
  const VkPipelineStageFlags stage = VK_PIPELINE_STAGE_TRANSFER_BIT;
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.waitSemaphoreCount = 1;
  si.pWaitSemaphores = &f.acquired[slot];
  si.pWaitDstStageMask = &stage;
  si.commandBufferCount = 1;
  si.pCommandBuffers = &f.cb[slot];
  si.signalSemaphoreCount = 1;
  si.pSignalSemaphores = &f.rendered[slot];
  CHECK_VK(vkQueueSubmit(g.queue, 1, &si, f.done[slot]));
  VkPresentInfoKHR pi{VK_STRUCTURE_TYPE_PRESENT_INFO_KHR};
  pi.waitSemaphoreCount = 1;
  pi.pWaitSemaphores = &f.rendered[slot];
  pi.swapchainCount = 1;
  pi.pSwapchains = &s.handle;
  pi.pImageIndices = &index;
  VkResult per = VK_RESULT_MAX_ENUM;
  pi.pResults = &per;
  out.present = vkQueuePresentKHR(g.queue, &pi);
  if (per != out.present) fail(std::string("pResults ") + result_name(per) + " != " + result_name(out.present));
  return out;
}

std::string counts(const std::map<std::string, int>& m) {
  std::string s;
  for (auto& [k, v] : m) s += (s.empty() ? "" : " ") + k + "=" + std::to_string(v);
  return s;
}

// ---------------------------------------------------------------- commands
int cmd_caps(const Args& a) {
  Window w;
  w.open(a.xlib, 320, 240);
  Gpu g;
  g.create_instance(false);
  g.surface_for(w);
  VkSurfaceCapabilitiesKHR c;
  CHECK_VK(vkGetPhysicalDeviceSurfaceCapabilitiesKHR(g.pd, g.surface, &c));
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "min %u max %u current %ux%u extent %ux%u..%ux%u layers %u transforms 0x%x alpha 0x%x usage 0x%x",
                c.minImageCount, c.maxImageCount, c.currentExtent.width, c.currentExtent.height, c.minImageExtent.width,
                c.minImageExtent.height, c.maxImageExtent.width, c.maxImageExtent.height, c.maxImageArrayLayers,
                c.supportedTransforms, c.supportedCompositeAlpha, c.supportedUsageFlags);
  line("capabilities", buf);
  uint32_t n = 0;
  CHECK_VK(vkGetPhysicalDeviceSurfaceFormatsKHR(g.pd, g.surface, &n, nullptr));
  std::vector<VkSurfaceFormatKHR> formats(n);
  CHECK_VK(vkGetPhysicalDeviceSurfaceFormatsKHR(g.pd, g.surface, &n, formats.data()));
  std::string s;
  for (auto& f : formats) s += std::to_string(f.format) + "/" + std::to_string(f.colorSpace) + " ";
  line("formats", s);
  CHECK_VK(vkGetPhysicalDeviceSurfacePresentModesKHR(g.pd, g.surface, &n, nullptr));
  std::vector<VkPresentModeKHR> modes(n);
  CHECK_VK(vkGetPhysicalDeviceSurfacePresentModesKHR(g.pd, g.surface, &n, modes.data()));
  s.clear();
  for (auto m : modes) s += std::to_string(m) + " ";
  line("present_modes", s);
  vkGetPhysicalDeviceQueueFamilyProperties(g.pd, &n, nullptr);
  s.clear();
  for (uint32_t i = 0; i < n; ++i) {
    VkBool32 ok = VK_FALSE;
    CHECK_VK(vkGetPhysicalDeviceSurfaceSupportKHR(g.pd, i, g.surface, &ok));
    const xcb_screen_t* screen = xcb_setup_roots_iterator(xcb_get_setup(w.conn)).data;
    const VkBool32 xcb_ok = vkGetPhysicalDeviceXcbPresentationSupportKHR(g.pd, i, w.conn, screen->root_visual);
    const VkBool32 xlib_ok = a.xlib ? vkGetPhysicalDeviceXlibPresentationSupportKHR(
                                          g.pd, i, w.dpy, XVisualIDFromVisual(DefaultVisual(w.dpy, 0)))
                                    : xcb_ok;
    s += std::to_string(i) + ":" + std::to_string(ok) + "/" + std::to_string(xcb_ok) + "/" + std::to_string(xlib_ok) +
         " ";
  }
  line("present_support", s);
  g.destroy();
  w.close();
  return g_failures ? 1 : 0;
}

// A 320x240 window, a device that presents to it and the per-frame objects, the set-up of
// every windowed command; close() tears them down in order.
struct Scene {
  Window w;
  Gpu g;
  Frames f;
  explicit Scene(const Args& a) {
    w.open(a.xlib, 320, 240);
    g.create_instance(false);
    g.surface_for(w);
    g.create_device();
    f.create(g);
  }
  void close() {
    f.destroy();
    g.destroy();
    w.close();
  }
};

// Every pixel of the window's width x height shows frame `index`'s color; `what` on failure.
void check_window_shows(Window& w, uint32_t index, uint32_t width, uint32_t height, const char* what) {
  uint8_t color[3];
  frame_color(index, color);
  const long bad = w.mismatches(color, width, height);
  line("window_mismatches", std::to_string(bad));
  if (bad != 0) fail(what);
}

int cmd_present(const Args& a) {
  Scene scene(a);
  Window& w = scene.w;
  Gpu& g = scene.g;
  Frames& f = scene.f;
  Swapchain s;
  CHECK_VK(s.create(g, mode_of(a.mode), {320, 240}, VK_NULL_HANDLE));
  line("images", std::to_string(s.images.size()));
  std::map<std::string, int> acquires, presents;
  const auto t0 = Clock::now();
  for (int k = 0; k < a.frames; ++k) {
    FrameResult r = draw_frame(g, f, s, static_cast<uint32_t>(k));
    ++acquires[result_name(r.acquire)];
    if (r.acquire == VK_SUCCESS || r.acquire == VK_SUBOPTIMAL_KHR) ++presents[result_name(r.present)];
  }
  CHECK_VK(vkDeviceWaitIdle(g.device));
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  line("acquire_results", counts(acquires));
  line("present_results", counts(presents));
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.3f", seconds);
  line("seconds", buf);
  if (acquires["VK_SUCCESS"] != a.frames || presents["VK_SUCCESS"] != a.frames) fail("a frame did not succeed");

  // Acquire until every image is the program's: then timeout 0 is NOT_READY, a short timeout
  // TIMEOUT. An acquire fence is signaled when the image is ready.
  std::vector<uint32_t> held;
  VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkFence fence;
  CHECK_VK(vkCreateFence(g.device, &fi, nullptr, &fence));
  for (size_t i = 0; i < s.images.size(); ++i) {
    uint32_t index;
    const VkResult r = vkAcquireNextImageKHR(g.device, s.handle, 1'000'000'000, VK_NULL_HANDLE, fence, &index);
    if (r != VK_SUCCESS) {
      fail(std::string("acquire of every image: ") + result_name(r));
      break;
    }
    if (vkWaitForFences(g.device, 1, &fence, VK_TRUE, 1'000'000'000) != VK_SUCCESS) fail("acquire fence not signaled");
    vkResetFences(g.device, 1, &fence);
    held.push_back(index);
  }
  if (held.size() == s.images.size()) {
    uint32_t index;
    line("acquire_none_free_timeout0",
         result_name(vkAcquireNextImageKHR(g.device, s.handle, 0, VK_NULL_HANDLE, fence, &index)));
    line("acquire_none_free_timeout1ms",
         result_name(vkAcquireNextImageKHR(g.device, s.handle, 1'000'000, VK_NULL_HANDLE, fence, &index)));
  }
  vkDestroyFence(g.device, fence, nullptr);
  s.destroy(g);  // shows what is still queued

  check_window_shows(w, static_cast<uint32_t>(a.frames - 1), 320, 240, "the window does not show the last frame");
  scene.close();
  return g_failures ? 1 : 0;
}

int cmd_resize(const Args& a) {
  Scene scene(a);
  Window& w = scene.w;
  Gpu& g = scene.g;
  Frames& f = scene.f;
  Swapchain s;
  CHECK_VK(s.create(g, mode_of(a.mode), {320, 240}, VK_NULL_HANDLE));
  uint32_t k = 0;
  for (; k < 5; ++k) {
    FrameResult r = draw_frame(g, f, s, k);
    if (r.acquire != VK_SUCCESS || r.present != VK_SUCCESS) fail("frame before resize did not succeed");
  }
  w.resize(400, 300);
  // Present until the swapchain says it no longer fits (within a few frames, as natively).
  std::string seen;
  uint32_t frames_to_notice = 0;
  for (; frames_to_notice < 20; ++frames_to_notice, ++k) {
    FrameResult r = draw_frame(g, f, s, k);
    if (r.acquire != VK_SUCCESS) {
      seen = std::string("acquire ") + result_name(r.acquire);
      break;
    }
    if (r.present != VK_SUCCESS) {
      seen = std::string("present ") + result_name(r.present);
      break;
    }
  }
  line("after_resize", seen.empty() ? "nothing within 20 frames" : seen);
  line("frames_to_notice", std::to_string(frames_to_notice + 1));
  if (seen.empty()) fail("the resize was never reported");
  VkSurfaceCapabilitiesKHR caps;
  CHECK_VK(vkGetPhysicalDeviceSurfaceCapabilitiesKHR(g.pd, g.surface, &caps));
  line("current_extent", std::to_string(caps.currentExtent.width) + "x" + std::to_string(caps.currentExtent.height));
  if (caps.currentExtent.width != 400 || caps.currentExtent.height != 300) fail("currentExtent is not the new size");

  CHECK_VK(vkDeviceWaitIdle(g.device));
  f.renew_semaphores();
  Swapchain s2;
  CHECK_VK(s2.create(g, mode_of(a.mode), {400, 300}, s.handle));
  uint32_t index;
  line("acquire_old_swapchain",
       result_name(vkAcquireNextImageKHR(g.device, s.handle, 0, VK_NULL_HANDLE, VK_NULL_HANDLE, &index)));
  s.destroy(g);
  std::map<std::string, int> results;
  for (uint32_t i = 0; i < 5; ++i, ++k) {
    FrameResult r = draw_frame(g, f, s2, k);
    ++results[std::string(result_name(r.acquire)) + "/" + result_name(r.present)];
  }
  line("after_recreate", counts(results));
  if (results["VK_SUCCESS/VK_SUCCESS"] != 5) fail("frames after recreation did not all succeed");
  CHECK_VK(vkDeviceWaitIdle(g.device));
  s2.destroy(g);
  check_window_shows(w, k - 1, 400, 300, "the resized window does not show the last frame everywhere");
  scene.close();
  return g_failures ? 1 : 0;
}

int cmd_destroy_window(const Args& a) {
  Scene scene(a);
  Window& w = scene.w;
  Gpu& g = scene.g;
  Frames& f = scene.f;
  Swapchain s;
  CHECK_VK(s.create(g, mode_of(a.mode), {320, 240}, VK_NULL_HANDLE));
  uint32_t k = 0;
  for (; k < 3; ++k) draw_frame(g, f, s, k);
  w.destroy();
  std::string first_error;
  std::map<std::string, int> results;
  for (uint32_t i = 0; i < 10; ++i, ++k) {
    FrameResult r = draw_frame(g, f, s, k);
    const std::string t = std::string(result_name(r.acquire)) + "/" + (r.acquire >= 0 ? result_name(r.present) : "-");
    ++results[t];
    if (first_error.empty() && (r.acquire < 0 || r.present < 0))
      first_error = r.acquire < 0 ? std::string("acquire ") + result_name(r.acquire)
                                  : std::string("present ") + result_name(r.present);
    if (r.acquire < 0) break;
  }
  line("after_destroy", counts(results));
  line("first_error", first_error.empty() ? "none" : first_error);
  VkSurfaceCapabilitiesKHR caps;
  line("capabilities_after_destroy", result_name(vkGetPhysicalDeviceSurfaceCapabilitiesKHR(g.pd, g.surface, &caps)));
  vkDeviceWaitIdle(g.device);
  s.destroy(g);
  scene.close();
  line("clean_exit", "yes");
  return 0;
}

int cmd_loop(const Args& a) {
  Scene scene(a);
  Gpu& g = scene.g;
  Frames& f = scene.f;
  Swapchain s;
  CHECK_VK(s.create(g, mode_of(a.mode), {320, 240}, VK_NULL_HANDLE));
  const auto t0 = Clock::now();
  for (uint32_t k = 0;; ++k) {
    FrameResult r = draw_frame(g, f, s, k);
    if (r.acquire != VK_SUCCESS || r.present != VK_SUCCESS) {
      fail(std::string("frame ") + std::to_string(k) + ": " + result_name(r.acquire) + "/" + result_name(r.present));
      break;
    }
    if (k % 20 == 0) line("frame", std::to_string(k));
    if (a.seconds > 0 && std::chrono::duration<double>(Clock::now() - t0).count() > a.seconds) break;
  }
  vkDeviceWaitIdle(g.device);
  s.destroy(g);
  scene.close();
  line("done", g_failures ? "with failures" : "ok");
  return g_failures ? 1 : 0;
}

int cmd_headless(const Args& a) {
  Gpu g;
  g.create_instance(true);
  g.headless_surface();
  g.create_device();
  Frames f;
  f.create(g);
  Swapchain s;
  CHECK_VK(s.create(g, mode_of(a.mode), {64, 48}, VK_NULL_HANDLE));
  line("extent", std::to_string(s.extent.width) + "x" + std::to_string(s.extent.height));
  std::map<std::string, int> results;
  for (int k = 0; k < a.frames; ++k) {
    FrameResult r = draw_frame(g, f, s, static_cast<uint32_t>(k));
    ++results[std::string(result_name(r.acquire)) + "/" + result_name(r.present)];
  }
  line("results", counts(results));
  if (results["VK_SUCCESS/VK_SUCCESS"] != a.frames) fail("a headless frame did not succeed");
  vkDeviceWaitIdle(g.device);
  s.destroy(g);
  f.destroy();
  g.destroy();
  return g_failures ? 1 : 0;
}

// The swapchain and the surface are the ICD's own objects, which the host's driver never sees:
// their private data stays in the guest (guest-icd/src/private_data.cpp); the device's goes to
// the driver.
int cmd_private_data(const Args&) {
  Gpu g;
  g.api = VK_API_VERSION_1_3;
  VkPhysicalDevicePrivateDataFeatures features{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PRIVATE_DATA_FEATURES};
  features.privateData = VK_TRUE;
  g.device_features = &features;
  g.create_instance(true);
  g.headless_surface();
  g.create_device();
  VkPrivateDataSlotCreateInfo si{VK_STRUCTURE_TYPE_PRIVATE_DATA_SLOT_CREATE_INFO};
  VkPrivateDataSlot slot = VK_NULL_HANDLE;
  CHECK_VK(vkCreatePrivateDataSlot(g.device, &si, nullptr, &slot));
  auto get = [&](VkObjectType type, uint64_t handle) {
    uint64_t v = 0;
    vkGetPrivateData(g.device, type, handle, slot, &v);
    return v;
  };
  auto as_bits = [](auto handle) { return reinterpret_cast<uint64_t>(handle); };
  Swapchain s;
  CHECK_VK(s.create(g, VK_PRESENT_MODE_FIFO_KHR, {64, 48}, VK_NULL_HANDLE));
  CHECK_VK(vkSetPrivateData(g.device, VK_OBJECT_TYPE_SWAPCHAIN_KHR, as_bits(s.handle), slot, 7));
  CHECK_VK(vkSetPrivateData(g.device, VK_OBJECT_TYPE_SURFACE_KHR, as_bits(g.surface), slot, 8));
  CHECK_VK(vkSetPrivateData(g.device, VK_OBJECT_TYPE_DEVICE, as_bits(g.device), slot, 9));
  const uint64_t got[3] = {get(VK_OBJECT_TYPE_SWAPCHAIN_KHR, as_bits(s.handle)),
                           get(VK_OBJECT_TYPE_SURFACE_KHR, as_bits(g.surface)),
                           get(VK_OBJECT_TYPE_DEVICE, as_bits(g.device))};
  line("private data", std::to_string(got[0]) + " " + std::to_string(got[1]) + " " + std::to_string(got[2]));
  if (got[0] != 7 || got[1] != 8 || got[2] != 9) fail("private data did not come back");
  s.destroy(g);
  Swapchain again;
  CHECK_VK(again.create(g, VK_PRESENT_MODE_FIFO_KHR, {64, 48}, VK_NULL_HANDLE));
  line("new swapchain", std::to_string(get(VK_OBJECT_TYPE_SWAPCHAIN_KHR, as_bits(again.handle))));
  if (get(VK_OBJECT_TYPE_SWAPCHAIN_KHR, as_bits(again.handle)) != 0) fail("a new swapchain did not start at zero");
  again.destroy(g);
  vkDestroyPrivateDataSlot(g.device, slot, nullptr);
  g.destroy();
  line("done", g_failures ? "with failures" : "ok");
  return g_failures ? 1 : 0;
}

int cmd_send_escape(const Args& a) {
  xcb_connection_t* c = xcb_connect(nullptr, nullptr);
  if (xcb_connection_has_error(c)) return 1;
  const xcb_screen_t* screen = xcb_setup_roots_iterator(xcb_get_setup(c)).data;
  xcb_query_tree_reply_t* tree = xcb_query_tree_reply(c, xcb_query_tree(c, screen->root), nullptr);
  int sent = 0;
  if (tree) {
    const xcb_window_t* kids = xcb_query_tree_children(tree);
    for (int i = 0; i < xcb_query_tree_children_length(tree); ++i) {
      xcb_get_property_reply_t* p = xcb_get_property_reply(
          c, xcb_get_property(c, 0, kids[i], XCB_ATOM_WM_NAME, XCB_ATOM_STRING, 0, 256), nullptr);
      const std::string name = p ? std::string(static_cast<const char*>(xcb_get_property_value(p)),
                                               static_cast<size_t>(xcb_get_property_value_length(p)))
                                 : std::string();
      std::free(p);
      if (name != a.name) continue;
      xcb_key_press_event_t ev{};
      ev.response_type = XCB_KEY_PRESS;
      ev.detail = 9;  // Escape in the default keymap
      ev.root = screen->root;
      ev.event = kids[i];
      ev.same_screen = 1;
      xcb_send_event(c, 1, kids[i], XCB_EVENT_MASK_KEY_PRESS, reinterpret_cast<const char*>(&ev));
      ++sent;
    }
    std::free(tree);
  }
  xcb_flush(c);
  std::free(xcb_get_input_focus_reply(c, xcb_get_input_focus(c), nullptr));
  xcb_disconnect(c);
  line("sent", std::to_string(sent));
  return sent ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", s.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (s == "--mode")
      a.mode = next();
    else if (s == "--frames")
      a.frames = std::max(1, std::atoi(next().c_str()));
    else if (s == "--seconds")
      a.seconds = std::atof(next().c_str());
    else if (s == "--xlib")
      a.xlib = true;
    else if (a.command.empty())
      a.command = s;
    else
      a.name = s;
  }
  if (a.command == "caps") return cmd_caps(a);
  if (a.command == "present") return cmd_present(a);
  if (a.command == "resize") return cmd_resize(a);
  if (a.command == "destroy-window") return cmd_destroy_window(a);
  if (a.command == "loop") return cmd_loop(a);
  if (a.command == "headless") return cmd_headless(a);
  if (a.command == "private-data") return cmd_private_data(a);
  if (a.command == "send-escape" && !a.name.empty()) return cmd_send_escape(a);
  std::fprintf(stderr,
               "usage: wsi_probe caps|present|resize|destroy-window|loop|headless|private-data [--mode M] [--frames N] "
               "[--seconds S] [--xlib] | send-escape NAME\n");
  return 2;
}
