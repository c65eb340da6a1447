#include "bypass/transport/session.h"

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
#include <thread>

#include "bypass/base/unix_socket.h"

#include "channel_impl.h"
#include "futex.h"
#include "handshake.h"
#include "region.h"
#include "socket_io.h"
#include "socket_link.h"
#include "bypass/base/text.h"

namespace bypass::transport {

using detail::HelloPacket;
using detail::Packet;
using detail::PacketHeader;
using detail::PacketType;
using detail::RejectPacket;
using base::str_printf;

namespace {

void set_error(std::string* error, std::string text) {
  if (error != nullptr) *error = std::move(text);
}

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
  std::string ignored;
  (void)detail::send_packet(socket, &p, sizeof p, {}, deadline_after(std::chrono::milliseconds(100)), &ignored);
}

// SO_PEERCRED as the channel reports it: pid, uid and gid -1 when the kernel would not say.
ucred peer_credentials(int socket) {
  auto cred = base::peer_credentials(socket);
  if (!cred) return {-1, static_cast<uid_t>(-1), static_cast<gid_t>(-1)};
  return {cred->pid, cred->uid, cred->gid};
}

// "unix:/path", "/path", "unix:@name" (abstract): the address, its path empty for abstract
// sockets.
std::optional<base::UnixAddress> parse_endpoint(const std::string& endpoint, std::string* error) {
  std::string_view rest = endpoint;
  if (rest.starts_with("unix:")) {
    rest.remove_prefix(5);
  } else if (const size_t colon = rest.find(':'); colon != std::string::npos && rest.find('/') > colon) {
    set_error(error, str_printf("unsupported endpoint '%s' (only unix:PATH is implemented)",
                                base::printable(endpoint, 200).c_str()));
    return std::nullopt;
  }
  auto address = base::unix_address(rest);
  if (!address) {
    set_error(error, address.error().message);
    return std::nullopt;
  }
  return std::move(address).value();
}

}  // namespace

std::string detail::compare_versions(const Hello& guest, uint32_t guest_transport, const Hello& host,
                                     uint32_t host_transport) {
  const char* what = guest_transport != host_transport                 ? "transport version"
                     : guest.protocol_version != host.protocol_version ? "protocol version"
                     : guest.schema_hash != host.schema_hash           ? "schema hash"
                                                                       : nullptr;
  if (what == nullptr) return {};
  return str_printf("handshake refused: %s mismatch: guest '%s' has protocol %u schema 0x%016" PRIx64
                    " transport %u, host '%s' has protocol %u schema 0x%016" PRIx64 " transport %u",
                    what, guest.peer_name.c_str(), guest.protocol_version, guest.schema_hash, guest_transport,
                    host.peer_name.c_str(), host.protocol_version, host.schema_hash, host_transport);
}

std::optional<Channel> connect_socket(base::UniqueFd socket, const Hello& mine, std::string* error, Deadline deadline) {
  const int fd = socket.get();
  std::string why;
  const bool fences = detail::register_asymmetric_fences();
  const HelloPacket hello = make_hello(PacketType::kHello, mine, fences ? detail::kHelloFlagAsymmetricFences : 0);
  Packet packet;
  if (detail::send_packet(fd, &hello, sizeof hello, {}, deadline, &why) != Status::kOk) {
    // A server that refused us at once (a limit, its access policy) may have closed before
    // our hello went out; its reason is still queued for us.
    std::string text;
    if (detail::recv_packet(fd, &packet, deadline_after(std::chrono::milliseconds(100)), &text) == Status::kOk &&
        parse_reject(packet, &text)) {
      set_error(error, text);
    } else {
      set_error(error, "handshake failed: " + why);
    }
    return std::nullopt;
  }
  const Status st = detail::recv_packet(fd, &packet, deadline, &why);
  if (st != Status::kOk) {
    set_error(error, st == Status::kPeerGone ? "handshake failed: the host closed the connection"
                                             : "handshake failed: " + why);
    return std::nullopt;
  }
  std::string text;
  if (parse_reject(packet, &text)) {
    set_error(error, text);
    return std::nullopt;
  }
  Hello host;
  uint32_t host_transport = 0, agreed = 0;
  if (!parse_hello(packet, PacketType::kWelcome, &host, &host_transport, &agreed) || packet.fds.size() != 1) {
    text = "handshake failed: the host sent a malformed welcome (" + describe_packet(packet) + ")";
    send_reject(fd, text);
    set_error(error, text);
    return std::nullopt;
  }
  Hello me = mine;
  me.peer_name = base::printable(mine.peer_name, kMaxNameBytes);
  if (text = detail::compare_versions(me, kTransportVersion, host, host_transport); !text.empty()) {
    send_reject(fd, text);
    set_error(error, text);
    return std::nullopt;
  }
  base::Mapping mapping;
  detail::RegionLayout region;
  if (!detail::open_region(packet.fds[0].get(), &mapping, &region, &why)) {
    text = "handshake failed: guest refused the session region: " + why;
    send_reject(fd, text);
    set_error(error, text);
    return std::nullopt;
  }
  const detail::ReadyPacket ready{header_of(PacketType::kReady)};
  if (detail::send_packet(fd, &ready, sizeof ready, {}, deadline, &why) != Status::kOk) {
    set_error(error, "handshake failed: " + why);
    return std::nullopt;
  }
  const ucred cred = peer_credentials(fd);
  const bool asymmetric = fences && (agreed & detail::kHelloFlagAsymmetricFences) != 0;
  return detail::ChannelFactory::make(std::make_unique<detail::SocketLink>(std::move(socket), std::move(mapping)),
                                      region, false, asymmetric, cred, std::move(host));
}

