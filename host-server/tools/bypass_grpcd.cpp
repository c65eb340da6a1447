// bypass-grpcd: the network side of bypassd (docs/network.md). bypassd starts it when given
// --listen grpc://ADDR:PORT (bypassd's own process stays single-threaded; gRPC needs threads)
// and it dies with bypassd. Each gRPC stream a guest opens is authenticated (TLS, a client
// certificate, a bearer token), handshaken (the guest's versions are checked by bypassd itself)
// and relayed to one ordinary bypassd session over bypassd's UNIX socket, as a local guest's
// would be: every network guest still gets its sandboxed worker, limits and end reasons.
//
// Per session: the gRPC handler thread reads frames and writes whole messages to the command
// ring (a full ring blocks it, and HTTP/2 flow control then blocks the guest: a batch is the
// most one session holds here); a down thread reads the reply ring and writes frames, and drops
// the file descriptors bypassd sends (shared memory cannot cross machines: the guest runs in
// shadow mode). A guest that stops reading blocks the down thread, bypassd ends the session
// after --send-timeout, and the stream is cancelled: nothing stays held.
//
// Once its ports are bound and its credentials read it enters bypassd's sandbox with the relay's
// filter (bypass/host/sandbox.h): what it parses comes from the network.
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <grpc/support/log.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "bypass/host/sandbox.h"
#include "bypass/net/credentials.h"
#include "bypass/net/frame.h"
#include "bypass/net/management.h"
#include "bypass/transport/layout.h"
#include "bypass/transport/session.h"

namespace {

using bypass::net::FrameMessage;
namespace net = bypass::net;
namespace transport = bypass::transport;

struct Options {
  std::string socket_path;
  std::string control_path;     // bypassd's control socket, which the management API asks
  std::string management_path;  // the management API's UNIX socket ("" = none)
  std::string listen;
  net::ServerSecurity security;
  uint32_t handshake_timeout_ms = 2000;
  size_t max_sessions = 64;
  std::string log_level = "info";
  std::set<std::string> admins;  // token or certificate names allowed the management API over TCP
  std::string user, group;       // who the relay serves as, once bound and its keys read
};

class Relay final : public net::fb::Remote::Service {
 public:
  Relay(Options options, std::map<std::string, std::string> tokens)
      : options_(std::move(options)), tokens_(std::move(tokens)) {}

  grpc::Status Session(grpc::ServerContext* ctx,
                       grpc::ServerReaderWriter<FrameMessage, FrameMessage>* stream) override {
    const uint64_t n = ++next_;
    const std::string peer = ctx->peer();
    std::string identity;
    if (std::string why = authenticate(*ctx, identity); !why.empty()) {
      spdlog::warn("grpc {}: refused {}: {}", n, peer, why);
      return {grpc::StatusCode::UNAUTHENTICATED, "bypass-grpcd refused the session: " + why};
    }
    struct Count {
      std::atomic<size_t>& c;
      explicit Count(std::atomic<size_t>& a) : c(a) { ++c; }
      ~Count() { --c; }
    } count(active_);
    if (active_.load() > options_.max_sessions) {
      const std::string why =
          "too many network sessions (" + std::to_string(options_.max_sessions) + ", bypass-grpcd --max-sessions)";
      spdlog::warn("grpc {}: refused {} ({}): {}", n, peer, identity, why);
      return {grpc::StatusCode::RESOURCE_EXHAUSTED, "bypass-grpcd refused the session: " + why};
    }
    return serve(n, *ctx, *stream, peer, identity);
  }

  // The management API: anyone on its UNIX socket (mode 0600), and on the TCP port an
  // authenticated caller: whose token name or certificate name is an --admin sees everything;
  // anyone else who may open sessions sees, and may end, only its own network sessions (those
  // bypassd lists with its identity) and may not drain.
  net::ManagementService::Caller authorize_management(grpc::ServerContext& ctx) {
    net::ManagementService::Caller caller;
    if (ctx.peer().starts_with("unix:")) return caller;
    std::string identity, token_name, cert;
    if (std::string why = authenticate(ctx, identity, &token_name, &cert); !why.empty()) {
      caller.refusal = why;
      return caller;
    }
    caller.identity = identity;
    caller.admin =
        (!token_name.empty() && options_.admins.count(token_name)) || (!cert.empty() && options_.admins.count(cert));
    // Without tokens or client certificates every guest is "anonymous": one could end another's.
    if (!caller.admin && token_name.empty() && cert.empty())
      caller.refusal = "an anonymous caller may not use the management API over TCP (no token, no client certificate)";
    return caller;
  }

