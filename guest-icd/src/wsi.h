// Presentation (WSI) in the guest ICD. Surfaces and swapchains never cross the wire: a
// surface is the guest's window, a swapchain is a set of ordinary host images the ICD made
// through the generated entry points, and a present copies the image into host-visible memory
// (shared with the guest) and puts it into the window. See docs/presentation.md.
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <vector>

#include "objects.h"

struct xcb_connection_t;

namespace bypass::icd::wsi {

struct Surface {
  enum class Kind { kXcb, kXlib, kHeadless };
  Kind kind = Kind::kHeadless;
  xcb_connection_t* conn = nullptr;  // the program's connection (Xlib: its Display's)
  uint32_t window = 0;
};

inline Surface* surface_of(VkSurfaceKHR s) { return reinterpret_cast<Surface*>(s); }
VkSurfaceKHR new_surface(const Surface& s);

// What the surface offers now; VK_ERROR_SURFACE_LOST_KHR once its window is gone.
VkResult surface_capabilities(PhysicalDevice* pd, Surface* s, VkSurfaceCapabilitiesKHR* caps);

// The 32-bit BGRA formats presentation can show, in the order a native driver lists them.
inline constexpr VkFormat kSurfaceFormats[] = {VK_FORMAT_B8G8R8A8_SRGB, VK_FORMAT_B8G8R8A8_UNORM};
inline constexpr VkPresentModeKHR kPresentModes[] = {VK_PRESENT_MODE_IMMEDIATE_KHR, VK_PRESENT_MODE_MAILBOX_KHR,
                                                     VK_PRESENT_MODE_FIFO_KHR, VK_PRESENT_MODE_FIFO_RELAXED_KHR};
// Images a swapchain has at least (as lavapipe's own X11 WSI).
inline constexpr uint32_t kMinImageCount = 3;

// Whether queues of this family can present (they can copy: graphics, compute or transfer).
bool family_can_present(PhysicalDevice* pd, uint32_t family);

}  // namespace bypass::icd::wsi
