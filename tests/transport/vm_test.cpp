// The VM transport (vm.h) with both ends on this machine: bypassd's side maps the device file,
// the guest's side maps the same file through "ivshmem:/path", as a guest maps the BAR. The
// same ring code runs as on a socket; what differs is the hand-shake in a slot, wake-ups
// (polled, or a doorbell: a guest on this kernel connects to bypassd's socket for its slot as
// QEMU's chardev does) and heartbeat peer death.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "bypass/base/unix_socket.h"
#include "bypass/transport/doorbell.h"
#include "bypass/transport/vm.h"
#include "test_util.h"

namespace bypass::transport {
namespace {

using namespace std::chrono_literals;

class VmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/bypass-vm-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = dir_ + "/device";
    VmDeviceOptions options;
    options.size = 16 << 20;
    options.slots = 2;
    options.ring_bytes = 64 << 10;
    options.doorbells = doorbells_;
    auto device = VmDevice::create(path_, options);
    ASSERT_TRUE(device) << device.message();
    device_.emplace(std::move(*device));
    // bypassd's main loop: the heartbeat, and an accept for every requested slot; it looks every
    // 1 ms, or (watch_loop_) as bypassd does, every 500 ms here unless an idle slot's doorbell
    // wakes it.
    server_ = std::thread([this] {
      const std::vector<bool> busy(device_->slot_count(), false);
      while (!stop_) {
        device_->heartbeat();
        if (watch_loop_) device_->serve_doorbells(busy);
        for (uint32_t i = 0; i < device_->slot_count(); ++i) {
          if (!device_->slot_requested(i)) continue;
          base::UniqueFd bell = hand_doorbells_ ? device_->doorbell(i) : base::UniqueFd();
          auto ch = device_->accept(i, Hello{1, 2, "host"}, std::move(bell));
          std::lock_guard lock(mu_);
          if (ch)
            accepted_.push_back(std::move(*ch));
          else
            refusals_.push_back(ch.error().message);
        }
        if (watch_loop_) {
          std::vector<pollfd> fds;
          device_->watch_doorbells(&fds, busy);
          ::poll(fds.data(), fds.size(), 500);
        } else {
          std::this_thread::sleep_for(1ms);
        }
      }
    });
  }
  void TearDown() override {
    stop_ = true;
    if (server_.joinable()) server_.join();
    accepted_.clear();
    device_.reset();
    std::filesystem::remove_all(dir_);
  }
  // The host end of the n-th accepted session, waiting for it to appear.
  Channel& host(size_t n) {
    for (int i = 0; i < 2000; ++i) {
      {
        std::lock_guard lock(mu_);
        if (accepted_.size() > n) return accepted_[n];
      }
      std::this_thread::sleep_for(1ms);
    }
    ADD_FAILURE() << "no session accepted";
    std::abort();
  }
  Result<Channel> connect(Hello hello = Hello{1, 2, "guest"}) {
    return connect_vm("ivshmem:" + path_, hello, deadline_after(5s));
  }
  // A guest process that connects, sends one message of 100 bytes and is SIGKILLed: no goodbye.
  pid_t fork_guest_that_dies() {
    const pid_t child = fork();
    if (child == 0) {
      auto guest = connect();
      if (guest) (void)guest->send(5, testing::pattern(100, 1));
      ::kill(::getpid(), SIGKILL);
      _exit(1);
    }
    return child;
  }
  // `rounds` messages of growing sizes from the guest and back, each compared.
  static void ping_pong(Channel& guest, Channel& h, int rounds) {
    Message m;
    for (int i = 0; i < rounds; ++i) {
      const auto payload = testing::pattern(static_cast<size_t>(i * 37 + 1), static_cast<uint64_t>(i));
      ASSERT_EQ(guest.send(7, payload), Status::kOk);
      ASSERT_EQ(h.recv(m, deadline_after(5s)), Status::kOk);
      ASSERT_EQ(m.kind, 7u);
      ASSERT_EQ(m.payload, payload);
      ASSERT_EQ(h.send(8, payload), Status::kOk);
      ASSERT_EQ(guest.recv(m, deadline_after(5s)), Status::kOk);
      ASSERT_EQ(m.payload, payload);
    }
  }
  // A session in which one side lacks its doorbell: both poll, and messages cross both ways.
  void check_polling_session() {
    auto guest = connect();
    ASSERT_TRUE(guest) << guest.message();
    Channel& h = host(0);
    EXPECT_STREQ(guest->wakeups(), "polling");
    EXPECT_STREQ(h.wakeups(), "polling");
    ping_pong(*guest, h, 3);
  }

