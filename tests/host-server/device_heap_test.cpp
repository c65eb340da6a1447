// DeviceHeap: the first-fit sub-allocator of a VM guest's host-visible memory.
#include "bypass/host/device_heap.h"

#include <gtest/gtest.h>

#include <vector>

namespace bypass::host {
namespace {

TEST(DeviceHeapTest, AllocationsAreAlignedDisjointAndInside) {
  std::vector<std::byte> memory(1 << 20);
  DeviceHeap heap(memory);
  std::vector<uint64_t> at;
  for (int i = 0; i < 10; ++i) {
    auto o = heap.allocate(10000, 4096);
    ASSERT_TRUE(o);
    EXPECT_EQ(*o % 4096, 0u);
    EXPECT_LE(*o + 10000, memory.size());
    for (uint64_t other : at) EXPECT_TRUE(*o >= other + 10000 || *o + 10000 <= other);
    at.push_back(*o);
  }
}

TEST(DeviceHeapTest, AFullHeapSaysNoAndFreedBlocksMergeBack) {
  std::vector<std::byte> memory(64 << 10);
  DeviceHeap heap(memory);
  auto a = heap.allocate(16 << 10, 4096), b = heap.allocate(16 << 10, 4096), c = heap.allocate(32 << 10, 4096);
  ASSERT_TRUE(a && b && c);
  EXPECT_FALSE(heap.allocate(4096, 4096));
  heap.release(*b);
  EXPECT_FALSE(heap.allocate(32 << 10, 4096));  // 16 KiB free, no more
  heap.release(*a);
  heap.release(*c);
  auto all = heap.allocate(64 << 10, 4096);  // the three freed blocks merged into one range
  ASSERT_TRUE(all);
  EXPECT_EQ(*all, 0u);
}

TEST(DeviceHeapTest, ReleasingAnUnknownOffsetChangesNothing) {
  std::vector<std::byte> memory(16 << 10);
  DeviceHeap heap(memory);
  auto a = heap.allocate(16 << 10, 4096);
  ASSERT_TRUE(a);
  heap.release(*a + 4096);
  EXPECT_FALSE(heap.allocate(4096, 4096));
  EXPECT_FALSE(heap.allocate(0, 4096));
}

}  // namespace
}  // namespace bypass::host
