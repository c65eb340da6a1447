// The host session's own logic on a real driver (lavapipe): how a batch is taken apart, the
// control commands, the object ids a guest may use, and the blocking calls (the session
// thread's try, the waiter threads, idle waits beside submissions). Each test is one guest
// speaking the protocol to a Session (live_session.h); a session that a test ends must say
// why, in the words the log and the guest get.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "live_session.h"

namespace bypass::host::test {
namespace {

using namespace std::chrono_literals;

// ------------------------------------------------------------------ a few commands, encoded
void create_fence(LiveSession& g, uint64_t id, bool signaled) {
  VkFenceCreateInfo info{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  if (signaled) info.flags = VK_FENCE_CREATE_SIGNALED_BIT;
  VkFence fence = as_handle<VkFence>(id);
  g.b.Clear();
  wire::encode_vkCreateFence(g.b, g.ids, as_handle<VkDevice>(kDeviceId), &info, nullptr, &fence);
  g.add(wire::kCmd_vkCreateFence, g.b);
}

void wait_fence(LiveSession& g, uint64_t id, uint64_t timeout) {
  VkFence fence = as_handle<VkFence>(id);
  g.b.Clear();
  wire::encode_vkWaitForFences(g.b, g.ids, as_handle<VkDevice>(kDeviceId), 1, &fence, VK_TRUE, timeout);
  g.add_reply(wire::kCmd_vkWaitForFences, g.b);
}

void destroy_fence(LiveSession& g, uint64_t id) {
  g.b.Clear();
  wire::encode_vkDestroyFence(g.b, g.ids, as_handle<VkDevice>(kDeviceId), as_handle<VkFence>(id), nullptr);
  g.add(wire::kCmd_vkDestroyFence, g.b);
}

void stats(LiveSession& g) { g.add_reply(wire::kCtlSessionStats, nullptr, 0); }

void get_queue(LiveSession& g) {
  VkQueue queue = as_handle<VkQueue>(kQueueId);
  g.b.Clear();
  wire::encode_vkGetDeviceQueue(g.b, g.ids, as_handle<VkDevice>(kDeviceId), 0, 0, &queue);
  g.add(wire::kCmd_vkGetDeviceQueue, g.b);
}

void submit(LiveSession& g, uint64_t command_buffer, uint64_t fence) {
  VkCommandBuffer cb = as_handle<VkCommandBuffer>(command_buffer);
  VkSubmitInfo info{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  info.commandBufferCount = command_buffer ? 1 : 0;
  info.pCommandBuffers = command_buffer ? &cb : nullptr;
  g.b.Clear();
  wire::encode_vkQueueSubmit(g.b, g.ids, as_handle<VkQueue>(kQueueId), 1, &info, as_handle<VkFence>(fence));
  g.add(wire::kCmd_vkQueueSubmit, g.b);
}

void create_command_pool(LiveSession& g) {
  VkCommandPoolCreateInfo pool_info{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  VkCommandPool pool = as_handle<VkCommandPool>(kPoolId);
  g.b.Clear();
  wire::encode_vkCreateCommandPool(g.b, g.ids, as_handle<VkDevice>(kDeviceId), &pool_info, nullptr, &pool);
  g.add(wire::kCmd_vkCreateCommandPool, g.b);
}

// A primary command buffer `id` of kPoolId; `ask`: the record asks for the reply.
void allocate_command_buffer(LiveSession& g, uint64_t id, bool ask) {
  VkCommandBufferAllocateInfo alloc{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  alloc.commandPool = as_handle<VkCommandPool>(kPoolId);
  alloc.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  alloc.commandBufferCount = 1;
  VkCommandBuffer cb = as_handle<VkCommandBuffer>(id);
  g.b.Clear();
  wire::encode_vkAllocateCommandBuffers(g.b, g.ids, as_handle<VkDevice>(kDeviceId), &alloc, &cb);
  g.add(wire::kCmd_vkAllocateCommandBuffers, g.b, ask ? wire::kRecordWantsReply : 0);
}

// A queue, an event the host has not set, and a command buffer that waits for it: once
// submitted, the queue is busy until the event is set (vkSetEvent, from the guest).
void blocked_work(LiveSession& g) {
  get_queue(g);
  VkEventCreateInfo event_info{VK_STRUCTURE_TYPE_EVENT_CREATE_INFO};
  VkEvent event = as_handle<VkEvent>(kEventId);
  g.b.Clear();
  wire::encode_vkCreateEvent(g.b, g.ids, as_handle<VkDevice>(kDeviceId), &event_info, nullptr, &event);
  g.add(wire::kCmd_vkCreateEvent, g.b);
  create_command_pool(g);
  allocate_command_buffer(g, kCommandBufferId, true);
  VkCommandBuffer cb = as_handle<VkCommandBuffer>(kCommandBufferId);
  VkCommandBufferBeginInfo begin{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  g.b.Clear();
  wire::encode_vkBeginCommandBuffer(g.b, g.ids, cb, &begin);
  g.add(wire::kCmd_vkBeginCommandBuffer, g.b);
  g.b.Clear();
  wire::encode_vkCmdWaitEvents(g.b, g.ids, cb, 1, &event, VK_PIPELINE_STAGE_HOST_BIT,
                               VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, 0, nullptr, 0, nullptr, 0, nullptr);
  g.add(wire::kCmd_vkCmdWaitEvents, g.b);
  wire::vkEndCommandBuffer_s end{};
  wire::encode_vkEndCommandBuffer(end, g.ids, cb);
  g.add_fixed(wire::kCmd_vkEndCommandBuffer, end);
}

void set_event(LiveSession& g) {
  wire::vkSetEvent_s set{};
  wire::encode_vkSetEvent(set, g.ids, as_handle<VkDevice>(kDeviceId), as_handle<VkEvent>(kEventId));
  g.add_fixed(wire::kCmd_vkSetEvent, set);
}

int32_t result_of(const std::optional<Reply>& r) { return r ? r->header.result : INT32_MIN; }

// ------------------------------------------------------------------ batches
TEST(SessionBatch, RecordsOfABatchRunInOrderWithOneReplyEach) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  create_fence(g, kFenceId, true);
  stats(g);
  wait_fence(g, kFenceId, 0);
  stats(g);
  ASSERT_TRUE(g.send());
  auto first = g.next_reply();
  auto wait = g.next_reply();
  auto second = g.next_reply();
  ASSERT_TRUE(first && wait && second);
  EXPECT_EQ(first->header.command, wire::kCtlSessionStats);
  EXPECT_EQ(wait->header.command, wire::kCmd_vkWaitForFences);
  EXPECT_EQ(wait->header.result, VK_SUCCESS);
  EXPECT_EQ(second->header.command, wire::kCtlSessionStats);
  EXPECT_EQ(wait->header.seq, first->header.seq + 1);
  EXPECT_EQ(second->header.seq, wait->header.seq + 1);
  // Three set-up records, then the fence, the stats, the wait and the stats again.
  EXPECT_EQ(second->as<wire::StatsReply>().records, first->as<wire::StatsReply>().records + 2);
}

// codegen/data/async_unasked.txt: the guest may send these without asking for the reply. The
// host answers such a record only when it asks; one that does not ask still runs (its object
// exists: the stats count it) and gets no reply, so the next reply is the next asked-for call's.
TEST(SessionBatch, RecordsSentWithoutAskingGetNoReplyAndStillRun) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  create_command_pool(g);
  stats(g);
  allocate_command_buffer(g, kCommandBufferId, false);
  VkPipelineCacheCreateInfo cache_info{VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
  VkPipelineCache cache = as_handle<VkPipelineCache>(kCommandBufferId + 2);
  g.b.Clear();
  wire::encode_vkCreatePipelineCache(g.b, g.ids, as_handle<VkDevice>(kDeviceId), &cache_info, nullptr, &cache);
  g.add(wire::kCmd_vkCreatePipelineCache, g.b);
  stats(g);
  allocate_command_buffer(g, kCommandBufferId + 1, true);
  stats(g);
  ASSERT_TRUE(g.send());
  auto before = g.next_reply();
  auto after_unasked = g.next_reply();
  auto allocated = g.next_reply();
  auto after_asked = g.next_reply();
  ASSERT_TRUE(before && after_unasked && allocated && after_asked);
  EXPECT_EQ(before->header.command, wire::kCtlSessionStats);
  EXPECT_EQ(after_unasked->header.command, wire::kCtlSessionStats);
  EXPECT_EQ(after_unasked->header.seq, before->header.seq + 1);
  EXPECT_EQ(after_unasked->as<wire::StatsReply>().objects, before->as<wire::StatsReply>().objects + 2);
  EXPECT_EQ(allocated->header.command, wire::kCmd_vkAllocateCommandBuffers);
  EXPECT_EQ(allocated->header.result, VK_SUCCESS);
  EXPECT_EQ(after_asked->as<wire::StatsReply>().objects, after_unasked->as<wire::StatsReply>().objects + 1);
  EXPECT_FALSE(g.next_reply(std::chrono::milliseconds(200)));  // nothing more
}

// A compute pipeline of shaders/noop.comp through the session, sent without asking for the
// reply; `flags` its create flags. Its shader module and layout are made first (async creates).
void unasked_compute_pipeline(LiveSession& g, uint64_t id, VkPipelineCreateFlags flags) {
  static constexpr uint32_t kCode[] = {
#include "noop.comp.inc"
  };
  VkShaderModuleCreateInfo module_info{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  module_info.codeSize = sizeof(kCode);
  module_info.pCode = kCode;
  VkShaderModule module = as_handle<VkShaderModule>(id + 1);
  g.b.Clear();
  wire::encode_vkCreateShaderModule(g.b, g.ids, as_handle<VkDevice>(kDeviceId), &module_info, nullptr, &module);
  g.add(wire::kCmd_vkCreateShaderModule, g.b);
  VkPipelineLayoutCreateInfo layout_info{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  VkPipelineLayout layout = as_handle<VkPipelineLayout>(id + 2);
  g.b.Clear();
  wire::encode_vkCreatePipelineLayout(g.b, g.ids, as_handle<VkDevice>(kDeviceId), &layout_info, nullptr, &layout);
  g.add(wire::kCmd_vkCreatePipelineLayout, g.b);
  VkComputePipelineCreateInfo info{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  info.flags = flags;
  info.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
  info.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  info.stage.module = module;
  info.stage.pName = "main";
  info.layout = layout;
  VkPipeline pipeline = as_handle<VkPipeline>(id);
  g.b.Clear();
  wire::encode_vkCreateComputePipelines(g.b, g.ids, as_handle<VkDevice>(kDeviceId), VK_NULL_HANDLE, 1, &info, nullptr,
                                        &pipeline);
  g.add(wire::kCmd_vkCreateComputePipelines, g.b);
}

// A pipeline sent without asking is made (the stats count it with its module and layout); one
// the driver does not make (lavapipe answers VK_PIPELINE_COMPILE_REQUIRED when asked to fail
// rather than compile) ends the session naming the call: the guest was told VK_SUCCESS.
TEST(SessionBatch, APipelineSentWithoutAskingIsMadeOrEndsTheSession) {
  LiveSession g;
  // VK_PIPELINE_CREATE_FAIL_ON_PIPELINE_COMPILE_REQUIRED_BIT needs the feature (the validation
  // run of these tests checks).
  VkPhysicalDevicePipelineCreationCacheControlFeaturesEXT cache_control{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_CREATION_CACHE_CONTROL_FEATURES_EXT};
  cache_control.pipelineCreationCacheControl = VK_TRUE;
  ASSERT_TRUE(g.setup_device({VK_EXT_PIPELINE_CREATION_CACHE_CONTROL_EXTENSION_NAME}, &cache_control));
  stats(g);
  unasked_compute_pipeline(g, 1000, 0);
  stats(g);
  ASSERT_TRUE(g.send());
  auto before = g.next_reply();
  auto after = g.next_reply();
  ASSERT_TRUE(before && after);
  EXPECT_EQ(after->header.seq, before->header.seq + 1);
  EXPECT_EQ(after->as<wire::StatsReply>().objects, before->as<wire::StatsReply>().objects + 3);

  unasked_compute_pipeline(g, 2000, VK_PIPELINE_CREATE_FAIL_ON_PIPELINE_COMPILE_REQUIRED_BIT);
  stats(g);
  ASSERT_TRUE(g.send());
  EXPECT_FALSE(g.next_reply());
  const std::string why = g.end_reason();
  EXPECT_NE(why.find("vkCreateComputePipelines"), std::string::npos) << why;
  EXPECT_NE(why.find("sent without asking"), std::string::npos) << why;
}

TEST(SessionBatch, ATruncatedRecordHeaderEndsTheSession) {
  LiveSession g;
  const std::vector<std::byte> four(4);
  ASSERT_TRUE(g.send_bytes(four));
  EXPECT_EQ(g.end_reason(), "truncated record header");
  EXPECT_EQ(g.end_kind(), EndReason::kProtocolError);
}

TEST(SessionBatch, ARecordSizeThatIsNotWholeWordsEndsTheSession) {
  LiveSession g;
  std::vector<std::byte> batch(16);
  const wire::RecordHeader h{12, wire::kCtlSessionStats, wire::kRecordWantsReply};
  std::memcpy(batch.data(), &h, sizeof(h));
  ASSERT_TRUE(g.send_bytes(batch));
  EXPECT_EQ(g.end_reason(), "record size 12 out of bounds");
  EXPECT_EQ(g.end_kind(), EndReason::kProtocolError);
}

TEST(SessionBatch, ARecordLongerThanItsBatchEndsTheSession) {
  LiveSession g;
  std::vector<std::byte> batch(16);
  const wire::RecordHeader h{24, wire::kCtlSessionStats, wire::kRecordWantsReply};
  std::memcpy(batch.data(), &h, sizeof(h));
  ASSERT_TRUE(g.send_bytes(batch));
  EXPECT_EQ(g.end_reason(), "record size 24 out of bounds");
}

TEST(SessionBatch, AnUnknownCommandEndsTheSessionNamingIt) {
  LiveSession g;
  g.add(wire::kCommandIdLimit, nullptr, 0);
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "command id " + std::to_string(wire::kCommandIdLimit) + ": record: unknown command");
}

TEST(SessionBatch, AMessageThatIsNotABatchEndsTheSession) {
  LiveSession g;
  ASSERT_TRUE(g.send_bytes(std::vector<std::byte>(8), 7));
  EXPECT_EQ(g.end_reason(), "unexpected message kind 7");
}

TEST(SessionBatch, TheGuestLeavingEndsTheSessionCleanly) {
  auto g = std::make_unique<LiveSession>();
  ASSERT_TRUE(g->setup_device());
  g->guest().close();
  ASSERT_TRUE(g->join_within(5s));
  EXPECT_EQ(g->session().end_reason(), EndReason::kGuestGoodbye);
}

TEST(SessionBatch, StopEndsTheSessionAsTheServers) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  g.session().stop();
  ASSERT_TRUE(g.join_within(5s));
  EXPECT_EQ(g.session().end_reason(), EndReason::kServerShutdown);
}

// ------------------------------------------------------------------ object ids
TEST(SessionObjects, ANewObjectCannotTakeIdZero) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  create_fence(g, 0, false);
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "vkCreateFence.pFence: new object id 0");
}

TEST(SessionObjects, ANewObjectCannotTakeAnIdInUse) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  create_fence(g, kDeviceId, false);
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "vkCreateFence.pFence: new object id already in use");
}

TEST(SessionObjects, TheObjectLimitEndsTheSession) {
  ServerConfig config = test_config();
  config.max_objects = 4;  // instance, physical device, device, one fence
  LiveSession g(config);
  ASSERT_TRUE(g.setup_device());
  create_fence(g, kFenceId, false);
  create_fence(g, kFenceId + 1, false);
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "vkCreateFence.pFence: object limit reached (--max-objects 4)");
  EXPECT_EQ(g.end_kind(), EndReason::kObjectLimit);
}

TEST(SessionObjects, AnIdOfTheWrongTypeEndsTheSession) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  create_fence(g, kFenceId, true);
  VkFence not_a_fence = as_handle<VkFence>(kInstanceId);
  g.b.Clear();
  wire::encode_vkWaitForFences(g.b, g.ids, as_handle<VkDevice>(kDeviceId), 1, &not_a_fence, VK_TRUE, 0);
  g.add_reply(wire::kCmd_vkWaitForFences, g.b);
  ASSERT_TRUE(g.send());
  const std::string why = g.end_reason();
  EXPECT_NE(why.find("vkWaitForFences"), std::string::npos) << why;
  EXPECT_NE(why.find("unknown handle"), std::string::npos) << why;
}

TEST(SessionObjects, StatsCountTheObjectsTheGuestMade) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  stats(g);
  ASSERT_TRUE(g.send());
  auto before = g.next_reply();
  ASSERT_TRUE(before);
  EXPECT_EQ(before->as<wire::StatsReply>().objects, 3u);  // instance, physical device, device
  create_fence(g, kFenceId, false);
  create_fence(g, kFenceId + 1, false);
  destroy_fence(g, kFenceId);
  stats(g);
  ASSERT_TRUE(g.send());
  auto after = g.next_reply();
  ASSERT_TRUE(after);
  EXPECT_EQ(after->as<wire::StatsReply>().objects, 4u);
  EXPECT_GT(after->as<wire::StatsReply>().bytes, before->as<wire::StatsReply>().bytes);
}

