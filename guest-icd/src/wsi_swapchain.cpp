// VK_KHR_swapchain in the guest ICD. A swapchain is a set of ordinary images the ICD creates on
// the host through the generated entry points, one host-visible readback buffer per image
// (memory the guest maps: shared pages, or a memshare shadow refreshed by the invalidate
// after the wait), and a presenter thread per swapchain:
//
//   acquire  picks a free image and signals the program's semaphore/fence with an empty
//            submission (the image is free only once its last present is fully done);
//   present  submits one copy image -> readback buffer per swapchain, waiting on the present
//            semaphores, with a fence, and queues the image to the presenter; it returns at
//            once;
//   presenter waits for the fence, puts the pixels into the window (MIT-SHM or PutImage) in
//            the order the present mode asks for, reads the window's geometry in the same
//            round trip, and gives the image back.
//
// Only the program's own images reach the guest, and only through its own window.
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "bypass/base/log.h"
#include "bypass/memshare/client.h"
#include "bypass/memshare/region.h"
#include "config.h"
#include "wsi.h"
#include "wsi_x11.h"

namespace bypass::icd::wsi {

namespace {

using Clock = std::chrono::steady_clock;

// Entry points of the ICD itself (generated or hand-written), looked up once.
struct Vk {
#define BYPASS_WSI_VK(name) PFN_##name name = entry<PFN_##name>(#name);
  BYPASS_WSI_VK(vkCreateImage)
  BYPASS_WSI_VK(vkDestroyImage)
  BYPASS_WSI_VK(vkCreateBuffer)
  BYPASS_WSI_VK(vkDestroyBuffer)
  BYPASS_WSI_VK(vkGetImageMemoryRequirements)
  BYPASS_WSI_VK(vkGetBufferMemoryRequirements)
  BYPASS_WSI_VK(vkAllocateMemory)
  BYPASS_WSI_VK(vkFreeMemory)
  BYPASS_WSI_VK(vkBindImageMemory)
  BYPASS_WSI_VK(vkBindBufferMemory)
  BYPASS_WSI_VK(vkMapMemory)
  BYPASS_WSI_VK(vkInvalidateMappedMemoryRanges)
  BYPASS_WSI_VK(vkCreateCommandPool)
  BYPASS_WSI_VK(vkDestroyCommandPool)
  BYPASS_WSI_VK(vkAllocateCommandBuffers)
  BYPASS_WSI_VK(vkBeginCommandBuffer)
  BYPASS_WSI_VK(vkEndCommandBuffer)
  BYPASS_WSI_VK(vkCmdPipelineBarrier)
  BYPASS_WSI_VK(vkCmdCopyImageToBuffer)
  BYPASS_WSI_VK(vkCreateFence)
  BYPASS_WSI_VK(vkDestroyFence)
  BYPASS_WSI_VK(vkWaitForFences)
  BYPASS_WSI_VK(vkGetFenceStatus)
  BYPASS_WSI_VK(vkQueueSubmit)
  BYPASS_WSI_VK(vkGetDeviceQueue)
#undef BYPASS_WSI_VK
};

const Vk& vk() {
  static const Vk v;
  return v;
}

// How a swapchain's surface looks from the last put (or creation).
enum class Health { kOptimal, kSuboptimal, kSurfaceLost, kDeviceLost };

VkResult health_result(Health h) {
  switch (h) {
    case Health::kOptimal:
      return VK_SUCCESS;
    case Health::kSuboptimal:
      return VK_SUBOPTIMAL_KHR;
    case Health::kSurfaceLost:
      return VK_ERROR_SURFACE_LOST_KHR;
    case Health::kDeviceLost:
      return VK_ERROR_DEVICE_LOST;
  }
  return VK_ERROR_UNKNOWN;
}

const char* mode_name(VkPresentModeKHR m) {
  switch (m) {
    case VK_PRESENT_MODE_IMMEDIATE_KHR:
      return "IMMEDIATE";
    case VK_PRESENT_MODE_MAILBOX_KHR:
      return "MAILBOX";
    case VK_PRESENT_MODE_FIFO_KHR:
      return "FIFO";
    case VK_PRESENT_MODE_FIFO_RELAXED_KHR:
      return "FIFO_RELAXED";
    default:
      return "other";
  }
}

uint32_t pick_memory_type(Device* dev, uint32_t bits, VkMemoryPropertyFlags want, VkMemoryPropertyFlags prefer,
                          VkMemoryPropertyFlags avoid) {
  const auto& props = memory_properties(dev->physical);
  uint32_t best = UINT32_MAX;
  int best_score = -1;
  for (uint32_t i = 0; i < props.memoryTypeCount; ++i) {
    const VkMemoryPropertyFlags f = props.memoryTypes[i].propertyFlags;
    if (!(bits & (1u << i)) || (f & want) != want) continue;
    const int score = ((f & prefer) == prefer ? 2 : 0) + ((f & avoid) ? 0 : 1);
    if (score > best_score) {
      best = i;
      best_score = score;
    }
  }
  return best;
}

// The queue family of one of the device's queues.
uint32_t family_of(Device* dev, Queue* q) {
  std::lock_guard lock(dev->mu);
  for (auto& [key, queue] : dev->queues)
    if (queue == q) return std::get<1>(key);
  return 0;
}

// One vkQueuePresentKHR's copy submission; its fence goes when the last swapchain is done.
struct PresentBatch {
  Device* dev = nullptr;
  VkFence fence = VK_NULL_HANDLE;
  ~PresentBatch() {
    if (fence) vk().vkDestroyFence(reinterpret_cast<VkDevice>(dev), fence, nullptr);
  }
};

}  // namespace

class Swapchain {
 public:
  static VkResult create(Device* dev, const VkSwapchainCreateInfoKHR* info, Swapchain** out);
  ~Swapchain();

