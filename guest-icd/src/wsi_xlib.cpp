// VK_KHR_xlib_surface: an Xlib window is presented through its Display's xcb connection, the
// same path as an xcb surface. Xlib's headers define macros (Status, Bool, None, ...) that
// collide with bypass names, so they come last and only in this file.
#include "wsi.h"
#include "wsi_x11.h"

#include <X11/Xlib.h>
#include <vulkan/vulkan_xlib.h>

namespace bypass::icd {

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateXlibSurfaceKHR(VkInstance, const VkXlibSurfaceCreateInfoKHR* pCreateInfo,
                                                          const VkAllocationCallbacks*, VkSurfaceKHR* pSurface) {
  xcb_connection_t* conn = wsi::xlib_to_xcb(pCreateInfo->dpy);
  if (!conn || !wsi::xcb_api()) return VK_ERROR_INITIALIZATION_FAILED;
  wsi::Surface s;
  s.kind = wsi::Surface::Kind::kXlib;
  s.conn = conn;
  s.window = static_cast<uint32_t>(pCreateInfo->window);
  *pSurface = wsi::new_surface(s);
  return VK_SUCCESS;
}

VKAPI_ATTR VkBool32 VKAPI_CALL icd_vkGetPhysicalDeviceXlibPresentationSupportKHR(VkPhysicalDevice physicalDevice,
                                                                                 uint32_t queueFamilyIndex,
                                                                                 Display* dpy, VisualID visualID) {
  if (!wsi::family_can_present(as<PhysicalDevice>(physicalDevice), queueFamilyIndex)) return VK_FALSE;
  xcb_connection_t* conn = wsi::xlib_to_xcb(dpy);
  return wsi::depth_supported(conn, wsi::visual_depth(conn, static_cast<uint32_t>(visualID))) ? VK_TRUE : VK_FALSE;
}

}  // namespace bypass::icd
