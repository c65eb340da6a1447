// validation_probe: a hostile guest for tests/hostile/validation_test.py. Each mode makes one
// ordinary but invalid Vulkan call of the kind lavapipe trusts (a range past a buffer's end, a
// zeroed image description, an enum value no Vulkan version defines) and then asks for a
// result; run through bypass, bypassd must refuse the call before the driver sees it.
//
//   validation_probe MODE [SIZE]
//     valid               the calls below with valid arguments: everything succeeds, the
//                         copy reads back exactly what was copied
//     image-zeroed        vkCreateImage with a VkImageCreateInfo whose members are all zero
//     mip-levels-0        a 64x64 image with mipLevels 0
//     mip-levels-601      a 64x64 image with mipLevels 601
//     copy-buffer SIZE    vkCmdCopyBuffer of SIZE bytes from a 4 KiB buffer into a large one,
//                         then reads the destination back: every byte must be one the guest
//                         wrote itself (its fill patterns) or zero, never the host's memory
//     fill-past-end       vkCmdFillBuffer of 16 KiB into a 4 KiB buffer
//     update-past-end     vkCmdUpdateBuffer of 64 bytes at 4080 of a 4 KiB buffer
//     indirect-offset     vkCmdDispatchIndirect at offset 1 MiB of a 64-byte buffer
//     descriptor-range    a storage buffer descriptor of 64 KiB over a 4 KiB buffer
//     descriptor-element  a descriptor write at array element 5 of a 1-descriptor binding
//     query-index         vkCmdResetQueryPool of query 10 of a 4-query pool
//     query-results       vkGetQueryPoolResults of 4 queries into 8 bytes (answered with
//                         VK_ERROR_VALIDATION_FAILED_EXT; the device goes on working)
//     push-constants      vkCmdPushConstants of 16 bytes at 4096 with a 16-byte range
//     bind-sets           vkCmdBindDescriptorSets at set 3 of a 1-set pipeline layout
//     dynamic-offset      a dynamic storage buffer descriptor of 256 bytes at 0 of a 4 KiB
//                         buffer, bound with dynamic offset 64 KiB
//     enum-index-type     vkCmdBindIndexBuffer with index type 77
//     enum-image-type     vkCreateImage with image type 7
//     alloc-zero          vkAllocateMemory of 0 bytes (answered with a VkResult; the device
//                         goes on working)
//     private-data-handle vkSetPrivateData on "a buffer" whose handle is a made-up number (the
//                         driver would take it for a pointer)
//     format-unknown      format queries about format 1000470000, which Debian 12's registry
//                         does not know (a newer Vulkan's): answered as unsupported, the device
//                         goes on working
//
// Output: one "call: VK_RESULT (n)" line per call, and for copy-buffer a "readback:" line.
// Exit status 0 when every call succeeded, 1 when one failed, 2 on bad arguments.
#include <vulkan/vulkan.h>

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>

namespace {

const char* result_name(VkResult r) {
  switch (r) {
    case VK_SUCCESS:
      return "VK_SUCCESS";
    case VK_ERROR_OUT_OF_HOST_MEMORY:
      return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
      return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_DEVICE_LOST:
      return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_VALIDATION_FAILED_EXT:
      return "VK_ERROR_VALIDATION_FAILED_EXT";
    case VK_ERROR_FORMAT_NOT_SUPPORTED:
      return "VK_ERROR_FORMAT_NOT_SUPPORTED";
    default:
      return "VkResult";
  }
}

bool g_all_ok = true;

VkResult report(const char* what, VkResult r) {
  std::printf("%s: %s (%d)\n", what, result_name(r), static_cast<int>(r));
  std::fflush(stdout);
  if (r != VK_SUCCESS) g_all_ok = false;
  return r;
}

constexpr VkDeviceSize kSmall = 4096;
constexpr uint8_t kSrcByte = 0x11;  // what the guest writes into the source buffer
constexpr uint8_t kDstByte = 0x22;  // and into the destination before the copy

struct Buffer {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  uint8_t* data = nullptr;
  VkDeviceSize size = 0;
};

// Instance, device, queue, one command buffer and a fence; the buffers the mode makes.
struct Guest {
  VkInstance instance = VK_NULL_HANDLE;
  VkPhysicalDevice physical = VK_NULL_HANDLE;
  VkDevice device = VK_NULL_HANDLE;
  VkQueue queue = VK_NULL_HANDLE;
  VkCommandPool pool = VK_NULL_HANDLE;
  VkCommandBuffer cmd = VK_NULL_HANDLE;
  VkFence fence = VK_NULL_HANDLE;
  uint32_t host_visible = 0;
  std::deque<Buffer> buffers;  // references stay valid as buffers are added