  VkResult acquire(uint64_t timeout, VkSemaphore semaphore, VkFence fence, uint32_t* index);
  // The command buffer that copies image `index` for a present on a queue of `family`;
  // VK_NULL_HANDLE when nothing is copied (headless). *result: this swapchain's answer.
  VkCommandBuffer begin_present(uint32_t index, uint32_t family, VkResult* result);
  void queue_present(uint32_t index, std::shared_ptr<PresentBatch> batch);
  void retire();
  const std::vector<VkImage>& images() const { return handles_; }

 private:
  struct Image {
    VkImage image = VK_NULL_HANDLE;
    VkDeviceMemory memory = VK_NULL_HANDLE;
    VkBuffer readback = VK_NULL_HANDLE;
    VkDeviceMemory readback_memory = VK_NULL_HANDLE;
    const uint8_t* pixels = nullptr;
    memshare::Name host_name;  // the readback memory in bypassd's memshare service
    enum class State { kFree, kAcquired, kPresenting } state = State::kFree;
  };
  struct CopyPool {
    VkCommandPool pool = VK_NULL_HANDLE;
    std::vector<VkCommandBuffer> cbs;
  };
  struct Job {
    uint32_t index;
    std::shared_ptr<PresentBatch> batch;
  };

  Swapchain() = default;
  VkResult create_images(const VkSwapchainCreateInfoKHR* info);
  bool record_copies(CopyPool& cp);
  VkQueue signal_queue();
  void presenter();
  bool wait_done(const Job& job);
  void show(uint32_t index);
  void release(uint32_t index);
  VkDevice device() const { return reinterpret_cast<VkDevice>(dev_); }

  Device* dev_ = nullptr;
  Surface surface_;
  // Presentation through memshare: each finished frame is transferred from its image's
  // readback memory (named by bypassd) into a frame buffer the window is shown from: the
  // blitter's MIT-SHM segment, else frame_.
  memshare::Client* present_ = nullptr;
  std::optional<memshare::Region> frame_;
  memshare::Name frame_name_;
  memshare::Client* frame_owner_ = nullptr;  // who named the frame buffer, for the release
  const uint8_t* frame_pixels_ = nullptr;    // the frame buffer: the MIT-SHM segment or frame_
  uint64_t frame_bytes_ = 0;
  VkExtent2D extent_{};
  VkFormat format_ = VK_FORMAT_UNDEFINED;
  VkPresentModeKHR mode_ = VK_PRESENT_MODE_FIFO_KHR;
  std::vector<Image> images_;
  std::vector<VkImage> handles_;
  std::unique_ptr<WindowBlitter> blitter_;  // presenter thread only, after creation
  std::chrono::nanoseconds period_{0};
  Clock::time_point epoch_;

  std::mutex mu_;
  std::condition_variable free_cv_;  // an image became free, or the surface was lost
  std::condition_variable jobs_cv_;  // a present was queued, or stopping_
  std::deque<uint32_t> free_;        // free images, oldest first
  std::deque<Job> jobs_;
  std::map<uint32_t, CopyPool> copies_;  // queue family -> its copy command buffers
  bool retired_ = false;
  bool stopping_ = false;
  // Written by the presenter after each put; read by acquire and present without the lock.
  // Relaxed: it is a status report, nothing else is published through it.
  std::atomic<Health> health_{Health::kOptimal};
  std::thread thread_;

