// TLS, tokens and channel arguments of the network path (credentials.h).
#include "bypass/net/credentials.h"

#include <fstream>
#include <sstream>

#include "bypass/net/frame.h"

namespace bypass::net {

transport::Result<std::string> read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return transport::make_error(transport::Status::kInvalidArgument, std::string("cannot read ") + what + " " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

transport::Result<std::shared_ptr<grpc::ChannelCredentials>> client_credentials(const ClientSecurity& security) {
  if (security.insecure) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions o;
  if (!security.ca_file.empty()) {
    auto ca = read_file(security.ca_file, "the CA file (BYPASS_TLS_CA)");
    if (!ca) return ca.error();
    o.pem_root_certs = *ca;
  }
  if (!security.cert_file.empty() || !security.key_file.empty()) {
    auto cert = read_file(security.cert_file, "the client certificate (BYPASS_TLS_CERT)");
    if (!cert) return cert.error();
    auto key = read_file(security.key_file, "the client key (BYPASS_TLS_KEY)");
    if (!key) return key.error();
    o.pem_cert_chain = *cert;
    o.pem_private_key = *key;
  }
  return grpc::SslCredentials(o);
}

grpc::ChannelArguments client_arguments() {
  grpc::ChannelArguments a;
  a.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(kKeepaliveTime.count()));
  a.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(kKeepaliveTimeout.count()));
  a.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  a.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  a.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, static_cast<int>(kMaxFrameBytes));
  a.SetInt(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, static_cast<int>(kMaxFrameBytes));
  // A connection of its own per session: cutting one session's connection cuts no other.
  a.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  a.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  a.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, kStreamWindowBytes);
  a.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  return a;
}

transport::Result<std::shared_ptr<grpc::ServerCredentials>> server_credentials(const ServerSecurity& security) {
  if (security.insecure) return grpc::InsecureServerCredentials();
  if (security.cert_file.empty() || security.key_file.empty())
    return transport::make_error(transport::Status::kInvalidArgument,
                                 "TLS needs --tls-cert and --tls-key (or --insecure for loopback tests)");
  auto cert = read_file(security.cert_file, "the server certificate (--tls-cert)");
  if (!cert) return cert.error();
  auto key = read_file(security.key_file, "the server key (--tls-key)");
  if (!key) return key.error();
  grpc::SslServerCredentialsOptions o(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  o.pem_key_cert_pairs.push_back({*key, *cert});
  if (!security.client_ca_file.empty()) {
    auto ca = read_file(security.client_ca_file, "the client CA (--tls-client-ca)");
    if (!ca) return ca.error();
    o.pem_root_certs = *ca;
    o.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(o);
}

void add_server_arguments(grpc::ServerBuilder& b) {
  // gRPC sets SO_REUSEPORT by default: a second server on the same port (another bypassd, or an
  // old one still running) would bind too, and the kernel would share new guests between the
  // two. A port in use is an error instead.
  b.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 1000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  b.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Guests ping every kKeepaliveTime: allow it instead of answering with "too many pings".
  b.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                       static_cast<int>(kKeepaliveTime.count() / 2));
  b.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  b.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, kStreamWindowBytes);
  b.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  b.SetMaxReceiveMessageSize(static_cast<int>(kMaxFrameBytes));
  b.SetMaxSendMessageSize(static_cast<int>(kMaxFrameBytes));
}

transport::Result<std::map<std::string, std::string>> read_tokens(const std::string& path) {
  auto text = read_file(path, "the token file (--token-file)");
  if (!text) return text.error();
  std::map<std::string, std::string> tokens;
  std::istringstream in(*text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    std::istringstream l(line);
    std::string name, token, extra;
    if (!(l >> name) || name[0] == '#') continue;
    if (!(l >> token) || (l >> extra) || token.size() < 16)
      return transport::make_error(
          transport::Status::kInvalidArgument,
          path + ":" + std::to_string(n) + ": expected NAME TOKEN (a token of 16 characters or more)");
    tokens[token] = name;
  }
  return tokens;
}

}  // namespace bypass::net
