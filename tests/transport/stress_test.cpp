// Multi-process stress: a guest and a host process stream random-size messages at each other
// on both rings at once; every message is checked (kind, size, contents) and the running
// checksums of both ends are compared at the end.
#include <gtest/gtest.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <thread>

#include "bypass/transport/session.h"
#include "fork_session.h"
#include "test_util.h"

namespace bypass::transport {
namespace {

using namespace std::chrono_literals;
using testing::Role;

constexpr uint32_t kSummaryKind = 0x7FFFFFFF;

struct StreamSpec {
  uint64_t bytes;      // at least this much payload per direction
  uint32_t max_size;   // message sizes are log-uniform in 1 .. max_size
  size_t ring_bytes;   // per ring
  uint32_t max_spins;  // Channel::set_spin
};

struct Summary {
  uint64_t messages, bytes, checksum;
};

// Sizes and contents derive from (direction seed, message index), so the receiver can check
// every message without any side channel. Contents are slices of one random pool.
class Stream {
 public:
  explicit Stream(const StreamSpec& spec, uint64_t seed) : spec_(spec), rng_(seed) {
    pool_ = testing::pattern(2 * size_t{spec.max_size} + 64, seed);
  }
  // Next message: its size and a view of its payload.
  std::span<const std::byte> next() {
    const uint64_t r = testing::splitmix(rng_);
    // Log-uniform size: pick a bit width, then a value with that many bits.
    const int max_bits = 64 - __builtin_clzll(spec_.max_size);
    const int bits = static_cast<int>(r % static_cast<uint64_t>(max_bits)) + 1;
    uint64_t size = (uint64_t{1} << (bits - 1)) | ((r >> 8) & ((uint64_t{1} << (bits - 1)) - 1));
    size = std::min<uint64_t>(size, spec_.max_size);
    const uint64_t offset = (r >> 40) % (pool_.size() - size);
    return {pool_.data() + offset, size};
  }

