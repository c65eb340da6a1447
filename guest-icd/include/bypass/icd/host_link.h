// The medium under the guest's connection (connection.h): the ring Channel, or the network
// path, which lives in a plugin the ICD loads only for a grpc:// endpoint
// (libbypass_icd_net.so, beside the ICD): gRPC and its ~50 libraries are never loaded into a
// program that talks to a local or VM bypassd.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "bypass/transport/ring.h"
#include "bypass/transport/session.h"
#include "bypass/transport/status.h"

namespace bypass::icd {

// What the connection needs from its medium: send a batch, receive a reply, and, where the
// medium has them, file descriptors and a shared heap. The ring Channel (a UNIX socket's memfd,
// a VM's device) or a gRPC stream (BYPASS_ENDPOINT=grpc://, net/include/bypass/net/client.h).
class HostLink {
 public:
  virtual ~HostLink() = default;
  virtual transport::Status send(uint32_t kind, std::span<const std::byte> payload) = 0;
  virtual transport::Status recv(transport::Message& out) = 0;
  virtual transport::Status send_fds(uint64_t tag, std::span<const int> fds, transport::Deadline deadline) = 0;
  virtual transport::Status recv_fds(uint64_t& tag, std::vector<int>& fds, transport::Deadline deadline) = 0;
  virtual bool carries_fds() const = 0;
  virtual std::span<std::byte> shared_heap() const = 0;
  // Why the medium failed, when it knows more than the status says ("" if not).
  virtual std::string error_text() const = 0;
  // Completion feedback (sync.cpp): the block in the session's shared region, or null where
  // there is none (the network: every fence is asked of bypassd); the wait on its word; how long
  // one sleep may last before the peer is checked, and the check.
  virtual transport::layout::Feedback* feedback() const { return nullptr; }
  virtual void sleep_feedback(uint32_t, std::chrono::nanoseconds) const {}
  virtual std::chrono::nanoseconds liveness_slice() const { return std::chrono::milliseconds(20); }
  virtual bool peer_alive() const { return true; }
};

// What the network plugin needs to connect (BYPASS_ENDPOINT=grpc://..., docs/network.md).
struct NetworkOptions {
  std::string endpoint;
  bool insecure = false;
  std::string ca_file, cert_file, key_file, token;
  std::chrono::milliseconds timeout{3000};
  bool stats = false;  // BYPASS_NET_STATS: one line of traffic figures when the link closes
};

// The plugin's one export (guest-icd/src/network_plugin.cpp).
using NetworkConnectFn = transport::Result<std::unique_ptr<HostLink>> (*)(const NetworkOptions& options,
                                                                          const transport::Hello& hello);
inline constexpr const char* kNetworkPlugin = "libbypass_icd_net.so";
inline constexpr const char* kNetworkConnectSymbol = "bypass_icd_network_connect";

}  // namespace bypass::icd