// ------------------------------------------------------------------ control commands
TEST(SessionControl, AnUnknownControlCommandEndsTheSession) {
  LiveSession g;
  g.add_reply(0xF0FF, nullptr, 0);
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "control command 61695: control: unknown control command");
}

TEST(SessionControl, EnumeratingPhysicalDevicesOfAnUnknownInstanceEndsTheSession) {
  LiveSession g;
  const wire::EnumeratePhysicalDevicesRequest req{77, 100, 1, 0};
  g.add_reply(wire::kCtlEnumeratePhysicalDevices, &req, sizeof(req));
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "control command 61440: EnumeratePhysicalDevices: unknown instance id");
}

TEST(SessionControl, EnumeratingTwiceKeepsTheFirstIds) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  const wire::EnumeratePhysicalDevicesRequest req{kInstanceId, 5000, 4, 0};
  auto r = g.call(wire::kCtlEnumeratePhysicalDevices, &req, sizeof(req));
  ASSERT_TRUE(r);
  ASSERT_GE(r->payload.size(), 16u);
  const auto ids = r->as<std::array<uint64_t, 2>>();
  EXPECT_EQ(ids[0], 1u);  // lavapipe is one device
  EXPECT_EQ(ids[1], kPhysicalDeviceId);
}

TEST(SessionControl, AShortMemoryRequestEndsTheSession) {
  LiveSession g;
  const uint64_t half[2] = {kMemoryId, 0};
  g.add(wire::kCtlMemoryWrite, half, sizeof(half));
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "control command 61442: memory: short request");
}

