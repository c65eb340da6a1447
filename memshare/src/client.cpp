#include "bypass/memshare/client.h"

#include <poll.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "bypass/base/unix_socket.h"
#include "bypass/memshare/page_ranges.h"
#include "bypass/memshare/socket_io.h"
#include "layout.h"
#include "protocol.h"

namespace bypass::memshare {

namespace detail {

struct Connection {
  base::UniqueFd socket;
  DomainId domain = kNoDomain;
  base::Mapping control_view;
  std::mutex mutex;  // one request at a time; guards everything below
  std::vector<uint32_t> free_slots;
  std::vector<uint32_t> abandoned_slots;  // handles dropped before completion
  uint64_t next_ticket = 1;
  uint32_t revocations_seen = 0;
  std::unordered_map<uint32_t, MappingState*> mappings;  // by mapping slot
  bool broken = false;                                   // a protocol error or closed socket: every later request fails

  ControlPage* control() const { return reinterpret_cast<ControlPage*>(control_view.data()); }

  struct Reply {
    std::byte body[64];
    size_t size = 0;
    base::UniqueFd fd;
  };

  // Sends one request and, unless one-way, reads its reply. Mutex held by the caller.
  Result<void> send(wire::Op op, const void* body, size_t size, std::span<const std::byte> trailing = {}, int fd = -1) {
    if (broken) return make_error(Errc::kDisconnected, "connection to the memshare service is closed");
    std::vector<std::byte> message(sizeof(wire::MessageHeader) + size + trailing.size());
    const wire::MessageHeader header{static_cast<uint32_t>(op), 0};
    std::memcpy(message.data(), &header, sizeof header);
    if (size) std::memcpy(message.data() + sizeof header, body, size);
    if (!trailing.empty()) std::memcpy(message.data() + sizeof header + size, trailing.data(), trailing.size());
    const int fds[1] = {fd};
    auto sent = send_message(socket.get(), message, fd >= 0 ? std::span<const int>(fds) : std::span<const int>());
    if (!sent) broken = true;
    return sent;
  }

  Result<Reply> call(wire::Op op, const void* body, size_t size, std::span<const std::byte> trailing = {},
                     int fd = -1) {
    if (auto sent = send(op, body, size, trailing, fd); !sent) {
      // A service that refused this connection before reading from it (at its max_domains) left
      // its answer in the socket and closed it: that answer says more than the failed send.
      pollfd answer{socket.get(), POLLIN, 0};
      if (::poll(&answer, 1, 0) != 1 || !(answer.revents & POLLIN)) return sent.error();
    }
    std::byte buffer[sizeof(wire::MessageHeader) + wire::kMaxErrorText];
    std::vector<base::UniqueFd> fds;
    auto n = recv_message(socket.get(), buffer, fds);
    if (!n) {
      broken = true;
      if (n.code() == Errc::kDisconnected)
        return make_error(Errc::kDisconnected, "the memshare service closed the connection");
      return n.error();
    }
    wire::MessageHeader reply_header{};
    if (*n < sizeof reply_header) {
      broken = true;
      return make_error(Errc::kProtocol, "runt reply");
    }
    std::memcpy(&reply_header, buffer, sizeof reply_header);
    if (reply_header.op != static_cast<uint32_t>(op)) {
      broken = true;
      return make_error(Errc::kProtocol, "reply to the wrong request");
    }
    if (reply_header.error != 0) {
      // The service's message already starts with the code's name.
      return Error{static_cast<Errc>(reply_header.error),
                   std::string(reinterpret_cast<const char*>(buffer) + sizeof reply_header, *n - sizeof reply_header)};
    }
    Reply reply;
    reply.size = std::min(*n - sizeof reply_header, sizeof reply.body);
    std::memcpy(reply.body, buffer + sizeof reply_header, reply.size);
    if (!fds.empty()) reply.fd = std::move(fds[0]);
    return reply;
  }

  template <typename T>
  static Result<T> body_of(const Reply& reply) {
    if (reply.size != sizeof(T)) return make_error(Errc::kProtocol, "reply of the wrong size");
    T body;
    std::memcpy(&body, reply.body, sizeof body);
    return body;
  }

  size_t process_revocations_locked();
};

struct MappingState {
  std::shared_ptr<Connection> conn;
  Name name;
  Access access = Access::kRead;
  std::byte* data = nullptr;
  uint64_t size = 0;
  uint32_t slot = 0;
  uint32_t generation = 0;
  bool torn_down = false;

