// Which submissions reach memory imported from application pages (guest-icd's ImportTracker):
// records fed as the ICD feeds them (each handle a record names, then the record's command id
// from the generated table), and the answers the barriers act on.
#include "bypass/icd/import_tracker.h"

#include <gtest/gtest.h>

#include <initializer_list>
#include <utility>
#include <vector>

#include "bypass/wire/gen/commands.h"

namespace bypass::icd {
namespace {

using Ref = std::pair<VkObjectType, uint64_t>;

constexpr uint64_t kDevice = 1, kImport = 2, kOtherMemory = 3, kBuffer = 10, kPlainBuffer = 11, kCmd = 20,
                   kSecondary = 21, kOtherCmd = 22, kSet = 30, kPlainSet = 31, kImage = 40;

// One record as the ICD sends it: its handles (new ones first noted as handed out), then its id.
void record(ImportTracker& t, uint16_t command, std::initializer_list<Ref> refs, uint64_t new_from = 0) {
  if (new_from) ImportTracker::note_new(new_from);
  for (const auto& [type, id] : refs) ImportTracker::note(type, id);
  t.appended(command);
}

bool reaches(ImportTracker& t, std::initializer_list<uint64_t> cbs) { return t.reaches(std::vector<uint64_t>(cbs)); }

// A tracker with one import, a buffer bound to it and a buffer bound to other memory.
void setup(ImportTracker& t) {
  t.imported(kImport);
  record(t, wire::kCmd_vkBindBufferMemory,
         {{VK_OBJECT_TYPE_DEVICE, kDevice}, {VK_OBJECT_TYPE_BUFFER, kBuffer}, {VK_OBJECT_TYPE_DEVICE_MEMORY, kImport}});
  record(t, wire::kCmd_vkBindBufferMemory,
         {{VK_OBJECT_TYPE_DEVICE, kDevice},
          {VK_OBJECT_TYPE_BUFFER, kPlainBuffer},
          {VK_OBJECT_TYPE_DEVICE_MEMORY, kOtherMemory}});
}

void begin(ImportTracker& t, uint64_t cb) {
  record(t, wire::kCmd_vkBeginCommandBuffer, {{VK_OBJECT_TYPE_COMMAND_BUFFER, cb}});
}

TEST(ImportTracker, NothingReachesBeforeAnImport) {
  ImportTracker t;
  EXPECT_FALSE(t.active());
  EXPECT_FALSE(reaches(t, {kCmd}));
}

TEST(ImportTracker, ACopyFromABufferOnTheImportReachesAndOneFromOtherMemoryDoesNot) {
  ImportTracker t;
  setup(t);
  begin(t, kCmd);
  begin(t, kOtherCmd);
  record(
      t, wire::kCmd_vkCmdCopyBuffer,
      {{VK_OBJECT_TYPE_COMMAND_BUFFER, kCmd}, {VK_OBJECT_TYPE_BUFFER, kBuffer}, {VK_OBJECT_TYPE_BUFFER, kPlainBuffer}});
  record(t, wire::kCmd_vkCmdFillBuffer,
         {{VK_OBJECT_TYPE_COMMAND_BUFFER, kOtherCmd}, {VK_OBJECT_TYPE_BUFFER, kPlainBuffer}});
  EXPECT_TRUE(reaches(t, {kCmd}));
  EXPECT_FALSE(reaches(t, {kOtherCmd}));
  EXPECT_TRUE(reaches(t, {kOtherCmd, kCmd}));
  // Recorded again without the import: it no longer reaches.
  begin(t, kCmd);
  record(t, wire::kCmd_vkCmdFillBuffer, {{VK_OBJECT_TYPE_COMMAND_BUFFER, kCmd}, {VK_OBJECT_TYPE_BUFFER, kPlainBuffer}});
  EXPECT_FALSE(reaches(t, {kCmd}));
}

TEST(ImportTracker, ADescriptorSetReachesWhetherWrittenBeforeOrAfterItIsBound) {
  ImportTracker t;
  setup(t);
  record(t, wire::kCmd_vkUpdateDescriptorSets,
         {{VK_OBJECT_TYPE_DESCRIPTOR_SET, kSet}, {VK_OBJECT_TYPE_BUFFER, kBuffer}});
  record(t, wire::kCmd_vkUpdateDescriptorSets,
         {{VK_OBJECT_TYPE_DESCRIPTOR_SET, kPlainSet}, {VK_OBJECT_TYPE_BUFFER, kPlainBuffer}});
  begin(t, kCmd);
  record(t, wire::kCmd_vkCmdBindDescriptorSets,
         {{VK_OBJECT_TYPE_COMMAND_BUFFER, kCmd}, {VK_OBJECT_TYPE_DESCRIPTOR_SET, kSet}});
  begin(t, kOtherCmd);
  record(t, wire::kCmd_vkCmdBindDescriptorSets,
         {{VK_OBJECT_TYPE_COMMAND_BUFFER, kOtherCmd}, {VK_OBJECT_TYPE_DESCRIPTOR_SET, kPlainSet}});
  EXPECT_TRUE(reaches(t, {kCmd}));
  EXPECT_FALSE(reaches(t, {kOtherCmd}));
  // Update after bind: the set bound earlier now names the import.
  record(t, wire::kCmd_vkUpdateDescriptorSets,
         {{VK_OBJECT_TYPE_DESCRIPTOR_SET, kPlainSet}, {VK_OBJECT_TYPE_BUFFER, kBuffer}});
  EXPECT_TRUE(reaches(t, {kOtherCmd}));
}

TEST(ImportTracker, ASecondaryCommandBufferCarriesItIntoThePrimary) {
  ImportTracker t;
  setup(t);
  begin(t, kCmd);
  record(t, wire::kCmd_vkCmdExecuteCommands,
         {{VK_OBJECT_TYPE_COMMAND_BUFFER, kCmd}, {VK_OBJECT_TYPE_COMMAND_BUFFER, kSecondary}});
  EXPECT_FALSE(reaches(t, {kCmd}));
  // The secondary recorded (again) after the primary named it: looked at when the primary goes.
  begin(t, kSecondary);
  record(t, wire::kCmd_vkCmdCopyBuffer,
         {{VK_OBJECT_TYPE_COMMAND_BUFFER, kSecondary}, {VK_OBJECT_TYPE_BUFFER, kBuffer}});
  EXPECT_TRUE(reaches(t, {kCmd}));
}

TEST(ImportTracker, ObjectsMadeOfAReachingOneReachAndTheirInputsDoNot) {
  ImportTracker t;
  setup(t);
  constexpr uint64_t kView = 100, kRenderPass = 50, kFramebuffer = 101;
  record(t, wire::kCmd_vkBindImageMemory,
         {{VK_OBJECT_TYPE_DEVICE, kDevice}, {VK_OBJECT_TYPE_IMAGE, kImage}, {VK_OBJECT_TYPE_DEVICE_MEMORY, kImport}});
  record(t, wire::kCmd_vkCreateImageView,
         {{VK_OBJECT_TYPE_DEVICE, kDevice}, {VK_OBJECT_TYPE_IMAGE, kImage}, {VK_OBJECT_TYPE_IMAGE_VIEW, kView}}, kView);
  record(t, wire::kCmd_vkCreateFramebuffer,
         {{VK_OBJECT_TYPE_DEVICE, kDevice},
          {VK_OBJECT_TYPE_RENDER_PASS, kRenderPass},
          {VK_OBJECT_TYPE_IMAGE_VIEW, kView},
          {VK_OBJECT_TYPE_FRAMEBUFFER, kFramebuffer}},
         kFramebuffer);
  begin(t, kCmd);
  record(t, wire::kCmd_vkCmdBeginRenderPass,
         {{VK_OBJECT_TYPE_COMMAND_BUFFER, kCmd},
          {VK_OBJECT_TYPE_RENDER_PASS, kRenderPass},
          {VK_OBJECT_TYPE_FRAMEBUFFER, kFramebuffer}});
  EXPECT_TRUE(reaches(t, {kCmd}));
  // The render pass was an input: another framebuffer with it does not reach.
  begin(t, kOtherCmd);
  record(t, wire::kCmd_vkCmdBeginRenderPass,
         {{VK_OBJECT_TYPE_COMMAND_BUFFER, kOtherCmd}, {VK_OBJECT_TYPE_RENDER_PASS, kRenderPass}});
  EXPECT_FALSE(reaches(t, {kOtherCmd}));
}

TEST(ImportTracker, AFreedImportAndADestroyedBufferAreForgotten) {
  ImportTracker t;
  setup(t);
  record(t, wire::kCmd_vkDestroyBuffer, {{VK_OBJECT_TYPE_DEVICE, kDevice}, {VK_OBJECT_TYPE_BUFFER, kBuffer}});
  record(t, wire::kCmd_vkFreeMemory, {{VK_OBJECT_TYPE_DEVICE, kDevice}, {VK_OBJECT_TYPE_DEVICE_MEMORY, kImport}});
  begin(t, kCmd);
  record(t, wire::kCmd_vkCmdCopyBuffer, {{VK_OBJECT_TYPE_COMMAND_BUFFER, kCmd}, {VK_OBJECT_TYPE_BUFFER, kBuffer}});
  EXPECT_FALSE(reaches(t, {kCmd}));
}

TEST(ImportTracker, ADeviceAddressOfAReachingBufferMakesEverySubmissionReach) {
  ImportTracker t;
  setup(t);
  // Queries and naming of the buffer change nothing.
  record(t, wire::kCmd_vkGetBufferMemoryRequirements,
         {{VK_OBJECT_TYPE_DEVICE, kDevice}, {VK_OBJECT_TYPE_BUFFER, kBuffer}});
  record(t, wire::kCmd_vkSetDebugUtilsObjectNameEXT,
         {{VK_OBJECT_TYPE_DEVICE, kDevice}, {VK_OBJECT_TYPE_BUFFER, kBuffer}});
  EXPECT_FALSE(t.everything());
  // An address of a buffer on other memory changes nothing either.
  record(t, wire::kCmd_vkGetBufferDeviceAddress,
         {{VK_OBJECT_TYPE_DEVICE, kDevice}, {VK_OBJECT_TYPE_BUFFER, kPlainBuffer}});
  EXPECT_FALSE(t.everything());
  record(t, wire::kCmd_vkGetBufferDeviceAddress, {{VK_OBJECT_TYPE_DEVICE, kDevice}, {VK_OBJECT_TYPE_BUFFER, kBuffer}});
  EXPECT_TRUE(t.everything());
  EXPECT_TRUE(reaches(t, {kOtherCmd}));
}

TEST(ImportTracker, ACommandBufferOfADestroyedPoolIsForgotten) {
  ImportTracker t;
  setup(t);
  begin(t, kCmd);
  record(t, wire::kCmd_vkCmdCopyBuffer, {{VK_OBJECT_TYPE_COMMAND_BUFFER, kCmd}, {VK_OBJECT_TYPE_BUFFER, kBuffer}});
  ASSERT_TRUE(reaches(t, {kCmd}));
  t.forget(kCmd);  // vkDestroyCommandPool names the pool, not its command buffers
  EXPECT_FALSE(reaches(t, {kCmd}));
}

TEST(ImportTracker, TooManyReachingHandlesMakeEverySubmissionReach) {
  ImportTracker t;
  setup(t);
  // Fresh descriptor sets written with the import every frame, their pool reset (which names
  // no set): the tracker keeps a bounded number, then gives up tracking.
  constexpr uint64_t kFirstSet = 1000;
  for (uint64_t set = kFirstSet; set < kFirstSet + 70000 && !t.everything(); ++set)
    record(t, wire::kCmd_vkUpdateDescriptorSets,
           {{VK_OBJECT_TYPE_DESCRIPTOR_SET, set}, {VK_OBJECT_TYPE_BUFFER, kBuffer}});
  EXPECT_TRUE(t.everything());
  EXPECT_TRUE(reaches(t, {kOtherCmd}));
}

TEST(ImportTracker, TooManySubmissionsNeverSeenDoneMakeEveryWaitReadBack) {
  ImportTracker t;
  setup(t);
  std::vector<uint64_t> settles;
  auto pending = [](uint64_t) { return ImportTracker::Seen::kPending; };
  for (uint64_t serial = 1; serial <= 5000 && !t.everything(); ++serial) t.submitted(serial);
  EXPECT_TRUE(t.everything());
  EXPECT_TRUE(t.read_due(pending, &settles)) << "every wait reads back once tracking gave up";
  EXPECT_TRUE(settles.empty());
}

TEST(ImportTracker, TheDeviceAndQueuesNeverReach) {
  ImportTracker t;
  setup(t);
  // The device is named beside the import in every bind: were it taken on, everything would reach.
  begin(t, kCmd);
  record(
      t, wire::kCmd_vkCmdFillBuffer,
      {{VK_OBJECT_TYPE_COMMAND_BUFFER, kCmd}, {VK_OBJECT_TYPE_DEVICE, kDevice}, {VK_OBJECT_TYPE_BUFFER, kPlainBuffer}});
  EXPECT_FALSE(reaches(t, {kCmd}));
}

TEST(ImportTracker, ReadBacksWaitForWhatThisProcessCanHaveSeenComplete) {
  ImportTracker t;
  setup(t);
  using Seen = ImportTracker::Seen;
  std::vector<uint64_t> settles;
  auto all = [](Seen s) { return [s](uint64_t) { return s; }; };
  EXPECT_FALSE(t.read_due(all(Seen::kMaybe), &settles)) << "no reaching submission yet";
  t.submitted(7);
  t.submitted(9);
  EXPECT_FALSE(t.read_due(all(Seen::kPending), &settles)) << "nothing lets the program look yet";
  EXPECT_TRUE(t.read_due(all(Seen::kMaybe), &settles));
  EXPECT_TRUE(settles.empty());
  // 7 is seen complete: settled by this read-back; 9 may be complete and stays.
  EXPECT_TRUE(t.read_due([](uint64_t s) { return s == 7 ? Seen::kDone : Seen::kMaybe; }, &settles));
  EXPECT_EQ(settles, std::vector<uint64_t>{7});
  t.settled(settles);
  settles.clear();
  EXPECT_FALSE(t.read_due([](uint64_t s) { return s == 7 ? Seen::kMaybe : Seen::kPending; }, &settles));
  EXPECT_TRUE(t.read_due(all(Seen::kDone), &settles));
  t.settled(settles);
  settles.clear();
  EXPECT_FALSE(t.read_due(all(Seen::kMaybe), &settles)) << "every reaching submission read back";
}

}  // namespace
}  // namespace bypass::icd