TEST(SessionControl, MemoryOfAnUnknownIdEndsTheSession) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  const wire::MemoryRange r{kMemoryId, 0, 16};
  g.add_reply(wire::kCtlMemoryRead, &r, sizeof(r));
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "control command 61443: memory: unknown memory id");
  EXPECT_EQ(g.end_kind(), EndReason::kInvalidUsage);
}

// Host-visible memory of three pages; the fd the host shares it through, mapped here.
// Host-visible memory as the guest maps it: a file of its own (fd), or a block of the session's
// small-memory heap, whose file comes once and whose offset is pushed before the reply.
struct Mapped {
  void* map_base = MAP_FAILED;
  size_t map_size = 0;
  std::byte* ptr = nullptr;
  size_t size = 0;
  bool in_heap = false;
  uint64_t heap_offset = 0;
  ~Mapped() {
    if (map_base != MAP_FAILED) munmap(map_base, map_size);
  }
};

bool map_file(int fd, Mapped* out) {
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) return false;
  out->map_size = static_cast<size_t>(st.st_size);
  out->map_base = mmap(nullptr, out->map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  return out->map_base != MAP_FAILED;
}

bool allocate_shared(LiveSession& g, size_t size, Mapped* out, uint64_t id = kMemoryId) {
  VkMemoryAllocateInfo alloc{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  alloc.allocationSize = size;
  alloc.memoryTypeIndex = 0;  // lavapipe's one type: device-local, host-visible, coherent
  VkDeviceMemory memory = as_handle<VkDeviceMemory>(id);
  g.b.Clear();
  wire::encode_vkAllocateMemory(g.b, g.ids, as_handle<VkDevice>(kDeviceId), &alloc, nullptr, &memory);
  auto r = g.call(wire::kCmd_vkAllocateMemory, g.b);
  if (r && r->header.seq == wire::pushed_seq(wire::kPushMemoryPlacement, id)) {
    const auto placement = r->as<wire::MemoryPlacement>();
    if (placement.size < size) return false;
    out->in_heap = true;
    out->heap_offset = placement.offset;
    r = g.next_reply();  // the allocation's own
  }
  if (!r || r->header.result != VK_SUCCESS) return false;
  out->size = size;
  if (out->in_heap) {
    // The heap's file comes with the session's first block only: the tests allocate once.
    if (!map_file(g.take_fd(wire::kFdTagSmallMemoryHeap), out) || out->heap_offset + size > out->map_size) return false;
    out->ptr = static_cast<std::byte*>(out->map_base) + out->heap_offset;
    return true;
  }
  if (!map_file(g.take_fd(wire::kFdTagMemoryBase + id), out)) return false;
  out->ptr = static_cast<std::byte*>(out->map_base);
  return true;
}

// A read barrier's reply (kCtlMemoryRead, kCtlMemoryReadAfter), taken apart.
struct ReadBack {
  uint32_t flags = 0;
  std::vector<wire::MemoryRun> runs;
  std::vector<std::byte> bytes;
};

std::optional<ReadBack> parse_read(const std::optional<Reply>& r) {
  if (!r || r->payload.size() < sizeof(wire::MemoryReadReply)) return std::nullopt;
  const auto header = r->as<wire::MemoryReadReply>();
  ReadBack out;
  out.flags = header.flags;
  const size_t runs_bytes = header.runs * sizeof(wire::MemoryRun);
  if (r->payload.size() < sizeof(header) + runs_bytes) return std::nullopt;
  out.runs.resize(header.runs);
  if (runs_bytes) std::memcpy(out.runs.data(), r->payload.data() + sizeof(header), runs_bytes);
  out.bytes.assign(r->payload.begin() + static_cast<long>(sizeof(header) + runs_bytes), r->payload.end());
  return out;
}

std::optional<ReadBack> read_barrier(LiveSession& g, uint64_t offset, uint64_t size) {
  const wire::MemoryRange range{kMemoryId, offset, size};
  return parse_read(g.call(wire::kCtlMemoryRead, &range, sizeof(range)));
}

// The guest's copy of kMemoryId: `size` bytes of 0x5A, through the write barrier.
void write_guest_copy(LiveSession& g, size_t size) {
  std::vector<std::byte> write(sizeof(wire::MemoryRange) + size, std::byte{0x5A});
  const wire::MemoryRange range{kMemoryId, 0, size};
  std::memcpy(write.data(), &range, sizeof(range));
  g.add(wire::kCtlMemoryWrite, write.data(), write.size());
}

TEST(SessionControl, AReadBarrierSendsOnlyThePagesThatDifferFromTheGuestCopy) {
  constexpr size_t kPage = 4096, kSize = 3 * kPage;
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  Mapped m;
  ASSERT_TRUE(allocate_shared(g, kSize, &m));
  write_guest_copy(g, kSize);  // all three pages
  ASSERT_TRUE(g.send());
  auto same = read_barrier(g, 0, kSize);
  ASSERT_TRUE(same);
  EXPECT_TRUE(same->runs.empty());
  // The device writes the middle page (here: through the shared pages, which the host sees).
  std::memset(m.ptr + kPage + 100, 0x33, 8);
  auto changed = read_barrier(g, 0, kSize);
  ASSERT_TRUE(changed);
  ASSERT_EQ(changed->runs.size(), 1u);
  EXPECT_EQ(changed->runs[0].offset, kPage);
  EXPECT_EQ(changed->runs[0].size, kPage);
  ASSERT_EQ(changed->bytes.size(), kPage);
  EXPECT_EQ(changed->bytes[100], std::byte{0x33});
  EXPECT_EQ(changed->bytes[0], std::byte{0x5A});
  // Sent once: the guest has it now.
  auto again = read_barrier(g, 0, kSize);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->runs.empty());
}

