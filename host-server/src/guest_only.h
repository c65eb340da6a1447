// Extensions the guest ICD implements itself: the host never enables them on the real driver.
#pragma once

#include <cstring>
#include <string_view>

namespace bypass::host {

inline bool is_guest_only_extension(std::string_view name) {
  constexpr std::string_view kGuestOnly[] = {
      "VK_KHR_surface",           "VK_KHR_xcb_surface",          "VK_KHR_xlib_surface",
      "VK_KHR_wayland_surface",   "VK_EXT_headless_surface",     "VK_KHR_get_surface_capabilities2",
      "VK_KHR_surface_protected_capabilities", "VK_EXT_debug_utils", "VK_EXT_debug_report",
      "VK_KHR_swapchain",         "VK_KHR_swapchain_mutable_format", "VK_KHR_incremental_present",
      "VK_KHR_portability_enumeration",
  };
  for (auto g : kGuestOnly)
    if (g == name) return true;
  return false;
}

}  // namespace bypass::host
