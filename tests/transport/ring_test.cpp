// Ring halves in one process over a private buffer: framing, wrap-around, full/empty, and a
// hostile peer that corrupts the shared indices or record headers.
#include "bypass/transport/ring.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>

#include "bypass/transport/layout.h"
#include "test_util.h"

namespace bypass::transport {
namespace {

using testing::pattern;
using Produced = RingProducer::Result;
using Consumed = RingConsumer::Result;

// A control block and data array as they would sit in the shared region.
struct TestRing {
  explicit TestRing(uint64_t capacity)
      : control(std::make_unique<layout::RingControl>()),
        data(std::make_unique<std::byte[]>(capacity)),
        producer(control.get(), data.get(), capacity),
        consumer(control.get(), data.get(), capacity) {}

  Produced write(uint32_t kind, const std::vector<std::byte>& payload) {
    const ByteSpan part(payload.data(), payload.size());
    return producer.try_write(kind, std::span<const ByteSpan>(&part, 1));
  }
  // Reads the next record into `out`; kEmpty / kCorrupt passed through.
  Consumed read(uint32_t* kind, std::vector<std::byte>* out) {
    layout::RecordHeader h;
    const Consumed r = consumer.peek(&h);
    if (r != Consumed::kDone) return r;
    *kind = h.kind;
    out->resize(h.size);
    consumer.read(0, out->data(), h.size);
    consumer.pop();
    return r;
  }