// A read barrier riding behind a wait (kCtlMemoryReadAfter) and its reply, taken apart.
void read_after(LiveSession& g, uint64_t offset, uint64_t size, uint64_t calls_back) {
  const wire::MemoryReadAfter a{{kMemoryId, offset, size}, calls_back};
  g.add_reply(wire::kCtlMemoryReadAfter, &a, sizeof(a));
}

std::optional<ReadBack> read_after_reply(LiveSession& g) {
  auto r = g.next_reply();
  if (!r || r->header.command != wire::kCtlMemoryReadAfter) return std::nullopt;
  return parse_read(r);
}

TEST(SessionControl, AReadBehindAWaitThatSucceededComesWithTheWait) {
  constexpr size_t kPage = 4096, kSize = 2 * kPage;
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  Mapped m;
  ASSERT_TRUE(allocate_shared(g, kSize, &m));
  write_guest_copy(g, kSize);
  create_fence(g, kFenceId, true);
  stats(g);
  ASSERT_TRUE(g.send());
  ASSERT_TRUE(g.next_reply());              // the write is in
  std::memset(m.ptr + kPage + 8, 0x33, 8);  // the device's write
  // One batch: the wait, then a read of each page behind it (1 and 2 calls back).
  wait_fence(g, kFenceId, UINT64_MAX);
  read_after(g, 0, kPage, 1);
  read_after(g, kPage, kPage, 2);
  ASSERT_TRUE(g.send());
  EXPECT_EQ(result_of(g.next_reply()), VK_SUCCESS);
  auto first = read_after_reply(g);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->flags, 0u);
  EXPECT_TRUE(first->runs.empty());
  auto second = read_after_reply(g);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->flags, 0u);
  ASSERT_EQ(second->runs.size(), 1u);
  EXPECT_EQ(second->runs[0].offset, kPage);
  ASSERT_EQ(second->bytes.size(), kPage);
  EXPECT_EQ(second->bytes[8], std::byte{0x33});
  // Sent once: the guest has it now.
  auto again = read_barrier(g, 0, kSize);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->runs.empty());
}