  bool doorbells_ = false;      // the device listens for doorbells
  bool hand_doorbells_ = true;  // the "main process" hands them to accept()
  bool watch_loop_ = false;     // it polls the doorbells instead of looking every 1 ms
  std::string dir_, path_;
  std::optional<VmDevice> device_;
  std::thread server_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::deque<Channel> accepted_;
  std::vector<std::string> refusals_;
};

TEST_F(VmTest, MessagesCrossInBothDirections) {
  auto guest = connect();
  ASSERT_TRUE(guest) << guest.message();
  Channel& h = host(0);
  EXPECT_FALSE(guest->carries_fds());
  EXPECT_FALSE(guest->shared_heap().empty());
  EXPECT_EQ(guest->shared_heap().size(), h.shared_heap().size());
  EXPECT_EQ(h.peer_hello().peer_name, "guest");
  EXPECT_EQ(guest->peer_hello().peer_name, "host");
  ping_pong(*guest, h, 200);
}

TEST_F(VmTest, MessagesLargerThanTheRingAreChunked) {
  auto guest = connect();
  ASSERT_TRUE(guest) << guest.message();
  Channel& h = host(0);
  const auto big = testing::pattern(1 << 20, 42);  // 16 rings' worth
  std::thread sender([&] { EXPECT_EQ(guest->send(3, big), Status::kOk); });
  Message m;
  ASSERT_EQ(h.recv(m, deadline_after(10s)), Status::kOk);
  sender.join();
  EXPECT_EQ(m.payload, big);
}

TEST_F(VmTest, TheHeapIsTheSameMemoryOnBothSides) {
  auto guest = connect();
  ASSERT_TRUE(guest) << guest.message();
  Channel& h = host(0);
  std::memcpy(h.shared_heap().data() + 4096, "zero-copy", 10);
  EXPECT_STREQ(reinterpret_cast<const char*>(guest->shared_heap().data() + 4096), "zero-copy");
}

TEST_F(VmTest, TwoSessionsTakeTwoSlotsAndAThirdWaitsForOne) {
  auto a = connect();
  ASSERT_TRUE(a) << a.message();
  auto b = connect();
  ASSERT_TRUE(b) << b.message();
  EXPECT_NE(a->shared_heap().data(), b->shared_heap().data());
  auto c = connect_vm("ivshmem:" + path_, Hello{1, 2, "third"}, deadline_after(200ms));
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("busy"), std::string::npos) << c.error().message;
}

TEST_F(VmTest, AVersionMismatchIsRefusedWithBothVersions) {
  auto guest = connect(Hello{9, 2, "old-guest"});
  ASSERT_FALSE(guest);
  EXPECT_EQ(guest.code(), Status::kRefused);
  EXPECT_NE(guest.error().message.find("protocol version mismatch"), std::string::npos) << guest.error().message;
}

TEST_F(VmTest, AGuestWithoutBypassdFailsPromptly) {
  stop_ = true;
  server_.join();
  const auto start = Clock::now();
  auto guest = connect();
  ASSERT_FALSE(guest);
  EXPECT_LT(Clock::now() - start, kVmHostTimeout + 1s);
  EXPECT_NE(guest.error().message.find("heartbeat"), std::string::npos) << guest.error().message;
}

TEST_F(VmTest, TheGuestSeesTheHostGoneWhenItsHeartbeatStops) {
  auto guest = connect();
  ASSERT_TRUE(guest) << guest.message();
  host(0);
  stop_ = true;  // bypassd dies: no heartbeat, nobody answers
  server_.join();
  Message m;
  const auto start = Clock::now();
  EXPECT_EQ(guest->recv(m, deadline_after(10s)), Status::kPeerGone);
  EXPECT_LT(Clock::now() - start, kVmHostTimeout + 1s);
}