  ~MappingState() {
    if (!conn) return;
    std::lock_guard lock(conn->mutex);
    if (data != nullptr) ::munmap(data, size);
    conn->mappings.erase(slot);
    const wire::UnmapRequest req{slot, 0};
    (void)conn->send(wire::Op::kUnmap, &req, sizeof req);
  }
  MappingSlot& control() const { return conn->control()->mappings[slot]; }
};

struct ShadowState {
  std::shared_ptr<Connection> conn;
  uint32_t id = 0;
  Name name;
  Access access = Access::kRead;
  base::Mapping view;
  std::unique_ptr<DirtyTracker> tracker;  // empty for read-only shadows

  ~ShadowState() {
    tracker.reset();  // stop tracking before the view goes away
    view.reset();
    if (!conn) return;  // never opened
    std::lock_guard lock(conn->mutex);
    const wire::ShadowCloseRequest req{id, 0};
    (void)conn->send(wire::Op::kShadowClose, &req, sizeof req);
  }
};

size_t Connection::process_revocations_locked() {
  const uint32_t count = control()->header.revocations.load(std::memory_order_acquire);  // pairs with the service
  if (count == revocations_seen) return 0;
  revocations_seen = count;
  size_t torn = 0;
  for (auto& [slot, state] : mappings) {
    if (state->torn_down || state->control().revoked.load(std::memory_order_acquire) == 0) continue;
    // Zero pages over the same range: stale pointers stay readable, the owner's memory goes.
    void* p = ::mmap(state->data, state->size, PROT_READ, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p != MAP_FAILED) {
      state->torn_down = true;
      ++torn;
    }
  }
  return torn;
}

}  // namespace detail

using detail::Connection;

// ---------------- Mapping ----------------

Mapping::~Mapping() = default;
std::byte* Mapping::data() const { return state_ ? state_->data : nullptr; }
uint64_t Mapping::size() const { return state_ ? state_->size : 0; }
Access Mapping::access() const { return state_ ? state_->access : Access::kRead; }
const Name& Mapping::name() const {
  static const Name kEmpty;
  return state_ ? state_->name : kEmpty;
}

bool Mapping::revoked() const {
  return state_ && (state_->torn_down || state_->control().revoked.load(std::memory_order_acquire) != 0);
}

bool Mapping::stale() const {
  return state_ && state_->control().generation.load(std::memory_order_acquire) != state_->generation;
}

Result<void> Mapping::read(uint64_t offset, std::span<std::byte> out) const {
  if (!state_) return make_error(Errc::kInvalidArgument, "empty mapping");
  if (revoked()) return make_error(Errc::kDomainGone, "name " + state_->name.to_string() + " was revoked");
  if (!range_fits(offset, out.size(), state_->size)) return make_error(Errc::kOutOfRange, "read outside the mapping");
  std::memcpy(out.data(), state_->data + offset, out.size());
  return {};
}

Result<void> Mapping::write(uint64_t offset, std::span<const std::byte> in) const {
  if (!state_) return make_error(Errc::kInvalidArgument, "empty mapping");
  if (state_->access != Access::kReadWrite) return make_error(Errc::kAccessDenied, "mapping is read-only");
  if (revoked()) return make_error(Errc::kDomainGone, "name " + state_->name.to_string() + " was revoked");
  if (!range_fits(offset, in.size(), state_->size)) return make_error(Errc::kOutOfRange, "write outside the mapping");
  std::memcpy(state_->data + offset, in.data(), in.size());
  return {};
}

// ---------------- Shadow ----------------

Shadow::~Shadow() = default;
std::byte* Shadow::data() const { return state_ ? state_->view.data() : nullptr; }
uint64_t Shadow::size() const { return state_ ? state_->view.size() : 0; }
const Name& Shadow::name() const {
  static const Name kEmpty;
  return state_ ? state_->name : kEmpty;
}
Access Shadow::access() const { return state_ ? state_->access : Access::kRead; }
TrackingMethod Shadow::method() const {
  return state_ && state_->tracker ? state_->tracker->method() : TrackingMethod::kAuto;
}

// ---------------- TransferHandle ----------------

TransferHandle::TransferHandle(TransferHandle&& other) noexcept
    : conn_(std::move(other.conn_)),
      slot_(other.slot_),
      ticket_(other.ticket_),
      holding_(std::exchange(other.holding_, false)),
      result_(std::move(other.result_)) {}

TransferHandle& TransferHandle::operator=(TransferHandle&& other) noexcept {
  if (this != &other) {
    release_slot();
    conn_ = std::move(other.conn_);
    slot_ = other.slot_;
    ticket_ = other.ticket_;
    holding_ = std::exchange(other.holding_, false);
    result_ = std::move(other.result_);
  }
  return *this;
}

TransferHandle::~TransferHandle() { release_slot(); }

void TransferHandle::release_slot() {
  if (!holding_) return;
  holding_ = false;
  std::lock_guard lock(conn_->mutex);
  CompletionSlot& s = conn_->control()->completions[slot_];
  if (s.state.load(std::memory_order_acquire) == kSlotDone) {
    s.state.store(kSlotFree, std::memory_order_relaxed);
    conn_->free_slots.push_back(slot_);
  } else {
    conn_->abandoned_slots.push_back(slot_);
  }
}

std::optional<Result<uint64_t>> TransferHandle::poll() {
  if (result_) return result_;
  if (!holding_) return Result<uint64_t>(make_error(Errc::kInvalidArgument, "empty transfer handle"));
  CompletionSlot& s = conn_->control()->completions[slot_];
  if (s.state.load(std::memory_order_acquire) != kSlotDone) return std::nullopt;  // pairs with the service's exchange
  if (s.ticket != ticket_) {
    result_ = Result<uint64_t>(make_error(Errc::kProtocol, "completion for another transfer"));
  } else if (s.error != 0) {
    char detail[kCompletionDetailBytes];
    std::memcpy(detail, s.detail, sizeof detail);
    detail[sizeof detail - 1] = '\0';
    result_ = Result<uint64_t>(Error{static_cast<Errc>(s.error), detail});
  } else {
    result_ = Result<uint64_t>(s.bytes);
  }
  release_slot();
  return result_;
}

Result<uint64_t> TransferHandle::wait(std::chrono::nanoseconds timeout) {
  using Clock = std::chrono::steady_clock;
  const bool forever = timeout == std::chrono::nanoseconds::max();
  const auto deadline = forever ? Clock::time_point::max() : Clock::now() + timeout;
  for (;;) {
    if (auto r = poll()) return *r;
    std::atomic<uint32_t>& state = conn_->control()->completions[slot_].state;
    uint32_t expected = kSlotPending;
    // Announce the sleeper so the service knows to wake us (it wakes on seeing kSlotWaiting).
    if (!state.compare_exchange_strong(expected, kSlotWaiting, std::memory_order_acq_rel) && expected == kSlotDone) {
      continue;
    }
    // Sleep in slices so a vanished service is noticed.
    int64_t slice = 100'000'000;
    if (!forever) {
      const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - Clock::now()).count();
      if (left <= 0) return make_error(Errc::kTimeout, "transfer " + std::to_string(ticket_) + " still running");
      slice = std::min<int64_t>(slice, left);
    }
    futex_wait(&state, kSlotWaiting, slice);
    if (state.load(std::memory_order_acquire) != kSlotDone) {
      pollfd pfd{conn_->socket.get(), 0, 0};
      if (::poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLERR))) {
        return make_error(Errc::kDisconnected,
                          "the memshare service went away before transfer " + std::to_string(ticket_) + " completed");
      }
    }
  }
}