// Behind a wait that timed out, or one still pending on a waiter thread, nothing is read, and
// what the host knows of the guest's copy does not change: a later read still sends the page.
TEST(SessionControl, AReadBehindAWaitThatDidNotSucceedAtOnceIsSkipped) {
  constexpr size_t kPage = 4096;
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  Mapped m;
  ASSERT_TRUE(allocate_shared(g, kPage, &m));
  write_guest_copy(g, kPage);
  blocked_work(g);
  create_fence(g, kFenceId, false);
  submit(g, kCommandBufferId, kFenceId);
  ASSERT_TRUE(g.send());
  auto alloc = g.next_reply();
  ASSERT_TRUE(alloc);
  EXPECT_EQ(alloc->header.command, wire::kCmd_vkAllocateCommandBuffers);
  std::memset(m.ptr + 16, 0x44, 8);
  wait_fence(g, kFenceId, 0);
  read_after(g, 0, kPage, 1);
  ASSERT_TRUE(g.send());
  EXPECT_EQ(result_of(g.next_reply()), VK_TIMEOUT);
  auto timed_out = read_after_reply(g);
  ASSERT_TRUE(timed_out);
  EXPECT_EQ(timed_out->flags, wire::kMemoryReadSkipped);
  EXPECT_TRUE(timed_out->runs.empty());
  // Pending: the skipped read's reply comes first, the wait's once the work is done.
  wait_fence(g, kFenceId, UINT64_MAX);
  read_after(g, 0, kPage, 1);
  ASSERT_TRUE(g.send());
  auto pending = read_after_reply(g);
  ASSERT_TRUE(pending);
  EXPECT_EQ(pending->flags, wire::kMemoryReadSkipped);
  set_event(g);
  ASSERT_TRUE(g.send());
  EXPECT_EQ(result_of(g.next_reply()), VK_SUCCESS);
  auto read = read_barrier(g, 0, kPage);
  ASSERT_TRUE(read);
  ASSERT_EQ(read->runs.size(), 1u);
  EXPECT_EQ(read->bytes[16], std::byte{0x44});
}