  // Statistics (BYPASS_WSI_STATS=1 prints them when the swapchain goes).
  uint64_t presents_ = 0;     // under mu_
  uint64_t shown_ = 0;        // presenter thread
  uint64_t transferred_ = 0;  // presenter thread: frames moved by memshare transfers
  uint64_t dropped_ = 0;      // presenter thread
  std::chrono::nanoseconds put_time_{0};
};

VkResult Swapchain::create(Device* dev, const VkSwapchainCreateInfoKHR* info, Swapchain** out) {
  if (info->imageExtent.width == 0 || info->imageExtent.height == 0 || info->imageArrayLayers == 0)
    return VK_ERROR_INITIALIZATION_FAILED;
  std::unique_ptr<Swapchain> sc(new Swapchain());
  sc->dev_ = dev;
  sc->surface_ = *surface_of(info->surface);
  sc->extent_ = info->imageExtent;
  sc->format_ = info->imageFormat;
  sc->mode_ = info->presentMode;
  // Refresh clock for FIFO/MAILBOX pacing; 0 (the default): a frame is shown as soon as the
  // window system takes it, as lavapipe's own X11 WSI does on Xvfb.
  sc->period_ = config().wsi_refresh_period;
  sc->epoch_ = Clock::now();
  if (sc->surface_.kind != Surface::Kind::kHeadless) {
    auto blitter = WindowBlitter::create(sc->surface_.conn, sc->surface_.window, info->imageExtent.width,
                                         info->imageExtent.height);
    if (!blitter) {
      WindowGeometry g;
      if (query_window(sc->surface_.conn, sc->surface_.window, &g) == WindowState::kGone)
        return VK_ERROR_SURFACE_LOST_KHR;
      base::log(base::LogLevel::kError, "swapchain: %s", blitter.error().message.c_str());
      return VK_ERROR_INITIALIZATION_FAILED;
    }
    sc->blitter_ = std::move(blitter).value();
    WindowGeometry g;
    if (query_window(sc->surface_.conn, sc->surface_.window, &g) == WindowState::kOk &&
        (g.width != sc->extent_.width || g.height != sc->extent_.height))
      sc->health_.store(Health::kSuboptimal, std::memory_order_relaxed);
  }
  const VkResult r = sc->create_images(info);
  if (r != VK_SUCCESS) return r;  // the destructor frees what was made
  sc->thread_ = std::thread([s = sc.get()] { s->presenter(); });
  *out = sc.release();
  return VK_SUCCESS;
}

VkResult Swapchain::create_images(const VkSwapchainCreateInfoKHR* info) {
  const Vk& v = vk();
  const VkDevice d = device();
  const uint32_t count = std::max<uint32_t>(info->minImageCount, 1);
  const VkImageFormatListCreateInfo* list = nullptr;
  for (auto* p = static_cast<const VkBaseInStructure*>(info->pNext); p; p = p->pNext)
    if (p->sType == VK_STRUCTURE_TYPE_IMAGE_FORMAT_LIST_CREATE_INFO)
      list = reinterpret_cast<const VkImageFormatListCreateInfo*>(p);
  VkImageFormatListCreateInfo format_list{};
  if (list) {
    format_list = *list;
    format_list.pNext = nullptr;
  }
  const bool readback = surface_.kind != Surface::Kind::kHeadless;
  const VkDeviceSize row = VkDeviceSize{extent_.width} * 4;
  frame_bytes_ = row * extent_.height;
  // Shadow memory means a host we share no memory with: the frames come back through the
  // readback memory's read barrier. BYPASS_WSI_TRANSFER=0 does the same on a local host.
  if (readback && !shadow_memory_enabled() && config().wsi_transfer) {
    present_ = dev_->conn->present_client();
    // Straight into the X server's MIT-SHM segment where there is one: the transfer is then
    // the frame's only copy in the guest.
    const int segment = present_ && blitter_ ? blitter_->segment_fd() : -1;
    if (segment >= 0 && blitter_->segment_size() >= frame_bytes_) {
      if (auto name = present_->name(segment, 0, blitter_->segment_size())) {
        frame_name_ = name.value();
        frame_owner_ = present_;
        frame_pixels_ = blitter_->segment();
      }
    }
    if (present_ && frame_name_.empty()) {
      auto region = memshare::Region::create(frame_bytes_, "bypass-wsi-frame");
      auto name = region ? present_->name(region.value()) : memshare::Result<memshare::Name>(region.error());
      if (name) {
        frame_.emplace(std::move(region.value()));
        frame_name_ = name.value();
        frame_owner_ = present_;
        frame_pixels_ = reinterpret_cast<const uint8_t*>(frame_->data());
      } else {
        base::log(base::LogLevel::kWarn, "wsi: no memshare frame buffer (%s); presenting from mapped memory",
                  name.error().message.c_str());
        present_ = nullptr;
      }
    }
  }
  images_.resize(count);
  for (uint32_t i = 0; i < count; ++i) {
    Image& img = images_[i];
    VkImageCreateInfo ci{VK_STRUCTURE_TYPE_IMAGE_CREATE_INFO};
    ci.pNext = list ? &format_list : nullptr;
    if (info->flags & VK_SWAPCHAIN_CREATE_MUTABLE_FORMAT_BIT_KHR)
      ci.flags |= VK_IMAGE_CREATE_MUTABLE_FORMAT_BIT | VK_IMAGE_CREATE_EXTENDED_USAGE_BIT;
    ci.imageType = VK_IMAGE_TYPE_2D;
    ci.format = info->imageFormat;
    ci.extent = {extent_.width, extent_.height, 1};
    ci.mipLevels = 1;
    ci.arrayLayers = info->imageArrayLayers;
    ci.samples = VK_SAMPLE_COUNT_1_BIT;
    ci.tiling = VK_IMAGE_TILING_OPTIMAL;
    ci.usage = info->imageUsage | (readback ? VK_IMAGE_USAGE_TRANSFER_SRC_BIT : 0);
    ci.sharingMode = info->imageSharingMode;
    ci.queueFamilyIndexCount = info->imageSharingMode == VK_SHARING_MODE_CONCURRENT ? info->queueFamilyIndexCount : 0;
    ci.pQueueFamilyIndices = info->imageSharingMode == VK_SHARING_MODE_CONCURRENT ? info->pQueueFamilyIndices : nullptr;
    ci.initialLayout = VK_IMAGE_LAYOUT_UNDEFINED;
    VkResult r = v.vkCreateImage(d, &ci, nullptr, &img.image);
    if (r != VK_SUCCESS) return r;
    VkMemoryRequirements req;
    v.vkGetImageMemoryRequirements(d, img.image, &req);
    VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    ai.allocationSize = req.size;
    // Not host-visible where the driver has such a type: the guest never maps these, and
    // host-visible memory costs a shared memfd (or shadow-memory traffic) for nothing.
    ai.memoryTypeIndex = pick_memory_type(dev_, req.memoryTypeBits, 0, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT,
                                          VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT);
    if (ai.memoryTypeIndex == UINT32_MAX) return VK_ERROR_OUT_OF_DEVICE_MEMORY;
    if ((r = v.vkAllocateMemory(d, &ai, nullptr, &img.memory)) != VK_SUCCESS) return r;
    if ((r = v.vkBindImageMemory(d, img.image, img.memory, 0)) != VK_SUCCESS) return r;
    handles_.push_back(img.image);
    free_.push_back(i);
    if (!readback) continue;
    VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
    bi.size = row * extent_.height;
    bi.usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    if ((r = v.vkCreateBuffer(d, &bi, nullptr, &img.readback)) != VK_SUCCESS) return r;
    v.vkGetBufferMemoryRequirements(d, img.readback, &req);
    ai.allocationSize = req.size;
    // Cached: the guest reads every byte of it.
    ai.memoryTypeIndex = pick_memory_type(dev_, req.memoryTypeBits,
                                          VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                                          VK_MEMORY_PROPERTY_HOST_CACHED_BIT, 0);
    if (ai.memoryTypeIndex == UINT32_MAX) return VK_ERROR_OUT_OF_DEVICE_MEMORY;
    if ((r = v.vkAllocateMemory(d, &ai, nullptr, &img.readback_memory)) != VK_SUCCESS) return r;
    if ((r = v.vkBindBufferMemory(d, img.readback, img.readback_memory, 0)) != VK_SUCCESS) return r;
    void* p = nullptr;
    if ((r = v.vkMapMemory(d, img.readback_memory, 0, VK_WHOLE_SIZE, 0, &p)) != VK_SUCCESS) return r;
    img.pixels = static_cast<const uint8_t*>(p);
    {
      std::lock_guard lock(dev_->mu);
      if (auto it = dev_->memory.find(wire::handle_bits(img.readback_memory)); it != dev_->memory.end())
        it->second.explicit_reads = true;
    }
    if (present_ && !dev_->conn->present_name(wire::handle_bits(img.readback_memory), 0, frame_bytes_, &img.host_name))
      present_ = nullptr;  // every image or none: present from the mappings
  }
  return dev_->conn->alive() ? VK_SUCCESS : VK_ERROR_DEVICE_LOST;
}

Swapchain::~Swapchain() {
  if (thread_.joinable()) {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    jobs_cv_.notify_all();
    thread_.join();  // shows (or drops, in MAILBOX) what was still queued
  }
  // The service keeps a named memfd until its name is released (or the session ends).
  if (frame_owner_ && !frame_name_.empty()) (void)frame_owner_->release(frame_name_);
  // A report the user asked for (BYPASS_WSI_STATS), not a log line: printed whatever BYPASS_LOG
  // says, in the form the tests parse.
  if (config().wsi_stats)
    std::fprintf(
        stderr,
        "bypass wsi: swapchain %ux%u %s, %zu images, %s: presents %llu, shown %llu, dropped %llu, put %.1f us avg, "
        "memshare transfers %llu into the %s\n",
        extent_.width, extent_.height, mode_name(mode_), images_.size(),
        surface_.kind == Surface::Kind::kHeadless ? "headless"
        : blitter_ && blitter_->uses_shm()        ? "MIT-SHM"
                                                  : "PutImage",
        static_cast<unsigned long long>(presents_), static_cast<unsigned long long>(shown_),
        static_cast<unsigned long long>(dropped_),
        shown_ ? std::chrono::duration<double, std::micro>(put_time_).count() / static_cast<double>(shown_) : 0.0,
        static_cast<unsigned long long>(transferred_),
        frame_          ? "frame buffer"
        : frame_pixels_ ? "MIT-SHM segment"
                        : "-");
  blitter_.reset();
  const Vk& v = vk();
  const VkDevice d = device();
  for (auto& [family, cp] : copies_) v.vkDestroyCommandPool(d, cp.pool, nullptr);  // frees its buffers
  for (Image& img : images_) {
    if (img.readback) v.vkDestroyBuffer(d, img.readback, nullptr);
    if (img.readback_memory) v.vkFreeMemory(d, img.readback_memory, nullptr);
    if (img.image) v.vkDestroyImage(d, img.image, nullptr);
    if (img.memory) v.vkFreeMemory(d, img.memory, nullptr);
  }
}

void Swapchain::retire() {
  std::lock_guard lock(mu_);
  retired_ = true;
  free_cv_.notify_all();
}

VkQueue Swapchain::signal_queue() {
  {
    std::lock_guard lock(dev_->mu);
    if (!dev_->queues.empty()) return reinterpret_cast<VkQueue>(dev_->queues.begin()->second);
  }
  // A program that acquires before it asked for any queue: every device has queue 0 of a family.
  VkQueue q = VK_NULL_HANDLE;
  vk().vkGetDeviceQueue(device(), 0, 0, &q);
  return q;
}

VkResult Swapchain::acquire(uint64_t timeout, VkSemaphore semaphore, VkFence fence, uint32_t* index) {
  uint32_t i;
  {
    std::unique_lock lock(mu_);
    auto ready = [&] {
      const Health h = health_.load(std::memory_order_relaxed);
      return retired_ || !free_.empty() || h == Health::kSurfaceLost || h == Health::kDeviceLost ||
             !dev_->conn->alive();
    };
    if (!ready()) {
      if (timeout == 0) return VK_NOT_READY;
      // Waits longer than a few centuries are unbounded.
      if (timeout >= uint64_t{1} << 62) {
        free_cv_.wait(lock, ready);
      } else if (!free_cv_.wait_for(lock, std::chrono::nanoseconds(timeout), ready)) {
        return VK_TIMEOUT;
      }
    }
    if (!dev_->conn->alive()) return VK_ERROR_DEVICE_LOST;
    if (retired_) return VK_ERROR_OUT_OF_DATE_KHR;
    const Health h = health_.load(std::memory_order_relaxed);
    if (h == Health::kSurfaceLost || h == Health::kDeviceLost) return health_result(h);
    i = free_.front();
    free_.pop_front();
    images_[i].state = Image::State::kAcquired;
  }
  // The image is idle (its last present's copy finished): signal at once, in queue order.
  if (semaphore || fence) {
    VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.signalSemaphoreCount = semaphore ? 1 : 0;
    si.pSignalSemaphores = &semaphore;
    const VkResult r = vk().vkQueueSubmit(signal_queue(), 1, &si, fence);
    if (r != VK_SUCCESS) return r;
  }
  *index = i;
  return health_result(health_.load(std::memory_order_relaxed));
}

bool Swapchain::record_copies(CopyPool& cp) {
  const Vk& v = vk();
  const VkDevice d = device();
  cp.cbs.resize(images_.size());
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = cp.pool;
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = static_cast<uint32_t>(images_.size());
  if (v.vkAllocateCommandBuffers(d, &ai, cp.cbs.data()) != VK_SUCCESS) return false;
  for (size_t i = 0; i < images_.size(); ++i) {
    const VkCommandBuffer cb = cp.cbs[i];
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    v.vkBeginCommandBuffer(cb, &bi);
    VkImageMemoryBarrier to_src{VK_STRUCTURE_TYPE_IMAGE_MEMORY_BARRIER};
    to_src.srcAccessMask = VK_ACCESS_MEMORY_WRITE_BIT;
    to_src.dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT;
    to_src.oldLayout = VK_IMAGE_LAYOUT_PRESENT_SRC_KHR;
    to_src.newLayout = VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL;
    to_src.srcQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
    to_src.dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
    to_src.image = images_[i].image;
    to_src.subresourceRange = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 1, 0, 1};
    v.vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 0, nullptr, 0,
                           nullptr, 1, &to_src);
    VkBufferImageCopy region{};
    region.imageSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
    region.imageExtent = {extent_.width, extent_.height, 1};
    v.vkCmdCopyImageToBuffer(cb, images_[i].image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, images_[i].readback, 1,
                             &region);
    VkImageMemoryBarrier back = to_src;
    back.srcAccessMask = VK_ACCESS_TRANSFER_READ_BIT;
    back.dstAccessMask = 0;
    back.oldLayout = VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL;
    back.newLayout = VK_IMAGE_LAYOUT_PRESENT_SRC_KHR;
    VkBufferMemoryBarrier to_host{VK_STRUCTURE_TYPE_BUFFER_MEMORY_BARRIER};
    to_host.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    to_host.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    to_host.srcQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
    to_host.dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
    to_host.buffer = images_[i].readback;
    to_host.size = VK_WHOLE_SIZE;
    v.vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
                           VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, 0, 0, nullptr, 1,
                           &to_host, 1, &back);
    if (v.vkEndCommandBuffer(cb) != VK_SUCCESS) return false;
  }
  return true;
}

