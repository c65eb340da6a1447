// Channel over a real session (memfd region + socketpair) inside one process: blocking,
// chunking, fds, goodbye, and a hostile peer scribbling on the shared region.
#include "bypass/transport/channel.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "bypass/transport/layout.h"
#include "bypass/transport/session.h"
#include "test_util.h"

namespace bypass::transport {
namespace {

using namespace std::chrono_literals;
using testing::bytes_of;
using testing::pattern;

ChannelPair make_pair(size_t ring_bytes = 4096, size_t max_message = 256 << 20) {
  auto pair = make_channel_pair(SessionOptions{ring_bytes, max_message});
  EXPECT_TRUE(pair) << pair.message();
  return std::move(pair).value();
}

// The shared control block and data of one ring, for tests that play a hostile peer.
struct RawRing {
  layout::RingControl* control;
  std::byte* data;
  uint64_t capacity;
};
RawRing raw_ring(const Channel& channel, uint32_t which) {
  const std::span<std::byte> region = channel.region_for_testing();
  layout::RegionHeader header;
  std::memcpy(&header, region.data(), sizeof header);
  const layout::RingDescriptor& d = header.rings[which];
  return {reinterpret_cast<layout::RingControl*>(region.data() + d.control_offset), region.data() + d.data_offset,
          d.capacity};
}

// Writes records into the guest's command ring behind the guest channel's back (it must not
// send anything itself afterwards).
struct Forger {
  explicit Forger(const Channel& guest) {
    const RawRing r = raw_ring(guest, layout::kCommandRing);
    producer = RingProducer(r.control, r.data, r.capacity);
  }
  void write(uint32_t kind, std::span<const std::byte> payload) {
    const ByteSpan part = payload;
    ASSERT_EQ(producer.try_write(kind, std::span<const ByteSpan>(&part, 1)), RingProducer::Result::kDone)
        << producer.error_text();
  }
  RingProducer producer;
};

TEST(ChannelTest, EmptyRingTimesOutWithoutBlocking) {
  auto [guest, host] = make_pair();
  Message m;
  EXPECT_FALSE(host.poll_ready());
  const auto start = Clock::now();
  EXPECT_EQ(host.recv(m, Clock::now()), Status::kTimeout);
  EXPECT_EQ(host.recv(m, deadline_after(30ms)), Status::kTimeout);
  const auto took = Clock::now() - start;
  EXPECT_GE(took, 30ms);
  EXPECT_LT(took, 1s);
}

TEST(ChannelTest, MessagesFlowBothWaysInOrder) {
  auto [guest, host] = make_pair();
  EXPECT_EQ(guest.send(1, bytes_of(pattern(100, 1))), Status::kOk);
  EXPECT_EQ(guest.send(2, {}), Status::kOk);
  EXPECT_TRUE(host.poll_ready());
  Message m;
  ASSERT_EQ(host.recv(m), Status::kOk);
  EXPECT_EQ(m.kind, 1u);
  EXPECT_EQ(m.payload, pattern(100, 1));
  ASSERT_EQ(host.recv(m), Status::kOk);
  EXPECT_EQ(m.kind, 2u);
  EXPECT_TRUE(m.payload.empty());
  EXPECT_EQ(host.send(3, bytes_of(pattern(7, 3))), Status::kOk);
  ASSERT_EQ(guest.recv(m), Status::kOk);
  EXPECT_EQ(m.kind, 3u);
  EXPECT_EQ(m.payload, pattern(7, 3));
  EXPECT_EQ(guest.peer_hello().peer_name, "pair-host");
  EXPECT_EQ(host.peer_hello().peer_name, "pair-guest");
  EXPECT_EQ(host.peer_pid(), getpid());

  const Channel::Stats g = guest.stats(), h = host.stats();
  EXPECT_EQ(g.msgs_sent, 2u);
  EXPECT_EQ(g.bytes_sent, 100u);
  EXPECT_EQ(g.msgs_received, 1u);
  EXPECT_EQ(h.msgs_received, 2u);
  EXPECT_EQ(h.bytes_received, 100u);
}

TEST(ChannelTest, FullRingBlocksUntilDeadlineAndLosesNothing) {
  auto [guest, host] = make_pair(256);
  // 8 records of 32 bytes fill the 256-byte ring exactly.
  uint32_t sent = 0;
  while (guest.send(sent, bytes_of(pattern(24, sent)), deadline_after(20ms)) == Status::kOk) ++sent;
  EXPECT_EQ(sent, 8u);
  EXPECT_EQ(guest.tx_used(), 256u);
  EXPECT_EQ(guest.tx_capacity(), 256u);
  Message m;
  for (uint32_t i = 0; i < sent; ++i) {
    ASSERT_EQ(host.recv(m, Clock::now()), Status::kOk);
    EXPECT_EQ(m.kind, i);
    EXPECT_EQ(m.payload, pattern(24, i));
  }
  EXPECT_EQ(host.recv(m, Clock::now()), Status::kTimeout);
}

TEST(ChannelTest, BlockedProducerResumesWhenTheConsumerReads) {
  auto [guest, host] = make_pair(256);
  guest.set_spin(0);  // force the futex path
  host.set_spin(0);
  constexpr uint32_t kCount = 2000;
  std::thread producer([&] {
    for (uint32_t i = 0; i < kCount; ++i) ASSERT_EQ(guest.send(i, bytes_of(pattern(i % 57, i))), Status::kOk);
  });
  Message m;
  for (uint32_t i = 0; i < kCount; ++i) {
    if (i % 100 == 0) std::this_thread::sleep_for(1ms);  // let the producer hit a full ring
    ASSERT_EQ(host.recv(m), Status::kOk);
    ASSERT_EQ(m.kind, i);
    ASSERT_EQ(m.payload, pattern(i % 57, i));
  }
  producer.join();
  EXPECT_GT(guest.stats().sleeps, 0u);       // the producer did sleep on a full ring
  EXPECT_GT(host.stats().wakes_issued, 0u);  // and the consumer woke it
}

// A side woken from its sleep finds the data without announcing another sleep: each
// announcement is a membarrier (an IPI to the peer's CPU), once paid after every wake-up.
TEST(ChannelTest, AWokenReceiverDoesNotAnnounceAgain) {
  auto [guest, host] = make_pair(4096);
  guest.set_spin(0);
  host.set_spin(0);
  uint32_t rounds_asleep = 0;
  for (uint32_t round = 0; round < 20; ++round) {
    std::thread sender([&guest, round] {
      std::this_thread::sleep_for(5ms);
      ASSERT_EQ(guest.send(round, bytes_of(pattern(16, round))), Status::kOk);
    });
    const Channel::Stats before = host.stats();
    Message m;
    ASSERT_EQ(host.recv(m), Status::kOk);
    sender.join();
    EXPECT_EQ(m.kind, round);
    const Channel::Stats after = host.stats();
    const uint64_t slept = after.sleeps - before.sleeps, announced = after.announces - before.announces;
    if (slept == 0) {
      EXPECT_LE(announced, 1u) << "round " << round;  // the data came while announcing
    } else {
      ++rounds_asleep;
      EXPECT_EQ(announced, slept) << "round " << round;  // one announcement per sleep, none after
    }
  }
  EXPECT_GT(rounds_asleep, 0u);
}

TEST(ChannelTest, OversizedMessagesAreChunkedAndReassembled) {
  auto [guest, host] = make_pair(4096);
  const size_t sizes[] = {1016, 1017, 4096, 3 * 4096 + 5, 1 << 20, 5};  // 1016 = one record
  std::thread producer([&] {
    for (size_t i = 0; i < std::size(sizes); ++i) {
      ASSERT_EQ(guest.send(static_cast<uint32_t>(i), bytes_of(pattern(sizes[i], i))), Status::kOk);
    }
  });
  Message m;
  for (size_t i = 0; i < std::size(sizes); ++i) {
    ASSERT_EQ(host.recv(m), Status::kOk);
    EXPECT_EQ(m.kind, i);
    EXPECT_EQ(m.payload.size(), sizes[i]);
    EXPECT_EQ(m.payload, pattern(sizes[i], i));
  }
  producer.join();
  EXPECT_EQ(host.stats().msgs_received, std::size(sizes));
}

TEST(ChannelTest, GatherSendAcrossChunkBoundaries) {
  auto [guest, host] = make_pair(256);
  const auto a = pattern(100, 1), b = pattern(0, 2), c = pattern(333, 3), d = pattern(1, 4);
  const ByteSpan parts[] = {bytes_of(a), bytes_of(b), bytes_of(c), bytes_of(d)};
  std::thread producer([&] { ASSERT_EQ(guest.sendv(9, parts), Status::kOk); });
  Message m;
  ASSERT_EQ(host.recv(m), Status::kOk);
  producer.join();
  std::vector<std::byte> expected = a;
  expected.insert(expected.end(), c.begin(), c.end());
  expected.insert(expected.end(), d.begin(), d.end());
  EXPECT_EQ(m.kind, 9u);
  EXPECT_EQ(m.payload, expected);
}

TEST(ChannelTest, TimeoutInsideAChunkedMessageCancelsIt) {
  auto [guest, host] = make_pair(256);
  // Nobody reads: the 1000-byte message gets a few chunks out, then times out.
  EXPECT_EQ(guest.send(1, bytes_of(pattern(1000, 1)), deadline_after(20ms)), Status::kTimeout);
  std::thread reader([&] {
    Message m;
    ASSERT_EQ(host.recv(m), Status::kOk);  // the partial message is dropped, not delivered
    EXPECT_EQ(m.kind, 2u);
    EXPECT_EQ(m.payload, pattern(10, 2));
  });
  EXPECT_EQ(guest.send(2, bytes_of(pattern(10, 2))), Status::kOk);
  reader.join();
}

TEST(ChannelTest, MessageLimitIsEnforcedOnBothSides) {
  auto [guest, host] = make_pair(256, 1000);
  EXPECT_EQ(guest.max_message(), 1000u);
  EXPECT_EQ(guest.send(1, bytes_of(pattern(1001, 1))), Status::kTooLarge);
  std::thread producer([&] { EXPECT_EQ(guest.send(1, bytes_of(pattern(1000, 1))), Status::kOk); });
  Message m;
  ASSERT_EQ(host.recv(m), Status::kOk);
  EXPECT_EQ(m.payload.size(), 1000u);
  producer.join();
}

TEST(ChannelTest, ReservedKindsAreRefusedWithoutBreakingTheSession) {
  auto [guest, host] = make_pair();
  EXPECT_EQ(guest.send(layout::kReservedKindBase, {}), Status::kProtocolError);
  EXPECT_EQ(guest.send(1, {}), Status::kOk);
  Message m;
  EXPECT_EQ(host.recv(m), Status::kOk);
}

TEST(ChannelTest, GoodbyeEndsTheStreamAfterPendingMessages) {
  auto [guest, host] = make_pair();
  ASSERT_EQ(guest.send(1, bytes_of(pattern(10, 1))), Status::kOk);
  guest.close();
  EXPECT_EQ(guest.send(2, {}), Status::kClosed);
  Message m;
  ASSERT_EQ(host.recv(m), Status::kOk);
  EXPECT_EQ(m.kind, 1u);
  EXPECT_EQ(host.recv(m), Status::kClosed);
  EXPECT_EQ(host.recv(m), Status::kClosed);
  EXPECT_FALSE(host.peer_alive());
}

TEST(ChannelTest, MovedFromChannelIsClosed) {
  auto [guest, host] = make_pair();
  Channel moved = std::move(guest);
  Message m;
  EXPECT_EQ(guest.send(1, {}), Status::kClosed);  // NOLINT(bugprone-use-after-move): on purpose
  EXPECT_EQ(guest.recv(m), Status::kClosed);
  EXPECT_EQ(guest.socket_fd(), -1);
  EXPECT_EQ(moved.send(1, {}), Status::kOk);
  EXPECT_EQ(host.recv(m), Status::kOk);
}

TEST(ChannelTest, FileDescriptorsTravelWithTags) {
  auto [guest, host] = make_pair();
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  ASSERT_EQ(guest.send_fds(77, std::span<const int>(p, 2)), Status::kOk);
  close(p[0]);
  close(p[1]);
  uint64_t tag = 0;
  std::vector<int> fds;
  ASSERT_EQ(host.recv_fds(tag, fds, deadline_after(1s)), Status::kOk);
  EXPECT_EQ(tag, 77u);
  ASSERT_EQ(fds.size(), 2u);
  ASSERT_EQ(write(fds[1], "hi", 2), 2);
  char buf[2];
  ASSERT_EQ(read(fds[0], buf, 2), 2);
  EXPECT_EQ(std::memcmp(buf, "hi", 2), 0);
  for (int fd : fds) close(fd);

  std::vector<int> many(Channel::kMaxFdsPerMessage + 1, 0);
  EXPECT_EQ(guest.send_fds(1, many), Status::kTooLarge);
  EXPECT_EQ(host.recv_fds(tag, fds, deadline_after(10ms)), Status::kTimeout);
}

TEST(ChannelTest, PingPongOnFutexOnly) {
  auto [guest, host] = make_pair();
  guest.set_spin(0);
  host.set_spin(0);
  std::thread echo([&] {
    Message m;
    while (host.recv(m) == Status::kOk) ASSERT_EQ(host.send(m.kind, bytes_of(m.payload)), Status::kOk);
  });
  Message m;
  for (uint32_t i = 0; i < 500; ++i) {
    ASSERT_EQ(guest.send(i, bytes_of(pattern(64, i))), Status::kOk);
    ASSERT_EQ(guest.recv(m), Status::kOk);
    ASSERT_EQ(m.kind, i);
  }
  guest.close();  // the echo thread's recv returns kClosed
  echo.join();
  EXPECT_GT(host.stats().sleeps, 0u);
}

TEST(ChannelTest, RingSizeIsRoundedUpToAPowerOfTwoAndCapped) {
  auto [guest, host] = make_pair(5000);
  EXPECT_EQ(guest.tx_capacity(), 8192u);
  EXPECT_EQ(host.tx_capacity(), 8192u);
  auto refused = make_channel_pair(SessionOptions{size_t{2} << 30});
  ASSERT_FALSE(refused);
  const std::string error = refused.error().message;
  EXPECT_NE(error.find("ring_bytes 2147483648 exceeds the limit"), std::string::npos) << error;
}

// --- hostile peer ---------------------------------------------------------------------------

TEST(ChannelCorruptionTest, HeadOutsideTheRingIsAStickyProtocolError) {
  auto [guest, host] = make_pair(4096);
  const RawRing cmd = raw_ring(guest, layout::kCommandRing);
  cmd.control->head.store(cmd.capacity + 8);
  Message m;
  EXPECT_EQ(host.recv(m, deadline_after(1s)), Status::kProtocolError);
  EXPECT_NE(host.error_text().find("receive ring: ring head 4104 is invalid"), std::string::npos) << host.error_text();
  EXPECT_EQ(host.recv(m), Status::kProtocolError);  // sticky, and does not block
  EXPECT_EQ(host.send(1, {}), Status::kProtocolError);
}

TEST(ChannelCorruptionTest, RecordSizeBeyondWhatWasPublishedIsAnError) {
  auto [guest, host] = make_pair(4096);
  ASSERT_EQ(guest.send(1, bytes_of(pattern(16, 1))), Status::kOk);
  const RawRing cmd = raw_ring(guest, layout::kCommandRing);
  const layout::RecordHeader forged{0x7FFFFFF0u, 1};
  std::memcpy(cmd.data, &forged, sizeof forged);
  Message m;
  EXPECT_EQ(host.recv(m), Status::kProtocolError);
  EXPECT_NE(host.error_text().find("claims 2147483632 payload bytes"), std::string::npos) << host.error_text();
}

TEST(ChannelCorruptionTest, TailOutsideTheRingIsAnErrorForTheProducer) {
  auto [guest, host] = make_pair(256);
  const RawRing reply = raw_ring(guest, layout::kReplyRing);
  reply.control->tail.store(uint64_t{1} << 40);
  Status st = Status::kOk;
  for (int i = 0; i < 100 && st == Status::kOk; ++i) st = host.send(1, bytes_of(pattern(24, 1)), deadline_after(1s));
  EXPECT_EQ(st, Status::kProtocolError);
  EXPECT_NE(host.error_text().find("transmit ring: ring tail 1099511627776 is invalid"), std::string::npos)
      << host.error_text();
}

TEST(ChannelCorruptionTest, ChunkedMessageOverTheLimitIsRefusedBeforeAllocating) {
  auto [guest, host] = make_pair(4096, 1 << 20);
  Forger forger(guest);
  const layout::ChunkStart start{1, 0, uint64_t{1} << 40};
  forger.write(layout::kKindChunkStart, std::as_bytes(std::span(&start, 1)));
  Message m;
  EXPECT_EQ(host.recv(m), Status::kProtocolError);
  EXPECT_NE(host.error_text().find("1099511627776 bytes refused (limit 1048576 bytes)"), std::string::npos)
      << host.error_text();
}

// VmRSS of this process in KiB.
long resident_kib() {
  FILE* f = std::fopen("/proc/self/status", "r");
  long kib = -1;
  char line[256];
  while (f && std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
  if (f) std::fclose(f);
  return kib;
}

TEST(ChannelCorruptionTest, ChunkStartAnnouncingAHugeMessageCostsOnlyWhatArrives) {
  // 24 bytes that claim 256 MiB (within the limit) must not make the receiver allocate and
  // zero 256 MiB: memory grows with the chunks that really come.
  auto [guest, host] = make_pair(4096, 256 << 20);
  Forger forger(guest);
  const long before = resident_kib();
  struct {
    layout::ChunkStart start{1, 0, uint64_t{256} << 20};
    uint64_t data = 0x1234;
  } first;
  forger.write(layout::kKindChunkStart, std::as_bytes(std::span(&first, 1)));
  Message m;
  EXPECT_EQ(host.recv(m, deadline_after(50ms)), Status::kTimeout);
  const long grown = resident_kib() - before;
  EXPECT_LT(grown, 8 * 1024) << "resident memory grew by " << grown << " KiB for 8 bytes of a chunked message";
}

TEST(ChannelCorruptionTest, ChunkOverflowingItsMessageIsAnError) {
  auto [guest, host] = make_pair(4096);
  Forger forger(guest);
  const layout::ChunkStart start{1, 0, 20};
  forger.write(layout::kKindChunkStart, std::as_bytes(std::span(&start, 1)));
  forger.write(layout::kKindChunkMore, bytes_of(pattern(21, 1)));
  Message m;
  EXPECT_EQ(host.recv(m), Status::kProtocolError);
  EXPECT_NE(host.error_text().find("unexpected chunk of 21 bytes"), std::string::npos) << host.error_text();
}

TEST(ChannelCorruptionTest, ChunkWithoutStartIsAnError) {
  auto [guest, host] = make_pair(4096);
  Forger forger(guest);
  forger.write(layout::kKindChunkMore, bytes_of(pattern(8, 1)));
  Message m;
  EXPECT_EQ(host.recv(m), Status::kProtocolError);
}

TEST(ChannelCorruptionTest, MessageInsideAChunkedMessageIsAnError) {
  auto [guest, host] = make_pair(4096);
  Forger forger(guest);
  const layout::ChunkStart start{1, 0, 20};
  forger.write(layout::kKindChunkStart, std::as_bytes(std::span(&start, 1)));
  forger.write(5, bytes_of(pattern(8, 1)));
  Message m;
  EXPECT_EQ(host.recv(m), Status::kProtocolError);
}

TEST(ChannelCorruptionTest, UnknownReservedKindIsAnError) {
  auto [guest, host] = make_pair(4096);
  Forger forger(guest);
  forger.write(0xFFFFFFFFu, {});
  Message m;
  EXPECT_EQ(host.recv(m), Status::kProtocolError);
  EXPECT_NE(host.error_text().find("reserved kind 0xffffffff"), std::string::npos) << host.error_text();
}

}  // namespace
}  // namespace bypass::transport
