// Session set-up over real UNIX sockets: listener, handshake, version checks, and peers that
// are absent, silent, or send garbage. Every failure must be a clear error, never a hang.
#include "bypass/transport/session.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "bypass/base/unix_socket.h"
#include "socket_io.h"  // internal: lets the tests speak raw packets
#include "test_util.h"

namespace bypass::transport {
namespace {

using namespace std::chrono_literals;

// A fresh directory per test for socket files.
class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/bypass-session-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string socket_path(const char* name = "bypass.sock") const { return dir_ + "/" + name; }

  std::string dir_;
};

const Hello kHost{4, 0x1234, "test-host"};
const Hello kGuest{4, 0x1234, "test-guest"};

// The error of a call that must fail (and a test failure if it succeeded).
template <class T>
std::string failure_of(Result<T> result) {
  EXPECT_FALSE(result) << "succeeded unexpectedly";
  return result ? std::string() : result.error().message;
}

struct Outcome {
  std::optional<Channel> channel;
  std::string error;
  void set(Result<Channel> result) {
    if (result) {
      channel.emplace(std::move(result).value());
    } else {
      error = result.error().message;
    }
  }
};

// Runs the guest side on a thread, the host side here.
void connect_and_accept(const std::string& endpoint, Listener& listener, const Hello& guest_hello,
                        const Hello& host_hello, Outcome* guest, Outcome* host, Deadline deadline) {
  std::thread t([&] { guest->set(connect(endpoint, guest_hello, deadline)); });
  host->set(listener.accept(host_hello, SessionOptions{4096}, deadline));
  t.join();
}

// A raw SOCK_SEQPACKET client connected to `path`.
base::UniqueFd raw_connect(const std::string& path) {
  auto fd = base::connect_unix(path, SOCK_SEQPACKET);
  EXPECT_TRUE(fd.ok()) << fd.message();
  return fd ? std::move(fd).value() : base::UniqueFd();
}

// Reads one packet (with timeout) and returns its text if it is a Reject.
std::string read_reject(int fd) {
  detail::Packet packet;
  if (auto received = detail::recv_packet(fd, &packet, deadline_after(2s)); !received) {
    return "<no packet: " + received.error().message + ">";
  }
  detail::RejectPacket reject;
  if (packet.size != sizeof reject) return "<not a reject>";
  std::memcpy(&reject, packet.bytes, sizeof reject);
  return std::string(reject.text, std::min<size_t>(reject.text_bytes, sizeof reject.text));
}

TEST_F(SessionTest, GuestAndHostConnect) {
  auto listener = Listener::listen("unix:" + socket_path());
  ASSERT_TRUE(listener) << listener.message();
  Outcome guest, host;
  connect_and_accept("unix:" + socket_path(), *listener, kGuest, kHost, &guest, &host, deadline_after(5s));
  ASSERT_TRUE(guest.channel) << guest.error;
  ASSERT_TRUE(host.channel) << host.error;
  EXPECT_EQ(host.channel->peer_hello().peer_name, "test-guest");
  EXPECT_EQ(host.channel->peer_hello().protocol_version, 4u);
  EXPECT_EQ(guest.channel->peer_hello().peer_name, "test-host");
  EXPECT_EQ(host.channel->peer_pid(), getpid());
  EXPECT_EQ(host.channel->peer_uid(), getuid());
  EXPECT_EQ(guest.channel->peer_gid(), getgid());
  EXPECT_EQ(guest.channel->tx_capacity(), 4096u);

  // Larger than the ring: needs the reader running at the same time.
  std::thread sender(
      [&] { EXPECT_EQ(guest.channel->send(1, testing::bytes_of(testing::pattern(5000, 1))), Status::kOk); });
  Message m;
  ASSERT_EQ(host.channel->recv(m, deadline_after(5s)), Status::kOk);
  EXPECT_EQ(m.payload, testing::pattern(5000, 1));
  sender.join();
}

TEST_F(SessionTest, HandshakeCanRunOffTheAcceptThread) {
  auto listener = Listener::listen(socket_path());
  ASSERT_TRUE(listener) << listener.message();
  Outcome guest;
  std::thread t([&] { guest.set(connect(socket_path(), kGuest, deadline_after(5s))); });
  auto conn = listener->accept_connection(deadline_after(5s));
  ASSERT_TRUE(conn) << conn.message();
  Outcome host;
  std::thread session([&] { host.set(accept_socket(std::move(conn).value(), kHost, {}, deadline_after(5s))); });
  session.join();
  t.join();
  EXPECT_TRUE(host.channel) << host.error;
  EXPECT_TRUE(guest.channel) << guest.error;
}

TEST_F(SessionTest, BarePathAndAbstractEndpointsWork) {
  for (const std::string& endpoint : {socket_path("bare.sock"), "unix:@bypass-test-" + std::to_string(getpid())}) {
    auto listener = Listener::listen(endpoint);
    ASSERT_TRUE(listener) << listener.message();
    Outcome guest, host;
    connect_and_accept(endpoint, *listener, kGuest, kHost, &guest, &host, deadline_after(5s));
    EXPECT_TRUE(guest.channel) << endpoint << ": " << guest.error;
    EXPECT_TRUE(host.channel) << endpoint << ": " << host.error;
  }
}

TEST_F(SessionTest, ProtocolVersionMismatchIsRefusedOnBothSides) {
  auto listener = Listener::listen(socket_path());
  ASSERT_TRUE(listener) << listener.message();
  Outcome guest, host;
  connect_and_accept(socket_path(), *listener, Hello{3, 0x1234, "old-guest"}, kHost, &guest, &host, deadline_after(5s));
  EXPECT_FALSE(guest.channel);
  EXPECT_FALSE(host.channel);
  for (const std::string& e : {guest.error, host.error}) {
    EXPECT_NE(e.find("protocol version mismatch"), std::string::npos) << e;
    EXPECT_NE(e.find("guest 'old-guest' has protocol 3"), std::string::npos) << e;
    EXPECT_NE(e.find("host 'test-host' has protocol 4"), std::string::npos) << e;
  }
}

TEST_F(SessionTest, SchemaHashMismatchIsRefusedOnBothSides) {
  auto listener = Listener::listen(socket_path());
  ASSERT_TRUE(listener) << listener.message();
  Outcome guest, host;
  connect_and_accept(socket_path(), *listener, Hello{4, 0xabcdef, "guest"}, kHost, &guest, &host, deadline_after(5s));
  EXPECT_FALSE(guest.channel);
  EXPECT_FALSE(host.channel);
  for (const std::string& e : {guest.error, host.error}) {
    EXPECT_NE(e.find("schema hash mismatch"), std::string::npos) << e;
    EXPECT_NE(e.find("schema 0x0000000000abcdef"), std::string::npos) << e;
    EXPECT_NE(e.find("schema 0x0000000000001234"), std::string::npos) << e;
  }
}

TEST_F(SessionTest, NoServerIsAClearErrorAndFast) {
  std::string error;
  const auto start = Clock::now();
  auto channel = connect("unix:" + socket_path("missing.sock"), kGuest, deadline_after(5s));
  EXPECT_FALSE(channel);
  EXPECT_LT(Clock::now() - start, 1s);
  error = std::string(channel.message());
  EXPECT_EQ(channel.code(), Status::kIo);
  EXPECT_NE(error.find("no bypass server at unix:" + socket_path("missing.sock")), std::string::npos) << error;
  EXPECT_NE(error.find("No such file or directory"), std::string::npos) << error;

  error = failure_of(connect("grpc:localhost:1234", kGuest, deadline_after(1s)));
  EXPECT_NE(error.find("unsupported endpoint"), std::string::npos) << error;
}

TEST_F(SessionTest, ServerThatNeverAcceptsTimesOut) {
  std::string error;
  auto listener = Listener::listen(socket_path());
  ASSERT_TRUE(listener) << listener.message();
  const auto start = Clock::now();
  error = failure_of(connect(socket_path(), kGuest, deadline_after(200ms)));
  const auto took = Clock::now() - start;
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 2s);
  EXPECT_NE(error.find("timed out"), std::string::npos) << error;
}