VkCommandBuffer Swapchain::begin_present(uint32_t index, uint32_t family, VkResult* result) {
  std::lock_guard lock(mu_);
  if (index >= images_.size() || images_[index].state != Image::State::kAcquired) {
    // Presenting an image the program does not own is invalid usage; refuse it without harm.
    *result = VK_ERROR_OUT_OF_DATE_KHR;
    return VK_NULL_HANDLE;
  }
  *result = health_result(health_.load(std::memory_order_relaxed));
  if (surface_.kind == Surface::Kind::kHeadless || *result == VK_ERROR_SURFACE_LOST_KHR) return VK_NULL_HANDLE;
  CopyPool& cp = copies_[family];
  if (!cp.pool) {
    VkCommandPoolCreateInfo pi{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pi.queueFamilyIndex = family;
    if (vk().vkCreateCommandPool(device(), &pi, nullptr, &cp.pool) != VK_SUCCESS || !record_copies(cp)) {
      *result = VK_ERROR_OUT_OF_HOST_MEMORY;
      return VK_NULL_HANDLE;
    }
  }
  return cp.cbs[index];
}

void Swapchain::queue_present(uint32_t index, std::shared_ptr<PresentBatch> batch) {
  {
    std::lock_guard lock(mu_);
    if (index >= images_.size() || images_[index].state != Image::State::kAcquired) return;
    images_[index].state = Image::State::kPresenting;
    jobs_.push_back(Job{index, std::move(batch)});
    ++presents_;
  }
  jobs_cv_.notify_one();
}

bool Swapchain::wait_done(const Job& job) {
  const VkResult r = vk().vkWaitForFences(device(), 1, &job.batch->fence, VK_TRUE, UINT64_MAX);
  if (r != VK_SUCCESS) health_.store(Health::kDeviceLost, std::memory_order_relaxed);
  return r == VK_SUCCESS;
}

void Swapchain::release(uint32_t index) {
  {
    std::lock_guard lock(mu_);
    images_[index].state = Image::State::kFree;
    free_.push_back(index);
  }
  free_cv_.notify_all();
}

void Swapchain::show(uint32_t index) {
  ++shown_;
  if (surface_.kind == Surface::Kind::kHeadless) return;
  const Health h = health_.load(std::memory_order_relaxed);
  if (h == Health::kSurfaceLost || h == Health::kDeviceLost) return;
  const uint8_t* pixels = images_[index].pixels;
  if (present_) {
    // The frame moves by a memshare transfer, on the service's workers, into frame_.
    auto moved = present_->transfer(images_[index].host_name, frame_name_, memshare::CopyRange{0, 0, frame_bytes_});
    auto done = moved ? moved->wait(std::chrono::seconds(5)) : memshare::Result<uint64_t>(moved.error());
    if (done && done.value() == frame_bytes_) {
      pixels = frame_pixels_;
      ++transferred_;
    } else {
      base::log(base::LogLevel::kWarn, "wsi: frame transfer failed (%s); presenting from mapped memory",
                done ? "short transfer" : done.error().message.c_str());
      present_ = nullptr;
    }
  } else {
    // Shadow memory: the host's pages come back here; shared memory: nothing to do.
    VkMappedMemoryRange range{VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE};
    range.memory = images_[index].readback_memory;
    range.size = VK_WHOLE_SIZE;
    vk().vkInvalidateMappedMemoryRanges(device(), 1, &range);
  }
  const auto t0 = Clock::now();
  WindowGeometry g;
  const WindowState st = blitter_->put(pixels, extent_.width, extent_.height, size_t{extent_.width} * 4, &g);
  put_time_ += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0);
  if (st == WindowState::kGone) {
    health_.store(Health::kSurfaceLost, std::memory_order_relaxed);
    free_cv_.notify_all();
  } else if (st == WindowState::kOk) {
    const bool fits = g.width == extent_.width && g.height == extent_.height;
    health_.store(fits ? Health::kOptimal : Health::kSuboptimal, std::memory_order_relaxed);
  }
}