 private:
  // Empty when `ctx` may open a session; else the one line both sides print.
  std::string authenticate(grpc::ServerContext& ctx, std::string& identity, std::string* token_out = nullptr,
                           std::string* cert_out = nullptr) {
    std::string cert;
    if (auto auth = ctx.auth_context(); auth && !options_.security.client_ca_file.empty()) {
      for (const auto& v : auth->FindPropertyValues("x509_common_name")) cert.assign(v.data(), v.size());
      if (cert.empty()) return "no client certificate";
    }
    std::string token_name;
    if (!tokens_.empty()) {
      const auto& md = ctx.client_metadata();
      auto it = md.find("authorization");
      if (it == md.end()) return "no bearer token (the guest sets BYPASS_TOKEN)";
      const std::string value(it->second.data(), it->second.size());
      constexpr std::string_view kBearer = "Bearer ";
      auto t = value.starts_with(kBearer) ? tokens_.find(value.substr(kBearer.size())) : tokens_.end();
      if (t == tokens_.end()) return "the bearer token is not in --token-file";
      token_name = t->second;
    }
    if (token_out) *token_out = token_name;
    if (cert_out) *cert_out = cert;
    identity = !token_name.empty() && !cert.empty() ? token_name + "/" + cert
               : !token_name.empty()                ? "token:" + token_name
               : !cert.empty()                      ? "cert:" + cert
                                                    : "anonymous";
    return {};
  }

  grpc::Status serve(uint64_t n, grpc::ServerContext& ctx, grpc::ServerReaderWriter<FrameMessage, FrameMessage>& stream,
                     const std::string& peer, const std::string& identity) {
    // Handshake: the guest's hello, under the handshake deadline.
    FrameMessage first;
    std::atomic<bool> hello_done{false};
    std::atomic<bool> timed_out{false};
    std::thread dog([&] {
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.handshake_timeout_ms);
      while (!hello_done.load() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (!hello_done.load()) {
        timed_out = true;
        ctx.TryCancel();
      }
    });
    const bool got = stream.Read(&first);
    hello_done = true;
    dog.join();
    if (!got && timed_out.load()) {
      spdlog::warn("grpc {}: {} ({}) sent no hello within {} ms (--handshake-timeout)", n, peer, identity,
                   options_.handshake_timeout_ms);
      return {grpc::StatusCode::CANCELLED, "no hello in time"};
    }
    if (!got) {
      // gRPC refused the frame (not a FlatBuffer, over the size limit) or the guest left.
      spdlog::warn("grpc {}: {} ({}): the stream ended before a valid hello", n, peer, identity);
      return {grpc::StatusCode::INVALID_ARGUMENT, "no valid hello"};
    }
    transport::Hello hello;
    uint32_t transport_version = 0;
    std::string why;
    const net::Received<net::fb::Frame> hello_frame(first);
    if (!hello_frame || hello_frame->kind() != net::kFrameHello || hello_frame->flags() != 0)
      why = "the first frame is not a hello";
    else if (const auto* d = hello_frame->data();
             !net::parse_hello(d ? std::as_bytes(std::span(d->data(), d->size())) : std::span<const std::byte>(), hello,
                               transport_version, why))
      ;
    else if (transport_version != transport::kTransportVersion)
      why = "transport version " + std::to_string(transport_version) + ", this server speaks " +
            std::to_string(transport::kTransportVersion);
    if (!why.empty()) return reject(n, stream, peer, identity, grpc::StatusCode::INVALID_ARGUMENT, why);

    // The session at bypassd, named for bypassctl: "grpc IDENTITY PEER" (kept from this uid only).
    std::string name = "grpc " + identity + " " + peer;
    transport::Hello mine{hello.protocol_version, hello.schema_hash, name.substr(0, transport::kMaxNameBytes)};
    auto ch = transport::connect("unix:" + options_.socket_path, mine,
                                 transport::deadline_after(std::chrono::milliseconds(options_.handshake_timeout_ms)));
    if (!ch) return reject(n, stream, peer, identity, grpc::StatusCode::FAILED_PRECONDITION, ch.error().message);
    const net::HelloPayload welcome = net::make_hello(ch->peer_hello());
    if (!stream.Write(net::make_frame(net::kFrameWelcome, 0, std::as_bytes(std::span(&welcome, 1)))))
      return {grpc::StatusCode::CANCELLED, "the guest went away"};
    spdlog::info("grpc {}: {} ({}) relayed to bypassd: {}", n, peer, identity, hello.peer_name);
    return relay(n, ctx, stream, *ch, peer);
  }

