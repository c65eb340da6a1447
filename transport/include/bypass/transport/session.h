// Session set-up: a UNIX SOCK_SEQPACKET socket, a three-step handshake and the shared region.
//
//   guest -> host   Hello   (transport, protocol version, schema hash, name)
//   host  -> guest  Welcome (the host's Hello + the region memfd via SCM_RIGHTS)
//                or Reject  (one line of text naming both sides' versions)
//   guest -> host   Ready   (region validated and mapped) or Reject (with the reason)
//
// The host creates and seals the memfd (it can neither grow nor shrink afterwards, so no
// side can make the other fault on it) and picks the ring sizes; the guest validates the
// region header before touching the rings. SO_PEERCRED identifies the peer on both sides.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "bypass/base/unique_fd.h"
#include "bypass/transport/channel.h"
#include "bypass/transport/status.h"

namespace bypass::transport {

// Version of the transport itself (region layout + socket packets), checked in the handshake
// in addition to the caller's protocol version.
inline constexpr uint32_t kTransportVersion = 1;

struct Hello {
  uint32_t protocol_version = 0;
  uint64_t schema_hash = 0;
  std::string peer_name;  // our own name when sent (<= kMaxNameBytes, printable ASCII kept)
};
inline constexpr size_t kMaxNameBytes = 64;

struct SessionOptions {
  size_t ring_bytes = 8 << 20;     // per ring; rounded up to a power of two, 256 B .. 1 GiB
  size_t max_message = 256 << 20;  // largest reassembled message; more is a protocol error
};

// Guest side: connects to `endpoint` ("unix:/path", a bare path, or "unix:@name" for the
// abstract namespace) and handshakes. On failure the error is one line: kIo for no server at
// the path, kRefused for the version mismatch naming both versions (or the server's reason),
// kTimeout, kPeerGone or kProtocolError for a handshake that did not finish. Fails by the
// deadline, never hangs.
Result<Channel> connect(const std::string& endpoint, const Hello& mine, Deadline deadline);

// Both handshake halves over an already connected SOCK_SEQPACKET UNIX socket (e.g. one end of
// base::socket_pair() after fork()). They take ownership of the socket.
Result<Channel> connect_socket(base::UniqueFd socket, const Hello& mine, Deadline deadline);
Result<Channel> accept_socket(base::UniqueFd socket, const Hello& mine, const SessionOptions& options,
                              Deadline deadline);

// Host side: refuses a connection before its handshake (a limit, the access policy). The guest's
// connect() fails with `text` as its error. Best effort: the guest may already be gone.
void reject_connection(base::UniqueFd socket, const std::string& text);

// Where a server listens and a guest connects when nothing is configured:
// base::default_socket_path(kSocketName) (/run/bypass/bypassd.sock for root; see
// bypass/base/socket_path.h). Servers check the directory with base::secure_socket_dir, and a
// socket pair for fork-based tests comes from base::socket_pair.
inline constexpr const char* kSocketName = "bypassd.sock";

// Both endpoints of one session in this process (handshake run on a helper thread).
struct ChannelPair {
  Channel guest;
  Channel host;
};
Result<ChannelPair> make_channel_pair(const SessionOptions& options = {});

// Host side: a listening socket.
class Listener {
 public:
  // Creates missing parent directories and replaces a stale socket file (one nobody listens
  // on); refuses to touch a live socket or a file that is not a socket.
  static Result<Listener> listen(const std::string& endpoint);

  Listener(Listener&&) noexcept;
  Listener& operator=(Listener&&) noexcept;
  ~Listener();  // closes the socket and removes the socket file it created

  int fd() const;  // for poll(): readable when a guest is waiting
  const std::string& path() const;

  // Accepts one guest, handshakes, creates the session region (options.ring_bytes per ring)
  // and sends its fd. On failure (deadline, handshake refused, malformed peer) the error names
  // the guest; a guest that got as far as a Hello also received a Reject with the reason.
  Result<Channel> accept(const Hello& mine, const SessionOptions& options, Deadline deadline);

  // Only the accept(2) half: the connected socket (kTimeout: no guest by the deadline). A
  // server that must not let one slow guest hold up the others hands the socket to
  // accept_socket() on a session thread. Out of descriptors (EMFILE, ENFILE), it takes the
  // waiting connection with a descriptor kept in reserve, refuses it (the guest's connect fails
  // saying so) and returns kIo, so the listener does not stay readable for a spinning poll loop.
  Result<base::UniqueFd> accept_connection(Deadline deadline);

 private:
  Listener(base::UniqueFd fd, std::string path, dev_t dev, ino_t ino);
  void remove_socket_file();
  base::UniqueFd fd_;
  base::UniqueFd reserve_;  // spent to refuse a guest when the process is out of descriptors
  std::string path_;        // filesystem path, empty for abstract sockets
  dev_t dev_ = 0;           // identity of the socket file we created, so ~Listener removes only it
  ino_t ino_ = 0;
};

}  // namespace bypass::transport