  std::unique_ptr<layout::RingControl> control;
  std::unique_ptr<std::byte[]> data;
  RingProducer producer;
  RingConsumer consumer;
  // Why the last call on either half said kCorrupt.
  std::string error() const { return producer.error_text().empty() ? consumer.error_text() : producer.error_text(); }
};

TEST(RingTest, EmptyRingHasNothing) {
  TestRing ring(256);
  layout::RecordHeader h;
  EXPECT_FALSE(ring.consumer.has_data());
  EXPECT_EQ(ring.consumer.peek(&h), Consumed::kEmpty);
  EXPECT_EQ(ring.consumer.used(), 0u);
  EXPECT_EQ(ring.producer.used(), 0u);
}

TEST(RingTest, EmptyPayloadRoundTrips) {
  TestRing ring(256);
  ASSERT_EQ(ring.write(7, {}), Produced::kDone);
  EXPECT_EQ(ring.producer.used(), 8u);  // header only
  uint32_t kind = 0;
  std::vector<std::byte> out(5);
  ASSERT_EQ(ring.read(&kind, &out), Consumed::kDone);
  EXPECT_EQ(kind, 7u);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(ring.consumer.used(), 0u);
}

TEST(RingTest, FullRingRefusesAndNothingIsLost) {
  TestRing ring(256);
  // Records of 8 + 24 = 32 bytes: exactly 8 fit, the ninth must be refused.
  for (uint32_t i = 0; i < 8; ++i) ASSERT_EQ(ring.write(i, pattern(24, i)), Produced::kDone) << i;
  EXPECT_EQ(ring.producer.used(), 256u);
  EXPECT_EQ(ring.write(8, pattern(24, 8)), Produced::kFull);
  EXPECT_EQ(ring.write(9, {}), Produced::kFull);  // even a bare header
  uint32_t kind;
  std::vector<std::byte> out;
  ASSERT_EQ(ring.read(&kind, &out), Consumed::kDone);
  EXPECT_EQ(kind, 0u);
  EXPECT_EQ(out, pattern(24, 0));
  ASSERT_EQ(ring.write(8, pattern(24, 8)), Produced::kDone);  // room again
  for (uint32_t i = 1; i <= 8; ++i) {
    ASSERT_EQ(ring.read(&kind, &out), Consumed::kDone);
    EXPECT_EQ(kind, i);
    EXPECT_EQ(out, pattern(24, i));
  }
  EXPECT_EQ(ring.read(&kind, &out), Consumed::kEmpty);
}

TEST(RingTest, ExactFitAtTheEndOfTheArray) {
  TestRing ring(256);
  uint32_t kind;
  std::vector<std::byte> out;
  // Advance to offset 200, then a record of exactly 56 bytes ends at the array's last byte.
  for (int i = 0; i < 3; ++i) ASSERT_EQ(ring.write(1, pattern(56, 1)), Produced::kDone);  // 3 x 64
  ASSERT_EQ(ring.write(1, {}), Produced::kDone);                                          // + 8
  for (int i = 0; i < 4; ++i) ASSERT_EQ(ring.read(&kind, &out), Consumed::kDone);
  ASSERT_EQ(ring.write(2, pattern(48, 2)), Produced::kDone);  // 200 .. 256
  ASSERT_EQ(ring.write(3, pattern(16, 3)), Produced::kDone);  // starts at 0 again
  ASSERT_EQ(ring.read(&kind, &out), Consumed::kDone);
  EXPECT_EQ(kind, 2u);
  EXPECT_EQ(out, pattern(48, 2));
  ASSERT_EQ(ring.read(&kind, &out), Consumed::kDone);
  EXPECT_EQ(kind, 3u);
  EXPECT_EQ(out, pattern(16, 3));
}

TEST(RingTest, RecordStraddlingTheEndIsSplitAndJoined) {
  TestRing ring(256);
  uint32_t kind;
  std::vector<std::byte> out;
  // Over a quarter of the ring is not one record (Channel chunks such messages).
  ASSERT_EQ(ring.write(1, pattern(57, 1)), Produced::kCorrupt);
  EXPECT_NE(ring.error().find("record limit 56"), std::string::npos) << ring.error();
  ASSERT_EQ(ring.write(1, pattern(48, 1)), Produced::kDone);
  ASSERT_EQ(ring.write(1, pattern(48, 1)), Produced::kDone);
  ASSERT_EQ(ring.write(1, pattern(48, 1)), Produced::kDone);
  ASSERT_EQ(ring.write(1, pattern(48, 1)), Produced::kDone);  // 224 bytes used
  for (int i = 0; i < 4; ++i) ASSERT_EQ(ring.read(&kind, &out), Consumed::kDone);
  // Offset 224: header at 224..232, payload 232..256 then 0..30.
  const auto payload = pattern(54, 42);
  ASSERT_EQ(ring.write(42, payload), Produced::kDone);
  ASSERT_EQ(ring.read(&kind, &out), Consumed::kDone);
  EXPECT_EQ(kind, 42u);
  EXPECT_EQ(out, payload);
}

TEST(RingTest, WrapsAroundManyTimesWithVaryingSizes) {
  TestRing ring(512);
  uint64_t seed = 1;
  uint64_t written = 0, read = 0;
  uint32_t kind;
  std::vector<std::byte> out;
  // Keep the ring partly full while cycling through every alignment and split position.
  while (read < 20000) {
    while (written - read < 5) {
      const size_t size = testing::splitmix(seed) % 121;  // max record payload is 120
      if (ring.write(static_cast<uint32_t>(written), pattern(size, written)) != Produced::kDone) break;
      ++written;
    }
    ASSERT_EQ(ring.read(&kind, &out), Consumed::kDone);
    ASSERT_EQ(kind, static_cast<uint32_t>(read));
    ASSERT_EQ(out, pattern(out.size(), read));
    ++read;
  }
  EXPECT_GT(ring.control->head.load(), 100u * 512u);  // the indices went round many times
}

TEST(RingTest, GatherWriteConcatenatesParts) {
  TestRing ring(256);
  const auto a = pattern(3, 1), b = pattern(0, 2), c = pattern(13, 3);
  const ByteSpan parts[] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
  ASSERT_EQ(ring.producer.try_write(5, parts), Produced::kDone);
  uint32_t kind;
  std::vector<std::byte> out;
  ASSERT_EQ(ring.read(&kind, &out), Consumed::kDone);
  std::vector<std::byte> expected = a;
  expected.insert(expected.end(), c.begin(), c.end());
  EXPECT_EQ(out, expected);
}

// --- a hostile producer: the consumer must refuse, not read outside the ring ---------------

TEST(RingCorruptionTest, HeadBeyondCapacityIsAnError) {
  TestRing ring(256);
  ring.control->head.store(256 + 8);
  layout::RecordHeader h;
  EXPECT_EQ(ring.consumer.peek(&h), Consumed::kCorrupt);
  EXPECT_NE(ring.error().find("head 264 is invalid"), std::string::npos) << ring.error();
}

TEST(RingCorruptionTest, HeadBehindTailIsAnError) {
  TestRing ring(256);
  ASSERT_EQ(ring.write(1, pattern(16, 1)), Produced::kDone);
  uint32_t kind;
  std::vector<std::byte> out;
  ASSERT_EQ(ring.read(&kind, &out), Consumed::kDone);
  ring.control->head.store(8);  // tail is 24 now
  EXPECT_EQ(ring.read(&kind, &out), Consumed::kCorrupt);
}

TEST(RingCorruptionTest, MisalignedHeadIsAnError) {
  TestRing ring(256);
  ring.control->head.store(12);
  uint32_t kind;
  std::vector<std::byte> out;
  EXPECT_EQ(ring.read(&kind, &out), Consumed::kCorrupt);
}

TEST(RingCorruptionTest, RecordLongerThanPublishedIsAnError) {
  TestRing ring(256);
  ASSERT_EQ(ring.write(1, pattern(16, 1)), Produced::kDone);
  // Rewrite the header to claim more than the 24 published bytes.
  const layout::RecordHeader forged{17, 1};
  std::memcpy(ring.data.get(), &forged, sizeof forged);
  uint32_t kind;
  std::vector<std::byte> out;
  EXPECT_EQ(ring.read(&kind, &out), Consumed::kCorrupt);
  EXPECT_NE(ring.error().find("claims 17 payload bytes"), std::string::npos) << ring.error();
}

TEST(RingCorruptionTest, HugeRecordSizeIsAnError) {
  TestRing ring(256);
  const layout::RecordHeader forged{0xFFFFFFF8u, 1};
  std::memcpy(ring.data.get(), &forged, sizeof forged);
  ring.control->head.store(256);  // a full ring, so only the size check can catch it
  uint32_t kind;
  std::vector<std::byte> out;
  EXPECT_EQ(ring.read(&kind, &out), Consumed::kCorrupt);
}

TEST(RingCorruptionTest, HeadGoingBackwardsIsAnError) {
  TestRing ring(256);
  ASSERT_EQ(ring.write(1, pattern(16, 1)), Produced::kDone);
  ASSERT_EQ(ring.write(2, pattern(16, 2)), Produced::kDone);
  uint32_t kind;
  std::vector<std::byte> out;
  ASSERT_EQ(ring.read(&kind, &out), Consumed::kDone);
  ASSERT_EQ(ring.read(&kind, &out), Consumed::kDone);
  ASSERT_EQ(ring.write(3, pattern(16, 3)), Produced::kDone);
  ASSERT_EQ(ring.read(&kind, &out), Consumed::kDone);  // consumer has now seen head 72
  ring.control->head.store(64);
  EXPECT_EQ(ring.read(&kind, &out), Consumed::kCorrupt);
}

// --- a hostile consumer: the producer must refuse, not overwrite unread data ---------------

TEST(RingCorruptionTest, TailBeyondHeadIsAnError) {
  TestRing ring(256);
  for (int i = 0; i < 8; ++i) ASSERT_EQ(ring.write(1, pattern(24, 1)), Produced::kDone);
  ring.control->tail.store(512);  // claims to have consumed more than was ever written
  EXPECT_EQ(ring.write(1, pattern(24, 1)), Produced::kCorrupt);
  EXPECT_NE(ring.error().find("tail 512 is invalid"), std::string::npos) << ring.error();
}

TEST(RingCorruptionTest, TailGoingBackwardsIsAnError) {
  TestRing ring(256);
  for (int i = 0; i < 8; ++i) ASSERT_EQ(ring.write(1, pattern(24, 1)), Produced::kDone);
  uint32_t kind;
  std::vector<std::byte> out;
  ASSERT_EQ(ring.read(&kind, &out), Consumed::kDone);
  ASSERT_EQ(ring.write(1, pattern(24, 1)), Produced::kDone);  // producer saw tail 32
  ring.control->tail.store(0);
  EXPECT_EQ(ring.write(1, pattern(24, 1)), Produced::kCorrupt);
}

TEST(RingCorruptionTest, MisalignedTailIsAnError) {
  TestRing ring(256);
  for (int i = 0; i < 8; ++i) ASSERT_EQ(ring.write(1, pattern(24, 1)), Produced::kDone);
  ring.control->tail.store(4);
  EXPECT_EQ(ring.write(1, pattern(24, 1)), Produced::kCorrupt);
}

}  // namespace
}  // namespace bypass::transport
