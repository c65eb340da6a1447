// Surfaces (VK_KHR_surface, VK_KHR_xcb_surface, VK_EXT_headless_surface,
// VK_KHR_get_surface_capabilities2): guest objects answered from the guest's own window
// system. The host driver is never asked and needs no display.
#include <xcb/xcb.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>

#include "wsi.h"
#include "wsi_x11.h"

#include <vulkan/vulkan_xcb.h>

namespace bypass::icd::wsi {

VkSurfaceKHR new_surface(const Surface& s) { return reinterpret_cast<VkSurfaceKHR>(new Surface(s)); }

bool family_can_present(PhysicalDevice* pd, uint32_t family) {
  // Queue family properties never change; asked once per physical device.
  static std::mutex mu;
  static std::map<PhysicalDevice*, std::vector<VkQueueFamilyProperties>> cache;
  std::lock_guard lock(mu);
  auto it = cache.find(pd);
  if (it == cache.end()) {
    auto fn = entry<PFN_vkGetPhysicalDeviceQueueFamilyProperties>("vkGetPhysicalDeviceQueueFamilyProperties");
    uint32_t n = 0;
    fn(reinterpret_cast<VkPhysicalDevice>(pd), &n, nullptr);
    std::vector<VkQueueFamilyProperties> props(n);
    fn(reinterpret_cast<VkPhysicalDevice>(pd), &n, props.data());
    props.resize(n);
    it = cache.emplace(pd, std::move(props)).first;
  }
  if (family >= it->second.size()) return false;
  // A present is a copy submitted on the presenting queue.
  return (it->second[family].queueFlags & (VK_QUEUE_GRAPHICS_BIT | VK_QUEUE_COMPUTE_BIT | VK_QUEUE_TRANSFER_BIT)) != 0;
}

VkResult surface_capabilities(PhysicalDevice* pd, Surface* s, VkSurfaceCapabilitiesKHR* caps) {
  *caps = {};
  caps->minImageCount = kMinImageCount;
  caps->maxImageCount = 0;  // no limit but memory
  caps->maxImageArrayLayers = 1;
  caps->supportedTransforms = VK_SURFACE_TRANSFORM_IDENTITY_BIT_KHR;
  caps->currentTransform = VK_SURFACE_TRANSFORM_IDENTITY_BIT_KHR;
  caps->supportedCompositeAlpha = VK_COMPOSITE_ALPHA_OPAQUE_BIT_KHR | VK_COMPOSITE_ALPHA_INHERIT_BIT_KHR;
  caps->supportedUsageFlags = VK_IMAGE_USAGE_TRANSFER_SRC_BIT | VK_IMAGE_USAGE_TRANSFER_DST_BIT |
                              VK_IMAGE_USAGE_SAMPLED_BIT | VK_IMAGE_USAGE_STORAGE_BIT |
                              VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT | VK_IMAGE_USAGE_INPUT_ATTACHMENT_BIT;
  if (s->kind == Surface::Kind::kHeadless) {
    // The swapchain decides the size.
    VkPhysicalDeviceProperties props;
    entry<PFN_vkGetPhysicalDeviceProperties>("vkGetPhysicalDeviceProperties")(reinterpret_cast<VkPhysicalDevice>(pd),
                                                                              &props);
    caps->currentExtent = {0xFFFFFFFFu, 0xFFFFFFFFu};
    caps->minImageExtent = {1, 1};
    caps->maxImageExtent = {props.limits.maxImageDimension2D, props.limits.maxImageDimension2D};
    return VK_SUCCESS;
  }
  WindowGeometry g;
  switch (query_window(s->conn, s->window, &g)) {
    case WindowState::kOk:
      break;
    case WindowState::kGone:
      return VK_ERROR_SURFACE_LOST_KHR;
    case WindowState::kFailed:
      return VK_ERROR_OUT_OF_HOST_MEMORY;
  }
  // As on X11 natively: the window's size is the only size a swapchain should have.
  caps->currentExtent = {g.width, g.height};
  caps->minImageExtent = caps->currentExtent;
  caps->maxImageExtent = caps->currentExtent;
  return VK_SUCCESS;
}

namespace {

template <class T>
VkResult copy_list(const T* list, uint32_t n, uint32_t* count, T* out) {
  if (!out) {
    *count = n;
    return VK_SUCCESS;
  }
  const uint32_t k = std::min(*count, n);
  std::copy_n(list, k, out);
  *count = k;
  return k < n ? VK_INCOMPLETE : VK_SUCCESS;
}

// The formats a surface offers: none for a window whose depth cannot show BGRX pixels.
std::vector<VkSurfaceFormatKHR> surface_formats(Surface* s, VkResult* result) {
  *result = VK_SUCCESS;
  if (s->kind != Surface::Kind::kHeadless) {
    WindowGeometry g;
    const WindowState st = query_window(s->conn, s->window, &g);
    if (st != WindowState::kOk) {
      *result = st == WindowState::kGone ? VK_ERROR_SURFACE_LOST_KHR : VK_ERROR_OUT_OF_HOST_MEMORY;
      return {};
    }
    if (!depth_supported(s->conn, g.depth)) return {};
  }
  std::vector<VkSurfaceFormatKHR> out;
  for (VkFormat f : kSurfaceFormats) out.push_back({f, VK_COLOR_SPACE_SRGB_NONLINEAR_KHR});
  return out;
}

}  // namespace

}  // namespace bypass::icd::wsi

