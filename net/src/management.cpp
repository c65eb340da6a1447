// The management API's service (management.h): each call is one or more requests to bypassd's
// control socket, so bypassd's single-threaded main process stays the one owner of its state.
#include "bypass/net/management.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sstream>
#include <thread>
#include <vector>

#include "bypass/base/unix_socket.h"

namespace bypass::net {

namespace {

flatbuffers::grpc::Message<fb::Outcome> outcome(bool ok, const std::string& message) {
  flatbuffers::grpc::MessageBuilder mb;
  mb.Finish(fb::CreateOutcome(mb, ok, mb.CreateString(message)));
  return mb.ReleaseMessage<fb::Outcome>();
}

}  // namespace

transport::Result<std::string> control_request(const std::string& control_path, const std::string& line,
                                               std::chrono::milliseconds timeout) {
  auto fd = base::connect_unix(control_path, SOCK_STREAM);
  if (!fd)
    return transport::make_error(transport::Status::kIo,
                                 "cannot reach bypassd at " + control_path + ": " + fd.error().message);
  const std::string req = line + "\n";
  if (send(fd->get(), req.data(), req.size(), MSG_NOSIGNAL) < 0)
    return transport::make_error(transport::Status::kIo, "bypassd at " + control_path + " closed the connection");
  std::string out;
  char buf[4096];
  pollfd p{fd->get(), POLLIN, 0};
  while (poll(&p, 1, static_cast<int>(timeout.count())) == 1) {
    const ssize_t n = read(fd->get(), buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  if (out.empty()) return transport::make_error(transport::Status::kTimeout, "no answer from bypassd");
  return out;
}

grpc::Status ManagementService::allowed(grpc::ServerContext& ctx, Caller* caller) {
  *caller = authorize_ ? authorize_(ctx) : Caller{};
  if (!caller->refusal.empty()) return {grpc::StatusCode::PERMISSION_DENIED, caller->refusal};
  // An identity bypassd could not match (none, or with the separators of its session names)
  // sees nothing rather than everything.
  if (!caller->admin && (caller->identity.empty() || caller->identity.find_first_of(" \t\n@") != std::string::npos))
    caller->identity = "\x01";
  return grpc::Status::OK;
}

std::string ManagementService::scoped(const std::string& request, const Caller& caller) {
  return caller.admin ? request : request + " @" + caller.identity;
}

grpc::Status ManagementService::session_list(SessionListMessage* response, size_t* live, const Caller& caller) {
  auto text = control_request(control_path_, scoped("sessions", caller));
  if (!text) return {grpc::StatusCode::UNAVAILABLE, text.error().message};
  flatbuffers::grpc::MessageBuilder mb;
  std::vector<flatbuffers::Offset<fb::SessionInfo>> list;
  bool draining = false;
  std::istringstream in(*text);
  std::string row;
  while (std::getline(in, row)) {
    std::vector<std::string> f;
    std::istringstream cols(row);
    for (std::string c; std::getline(cols, c, '\t');) f.push_back(c);
    if (f.size() == 2 && f[0] == "draining") draining = f[1] == "1";
    if (f.size() < 11 || f[0] != "session") continue;
    f.resize(13);
    auto num = [&](size_t i) { return std::strtoull(f[i].c_str(), nullptr, 10); };
    list.push_back(fb::CreateSessionInfo(mb, num(1), static_cast<int32_t>(num(2)), static_cast<uint32_t>(num(3)),
                                         static_cast<int32_t>(num(4)), num(5), num(6), num(7), num(8), num(9),
                                         mb.CreateString(f[10]), mb.CreateString(f[11]), mb.CreateString(f[12])));
  }
  if (live) *live = list.size();
  mb.Finish(fb::CreateSessionList(mb, mb.CreateVector(list), draining));
  *response = mb.ReleaseMessage<fb::SessionList>();
  return grpc::Status::OK;
}

grpc::Status ManagementService::Sessions(grpc::ServerContext* ctx, const flatbuffers::grpc::Message<fb::Empty>*,
                                         SessionListMessage* response) {
  Caller caller;
  if (auto st = allowed(*ctx, &caller); !st.ok()) return st;
  return session_list(response, nullptr, caller);
}

grpc::Status ManagementService::Stats(grpc::ServerContext* ctx, const flatbuffers::grpc::Message<fb::Empty>*,
                                      flatbuffers::grpc::Message<fb::StatsReply>* response) {
  Caller caller;
  if (auto st = allowed(*ctx, &caller); !st.ok()) return st;
  auto text = control_request(control_path_, scoped("stats", caller));
  if (!text) return {grpc::StatusCode::UNAVAILABLE, text.error().message};
  flatbuffers::grpc::MessageBuilder mb;
  mb.Finish(fb::CreateStatsReply(mb, mb.CreateString(*text)));
  *response = mb.ReleaseMessage<fb::StatsReply>();
  return grpc::Status::OK;
}

grpc::Status ManagementService::End(grpc::ServerContext* ctx, const flatbuffers::grpc::Message<fb::EndRequest>* request,
                                    flatbuffers::grpc::Message<fb::Outcome>* response) {
  Caller caller;
  if (auto st = allowed(*ctx, &caller); !st.ok()) return st;
  const Received<fb::EndRequest> end(*request);
  if (!end) return {grpc::StatusCode::INVALID_ARGUMENT, "not a valid EndRequest"};
  const uint64_t id = end->id();
  auto text = control_request(control_path_, scoped("end " + std::to_string(id), caller));
  if (!text) return {grpc::StatusCode::UNAVAILABLE, text.error().message};
  const bool ok = text->find("\"ok\": true") != std::string::npos;
  *response =
      outcome(ok, ok ? "session " + std::to_string(id) + " is ending" : "no live session " + std::to_string(id));
  return grpc::Status::OK;
}

grpc::Status ManagementService::Drain(grpc::ServerContext* ctx, const flatbuffers::grpc::Message<fb::Empty>*,
                                      flatbuffers::grpc::Message<fb::Outcome>* response) {
  Caller caller;
  if (auto st = allowed(*ctx, &caller); !st.ok()) return st;
  if (!caller.admin)
    return {grpc::StatusCode::PERMISSION_DENIED,
            caller.identity + " is not an --admin: draining bypassd is for the names --admin lists"};
  auto text = control_request(control_path_, "drain");
  if (!text) return {grpc::StatusCode::UNAVAILABLE, text.error().message};
  if (text->find("\"ok\": true") == std::string::npos) {
    *response = outcome(false, *text);
    return grpc::Status::OK;
  }
  if (on_drain_) on_drain_();
  // Wait (as long as the caller's deadline allows) for the live sessions to end.
  while (!ctx->IsCancelled()) {
    SessionListMessage list;
    size_t live = 0;
    if (auto st = session_list(&list, &live, caller); !st.ok()) return st;
    if (live == 0) {
      *response = outcome(true, "drained: no session is live; new sessions are refused");
      return grpc::Status::OK;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return {grpc::StatusCode::CANCELLED, "the drain was given up before the sessions ended"};
}

}  // namespace bypass::net