// A read behind a call other than the Vulkan call answered last is skipped too.
TEST(SessionControl, AReadBehindAnotherCallThanTheLastAnsweredIsSkipped) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  Mapped m;
  ASSERT_TRUE(allocate_shared(g, 4096, &m));
  create_fence(g, kFenceId, true);
  wait_fence(g, kFenceId, UINT64_MAX);
  wait_fence(g, kFenceId, UINT64_MAX);
  read_after(g, 0, 4096, 2);  // the first wait, answered before the second
  ASSERT_TRUE(g.send());
  EXPECT_EQ(result_of(g.next_reply()), VK_SUCCESS);
  EXPECT_EQ(result_of(g.next_reply()), VK_SUCCESS);
  auto skipped = read_after_reply(g);
  ASSERT_TRUE(skipped);
  EXPECT_EQ(skipped->flags, wire::kMemoryReadSkipped);
}

TEST(SessionControl, AReadAfterThatFollowsNoCallEndsTheSession) {
  for (uint64_t calls_back : {uint64_t{0}, uint64_t{1'000'000}}) {
    LiveSession g;
    ASSERT_TRUE(g.setup_device());
    Mapped m;
    ASSERT_TRUE(allocate_shared(g, 4096, &m));
    read_after(g, 0, 4096, calls_back);
    ASSERT_TRUE(g.send());
    EXPECT_EQ(g.end_reason(), "control command 61448: memory read after: does not follow an earlier call");
  }
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  const wire::MemoryRange plain{kMemoryId, 0, 4096};
  g.add_reply(wire::kCtlMemoryReadAfter, &plain, sizeof(plain));
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "control command 61448: memory read after: bad request size");
}

// One guest thread's barrier may name memory another thread freed meanwhile (the ICD's barriers
// read every mapped allocation): the read is answered "gone", the write dropped, and the
// session goes on. vkcube in shadow mode lost its device this way while tearing down.
TEST(SessionControl, BarriersOfMemoryFreedMeanwhileAreAnsweredGone) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  Mapped m;
  ASSERT_TRUE(allocate_shared(g, 4096, &m));
  g.b.Clear();
  wire::encode_vkFreeMemory(g.b, g.ids, as_handle<VkDevice>(kDeviceId), as_handle<VkDeviceMemory>(kMemoryId), nullptr);
  g.add(wire::kCmd_vkFreeMemory, g.b);
  write_guest_copy(g, 4096);
  create_fence(g, kFenceId, true);
  wait_fence(g, kFenceId, UINT64_MAX);
  read_after(g, 0, 4096, 1);
  ASSERT_TRUE(g.send());
  EXPECT_EQ(result_of(g.next_reply()), VK_SUCCESS);
  auto after = read_after_reply(g);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->flags, wire::kMemoryReadGone);
  EXPECT_TRUE(after->runs.empty());
  auto read = read_barrier(g, 0, 4096);
  ASSERT_TRUE(read);
  EXPECT_EQ(read->flags, wire::kMemoryReadGone);
  stats(g);
  ASSERT_TRUE(g.send());
  auto st = g.next_reply();
  ASSERT_TRUE(st) << g.end_reason();
  EXPECT_EQ(st->header.command, wire::kCtlSessionStats);
}

TEST(SessionControl, AMemoryRangePastTheEndEndsTheSession) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  Mapped m;
  ASSERT_TRUE(allocate_shared(g, 4096, &m));
  const wire::MemoryRange range{kMemoryId, 4000, 200};
  g.add_reply(wire::kCtlMemoryRead, &range, sizeof(range));
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "control command 61443: memory: range out of bounds");
}

TEST(SessionControl, AWriteShorterThanItsRangeEndsTheSession) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  Mapped m;
  ASSERT_TRUE(allocate_shared(g, 4096, &m));
  std::vector<std::byte> write(sizeof(wire::MemoryRange) + 8);
  const wire::MemoryRange range{kMemoryId, 0, 64};
  std::memcpy(write.data(), &range, sizeof(range));
  g.add(wire::kCtlMemoryWrite, write.data(), write.size());
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "control command 61442: memory: short write");
}

TEST(SessionControl, OrdinaryMemoryIsNotExternalMemory) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  Mapped m;
  ASSERT_TRUE(allocate_shared(g, 4096, &m));
  const uint64_t id = kMemoryId;
  g.add_reply(wire::kCtlExternalMemory, &id, sizeof(id));
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "control command 61444: external memory: not external host-visible memory");
}

TEST(SessionControl, MemoryOfItsOwnFileHasNoMemoryPlacement) {
  ServerConfig config = test_config();
  config.small_memory_heap_bytes = 0;  // every allocation its own file
  LiveSession g(config);
  ASSERT_TRUE(g.setup_device());
  Mapped m;
  ASSERT_TRUE(allocate_shared(g, 4096, &m));
  EXPECT_FALSE(m.in_heap);
  const uint64_t id = kMemoryId;
  g.add_reply(wire::kCtlMemoryPlacement, &id, sizeof(id));
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "control command 61447: memory placement: not host-visible memory in a heap");
}