void Swapchain::presenter() {
  const bool replace = mode_ == VK_PRESENT_MODE_MAILBOX_KHR || mode_ == VK_PRESENT_MODE_IMMEDIATE_KHR;
  const bool paced = period_.count() > 0 && mode_ != VK_PRESENT_MODE_IMMEDIATE_KHR;
  Clock::time_point last_shown = epoch_ - period_;
  // The first refresh at or after `t`.
  auto next_refresh = [&](Clock::time_point t) {
    const auto since = t - epoch_;
    const auto n = (since.count() + period_.count() - 1) / period_.count();
    return epoch_ + period_ * n;
  };
  while (true) {
    Job job;
    std::vector<Job> replaced;
    {
      std::unique_lock lock(mu_);
      jobs_cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, nothing left
      if (replace) {
        // MAILBOX/IMMEDIATE: the newest present replaces those still waiting.
        while (jobs_.size() > 1) {
          replaced.push_back(std::move(jobs_.front()));
          jobs_.pop_front();
        }
      }
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    for (Job& r : replaced) {
      wait_done(r);  // its copy must be finished before the image is rendered to again
      ++dropped_;
      release(r.index);
    }
    if (!wait_done(job)) {
      release(job.index);
      continue;
    }
    if (paced) {
      const auto now = Clock::now();
      const auto due = last_shown + period_;
      // FIFO_RELAXED: a frame that missed its refresh goes out at once.
      const bool late = mode_ == VK_PRESENT_MODE_FIFO_RELAXED_KHR && now > due;
      const auto at = late ? now : next_refresh(std::max(now, due));
      if (mode_ == VK_PRESENT_MODE_MAILBOX_KHR) {
        // Until the refresh, each newer present replaces this one as soon as its copy is
        // done, and the replaced image goes back at once: the program never waits for the
        // display, only the newest frame is shown.
        while (true) {
          std::vector<Job> newer;
          {
            std::unique_lock lock(mu_);
            if (!jobs_cv_.wait_until(lock, at, [&] { return stopping_ || !jobs_.empty(); })) break;
            if (jobs_.empty()) break;  // stopping: show what we have now
            while (!jobs_.empty()) {
              newer.push_back(std::move(jobs_.front()));
              jobs_.pop_front();
            }
          }
          for (Job& n : newer) {
            if (!wait_done(n)) {
              release(n.index);
              continue;
            }
            ++dropped_;
            release(job.index);
            job = std::move(n);
          }
        }
      } else {
        std::this_thread::sleep_until(at);
      }
      last_shown = at;
    }
    show(job.index);
    release(job.index);
  }
}

}  // namespace bypass::icd::wsi

