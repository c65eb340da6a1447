// The management API (docs/network.md#management): a gRPC service bypass-grpcd serves on
// bypassd's management socket, answered from bypassd's control socket (one request line, one
// answer), and the calls bypassctl makes as its client.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "bypass/net/frame.h"
#include "bypass/transport/status.h"

namespace bypass::net {

// One request to bypassd's control socket (stats, sessions, end ID, drain): its whole answer.
transport::Result<std::string> control_request(const std::string& control_path, const std::string& line,
                                               std::chrono::milliseconds timeout = std::chrono::seconds(5));

using SessionListMessage = flatbuffers::grpc::Message<fb::SessionList>;

class ManagementService final : public fb::Management::Service {
 public:
  // Who is calling: `refusal` says why a caller may not use the API at all ("" when it may); a
  // caller who is not an admin sees, and may end, only the network sessions of its `identity`,
  // and may not drain.
  struct Caller {
    std::string refusal;
    bool admin = true;
    std::string identity;
  };
  // `on_drain` runs when a drain was asked for (bypass-grpcd turns its health NOT_SERVING).
  using Authorize = std::function<Caller(grpc::ServerContext&)>;
  ManagementService(std::string control_path, std::function<void()> on_drain, Authorize authorize)
      : control_path_(std::move(control_path)), on_drain_(std::move(on_drain)), authorize_(std::move(authorize)) {}

  grpc::Status Sessions(grpc::ServerContext* ctx, const flatbuffers::grpc::Message<fb::Empty>* request,
                        SessionListMessage* response) override;
  grpc::Status Stats(grpc::ServerContext* ctx, const flatbuffers::grpc::Message<fb::Empty>* request,
                     flatbuffers::grpc::Message<fb::StatsReply>* response) override;
  grpc::Status End(grpc::ServerContext* ctx, const flatbuffers::grpc::Message<fb::EndRequest>* request,
                   flatbuffers::grpc::Message<fb::Outcome>* response) override;
  grpc::Status Drain(grpc::ServerContext* ctx, const flatbuffers::grpc::Message<fb::Empty>* request,
                     flatbuffers::grpc::Message<fb::Outcome>* response) override;

 private:
  // The sessions `caller` may see (all of them for an admin).
  grpc::Status session_list(SessionListMessage* response, size_t* live, const Caller& caller);
  grpc::Status allowed(grpc::ServerContext& ctx, Caller* caller);
  // The control socket's request for this caller: " @IDENTITY" added for one who is not an admin.
  static std::string scoped(const std::string& request, const Caller& caller);
  std::string control_path_;
  std::function<void()> on_drain_;
  Authorize authorize_;
};

}  // namespace bypass::net
