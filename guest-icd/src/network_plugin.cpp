// libbypass_icd_net.so: the guest ICD's network path (BYPASS_ENDPOINT=grpc://, docs/network.md),
// a plugin the ICD dlopens only for such an endpoint, so gRPC is never loaded into programs
// that use a local or VM bypassd. Its one export connects and returns the HostLink.
#include <cstdio>

#include "bypass/icd/host_link.h"
#include "bypass/net/client.h"

namespace bypass::icd {

namespace {

// The network: a gRPC stream to bypass-grpcd. No fds, no shared memory.
class NetworkLink final : public HostLink {
 public:
  NetworkLink(std::unique_ptr<net::RemoteStream> s, bool stats) : s_(std::move(s)), stats_(stats) {}
  ~NetworkLink() override {
    // A report asked for (bench/run's bytes on the wire), printed whatever BYPASS_LOG says.
    if (!stats_) return;
    const net::RemoteStream::Stats st = s_->stats();
    std::fprintf(stderr, "bypass: network: %llu bytes sent in %llu frames, %llu bytes received in %llu messages\n",
                 static_cast<unsigned long long>(st.bytes_sent), static_cast<unsigned long long>(st.frames_sent),
                 static_cast<unsigned long long>(st.bytes_received),
                 static_cast<unsigned long long>(st.frames_received));
  }
  transport::Status send(uint32_t kind, std::span<const std::byte> payload) override { return s_->send(kind, payload); }
  transport::Status recv(transport::Message& out) override { return s_->recv(out); }
  transport::Status send_fds(uint64_t, std::span<const int>, transport::Deadline) override {
    return transport::Status::kClosed;
  }
  transport::Status recv_fds(uint64_t&, std::vector<int>&, transport::Deadline) override {
    return transport::Status::kClosed;
  }
  bool carries_fds() const override { return false; }
  std::span<std::byte> shared_heap() const override { return {}; }
  std::string error_text() const override { return s_->error_text(); }

 private:
  std::unique_ptr<net::RemoteStream> s_;
  bool stats_;
};

}  // namespace

}  // namespace bypass::icd

extern "C" __attribute__((visibility("default"))) bypass::transport::Result<std::unique_ptr<bypass::icd::HostLink>>
bypass_icd_network_connect(const bypass::icd::NetworkOptions& o, const bypass::transport::Hello& hello) {
  namespace net = bypass::net;
  // The plugin's one export must match what the ICD calls it as.
  [[maybe_unused]] constexpr bypass::icd::NetworkConnectFn kChecked = &bypass_icd_network_connect;
  net::ClientSecurity security;
  security.insecure = o.insecure;
  security.ca_file = o.ca_file;
  security.cert_file = o.cert_file;
  security.key_file = o.key_file;
  security.token = o.token;
  auto s = net::RemoteStream::connect(o.endpoint, security, hello, o.timeout);
  if (!s) return s.error();
  return std::unique_ptr<bypass::icd::HostLink>(std::make_unique<bypass::icd::NetworkLink>(std::move(*s), o.stats));
}
