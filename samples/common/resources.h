// Buffers and images with their own memory. One allocation per resource keeps the samples easy
// to follow and gives the remoting layer plenty of distinct allocations to track.
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <span>

#include "context.h"
#include "handles.h"
#include "output.h"

namespace bypass::samples {

enum class MemoryUse {
  kDeviceLocal,  // only the device touches it
  kUpload,       // the host writes, the device reads: host-visible, coherent if possible
  kReadback,     // the device writes, the host reads: host-visible, cached if possible
};

class Buffer {
 public:
  Buffer(const Context& ctx, VkDeviceSize size, VkBufferUsageFlags usage, MemoryUse use);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&&) = delete;
  Buffer& operator=(Buffer&&) = delete;

  VkBuffer get() const { return buffer_.get(); }
  VkDeviceSize size() const { return size_; }

  // The persistent mapping of a kUpload/kReadback buffer.
  template <typename T>
  std::span<T> mapped() const {
    return {static_cast<T*>(mapped_), static_cast<size_t>(size_ / sizeof(T))};
  }
  // Make host writes visible to the device (before the submit that reads them) and device
  // writes visible to the host (after the fence that covers them). No-ops on coherent memory.
  void flush() const;
  void invalidate() const;

 private:
  VkDevice device_;
  VkDeviceSize size_;
  UniqueMemory memory_;  // declared before buffer_: the buffer goes first
  UniqueBuffer buffer_;
  void* mapped_ = nullptr;
  bool coherent_ = true;
};

struct ImageDesc {
  uint32_t width = 0;
  uint32_t height = 0;
  uint32_t mip_levels = 1;
  VkFormat format = VK_FORMAT_R8G8B8A8_UNORM;
  VkImageUsageFlags usage = 0;
};

// A 2D colour image in device-local memory, with a view over all its mip levels.
class Image {
 public:
  Image(const Context& ctx, const ImageDesc& desc);

  VkImage get() const { return image_.get(); }
  VkImageView view() const { return view_.get(); }
  const ImageDesc& desc() const { return desc_; }

 private:
  ImageDesc desc_;
  UniqueMemory memory_;
  UniqueImage image_;
  UniqueImageView view_;
};

// Records a copy of mip level 0 of a tightly packed RGBA8 `image` (in TRANSFER_SRC_OPTIMAL)
// into `buffer` at offset 0.
void record_copy_image_to_buffer(VkCommandBuffer cmd, VkImage image, uint32_t width, uint32_t height, VkBuffer buffer);

// Copies a tightly packed RGBA8 image out of a readback buffer (after its fence).
Rgba8Image read_rgba8(const Buffer& buffer, uint32_t width, uint32_t height);

// vkCmdPipelineBarrier with one image memory barrier over the colour aspect.
struct ImageBarrier {
  VkImage image = VK_NULL_HANDLE;
  VkImageLayout old_layout = VK_IMAGE_LAYOUT_UNDEFINED;
  VkImageLayout new_layout = VK_IMAGE_LAYOUT_UNDEFINED;
  VkPipelineStageFlags src_stage = VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT;
  VkAccessFlags src_access = 0;
  VkPipelineStageFlags dst_stage = VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT;
  VkAccessFlags dst_access = 0;
  uint32_t base_mip = 0;
  uint32_t mip_count = 1;
};
void record_image_barrier(VkCommandBuffer cmd, const ImageBarrier& b);

// A global memory barrier (buffers, compute-to-compute and compute-to-host hazards).
void record_memory_barrier(VkCommandBuffer cmd, VkPipelineStageFlags src_stage, VkAccessFlags src_access,
                           VkPipelineStageFlags dst_stage, VkAccessFlags dst_access);

}  // namespace bypass::samples
