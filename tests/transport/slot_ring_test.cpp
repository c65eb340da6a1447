// The slot ring (fixed-size records, the VM-queue and crossover rings) in one process over a
// private buffer: order, full/empty, wrap-around, the sleep/wake protocol it shares with the
// byte ring, a hostile peer corrupting the shared indices, and the eventfd kick.
#include "bypass/transport/slot_ring.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <thread>

#include "bypass/base/unix_socket.h"
#include "bypass/transport/kick.h"

namespace bypass::transport {
namespace {

struct Rec {
  uint64_t seq;
  uint64_t pad[3];
};

// The ring's memory as it would sit in a shared region (64-byte aligned).
struct TestRing {
  explicit TestRing(uint32_t capacity)
      : memory(static_cast<std::byte*>(std::aligned_alloc(64, slot_ring_bytes<Rec>(capacity)))),
        producer(memory.get(), capacity, /*initialize=*/true),
        consumer(memory.get(), capacity) {}
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> memory;
  SlotRing<Rec> producer, consumer;
  layout::RingControl& control() { return *producer.control(); }
  bool push(uint64_t seq) {
    Rec* slot = producer.producer_slot();
    if (slot == nullptr) return false;
    *slot = Rec{seq, {}};
    producer.publish();
    return true;
  }
};

TEST(SlotRing, SharesTheByteRingsControlBlock) {
  EXPECT_EQ(slot_ring_bytes<Rec>(4), sizeof(layout::RingControl) + 4 * sizeof(Rec));
  EXPECT_EQ(slot_ring_bytes<uint64_t>(1) % layout::kCacheLine, 0u);
}

TEST(SlotRing, RecordsArriveInOrderAcrossTheWrap) {
  TestRing r(4);
  uint64_t next_in = 0, next_out = 0;
  for (int round = 0; round < 10; ++round) {
    while (r.push(next_in)) ++next_in;
    EXPECT_EQ(next_in - next_out, 4u);  // full at exactly the capacity
    EXPECT_EQ(r.consumer.readable(), 4u);
    for (int i = 0; i < 3; ++i) {
      Rec got;
      bool kick = false;
      ASSERT_TRUE(r.consumer.pop(&got, &kick));
      EXPECT_EQ(got.seq, next_out++);
      EXPECT_FALSE(kick);  // the producer never announced a wait
    }
  }
  EXPECT_EQ(r.consumer.shared_fill(), next_in - next_out);
  EXPECT_FALSE(r.producer.corrupt() || r.consumer.corrupt());
}

TEST(SlotRing, AnnouncedSleepsAreWokenOnceAndBumpTheWaitWord) {
  TestRing r(2);
  EXPECT_FALSE(r.consumer.consumer_prepare_wait());  // empty: go to sleep
  const uint32_t before = r.control().data_seq.load();
  Rec* slot = r.producer.producer_slot();
  ASSERT_NE(slot, nullptr);
  *slot = Rec{1, {}};
  EXPECT_TRUE(r.producer.publish());                   // the sleeper must be woken...
  EXPECT_EQ(r.control().data_seq.load(), before + 1);  // ...and a word poller sees it too
  ASSERT_TRUE(r.push(2));                              // full now; no second wake for the same sleep
  EXPECT_EQ(r.control().data_seq.load(), before + 1);

  EXPECT_FALSE(r.producer.producer_prepare_wait());  // full: the producer sleeps for space
  Rec got;
  bool kick = false;
  ASSERT_TRUE(r.consumer.pop(&got, &kick));
  EXPECT_TRUE(kick);
  EXPECT_EQ(r.control().space_seq.load(), 1u);
  kick = false;
  ASSERT_TRUE(r.consumer.pop(&got, &kick));
  EXPECT_FALSE(kick);
}

TEST(SlotRingCorruption, HeadGoingBackwardsIsAnError) {
  TestRing r(8);
  ASSERT_TRUE(r.push(0) && r.push(1));
  EXPECT_EQ(r.consumer.readable(), 2u);
  r.control().head.store(1);  // a hostile producer takes a record back
  EXPECT_EQ(r.consumer.readable(), 0u);
  EXPECT_TRUE(r.consumer.corrupt());
  EXPECT_EQ(r.consumer.consumer_slot(), nullptr);  // and stays so
}

TEST(SlotRingCorruption, HeadBeyondTheCapacityIsAnError) {
  TestRing r(8);
  r.control().head.store(9);
  EXPECT_EQ(r.consumer.consumer_slot(), nullptr);
  EXPECT_TRUE(r.consumer.corrupt());
}

TEST(SlotRingCorruption, TailPastTheHeadIsAnError) {
  TestRing r(2);
  ASSERT_TRUE(r.push(0) && r.push(1));  // full: the next push reads the tail
  r.control().tail.store(5);            // a hostile consumer claims more than was published
  EXPECT_FALSE(r.push(2));
  EXPECT_TRUE(r.producer.corrupt());
  EXPECT_EQ(r.producer.producer_free(), 0u);
}

TEST(SlotRingCorruption, AttachingToAnOverfullRingIsAnError) {
  TestRing r(4);
  r.control().head.store(100);
  SlotRing<Rec> late(r.memory.get(), 4);
  EXPECT_TRUE(late.corrupt());
  EXPECT_EQ(late.consumer_slot(), nullptr);
}

TEST(Kick, WakesAWaiterAndReportsAHungUpPeer) {
  auto kick = Kick::create();
  ASSERT_TRUE(kick) << kick.message();
  EXPECT_EQ(wait_kick_or_hangup(*kick, -1, 0), KickWait::kTimedOut);
  std::thread waker([&] { kick->signal(); });
  EXPECT_EQ(wait_kick_or_hangup(*kick, -1, 5000), KickWait::kKicked);
  waker.join();
  EXPECT_EQ(wait_kick_or_hangup(*kick, -1, 0), KickWait::kTimedOut);  // drained

  auto pair = base::socket_pair(SOCK_SEQPACKET);
  ASSERT_TRUE(pair) << pair.message();
  EXPECT_EQ(wait_kick_or_hangup(*kick, pair->first.get(), 0), KickWait::kTimedOut);
  pair->second.reset();  // the peer dies
  EXPECT_EQ(wait_kick_or_hangup(*kick, pair->first.get(), 5000), KickWait::kPeerGone);
}

}  // namespace
}  // namespace bypass::transport