TEST(SessionControl, SmallMemoryIsABlockOfOneHeapSentOnce) {
  ServerConfig config = test_config();
  config.small_memory_heap_bytes = 1 << 20;  // blocks up to 128 KiB
  LiveSession g(config);
  ASSERT_TRUE(g.setup_device());
  Mapped first;
  ASSERT_TRUE(allocate_shared(g, 4096, &first, kMemoryId));
  ASSERT_TRUE(first.in_heap);
  EXPECT_EQ(first.map_size, size_t{1} << 20);
  // The second block: a placement in the same heap, no file; written through the first mapping
  // of the heap, read back by the host's read barrier (it reads the same pages).
  VkMemoryAllocateInfo alloc{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  alloc.allocationSize = 8192;
  VkDeviceMemory memory = as_handle<VkDeviceMemory>(kMemoryId + 1);
  g.b.Clear();
  wire::encode_vkAllocateMemory(g.b, g.ids, as_handle<VkDevice>(kDeviceId), &alloc, nullptr, &memory);
  auto pushed = g.call(wire::kCmd_vkAllocateMemory, g.b);
  ASSERT_TRUE(pushed);
  ASSERT_EQ(pushed->header.seq, wire::pushed_seq(wire::kPushMemoryPlacement, kMemoryId + 1));
  const auto second = pushed->as<wire::MemoryPlacement>();
  auto reply = g.next_reply();
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->header.result, VK_SUCCESS);
  EXPECT_GE(second.size, 8192u);
  EXPECT_TRUE(second.offset >= first.heap_offset + 4096 || second.offset + second.size <= first.heap_offset)
      << "blocks overlap";
  std::memset(static_cast<std::byte*>(first.map_base) + second.offset, 0x7E, 8192);
  const wire::MemoryRange range{kMemoryId + 1, 0, 8192};
  auto read = g.call(wire::kCtlMemoryRead, &range, sizeof(range));
  ASSERT_TRUE(read);
  const auto header = read->as<wire::MemoryReadReply>();
  ASSERT_EQ(header.runs, 1u);  // the guest never wrote it: both pages differ from its copy
  ASSERT_EQ(read->payload.size(), sizeof(header) + sizeof(wire::MemoryRun) + 8192);
  EXPECT_EQ(read->payload.back(), std::byte{0x7E});
  // Asked for, the placement is the pushed one.
  const uint64_t id = kMemoryId + 1;
  auto asked = g.call(wire::kCtlMemoryPlacement, &id, sizeof(id));
  ASSERT_TRUE(asked);
  EXPECT_EQ(asked->as<wire::MemoryPlacement>().offset, second.offset);
  // Past the block limit: a file of its own.
  Mapped large;
  ASSERT_TRUE(allocate_shared(g, 256 << 10, &large, kMemoryId + 2));
  EXPECT_FALSE(large.in_heap);
}

TEST(SessionControl, NamingMemoryForPresentationBeforeJoiningEndsTheSession) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  const wire::PresentNameRequest req{kMemoryId, 0, 4096};
  g.add_reply(wire::kCtlPresentName, &req, sizeof(req));
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "control command 61446: present: name before join");
}

// ------------------------------------------------------------------ blocking calls
TEST(SessionSync, AWaitOnASignaledFenceIsAnsweredAtOnce) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  create_fence(g, kFenceId, true);
  wait_fence(g, kFenceId, UINT64_MAX);
  ASSERT_TRUE(g.send());
  EXPECT_EQ(result_of(g.next_reply()), VK_SUCCESS);
}

TEST(SessionSync, AWaitOnAnUnsignaledFenceTimesOutAfterTheGuestsTimeout) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  create_fence(g, kFenceId, false);
  wait_fence(g, kFenceId, 0);
  ASSERT_TRUE(g.send());
  EXPECT_EQ(result_of(g.next_reply()), VK_TIMEOUT);
  // Longer than the session thread's own try (200 us): the rest is waited on a waiter thread.
  for (uint64_t timeout_ms : {1, 30}) {
    const auto start = std::chrono::steady_clock::now();
    wait_fence(g, kFenceId, timeout_ms * 1'000'000);
    ASSERT_TRUE(g.send());
    EXPECT_EQ(result_of(g.next_reply()), VK_TIMEOUT);
    EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(timeout_ms));
  }
}

TEST(SessionSync, APendingWaitDoesNotHoldUpTheRecordsAfterIt) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  create_fence(g, kFenceId, false);
  wait_fence(g, kFenceId, UINT64_MAX);
  stats(g);
  ASSERT_TRUE(g.send());
  auto r = g.next_reply();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header.command, wire::kCtlSessionStats);
}

TEST(SessionSync, DestroyingAFenceAPendingWaitUsesEndsTheSession) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  create_fence(g, kFenceId, false);
  wait_fence(g, kFenceId, UINT64_MAX);
  stats(g);
  ASSERT_TRUE(g.send());
  ASSERT_TRUE(g.next_reply());  // the stats: the wait is pending on a waiter thread
  destroy_fence(g, kFenceId);
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "vkDestroyFence: fence is in use by a pending vkWaitForFences");
  // The waiter gives up once the session closes; the session ends with it.
  EXPECT_TRUE(g.join_within(5s));
}

TEST(SessionSync, TooManyPendingWaitsEndTheSession) {
  ServerConfig config = test_config();
  config.max_pending_waits = 2;
  LiveSession g(config);
  ASSERT_TRUE(g.setup_device());
  create_fence(g, kFenceId, false);
  for (int i = 0; i < 3; ++i) wait_fence(g, kFenceId, UINT64_MAX);
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "vkWaitForFences: too many pending blocking calls (limit 2)");
  EXPECT_EQ(g.end_kind(), EndReason::kPendingLimit);
}

