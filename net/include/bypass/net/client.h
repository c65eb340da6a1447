// The guest's end of the network path: one gRPC bidirectional stream to a bypass-grpcd relay,
// used by the ICD in place of the ring Channel (send a batch, receive a reply). The handshake
// (hello, welcome or one line of reject) runs on the stream under the connect deadline.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <span>
#include <string>

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

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<fb::Remote::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<FrameMessage, FrameMessage>> stream_;
  transport::Hello peer_;
  Reassembler reassembler_{transport::SessionOptions{}.max_message};

  mutable std::mutex mu_;  // guards writes, finishing and the fields below
  bool finished_ = false;
  bool closed_ = false;
  std::string error_;
  Stats stats_;
};

}  // namespace bypass::net
