#include "bypass/transport/session.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <thread>

#include "bypass/base/unix_socket.h"

#include "bypass/base/text.h"
#include "channel_impl.h"
#include "futex.h"
#include "handshake.h"
#include "region.h"
#include "socket_io.h"
#include "socket_link.h"

namespace bypass::transport {

using base::str_printf;
using detail::HelloPacket;
using detail::Packet;
using detail::PacketHeader;
using detail::PacketType;
using detail::RejectPacket;

namespace {

PacketHeader header_of(PacketType type) { return {detail::kPacketMagic, static_cast<uint16_t>(type), 0}; }

HelloPacket make_hello(PacketType type, const Hello& hello, uint32_t flags) {
  HelloPacket p{};
  p.flags = flags;
  p.header = header_of(type);
  p.transport_version = kTransportVersion;
  p.protocol_version = hello.protocol_version;
  p.schema_hash = hello.schema_hash;
  const std::string name = base::printable(hello.peer_name, kMaxNameBytes);
  p.name_bytes = static_cast<uint32_t>(name.size());
  std::memcpy(p.name, name.data(), name.size());
  return p;
}

// Which packet a received one is, if it is well formed: right magic, known type, exact size.
bool packet_is(const Packet& packet, PacketType type, size_t size) {
  PacketHeader h;
  if (packet.size != size || packet.size < sizeof h) return false;
  std::memcpy(&h, packet.bytes, sizeof h);
  return h.magic == detail::kPacketMagic && h.type == static_cast<uint16_t>(type);
}

std::string describe_packet(const Packet& packet) {
  PacketHeader h{};
  std::memcpy(&h, packet.bytes, std::min(sizeof h, packet.size));
  return str_printf("%zu bytes, magic 0x%08x, type %u, %zu fds", packet.size, h.magic, h.type, packet.fds.size());
}

bool parse_hello(const Packet& packet, PacketType type, Hello* out, uint32_t* transport_version, uint32_t* flags) {
  if (!packet_is(packet, type, sizeof(HelloPacket))) return false;
  HelloPacket p;
  std::memcpy(&p, packet.bytes, sizeof p);
  if (p.name_bytes > kMaxNameBytes) return false;
  out->protocol_version = p.protocol_version;
  out->schema_hash = p.schema_hash;
  out->peer_name = base::printable(std::string_view(p.name, p.name_bytes), kMaxNameBytes);
  *transport_version = p.transport_version;
  *flags = p.flags;
  return true;
}

bool parse_reject(const Packet& packet, std::string* text) {
  if (!packet_is(packet, PacketType::kReject, sizeof(RejectPacket))) return false;
  RejectPacket p;
  std::memcpy(&p, packet.bytes, sizeof p);
  if (p.text_bytes > detail::kMaxRejectText) return false;
  *text = base::printable(std::string_view(p.text, p.text_bytes), detail::kMaxRejectText);
  return true;
}

// Best effort: the peer may already be gone or may be garbage; the local error is what counts.
void send_reject(int socket, const std::string& text) {
  RejectPacket p{};
  p.header = header_of(PacketType::kReject);
  const std::string line = base::printable(text, detail::kMaxRejectText);
  p.text_bytes = static_cast<uint32_t>(line.size());
  std::memcpy(p.text, line.data(), line.size());
  if (auto sent = detail::send_packet(socket, &p, sizeof p, {}, deadline_after(std::chrono::milliseconds(100)));
      !sent) {
    // Nothing to do about it: the caller's own error says why the session ended.
  }
}

// Refuses the handshake: the peer gets `error`'s message as the Reject text, and it is our error.
Error refuse(int socket, Error error) {
  send_reject(socket, error.message);
  return error;
}

// An error's message without the code name in front, to be put under another prefix.
std::string detail_of(const Error& error) {
  const std::string_view name = to_string(error.code);
  std::string_view text = error.message;
  if (text.starts_with(name) && text.substr(name.size()).starts_with(": ")) text.remove_prefix(name.size() + 2);
  return std::string(text);
}

// A packet that could not be sent or received during the handshake, under its own code.
Error handshake_failed(const Error& error) { return make_error(error.code, "handshake failed: " + detail_of(error)); }

// SO_PEERCRED as the channel reports it: pid, uid and gid -1 when the kernel would not say.
ucred peer_credentials(int socket) {
  auto cred = base::peer_credentials(socket);
  if (!cred) return {-1, static_cast<uid_t>(-1), static_cast<gid_t>(-1)};
  return {cred->pid, cred->uid, cred->gid};
}

// "unix:/path", "/path", "unix:@name" (abstract): the address, its path empty for abstract
// sockets.
Result<base::UnixAddress> parse_endpoint(const std::string& endpoint) {
  std::string_view rest = endpoint;
  if (rest.starts_with("unix:")) {
    rest.remove_prefix(5);
  } else if (const size_t colon = rest.find(':'); colon != std::string::npos && rest.find('/') > colon) {
    return make_error(Status::kInvalidArgument, str_printf("unsupported endpoint '%s' (only unix:PATH is implemented)",
                                                           base::printable(endpoint, 200).c_str()));
  }
  auto address = base::unix_address(rest);
  if (!address) return base::rebrand(Status::kInvalidArgument, address.error());
  return std::move(address).value();
}

}  // namespace

Error detail::refused(const std::string& text) {
  if (text.starts_with(to_string(Status::kRefused))) return Error{Status::kRefused, text};
  return make_error(Status::kRefused, text);
}

std::string detail::compare_versions(const Hello& guest, uint32_t guest_transport, const Hello& host,
                                     uint32_t host_transport) {
  const char* what = guest_transport != host_transport                 ? "transport version"
                     : guest.protocol_version != host.protocol_version ? "protocol version"
                     : guest.schema_hash != host.schema_hash           ? "schema hash"
                                                                       : nullptr;
  if (what == nullptr) return {};
  return str_printf("%s mismatch: guest '%s' has protocol %u schema 0x%016" PRIx64
                    " transport %u, host '%s' has protocol %u schema 0x%016" PRIx64 " transport %u",
                    what, guest.peer_name.c_str(), guest.protocol_version, guest.schema_hash, guest_transport,
                    host.peer_name.c_str(), host.protocol_version, host.schema_hash, host_transport);
}

Result<Channel> connect_socket(base::UniqueFd socket, const Hello& mine, Deadline deadline) {
  const int fd = socket.get();
  const bool fences = detail::register_asymmetric_fences();
  const HelloPacket hello = make_hello(PacketType::kHello, mine, fences ? detail::kHelloFlagAsymmetricFences : 0);
  Packet packet;
  if (auto sent = detail::send_packet(fd, &hello, sizeof hello, {}, deadline); !sent) {
    // A server that refused us at once (a limit, its access policy) may have closed before
    // our hello went out; its reason is still queued for us.
    std::string text;
    if (detail::recv_packet(fd, &packet, deadline_after(std::chrono::milliseconds(100))) &&
        parse_reject(packet, &text)) {
      return detail::refused(text);
    }
    return handshake_failed(sent.error());
  }
  if (auto received = detail::recv_packet(fd, &packet, deadline); !received) {
    if (received.code() == Status::kPeerGone) {
      return make_error(Status::kPeerGone, "handshake failed: the host closed the connection");
    }
    return handshake_failed(received.error());
  }
  std::string text;
  if (parse_reject(packet, &text)) return detail::refused(text);
  Hello host;
  uint32_t host_transport = 0, agreed = 0;
  if (!parse_hello(packet, PacketType::kWelcome, &host, &host_transport, &agreed) || packet.fds.size() != 1) {
    return refuse(fd, make_error(Status::kProtocolError, "handshake failed: the host sent a malformed welcome (" +
                                                             describe_packet(packet) + ")"));
  }
  Hello me = mine;
  me.peer_name = base::printable(mine.peer_name, kMaxNameBytes);
  if (text = detail::compare_versions(me, kTransportVersion, host, host_transport); !text.empty()) {
    return refuse(fd, detail::refused(text));
  }
  auto region = detail::open_region(packet.fds[0].get());
  if (!region) {
    return refuse(fd, make_error(Status::kRefused, "guest refused the session region: " + region.error().message));
  }
  const detail::ReadyPacket ready{header_of(PacketType::kReady)};
  if (auto sent = detail::send_packet(fd, &ready, sizeof ready, {}, deadline); !sent) {
    return handshake_failed(sent.error());
  }
  const ucred cred = peer_credentials(fd);
  const bool asymmetric = fences && (agreed & detail::kHelloFlagAsymmetricFences) != 0;
  return detail::ChannelFactory::make(
      std::make_unique<detail::SocketLink>(std::move(socket), std::move(region->mapping)), region->layout, false,
      asymmetric, cred, std::move(host));
}

Result<Channel> accept_socket(base::UniqueFd socket, const Hello& mine, const SessionOptions& options,
                              Deadline deadline) {
  const int fd = socket.get();
  const ucred cred = peer_credentials(fd);
  const std::string who = str_printf("guest pid %d uid %d", static_cast<int>(cred.pid), static_cast<int>(cred.uid));
  // The error a host logs names the guest; the Reject the guest gets does not.
  auto guest_error = [&](const Error& error) { return make_error(error.code, who + ": " + detail_of(error)); };
  Packet packet;
  if (auto received = detail::recv_packet(fd, &packet, deadline); !received) {
    if (received.code() == Status::kProtocolError) send_reject(fd, "handshake refused: " + received.error().message);
    return guest_error(handshake_failed(received.error()));
  }
  Hello guest;
  uint32_t guest_transport = 0, offered = 0;
  if (!parse_hello(packet, PacketType::kHello, &guest, &guest_transport, &offered) || !packet.fds.empty()) {
    return guest_error(refuse(fd, make_error(Status::kRefused, "malformed hello (" + describe_packet(packet) + ")")));
  }
  Hello me = mine;
  me.peer_name = base::printable(mine.peer_name, kMaxNameBytes);
  if (std::string text = detail::compare_versions(guest, guest_transport, me, kTransportVersion); !text.empty()) {
    return guest_error(refuse(fd, detail::refused(text)));
  }
  auto plan = detail::plan_region(options);
  auto region = plan ? detail::create_region(*plan) : Result<detail::CreatedRegion>(plan.error());
  if (!region) {
    return guest_error(
        refuse(fd, make_error(Status::kRefused, "host cannot create the session region: " + region.error().message)));
  }
  // Asymmetric fences only if both processes registered for membarrier.
  const bool asymmetric = (offered & detail::kHelloFlagAsymmetricFences) != 0 && detail::register_asymmetric_fences();
  const HelloPacket welcome =
      make_hello(PacketType::kWelcome, mine, asymmetric ? detail::kHelloFlagAsymmetricFences : 0);
  const int fds[] = {region->memfd.get()};
  if (auto sent = detail::send_packet(fd, &welcome, sizeof welcome, fds, deadline); !sent) {
    return guest_error(handshake_failed(sent.error()));
  }
  region->memfd.reset();  // the guest has its own reference now; our mapping keeps the memory alive
  if (auto received = detail::recv_packet(fd, &packet, deadline); !received) {
    return guest_error(handshake_failed(received.error()));
  }
  std::string text;
  if (parse_reject(packet, &text)) return guest_error(detail::refused(text));
  if (!packet_is(packet, PacketType::kReady, sizeof(detail::ReadyPacket)) || !packet.fds.empty()) {
    return guest_error(refuse(fd, make_error(Status::kRefused, "malformed ready (" + describe_packet(packet) + ")")));
  }
  return detail::ChannelFactory::make(
      std::make_unique<detail::SocketLink>(std::move(socket), std::move(region->mapping)), *plan, true, asymmetric,
      cred, std::move(guest));
}

void reject_connection(base::UniqueFd socket, const std::string& text) {
  // Read what the guest already sent (its hello): closing with it unread would reset the
  // connection, and the guest could see that instead of our reason.
  std::byte discard[512];
  while (::recv(socket.get(), discard, sizeof discard, MSG_DONTWAIT) > 0) {
  }
  send_reject(socket.get(), text);
}

Result<ChannelPair> make_channel_pair(const SessionOptions& options) {
  auto pair = base::socket_pair(SOCK_SEQPACKET | SOCK_NONBLOCK);
  if (!pair) return base::rebrand(Status::kIo, pair.error());
  base::UniqueFd guest_end = std::move(pair->first), host_end = std::move(pair->second);
  const Deadline deadline = deadline_after(std::chrono::seconds(10));
  std::optional<Result<Channel>> guest;
  std::thread guest_thread([&] {
    guest.emplace(connect_socket(std::move(guest_end), Hello{0, 0, "pair-guest"}, deadline));
  });
  Result<Channel> host = accept_socket(std::move(host_end), Hello{0, 0, "pair-host"}, options, deadline);
  guest_thread.join();
  if (!host) return host.error();
  if (!*guest) return guest->error();
  return ChannelPair{std::move(*guest).value(), std::move(host).value()};
}

Result<Channel> connect(const std::string& endpoint, const Hello& mine, Deadline deadline) {
  auto address = parse_endpoint(endpoint);
  if (!address) return address.error();
  auto socket = base::unix_socket(SOCK_SEQPACKET | SOCK_NONBLOCK);
  if (!socket) return make_error(Status::kIo, "cannot create a socket: " + socket.error().message);
  base::UniqueFd fd = std::move(socket).value();
  for (;;) {
    if (::connect(fd.get(), address->sockaddr_ptr(), address->length) == 0) break;
    if (errno == EINTR) continue;
    // A full backlog: the server is alive but busy accepting. Retry until the deadline.
    if (errno == EAGAIN && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    return make_error(errno == EAGAIN ? Status::kTimeout : Status::kIo,
                      str_printf("no bypass server at %s (connect: %s)", base::printable(endpoint, 200).c_str(),
                                 errno == EAGAIN ? "server busy, timed out" : std::strerror(errno)));
  }
  return connect_socket(std::move(fd), mine, deadline);
}

// ---------------------------------------------------------------------------------------------
// Listener

namespace {
// A descriptor held in reserve so that a listener out of descriptors can still take the waiting
// connection off its queue and refuse it (accept_connection).
base::UniqueFd reserve_fd() { return base::UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC)); }
}  // namespace

