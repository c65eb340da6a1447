// bypassctl: a running bypassd's sessions, statistics and management.
//   bypassctl [--json] stats       sessions and totals (bypassd's control socket; --json: the full
//                                  JSON with the recently ended sessions and their reasons)
//   bypassctl [--json] sessions    the live sessions with transport, identity and address
//   bypassctl end ID               ends a session (reason ended_by_operator)
//   bypassctl drain                refuses new sessions and waits until none is live
//   bypassctl health               grpc.health.v1: SERVING (exit 0) or NOT_SERVING (exit 3)
// sessions, end, drain and health are calls of the gRPC management API (docs/network.md), served
// by bypass-grpcd on bypassd's management socket (bypassd --management or --listen), or with
// --management grpc://HOST:PORT on its network port (for an --admin; TLS and token from
// BYPASS_TLS_CA, BYPASS_TLS_CERT, BYPASS_TLS_KEY, BYPASS_TOKEN, or BYPASS_INSECURE=1).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "bypass/base/json.h"
#include "bypass/base/socket_path.h"
#include "bypass/net/credentials.h"
#include "bypass/net/management.h"
#include "bypass/transport/session.h"

namespace net = bypass::net;

namespace {

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], r[i].size());
    }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
}

std::string mib(uint64_t bytes) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.1f", static_cast<double>(bytes) / (1 << 20));
  return b;
}

const std::vector<std::string> kHeader = {"ID",      "PID",     "UID",     "WORKER", "TRANSPORT", "IDENTITY",
                                          "ADDRESS", "OBJECTS", "RECORDS", "MIB IN", "REPLIES",   "MEMORY MIB"};

std::string target_of(const std::string& management) {
  return management.starts_with("grpc://") ? management : "unix:" + management;
}

std::shared_ptr<grpc::Channel> management_channel(const std::string& management, std::string& why) {
  if (!management.starts_with("grpc://"))
    return grpc::CreateChannel("unix:" + management, grpc::InsecureChannelCredentials());
  std::string address;
  if (!net::parse_endpoint(management, address)) {
    why = "expected grpc://HOST:PORT or a socket path";
    return nullptr;
  }
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v ? v : "");
  };
  net::ClientSecurity security;
  security.insecure = env("BYPASS_INSECURE") == "1";
  security.ca_file = env("BYPASS_TLS_CA");
  security.cert_file = env("BYPASS_TLS_CERT");
  security.key_file = env("BYPASS_TLS_KEY");
  auto creds = net::client_credentials(security);
  if (!creds) {
    why = creds.error().message;
    return nullptr;
  }
  return grpc::CreateChannel(address, *creds);
}

// Over TCP the caller is who its token says (BYPASS_TOKEN).
void add_token(grpc::ClientContext& ctx) {
  if (const char* t = std::getenv("BYPASS_TOKEN"); t && *t)
    ctx.AddMetadata("authorization", std::string("Bearer ") + t);
}

int fail(const std::string& what, const grpc::Status& st, const std::string& management) {
  std::fprintf(stderr, "bypassctl: %s: %s (management API at %s; bypassd --management or --listen)\n", what.c_str(),
               st.error_message().c_str(), target_of(management).c_str());
  return 1;
}

