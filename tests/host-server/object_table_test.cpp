// The session's object table on its own: guest ids to driver handles, by type, with owners.
#include "bypass/host/object_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

namespace bypass::host {
namespace {

TEST(ObjectTable, AnIdResolvesOnlyAsTheTypeItWasMadeWith) {
  ObjectTable t;
  t.add(VK_OBJECT_TYPE_FENCE, 10, 0x1000, 0);
  uint64_t handle = 0;
  EXPECT_TRUE(t.lookup(VK_OBJECT_TYPE_FENCE, 10, &handle));
  EXPECT_EQ(handle, 0x1000u);
  EXPECT_FALSE(t.lookup(VK_OBJECT_TYPE_SEMAPHORE, 10, &handle));
  EXPECT_FALSE(t.lookup(VK_OBJECT_TYPE_FENCE, 11, &handle));
  EXPECT_TRUE(t.contains(10));
  EXPECT_FALSE(t.contains(0x1000));  // handles are not ids
}

TEST(ObjectTable, RemovingAnObjectRemovesWhatItOwnsTransitively) {
  ObjectTable t;
  t.add(VK_OBJECT_TYPE_DEVICE, 1, 0xD, 0);
  t.add(VK_OBJECT_TYPE_COMMAND_POOL, 2, 0xC0, 0xD);
  t.add(VK_OBJECT_TYPE_COMMAND_BUFFER, 3, 0xCB, 0xC0);
  t.add(VK_OBJECT_TYPE_FENCE, 4, 0xF, 0);  // someone else's
  std::vector<uint64_t> removed;
  t.remove(0xD, [&](const ObjectEntry& e) { removed.push_back(e.handle); });
  std::sort(removed.begin(), removed.end());
  EXPECT_EQ(removed, (std::vector<uint64_t>{0xD, 0xC0, 0xCB}));
  EXPECT_EQ(t.size(), 1u);
  EXPECT_TRUE(t.contains(4));
}

TEST(ObjectTable, RemovingWhatAnOwnerOwnsKeepsTheOwner) {
  ObjectTable t;
  t.add(VK_OBJECT_TYPE_DESCRIPTOR_POOL, 1, 0xA, 0);
  t.add(VK_OBJECT_TYPE_DESCRIPTOR_SET, 2, 0xB, 0xA);
  t.add(VK_OBJECT_TYPE_DESCRIPTOR_SET, 3, 0xC, 0xA);
  size_t seen = 0;
  t.remove_owned(0xA, [&](const ObjectEntry& e) {
    EXPECT_EQ(e.type, VK_OBJECT_TYPE_DESCRIPTOR_SET);
    ++seen;
  });
  EXPECT_EQ(seen, 2u);
  EXPECT_EQ(t.size(), 1u);
  EXPECT_NE(t.entry_of_handle(0xA), nullptr);
  // A pool reset and reuse: new sets under the same pool go with it later.
  t.add(VK_OBJECT_TYPE_DESCRIPTOR_SET, 4, 0xB, 0xA);
  t.remove(0xA);
  EXPECT_EQ(t.size(), 0u);
}

// vkGetDeviceQueue twice gives the same queue under two guest ids.
TEST(ObjectTable, AHandleUnderTwoIdsGoesWithBoth) {
  ObjectTable t;
  t.add(VK_OBJECT_TYPE_DEVICE, 1, 0xD, 0);
  t.add(VK_OBJECT_TYPE_QUEUE, 2, 0x9, 0xD);
  t.add(VK_OBJECT_TYPE_QUEUE, 3, 0x9, 0xD);
  EXPECT_EQ(t.id_of(0x9), 2u);  // the first registration names it
  ASSERT_NE(t.entry_of_handle(0x9), nullptr);
  EXPECT_EQ(t.entry_of_handle(0x9)->owner, 0xDu);
  t.remove(0x9);
  EXPECT_FALSE(t.contains(2));
  EXPECT_FALSE(t.contains(3));
  EXPECT_EQ(t.id_of(0x9), 0u);
  EXPECT_EQ(t.entry_of_handle(0x9), nullptr);
  EXPECT_EQ(t.size(), 1u);
}

TEST(ObjectTable, EntriesListEveryObjectOnce) {
  ObjectTable t;
  for (uint64_t i = 1; i <= 50; ++i) t.add(VK_OBJECT_TYPE_BUFFER, i, 0x100 + i, 0);
  std::vector<ObjectEntry> all = t.entries();
  ASSERT_EQ(all.size(), 50u);
  std::sort(all.begin(), all.end(), [](const ObjectEntry& a, const ObjectEntry& b) { return a.handle < b.handle; });
  for (uint64_t i = 0; i < 50; ++i) EXPECT_EQ(all[i].handle, 0x101 + i);
}

}  // namespace
}  // namespace bypass::host
