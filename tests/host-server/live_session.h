// A real Session on lavapipe for the host's unit tests: the session thread runs Session::run on
// one end of a channel pair (as a worker does), the test is the guest on the other end and
// speaks the protocol record by record (tests/icd/raw_protocol.h). No bypassd, no ICD.
#pragma once

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bypass/host/config.h"
#include "bypass/host/session.h"
#include "bypass/transport/session.h"
#include "raw_protocol.h"

namespace bypass::host::test {

using bypass::test::append_record;
using bypass::test::IdentityHandles;
using bypass::test::kDeviceId;
using bypass::test::kInstanceId;
using bypass::test::kPhysicalDeviceId;

// Ids the tests give objects (guest-chosen, like the ICD's).
inline constexpr uint64_t kQueueId = 400, kFenceId = 500, kEventId = 600, kPoolId = 700, kCommandBufferId = 800,
                          kMemoryId = 900;

template <class H>
H as_handle(uint64_t id) {
  return reinterpret_cast<H>(static_cast<uintptr_t>(id));
}

struct Reply {
  wire::ReplyHeader header{};
  std::vector<std::byte> payload;  // after the header
  template <class T>
  T as() const {
    T t{};
    std::memcpy(&t, payload.data(), std::min(sizeof(T), payload.size()));
    return t;
  }
};

inline ServerConfig test_config() {
  ServerConfig c;
  c.ring_bytes = 1 << 20;
  c.max_message = 8 << 20;
  c.max_objects = 4096;
  c.max_memory_bytes = 256 << 20;
  c.send_timeout_ms = 2000;
  return c;
}

class LiveSession {
 public:
  static constexpr auto kWait = std::chrono::seconds(20);

  explicit LiveSession(ServerConfig config = test_config()) : config_(config) {
    auto pair = transport::make_channel_pair(transport::SessionOptions{config_.ring_bytes, config_.max_message});
    if (!pair) throw std::runtime_error("channel pair: " + pair.error().message);
    guest_.emplace(std::move(pair->guest));
    session_ = std::make_unique<Session>(1, std::move(pair->host), config_);
    host_ = std::thread([this] {
      session_->run();
      done_.store(true);
    });
  }

  ~LiveSession() {
    guest_->close();
    if (host_.joinable()) host_.join();
  }

  Session& session() { return *session_; }
  transport::Channel& guest() { return *guest_; }
  bool run_returned() const { return done_.load(); }
  // Waits for Session::run to return (after the guest left or the session failed).
  bool join_within(std::chrono::milliseconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (!done_.load()) {
      if (std::chrono::steady_clock::now() > end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (host_.joinable()) host_.join();
    return true;
  }

  // An instance, its physical device and a device with one queue (tests/icd/raw_protocol.h),
  // with `extensions` and the feature chain `features`.
  bool setup_device(std::vector<const char*> extensions = {}, const void* features = nullptr) {
    return bypass::test::setup_device(
        [&](uint16_t command, const void* data, size_t size) { return call(command, data, size).has_value(); },
        std::move(extensions), features);
  }

  // Adds a record to the batch being built; send() sends it.
  void add(uint16_t command, const void* data, size_t size, uint16_t flags = 0) {
    append_record(batch_, command, flags, data, size);
  }
  void add(uint16_t command, const wire::Builder& b, uint16_t flags = 0) {
    add(command, b.GetBufferPointer(), b.GetSize(), flags);
  }
  template <class Fixed>
  void add_fixed(uint16_t command, const Fixed& f) {
    add(command, &f, sizeof(f), wire::kRecordFixed);
  }
  void add_reply(uint16_t command, const void* data, size_t size) { add(command, data, size, wire::kRecordWantsReply); }
  void add_reply(uint16_t command, const wire::Builder& b) { add(command, b, wire::kRecordWantsReply); }
  bool send() { return send_bytes(std::exchange(batch_, {})); }
  bool send_bytes(const std::vector<std::byte>& bytes, uint32_t kind = wire::kMsgBatch) {
    return guest_->send(kind, bytes, transport::deadline_after(kWait)) == transport::Status::kOk;
  }

  // The next reply; nullopt when the session ended first (error_ holds its reason) or none came
  // within `limit`.
  std::optional<Reply> next_reply(std::chrono::milliseconds limit = kWait) {
    transport::Message msg;
    while (true) {
      const transport::Status st = guest_->recv(msg, transport::deadline_after(limit));
      if (st != transport::Status::kOk) return std::nullopt;
      if (msg.kind == wire::kMsgError) {
        error_.assign(reinterpret_cast<const char*>(msg.payload.data()), msg.payload.size());
        return std::nullopt;
      }
      if (msg.kind != wire::kMsgReply || msg.payload.size() < sizeof(wire::ReplyHeader)) continue;
      Reply r;
      std::memcpy(&r.header, msg.payload.data(), sizeof(r.header));
      r.payload.assign(msg.payload.begin() + sizeof(r.header), msg.payload.end());
      return r;
    }
  }

  // One record that wants a reply, sent on its own; its reply.
  std::optional<Reply> call(uint16_t command, const void* data, size_t size) {
    add_reply(command, data, size);
    if (!send()) return std::nullopt;
    return next_reply();
  }
  std::optional<Reply> call(uint16_t command, const wire::Builder& b) {
    return call(command, b.GetBufferPointer(), b.GetSize());
  }

  // The reason the session gave the guest when it ended (kMsgError, the detail), waiting for
  // it: "" when none came.
  std::string end_reason() {
    while (error_.empty() && next_reply()) {
    }
    return error_;
  }
  // The kind of end the session recorded (EndReason), once run() has returned; kNone when it did
  // not return within a few seconds.
  EndReason end_kind() {
    if (!join_within(std::chrono::seconds(5))) return EndReason::kNone;
    return session_->end_reason();
  }

  // The fd the host sent with `tag` (memory it shares), or -1.
  int take_fd(uint64_t tag) {
    uint64_t got = 0;
    std::vector<int> fds;
    if (guest_->recv_fds(got, fds, transport::deadline_after(kWait)) != transport::Status::kOk || fds.size() != 1)
      return -1;
    if (got != tag) {
      close(fds[0]);
      return -1;
    }
    return fds[0];
  }

  IdentityHandles ids;
  wire::Builder b{4096};

 private:
  ServerConfig config_;
  std::optional<transport::Channel> guest_;
  std::unique_ptr<Session> session_;
  std::thread host_;
  std::atomic<bool> done_{false};
  std::vector<std::byte> batch_;
  std::string error_;
};

}  // namespace bypass::host::test