TEST_F(SessionTest, SilentGuestTimesOut) {
  std::string error;
  auto listener = Listener::listen(socket_path());
  ASSERT_TRUE(listener) << listener.message();
  base::UniqueFd raw = raw_connect(socket_path());
  const auto start = Clock::now();
  error = failure_of(listener->accept(kHost, {}, deadline_after(200ms)));
  EXPECT_LT(Clock::now() - start, 2s);
  EXPECT_NE(error.find("timed out"), std::string::npos) << error;
  error = failure_of(listener->accept(kHost, {}, deadline_after(50ms)));
  EXPECT_NE(error.find("no guest connected"), std::string::npos) << error;
}

// A server out of file descriptors takes the waiting guest with a descriptor it kept in reserve
// and refuses it, instead of leaving it queued (the listener readable, and a server's poll loop
// spinning on it: vmqd did, at 100% of a CPU). The listener side runs in a child process whose
// descriptor limit is used up.
TEST_F(SessionTest, AServerOutOfDescriptorsRefusesTheWaitingGuest) {
  auto listener = Listener::listen(socket_path());
  ASSERT_TRUE(listener) << listener.message();
  base::UniqueFd raw = raw_connect(socket_path());
  const pid_t child = ::fork();
  if (child == 0) {
    const rlimit few{64, 64};
    if (::setrlimit(RLIMIT_NOFILE, &few) != 0) ::_exit(10);
    while (::dup(0) >= 0) {
    }
    if (errno != EMFILE) ::_exit(11);
    auto first = listener->accept_connection(deadline_after(500ms));
    if (first || first.error().message.find("a waiting guest was refused") == std::string::npos) ::_exit(12);
    // The queue is empty again: nothing to spin on.
    auto second = listener->accept_connection(deadline_after(50ms));
    if (second || second.code() != Status::kTimeout) ::_exit(13);
    ::_exit(0);  // not the listener's destructor: the socket file is the parent's
  }
  const std::string said = read_reject(raw.get());
  EXPECT_NE(said.find("run out of file descriptors"), std::string::npos) << said;
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
}

