// Who may talk to whom on the network path (docs/network.md#security): the guest's channel
// credentials (TLS with a CA, optionally a client certificate, or explicitly insecure), the
// relay's server credentials, its bearer tokens, and the channel arguments both sides use
// (keepalive, so a cut connection is noticed within a second, and frame size limits).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "bypass/transport/status.h"

namespace bypass::net {

struct ClientSecurity {
  bool insecure = false;  // plaintext (BYPASS_INSECURE=1): loopback tests only
  std::string ca_file;    // PEM roots the server's certificate must chain to ("" = system roots)
  std::string cert_file;  // PEM client certificate and key (optional)
  std::string key_file;
  std::string token;  // bearer token sent as "authorization: Bearer ..." (optional)
};

// The channel credentials for `security`; the error names the file that could not be read.
transport::Result<std::shared_ptr<grpc::ChannelCredentials>> client_credentials(const ClientSecurity& security);
grpc::ChannelArguments client_arguments();

struct ServerSecurity {
  bool insecure = false;
  std::string cert_file, key_file;  // the server's PEM certificate chain and key
  std::string client_ca_file;       // when set, clients must present a certificate it signed
  std::string token_file;           // lines "NAME TOKEN": who may open sessions with a token
};
transport::Result<std::shared_ptr<grpc::ServerCredentials>> server_credentials(const ServerSecurity& security);
void add_server_arguments(grpc::ServerBuilder& builder);

// name by token, from a token file ("NAME TOKEN" per line, # comments).
transport::Result<std::map<std::string, std::string>> read_tokens(const std::string& path);

transport::Result<std::string> read_file(const std::string& path, const char* what);

// Keepalive: a ping after this much silence, and the connection is given up this long after an
// unanswered one.
inline constexpr std::chrono::milliseconds kKeepaliveTime{200};
inline constexpr std::chrono::milliseconds kKeepaliveTimeout{500};
// How often a guest's connection is polled while the guest makes no call (RemoteStream): well
// within kKeepaliveTimeout, so a keepalive ping's answer is read in time.
inline constexpr std::chrono::milliseconds kIdlePoll{100};
// Each stream's HTTP/2 receive window, fixed on both sides (gRPC's bandwidth-delay probing off):
// with gRPC 1.51's default (64 KiB, grown by probing) a 4 MiB read barrier took 30-45 ms over
// loopback, waiting for window updates; with this, 4 ms. It is also what a stream may have in
// flight unread: the relay's memory per session (docs/network.md).
inline constexpr int kStreamWindowBytes = 8 << 20;

}  // namespace bypass::net