std::optional<Channel> accept_socket(base::UniqueFd socket, const Hello& mine, const SessionOptions& options,
                                     std::string* error, Deadline deadline) {
  const int fd = socket.get();
  const ucred cred = peer_credentials(fd);
  const std::string who = str_printf("guest pid %d uid %d", static_cast<int>(cred.pid), static_cast<int>(cred.uid));
  std::string why;
  Packet packet;
  if (const Status st = detail::recv_packet(fd, &packet, deadline, &why); st != Status::kOk) {
    if (st == Status::kProtocolError) send_reject(fd, "handshake refused: " + why);
    set_error(error, who + ": handshake failed: " + why);
    return std::nullopt;
  }
  Hello guest;
  uint32_t guest_transport = 0, offered = 0;
  if (!parse_hello(packet, PacketType::kHello, &guest, &guest_transport, &offered) || !packet.fds.empty()) {
    const std::string text = "handshake refused: malformed hello (" + describe_packet(packet) + ")";
    send_reject(fd, text);
    set_error(error, who + ": " + text);
    return std::nullopt;
  }
  Hello me = mine;
  me.peer_name = base::printable(mine.peer_name, kMaxNameBytes);
  if (std::string text = detail::compare_versions(guest, guest_transport, me, kTransportVersion); !text.empty()) {
    send_reject(fd, text);
    set_error(error, who + ": " + text);
    return std::nullopt;
  }
  detail::RegionLayout region;
  base::UniqueFd memfd;
  base::Mapping mapping;
  if (!detail::plan_region(options, &region, &why) || !detail::create_region(region, &memfd, &mapping, &why)) {
    const std::string text = "handshake refused: host cannot create the session region: " + why;
    send_reject(fd, text);
    set_error(error, who + ": " + text);
    return std::nullopt;
  }
  // Asymmetric fences only if both processes registered for membarrier.
  const bool asymmetric = (offered & detail::kHelloFlagAsymmetricFences) != 0 && detail::register_asymmetric_fences();
  const HelloPacket welcome =
      make_hello(PacketType::kWelcome, mine, asymmetric ? detail::kHelloFlagAsymmetricFences : 0);
  const int fds[] = {memfd.get()};
  if (detail::send_packet(fd, &welcome, sizeof welcome, fds, deadline, &why) != Status::kOk) {
    set_error(error, who + ": handshake failed: " + why);
    return std::nullopt;
  }
  memfd.reset();  // the guest has its own reference now; our mapping keeps the memory alive
  if (const Status st = detail::recv_packet(fd, &packet, deadline, &why); st != Status::kOk) {
    set_error(error, who + ": handshake failed: " + why);
    return std::nullopt;
  }
  std::string text;
  if (parse_reject(packet, &text)) {
    set_error(error, who + ": " + text);
    return std::nullopt;
  }
  if (!packet_is(packet, PacketType::kReady, sizeof(detail::ReadyPacket)) || !packet.fds.empty()) {
    text = "handshake refused: malformed ready (" + describe_packet(packet) + ")";
    send_reject(fd, text);
    set_error(error, who + ": " + text);
    return std::nullopt;
  }
  return detail::ChannelFactory::make(std::make_unique<detail::SocketLink>(std::move(socket), std::move(mapping)),
                                      region, true, asymmetric, cred, std::move(guest));
}

void reject_connection(base::UniqueFd socket, const std::string& text) {
  // Read what the guest already sent (its hello): closing with it unread would reset the
  // connection, and the guest could see that instead of our reason.
  std::byte discard[512];
  while (::recv(socket.get(), discard, sizeof discard, MSG_DONTWAIT) > 0) {
  }
  send_reject(socket.get(), text);
}

ucred peer_credentials_of(int socket) { return peer_credentials(socket); }

std::optional<ChannelPair> make_channel_pair(const SessionOptions& options, std::string* error) {
  auto pair = base::socket_pair(SOCK_SEQPACKET | SOCK_NONBLOCK);
  if (!pair) {
    set_error(error, pair.error().message);
    return std::nullopt;
  }
  base::UniqueFd guest_end = std::move(pair->first), host_end = std::move(pair->second);
  const Deadline deadline = deadline_after(std::chrono::seconds(10));
  std::optional<Channel> guest;
  std::string guest_error;
  std::thread guest_thread([&] {
    guest = connect_socket(std::move(guest_end), Hello{0, 0, "pair-guest"}, &guest_error, deadline);
  });
  std::optional<Channel> host = accept_socket(std::move(host_end), Hello{0, 0, "pair-host"}, options, error, deadline);
  guest_thread.join();
  if (!guest || !host) {
    if (host) set_error(error, guest_error);
    return std::nullopt;
  }
  return ChannelPair{std::move(*guest), std::move(*host)};
}

