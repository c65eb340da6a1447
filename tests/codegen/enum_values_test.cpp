// The generated enum checks (codegen/gen_enums.py): which values valid_X accepts, and that the
// host's decoders refuse an enum value outside them, with a reason naming the member, before
// a handler runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "bypass/wire/gen/wire_tests.h"

namespace bypass::wire::test {
namespace {

template <class E>
bool listed(E, int32_t v) {
  const EnumValueList l = enum_values(E{});
  return std::find(l.values, l.values + l.count, v) != l.values + l.count;
}

TEST(EnumValues, EveryListedValueIsValidAndNothingBetweenThem) {
  const EnumValueList l = enum_values(VkFormat{});
  ASSERT_GT(l.count, 200u);
  for (size_t i = 0; i < l.count; ++i) {
    EXPECT_TRUE(valid_VkFormat(l.values[i])) << l.values[i];
    if (i > 0) {
      EXPECT_LT(l.values[i - 1], l.values[i]) << "values are sorted and unique";
    }
    // The neighbours of a listed value are valid exactly when listed: the check has no holes
    // and accepts nothing extra.
    for (int32_t v : {l.values[i] - 1, l.values[i] + 1}) EXPECT_EQ(valid_VkFormat(v), listed(VkFormat{}, v)) << v;
  }
}

TEST(EnumValues, CoreAndCoveredExtensionValuesOnly) {
  EXPECT_TRUE(valid_VkFormat(VK_FORMAT_UNDEFINED));  // an enumerant; vkCreateImage refuses it by hand
  EXPECT_TRUE(valid_VkFormat(VK_FORMAT_R8G8B8A8_UNORM));
  EXPECT_TRUE(valid_VkFormat(VK_FORMAT_G8B8G8R8_422_UNORM));     // Vulkan 1.1
  EXPECT_TRUE(valid_VkFormat(VK_FORMAT_A4R4G4B4_UNORM_PACK16));  // Vulkan 1.3
  EXPECT_FALSE(valid_VkFormat(VK_FORMAT_ASTC_12x12_SRGB_BLOCK + 1));
  EXPECT_FALSE(valid_VkFormat(VK_FORMAT_PVRTC1_2BPP_UNORM_BLOCK_IMG));  // VK_IMG_format_pvrtc: not covered
  EXPECT_FALSE(valid_VkFormat(-1));
  EXPECT_TRUE(valid_VkImageLayout(VK_IMAGE_LAYOUT_PRESENT_SRC_KHR));  // VK_KHR_swapchain: covered
  EXPECT_TRUE(valid_VkIndexType(VK_INDEX_TYPE_UINT8_EXT));            // VK_EXT_index_type_uint8: covered
  EXPECT_FALSE(valid_VkIndexType(VK_INDEX_TYPE_NONE_KHR));            // ray tracing: not covered
  EXPECT_FALSE(valid_VkImageType(3));
  // Flag bits carried as one value: a named bit, not any mask.
  EXPECT_TRUE(valid_VkSampleCountFlagBits(VK_SAMPLE_COUNT_1_BIT));
  EXPECT_TRUE(valid_VkSampleCountFlagBits(VK_SAMPLE_COUNT_64_BIT));
  for (int32_t v : {0, 3, 128, 0x7FFFFFFF}) EXPECT_FALSE(valid_VkSampleCountFlagBits(v)) << v;
  EXPECT_TRUE(valid_VkShaderStageFlagBits(VK_SHADER_STAGE_ALL_GRAPHICS));  // a named combination
}

// Runs one guest-encoded message through the host's run table (check_values on, as bypassd).
struct HostRun {
  Env e{1};
  bool run(uint16_t id) { return e.run(id, e.b.GetBufferPointer(), e.b.GetSize()); }
  bool run_fixed(uint16_t id, const void* w, size_t n) { return e.run(id, static_cast<const uint8_t*>(w), n); }
  const std::string& error() const { return e.host.decode.error; }
};

const auto kDevice = reinterpret_cast<VkDevice>(uintptr_t{0x1000});
const auto kCommandBuffer = reinterpret_cast<VkCommandBuffer>(uintptr_t{0x2000});

VkImageCreateInfo image_info() {
  VkImageCreateInfo ci{VK_STRUCTURE_TYPE_IMAGE_CREATE_INFO};
  ci.imageType = VK_IMAGE_TYPE_2D;
  ci.format = VK_FORMAT_R8G8B8A8_UNORM;
  ci.extent = {64, 64, 1};
  ci.mipLevels = 1;
  ci.arrayLayers = 1;
  ci.samples = VK_SAMPLE_COUNT_1_BIT;
  ci.usage = VK_IMAGE_USAGE_SAMPLED_BIT;
  return ci;
}

bool create_image(HostRun& h, const VkImageCreateInfo& ci) {
  VkImage image = reinterpret_cast<VkImage>(uintptr_t{0x3000});
  encode_vkCreateImage(h.e.b, h.e.handles, kDevice, &ci, nullptr, &image);
  return h.run(kCmd_vkCreateImage);
}

TEST(EnumDecoding, HostRefusesAStructMemberOutOfRangeNamingIt) {
  HostRun h;
  VkImageCreateInfo ci = image_info();
  ASSERT_TRUE(create_image(h, ci)) << h.error();
  ci.samples = static_cast<VkSampleCountFlagBits>(3);
  EXPECT_FALSE(create_image(h, ci));
  EXPECT_EQ(h.error(), "VkImageCreateInfo.samples: 3 is not a valid VkSampleCountFlagBits");
  EXPECT_FALSE(h.e.host.called) << "the handler must not run";
  ci = image_info();
  ci.imageType = static_cast<VkImageType>(7);
  EXPECT_FALSE(create_image(h, ci));
  EXPECT_EQ(h.error(), "VkImageCreateInfo.imageType: 7 is not a valid VkImageType");
  // A value no Vulkan defines is the application's invalid usage, not a malformed message: the
  // session ends with invalid_usage.
  EXPECT_EQ(h.e.host.decode.fault, Fault::kInvalidUsage);
}

TEST(EnumDecoding, AMalformedMessageIsNotInvalidUsage) {
  HostRun h;
  VkImageCreateInfo ci = image_info();
  ASSERT_TRUE(create_image(h, ci)) << h.error();
  const uint8_t garbage[16] = {0xff, 0xff, 0xff, 0xff};
  EXPECT_FALSE(h.run_fixed(kCmd_vkCreateImage, garbage, sizeof(garbage)));
  EXPECT_EQ(h.e.host.decode.fault, Fault::kMalformed) << h.error();
}

TEST(IsDispatchable, ExactlyTheHandlesVkXmlDeclaresWithVkDefineHandle) {
  for (VkObjectType t : {VK_OBJECT_TYPE_INSTANCE, VK_OBJECT_TYPE_PHYSICAL_DEVICE, VK_OBJECT_TYPE_DEVICE,
                         VK_OBJECT_TYPE_QUEUE, VK_OBJECT_TYPE_COMMAND_BUFFER})
    EXPECT_TRUE(is_dispatchable(t)) << t;
  for (VkObjectType t : {VK_OBJECT_TYPE_UNKNOWN, VK_OBJECT_TYPE_BUFFER, VK_OBJECT_TYPE_IMAGE, VK_OBJECT_TYPE_FENCE,
                         VK_OBJECT_TYPE_DEVICE_MEMORY, VK_OBJECT_TYPE_COMMAND_POOL, VK_OBJECT_TYPE_SURFACE_KHR,
                         VK_OBJECT_TYPE_SWAPCHAIN_KHR, VK_OBJECT_TYPE_DEBUG_UTILS_MESSENGER_EXT})
    EXPECT_FALSE(is_dispatchable(t)) << t;
}

TEST(EnumDecoding, HostRefusesAnArrayElementInAChainLink) {
  HostRun h;
  const VkFormat formats[] = {VK_FORMAT_R8G8B8A8_UNORM, static_cast<VkFormat>(12345)};
  VkImageFormatListCreateInfo list{VK_STRUCTURE_TYPE_IMAGE_FORMAT_LIST_CREATE_INFO};
  list.viewFormatCount = 2;
  list.pViewFormats = formats;
  VkImageCreateInfo ci = image_info();
  ci.pNext = &list;
  EXPECT_FALSE(create_image(h, ci));
  EXPECT_EQ(h.error(), "VkImageFormatListCreateInfo.pViewFormats: 12345 is not a valid VkFormat");
}

TEST(EnumDecoding, HostRefusesAFixedLayoutParameterOutOfRange) {
  HostRun h;
  const auto buffer = reinterpret_cast<VkBuffer>(uintptr_t{0x4000});
  vkCmdBindIndexBuffer_s w{};
  encode_vkCmdBindIndexBuffer(w, h.e.handles, kCommandBuffer, buffer, 0, VK_INDEX_TYPE_UINT16);
  EXPECT_TRUE(h.run_fixed(kCmd_vkCmdBindIndexBuffer, &w, sizeof(w))) << h.error();
  encode_vkCmdBindIndexBuffer(w, h.e.handles, kCommandBuffer, buffer, 0, static_cast<VkIndexType>(77));
  EXPECT_FALSE(h.run_fixed(kCmd_vkCmdBindIndexBuffer, &w, sizeof(w)));
  EXPECT_EQ(h.error(), "vkCmdBindIndexBuffer.indexType: 77 is not a valid VkIndexType");
}

TEST(EnumDecoding, MembersTheSpecLetsHoldAnythingAreNotChecked) {
  HostRun h;
  // VkDescriptorImageInfo.imageLayout is noautovalidity: a sampler descriptor ignores it.
  VkDescriptorImageInfo info{reinterpret_cast<VkSampler>(uintptr_t{0x5000}), VK_NULL_HANDLE,
                             static_cast<VkImageLayout>(12345)};
  VkWriteDescriptorSet w{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
  w.dstSet = reinterpret_cast<VkDescriptorSet>(uintptr_t{0x6000});
  w.descriptorCount = 1;
  w.descriptorType = VK_DESCRIPTOR_TYPE_SAMPLER;
  w.pImageInfo = &info;
  encode_vkUpdateDescriptorSets(h.e.b, h.e.handles, kDevice, 1, &w, 0, nullptr);
  EXPECT_TRUE(h.run(kCmd_vkUpdateDescriptorSets)) << h.error();
  // An optional flag-bits member may be 0 (no handle type: no import).
  VkImportMemoryFdInfoKHR import{VK_STRUCTURE_TYPE_IMPORT_MEMORY_FD_INFO_KHR};
  VkMemoryAllocateInfo mi{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, &import, 4096, 0};
  VkDeviceMemory memory = reinterpret_cast<VkDeviceMemory>(uintptr_t{0x7000});
  encode_vkAllocateMemory(h.e.b, h.e.handles, kDevice, &mi, nullptr, &memory);
  EXPECT_TRUE(h.run(kCmd_vkAllocateMemory)) << h.error();
}

TEST(EnumDecoding, TheGuestDoesNotCheckWhatTheHostSends) {
  // Replies are decoded with check_values off: a newer host driver's value is passed on.
  HostRun h;
  h.e.host.decode.check_values = false;
  VkImageCreateInfo ci = image_info();
  ci.imageType = static_cast<VkImageType>(7);
  EXPECT_TRUE(create_image(h, ci)) << h.error();
  // Negative values stay out of range on both sides (undefined behaviour in a C++ enum).
  ci.imageType = static_cast<VkImageType>(-5);
  EXPECT_FALSE(create_image(h, ci));
  EXPECT_EQ(h.error(), "VkImageCreateInfo.imageType: -5 is not a valid VkImageType");
}

// vk.xml's stride: vkCmdDrawMultiEXT's elements lie `stride` bytes apart. The guest packs them;
// the driver gets the packed array and a stride of one element (with the guest's stride it would
// read past the decoded array: host memory as draw parameters).
TEST(WireDecoding, StridedArraysReachTheDriverPacked) {
  HostRun h;
  static std::vector<VkMultiDrawInfoEXT> seen;
  static uint32_t seen_stride = 0;
  h.e.host.handlers.vkCmdDrawMultiEXT = [](HostContext&, Args_vkCmdDrawMultiEXT& a) {
    seen.assign(a.pVertexInfo, a.pVertexInfo + a.drawCount);
    seen_stride = a.stride;
  };
  // Three draws, 20 bytes apart (8 bytes of VkMultiDrawInfoEXT, then 12 of something else).
  uint32_t words[15] = {};
  for (uint32_t i = 0; i < 3; ++i) {
    words[i * 5] = 100 + i;  // firstVertex
    words[i * 5 + 1] = 3;    // vertexCount
    words[i * 5 + 2] = words[i * 5 + 3] = words[i * 5 + 4] = 0xdeadbeef;
  }
  Packed& r = h.e.packed;
  encode_vkCmdDrawMultiEXT(r, h.e.handles, kCommandBuffer, 3, reinterpret_cast<const VkMultiDrawInfoEXT*>(words), 1, 0,
                           20);
  EXPECT_TRUE(h.e.run(kCmd_vkCmdDrawMultiEXT, r.data(), r.size())) << h.error();
  ASSERT_EQ(seen.size(), 3u);
  for (uint32_t i = 0; i < 3; ++i) {
    EXPECT_EQ(seen[i].firstVertex, 100 + i);
    EXPECT_EQ(seen[i].vertexCount, 3u);
  }
  EXPECT_EQ(seen_stride, sizeof(VkMultiDrawInfoEXT));
}

// Knows one buffer (id 0x4000, whose host handle is 0x4001) and records what it was asked.
class OneBuffer final : public HandleMap {
 public:
  uint64_t to_wire(VkObjectType, uint64_t handle) override { return handle; }
  bool from_wire(VkObjectType type, uint64_t id, uint64_t* handle) override {
    if (type == VK_OBJECT_TYPE_BUFFER && id != 0x4000) return false;
    *handle = type == VK_OBJECT_TYPE_BUFFER ? 0x4001 : id;
    return true;
  }
};

// vk.xml's objecttype: vkSetPrivateData's and vkGetPrivateData's objectHandle is a handle of the
// type objectType names, an id like any other handle's: the driver gets the host's handle, and
// a number that is no object of the guest's ends the session (lavapipe took it for a pointer).
TEST(WireDecoding, AHandleTypedByObjectTypeIsAnId) {
  HostRun h;
  OneBuffer ids;
  h.e.host.decode.handles = &ids;
  static uint64_t seen = 0;
  h.e.host.handlers.vkGetPrivateData = [](HostContext&, Args_vkGetPrivateData& a) { seen = a.objectHandle; };
  const auto slot = reinterpret_cast<VkPrivateDataSlot>(uintptr_t{0x5000});
  uint64_t data = 0;
  encode_vkGetPrivateData(h.e.b, h.e.handles, kDevice, VK_OBJECT_TYPE_BUFFER, 0x4000, slot, &data);
  EXPECT_TRUE(h.run(kCmd_vkGetPrivateData)) << h.error();
  EXPECT_EQ(seen, 0x4001u);
  encode_vkGetPrivateData(h.e.b, h.e.handles, kDevice, VK_OBJECT_TYPE_BUFFER, 0x4141414141414141ull, slot, &data);
  EXPECT_FALSE(h.run(kCmd_vkGetPrivateData));
  EXPECT_EQ(h.error(), "vkGetPrivateData.objectHandle: unknown handle id");
  h.e.host.decode.clear();
  vkSetPrivateData_s w{};
  encode_vkSetPrivateData(w, h.e.handles, kDevice, VK_OBJECT_TYPE_BUFFER, 0x4141414141414141ull, slot, 7);
  EXPECT_FALSE(h.run_fixed(kCmd_vkSetPrivateData, &w, sizeof(w)));
  EXPECT_EQ(h.error(), "vkSetPrivateData.objectHandle: unknown handle id");
}

}  // namespace
}  // namespace bypass::wire::test