  grpc::Status reject(uint64_t n, grpc::ServerReaderWriter<FrameMessage, FrameMessage>& stream, const std::string& peer,
                      const std::string& identity, grpc::StatusCode code, const std::string& why) {
    spdlog::warn("grpc {}: refused {} ({}): {}", n, peer, identity, why);
    (void)stream.Write(net::make_frame(net::kFrameReject, 0, std::as_bytes(std::span(why.data(), why.size()))));
    return {code, why};
  }

  grpc::Status relay(uint64_t n, grpc::ServerContext& ctx, grpc::ServerReaderWriter<FrameMessage, FrameMessage>& stream,
                     transport::Channel& ch, const std::string& peer) {
    std::atomic<bool> stop{false};
    std::atomic<bool> host_ended{false};
    std::atomic<bool> down_done{false};
    std::atomic<bool> reading_done{false};
    std::atomic<bool> write_failed{false};  // the connection broke under a reply
    std::thread down([&] {
      transport::Message msg;
      while (!stop.load()) {
        // fds bypassd sends (host-visible memory) mean nothing on another machine: dropped.
        uint64_t tag;
        std::vector<int> fds;
        while (ch.recv_fds(tag, fds, transport::Clock::now()) == transport::Status::kOk)
          for (int fd : fds) close(fd);
        const auto st = ch.recv(msg, transport::deadline_after(std::chrono::milliseconds(50)));
        if (st == transport::Status::kTimeout) continue;
        if (st != transport::Status::kOk) break;
        if (!net::write_message(stream, msg.kind, msg.payload)) {
          write_failed = true;
          break;
        }
      }
      // A reply that could not be written is the connection's end, not bypassd's.
      host_ended = !stop.load() && !write_failed.load();
      if (host_ended) {
        // bypassd ended the session; its reason went out last. A cancel now could overtake it on
        // the wire, so the guest (which closes its stream once it saw the reason) gets a second
        // to leave on its own before the handler's Read is cancelled.
        for (int i = 0; i < 100 && !reading_done.load(); ++i)
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        if (!reading_done.load()) ctx.TryCancel();
      }
      down_done = true;
    });
    // A down thread stuck in Write (a guest that stopped reading) is freed once bypassd ended
    // the session (its --send-timeout): the call is cancelled.
    std::thread watch([&] {
      int dead_for = 0;
      while (!stop.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        dead_for = ch.peer_alive() ? 0 : dead_for + 1;
        if (dead_for == 10) ctx.TryCancel();
      }
    });
    net::Reassembler reassembler(ch.max_message());
    std::string error;
    FrameMessage frame;
    while (stream.Read(&frame)) {
      transport::Message msg;
      const auto step = reassembler.add(frame, msg, error);
      if (step == net::Reassembler::Step::kMore) continue;
      if (step == net::Reassembler::Step::kError) break;
      if (msg.kind >= transport::layout::kReservedKindBase || msg.kind >= net::kFrameKindBase) {
        error = "a frame of kind " + std::to_string(msg.kind) + " after the handshake";
        break;
      }
      auto st = transport::Status::kTimeout;
      while (st == transport::Status::kTimeout && !host_ended.load())
        st = ch.send(msg.kind, msg.payload, transport::deadline_after(std::chrono::milliseconds(100)));
      if (st != transport::Status::kOk) break;
    }
    reading_done = true;
    stop = true;
    // A down thread blocked in Write (a guest that reads nothing) is freed by cancelling.
    for (int i = 0; i < 100 && !down_done.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!down_done.load()) ctx.TryCancel();
    down.join();
    watch.join();
    const bool ended_by_host = host_ended.load();
    // A guest that closed its stream (half-close) leaves with a goodbye; a connection that broke
    // (cut, reset, keepalive) is passed on as what it is: bypassd ends the session as peer_gone.
    const bool broken = !ended_by_host && error.empty() && (ctx.IsCancelled() || write_failed.load());
    if (broken)
      ch.abandon();
    else
      ch.close();
    if (!error.empty()) {
      spdlog::warn("grpc {}: {}: protocol error: {}; session closed", n, peer, error);
      return {grpc::StatusCode::INVALID_ARGUMENT, "bypass-grpcd: " + error};
    }
    spdlog::info("grpc {}: {}: {}", n, peer,
                 ended_by_host ? "bypassd ended the session"
                 : broken      ? "the connection broke"
                               : "the guest left");
    return grpc::Status::OK;
  }