TEST_F(SessionTest, GarbageFromAGuestIsRefusedWithAReason) {
  std::string error;
  auto listener = Listener::listen(socket_path());
  ASSERT_TRUE(listener) << listener.message();
  const std::vector<std::vector<std::byte>> garbage = {
      testing::pattern(96, 1),    // right size, wrong magic
      testing::pattern(7, 2),     // short
      testing::pattern(4000, 3),  // oversized
  };
  for (const auto& bytes : garbage) {
    base::UniqueFd raw = raw_connect(socket_path());
    ASSERT_EQ(send(raw.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
    error = failure_of(listener->accept(kHost, {}, deadline_after(2s)));
    EXPECT_NE(error.find("guest pid " + std::to_string(getpid())), std::string::npos) << error;
    EXPECT_TRUE(error.find("malformed hello") != std::string::npos || error.find("oversized") != std::string::npos)
        << error;
    const std::string reject = read_reject(raw.get());
    EXPECT_NE(reject.find("handshake refused"), std::string::npos) << reject;
  }
  // The listener still serves a well-behaved guest afterwards.
  Outcome guest, host;
  connect_and_accept(socket_path(), *listener, kGuest, kHost, &guest, &host, deadline_after(5s));
  EXPECT_TRUE(guest.channel) << guest.error;
  EXPECT_TRUE(host.channel) << host.error;
}

TEST_F(SessionTest, FdsAttachedToGarbageAreClosed) {
  std::string error;
  auto listener = Listener::listen(socket_path());
  ASSERT_TRUE(listener) << listener.message();
  base::UniqueFd raw = raw_connect(socket_path());
  int p[2];
  ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
  const std::vector<int> fds(10, p[1]);
  const auto bytes = testing::pattern(96, 1);
  ASSERT_TRUE(detail::send_packet(raw.get(), bytes.data(), bytes.size(), fds, deadline_after(1s)));
  close(p[1]);
  error = failure_of(listener->accept(kHost, {}, deadline_after(2s)));
  // Every copy of the write end was closed by the host: the read end sees EOF.
  char c;
  EXPECT_EQ(read(p[0], &c, 1), 0);
  close(p[0]);
}

// A fake host: accepts on a raw socket and answers the guest's hello with `reply`.
template <typename Reply>
std::string guest_error_against(const std::string& path, Reply&& reply, std::string* host_saw = nullptr) {
  std::string error;
  auto listening = base::listen_unix(path, SOCK_SEQPACKET, 1);
  EXPECT_TRUE(listening.ok()) << listening.message();
  base::UniqueFd server = listening ? std::move(listening).value() : base::UniqueFd();
  std::thread fake([&] {
    base::UniqueFd conn(accept4(server.get(), nullptr, nullptr, SOCK_CLOEXEC));
    detail::Packet hello;
    // Whatever the guest sent: the reply is what is tested.
    if (!detail::recv_packet(conn.get(), &hello, deadline_after(2s))) hello.size = 0;
    reply(conn.get());
    if (host_saw != nullptr) *host_saw = read_reject(conn.get());
  });
  error = failure_of(connect(path, kGuest, deadline_after(2s)));
  fake.join();
  return error;
}

TEST_F(SessionTest, GarbageFromAHostIsRefused) {
  std::string host_saw;
  const std::string error = guest_error_against(
      socket_path(),
      [](int fd) {
        const auto bytes = testing::pattern(96, 9);
        send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      },
      &host_saw);
  EXPECT_NE(error.find("malformed welcome"), std::string::npos) << error;
  EXPECT_NE(host_saw.find("malformed welcome"), std::string::npos) << host_saw;
}

TEST_F(SessionTest, HostClosingDuringHandshakeIsAnError) {
  const std::string error = guest_error_against(socket_path(), [](int) {});
  EXPECT_NE(error.find("host closed the connection"), std::string::npos) << error;
}

// A welcome carrying a region that is not what it claims to be.
detail::HelloPacket welcome_packet() {
  detail::HelloPacket p{};
  p.header = {detail::kPacketMagic, static_cast<uint16_t>(detail::PacketType::kWelcome), 0};
  p.transport_version = kTransportVersion;
  p.protocol_version = kGuest.protocol_version;
  p.schema_hash = kGuest.schema_hash;
  return p;
}

TEST_F(SessionTest, UnsealedOrBogusRegionIsRefusedByTheGuest) {
  struct Case {
    const char* what;
    bool seal;
    size_t size;
    uint32_t magic;
    const char* expect;
  };
  const Case cases[] = {
      {"unsealed", false, 1 << 16, layout::kRegionMagic, "not sealed"},
      {"tiny", true, 100, layout::kRegionMagic, "invalid size"},
      {"bad magic", true, 1 << 16, 0xdeadbeef, "magic 0xdeadbeef"},
      {"rings outside", true, 1 << 16, layout::kRegionMagic, "ring 0 is invalid"},
  };
  for (const Case& c : cases) {
    std::string host_saw;
    const std::string path = socket_path((std::to_string(&c - cases) + ".sock").c_str());
    const std::string error = guest_error_against(
        path,
        [&](int fd) {
          base::UniqueFd memfd(memfd_create("fake", MFD_CLOEXEC | MFD_ALLOW_SEALING));
          ASSERT_EQ(ftruncate(memfd.get(), static_cast<off_t>(c.size)), 0);
          if (c.size >= sizeof(layout::RegionHeader)) {
            layout::RegionHeader h{};
            h.magic = c.magic;
            h.layout_version = layout::kLayoutVersion;
            h.region_size = c.size;
            h.max_message = 1 << 20;
            h.rings[0] = {layout::kControlOffset, layout::kDataOffset, 1 << 20};  // beyond the end
            h.rings[1] = {layout::kControlOffset + 256, layout::kDataOffset, 1024};
            ASSERT_EQ(pwrite(memfd.get(), &h, sizeof h, 0), static_cast<ssize_t>(sizeof h));
          }
          if (c.seal) {
            ASSERT_EQ(fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), 0);
          }
          const detail::HelloPacket p = welcome_packet();
          const int fds[] = {memfd.get()};
          ASSERT_TRUE(detail::send_packet(fd, &p, sizeof p, fds, deadline_after(1s)));
        },
        &host_saw);
    EXPECT_NE(error.find("guest refused the session region"), std::string::npos) << c.what << ": " << error;
    EXPECT_NE(error.find(c.expect), std::string::npos) << c.what << ": " << error;
    EXPECT_EQ(host_saw, error) << c.what;  // the host is told the same reason
  }
}

TEST_F(SessionTest, ListenerReplacesStaleSocketsOnly) {
  std::string error;
  // A non-socket file is never removed.
  { std::ofstream(socket_path("file.sock")) << "precious"; }
  error = failure_of(Listener::listen(socket_path("file.sock")));
  EXPECT_NE(error.find("is not a socket"), std::string::npos) << error;
  EXPECT_TRUE(std::filesystem::exists(socket_path("file.sock")));

  // A live socket is refused; once its server is gone the stale file is replaced.
  auto first = Listener::listen(socket_path());
  ASSERT_TRUE(first) << first.message();
  error = failure_of(Listener::listen(socket_path()));
  EXPECT_NE(error.find("already listening"), std::string::npos) << error;
  {
    // Simulate a crashed server: its socket file stays behind, nobody listens.
    auto stale = base::unix_socket(SOCK_SEQPACKET);
    auto addr = base::unix_address(socket_path("stale.sock"));
    ASSERT_TRUE(stale.ok() && addr.ok());
    ASSERT_EQ(bind(stale->get(), addr->sockaddr_ptr(), addr->length), 0);
  }
  auto second = Listener::listen(socket_path("stale.sock"));
  EXPECT_TRUE(second) << second.message();

  // Parent directories are created; the socket file goes away with the listener.
  const std::string nested = dir_ + "/a/b/c.sock";
  {
    auto third = Listener::listen("unix:" + nested);
    ASSERT_TRUE(third) << third.message();
    EXPECT_TRUE(std::filesystem::exists(nested));
  }
  EXPECT_FALSE(std::filesystem::exists(nested));
}

}  // namespace
}  // namespace bypass::transport
