// The guest's gRPC stream (client.h).
#include "bypass/net/client.h"

#include <cctype>
#include <condition_variable>
#include <thread>

namespace bypass::net {

namespace {

// Cancels a call unless disarmed first: a deadline for one step of a stream that lives on.
class Watchdog {
 public:
  Watchdog(grpc::ClientContext& ctx, std::chrono::milliseconds timeout)
      : thread_([this, &ctx, timeout] {
          std::unique_lock lock(mu_);
          if (!cv_.wait_for(lock, timeout, [this] { return disarmed_; })) {
            fired_ = true;
            ctx.TryCancel();
          }
        }) {}
  ~Watchdog() { disarm(); }
  void disarm() {
    {
      std::lock_guard lock(mu_);
      disarmed_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  bool fired() {
    std::lock_guard lock(mu_);
    return fired_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool disarmed_ = false;
  bool fired_ = false;
  std::thread thread_;
};

std::string status_line(const grpc::Status& s) {
  std::string m = s.error_message();
  if (m.empty()) m = "gRPC status " + std::to_string(static_cast<int>(s.error_code()));
  return m;
}

// Why a channel that never became ready failed: gRPC keeps the last connection error for the
// calls that fail on it ("failed to connect to all addresses; last error: ... Ssl handshake
// failed: ... CERTIFICATE_VERIFY_FAILED"), and a call is the only way to read it. One that
// reconnected in the meantime opens a stream the relay drops for want of a hello.
std::string connect_failure(const std::shared_ptr<grpc::Channel>& channel, const std::string& address, bool tls,
                            std::chrono::system_clock::time_point until) {
  grpc::ClientContext ctx;
  ctx.set_deadline(until);
  auto stub = fb::Remote::NewStub(channel);
  auto stream = stub->Session(&ctx);
  stream->WritesDone();
  FrameMessage ignored;
  while (stream->Read(&ignored)) {
  }
  const std::string why = status_line(stream->Finish());
  std::string lower = why;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (tls && (lower.find("handshake") != std::string::npos || lower.find("ssl") != std::string::npos))
    return "the TLS handshake with " + address +
           " failed (the server's certificate is not signed by BYPASS_TLS_CA or the system's roots): " + why;
  // TLS 1.3: the client's side of the handshake is done before the server checks the client's
  // certificate, so a refused (or missing) one shows here only as a connection the server closed
  // before HTTP/2 began. A server that is not there refuses the connection instead.
  if (tls && lower.find("socket closed") != std::string::npos)
    return "the TLS handshake with " + address +
           " failed: the server closed the connection (it refused our client certificate, BYPASS_TLS_CERT, "
           "or wants one): " +
           why;
  return "the connection to " + address + " failed: " + why;
}

}  // namespace

transport::Result<std::unique_ptr<RemoteStream>> RemoteStream::connect(const std::string& endpoint,
                                                                       const ClientSecurity& security,
                                                                       const transport::Hello& mine,
                                                                       std::chrono::milliseconds timeout) {
  using transport::Status;
  std::string address;
  if (!parse_endpoint(endpoint, address))
    return transport::make_error(Status::kInvalidArgument, "expected grpc://HOST:PORT, got " + endpoint);
  auto creds = client_credentials(security);
  if (!creds) return creds.error();
  std::unique_ptr<RemoteStream> s(new RemoteStream());
  s->channel_ = grpc::CreateCustomChannel(address, *creds, client_arguments());
  // Connect now, and fail at once when the connection fails (no server, a TLS handshake that
  // failed) instead of retrying until the deadline.
  const auto until = std::chrono::system_clock::now() + timeout;
  for (auto state = s->channel_->GetState(true); state != GRPC_CHANNEL_READY; state = s->channel_->GetState(true)) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN)
      return transport::make_error(Status::kIo, connect_failure(s->channel_, address, !security.insecure, until));
    if (!s->channel_->WaitForStateChange(state, until))
      return transport::make_error(
          Status::kTimeout, "no connection to " + address + " within " + std::to_string(timeout.count()) + " ms");
  }
  s->stub_ = fb::Remote::NewStub(s->channel_);
  if (!security.token.empty()) s->ctx_.AddMetadata("authorization", "Bearer " + security.token);
  Watchdog dog(s->ctx_, timeout);
  s->stream_ = s->stub_->Session(&s->ctx_);
  const HelloPayload hello = make_hello(mine);
  FrameMessage reply;
  bool ok = s->stream_->Write(make_frame(kFrameHello, 0, std::as_bytes(std::span(&hello, 1))));
  ok = ok && s->stream_->Read(&reply);
  dog.disarm();
  if (!ok) {
    const grpc::Status st = s->stream_->Finish();
    s->finished_ = true;
    if (dog.fired()) return transport::make_error(Status::kTimeout, "no welcome from " + address + " in time");
    const bool refused = st.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
                         st.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
                         st.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
                         st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
    return transport::make_error(refused ? Status::kRefused : Status::kIo, status_line(st));
  }
  const Received<fb::Frame> f(reply);
  if (!f) return transport::make_error(Status::kProtocolError, "the server's first frame is not a valid FlatBuffer");
  const std::span<const std::byte> data =
      f->data() ? std::as_bytes(std::span(f->data()->data(), f->data()->size())) : std::span<const std::byte>();
  if (f->kind() == kFrameReject) {
    std::string line(reinterpret_cast<const char*>(data.data()), data.size());
    return transport::make_error(Status::kRefused, line);
  }
  uint32_t transport_version = 0;
  std::string why;
  if (f->kind() != kFrameWelcome || !parse_hello(data, s->peer_, transport_version, why))
    return transport::make_error(Status::kProtocolError, "no welcome from " + address + ": " + why);
  s->idle_ = std::thread([raw = s.get()] { raw->idle_main(); });
  return s;
}

RemoteStream::~RemoteStream() {
  close();
  stop_idle();
}

void RemoteStream::idle_main() {
  // A queue of its own that never gets work: AsyncNext with a deadline already past still polls
  // once, without blocking, and with gRPC's epoll poller (one epoll set per process) that reads
  // whatever arrived on the connection, keepalive answers included. A guest thread waiting in
  // recv() is the poller itself meanwhile; this one then returns at once.
  grpc::CompletionQueue cq;
  std::unique_lock lock(idle_mu_);
  while (!idle_cv_.wait_for(lock, kIdlePoll, [this] { return idle_stop_; })) {
    lock.unlock();
    void* tag = nullptr;
    bool ok = false;
    (void)cq.AsyncNext(&tag, &ok, std::chrono::system_clock::now());
    lock.lock();
  }
  cq.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq.Next(&tag, &ok)) {
  }
}

void RemoteStream::stop_idle() {
  {
    std::lock_guard lock(idle_mu_);
    idle_stop_ = true;
  }
  idle_cv_.notify_all();
  if (idle_.joinable()) idle_.join();
}

transport::Status RemoteStream::send(uint32_t kind, std::span<const std::byte> payload) {
  std::lock_guard lock(mu_);
  if (closed_ || finished_) return transport::Status::kClosed;
  if (payload.size() > transport::SessionOptions{}.max_message) return transport::Status::kTooLarge;
  if (!write_message(*stream_, kind, payload)) {
    if (error_.empty()) error_ = "the connection to the server broke";
    return transport::Status::kPeerGone;
  }
  stats_.frames_sent += 1 + payload.size() / kChunkBytes;
  stats_.bytes_sent += payload.size();
  return transport::Status::kOk;
}

transport::Status RemoteStream::recv(transport::Message& out) {
  while (true) {
    FrameMessage frame;
    if (!stream_->Read(&frame)) {
      std::lock_guard lock(mu_);
      finish_locked();
      return closed_ ? transport::Status::kClosed : transport::Status::kPeerGone;
    }
    std::string why;
    switch (reassembler_.add(frame, out, why)) {
      case Reassembler::Step::kMore:
        continue;
      case Reassembler::Step::kError: {
        std::lock_guard lock(mu_);
        error_ = "the server sent " + why;
        ctx_.TryCancel();
        return transport::Status::kProtocolError;
      }
      case Reassembler::Step::kMessage:
        break;
    }
    if (out.kind >= kFrameKindBase) {
      std::lock_guard lock(mu_);
      error_ = "the server sent a stream frame of kind " + std::to_string(out.kind) + " after the handshake";
      ctx_.TryCancel();
      return transport::Status::kProtocolError;
    }
    std::lock_guard lock(mu_);
    stats_.frames_received++;
    stats_.bytes_received += out.payload.size();
    return transport::Status::kOk;
  }
}

// After Read failed: the status says why the stream ended.
void RemoteStream::finish_locked() {
  if (finished_) return;
  finished_ = true;
  const grpc::Status st = stream_->Finish();
  if (error_.empty() && !st.ok()) error_ = status_line(st);
  if (error_.empty()) error_ = "the server ended the stream";
}

void RemoteStream::close() {
  std::lock_guard lock(mu_);
  if (closed_ || !stream_) return;
  closed_ = true;
  if (finished_) return;
  // Half-close: the relay sees the end of our frames, closes its session with a goodbye and
  // ends the stream. A relay that does not answer within a second is given up on (cancelled).
  (void)stream_->WritesDone();
  Watchdog dog(ctx_, std::chrono::milliseconds(1000));
  (void)stream_->Finish();
  finished_ = true;
}

std::string RemoteStream::error_text() const {
  std::lock_guard lock(mu_);
  return error_;
}

RemoteStream::Stats RemoteStream::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

}  // namespace bypass::net