Listener::Listener(base::UniqueFd fd, std::string path, dev_t dev, ino_t ino)
    : fd_(std::move(fd)), reserve_(reserve_fd()), path_(std::move(path)), dev_(dev), ino_(ino) {}

Listener::Listener(Listener&& other) noexcept
    : fd_(std::move(other.fd_)),
      reserve_(std::move(other.reserve_)),
      path_(std::move(other.path_)),
      dev_(other.dev_),
      ino_(other.ino_) {
  other.path_.clear();
}

Listener& Listener::operator=(Listener&& other) noexcept {
  if (this != &other) {
    remove_socket_file();
    fd_ = std::move(other.fd_);
    reserve_ = std::move(other.reserve_);
    path_ = std::move(other.path_);
    dev_ = other.dev_;
    ino_ = other.ino_;
    other.path_.clear();
  }
  return *this;
}

Listener::~Listener() { remove_socket_file(); }

void Listener::remove_socket_file() {
  // Only if it is still the file we created, not a successor server's.
  struct stat st {};
  if (fd_ && !path_.empty() && ::lstat(path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == dev_ &&
      st.st_ino == ino_) {
    ::unlink(path_.c_str());
  }
  path_.clear();
}

int Listener::fd() const { return fd_.get(); }
const std::string& Listener::path() const { return path_; }

Result<Listener> Listener::listen(const std::string& endpoint) {
  auto address = parse_endpoint(endpoint);
  if (!address) return address.error();
  const std::string& path = address->path;
  if (!path.empty()) {
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    std::error_code ec;
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (ec) return make_error(Status::kIo, str_printf("cannot create %s: %s", parent.c_str(), ec.message().c_str()));
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        return make_error(Status::kInvalidArgument,
                          str_printf("%s exists and is not a socket; not replacing it", path.c_str()));
      }
      // A socket file: live if someone accepts on it, stale otherwise.
      auto probe = base::unix_socket(SOCK_SEQPACKET | SOCK_NONBLOCK);
      if (probe && ::connect(probe->get(), address->sockaddr_ptr(), address->length) == 0) {
        return make_error(Status::kInvalidArgument,
                          str_printf("another server is already listening on %s", path.c_str()));
      }
      ::unlink(path.c_str());
    }
  }
  auto socket = base::unix_socket(SOCK_SEQPACKET | SOCK_NONBLOCK);
  if (!socket) return make_error(Status::kIo, "cannot create a socket: " + socket.error().message);
  base::UniqueFd fd = std::move(socket).value();
  if (::bind(fd.get(), address->sockaddr_ptr(), address->length) != 0) {
    return make_error(Status::kIo,
                      str_printf("cannot bind %s: %s", base::printable(endpoint, 200).c_str(), std::strerror(errno)));
  }
  if (::listen(fd.get(), 128) != 0) {
    return make_error(Status::kIo, str_printf("cannot listen on %s: %s", base::printable(endpoint, 200).c_str(),
                                              std::strerror(errno)));
  }
  struct stat st {};
  if (!path.empty() && ::lstat(path.c_str(), &st) != 0) st = {};
  return Listener(std::move(fd), path, st.st_dev, st.st_ino);
}