TEST(SessionSync, AWaitThatTheGpuFinishesLaterIsAnsweredThen) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  blocked_work(g);
  create_fence(g, kFenceId, false);
  submit(g, kCommandBufferId, kFenceId);
  wait_fence(g, kFenceId, UINT64_MAX);
  stats(g);
  ASSERT_TRUE(g.send());
  auto alloc = g.next_reply();
  ASSERT_TRUE(alloc);
  EXPECT_EQ(alloc->header.command, wire::kCmd_vkAllocateCommandBuffers);
  auto s = g.next_reply();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->header.command, wire::kCtlSessionStats);  // the wait is still pending
  set_event(g);
  ASSERT_TRUE(g.send());
  auto wait = g.next_reply();
  ASSERT_TRUE(wait);
  EXPECT_EQ(wait->header.command, wire::kCmd_vkWaitForFences);
  EXPECT_EQ(wait->header.result, VK_SUCCESS);
}

// vkQueueWaitIdle on a waiter thread while the session thread submits to the same queue: the
// wait must not overlap a submission (the queue is externally synchronized) and must not hold
// the queue while it waits (the submissions would stall behind it).
TEST(SessionSync, QueueWaitIdleOnAWaiterLetsSubmissionsGoOnAndAnswersOnceIdle) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  blocked_work(g);
  submit(g, kCommandBufferId, 0);
  g.b.Clear();
  wire::encode_vkQueueWaitIdle(g.b, g.ids, as_handle<VkQueue>(kQueueId));
  g.add_reply(wire::kCmd_vkQueueWaitIdle, g.b);
  ASSERT_TRUE(g.send());
  ASSERT_TRUE(g.next_reply());  // vkAllocateCommandBuffers
  // More submissions while the idle wait is pending (on a waiter thread by now: the session
  // thread's try gives up after 200 us): each is answered (the stats after them come back)
  // before the queue is idle.
  create_fence(g, kFenceId, false);
  for (int round = 0; round < 5; ++round) {
    std::this_thread::sleep_for(2ms);
    for (int i = 0; i < 4; ++i) submit(g, 0, round == 4 && i == 3 ? kFenceId : 0);
    stats(g);
    ASSERT_TRUE(g.send());
    auto s = g.next_reply();
    ASSERT_TRUE(s);
    EXPECT_EQ(s->header.command, wire::kCtlSessionStats);
  }
  set_event(g);
  wait_fence(g, kFenceId, UINT64_MAX);
  ASSERT_TRUE(g.send());
  auto idle = g.next_reply();
  ASSERT_TRUE(idle);
  auto fence = g.next_reply();
  ASSERT_TRUE(fence);
  if (idle->header.command != wire::kCmd_vkQueueWaitIdle) std::swap(idle, fence);
  EXPECT_EQ(idle->header.command, wire::kCmd_vkQueueWaitIdle);
  EXPECT_EQ(idle->header.result, VK_SUCCESS);
  EXPECT_EQ(fence->header.command, wire::kCmd_vkWaitForFences);
  EXPECT_EQ(fence->header.result, VK_SUCCESS);
}

TEST(SessionSync, DeviceWaitIdleAnswersOnceEveryQueueIsIdle) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  blocked_work(g);
  submit(g, kCommandBufferId, 0);
  g.b.Clear();
  wire::encode_vkDeviceWaitIdle(g.b, g.ids, as_handle<VkDevice>(kDeviceId));
  g.add_reply(wire::kCmd_vkDeviceWaitIdle, g.b);
  stats(g);
  ASSERT_TRUE(g.send());
  ASSERT_TRUE(g.next_reply());  // vkAllocateCommandBuffers
  auto s = g.next_reply();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->header.command, wire::kCtlSessionStats);  // the idle wait is pending
  set_event(g);
  ASSERT_TRUE(g.send());
  auto idle = g.next_reply();
  ASSERT_TRUE(idle);
  EXPECT_EQ(idle->header.command, wire::kCmd_vkDeviceWaitIdle);
  EXPECT_EQ(idle->header.result, VK_SUCCESS);
}

// The GPU finishes a pending wait just as a bad record ends the session: the waiter's reply and
// the session's last word (kMsgError) go out on the same reply ring, one producer at a time
// (under TSan this is the race the final message once had).
TEST(SessionSync, AWaiterRepliesWhileTheSessionEndsOnABadRecord) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  blocked_work(g);
  create_fence(g, kFenceId, false);
  submit(g, kCommandBufferId, kFenceId);
  wait_fence(g, kFenceId, UINT64_MAX);
  stats(g);
  ASSERT_TRUE(g.send());
  ASSERT_TRUE(g.next_reply());  // vkAllocateCommandBuffers
  ASSERT_TRUE(g.next_reply());  // stats: the wait is pending
  set_event(g);
  g.add(wire::kCommandIdLimit, nullptr, 0);
  ASSERT_TRUE(g.send());
  EXPECT_EQ(g.end_reason(), "command id " + std::to_string(wire::kCommandIdLimit) + ": record: unknown command");
  EXPECT_TRUE(g.join_within(5s));
}

TEST(SessionSync, AGuestThatLeavesWithAWaitPendingIsTornDownPromptly) {
  LiveSession g;
  ASSERT_TRUE(g.setup_device());
  blocked_work(g);
  submit(g, kCommandBufferId, 0);
  g.b.Clear();
  wire::encode_vkQueueWaitIdle(g.b, g.ids, as_handle<VkQueue>(kQueueId));
  g.add_reply(wire::kCmd_vkQueueWaitIdle, g.b);
  create_fence(g, kFenceId, false);
  wait_fence(g, kFenceId, UINT64_MAX);
  stats(g);
  ASSERT_TRUE(g.send());
  ASSERT_TRUE(g.next_reply());  // vkAllocateCommandBuffers
  ASSERT_TRUE(g.next_reply());  // stats: both waits pending
  // The queue never becomes idle by itself; teardown waits for the device, so the event is
  // set for it as a guest's last act, then the guest goes.
  set_event(g);
  ASSERT_TRUE(g.send());
  g.guest().close();
  EXPECT_EQ(g.end_kind(), EndReason::kGuestGoodbye);
}

}  // namespace
}  // namespace bypass::host::test