// ---------------- Client ----------------

Client::~Client() = default;

Result<Client> Client::connect(const std::string& socket_path, std::string_view label) {
  auto socket = base::connect_unix(socket_path, SOCK_SEQPACKET);
  if (!socket) return from_base(socket.error());
  return adopt(std::move(*socket), label);
}

Result<Client> Client::adopt(base::UniqueFd socket, std::string_view label) {
  if (!socket.valid()) return make_error(Errc::kInvalidArgument, "no socket");
  auto conn = std::make_shared<Connection>();
  conn->socket = std::move(socket);
  wire::RegisterRequest req{};
  req.version = kProtocolVersion;
  std::memcpy(req.label, label.data(), std::min(label.size(), sizeof req.label - 1));
  std::lock_guard lock(conn->mutex);
  auto reply = conn->call(wire::Op::kRegister, &req, sizeof req);
  if (!reply) return reply.error();
  auto body = Connection::body_of<wire::RegisterReply>(*reply);
  if (!body) return body.error();
  if (!reply->fd.valid() || body->control_bytes != kControlPageBytes || body->completion_slots != kCompletionSlots ||
      body->mapping_slots != kMappingSlots) {
    return make_error(Errc::kProtocol, "registration reply does not match this library's control page layout");
  }
  auto view = map_memory(reply->fd.get(), 0, kControlPageBytes, true);
  if (!view) return view.error();
  conn->control_view = std::move(*view);
  if (conn->control()->header.magic != kControlMagic || conn->control()->header.version != kProtocolVersion) {
    return make_error(Errc::kProtocol, "control page has the wrong magic or version");
  }
  conn->domain = body->domain;
  conn->revocations_seen = conn->control()->header.revocations.load(std::memory_order_acquire);
  conn->free_slots.reserve(kCompletionSlots);
  for (uint32_t i = kCompletionSlots; i > 0; --i) conn->free_slots.push_back(i - 1);
  return Client(std::move(conn));
}