 private:
  StreamSpec spec_;
  uint64_t rng_;
  std::vector<std::byte> pool_;
};

// Sends the stream, then a summary. Returns an error text, empty on success.
std::string send_stream(Channel& ch, const StreamSpec& spec, uint64_t seed) {
  Stream stream(spec, seed);
  Summary s{0, 0, 0};
  while (s.bytes < spec.bytes) {
    const auto payload = stream.next();
    const Status st = ch.send(static_cast<uint32_t>(s.messages), payload, deadline_after(30s));
    if (st != Status::kOk) return std::string("send failed: ") + to_string(st) + " " + ch.error_text();
    s.checksum = testing::checksum(payload, s.checksum);
    s.bytes += payload.size();
    ++s.messages;
  }
  const Status st = ch.send(kSummaryKind, std::as_bytes(std::span(&s, 1)), deadline_after(30s));
  return st == Status::kOk ? "" : std::string("summary send failed: ") + to_string(st);
}

// Receives and checks the peer's stream. Returns an error text, empty on success.
std::string receive_stream(Channel& ch, const StreamSpec& spec, uint64_t seed) {
  Stream expected(spec, seed);
  Summary mine{0, 0, 0};
  Message m;
  for (;;) {
    const Status st = ch.recv(m, deadline_after(30s));
    if (st != Status::kOk) return std::string("recv failed: ") + to_string(st) + " " + ch.error_text();
    if (m.kind == kSummaryKind) break;
    const auto want = expected.next();
    if (m.kind != static_cast<uint32_t>(mine.messages) || m.payload.size() != want.size() ||
        std::memcmp(m.payload.data(), want.data(), want.size()) != 0) {
      char text[200];
      std::snprintf(text, sizeof text, "message %" PRIu64 ": kind %u size %zu, expected size %zu (%s)", mine.messages,
                    m.kind, m.payload.size(), want.size(),
                    m.payload.size() == want.size() ? "contents differ" : "size differs");
      return text;
    }
    mine.checksum = testing::checksum(m.payload, mine.checksum);
    mine.bytes += m.payload.size();
    ++mine.messages;
  }
  Summary theirs;
  if (m.payload.size() != sizeof theirs) return "malformed summary";
  std::memcpy(&theirs, m.payload.data(), sizeof theirs);
  if (theirs.messages != mine.messages || theirs.bytes != mine.bytes || theirs.checksum != mine.checksum) {
    char text[300];
    std::snprintf(text, sizeof text,
                  "sender: %" PRIu64 " msgs %" PRIu64 " bytes checksum %016" PRIx64 "; receiver: %" PRIu64
                  " msgs %" PRIu64 " bytes checksum %016" PRIx64,
                  theirs.messages, theirs.bytes, theirs.checksum, mine.messages, mine.bytes, mine.checksum);
    return text;
  }
  return "";
}

// Both directions at once in this process: a sender thread and a receiving caller.
std::string run_both_ways(Channel& ch, const StreamSpec& spec, uint64_t send_seed, uint64_t recv_seed) {
  ch.set_spin(spec.max_spins);
  std::string send_error;
  std::thread sender([&] { send_error = send_stream(ch, spec, send_seed); });
  std::string recv_error = receive_stream(ch, spec, recv_seed);
  sender.join();
  return !send_error.empty() ? send_error : recv_error;
}

void run_stress(const StreamSpec& spec) {
  constexpr uint64_t kGuestSeed = 0x6e657473, kHostSeed = 0x74736f68;
  const auto start = Clock::now();
  auto session = testing::fork_session(Role::kGuest, SessionOptions{spec.ring_bytes}, [&](Channel& ch) {
    const std::string error = run_both_ways(ch, spec, kGuestSeed, kHostSeed);
    if (!error.empty()) std::fprintf(stderr, "guest: %s\n", error.c_str());
    return error.empty() ? 0 : 1;
  });
  ASSERT_TRUE(session.channel);
  Channel& host = *session.channel;
  const std::string error = run_both_ways(host, spec, kHostSeed, kGuestSeed);
  EXPECT_EQ(error, "") << "host side";
  EXPECT_EQ(session.child->wait(), 0) << "guest side failed (see its stderr)";
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const Channel::Stats st = host.stats();
  std::printf("host: sent %" PRIu64 " msgs / %.1f MiB, received %" PRIu64
              " msgs / %.1f MiB in %.2f s "
              "(%.0f MiB/s each way), %" PRIu64 " sleeps, %" PRIu64 " wakes\n",
              st.msgs_sent, st.bytes_sent / 1048576.0, st.msgs_received, st.bytes_received / 1048576.0, seconds,
              st.bytes_received / 1048576.0 / seconds, st.sleeps, st.wakes_issued);
  EXPECT_GE(st.bytes_sent, spec.bytes);
  EXPECT_GE(st.bytes_received, spec.bytes);
}

// The figure: 1 GiB each way, 1 B .. 1 MiB messages. A 1 MiB ring chunks every message
// over 256 KiB.
TEST(StressTest, OneGiBEachWayRandomSizesUpTo1MiB) {
  run_stress({uint64_t{1} << 30, 1 << 20, 1 << 20, Channel::kDefaultMaxSpins});
}

// The same through the default 8 MiB rings (no chunking below 2 MiB).
TEST(StressTest, OneGiBEachWayDefaultRing) {
  run_stress({uint64_t{1} << 30, 1 << 20, 8 << 20, Channel::kDefaultMaxSpins});
}

// Many small messages through a small ring: constant wrap-around, full and empty ring.
TEST(StressTest, SmallMessagesThroughASmallRing) { run_stress({64 << 20, 256, 4096, Channel::kDefaultMaxSpins}); }

// The same with spinning off: every wait is a futex sleep and every wake a syscall.
TEST(StressTest, FutexOnly) { run_stress({64 << 20, 4096, 16384, 0}); }

// Soak (ctest -L soak): 16 GiB each way, default ring size.
TEST(StressTest, DISABLED_Soak16GiBEachWay) {
  run_stress({uint64_t{16} << 30, 1 << 20, 8 << 20, Channel::kDefaultMaxSpins});
}

}  // namespace
}  // namespace bypass::transport