Result<base::UniqueFd> Listener::accept_connection(Deadline deadline) {
  if (!fd_) return make_error(Status::kClosed, "listener is closed");
  for (;;) {
    base::UniqueFd conn(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (conn) return conn;
    if ((errno == EMFILE || errno == ENFILE) && reserve_) {
      // Out of descriptors: the connection would stay queued and the listener readable, and a
      // server's poll loop would spin on it. Take it with the reserve and refuse it.
      // (accept4 fails so whether or not anyone waits: it takes the descriptor first.)
      const int why = errno;
      reserve_.reset();
      base::UniqueFd shed(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      const int shed_errno = errno;
      const bool refused = shed.valid();
      if (refused) reject_connection(std::move(shed), "the server has run out of file descriptors; try again later");
      reserve_ = reserve_fd();
      if (refused)
        return make_error(Status::kIo,
                          str_printf("accept failed: %s; a waiting guest was refused", std::strerror(why)));
      errno = shed_errno;  // nobody waits (EAGAIN): wait below as usual
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
      return make_error(Status::kIo, str_printf("accept failed: %s", std::strerror(errno)));
    }
    if (Clock::now() >= deadline) return make_error(Status::kTimeout, "no guest connected before the deadline");
    pollfd p{fd_.get(), POLLIN, 0};
    (void)::poll(&p, 1, detail::poll_timeout_ms(deadline));
  }
}

Result<Channel> Listener::accept(const Hello& mine, const SessionOptions& options, Deadline deadline) {
  auto conn = accept_connection(deadline);
  if (!conn) return conn.error();
  return accept_socket(std::move(conn).value(), mine, options, deadline);
}

}  // namespace bypass::transport