DomainId Client::domain() const { return conn_ ? conn_->domain : kNoDomain; }

size_t Client::process_revocations() {
  std::lock_guard lock(conn_->mutex);
  return conn_->process_revocations_locked();
}

Result<Name> Client::name(int fd, uint64_t offset, uint64_t size) {
  if (fd < 0) return make_error(Errc::kInvalidArgument, "invalid file descriptor");
  const wire::NameRequest req{offset, size};
  std::lock_guard lock(conn_->mutex);
  conn_->process_revocations_locked();
  auto reply = conn_->call(wire::Op::kName, &req, sizeof req, {}, fd);
  if (!reply) return reply.error();
  auto body = Connection::body_of<wire::NameReply>(*reply);
  if (!body) return body.error();
  return wire::from_wire(body->name);
}

Result<void> Client::grant(const Name& name, DomainId domain, Access access) {
  const wire::GrantRequest req{wire::to_wire(name), domain, static_cast<uint32_t>(access), 0};
  std::lock_guard lock(conn_->mutex);
  conn_->process_revocations_locked();
  auto reply = conn_->call(wire::Op::kGrant, &req, sizeof req);
  if (!reply) return reply.error();
  return {};
}

Result<void> Client::revoke(const Name& name, DomainId domain) {
  const wire::RevokeRequest req{wire::to_wire(name), domain};
  std::lock_guard lock(conn_->mutex);
  conn_->process_revocations_locked();
  auto reply = conn_->call(wire::Op::kRevoke, &req, sizeof req);
  if (!reply) return reply.error();
  return {};
}

Result<void> Client::release(const Name& name) {
  const wire::ReleaseRequest req{wire::to_wire(name)};
  std::lock_guard lock(conn_->mutex);
  conn_->process_revocations_locked();
  auto reply = conn_->call(wire::Op::kRelease, &req, sizeof req);
  if (!reply) return reply.error();
  return {};
}

Result<NameInfo> Client::query(const Name& name) {
  const wire::QueryRequest req{wire::to_wire(name)};
  std::lock_guard lock(conn_->mutex);
  conn_->process_revocations_locked();
  auto reply = conn_->call(wire::Op::kQuery, &req, sizeof req);
  if (!reply) return reply.error();
  auto body = Connection::body_of<wire::QueryReply>(*reply);
  if (!body) return body.error();
  return NameInfo{body->size, body->owner, body->generation, static_cast<Access>(body->access), body->is_image != 0};
}

namespace {
// Sends kMap and mmaps the answer; `at` asks for that address (MAP_FIXED) when not null.
Result<std::unique_ptr<detail::MappingState>> map_locked(const std::shared_ptr<Connection>& conn, const Name& name,
                                                         Access access, std::byte* at, uint64_t at_size) {
  const wire::MapRequest req{wire::to_wire(name), static_cast<uint32_t>(access), 0};
  auto reply = conn->call(wire::Op::kMap, &req, sizeof req);
  if (!reply) return reply.error();
  auto body = Connection::body_of<wire::MapReply>(*reply);
  if (!body) return body.error();
  const auto unmap_slot = [&] {
    const wire::UnmapRequest un{body->slot, 0};
    (void)conn->send(wire::Op::kUnmap, &un, sizeof un);
  };
  if (!reply->fd.valid() || body->slot >= kMappingSlots) {
    unmap_slot();
    return make_error(Errc::kProtocol, "map reply without a descriptor");
  }
  const int prot = access == Access::kReadWrite ? PROT_READ | PROT_WRITE : PROT_READ;
  const bool fixed = at != nullptr && page_ceil(at_size) == page_ceil(body->size);
  void* p = ::mmap(fixed ? at : nullptr, body->size, prot, MAP_SHARED | (fixed ? MAP_FIXED : 0), reply->fd.get(),
                   static_cast<off_t>(body->offset));
  if (p == MAP_FAILED) {
    const int e = errno;
    unmap_slot();
    return io_error("mmap of name " + name.to_string(), e);
  }
  auto state = std::make_unique<detail::MappingState>();
  state->conn = conn;
  state->name = name;
  state->access = access;
  state->data = static_cast<std::byte*>(p);
  state->size = body->size;
  state->slot = body->slot;
  state->generation = body->generation;
  return state;
}
}  // namespace