TEST_F(VmTest, TheGuestSeesItsSessionEndWhenTheHostFreesTheSlot) {
  auto guest = connect();
  ASSERT_TRUE(guest) << guest.message();
  host(0);
  device_->free_slot(0);
  Message m;
  EXPECT_EQ(guest->recv(m, deadline_after(5s)), Status::kPeerGone);
}

TEST_F(VmTest, TheHostSeesAGuestGoneWhenItsHeartbeatStops) {
  // A guest process (or its whole VM) killed: no goodbye, only its heartbeat stops.
  const pid_t child = fork_guest_that_dies();
  ASSERT_GE(child, 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  Channel& h = host(0);
  Message m;
  ASSERT_EQ(h.recv(m, deadline_after(5s)), Status::kOk);  // what it sent before dying counts
  const auto start = Clock::now();
  EXPECT_EQ(h.recv(m, deadline_after(20s)), Status::kPeerGone);
  EXPECT_LT(Clock::now() - start, kVmGuestTimeout + 1s);
}

TEST_F(VmTest, AGoodbyeEndsTheHostSide) {
  auto guest = connect();
  ASSERT_TRUE(guest) << guest.message();
  Channel& h = host(0);
  guest->close();
  Message m;
  EXPECT_EQ(h.recv(m, deadline_after(5s)), Status::kClosed);
}

// ---------------------------------------------------------------------------------------------
// Doorbells

class VmDoorbellTest : public VmTest {
 protected:
  VmDoorbellTest() { doorbells_ = true; }
};

class VmDoorbellNotHandedTest : public VmTest {
 protected:
  VmDoorbellNotHandedTest() {
    doorbells_ = true;
    hand_doorbells_ = false;
  }
};

TEST_F(VmDoorbellTest, TheDeviceListensPerSlotAndBothSidesRing) {
  namespace fs = std::filesystem;
  for (uint32_t i = 0; i < device_->slot_count(); ++i) {
    EXPECT_TRUE(fs::is_socket(doorbell_path(path_, i))) << doorbell_path(path_, i);
    // Whoever connects holds the slot's doorbell: the owner only, as for the device file.
    EXPECT_EQ(fs::status(doorbell_path(path_, i)).permissions() & (fs::perms::group_all | fs::perms::others_all),
              fs::perms::none);
  }
  auto guest = connect();
  ASSERT_TRUE(guest) << guest.message();
  Channel& h = host(0);
  EXPECT_STREQ(guest->wakeups(), "doorbell");
  EXPECT_STREQ(h.wakeups(), "doorbell");
  ping_pong(*guest, h, 200);
}

TEST_F(VmDoorbellTest, AnIdleSideSleepsUntilTheDoorbellRings) {
  auto guest = connect();
  ASSERT_TRUE(guest) << guest.message();
  Channel& h = host(0);
  ASSERT_STREQ(guest->wakeups(), "doorbell");
  // The guest waits for a message that comes after 400 ms: polling, its naps alone would be
  // some 2,000 wake-ups (one per kVmPollMax); on the doorbell it wakes once per liveness slice
  // (50 ms) to look for a dead peer, and once when the host rings.
  uint64_t switches = 0;
  Status got = Status::kOk;
  Message m;
  std::thread waiter([&] {
    const uint64_t before = testing::thread_switches();
    got = guest->recv(m, deadline_after(5s));
    switches = testing::thread_switches() - before;
  });
  std::this_thread::sleep_for(400ms);
  const uint64_t wakes_before = h.stats().wakes_issued;
  ASSERT_EQ(h.send(9, testing::pattern(64, 9)), Status::kOk);
  waiter.join();
  ASSERT_EQ(got, Status::kOk);
  EXPECT_EQ(m.payload, testing::pattern(64, 9));
  EXPECT_EQ(h.stats().wakes_issued, wakes_before + 1) << "the host found the guest asleep and rang";
  EXPECT_LT(switches, 100u) << "the guest's receiving thread woke " << switches << " times in 400 ms";
}

TEST_F(VmDoorbellTest, ASessionWhoseGuestHasNoDoorbellPolls) {
  // A guest that cannot reach its slot's doorbell (here: the socket is gone; in a VM: no port).
  std::filesystem::remove(doorbell_path(path_, 0));
  check_polling_session();
}

TEST_F(VmDoorbellNotHandedTest, ASessionWhoseHostHasNoDoorbellPolls) { check_polling_session(); }

TEST_F(VmDoorbellTest, SuccessiveGuestsOfASlotGetTheirOwnDoorbell) {
  // The next guest process in the slot connects anew; the host keeps the newest connection.
  for (size_t n = 0; n < 3; ++n) {
    auto guest = connect();
    ASSERT_TRUE(guest) << guest.message();
    Channel& h = host(n);
    EXPECT_STREQ(guest->wakeups(), "doorbell") << "guest " << n;
    EXPECT_STREQ(h.wakeups(), "doorbell") << "guest " << n;
    Message m;
    ASSERT_EQ(guest->send(7, testing::pattern(10, n)), Status::kOk);
    ASSERT_EQ(h.recv(m, deadline_after(5s)), Status::kOk);
    guest->close();
    ASSERT_EQ(h.recv(m, deadline_after(5s)), Status::kClosed);
    device_->free_slot(0);
  }
}

TEST_F(VmDoorbellTest, TheDoorbellsEndIsThePeersDeath) {
  auto guest = connect();
  ASSERT_TRUE(guest) << guest.message();
  Channel& h = host(0);
  ASSERT_STREQ(h.wakeups(), "doorbell");
  ASSERT_EQ(guest->send(7, testing::pattern(10, 1)), Status::kOk);
  // The stream ends under the session (in a VM: QEMU died and its chardev closed, or bypassd
  // died with its sockets) while the guest sleeps on it: the guest sees its peer gone at once,
  // not after the 2 s heartbeat timeout, and so does the host, after what was sent before.
  Status got = Status::kOk;
  Clock::time_point woke;
  Message m;
  std::thread waiter([&] {
    got = guest->recv(m, deadline_after(10s));
    woke = Clock::now();
  });
  std::this_thread::sleep_for(100ms);
  base::UniqueFd stream = device_->doorbell(0);  // the slot is active: the server loop leaves it
  ASSERT_TRUE(stream);
  const auto cut = Clock::now();
  ASSERT_EQ(::shutdown(stream.get(), SHUT_RDWR), 0);
  waiter.join();
  EXPECT_EQ(got, Status::kPeerGone);
  EXPECT_LT(woke - cut, kVmHostTimeout / 2);
  ASSERT_EQ(h.recv(m, deadline_after(10s)), Status::kOk);
  EXPECT_EQ(m.payload, testing::pattern(10, 1));
  const auto start = Clock::now();
  EXPECT_EQ(h.recv(m, deadline_after(10s)), Status::kPeerGone);
  EXPECT_LT(Clock::now() - start, kVmGuestTimeout / 2);
}

TEST_F(VmDoorbellTest, AGuestProcessThatDiesClosesItsDoorbellAndItsSessionEndsAtOnce) {
  // A guest on this kernel holds the socket itself: its death is the socket's end.
  const pid_t child = fork_guest_that_dies();
  ASSERT_GE(child, 0);
  Channel& h = host(0);
  Message m;
  ASSERT_EQ(h.recv(m, deadline_after(5s)), Status::kOk);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  const auto start = Clock::now();
  EXPECT_EQ(h.recv(m, deadline_after(20s)), Status::kPeerGone);
  EXPECT_LT(Clock::now() - start, kVmGuestTimeout / 2) << "the heartbeat's timeout, not the doorbell, ended it";
}

TEST_F(VmDoorbellTest, SeveralSleepersOfOneProcessAreAllWoken) {
  // The guest's receiving thread and three threads waiting on the completion feedback word all
  // sleep on the one doorbell: one reads the stream, the others wait on the epoch. Each of
  // them is woken by what concerns it, whichever thread read the ring.
  auto guest = connect();
  ASSERT_TRUE(guest) << guest.message();
  Channel& h = host(0);
  ASSERT_STREQ(guest->wakeups(), "doorbell");
  layout::Feedback* feedback = guest->feedback();
  ASSERT_NE(feedback, nullptr);
  for (int round = 0; round < 20; ++round) {
    const uint32_t seq = feedback->seq.load();
    std::atomic<int> woken{0};
    std::vector<std::thread> waiters;
    // One sleep of 10 s each: a wake-up lost between the sleepers would show as a waiter that
    // took that long (one found woken takes milliseconds).
    for (int i = 0; i < 3; ++i) {
      waiters.emplace_back([&] {
        const auto start = Clock::now();
        feedback->sleepers.fetch_add(1);
        while (feedback->seq.load() == seq && Clock::now() - start < 20s) guest->sleep_feedback(seq, 10s);
        feedback->sleepers.fetch_sub(1);
        if (feedback->seq.load() != seq && Clock::now() - start < 5s) ++woken;
      });
    }
    Status got = Status::kOk;
    Message m;
    std::thread receiver([&] { got = guest->recv(m, deadline_after(5s)); });
    std::this_thread::sleep_for(20ms);
    ASSERT_EQ(h.send(8, testing::pattern(10, static_cast<uint64_t>(round))), Status::kOk);
    receiver.join();
    ASSERT_EQ(got, Status::kOk);
    h.feedback()->seq.fetch_add(1);
    h.wake_feedback();
    for (auto& t : waiters) t.join();
    ASSERT_EQ(woken.load(), 3) << "round " << round << ": a waiter missed its wake-up";
  }
}

class VmDoorbellWatchTest : public VmTest {
 protected:
  VmDoorbellWatchTest() {
    doorbells_ = true;
    watch_loop_ = true;
  }
};

TEST_F(VmDoorbellWatchTest, TheHostsLoopIsWokenByItsIdleSlotsDoorbells) {
  // bypassd's main loop as it runs: it polls the idle slots' doorbells (VmDevice::
  // watch_doorbells: the listeners and the connections kept for idle slots) and otherwise looks
  // at the slots only every 500 ms here. 20 guests in a row are answered at once, each on its
  // doorbell; waiting for the next look they would take some 5 s. (A guest on this kernel
  // connects as it claims its slot, which wakes the loop too; in a VM the connection is QEMU's,
  // made long before, and only the ring the guest sends with its request does.)
  const auto start = Clock::now();
  for (size_t n = 0; n < 20; ++n) {
    auto guest = connect();
    ASSERT_TRUE(guest) << guest.message();
    EXPECT_STREQ(guest->wakeups(), "doorbell");
    guest->close();
    Channel& h = host(n);
    EXPECT_STREQ(h.wakeups(), "doorbell");
    h.close();
    device_->free_slot(0);
    device_->free_slot(1);
  }
  EXPECT_LT(Clock::now() - start, 2s) << "guests waited for the host's next look";
}

TEST(Doorbell, ADrainTakesAtMost64KiBSoAFloodCannotHoldALoop) {
  // vmqd's broker and the crossover switch serve every doorbell from one loop: a guest that
  // floods its own must cost that loop one bounded read per pass, not all of its time.
  auto pair = base::socket_pair(SOCK_STREAM);
  ASSERT_TRUE(pair) << pair.message();
  ASSERT_EQ(::fcntl(pair->first.get(), F_SETFL, O_NONBLOCK), 0);
  ASSERT_EQ(::fcntl(pair->second.get(), F_SETFL, O_NONBLOCK), 0);
  const std::vector<char> flood(16 * 1024, 1);
  size_t written = 0;
  for (ssize_t n; (n = ::write(pair->first.get(), flood.data(), flood.size())) > 0;) written += static_cast<size_t>(n);
  ASSERT_GT(written, size_t{64 * 1024}) << "the socket buffer holds too little to show the bound";
  EXPECT_TRUE(drain_doorbell(pair->second.get()));
  pollfd p{pair->second.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 1) << "the rest stays readable for the loop's next pass";
  while (drain_doorbell(pair->second.get()) && ::poll(&p, 1, 0) == 1) {
  }
  EXPECT_EQ(::poll(&p, 1, 0), 0);
  // Its end is told apart from an empty stream.
  pair->first.reset();
  EXPECT_FALSE(drain_doorbell(pair->second.get()));
}

}  // namespace
}  // namespace bypass::transport
