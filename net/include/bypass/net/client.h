// The guest's end of the network path: one gRPC bidirectional stream to a bypass-grpcd relay,
// used by the ICD in place of the ring Channel (send a batch, receive a reply). The handshake
// (hello, welcome or one line of reject) runs on the stream under the connect deadline.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>

#include "bypass/net/credentials.h"
#include "bypass/net/frame.h"
#include "bypass/transport/session.h"

namespace bypass::net {

class RemoteStream {
 public:
  // endpoint grpc://HOST:PORT. Errors are one line: kInvalidArgument (endpoint, files), kIo (no
  // server or the connection failed), kRefused (the relay's or bypassd's reason: a token, the
  // versions, a limit), kTimeout.
  static transport::Result<std::unique_ptr<RemoteStream>> connect(const std::string& endpoint,
                                                                  const ClientSecurity& security,
                                                                  const transport::Hello& mine,
                                                                  std::chrono::milliseconds timeout);
  ~RemoteStream();  // close()

  // One sending thread and one receiving thread at a time, as on a Channel.
  transport::Status send(uint32_t kind, std::span<const std::byte> payload);
  // kPeerGone when the connection broke or the relay ended the stream (error_text() says why).
  transport::Status recv(transport::Message& out);
  void close();
  std::string error_text() const;
  const transport::Hello& peer_hello() const { return peer_; }

  struct Stats {
    uint64_t frames_sent = 0, bytes_sent = 0, frames_received = 0, bytes_received = 0;
  };
  Stats stats() const;

 private:
  RemoteStream() = default;
  void finish_locked();
  void idle_main();
  void stop_idle();

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<fb::Remote::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<FrameMessage, FrameMessage>> stream_;
  transport::Hello peer_;
  Reassembler reassembler_{transport::SessionOptions{}.max_message};

  // While no thread of ours waits in gRPC (the guest makes no call), nothing reads the
  // connection, and gRPC 1.51's keepalive watchdog closes it when a ping's answer goes unread for
  // kKeepaliveTimeout: an idle guest lost its device after 0.7 s. This thread polls gRPC's
  // events every kIdlePoll without waiting (docs/network.md, Faults).
  std::thread idle_;
  std::mutex idle_mu_;
  std::condition_variable idle_cv_;
  bool idle_stop_ = false;

  mutable std::mutex mu_;  // guards writes, finishing and the fields below
  bool finished_ = false;
  bool closed_ = false;
  std::string error_;
  Stats stats_;
};

}  // namespace bypass::net
