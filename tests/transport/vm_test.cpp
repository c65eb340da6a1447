// The VM transport (vm.h) with both ends on this machine: bypassd's side maps the device file,
// the guest's side maps the same file through "ivshmem:/path", as a guest maps the BAR. The
// same ring code runs as on a socket; what differs is the hand-shake in a slot, polled
// wake-ups and heartbeat peer death.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/wait.h>

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
    auto device = VmDevice::create(path_, options);
    ASSERT_TRUE(device) << device.message();
    device_.emplace(std::move(*device));
    // bypassd's main loop: the heartbeat, and an accept for every requested slot.
    server_ = std::thread([this] {
      while (!stop_) {
        device_->heartbeat();
        for (uint32_t i = 0; i < device_->slot_count(); ++i) {
          if (!device_->slot_requested(i)) continue;
          auto ch = device_->accept(i, Hello{1, 2, "host"});
          std::lock_guard lock(mu_);
          if (ch)
            accepted_.push_back(std::move(*ch));
          else
            refusals_.push_back(ch.error().message);
        }
        std::this_thread::sleep_for(1ms);
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
  Message m;
  for (int i = 0; i < 200; ++i) {
    const auto payload = testing::pattern(static_cast<size_t>(i * 37 + 1), static_cast<uint64_t>(i));
    ASSERT_EQ(guest->send(7, payload), Status::kOk);
    ASSERT_EQ(h.recv(m, deadline_after(5s)), Status::kOk);
    ASSERT_EQ(m.kind, 7u);
    ASSERT_EQ(m.payload, payload);
    ASSERT_EQ(h.send(8, payload), Status::kOk);
    ASSERT_EQ(guest->recv(m, deadline_after(5s)), Status::kOk);
    ASSERT_EQ(m.payload, payload);
  }
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
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto guest = connect();
    if (guest) (void)guest->send(5, testing::pattern(100, 1));
    ::kill(::getpid(), SIGKILL);
    _exit(1);
  }
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

}  // namespace
}  // namespace bypass::transport