std::optional<Channel> connect(const std::string& endpoint, const Hello& mine, std::string* error, Deadline deadline) {
  const std::optional<base::UnixAddress> address = parse_endpoint(endpoint, error);
  if (!address) return std::nullopt;
  auto socket = base::unix_socket(SOCK_SEQPACKET | SOCK_NONBLOCK);
  if (!socket) {
    set_error(error, "cannot create a socket: " + socket.error().message);
    return std::nullopt;
  }
  base::UniqueFd fd = std::move(socket).value();
  for (;;) {
    if (::connect(fd.get(), address->sockaddr_ptr(), address->length) == 0) break;
    if (errno == EINTR) continue;
    // A full backlog: the server is alive but busy accepting. Retry until the deadline.
    if (errno == EAGAIN && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    set_error(error, str_printf("no bypass server at %s (connect: %s)", base::printable(endpoint, 200).c_str(),
                                errno == EAGAIN ? "server busy, timed out" : std::strerror(errno)));
    return std::nullopt;
  }
  return connect_socket(std::move(fd), mine, error, deadline);
}

// ---------------------------------------------------------------------------------------------
// Listener

Listener::Listener(base::UniqueFd fd, std::string path, dev_t dev, ino_t ino)
    : fd_(std::move(fd)), path_(std::move(path)), dev_(dev), ino_(ino) {}

Listener::Listener(Listener&& other) noexcept
    : fd_(std::move(other.fd_)), path_(std::move(other.path_)), dev_(other.dev_), ino_(other.ino_) {
  other.path_.clear();
}

Listener& Listener::operator=(Listener&& other) noexcept {
  if (this != &other) {
    remove_socket_file();
    fd_ = std::move(other.fd_);
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

std::optional<Listener> Listener::listen(const std::string& endpoint, std::string* error) {
  const std::optional<base::UnixAddress> address = parse_endpoint(endpoint, error);
  if (!address) return std::nullopt;
  const std::string& path = address->path;
  if (!path.empty()) {
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    std::error_code ec;
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (ec) {
      set_error(error, str_printf("cannot create %s: %s", parent.c_str(), ec.message().c_str()));
      return std::nullopt;
    }
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        set_error(error, str_printf("%s exists and is not a socket; not replacing it", path.c_str()));
        return std::nullopt;
      }
      // A socket file: live if someone accepts on it, stale otherwise.
      auto probe = base::unix_socket(SOCK_SEQPACKET | SOCK_NONBLOCK);
      if (probe && ::connect(probe->get(), address->sockaddr_ptr(), address->length) == 0) {
        set_error(error, str_printf("another server is already listening on %s", path.c_str()));
        return std::nullopt;
      }
      ::unlink(path.c_str());
    }
  }
  auto socket = base::unix_socket(SOCK_SEQPACKET | SOCK_NONBLOCK);
  if (!socket) {
    set_error(error, "cannot create a socket: " + socket.error().message);
    return std::nullopt;
  }
  base::UniqueFd fd = std::move(socket).value();
  if (::bind(fd.get(), address->sockaddr_ptr(), address->length) != 0) {
    set_error(error, str_printf("cannot bind %s: %s", base::printable(endpoint, 200).c_str(), std::strerror(errno)));
    return std::nullopt;
  }
  if (::listen(fd.get(), 128) != 0) {
    set_error(error,
              str_printf("cannot listen on %s: %s", base::printable(endpoint, 200).c_str(), std::strerror(errno)));
    return std::nullopt;
  }
  struct stat st {};
  if (!path.empty() && ::lstat(path.c_str(), &st) != 0) st = {};
  return Listener(std::move(fd), path, st.st_dev, st.st_ino);
}

base::UniqueFd Listener::accept_connection(std::string* error, Deadline deadline) {
  if (!fd_) {
    set_error(error, "listener is closed");
    return base::UniqueFd();
  }
  for (;;) {
    base::UniqueFd conn(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (conn) return conn;
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
      set_error(error, str_printf("accept failed: %s", std::strerror(errno)));
      return base::UniqueFd();
    }
    if (Clock::now() >= deadline) {
      set_error(error, "no guest connected before the deadline");
      return base::UniqueFd();
    }
    pollfd p{fd_.get(), POLLIN, 0};
    (void)::poll(&p, 1, detail::poll_timeout_ms(deadline));
  }
}

std::optional<Channel> Listener::accept(const Hello& mine, const SessionOptions& options, std::string* error,
                                        Deadline deadline) {
  base::UniqueFd conn = accept_connection(error, deadline);
  if (!conn) return std::nullopt;
  return accept_socket(std::move(conn), mine, options, error, deadline);
}

}  // namespace bypass::transport