  Options options_;
  std::map<std::string, std::string> tokens_;  // name by token
  std::atomic<uint64_t> next_{0};
  std::atomic<size_t> active_{0};
};

// gRPC's own log lines, in ours. A TLS handshake that fails (a client certificate of another CA,
// none where --tls-client-ca asks for one, a guest that does not trust our certificate, a
// plaintext client) fails inside gRPC's transport before any call exists: no handler, auth
// metadata processor or certificate verifier of ours runs for it (a custom verifier runs only
// after the TLS library's own chain check passed), and gRPC 1.51 reports it with the TLS reason
// only, in a log line from its TLS layer, which knows no peer address. That line becomes ours.
void grpc_log(gpr_log_func_args* a) {
  const std::string_view m = a->message ? a->message : "";
  if (m.starts_with("Handshake failed")) {
    spdlog::warn("refused a TLS client (gRPC names no peer address for a failed handshake): {}", m);
    return;
  }
  const auto level = a->severity == GPR_LOG_SEVERITY_ERROR  ? spdlog::level::err
                     : a->severity == GPR_LOG_SEVERITY_INFO ? spdlog::level::info
                                                            : spdlog::level::debug;
  spdlog::log(level, "gRPC {}:{}: {}", a->file ? a->file : "?", a->line, m);
}

// --probe-sandbox: one line per attempt, "probe NAME: OUTCOME".
void probe() {
  const auto outcome = [](long r) { return r >= 0 ? std::string("allowed") : std::string(std::strerror(errno)); };
  char* const argv[] = {const_cast<char*>("/bin/true"), nullptr};
  spdlog::info("probe execve: {}", outcome(execv("/bin/true", argv)));
  const pid_t child = fork();
  if (child == 0) _exit(0);
  spdlog::info("probe fork: {}", outcome(child));
  const int inet = socket(AF_INET, SOCK_STREAM, 0);
  spdlog::info("probe socket(AF_INET): {}", outcome(inet));
  if (inet >= 0) close(inet);
  const int unix_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  spdlog::info("probe socket(AF_UNIX): {}", outcome(unix_fd));
  if (unix_fd >= 0) close(unix_fd);
  std::thread t([] {});
  t.join();
  spdlog::info("probe thread: allowed");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"bypass-grpcd: serves bypassd's guests over the network (gRPC); started by bypassd --listen"};
  app.add_option("--socket", o.socket_path, "bypassd's UNIX socket")->required();
  app.add_option("--listen", o.listen, "grpc://ADDR:PORT to serve network guests on (and the health service)");
  app.add_option("--control", o.control_path, "bypassd's control socket (default: --socket + \".ctl\")");
  app.add_option("--management", o.management_path,
                 "UNIX socket for the management API and the health service (mode 0600)");
  app.add_flag("--insecure", o.security.insecure, "Plaintext, no TLS (loopback tests only)");
  app.add_option("--tls-cert", o.security.cert_file, "The server's PEM certificate chain");
  app.add_option("--tls-key", o.security.key_file, "The server's PEM private key");
  app.add_option("--tls-client-ca", o.security.client_ca_file, "Require client certificates signed by this CA");
  app.add_option("--token-file", o.security.token_file, "Lines NAME TOKEN: bearer tokens that may open sessions");
  app.add_option("--handshake-timeout", o.handshake_timeout_ms, "Milliseconds a new stream has to handshake");
  app.add_option("--max-sessions", o.max_sessions, "Network sessions at once");
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error");
  app.add_option("--admin", o.admins,
                 "A token name (--token-file) or client-certificate name that may use the management API over "
                 "the --listen port; repeatable")
      ->take_all();
  app.add_option("--user", o.user,
                 "Serve as this user once the port is bound and the keys are read (bypassd passes "
                 "its --worker-user)");
  app.add_option("--group", o.group, "With --user: this group (bypassd's --socket-group), so the relay may connect");
  bool die_with_parent = false;
  app.add_flag("--die-with-parent", die_with_parent, "Exit when the parent (bypassd) does");
  // Hidden, for the tests: once sandboxed, try what the filter refuses and log each outcome.
  bool probe_sandbox = false;
  app.add_flag("--probe-sandbox", probe_sandbox, "Log what the sandbox refuses, then serve")->group("");
  CLI11_PARSE(app, argc, argv);
  // Nothing of bypassd's (its pipes, say) but stdin, stdout and stderr.
  close_range(3, ~0u, 0);
  if (die_with_parent) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) return 1;
  }
  auto logger = spdlog::stderr_color_mt("bypass-grpcd");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(o.log_level));
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] bypass-grpcd: %v");
  gpr_set_log_function(grpc_log);  // before gRPC starts
  signal(SIGPIPE, SIG_IGN);

  if (o.control_path.empty()) o.control_path = o.socket_path + ".ctl";
  std::string address;
  if (!o.listen.empty() && !net::parse_endpoint(o.listen, address)) {
    spdlog::error("--listen {}: expected grpc://ADDR:PORT", o.listen);
    return 2;
  }
  std::map<std::string, std::string> tokens;
  if (!o.security.token_file.empty()) {
    auto t = net::read_tokens(o.security.token_file);
    if (!t) {
      spdlog::error("{}", t.error().message);
      return 2;
    }
    tokens = std::move(*t);
  }
  // Without --listen only the management socket is served (no TLS on a UNIX socket).
  auto creds =
      address.empty()
          ? bypass::transport::Result<std::shared_ptr<grpc::ServerCredentials>>(grpc::InsecureServerCredentials())
          : net::server_credentials(o.security);
  if (!creds) {
    spdlog::error("{}", creds.error().message);
    return 2;
  }
  if (!address.empty() && tokens.empty() && o.security.client_ca_file.empty())
    spdlog::warn("no --token-file and no --tls-client-ca: anyone who reaches {} may open sessions", address);
  // SIGTERM/SIGINT (and bypassd's death): stop accepting, cancel the streams, exit. Blocked
  // before gRPC starts its threads, so they all inherit the mask and sigwait() gets it.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  Relay relay(o, std::move(tokens));
  std::atomic<grpc::Server*> serving{nullptr};
  net::ManagementService management(
      o.control_path,
      [&serving] {
        // Draining: the health service says NOT_SERVING from now on.
        if (grpc::Server* s = serving.load()) s->GetHealthCheckService()->SetServingStatus(false);
      },
      [&relay](grpc::ServerContext& ctx) { return relay.authorize_management(ctx); });
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  if (!address.empty()) builder.AddListeningPort(address, *creds, &port);
  if (!o.management_path.empty()) {
    unlink(o.management_path.c_str());  // a stale socket of an earlier run (bypassd owns the directory)
    builder.AddListeningPort("unix:" + o.management_path, grpc::InsecureServerCredentials());
  }
  net::add_server_arguments(builder);
  builder.RegisterService(&relay);
  builder.RegisterService(&management);
  // Created under this umask: only root and bypassd's user may manage bypassd.
  const mode_t old_umask = umask(0177);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  umask(old_umask);
  if (!server || (!address.empty() && port == 0)) {
    spdlog::error("cannot listen on {}", address.empty() ? o.management_path : address);
    return 1;
  }
  if (!o.management_path.empty()) chmod(o.management_path.c_str(), 0600);
  // Bound and with its credentials read: from here on only what serving needs.
  bypass::host::SandboxOptions sandbox;
  sandbox.profile = bypass::host::SandboxProfile::kRelay;
  if (!o.user.empty()) {
    if (auto user = bypass::host::switch_to_user(sandbox, o.user, "--user", o.group, "--group"); !user) {
      spdlog::error("{}", user.error().message);
      return 2;
    }
  }
  if (auto entered = bypass::host::enter_sandbox(sandbox); !entered) {
    spdlog::error("cannot enter the sandbox: {}", entered.error().message);
    return 1;
  }
  if (!o.user.empty()) spdlog::info("serving as {} (uid {}, gid {})", o.user, getuid(), getgid());
  if (probe_sandbox) probe();
  server->GetHealthCheckService()->SetServingStatus(true);
  serving = server.get();
  if (!address.empty())
    spdlog::info(
        "listening on {} ({}), relaying to {}", address,
        o.security.insecure ? "insecure" : (o.security.client_ca_file.empty() ? "TLS" : "TLS, client certificates"),
        o.socket_path);
  if (!o.management_path.empty()) spdlog::info("management API on unix:{}", o.management_path);
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&set, &sig);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  });
  server->Wait();
  waiter.join();
  return 0;
}
