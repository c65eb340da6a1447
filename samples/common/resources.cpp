#include "resources.h"

#include <stdexcept>

#include "vk_check.h"

namespace bypass::samples {

Buffer::Buffer(const Context& ctx, VkDeviceSize size, VkBufferUsageFlags usage, MemoryUse use)
    : device_(ctx.device()), size_(size) {
  VkBufferCreateInfo info{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  info.size = size;
  info.usage = usage;
  info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  vk_check(vkCreateBuffer(device_, &info, nullptr, buffer_.put(device_)), "vkCreateBuffer");

  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(device_, buffer_.get(), &req);
  VkMemoryPropertyFlags required = 0;
  VkMemoryPropertyFlags preferred = 0;
  switch (use) {
    case MemoryUse::kDeviceLocal:
      preferred = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
      break;
    case MemoryUse::kUpload:
      required = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
      preferred = VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
      break;
    case MemoryUse::kReadback:
      required = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
      preferred = VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
      break;
  }
  uint32_t type = ctx.find_memory_type(req.memoryTypeBits, required, preferred);
  coherent_ = (ctx.memory_properties().memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT) != 0;

  VkMemoryAllocateInfo alloc{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  alloc.allocationSize = req.size;
  alloc.memoryTypeIndex = type;
  vk_check(vkAllocateMemory(device_, &alloc, nullptr, memory_.put(device_)), "vkAllocateMemory");
  vk_check(vkBindBufferMemory(device_, buffer_.get(), memory_.get(), 0), "vkBindBufferMemory");
  if (use != MemoryUse::kDeviceLocal) {
    vk_check(vkMapMemory(device_, memory_.get(), 0, VK_WHOLE_SIZE, 0, &mapped_), "vkMapMemory");
  }
}

Buffer::~Buffer() {
  if (mapped_ != nullptr) vkUnmapMemory(device_, memory_.get());
}

void Buffer::flush() const {
  if (coherent_ || mapped_ == nullptr) return;
  VkMappedMemoryRange range{VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE};
  range.memory = memory_.get();
  range.size = VK_WHOLE_SIZE;
  vk_check(vkFlushMappedMemoryRanges(device_, 1, &range), "vkFlushMappedMemoryRanges");
}

void Buffer::invalidate() const {
  if (coherent_ || mapped_ == nullptr) return;
  VkMappedMemoryRange range{VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE};
  range.memory = memory_.get();
  range.size = VK_WHOLE_SIZE;
  vk_check(vkInvalidateMappedMemoryRanges(device_, 1, &range), "vkInvalidateMappedMemoryRanges");
}

Image::Image(const Context& ctx, const ImageDesc& desc) : desc_(desc) {
  VkDevice device = ctx.device();
  VkImageCreateInfo info{VK_STRUCTURE_TYPE_IMAGE_CREATE_INFO};
  info.imageType = VK_IMAGE_TYPE_2D;
  info.format = desc.format;
  info.extent = {desc.width, desc.height, 1};
  info.mipLevels = desc.mip_levels;
  info.arrayLayers = 1;
  info.samples = VK_SAMPLE_COUNT_1_BIT;
  info.tiling = VK_IMAGE_TILING_OPTIMAL;
  info.usage = desc.usage;
  info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  info.initialLayout = VK_IMAGE_LAYOUT_UNDEFINED;
  vk_check(vkCreateImage(device, &info, nullptr, image_.put(device)), "vkCreateImage");

  VkMemoryRequirements req;
  vkGetImageMemoryRequirements(device, image_.get(), &req);
  VkMemoryAllocateInfo alloc{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  alloc.allocationSize = req.size;
  alloc.memoryTypeIndex = ctx.find_memory_type(req.memoryTypeBits, 0, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
  vk_check(vkAllocateMemory(device, &alloc, nullptr, memory_.put(device)), "vkAllocateMemory");
  vk_check(vkBindImageMemory(device, image_.get(), memory_.get(), 0), "vkBindImageMemory");

  VkImageViewCreateInfo view{VK_STRUCTURE_TYPE_IMAGE_VIEW_CREATE_INFO};
  view.image = image_.get();
  view.viewType = VK_IMAGE_VIEW_TYPE_2D;
  view.format = desc.format;
  view.subresourceRange = {VK_IMAGE_ASPECT_COLOR_BIT, 0, desc.mip_levels, 0, 1};
  vk_check(vkCreateImageView(device, &view, nullptr, view_.put(device)), "vkCreateImageView");
}

void record_copy_image_to_buffer(VkCommandBuffer cmd, VkImage image, uint32_t width, uint32_t height, VkBuffer buffer) {
  VkBufferImageCopy region{};
  region.bufferOffset = 0;
  region.bufferRowLength = 0;  // tightly packed
  region.bufferImageHeight = 0;
  region.imageSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
  region.imageExtent = {width, height, 1};
  vkCmdCopyImageToBuffer(cmd, image, VK_IMAGE_LAYOUT_TRANSFER_SRC_OPTIMAL, buffer, 1, &region);
}

Rgba8Image read_rgba8(const Buffer& buffer, uint32_t width, uint32_t height) {
  Rgba8Image image{width, height, {}};
  const size_t bytes = static_cast<size_t>(width) * height * 4;
  if (buffer.size() < bytes) throw std::logic_error("read_rgba8: buffer smaller than the image");
  buffer.invalidate();
  auto mapped = buffer.mapped<const uint8_t>();
  image.pixels.assign(mapped.begin(), mapped.begin() + static_cast<ptrdiff_t>(bytes));
  return image;
}

void record_image_barrier(VkCommandBuffer cmd, const ImageBarrier& b) {
  VkImageMemoryBarrier barrier{VK_STRUCTURE_TYPE_IMAGE_MEMORY_BARRIER};
  barrier.srcAccessMask = b.src_access;
  barrier.dstAccessMask = b.dst_access;
  barrier.oldLayout = b.old_layout;
  barrier.newLayout = b.new_layout;
  barrier.srcQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
  barrier.dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
  barrier.image = b.image;
  barrier.subresourceRange = {VK_IMAGE_ASPECT_COLOR_BIT, b.base_mip, b.mip_count, 0, 1};
  vkCmdPipelineBarrier(cmd, b.src_stage, b.dst_stage, 0, 0, nullptr, 0, nullptr, 1, &barrier);
}

void record_memory_barrier(VkCommandBuffer cmd, VkPipelineStageFlags src_stage, VkAccessFlags src_access,
                           VkPipelineStageFlags dst_stage, VkAccessFlags dst_access) {
  VkMemoryBarrier barrier{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  barrier.srcAccessMask = src_access;
  barrier.dstAccessMask = dst_access;
  vkCmdPipelineBarrier(cmd, src_stage, dst_stage, 0, 1, &barrier, 0, nullptr, 0, nullptr);
}

}  // namespace bypass::samples