namespace bypass::icd {

using wsi::Surface;

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateXcbSurfaceKHR(VkInstance, const VkXcbSurfaceCreateInfoKHR* pCreateInfo,
                                                         const VkAllocationCallbacks*, VkSurfaceKHR* pSurface) {
  if (!wsi::xcb_api()) return VK_ERROR_INITIALIZATION_FAILED;
  Surface s;
  s.kind = Surface::Kind::kXcb;
  s.conn = pCreateInfo->connection;
  s.window = pCreateInfo->window;
  *pSurface = wsi::new_surface(s);
  return VK_SUCCESS;
}

VKAPI_ATTR VkBool32 VKAPI_CALL icd_vkGetPhysicalDeviceXcbPresentationSupportKHR(VkPhysicalDevice physicalDevice,
                                                                                uint32_t queueFamilyIndex,
                                                                                xcb_connection_t* connection,
                                                                                xcb_visualid_t visual_id) {
  if (!wsi::family_can_present(as<PhysicalDevice>(physicalDevice), queueFamilyIndex)) return VK_FALSE;
  return wsi::depth_supported(connection, wsi::visual_depth(connection, visual_id)) ? VK_TRUE : VK_FALSE;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateHeadlessSurfaceEXT(VkInstance, const VkHeadlessSurfaceCreateInfoEXT*,
                                                              const VkAllocationCallbacks*, VkSurfaceKHR* pSurface) {
  *pSurface = wsi::new_surface(Surface{});
  return VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroySurfaceKHR(VkInstance, VkSurfaceKHR surface, const VkAllocationCallbacks*) {
  forget_private_data(VK_OBJECT_TYPE_SURFACE_KHR, wire::handle_bits(surface));
  delete wsi::surface_of(surface);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetPhysicalDeviceSurfaceSupportKHR(VkPhysicalDevice physicalDevice,
                                                                        uint32_t queueFamilyIndex, VkSurfaceKHR surface,
                                                                        VkBool32* pSupported) {
  Surface* s = wsi::surface_of(surface);
  *pSupported = VK_FALSE;
  if (s->kind != Surface::Kind::kHeadless) {
    wsi::WindowGeometry g;
    const wsi::WindowState st = wsi::query_window(s->conn, s->window, &g);
    if (st == wsi::WindowState::kGone) return VK_ERROR_SURFACE_LOST_KHR;
    if (st != wsi::WindowState::kOk || !wsi::depth_supported(s->conn, g.depth)) return VK_SUCCESS;
  }
  *pSupported = wsi::family_can_present(as<PhysicalDevice>(physicalDevice), queueFamilyIndex) ? VK_TRUE : VK_FALSE;
  return VK_SUCCESS;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetPhysicalDeviceSurfaceCapabilitiesKHR(
    VkPhysicalDevice physicalDevice, VkSurfaceKHR surface, VkSurfaceCapabilitiesKHR* pSurfaceCapabilities) {
  return wsi::surface_capabilities(as<PhysicalDevice>(physicalDevice), wsi::surface_of(surface), pSurfaceCapabilities);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetPhysicalDeviceSurfaceCapabilities2KHR(
    VkPhysicalDevice physicalDevice, const VkPhysicalDeviceSurfaceInfo2KHR* pSurfaceInfo,
    VkSurfaceCapabilities2KHR* pSurfaceCapabilities) {
  const VkResult r =
      wsi::surface_capabilities(as<PhysicalDevice>(physicalDevice), wsi::surface_of(pSurfaceInfo->surface),
                                &pSurfaceCapabilities->surfaceCapabilities);
  if (r != VK_SUCCESS) return r;
  for (auto* p = static_cast<VkBaseOutStructure*>(pSurfaceCapabilities->pNext); p; p = p->pNext) {
    if (p->sType == VK_STRUCTURE_TYPE_SURFACE_PROTECTED_CAPABILITIES_KHR)
      reinterpret_cast<VkSurfaceProtectedCapabilitiesKHR*>(p)->supportsProtected = VK_FALSE;
  }
  return VK_SUCCESS;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetPhysicalDeviceSurfaceFormatsKHR(VkPhysicalDevice, VkSurfaceKHR surface,
                                                                        uint32_t* pSurfaceFormatCount,
                                                                        VkSurfaceFormatKHR* pSurfaceFormats) {
  VkResult r;
  const auto list = wsi::surface_formats(wsi::surface_of(surface), &r);
  if (r != VK_SUCCESS) return r;
  return wsi::copy_list(list.data(), static_cast<uint32_t>(list.size()), pSurfaceFormatCount, pSurfaceFormats);
}

VKAPI_ATTR VkResult VKAPI_CALL
icd_vkGetPhysicalDeviceSurfaceFormats2KHR(VkPhysicalDevice, const VkPhysicalDeviceSurfaceInfo2KHR* pSurfaceInfo,
                                          uint32_t* pSurfaceFormatCount, VkSurfaceFormat2KHR* pSurfaceFormats) {
  VkResult r;
  const auto list = wsi::surface_formats(wsi::surface_of(pSurfaceInfo->surface), &r);
  if (r != VK_SUCCESS) return r;
  const uint32_t n = static_cast<uint32_t>(list.size());
  if (!pSurfaceFormats) {
    *pSurfaceFormatCount = n;
    return VK_SUCCESS;
  }
  const uint32_t k = std::min(*pSurfaceFormatCount, n);
  for (uint32_t i = 0; i < k; ++i) pSurfaceFormats[i].surfaceFormat = list[i];
  *pSurfaceFormatCount = k;
  return k < n ? VK_INCOMPLETE : VK_SUCCESS;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetPhysicalDeviceSurfacePresentModesKHR(VkPhysicalDevice, VkSurfaceKHR surface,
                                                                             uint32_t* pPresentModeCount,
                                                                             VkPresentModeKHR* pPresentModes) {
  Surface* s = wsi::surface_of(surface);
  if (s->kind != Surface::Kind::kHeadless) {
    wsi::WindowGeometry g;
    if (wsi::query_window(s->conn, s->window, &g) == wsi::WindowState::kGone) return VK_ERROR_SURFACE_LOST_KHR;
  }
  return wsi::copy_list(wsi::kPresentModes, static_cast<uint32_t>(std::size(wsi::kPresentModes)), pPresentModeCount,
                        pPresentModes);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetPhysicalDevicePresentRectanglesKHR(VkPhysicalDevice physicalDevice,
                                                                           VkSurfaceKHR surface, uint32_t* pRectCount,
                                                                           VkRect2D* pRects) {
  VkSurfaceCapabilitiesKHR caps;
  const VkResult r = wsi::surface_capabilities(as<PhysicalDevice>(physicalDevice), wsi::surface_of(surface), &caps);
  if (r != VK_SUCCESS) return r;
  const VkRect2D rect{{0, 0}, caps.currentExtent};
  return wsi::copy_list(&rect, 1u, pRectCount, pRects);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetDeviceGroupPresentCapabilitiesKHR(VkDevice,
                                                                          VkDeviceGroupPresentCapabilitiesKHR* pCaps) {
  std::memset(pCaps->presentMask, 0, sizeof(pCaps->presentMask));
  pCaps->presentMask[0] = 1;
  pCaps->modes = VK_DEVICE_GROUP_PRESENT_MODE_LOCAL_BIT_KHR;
  return VK_SUCCESS;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetDeviceGroupSurfacePresentModesKHR(VkDevice, VkSurfaceKHR,
                                                                          VkDeviceGroupPresentModeFlagsKHR* pModes) {
  *pModes = VK_DEVICE_GROUP_PRESENT_MODE_LOCAL_BIT_KHR;
  return VK_SUCCESS;
}

}  // namespace bypass::icd