  ~Guest() {
    if (device) {
      for (Buffer& b : buffers) {
        vkDestroyBuffer(device, b.buffer, nullptr);
        vkFreeMemory(device, b.memory, nullptr);
      }
      if (fence) vkDestroyFence(device, fence, nullptr);
      if (pool) vkDestroyCommandPool(device, pool, nullptr);
      vkDestroyDevice(device, nullptr);
    }
    if (instance) vkDestroyInstance(instance, nullptr);
  }

  bool start() {
    VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.pApplicationName = "bypass-validation-probe";
    app.apiVersion = VK_API_VERSION_1_3;
    VkInstanceCreateInfo ii{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    ii.pApplicationInfo = &app;
    if (report("vkCreateInstance", vkCreateInstance(&ii, nullptr, &instance)) != VK_SUCCESS) return false;
    uint32_t n = 1;
    const VkResult e = vkEnumeratePhysicalDevices(instance, &n, &physical);
    if ((e != VK_SUCCESS && e != VK_INCOMPLETE) || n == 0) return false;
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(physical, &props);
    std::printf("device: %s\n", props.deviceName);
    VkPhysicalDeviceMemoryProperties mem;
    vkGetPhysicalDeviceMemoryProperties(physical, &mem);
    for (uint32_t i = 0; i < mem.memoryTypeCount; ++i) {
      const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
      if ((mem.memoryTypes[i].propertyFlags & want) == want) {
        host_visible = i;
        break;
      }
    }
    const float priority = 1.0f;
    VkDeviceQueueCreateInfo q{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    q.queueCount = 1;
    q.pQueuePriorities = &priority;
    VkDeviceCreateInfo di{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
    di.queueCreateInfoCount = 1;
    di.pQueueCreateInfos = &q;
    if (report("vkCreateDevice", vkCreateDevice(physical, &di, nullptr, &device)) != VK_SUCCESS) {
      device = VK_NULL_HANDLE;
      return false;
    }
    vkGetDeviceQueue(device, 0, 0, &queue);
    VkCommandPoolCreateInfo pi{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    vkCreateCommandPool(device, &pi, nullptr, &pool);
    VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    ai.commandPool = pool;
    ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    ai.commandBufferCount = 1;
    vkAllocateCommandBuffers(device, &ai, &cmd);
    VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    return report("vkCreateFence", vkCreateFence(device, &fi, nullptr, &fence)) == VK_SUCCESS;
  }

  // A buffer of `size` bytes in host-visible memory, mapped, filled with `fill`.
  Buffer& buffer(VkDeviceSize size, VkBufferUsageFlags usage, uint8_t fill) {
    Buffer b;
    b.size = size;
    VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
    bi.size = size;
    bi.usage = usage;
    vkCreateBuffer(device, &bi, nullptr, &b.buffer);
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(device, b.buffer, &req);
    VkMemoryAllocateInfo mi{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    mi.allocationSize = req.size;
    mi.memoryTypeIndex = host_visible;
    report("vkAllocateMemory", vkAllocateMemory(device, &mi, nullptr, &b.memory));
    vkBindBufferMemory(device, b.buffer, b.memory, 0);
    void* p = nullptr;
    report("vkMapMemory", vkMapMemory(device, b.memory, 0, VK_WHOLE_SIZE, 0, &p));
    b.data = static_cast<uint8_t*>(p);
    if (b.data) std::memset(b.data, fill, size);
    buffers.push_back(b);
    return buffers.back();
  }

  void begin() {
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    vkBeginCommandBuffer(cmd, &bi);
  }

  // Ends, submits and waits: the result a guest sees for what it recorded.
  VkResult submit_and_wait() {
    vkEndCommandBuffer(cmd);
    VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cmd;
    VkResult r = report("vkQueueSubmit", vkQueueSubmit(queue, 1, &si, fence));
    if (r != VK_SUCCESS) return r;
    return report("vkWaitForFences", vkWaitForFences(device, 1, &fence, VK_TRUE, 10'000'000'000ull));
  }
};

VkImageCreateInfo image_64x64(uint32_t mip_levels) {
  VkImageCreateInfo ci{VK_STRUCTURE_TYPE_IMAGE_CREATE_INFO};
  ci.imageType = VK_IMAGE_TYPE_2D;
  ci.format = VK_FORMAT_R8G8B8A8_UNORM;
  ci.extent = {64, 64, 1};
  ci.mipLevels = mip_levels;
  ci.arrayLayers = 1;
  ci.samples = VK_SAMPLE_COUNT_1_BIT;
  ci.tiling = VK_IMAGE_TILING_OPTIMAL;
  ci.usage = VK_IMAGE_USAGE_TRANSFER_DST_BIT | VK_IMAGE_USAGE_SAMPLED_BIT;
  return ci;
}

// An image create (asynchronous: its VkResult is VK_SUCCESS), then a call that waits.
void create_image(Guest& g, const VkImageCreateInfo& ci) {
  VkImage image = VK_NULL_HANDLE;
  report("vkCreateImage", vkCreateImage(g.device, &ci, nullptr, &image));
  if (report("vkDeviceWaitIdle", vkDeviceWaitIdle(g.device)) == VK_SUCCESS) vkDestroyImage(g.device, image, nullptr);
}

// Copies `size` bytes from a 4 KiB buffer into a buffer of max(size, 4 KiB); every byte read
// back must be the guest's own (its two fill patterns) or zero.
void copy_buffer(Guest& g, VkDeviceSize size) {
  Buffer& src = g.buffer(kSmall, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, kSrcByte);
  Buffer& dst = g.buffer(size > kSmall ? size : kSmall, VK_BUFFER_USAGE_TRANSFER_DST_BIT, kDstByte);
  g.begin();
  VkBufferCopy region{0, 0, size};
  vkCmdCopyBuffer(g.cmd, src.buffer, dst.buffer, 1, &region);
  g.submit_and_wait();
  size_t foreign = 0, copied = 0;
  for (VkDeviceSize i = 0; i < dst.size; ++i) {
    const uint8_t b = dst.data[i];
    if (b == kSrcByte)
      ++copied;
    else if (b != kDstByte && b != 0)
      ++foreign;
  }
  std::printf("readback: %zu of %llu bytes copied, %zu foreign\n", copied, static_cast<unsigned long long>(dst.size),
              foreign);
  std::fflush(stdout);
}

void fill_past_end(Guest& g) {
  Buffer& b = g.buffer(kSmall, VK_BUFFER_USAGE_TRANSFER_DST_BIT, 0);
  g.begin();
  vkCmdFillBuffer(g.cmd, b.buffer, 0, 4 * kSmall, 0xDEADBEEF);
  g.submit_and_wait();
}

void update_past_end(Guest& g) {
  Buffer& b = g.buffer(kSmall, VK_BUFFER_USAGE_TRANSFER_DST_BIT, 0);
  uint32_t words[16];
  std::memset(words, 0x5A, sizeof(words));
  g.begin();
  vkCmdUpdateBuffer(g.cmd, b.buffer, kSmall - 16, sizeof(words), words);
  g.submit_and_wait();
}

void indirect_offset(Guest& g, VkDeviceSize offset) {
  Buffer& b = g.buffer(64, VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT, 0);
  g.begin();
  vkCmdDispatchIndirect(g.cmd, b.buffer, offset);
  g.submit_and_wait();
}

// A set layout with one descriptor of `type` at binding 0, a pool for one such set, and the set.
struct OneSet {
  VkDescriptorSetLayout layout = VK_NULL_HANDLE;
  VkDescriptorPool pool = VK_NULL_HANDLE;
  VkDescriptorSet set = VK_NULL_HANDLE;
};
OneSet one_set(Guest& g, VkDescriptorType type) {
  OneSet o;
  VkDescriptorSetLayoutBinding binding{0, type, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
  VkDescriptorSetLayoutCreateInfo li{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  li.bindingCount = 1;
  li.pBindings = &binding;
  vkCreateDescriptorSetLayout(g.device, &li, nullptr, &o.layout);
  VkDescriptorPoolSize ps{type, 1};
  VkDescriptorPoolCreateInfo dpi{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
  dpi.maxSets = 1;
  dpi.poolSizeCount = 1;
  dpi.pPoolSizes = &ps;
  vkCreateDescriptorPool(g.device, &dpi, nullptr, &o.pool);
  VkDescriptorSetAllocateInfo ai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
  ai.descriptorPool = o.pool;
  ai.descriptorSetCount = 1;
  ai.pSetLayouts = &o.layout;
  report("vkAllocateDescriptorSets", vkAllocateDescriptorSets(g.device, &ai, &o.set));
  return o;
}

void descriptor_range(Guest& g, VkDeviceSize range, uint32_t element = 0) {
  Buffer& b = g.buffer(kSmall, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, 0);
  const auto [layout, pool, set] = one_set(g, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER);
  VkDescriptorBufferInfo info{b.buffer, 0, range};
  VkWriteDescriptorSet w{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
  w.dstSet = set;
  w.dstArrayElement = element;
  w.descriptorCount = 1;
  w.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
  w.pBufferInfo = &info;
  vkUpdateDescriptorSets(g.device, 1, &w, 0, nullptr);
  if (report("vkDeviceWaitIdle", vkDeviceWaitIdle(g.device)) == VK_SUCCESS) {
    vkDestroyDescriptorPool(g.device, pool, nullptr);
    vkDestroyDescriptorSetLayout(g.device, layout, nullptr);
  }
}

// A pipeline layout of one storage-buffer set and 16 bytes of push constants; records
// vkCmdPushConstants at `push_offset` and binds a set at `first_set`.
void layout_use(Guest& g, uint32_t push_offset, uint32_t first_set) {
  const auto [set_layout, pool, set] = one_set(g, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER);
  VkPushConstantRange range{VK_SHADER_STAGE_COMPUTE_BIT, 0, 16};
  VkPipelineLayoutCreateInfo pi{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  pi.setLayoutCount = 1;
  pi.pSetLayouts = &set_layout;
  pi.pushConstantRangeCount = 1;
  pi.pPushConstantRanges = &range;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  vkCreatePipelineLayout(g.device, &pi, nullptr, &layout);
  const uint32_t values[4] = {1, 2, 3, 4};
  g.begin();
  vkCmdPushConstants(g.cmd, layout, VK_SHADER_STAGE_COMPUTE_BIT, push_offset, sizeof(values), values);
  vkCmdBindDescriptorSets(g.cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout, first_set, 1, &set, 0, nullptr);
  if (g.submit_and_wait() == VK_SUCCESS) {
    vkDestroyDescriptorPool(g.device, pool, nullptr);
    vkDestroyPipelineLayout(g.device, layout, nullptr);
    vkDestroyDescriptorSetLayout(g.device, set_layout, nullptr);
  }
}

// A set with one dynamic storage buffer descriptor (256 bytes at 0 of a 4 KiB buffer),
// bound with `dynamic_offset`.
void dynamic_offset(Guest& g, uint32_t dynamic_offset) {
  Buffer& b = g.buffer(kSmall, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, 0);
  const auto [set_layout, pool, set] = one_set(g, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER_DYNAMIC);
  VkPipelineLayoutCreateInfo pi{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  pi.setLayoutCount = 1;
  pi.pSetLayouts = &set_layout;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  vkCreatePipelineLayout(g.device, &pi, nullptr, &layout);
  VkDescriptorBufferInfo info{b.buffer, 0, 256};
  VkWriteDescriptorSet w{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
  w.dstSet = set;
  w.descriptorCount = 1;
  w.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER_DYNAMIC;
  w.pBufferInfo = &info;
  vkUpdateDescriptorSets(g.device, 1, &w, 0, nullptr);
  g.begin();
  vkCmdBindDescriptorSets(g.cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 1, &set, 1, &dynamic_offset);
  if (g.submit_and_wait() == VK_SUCCESS) {
    vkDestroyDescriptorPool(g.device, pool, nullptr);
    vkDestroyPipelineLayout(g.device, layout, nullptr);
    vkDestroyDescriptorSetLayout(g.device, set_layout, nullptr);
  }
}

VkQueryPool query_pool(Guest& g) {
  VkQueryPoolCreateInfo qi{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
  qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
  qi.queryCount = 4;
  VkQueryPool pool = VK_NULL_HANDLE;
  report("vkCreateQueryPool", vkCreateQueryPool(g.device, &qi, nullptr, &pool));
  return pool;
}

// Resets and stamps queries first..first+count of a 4-query pool.
void query_index(Guest& g, uint32_t first, uint32_t count) {
  VkQueryPool pool = query_pool(g);
  g.begin();
  vkCmdResetQueryPool(g.cmd, pool, first, count);
  vkCmdWriteTimestamp(g.cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, pool, first);
  if (g.submit_and_wait() == VK_SUCCESS) vkDestroyQueryPool(g.device, pool, nullptr);
}

// Reads 4 timestamps (32 bytes with 64-bit results) into a buffer of `size` bytes.
void query_results(Guest& g, size_t size) {
  VkQueryPool pool = query_pool(g);
  g.begin();
  vkCmdResetQueryPool(g.cmd, pool, 0, 4);
  for (uint32_t i = 0; i < 4; ++i) vkCmdWriteTimestamp(g.cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, pool, i);
  g.submit_and_wait();
  uint64_t results[4] = {};
  report("vkGetQueryPoolResults", vkGetQueryPoolResults(g.device, pool, 0, 4, size, results, 8,
                                                        VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT));
  report("vkDeviceWaitIdle", vkDeviceWaitIdle(g.device));
  vkDestroyQueryPool(g.device, pool, nullptr);
}

void bind_index_buffer(Guest& g, VkIndexType type) {
  Buffer& b = g.buffer(kSmall, VK_BUFFER_USAGE_INDEX_BUFFER_BIT, 0);
  g.begin();
  vkCmdBindIndexBuffer(g.cmd, b.buffer, 0, type);
  g.submit_and_wait();
}

void alloc_zero(Guest& g) {
  VkMemoryAllocateInfo mi{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  mi.allocationSize = 0;
  mi.memoryTypeIndex = g.host_visible;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  if (report("vkAllocateMemory", vkAllocateMemory(g.device, &mi, nullptr, &memory)) == VK_SUCCESS)
    vkFreeMemory(g.device, memory, nullptr);
  report("vkDeviceWaitIdle", vkDeviceWaitIdle(g.device));
}

// An image with memory of its own (device-local where there is such a type), for copies.
VkImage bound_image(Guest& g, const VkImageCreateInfo& ci, VkDeviceMemory* memory) {
  VkImage image = VK_NULL_HANDLE;
  if (report("vkCreateImage", vkCreateImage(g.device, &ci, nullptr, &image)) != VK_SUCCESS) return VK_NULL_HANDLE;
  VkMemoryRequirements req;
  vkGetImageMemoryRequirements(g.device, image, &req);
  VkMemoryAllocateInfo mi{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  mi.allocationSize = req.size;
  mi.memoryTypeIndex = static_cast<uint32_t>(std::countr_zero(req.memoryTypeBits));
  report("vkAllocateMemory", vkAllocateMemory(g.device, &mi, nullptr, memory));
  report("vkBindImageMemory", vkBindImageMemory(g.device, image, *memory, 0));
  return image;
}

// What zink does and lavapipe makes natively, which the checks must not refuse: a copy from a
// 65x65 uncompressed image into a 257x257 BC1 image (65 blocks: 260 texels, to the edge of the
// last block), a 4-sample color image that may also be stored to, and a non-square
// cube-compatible image.
void what_zink_does(Guest& g) {
  VkImageCreateInfo bc = image_64x64(1);
  bc.format = VK_FORMAT_BC1_RGBA_UNORM_BLOCK;
  bc.extent = {257, 257, 1};
  bc.usage = VK_IMAGE_USAGE_TRANSFER_DST_BIT | VK_IMAGE_USAGE_SAMPLED_BIT;
  VkImageCreateInfo plain = image_64x64(1);
  plain.format = VK_FORMAT_R32G32_UINT;
  plain.extent = {65, 65, 1};
  plain.usage = VK_IMAGE_USAGE_TRANSFER_SRC_BIT;
  VkDeviceMemory bc_memory = VK_NULL_HANDLE, plain_memory = VK_NULL_HANDLE;
  VkImage dst = bound_image(g, bc, &bc_memory), src = bound_image(g, plain, &plain_memory);
  vkResetFences(g.device, 1, &g.fence);
  g.begin();
  VkImageCopy region{};
  region.srcSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
  region.dstSubresource = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 0, 1};
  region.extent = {65, 65, 1};
  vkCmdCopyImage(g.cmd, src, VK_IMAGE_LAYOUT_GENERAL, dst, VK_IMAGE_LAYOUT_GENERAL, 1, &region);
  g.submit_and_wait();
  vkDestroyImage(g.device, dst, nullptr);
  vkDestroyImage(g.device, src, nullptr);
  vkFreeMemory(g.device, bc_memory, nullptr);
  vkFreeMemory(g.device, plain_memory, nullptr);
  VkImageCreateInfo ms = image_64x64(1);
  ms.samples = VK_SAMPLE_COUNT_4_BIT;
  ms.usage = VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT | VK_IMAGE_USAGE_STORAGE_BIT;
  create_image(g, ms);
  VkImageCreateInfo cube = image_64x64(1);
  cube.extent = {5, 16, 1};
  cube.arrayLayers = 6;
  cube.flags = VK_IMAGE_CREATE_CUBE_COMPATIBLE_BIT;
  create_image(g, cube);
}

// vkSetPrivateData/vkGetPrivateData name their object by a type and a 64-bit handle.
VkPrivateDataSlot private_data_slot(Guest& g) {
  VkPrivateDataSlotCreateInfo ci{VK_STRUCTURE_TYPE_PRIVATE_DATA_SLOT_CREATE_INFO};
  VkPrivateDataSlot slot = VK_NULL_HANDLE;
  report("vkCreatePrivateDataSlot", vkCreatePrivateDataSlot(g.device, &ci, nullptr, &slot));
  return slot;
}

void private_data(Guest& g, VkObjectType type, uint64_t handle, uint64_t value) {
  VkPrivateDataSlot slot = private_data_slot(g);
  report("vkSetPrivateData", vkSetPrivateData(g.device, type, handle, slot, value));
  uint64_t got = 0;
  vkGetPrivateData(g.device, type, handle, slot, &got);
  std::printf("vkGetPrivateData: %llu\n", static_cast<unsigned long long>(got));
  if (got != value) g_all_ok = false;
  report("vkDeviceWaitIdle", vkDeviceWaitIdle(g.device));
  vkDestroyPrivateDataSlot(g.device, slot, nullptr);
}

void format_unknown(Guest& g) {
  const auto format = static_cast<VkFormat>(1000470000);
  VkImageFormatProperties ip{};
  report("vkGetPhysicalDeviceImageFormatProperties",
         vkGetPhysicalDeviceImageFormatProperties(g.physical, format, VK_IMAGE_TYPE_2D, VK_IMAGE_TILING_OPTIMAL,
                                                  VK_IMAGE_USAGE_SAMPLED_BIT, 0, &ip));
  VkFormatProperties fp{};
  fp.optimalTilingFeatures = fp.linearTilingFeatures = fp.bufferFeatures = ~0u;
  vkGetPhysicalDeviceFormatProperties(g.physical, format, &fp);
  std::printf("vkGetPhysicalDeviceFormatProperties: features %x %x %x\n", fp.linearTilingFeatures,
              fp.optimalTilingFeatures, fp.bufferFeatures);
  report("vkDeviceWaitIdle", vkDeviceWaitIdle(g.device));
}

void valid(Guest& g) {
  copy_buffer(g, kSmall);
  create_image(g, image_64x64(7));
  vkResetFences(g.device, 1, &g.fence);
  Buffer& b = g.buffer(
      kSmall, VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT | VK_BUFFER_USAGE_INDEX_BUFFER_BIT,
      0);
  uint32_t words[16] = {};
  g.begin();
  vkCmdFillBuffer(g.cmd, b.buffer, 0, VK_WHOLE_SIZE, 0);
  vkCmdUpdateBuffer(g.cmd, b.buffer, kSmall - sizeof(words), sizeof(words), words);
  vkCmdBindIndexBuffer(g.cmd, b.buffer, kSmall - 4, VK_INDEX_TYPE_UINT32);
  g.submit_and_wait();
  descriptor_range(g, kSmall);
  vkResetFences(g.device, 1, &g.fence);
  query_results(g, 32);
  vkResetFences(g.device, 1, &g.fence);
  layout_use(g, 0, 0);
  vkResetFences(g.device, 1, &g.fence);
  dynamic_offset(g, 256);
  what_zink_does(g);
  // A primary command buffer ignores pInheritanceInfo, whatever it points at.
  {
    VkCommandBufferInheritanceInfo junk;
    std::memset(&junk, 0x5a, sizeof(junk));
    vkResetFences(g.device, 1, &g.fence);
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.pInheritanceInfo = &junk;
    report("vkBeginCommandBuffer", vkBeginCommandBuffer(g.cmd, &bi));
    report("vkEndCommandBuffer", vkEndCommandBuffer(g.cmd));
    VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    submit.commandBufferCount = 1;
    submit.pCommandBuffers = &g.cmd;
    report("vkQueueSubmit", vkQueueSubmit(g.queue, 1, &submit, g.fence));
    report("vkWaitForFences", vkWaitForFences(g.device, 1, &g.fence, VK_TRUE, UINT64_MAX));
  }
  // Private data on a buffer, the device and the queue (dispatchable: the ICD's own pointers).
  private_data(g, VK_OBJECT_TYPE_BUFFER, reinterpret_cast<uint64_t>(g.buffers.front().buffer), 0x1234);
  private_data(g, VK_OBJECT_TYPE_DEVICE, reinterpret_cast<uint64_t>(g.device), 0x5678);
  private_data(g, VK_OBJECT_TYPE_QUEUE, reinterpret_cast<uint64_t>(g.queue), 0x9abc);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODE [SIZE] (see the top of validation_probe.cpp)\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[1];
  Guest g;
  if (!g.start()) return 1;
  if (mode == "valid") {
    valid(g);
  } else if (mode == "image-zeroed") {
    VkImageCreateInfo ci;
    std::memset(&ci, 0, sizeof(ci));
    create_image(g, ci);
  } else if (mode == "mip-levels-0") {
    create_image(g, image_64x64(0));
  } else if (mode == "mip-levels-601") {
    create_image(g, image_64x64(601));
  } else if (mode == "copy-buffer" && argc == 3) {
    copy_buffer(g, std::strtoull(argv[2], nullptr, 0));
  } else if (mode == "fill-past-end") {
    fill_past_end(g);
  } else if (mode == "update-past-end") {
    update_past_end(g);
  } else if (mode == "indirect-offset") {
    indirect_offset(g, 1 << 20);
  } else if (mode == "descriptor-range") {
    descriptor_range(g, 16 * kSmall);
  } else if (mode == "descriptor-element") {
    descriptor_range(g, kSmall, 5);
  } else if (mode == "query-index") {
    query_index(g, 10, 1);
  } else if (mode == "query-results") {
    query_results(g, 8);
    return 0;  // the refused read is the expected result
  } else if (mode == "push-constants") {
    layout_use(g, 4096, 0);
  } else if (mode == "bind-sets") {
    layout_use(g, 0, 3);
  } else if (mode == "dynamic-offset") {
    dynamic_offset(g, 1 << 16);
  } else if (mode == "enum-index-type") {
    bind_index_buffer(g, static_cast<VkIndexType>(77));
  } else if (mode == "enum-image-type") {
    VkImageCreateInfo ci = image_64x64(1);
    ci.imageType = static_cast<VkImageType>(7);
    create_image(g, ci);
  } else if (mode == "private-data-handle") {
    private_data(g, VK_OBJECT_TYPE_BUFFER, 0x4141414141414141ull, 7);
  } else if (mode == "format-unknown") {
    format_unknown(g);
  } else if (mode == "alloc-zero") {
    alloc_zero(g);
    return 0;  // the refused allocation is the expected result
  } else {
    std::fprintf(stderr, "validation_probe: unknown mode %s\n", mode.c_str());
    return 2;
  }
  return g_all_ok ? 0 : 1;
}