std::chrono::system_clock::time_point deadline_in(int seconds) {
  return std::chrono::system_clock::now() + std::chrono::seconds(seconds);
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket = bypass::base::default_socket_path(bypass::transport::kSocketName);
  std::string control, management;
  std::string command = "stats";
  uint64_t id = 0;
  bool json = false;
  int timeout_s = 600;
  CLI::App app{"bypassctl: a running bypassd's sessions, statistics and management."};
  app.add_option("--control", control, "bypassd's control socket (default: the guest socket + \".ctl\")");
  app.add_option("--management", management,
                 "bypassd's management socket (default: next to the control socket, \".grpc\" for \".ctl\"), "
                 "or grpc://HOST:PORT (its network port, for an --admin)");
  app.add_flag("--json", json, "JSON instead of a table");
  app.add_option("--timeout", timeout_s, "drain: seconds to wait for the live sessions to end")->capture_default_str();
  app.add_option("command", command, "stats, sessions, end, drain, health")
      ->check(CLI::IsMember({"stats", "sessions", "end", "drain", "health"}));
  app.add_option("id", id, "end: the session's id");
  CLI11_PARSE(app, argc, argv);
  if (control.empty()) control = socket + ".ctl";
  if (management.empty())
    management = (control.ends_with(".ctl") ? control.substr(0, control.size() - 4) : control) + ".grpc";

  // Over the network, stats is the management API's: the JSON of its Stats call, or the table.
  const bool remote = management.starts_with("grpc://");
  if (command == "stats" && remote && !json) command = "sessions";
  if (command == "stats" && !remote) {
    auto text = net::control_request(control, json ? "stats" : "sessions");
    if (!text) {
      std::fprintf(stderr, "bypassctl: %s\n", text.error().message.c_str());
      return 1;
    }
    if (json) {
      std::fwrite(text->data(), 1, text->size(), stdout);
      return 0;
    }
    std::vector<std::vector<std::string>> rows = {kHeader};
    std::istringstream in(*text);
    std::string line;
    bool draining = false;
    std::string waiting = "0";
    while (std::getline(in, line)) {
      std::vector<std::string> f;
      std::istringstream cols(line);
      for (std::string c; std::getline(cols, c, '\t');) f.push_back(c);
      if (f.size() == 2 && f[0] == "draining") draining = f[1] == "1";
      if (f.size() == 2 && f[0] == "waiting") waiting = f[1];
      if (f.size() < 11 || f[0] != "session") continue;
      f.resize(13);
      rows.push_back({f[1], f[2], f[3], f[4], f[10], f[11], f[12], f[5], f[6],
                      mib(std::strtoull(f[7].c_str(), nullptr, 10)), f[8],
                      mib(std::strtoull(f[9].c_str(), nullptr, 10))});
    }
    print_table(rows);
    std::printf("%zu live session(s)%s%s\n", rows.size() - 1,
                waiting == "0" ? "" : ("; " + waiting + " connection(s) waiting for a handshake slot").c_str(),
                draining ? "; draining: new sessions are refused" : "");
    return 0;
  }

  std::string why;
  auto channel = management_channel(management, why);
  if (!channel) {
    std::fprintf(stderr, "bypassctl: --management %s: %s\n", management.c_str(), why.c_str());
    return 2;
  }
  if (command == "health") {
    grpc::GenericStub stub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(deadline_in(5));
    add_token(ctx);
    grpc::CompletionQueue cq;
    grpc::Slice nothing;  // HealthCheckRequest{service: ""} serializes to no bytes
    grpc::ByteBuffer request(&nothing, 1), response;
    auto call = stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", request, &cq);
    call->StartCall();
    grpc::Status st;
    call->Finish(&response, &st, reinterpret_cast<void*>(1));
    void* tag = nullptr;
    bool ok = false;
    (void)cq.Next(&tag, &ok);
    if (!st.ok()) return fail("health", st, management);
    // HealthCheckResponse{status = 1}: field 1, varint: 0x08 VALUE.
    std::vector<grpc::Slice> slices;
    (void)response.Dump(&slices);
    std::string bytes;
    for (auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    const int status = bytes.size() == 2 && bytes[0] == 0x08 ? bytes[1] : 0;
    const char* name = status == 1 ? "SERVING" : status == 2 ? "NOT_SERVING" : "UNKNOWN";
    if (json)
      std::printf("{\"status\": \"%s\"}\n", name);
    else
      std::printf("%s\n", name);
    return status == 1 ? 0 : 3;
  }

  auto stub = net::fb::Management::NewStub(channel);
  grpc::ClientContext ctx;
  add_token(ctx);
  flatbuffers::grpc::MessageBuilder mb;
  if (command == "stats") {
    ctx.set_deadline(deadline_in(5));
    mb.Finish(net::fb::CreateEmpty(mb));
    flatbuffers::grpc::Message<net::fb::StatsReply> reply;
    auto st = stub->Stats(&ctx, mb.ReleaseMessage<net::fb::Empty>(), &reply);
    if (!st.ok()) return fail("stats", st, management);
    const net::Received<net::fb::StatsReply> got(reply);
    if (!got) return fail("stats", grpc::Status(grpc::StatusCode::INTERNAL, "not a valid StatsReply"), management);
    const flatbuffers::String* text = got->json();
    std::fputs(text ? text->c_str() : "{}\n", stdout);
    return 0;
  }
  if (command == "sessions") {
    ctx.set_deadline(deadline_in(5));
    mb.Finish(net::fb::CreateEmpty(mb));
    net::SessionListMessage reply;
    auto st = stub->Sessions(&ctx, mb.ReleaseMessage<net::fb::Empty>(), &reply);
    if (!st.ok()) return fail("sessions", st, management);
    const net::Received<net::fb::SessionList> got(reply);
    if (!got) return fail("sessions", grpc::Status(grpc::StatusCode::INTERNAL, "not a valid SessionList"), management);
    const net::fb::SessionList* list = got.get();
    std::vector<std::vector<std::string>> rows = {kHeader};
    std::ostringstream o;
    o << "{\"draining\": " << (list->draining() ? "true" : "false") << ", \"sessions\": [";
    bool first = true;
    if (list->sessions())
      for (const net::fb::SessionInfo* s : *list->sessions()) {
        auto str = [](const flatbuffers::String* v) { return v ? v->str() : std::string(); };
        rows.push_back({std::to_string(s->id()), std::to_string(s->pid()), std::to_string(s->uid()),
                        std::to_string(s->worker_pid()), str(s->transport()), str(s->identity()), str(s->address()),
                        std::to_string(s->objects()), std::to_string(s->records()), mib(s->bytes()),
                        std::to_string(s->replies()), mib(s->memory_bytes())});
        o << (first ? "" : ", ") << "{\"id\": " << s->id() << ", \"pid\": " << s->pid() << ", \"uid\": " << s->uid()
          << ", \"worker_pid\": " << s->worker_pid() << ", \"transport\": \""
          << bypass::base::json_escape(str(s->transport())) << "\", \"identity\": \""
          << bypass::base::json_escape(str(s->identity())) << "\", \"address\": \""
          << bypass::base::json_escape(str(s->address())) << "\", \"objects\": " << s->objects()
          << ", \"records\": " << s->records() << ", \"bytes\": " << s->bytes() << ", \"replies\": " << s->replies()
          << ", \"memory_bytes\": " << s->memory_bytes() << "}";
        first = false;
      }
    o << "]}\n";
    if (json) {
      std::fputs(o.str().c_str(), stdout);
    } else {
      print_table(rows);
      std::printf("%zu live session(s)%s\n", rows.size() - 1,
                  list->draining() ? "; draining: new sessions are refused" : "");
    }
    return 0;
  }
  flatbuffers::grpc::Message<net::fb::Outcome> outcome;
  grpc::Status st;
  if (command == "end") {
    ctx.set_deadline(deadline_in(5));
    mb.Finish(net::fb::CreateEndRequest(mb, id));
    st = stub->End(&ctx, mb.ReleaseMessage<net::fb::EndRequest>(), &outcome);
  } else {
    ctx.set_deadline(deadline_in(timeout_s));
    mb.Finish(net::fb::CreateEmpty(mb));
    st = stub->Drain(&ctx, mb.ReleaseMessage<net::fb::Empty>(), &outcome);
  }
  if (!st.ok()) return fail(command, st, management);
  const net::Received<net::fb::Outcome> got(outcome);
  if (!got) return fail(command, grpc::Status(grpc::StatusCode::INTERNAL, "not a valid Outcome"), management);
  const net::fb::Outcome* o = got.get();
  const std::string message = o->message() ? o->message()->str() : "";
  if (json)
    std::printf("{\"ok\": %s, \"message\": \"%s\"}\n", o->ok() ? "true" : "false",
                bypass::base::json_escape(message).c_str());
  else
    std::printf("%s\n", message.c_str());
  return o->ok() ? 0 : 1;
}
