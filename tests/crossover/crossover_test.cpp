// Crossover links between real network namespaces (needs root): ping and TCP through the
// crossover, frames for a non-peer address taking the uplink, MACs moving, the CLI flow.
// Every namespace has a unique name and is deleted even when the test process dies: a
// janitor process deletes them when its pipe from us closes.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bypass/crossover/detector.h"
#include "bypass/crossover/device.h"
#include "bypass/crossover/link.h"
#include "bypass/crossover/port.h"
#include "bypass/crossover/tap.h"
#include "bypass/transport/session.h"
#include "bypass/transport/vm.h"

using namespace bypass::crossover;
using namespace std::chrono_literals;

namespace {

int sh(const std::string& cmd) {
  int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string sh_out(const std::string& cmd) {
  std::string out;
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  ::pclose(f);
  return out;
}

// Deletes the namespaces it is told about when the test process goes away, however it goes.
class Janitor {
 public:
  Janitor() {
    int fds[2];
    if (::pipe(fds) != 0) return;
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(fds[1]);
      ::setsid();  // survive a ctest timeout's process-group kill of the test
      std::string names, chunk(256, '\0');
      ssize_t n;
      while ((n = ::read(fds[0], chunk.data(), chunk.size())) > 0) names.append(chunk.data(), size_t(n));
      size_t start = 0;
      while (start < names.size()) {
        size_t end = names.find('\n', start);
        std::string ns = names.substr(start, end - start);
        if (!ns.empty()) sh("ip netns del " + ns);
        if (end == std::string::npos) break;
        start = end + 1;
      }
      ::_exit(0);
    }
    ::close(fds[0]);
    fd_ = fds[1];
    ::fcntl(fd_, F_SETFD, FD_CLOEXEC);
  }
  void track(const std::string& ns) {
    std::string line = ns + "\n";
    [[maybe_unused]] ssize_t n = ::write(fd_, line.data(), line.size());
  }

 private:
  int fd_ = -1;
};

Janitor& janitor() {
  static Janitor j;
  return j;
}

std::string unique_name(const std::string& what) {
  static std::atomic<int> n{0};
  return "bxt" + std::to_string(::getpid()) + "-" + std::to_string(n++) + what;
}

struct Netns {
  std::string name;
  explicit Netns(const std::string& what) : name(unique_name(what)) {
    janitor().track(name);
    EXPECT_EQ(sh("ip netns add " + name), 0);
    // No IPv6 chatter (router/neighbour solicitations) muddying the counters and MAC table.
    sh("ip netns exec " + name + " sysctl -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
  }
  ~Netns() { sh("ip netns del " + name); }
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;
  int exec(const std::string& cmd) const { return sh("ip netns exec " + name + " " + cmd); }
};

// A link daemon in the foreground, owned by the test (dies with it: PR_SET_PDEATHSIG).
class Link {
 public:
  Link(const Netns& a, const Netns& b, const std::string& subnet, const Netns* uplink = nullptr,
       std::vector<std::string> extra = {})
      : name_(unique_name("l")), socket_("/tmp/" + name_ + ".sock") {
    std::vector<std::string> args = {XOVER_PATH, "create",         name_,      "--foreground",  "--socket",
                                     socket_,    "--netns-a",      a.name,     "--netns-b",     b.name,
                                     "--addr-a", subnet + ".1/24", "--addr-b", subnet + ".2/24"};
    if (uplink != nullptr) args.insert(args.end(), {"--uplink-netns", uplink->name, "--uplink-addr", subnet + ".3/24"});
    args.insert(args.end(), extra.begin(), extra.end());
    pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(127);
      std::vector<char*> argv;
      for (auto& s : args) argv.push_back(s.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    for (int i = 0; i < 500; ++i) {
      std::string s = status();
      if (s.find("\"a\":{\"present\":true,\"live\":true") != std::string::npos &&
          s.find("\"b\":{\"present\":true,\"live\":true") != std::string::npos) {
        up_ = true;
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
  }
  ~Link() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status;
      ::waitpid(pid_, &status, 0);
    }
  }
  bool up() const { return up_; }
  const std::string& socket() const { return socket_; }
  std::string status() const {
    return sh_out(std::string(XOVER_PATH) + " status " + name_ + " --json --socket " + socket_ + " 2>/dev/null");
  }
  // A top-level counter from the JSON status.
  uint64_t counter(const std::string& key) const {
    std::string s = status();
    auto at = s.find("\"" + key + "\":");
    if (at == std::string::npos) return 0;
    return std::stoull(s.substr(at + key.size() + 3));
  }

 private:
  std::string name_, socket_;
  pid_t pid_ = -1;
  bool up_ = false;
};

bool root() { return ::geteuid() == 0 && ::access("/dev/net/tun", R_OK | W_OK) == 0; }

#define REQUIRE_ROOT() \
  if (!root()) GTEST_SKIP() << "needs root and /dev/net/tun"

// Streams `bytes` of seeded pseudo-random data from namespace `from` to `to_ip` in namespace
// `to` over TCP; returns {bytes received, crc of sent, crc of received, seconds}.
struct Transfer {
  uint64_t received = 0;
  uint32_t crc_sent = 0, crc_received = 0;
  double seconds = 0;
};

Transfer tcp_transfer(const std::string& from, const std::string& to, const std::string& to_ip, size_t bytes) {
  Transfer t;
  int listener = -1;
  {
    auto in = NetnsScope::enter(to);
    EXPECT_TRUE(in.ok()) << in.message();
    listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(5201);
  ::inet_pton(AF_INET, to_ip.c_str(), &addr.sin_addr);
  int one = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listener, 1) != 0) {
    ::close(listener);
    return t;
  }
  std::thread receiver([&] {
    int c = ::accept(listener, nullptr, nullptr);
    if (c < 0) return;
    std::vector<unsigned char> buf(1 << 20);
    uLong crc = crc32(0, nullptr, 0);
    ssize_t n;
    while ((n = ::read(c, buf.data(), buf.size())) > 0) {
      crc = crc32(crc, buf.data(), static_cast<uInt>(n));
      t.received += static_cast<uint64_t>(n);
    }
    t.crc_received = static_cast<uint32_t>(crc);
    ::close(c);
  });
  int s;
  {
    auto in = NetnsScope::enter(from);
    EXPECT_TRUE(in.ok()) << in.message();
    s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  }
  auto start = std::chrono::steady_clock::now();
  if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    std::vector<uint64_t> block((1 << 20) / 8);
    std::mt19937_64 rng(42);
    uLong crc = crc32(0, nullptr, 0);
    for (size_t sent = 0; sent < bytes;) {
      for (auto& w : block) w = rng();
      size_t len = std::min(bytes - sent, block.size() * 8);
      auto* p = reinterpret_cast<const unsigned char*>(block.data());
      crc = crc32(crc, p, static_cast<uInt>(len));
      for (size_t off = 0; off < len;) {
        ssize_t n = ::write(s, p + off, len - off);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      sent += len;
    }
    t.crc_sent = static_cast<uint32_t>(crc);
  }
  ::shutdown(s, SHUT_WR);
  receiver.join();
  t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ::close(s);
  ::close(listener);
  return t;
}

// Sends `count` 1000-byte UDP datagrams from `from` to to_ip:5202 in `to` in bursts of 16,
// each burst once the one before arrived (few in flight, so nothing overflows and nothing is
// lost), and nothing ever travels back. Returns how many arrived; it stops at the first burst
// that does not arrive within a second.
size_t udp_one_way(const std::string& from, const std::string& to, const std::string& to_ip, size_t count) {
  int r, s;
  {
    auto in = NetnsScope::enter(to);
    EXPECT_TRUE(in.ok()) << in.message();
    r = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  }
  {
    auto in = NetnsScope::enter(from);
    EXPECT_TRUE(in.ok()) << in.message();
    s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(5202);
  ::inet_pton(AF_INET, to_ip.c_str(), &addr.sin_addr);
  timeval tv{1, 0};
  ::setsockopt(r, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::atomic<size_t> received{0};  // the receiver's count (release); the sender waits on it (acquire)
  if (::bind(r, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    std::thread receiver([&] {
      char buf[2048];
      while (received.load(std::memory_order_relaxed) < count && ::recv(r, buf, sizeof buf, 0) > 0)
        received.fetch_add(1, std::memory_order_release);
    });
    std::vector<char> payload(1000, 'u');
    for (size_t sent = 0; sent < count;) {
      for (size_t end = std::min(count, sent + 16); sent < end; ++sent)
        ::sendto(s, payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
      auto deadline = std::chrono::steady_clock::now() + 1s;
      while (received.load(std::memory_order_acquire) < sent && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(20us);
      if (received.load(std::memory_order_acquire) < sent) break;
    }
    receiver.join();
  }
  ::close(s);
  ::close(r);
  return received.load();
}

}  // namespace

// A peer's virtio-net header reaches our TAP only when it is what a TAP itself hands over.
TEST(CrossoverVnetHeader, OnlyWhatATapProducesIsAccepted) {
  const size_t frame = 1514;
  VnetHeader plain;  // all zero: no offload
  EXPECT_TRUE(vnet_header_acceptable(plain, frame));
  VnetHeader csum{.flags = 1, .csum_start = 34, .csum_offset = 16};  // TCP checksum left to do
  EXPECT_TRUE(vnet_header_acceptable(csum, frame));
  VnetHeader tso{.flags = 1, .gso_type = 1, .hdr_len = 66, .gso_size = 1448, .csum_start = 34, .csum_offset = 16};
  EXPECT_TRUE(vnet_header_acceptable(tso, 65000));
  VnetHeader tso6_ecn = tso;
  tso6_ecn.gso_type = 4 | 0x80;
  EXPECT_TRUE(vnet_header_acceptable(tso6_ecn, 65000));
  VnetHeader valid{.flags = 2};  // checksum already verified
  EXPECT_TRUE(vnet_header_acceptable(valid, frame));

  auto with = [](VnetHeader h, auto change) {
    change(h);
    return h;
  };
  EXPECT_FALSE(vnet_header_acceptable(with(plain, [](auto& h) { h.flags = 4; }), frame));        // unknown flag
  EXPECT_FALSE(vnet_header_acceptable(with(tso, [](auto& h) { h.gso_type = 3; }), 65000));       // UDP fragmentation
  EXPECT_FALSE(vnet_header_acceptable(with(tso, [](auto& h) { h.gso_type = 5; }), 65000));       // UDP segmentation
  EXPECT_FALSE(vnet_header_acceptable(with(tso, [](auto& h) { h.gso_type = 0x42; }), 65000));    // nonsense
  EXPECT_FALSE(vnet_header_acceptable(with(plain, [](auto& h) { h.gso_type = 0x80; }), frame));  // ECN alone
  EXPECT_FALSE(vnet_header_acceptable(with(tso, [](auto& h) { h.gso_size = 0; }), 65000));
  // A stack forwarding a segmented frame whose checksums are already checked (GRO) hands it over so.
  EXPECT_TRUE(vnet_header_acceptable(with(tso, [](auto& h) { h.flags = 2; }), 65000));
  EXPECT_FALSE(vnet_header_acceptable(with(tso, [](auto& h) { h.hdr_len = 65001; }), 65000));
  EXPECT_FALSE(vnet_header_acceptable(csum, 49));  // the checksum field past the frame's end
  EXPECT_TRUE(vnet_header_acceptable(csum, 52));
  EXPECT_FALSE(vnet_header_acceptable(with(csum,
                                           [](auto& h) {
                                             h.csum_start = 0xffff;
                                             h.csum_offset = 0xffff;
                                           }),
                                      frame));
}

TEST(CrossoverDetector, LearnsForwardsFloodsAndRelearns) {
  Detector d;
  Mac a{2, 0, 0, 0, 0, 1}, b{2, 0, 0, 0, 0, 2}, up{2, 0, 0, 0, 0, 3};
  Mac bcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  uint32_t all = 0b111;
  d.learn(a, kPortA);
  d.learn(b, kPortB);
  auto to_peer = d.decide(kPortA, b, a, all);
  EXPECT_EQ(to_peer.kind, Decision::kForward);
  EXPECT_EQ(to_peer.port, kPortB);
  auto unknown = d.decide(kPortA, up, a, all);  // not learnt yet: every other port
  EXPECT_EQ(unknown.kind, Decision::kFlood);
  EXPECT_EQ(unknown.mask, 0b110u);
  d.decide(kPortUplink, a, up, all);  // the uplink host speaks: learnt
  auto to_uplink = d.decide(kPortA, up, a, all);
  EXPECT_EQ(to_uplink.kind, Decision::kForward);
  EXPECT_EQ(to_uplink.port, kPortUplink);
  EXPECT_EQ(d.decide(kPortB, bcast, b, all).mask, 0b101u);
  // b's MAC shows up behind the uplink: it moved, frames follow it.
  d.decide(kPortUplink, bcast, b, all);
  EXPECT_EQ(d.moves(), 1u);
  auto moved = d.decide(kPortA, b, a, all);
  EXPECT_EQ(moved.kind, Decision::kForward);
  EXPECT_EQ(moved.port, kPortUplink);
  // Hairpin and dead ports drop.
  EXPECT_EQ(d.decide(kPortUplink, b, up, all).kind, Decision::kDrop);
  EXPECT_EQ(d.decide(kPortA, b, a, 0b011).kind, Decision::kDrop);
  d.forget_port(kPortUplink);
  EXPECT_EQ(d.decide(kPortA, b, a, all).kind, Decision::kFlood);
  Mac parsed;
  EXPECT_TRUE(parse_mac("02:00:00:00:00:0a", &parsed));
  EXPECT_EQ(mac_to_string(parsed), "02:00:00:00:00:0a");
  EXPECT_FALSE(parse_mac("02:00:00:00:00", &parsed));
}

TEST(Crossover, NamespacesPingEachOther) {
  REQUIRE_ROOT();
  Netns a("a"), b("b");
  Link link(a, b, "10.201.0");
  ASSERT_TRUE(link.up()) << link.status();
  EXPECT_EQ(a.exec("ping -c 3 -i 0.2 -W 2 10.201.0.2"), 0);
  EXPECT_EQ(b.exec("ping -c 3 -i 0.2 -W 2 10.201.0.1"), 0);
  EXPECT_GE(link.counter("crossover"), 12u);  // 6 echo requests + 6 replies, at least
  EXPECT_EQ(link.counter("to_uplink"), 0u);
}

TEST(Crossover, Tcp100MiBWithMatchingChecksums) {
  REQUIRE_ROOT();
  Netns a("a"), b("b");
  Link link(a, b, "10.202.0");
  ASSERT_TRUE(link.up()) << link.status();
  constexpr size_t kBytes = 100u << 20;
  Transfer t = tcp_transfer(a.name, b.name, "10.202.0.2", kBytes);
  EXPECT_EQ(t.received, kBytes);
  EXPECT_EQ(t.crc_received, t.crc_sent);
  EXPECT_NE(t.crc_sent, 0u);
  std::printf("100 MiB over the crossover in %.2f s (%.2f Gbit/s)\n", t.seconds, kBytes * 8 / t.seconds / 1e9);
  EXPECT_GE(link.counter("crossover"), 100u);
}

// Four buffers per port and traffic one way only (UDP, no answers): the sender runs out of
// buffers all the time and nothing else wakes the switch, so returned buffers (rx_done) must,
// although the switch otherwise collects them only when a frame comes.
TEST(Crossover, OneWayUdpWithFourBuffersPerPort) {
  REQUIRE_ROOT();
  Netns a("a"), b("b");
  Link link(a, b, "10.207.0", nullptr, {"--buffers", "4"});
  ASSERT_TRUE(link.up()) << link.status();
  ASSERT_EQ(a.exec("ping -c 1 -W 2 10.207.0.2"), 0);  // ARP settled: from here on, one way only
  EXPECT_EQ(udp_one_way(a.name, b.name, "10.207.0.2", 1000), 1000u) << link.status();
}

// Without pinning (--cpu none) the switch spins before sleeping and the threads wander.
TEST(Crossover, TcpUnpinned) {
  REQUIRE_ROOT();
  Netns a("a"), b("b");
  Link link(a, b, "10.208.0", nullptr, {"--cpu", "none"});
  ASSERT_TRUE(link.up()) << link.status();
  constexpr size_t kBytes = 32u << 20;
  Transfer t = tcp_transfer(a.name, b.name, "10.208.0.2", kBytes);
  EXPECT_EQ(t.received, kBytes);
  EXPECT_EQ(t.crc_received, t.crc_sent);
}

// Without offloads the frames still carry a (zero) virtio-net header, so the switch finds the
// MACs where it looks: the peer's frames go across, none is flooded to the uplink.
TEST(Crossover, WithoutOffloadFramesAreSwitchedByMac) {
  REQUIRE_ROOT();
  Netns a("a"), b("b"), u("u");
  Link link(a, b, "10.212.0", &u, {"--no-offload"});
  ASSERT_TRUE(link.up()) << link.status();
  ASSERT_EQ(a.exec("ping -c 1 -W 2 10.212.0.2"), 0);  // ARP (a broadcast, flooded) settled
  const uint64_t flooded = link.counter("flooded");
  EXPECT_EQ(a.exec("ping -c 3 -i 0.2 -W 2 10.212.0.2"), 0);
  EXPECT_GE(link.counter("crossover"), 6u) << link.status();
  EXPECT_EQ(link.counter("flooded"), flooded) << link.status();
  EXPECT_EQ(link.counter("to_uplink"), 0u);
  EXPECT_EQ(link.counter("mac_moves"), 0u);
  constexpr size_t kBytes = 8u << 20;
  Transfer t = tcp_transfer(a.name, b.name, "10.212.0.2", kBytes);
  EXPECT_EQ(t.received, kBytes);
  EXPECT_EQ(t.crc_received, t.crc_sent);
}

TEST(Crossover, NonPeerAddressTakesTheUplink) {
  REQUIRE_ROOT();
  Netns a("a"), b("b"), u("u");
  Link link(a, b, "10.203.0", &u);
  ASSERT_TRUE(link.up()) << link.status();
  uint64_t before = link.counter("to_uplink");
  EXPECT_EQ(a.exec("ping -c 3 -i 0.2 -W 2 10.203.0.3"), 0);  // the uplink's address, not the peer's
  EXPECT_GE(link.counter("to_uplink") - before, 3u);
  EXPECT_GE(link.counter("from_uplink"), 3u);
  // The peer still goes straight across.
  uint64_t cross = link.counter("crossover");
  EXPECT_EQ(a.exec("ping -c 2 -i 0.2 -W 2 10.203.0.2"), 0);
  EXPECT_GE(link.counter("crossover") - cross, 4u);
}

TEST(Crossover, MacMovingToTheUplinkIsRelearnt) {
  REQUIRE_ROOT();
  Netns a("a"), b("b"), u("u");
  const std::string mac_b = "02:bb:00:00:00:02";
  Link link(a, b, "10.204.0", &u, {"--mac-b", mac_b});
  ASSERT_TRUE(link.up()) << link.status();
  EXPECT_EQ(a.exec("ping -c 1 -W 2 10.204.0.2"), 0);
  EXPECT_NE(link.status().find("{\"mac\":\"" + mac_b + "\",\"port\":\"b\""), std::string::npos) << link.status();
  // The address moves: b takes another MAC, the uplink host takes b's old one and speaks.
  ASSERT_EQ(b.exec("ip link set dev xo0 address 02:bb:00:00:00:99"), 0);
  ASSERT_EQ(u.exec("ip link set dev xo-up0 address " + mac_b), 0);
  EXPECT_EQ(u.exec("ping -c 1 -W 2 10.204.0.1"), 0);
  EXPECT_NE(link.status().find("{\"mac\":\"" + mac_b + "\",\"port\":\"uplink\""), std::string::npos) << link.status();
  EXPECT_GE(link.counter("mac_moves"), 1u);
  // a reaches the uplink host at that MAC: the detector now sends it up, not across.
  ASSERT_EQ(a.exec("ip neigh replace 10.204.0.3 lladdr " + mac_b + " dev xo0"), 0);
  uint64_t before = link.counter("to_uplink");
  EXPECT_EQ(a.exec("ping -c 2 -i 0.2 -W 2 10.204.0.3"), 0);
  EXPECT_GE(link.counter("to_uplink") - before, 2u);
}

TEST(Crossover, DeadEndpointTakesItsSideDown) {
  REQUIRE_ROOT();
  Netns a("a"), b("b");
  Link link(a, b, "10.205.0");
  ASSERT_TRUE(link.up());
  // Kill b's endpoint process: its TAP disappears and the host marks that port down.
  std::string pids = sh_out("ip netns pids " + b.name);
  ASSERT_FALSE(pids.empty());
  for (size_t at = 0; at < pids.size();) {
    size_t end = pids.find('\n', at);
    ::kill(std::stoi(pids.substr(at, end - at)), SIGKILL);
    if (end == std::string::npos) break;
    at = end + 1;
  }
  bool down = false;
  for (int i = 0; i < 200 && !down; ++i) {
    down = link.status().find("\"b\":{\"present\":true,\"live\":false") != std::string::npos;
    if (!down) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(down) << link.status();
  EXPECT_NE(a.exec("ping -c 1 -W 1 10.205.0.2"), 0);  // an error, promptly; not a hang
}

// Runs `argv` as a child that dies with the test; returns its pid.
pid_t spawn_child(std::vector<std::string> args) {
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

void stop_child(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  int status;
  ::waitpid(pid, &status, 0);
}

// A link whose memory is a VM device file, as between two QEMU guests (tests/vm/xover_vm_test.py
// runs it with real VMs), with its endpoints in two namespaces mapping the file itself: the
// attach through the device header, and either each side's doorbell (the endpoint connects to
// the daemon's socket for its side, as QEMU would for the guest's virtio-serial port), whose end
// takes a dead endpoint's side down at once; or, with --no-doorbell, polled rings and heartbeats.
void vm_device_link(bool doorbells) {
  REQUIRE_ROOT();
  Netns a("a"), b("b");
  const std::string name = unique_name("vmdev");
  const std::string device = "/dev/shm/" + name, socket = "/tmp/" + name + ".sock";
  std::vector<std::string> args = {XOVER_PATH, "create", name, "--foreground", "--device", device, "--socket", socket};
  if (!doorbells) args.push_back("--no-doorbell");
  const pid_t daemon = spawn_child(args);
  auto status = [&] {
    return sh_out(std::string(XOVER_PATH) + " status x --json --socket " + socket + " 2>/dev/null");
  };
  auto live = [&](const char* side, bool want) {
    const std::string key = std::string("\"") + side + "\":{\"present\":true,\"live\":" + (want ? "true" : "false");
    for (int i = 0; i < 1000; ++i) {
      if (status().find(key) != std::string::npos) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  };
  ASSERT_TRUE(live("a", false)) << "the daemon did not come up: " << status();
  auto endpoint = [&](const Netns& ns, const char* side, const char* addr) {
    // A fixed MAC per side, as a VM's NIC has: the re-attached endpoint is the same host to a's ARP cache.
    return spawn_child({"ip", "netns", "exec", ns.name, XOVER_PATH, "endpoint", "--device", "ivshmem:" + device,
                        "--side", side, "--addr", addr, "--mac", std::string("02:0d:00:00:00:0") + side});
  };
  const pid_t ea = endpoint(a, "a", "10.210.0.1/24");
  pid_t eb = endpoint(b, "b", "10.210.0.2/24");
  EXPECT_TRUE(live("a", true) && live("b", true)) << status();
  EXPECT_EQ(a.exec("ping -c 3 -i 0.2 -W 2 10.210.0.2"), 0);
  constexpr size_t kBytes = 32u << 20;
  Transfer t = tcp_transfer(a.name, b.name, "10.210.0.2", kBytes);
  EXPECT_EQ(t.received, kBytes);
  EXPECT_EQ(t.crc_received, t.crc_sent);
  std::printf("32 MiB over a VM-device link (%s) in %.2f s\n", doorbells ? "doorbells" : "polled", t.seconds);
  // b's endpoint dies without a word: its doorbell closes (or its heartbeat stops) and the host
  // takes its port down.
  ::kill(eb, SIGKILL);
  int st;
  ::waitpid(eb, &st, 0);
  const auto killed = std::chrono::steady_clock::now();
  EXPECT_TRUE(live("b", false)) << status();
  if (doorbells) {
    EXPECT_LT(std::chrono::steady_clock::now() - killed, kDeviceGuestTimeout / 2)
        << "the doorbell's end went unnoticed";
  }
  // A new endpoint claims the freed side and traffic flows again.
  eb = endpoint(b, "b", "10.210.0.2/24");
  EXPECT_TRUE(live("b", true)) << status();
  EXPECT_EQ(a.exec("ping -c 2 -i 0.2 -W 2 10.210.0.2"), 0);
  stop_child(ea);
  stop_child(eb);
  stop_child(daemon);
  ::unlink(device.c_str());
}

TEST(Crossover, VmDeviceLinkCarriesTcpAndNoticesADeadEndpoint) { vm_device_link(/*doorbells=*/true); }
TEST(Crossover, VmDeviceLinkWithoutDoorbellsPollsAndNoticesADeadEndpoint) { vm_device_link(/*doorbells=*/false); }

// A hostile endpoint inside a VM writes what it likes into the device. Here the test plays it:
// it claims side b through the device header, posts a buffer of port a's pool (dropped and
// counted), then makes its tx ring's head jump past the capacity (the switch takes the port
// down). The daemon and side a live on; once the hostile endpoint's heartbeat stops, the side
// is freed and a real endpoint attaches and pings.
TEST(Crossover, HostileVmEndpointIsTakenDownAndTheLinkGoesOn) {
  REQUIRE_ROOT();
  Netns a("a"), b("b");
  const std::string name = unique_name("vmbad");
  const std::string device = "/dev/shm/" + name, socket = "/tmp/" + name + ".sock";
  const pid_t daemon =
      spawn_child({XOVER_PATH, "create", name, "--foreground", "--device", device, "--socket", socket});
  auto status = [&] {
    return sh_out(std::string(XOVER_PATH) + " status x --json --socket " + socket + " 2>/dev/null");
  };
  auto live = [&](const char* side, bool want) {
    const std::string key = std::string("\"") + side + "\":{\"present\":true,\"live\":" + (want ? "true" : "false");
    for (int i = 0; i < 1000; ++i) {
      if (status().find(key) != std::string::npos) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  };
  ASSERT_TRUE(live("a", false)) << "the daemon did not come up: " << status();
  auto endpoint = [&](const Netns& ns, const char* side, const char* addr) {
    return spawn_child({"ip", "netns", "exec", ns.name, XOVER_PATH, "endpoint", "--device", "ivshmem:" + device,
                        "--side", side, "--addr", addr, "--mac", std::string("02:0e:00:00:00:0") + side});
  };
  const pid_t ea = endpoint(a, "a", "10.211.0.1/24");
  ASSERT_TRUE(live("a", true)) << status();

  auto mapped = bypass::transport::map_vm_device("ivshmem:" + device, kDeviceHeaderBytes);
  ASSERT_TRUE(mapped) << mapped.message();
  auto* h = reinterpret_cast<DeviceHeader*>(mapped->data());
  DevicePort& port = h->ports[kPortB];
  uint32_t free_state = kSlotFree;
  ASSERT_TRUE(port.state.compare_exchange_strong(free_state, kSlotClaimed));
  port.generation.fetch_add(1);
  port.state.store(kSlotRequested, std::memory_order_release);
  std::atomic<bool> beating{true};
  std::thread heart([&] {
    while (beating.load()) {
      port.guest_heartbeat.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::sleep_for(kDeviceBeat);
    }
  });
  EXPECT_TRUE(live("b", true)) << status();
  SlotRing<Desc> tx = open_ring(mapped->data() + h->rings_offset[kPortB], kTx);
  const auto counter = [&](const std::string& key) {
    const std::string s = status();
    const auto at = s.find("\"" + key + "\":");
    return at == std::string::npos ? uint64_t{0} : std::stoull(s.substr(at + key.size() + 3));
  };
  const uint64_t dropped = counter("dropped");
  Desc* slot = tx.producer_slot();
  ASSERT_NE(slot, nullptr);
  *slot = Desc{0, 100};  // buffer 0 belongs to port a
  tx.publish();
  for (int i = 0; i < 200 && counter("dropped") == dropped; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(counter("dropped"), dropped + 1) << status();
  EXPECT_TRUE(live("b", true)) << "one bad descriptor is dropped, not fatal: " << status();
  tx.control()->head.store(tx.control()->tail.load() + kRingSlots + 7);  // more than the ring holds
  EXPECT_TRUE(live("b", false)) << status();
  EXPECT_TRUE(live("a", true)) << status();

  beating = false;  // the hostile guest goes silent: the daemon frees side b by heartbeat
  heart.join();
  for (int i = 0; i < 1000 && port.state.load() != kSlotFree; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(port.state.load(), kSlotFree);
  const pid_t eb = endpoint(b, "b", "10.211.0.2/24");
  EXPECT_TRUE(live("b", true)) << status();
  EXPECT_EQ(a.exec("ping -c 2 -i 0.2 -W 2 10.211.0.2"), 0);
  stop_child(ea);
  stop_child(eb);
  stop_child(daemon);
  ::unlink(device.c_str());
}

// The control socket is a transport session: a client of another version is refused in the
// handshake with both versions named, a client that sends garbage or asks for a side that is
// taken is dropped, and the link forwards on.
TEST(Crossover, HostileControlClientsAreRefusedAndTheLinkGoesOn) {
  REQUIRE_ROOT();
  Netns a("a"), b("b");
  Link link(a, b, "10.209.0");
  ASSERT_TRUE(link.up()) << link.status();
  namespace transport = bypass::transport;
  auto old = transport::connect(link.socket(), transport::Hello{kControlVersion + 41, kControlSchema, "old"},
                                transport::deadline_after(5s));
  ASSERT_FALSE(old);
  EXPECT_EQ(old.code(), transport::Status::kRefused);
  EXPECT_NE(std::string(old.message()).find(std::to_string(kControlVersion + 41)), std::string::npos) << old.message();

  const transport::Hello mine{kControlVersion, kControlSchema, "hostile"};
  {  // garbage where the request belongs: the daemon ends the session
    auto c = transport::connect(link.socket(), mine, transport::deadline_after(5s));
    ASSERT_TRUE(c) << c.message();
    const char junk[5] = {1, 2, 3, 4, 5};
    ASSERT_EQ(c->send(1, std::as_bytes(std::span(junk)), transport::deadline_after(5s)), transport::Status::kOk);
    transport::Message m;
    const auto got = c->recv(m, transport::deadline_after(5s));
    EXPECT_TRUE(got == transport::Status::kClosed || got == transport::Status::kPeerGone) << transport::to_string(got);
  }
  {  // an attach for side a, which is taken: refused, nothing attached
    auto c = transport::connect(link.socket(), mine, transport::deadline_after(5s));
    ASSERT_TRUE(c) << c.message();
    const uint32_t attach[3] = {kPortA, 0, 0};
    ASSERT_EQ(c->send(1, std::as_bytes(std::span(attach)), transport::deadline_after(5s)), transport::Status::kOk);
    transport::Message m;
    ASSERT_EQ(c->recv(m, transport::deadline_after(5s)), transport::Status::kOk);
    uint32_t status = 0;
    ASSERT_GE(m.payload.size(), sizeof status);
    std::memcpy(&status, m.payload.data(), sizeof status);
    EXPECT_NE(status, 0u);
  }
  {  // one that connects and leaves without a request
    auto c = transport::connect(link.socket(), mine, transport::deadline_after(5s));
    ASSERT_TRUE(c) << c.message();
  }
  EXPECT_EQ(a.exec("ping -c 2 -i 0.2 -W 2 10.209.0.2"), 0);
  EXPECT_NE(link.status().find("\"b\":{\"present\":true,\"live\":true"), std::string::npos) << link.status();
}

// A connection to the control socket that says nothing (not even the handshake's hello).
int silent_control_client(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Control clients that connect and say nothing hold up neither the other control clients nor
// the link: each is set up on a door thread of its own (it held the daemon's event loop for 2 s
// each, so four of them made a status request wait 8 s and fail). At most 8 set up at once; one
// more is refused at once, saying why; once they time out the socket serves again.
TEST(Crossover, SilentControlClientsHoldUpNothing) {
  REQUIRE_ROOT();
  Netns a("a"), b("b");
  Link link(a, b, "10.211.0");
  ASSERT_TRUE(link.up()) << link.status();
  std::vector<int> silent;
  for (int i = 0; i < 4; ++i) silent.push_back(silent_control_client(link.socket()));
  for (int fd : silent) ASSERT_GE(fd, 0);
  const auto start = std::chrono::steady_clock::now();
  const std::string status = link.status();
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_NE(status.find("\"b\":{\"present\":true,\"live\":true"), std::string::npos) << status;
  EXPECT_LT(took, 1500ms) << "a status request beside 4 silent clients took "
                          << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms";
  EXPECT_EQ(a.exec("ping -c 2 -i 0.2 -W 2 10.211.0.2"), 0);

  for (int i = 0; i < 4; ++i) silent.push_back(silent_control_client(link.socket()));
  std::this_thread::sleep_for(200ms);  // all eight accepted
  namespace transport = bypass::transport;
  auto refused = transport::connect(link.socket(), transport::Hello{kControlVersion, kControlSchema, "ninth"},
                                    transport::deadline_after(5s));
  ASSERT_FALSE(refused);
  EXPECT_NE(std::string(refused.message()).find("too many control clients"), std::string::npos) << refused.message();
  for (int fd : silent) ::close(fd);
  std::this_thread::sleep_for(2500ms);  // the doors' handshake deadline
  EXPECT_NE(link.status().find("\"a\":{\"present\":true,\"live\":true"), std::string::npos);
}

TEST(Crossover, CommandLineCreateStatusDestroy) {
  REQUIRE_ROOT();
  Netns a("a"), b("b");
  std::string name = unique_name("cli");
  std::string x = XOVER_PATH;
  ASSERT_EQ(sh(x + " create " + name + " --netns-a " + a.name + " --netns-b " + b.name +
               " --addr-a 10.206.0.1/24 --addr-b 10.206.0.2/24"),
            0);
  EXPECT_EQ(a.exec("ip link show xo0"), 0);
  EXPECT_EQ(a.exec("ping -c 1 -W 2 10.206.0.2"), 0);
  EXPECT_NE(sh_out(x + " status " + name).find("port a"), std::string::npos);
  EXPECT_NE(sh(x + " create " + name + " --netns-a nonexistent-ns --netns-b " + b.name), 0);
  EXPECT_EQ(sh(x + " create " + name + "-cpu --cpu first --netns-a " + a.name + " --netns-b " + b.name), 2);
  ASSERT_EQ(sh(x + " destroy " + name), 0);
  // The endpoints are gone with their TAP devices.
  bool gone = false;
  for (int i = 0; i < 200 && !gone; ++i) {
    gone = a.exec("ip link show xo0") != 0;
    if (!gone) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(gone);
  EXPECT_NE(sh(x + " status " + name), 0);
}