Result<Mapping> Client::map(const Name& name, Access access) {
  std::lock_guard lock(conn_->mutex);
  conn_->process_revocations_locked();
  auto state = map_locked(conn_, name, access, nullptr, 0);
  if (!state) return state.error();
  Mapping mapping;
  conn_->mappings[(*state)->slot] = state->get();
  mapping.state_ = std::shared_ptr<detail::MappingState>(std::move(*state));
  return mapping;
}

Result<void> Client::refresh(Mapping& mapping) {
  if (!mapping.state_) return make_error(Errc::kInvalidArgument, "empty mapping");
  if (mapping.state_->conn != conn_) return make_error(Errc::kInvalidArgument, "mapping belongs to another client");
  if (!mapping.stale()) return {};
  auto& old = mapping.state_;
  std::unique_ptr<detail::MappingState> fresh;
  {
    std::lock_guard lock(conn_->mutex);
    conn_->process_revocations_locked();
    if (old->torn_down) return make_error(Errc::kDomainGone, "name " + old->name.to_string() + " was revoked");
    auto state = map_locked(conn_, old->name, old->access, old->data, old->size);
    if (!state) return state.error();
    fresh = std::move(*state);
    conn_->mappings[fresh->slot] = fresh.get();
    if (fresh->data == old->data) old->data = nullptr;  // replaced in place: nothing left to unmap
  }
  mapping.state_ = std::shared_ptr<detail::MappingState>(std::move(fresh));  // old state unmaps and frees its slot
  return {};
}

Result<uint32_t> Client::rebind(const Name& name, int fd, uint64_t offset, uint64_t size) {
  if (fd < 0) return make_error(Errc::kInvalidArgument, "invalid file descriptor");
  const wire::RebindRequest req{wire::to_wire(name), offset, size};
  std::lock_guard lock(conn_->mutex);
  conn_->process_revocations_locked();
  auto reply = conn_->call(wire::Op::kRebind, &req, sizeof req, {}, fd);
  if (!reply) return reply.error();
  auto body = Connection::body_of<wire::RebindReply>(*reply);
  if (!body) return body.error();
  return body->generation;
}

Result<Shadow> Client::open_shadow(const Name& name, Access access, TrackingMethod method) {
  const wire::ShadowOpenRequest req{wire::to_wire(name), static_cast<uint32_t>(access), 0};
  auto state = std::make_shared<detail::ShadowState>();
  {
    std::lock_guard lock(conn_->mutex);
    conn_->process_revocations_locked();
    auto reply = conn_->call(wire::Op::kShadowOpen, &req, sizeof req);
    if (!reply) return reply.error();
    auto body = Connection::body_of<wire::ShadowOpenReply>(*reply);
    if (!body) return body.error();
    if (!reply->fd.valid()) return make_error(Errc::kProtocol, "shadow reply without a descriptor");
    state->conn = conn_;  // from here on the state's destructor closes the shadow
    state->id = body->shadow;
    state->name = name;
    state->access = access;
    auto view = map_memory(reply->fd.get(), 0, body->size, access == Access::kReadWrite);
    if (!view) return view.error();
    state->view = std::move(*view);
  }
  if (access == Access::kReadWrite) {
    auto tracker = make_dirty_tracker(state->view.data(), state->view.size(), method);
    if (!tracker) return tracker.error();
    state->tracker = std::move(*tracker);
  }
  Shadow shadow;
  shadow.state_ = std::move(state);
  return shadow;
}