namespace bypass::icd {

using wsi::Swapchain;

namespace {

Swapchain* swapchain_of(VkSwapchainKHR s) { return reinterpret_cast<Swapchain*>(s); }

}  // namespace

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateSwapchainKHR(VkDevice device, const VkSwapchainCreateInfoKHR* pCreateInfo,
                                                        const VkAllocationCallbacks*, VkSwapchainKHR* pSwapchain) {
  if (pCreateInfo->oldSwapchain) swapchain_of(pCreateInfo->oldSwapchain)->retire();
  Swapchain* sc = nullptr;
  const VkResult r = Swapchain::create(as<Device>(device), pCreateInfo, &sc);
  if (r != VK_SUCCESS) return r;
  *pSwapchain = reinterpret_cast<VkSwapchainKHR>(sc);
  return VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroySwapchainKHR(VkDevice, VkSwapchainKHR swapchain, const VkAllocationCallbacks*) {
  forget_private_data(VK_OBJECT_TYPE_SWAPCHAIN_KHR, wire::handle_bits(swapchain));
  delete swapchain_of(swapchain);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetSwapchainImagesKHR(VkDevice, VkSwapchainKHR swapchain,
                                                           uint32_t* pSwapchainImageCount, VkImage* pSwapchainImages) {
  const auto& images = swapchain_of(swapchain)->images();
  const uint32_t n = static_cast<uint32_t>(images.size());
  if (!pSwapchainImages) {
    *pSwapchainImageCount = n;
    return VK_SUCCESS;
  }
  const uint32_t k = std::min(*pSwapchainImageCount, n);
  std::copy_n(images.begin(), k, pSwapchainImages);
  *pSwapchainImageCount = k;
  return k < n ? VK_INCOMPLETE : VK_SUCCESS;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkAcquireNextImageKHR(VkDevice, VkSwapchainKHR swapchain, uint64_t timeout,
                                                         VkSemaphore semaphore, VkFence fence, uint32_t* pImageIndex) {
  return swapchain_of(swapchain)->acquire(timeout, semaphore, fence, pImageIndex);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkAcquireNextImage2KHR(VkDevice, const VkAcquireNextImageInfoKHR* pAcquireInfo,
                                                          uint32_t* pImageIndex) {
  return swapchain_of(pAcquireInfo->swapchain)
      ->acquire(pAcquireInfo->timeout, pAcquireInfo->semaphore, pAcquireInfo->fence, pImageIndex);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkQueuePresentKHR(VkQueue queue, const VkPresentInfoKHR* pPresentInfo) {
  auto* q = as<Queue>(queue);
  Device* dev = q->device;
  const uint32_t family = wsi::family_of(dev, q);
  const uint32_t n = pPresentInfo->swapchainCount;
  std::vector<VkResult> results(n, VK_SUCCESS);
  std::vector<VkCommandBuffer> copies;
  for (uint32_t i = 0; i < n; ++i) {
    const VkCommandBuffer cb =
        swapchain_of(pPresentInfo->pSwapchains[i])->begin_present(pPresentInfo->pImageIndices[i], family, &results[i]);
    if (cb) copies.push_back(cb);
  }
  // One submission for every swapchain: the semaphore waits happen even for a present the
  // surface rejects, as the spec says; the fence tells the presenters the copies are done.
  const wsi::Vk& v = wsi::vk();
  const VkDevice device = reinterpret_cast<VkDevice>(dev);
  auto batch = std::make_shared<wsi::PresentBatch>();
  batch->dev = dev;
  VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkResult r = v.vkCreateFence(device, &fi, nullptr, &batch->fence);
  std::vector<VkPipelineStageFlags> stages(pPresentInfo->waitSemaphoreCount, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT);
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.waitSemaphoreCount = pPresentInfo->waitSemaphoreCount;
  si.pWaitSemaphores = pPresentInfo->pWaitSemaphores;
  si.pWaitDstStageMask = stages.data();
  si.commandBufferCount = static_cast<uint32_t>(copies.size());
  si.pCommandBuffers = copies.data();
  if (r == VK_SUCCESS) r = v.vkQueueSubmit(queue, 1, &si, batch->fence);
  for (uint32_t i = 0; i < n; ++i) {
    swapchain_of(pPresentInfo->pSwapchains[i])->queue_present(pPresentInfo->pImageIndices[i], batch);
    if (r != VK_SUCCESS) results[i] = r;
  }
  if (pPresentInfo->pResults) std::copy(results.begin(), results.end(), pPresentInfo->pResults);
  VkResult overall = VK_SUCCESS;
  for (VkResult x : results) {
    if (x < 0) return x;
    if (x == VK_SUBOPTIMAL_KHR) overall = x;
  }
  return overall;
}

}  // namespace bypass::icd