Result<BarrierStats> Client::barrier(Shadow& shadow, BarrierDirection direction, Range range) {
  if (!shadow.state_) return make_error(Errc::kInvalidArgument, "empty shadow");
  detail::ShadowState& s = *shadow.state_;
  if (s.conn != conn_) return make_error(Errc::kInvalidArgument, "shadow belongs to another client");
  std::vector<PageRange> runs;
  if (direction == BarrierDirection::kWrite) {
    if (!s.tracker) return make_error(Errc::kAccessDenied, "shadow is read-only; a write barrier needs write access");
    if (auto r = s.tracker->collect(range, runs); !r) return r.error();
  } else if (direction == BarrierDirection::kRead) {
    // An invalidate wins over local writes not yet moved: forget them.
    if (s.tracker) {
      if (auto r = s.tracker->collect(range, runs); !r) return r.error();
      runs.clear();
    }
  } else {
    return make_error(Errc::kInvalidArgument, "unknown barrier direction");
  }
  BarrierStats total;
  std::lock_guard lock(conn_->mutex);
  conn_->process_revocations_locked();
  size_t sent = 0;
  do {
    const size_t count = std::min(runs.size() - sent, wire::kMaxBarrierRuns);
    const wire::BarrierRequest req{s.id,       static_cast<uint32_t>(direction), range.offset,
                                   range.size, static_cast<uint32_t>(count),     0};
    const auto trailing = std::as_bytes(std::span<const PageRange>(runs.data() + sent, count));
    auto reply = conn_->call(wire::Op::kBarrier, &req, sizeof req, trailing);
    if (!reply) return reply.error();
    auto body = Connection::body_of<wire::BarrierReply>(*reply);
    if (!body) return body.error();
    total.bytes += body->bytes;
    total.pages += body->pages;
    total.ranges += body->ranges;
    sent += count;
  } while (sent < runs.size());
  // The service wrote through its own view; only content hashing would see that as a write.
  if (direction == BarrierDirection::kRead && s.tracker) {
    if (auto r = s.tracker->written_elsewhere(range); !r) return r.error();
  }
  return total;
}

Result<TransferHandle> Client::transfer(const Name& src, const Name& dst, std::span<const CopyRange> ranges) {
  if (ranges.size() > wire::kMaxTransferRanges) {
    return make_error(Errc::kInvalidArgument,
                      "at most " + std::to_string(wire::kMaxTransferRanges) + " ranges per transfer");
  }
  std::lock_guard lock(conn_->mutex);
  conn_->process_revocations_locked();
  // Backpressure: with every slot in use, wait for a dropped handle's transfer to finish. Slots
  // held by live handles are the caller's to release, so with none dropped it is kBusy.
  while (conn_->free_slots.empty()) {
    auto& abandoned = conn_->abandoned_slots;
    for (auto it = abandoned.begin(); it != abandoned.end();) {
      CompletionSlot& s = conn_->control()->completions[*it];
      if (s.state.load(std::memory_order_acquire) == kSlotDone) {  // pairs with the service's exchange
        s.state.store(kSlotFree, std::memory_order_relaxed);
        conn_->free_slots.push_back(*it);
        it = abandoned.erase(it);
      } else {
        ++it;
      }
    }
    if (!conn_->free_slots.empty()) break;
    if (abandoned.empty()) {
      return make_error(Errc::kBusy, std::to_string(kCompletionSlots) + " transfers already in flight");
    }
    std::atomic<uint32_t>& state = conn_->control()->completions[abandoned.front()].state;
    uint32_t expected = kSlotPending;
    state.compare_exchange_strong(expected, kSlotWaiting, std::memory_order_acq_rel);
    futex_wait(&state, kSlotWaiting, 100'000'000);
    if (state.load(std::memory_order_acquire) != kSlotDone) {
      pollfd pfd{conn_->socket.get(), 0, 0};
      if (::poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLERR))) {
        return make_error(Errc::kDisconnected, "the memshare service went away");
      }
    }
  }
  const uint32_t slot = conn_->free_slots.back();
  const uint64_t ticket = conn_->next_ticket++;
  // Stored before the request is sent; the service only completes it after receiving it.
  conn_->control()->completions[slot].state.store(kSlotPending, std::memory_order_relaxed);
  const wire::TransferRequest req{wire::to_wire(src), wire::to_wire(dst), ticket, slot,
                                  static_cast<uint32_t>(ranges.size())};
  if (auto sent = conn_->send(wire::Op::kTransfer, &req, sizeof req, std::as_bytes(ranges)); !sent) {
    conn_->control()->completions[slot].state.store(kSlotFree, std::memory_order_relaxed);
    return sent.error();
  }
  conn_->free_slots.pop_back();
  TransferHandle handle;
  handle.conn_ = conn_;
  handle.slot_ = slot;
  handle.ticket_ = ticket;
  handle.holding_ = true;
  return handle;
}

}  // namespace bypass::memshare
