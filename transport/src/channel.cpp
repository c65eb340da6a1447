#include "bypass/transport/channel.h"

#include <poll.h>
#include <sched.h>
#include <sys/rseq.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <new>

#include "bypass/base/text.h"
#include "channel_impl.h"
#include "futex.h"
#include "socket_io.h"

namespace bypass::transport {

using layout::RecordHeader;

namespace {

enum class Ready { kYes, kNo, kCorrupt };

uint32_t current_cpu() {
  // glibc (2.35+) registers rseq for every thread; the kernel keeps cpu_id current in it. Reading
  // it directly is a TLS load, where sched_getcpu() is a call through the PLT on every message.
  if (__rseq_size > 0) {
    const auto* area = reinterpret_cast<const volatile struct rseq*>(
        static_cast<const char*>(__builtin_thread_pointer()) + __rseq_offset);
    const uint32_t cpu = area->cpu_id;
    if (static_cast<int32_t>(cpu) >= 0) return cpu;  // negative: RSEQ_CPU_ID_UNINITIALIZED etc.
  }
  const int cpu = sched_getcpu();
  return cpu < 0 ? layout::kUnknownCpu : static_cast<uint32_t>(cpu);
}

// Records the CPU we run on, for the peer's spin policy. Called on every send and recv so the
// hint is fresh while the peer waits for us. Returns the CPU, or kUnknownCpu.
uint32_t note_cpu(const Channel::Impl& s) {
  const uint32_t mine = current_cpu();
  if (mine == layout::kUnknownCpu) return mine;
  // Relaxed: only a hint; written only on change so the line stays shared in the peer's cache.
  if (s.my_cpu->load(std::memory_order_relaxed) != mine) s.my_cpu->store(mine, std::memory_order_relaxed);
  return mine;
}

// Whether the peer last ran on our CPU: then spinning would only keep it from running.
bool note_cpu_and_check_colocated(const Channel::Impl& s) {
  const uint32_t mine = note_cpu(s);
  return mine != layout::kUnknownCpu && s.peer_cpu->load(std::memory_order_relaxed) == mine;
}

// Waits until check() says kYes: spins (adaptive budget), then sleeps on the ring's wait word
// (futex or polling, as the link does it) in slices, asking the link between slices whether
// the peer died. `Ring` is
// RingProducer (waiting for space) or RingConsumer (waiting for data).
template <typename Ring, typename Check>
Status wait_for(const Channel::Impl& s, Ring& ring, SpinState& spin, Counter& sleeps, Counter& announces,
                Deadline deadline, Check&& check) {
  const bool timed = deadline != kForever;
  if (timed && Clock::now() >= deadline) return check() == Ready::kYes ? Status::kOk : Status::kTimeout;
  const bool colocated = note_cpu_and_check_colocated(s);
  const uint32_t budget = colocated ? 0 : spin.budget;
  for (uint32_t i = 0; i < budget; ++i) {
    detail::cpu_relax();
    const Ready r = check();
    if (r == Ready::kYes) {
      spin.on_hit(i);
      return Status::kOk;
    }
    if (r == Ready::kCorrupt) return Status::kProtocolError;
    if (timed && (i & 127) == 127 && Clock::now() >= deadline) return Status::kTimeout;
  }
  const Deadline sleep_start = Clock::now();
  // Called once the wait ends after the spin phase: teaches the spin budget.
  auto learn = [&] {
    // Only a wait on separate CPUs says anything about how long to spin.
    if (!note_cpu_and_check_colocated(s) && !colocated && spin.max != 0) spin.on_slept(Clock::now() - sleep_start);
  };
  // The check found work (or a corrupt ring) after the spin phase.
  auto found = [&](Ready r) {
    ring.cancel_sleep();
    learn();
    return r == Ready::kYes ? Status::kOk : Status::kProtocolError;
  };
  bool slept_out = false;
  bool after_sleep = false;
  for (;;) {
    // After a sleep: look before announcing again. Announcing costs a heavy fence (membarrier:
    // an IPI to the peer's CPU) that a woken side would otherwise pay on every wake-up, after
    // its data had arrived. The announcement may still stand (a timeout, or a wake-up for an
    // earlier bump): withdraw it, as after a re-check that found work.
    if (after_sleep) {
      if (const Ready r = check(); r != Ready::kNo) return found(r);
    }
    const uint32_t token = ring.announce_sleep();
    ++announces;
    // Re-check after announcing: the other side either sees our flag or we see its update.
    Ready r = check();
    if (r != Ready::kNo) return found(r);
    const Deadline now = Clock::now();
    if (now >= deadline) {
      ring.cancel_sleep();
      return Status::kTimeout;
    }
    // Ask about the peer's life only after a sleep ran out (no wake came), which bounds the
    // detection time by one slice and costs nothing on a busy stream.
    if (slept_out && s.link->peer_gone()) {
      ring.cancel_sleep();
      // What the peer did before it died still counts.
      r = check();
      return r == Ready::kYes ? Status::kOk : r == Ready::kCorrupt ? Status::kProtocolError : Status::kPeerGone;
    }
    const auto slice = std::min<Clock::duration>(s.link->liveness_slice(), deadline - now);
    slept_out = ring.sleep(token, std::chrono::duration_cast<std::chrono::nanoseconds>(slice));
    ++sleeps;
    after_sleep = true;
  }
}

}  // namespace

Status Channel::Impl::fail(Status status, std::string text) {
  std::lock_guard lock(error_mutex);
  int expected = 0;
  // First failure wins; release pairs with the acquire load in check_broken().
  if (broken.compare_exchange_strong(expected, static_cast<int>(status), std::memory_order_release)) {
    error = std::move(text);
  }
  return status;
}

Status Channel::Impl::write_record(uint32_t kind, std::span<const ByteSpan> record_parts, uint64_t size,
                                   Deadline deadline) {
  for (;;) {
    const RingProducer::Result r = tx.try_write(kind, record_parts);
    if (r == RingProducer::Result::kDone) return Status::kOk;
    if (r == RingProducer::Result::kCorrupt) return fail(Status::kProtocolError, "transmit ring: " + tx.error_text());
    const uint64_t bytes = layout::record_bytes(size);
    const Status w = wait_for(*this, tx, send_spin, send_sleeps, send_announces, deadline, [&] {
      switch (tx.has_space(bytes)) {
        case RingProducer::Result::kDone:
          return Ready::kYes;
        case RingProducer::Result::kFull:
          return Ready::kNo;
        case RingProducer::Result::kCorrupt:
          break;
      }
      return Ready::kCorrupt;
    });
    if (w == Status::kProtocolError) return fail(w, "transmit ring: " + tx.error_text());
    if (w != Status::kOk) return w;
  }
}

Channel detail::ChannelFactory::make(std::unique_ptr<Link> link, const RegionLayout& region, bool is_host,
                                     bool asymmetric_fences, const ucred& peer_cred, Hello peer_hello) {
  auto impl = std::make_unique<Channel::Impl>();
  const auto& tx_ring = region.rings[is_host ? layout::kReplyRing : layout::kCommandRing];
  const auto& rx_ring = region.rings[is_host ? layout::kCommandRing : layout::kReplyRing];
  std::byte* base = link->region().data();
  impl->tx = RingProducer(reinterpret_cast<layout::RingControl*>(base + tx_ring.control_offset),
                          base + tx_ring.data_offset, tx_ring.capacity, asymmetric_fences, link.get());
  impl->rx = RingConsumer(reinterpret_cast<layout::RingControl*>(base + rx_ring.control_offset),
                          base + rx_ring.data_offset, rx_ring.capacity, asymmetric_fences, link.get());
  auto* hints = reinterpret_cast<layout::SchedulingHints*>(base + region.hints_offset);
  impl->my_cpu = is_host ? &hints->host_cpu : &hints->guest_cpu;
  impl->peer_cpu = is_host ? &hints->guest_cpu : &hints->host_cpu;
  impl->link = std::move(link);
  impl->max_message = region.max_message;
  impl->peer_cred = peer_cred;
  impl->peer_hello = std::move(peer_hello);
  return Channel(std::move(impl));
}

Channel::Channel(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Channel::Channel(Channel&&) noexcept = default;
Channel& Channel::operator=(Channel&& other) noexcept {
  if (this != &other) {
    close();
    impl_ = std::move(other.impl_);
  }
  return *this;
}
Channel::~Channel() { close(); }

void Channel::close() {
  if (!impl_) return;
  Impl& s = *impl_;
  if (s.check_broken() == Status::kOk) {
    // Best effort, never blocking: a full ring means the peer sees kPeerGone instead.
    (void)s.tx.try_write(layout::kKindGoodbye, {});
  }
  impl_.reset();  // releases the link: closes the socket (the peer's liveness signal), unmaps
}

void Channel::abandon() { impl_.reset(); }

namespace {

// A reassembly buffer larger than this is given back after its message instead of kept.
constexpr size_t kKeptReassemblyBytes = 4u << 20;

// Makes room for `needed` bytes of the message being reassembled, doubling at most up to the
// announced total, so what the buffer holds is at most twice what has really arrived.
bool grow_reassembly(Channel::Impl& s, uint64_t needed) {
  try {
    if (needed > s.reassembly.capacity())
      s.reassembly.reserve(
          std::min<uint64_t>(s.reassembly_total, std::max<uint64_t>(needed, 2 * s.reassembly.capacity())));
    s.reassembly.resize(needed);
  } catch (const std::bad_alloc&) {
    return false;
  }
  return true;
}

// Appends to `pieces` the byte range [offset, offset + size) of the concatenation of `parts`,
// starting the search at part `*index` whose first byte is at concatenated offset `*base`.
void slice_parts(std::span<const ByteSpan> parts, uint64_t offset, uint64_t size, size_t* index, uint64_t* base,
                 std::vector<ByteSpan>* pieces) {
  while (size != 0) {
    const ByteSpan& part = parts[*index];
    const uint64_t within = offset - *base;
    if (within >= part.size()) {
      *base += part.size();
      ++*index;
      continue;
    }
    const uint64_t n = std::min<uint64_t>(size, part.size() - within);
    pieces->push_back(part.subspan(within, n));
    offset += n;
    size -= n;
  }
}

}  // namespace

Status Channel::send(uint32_t kind, std::span<const std::byte> payload, Deadline deadline) {
  const ByteSpan part = payload;
  return sendv(kind, std::span<const ByteSpan>(&part, 1), deadline);
}

Status Channel::sendv(uint32_t kind, std::span<const std::span<const std::byte>> parts, Deadline deadline) {
  if (!impl_) return Status::kClosed;
  Impl& s = *impl_;
  if (const Status b = s.check_broken(); b != Status::kOk) return b;
  if (kind >= layout::kReservedKindBase) return Status::kProtocolError;  // caller bug, not sticky
  note_cpu(s);
  uint64_t total = 0;
  for (const ByteSpan& part : parts) {
    if (part.size() > s.max_message - std::min(total, s.max_message)) return Status::kTooLarge;
    total += part.size();
  }

  if (s.tx_abort_pending) {
    if (const Status st = s.write_record(layout::kKindChunkAbort, {}, 0, deadline); st != Status::kOk) return st;
    s.tx_abort_pending = false;
  }

  const uint64_t limit = s.tx.max_record_payload();
  if (total <= limit) {
    const Status st = s.write_record(kind, parts, total, deadline);
    if (st == Status::kOk) {
      ++s.msgs_sent;
      s.bytes_sent.add(total);
    }
    return st;
  }

  // Too big for one record: a ChunkStart record (header + first data), then ChunkMore records.
  const layout::ChunkStart start{kind, 0, total};
  uint64_t offset = 0;
  size_t part_index = 0;
  uint64_t part_base = 0;
  while (offset < total) {
    const bool first = offset == 0;
    s.pieces.clear();
    uint64_t room = limit;
    if (first) {
      s.pieces.push_back(std::as_bytes(std::span(&start, 1)));
      room -= sizeof start;
    }
    const uint64_t n = std::min(room, total - offset);
    slice_parts(parts, offset, n, &part_index, &part_base, &s.pieces);
    const uint64_t record_size = n + (first ? sizeof start : 0);
    const Status st =
        s.write_record(first ? layout::kKindChunkStart : layout::kKindChunkMore, s.pieces, record_size, deadline);
    if (st != Status::kOk) {
      // Part of the message is out: the next send cancels it so the stream stays consistent.
      if (!first && st == Status::kTimeout) s.tx_abort_pending = true;
      return st;
    }
    offset += n;
  }
  ++s.msgs_sent;
  s.bytes_sent.add(total);
  return Status::kOk;
}

Status Channel::recv(Message& out, Deadline deadline) {
  if (!impl_) return Status::kClosed;
  Impl& s = *impl_;
  if (const Status b = s.check_broken(); b != Status::kOk) return b;
  if (s.rx_closed) return Status::kClosed;
  note_cpu(s);
  for (;;) {
    RecordHeader h;
    const RingConsumer::Result r = s.rx.peek(&h);
    if (r == RingConsumer::Result::kCorrupt)
      return s.fail(Status::kProtocolError, "receive ring: " + s.rx.error_text());
    if (r == RingConsumer::Result::kEmpty) {
      const Status w = wait_for(s, s.rx, s.recv_spin, s.recv_sleeps, s.recv_announces, deadline,
                                [&] { return s.rx.has_data() ? Ready::kYes : Ready::kNo; });
      if (w != Status::kOk) return w;
      continue;
    }

    if (h.kind < layout::kReservedKindBase) {
      if (s.reassembling) {
        return s.fail(Status::kProtocolError,
                      base::str_printf("receive ring: message of kind %u inside a chunked message", h.kind));
      }
      out.kind = h.kind;
      out.payload.resize(h.size);
      s.rx.read(0, out.payload.data(), h.size);
      s.rx.pop();
      ++s.msgs_received;
      s.bytes_received.add(h.size);
      return Status::kOk;
    }

    switch (h.kind) {
      case layout::kKindChunkStart: {
        layout::ChunkStart start;
        if (s.reassembling || h.size < sizeof start) {
          return s.fail(Status::kProtocolError, "receive ring: misplaced or short chunk start");
        }
        s.rx.read(0, reinterpret_cast<std::byte*>(&start), sizeof start);
        const uint64_t data = h.size - sizeof start;
        if (start.kind >= layout::kReservedKindBase || start.total > s.max_message || data > start.total) {
          return s.fail(Status::kProtocolError,
                        base::str_printf("receive ring: chunked message of kind 0x%08x and %" PRIu64
                                         " bytes refused (limit %" PRIu64 " bytes)",
                                         start.kind, start.total, s.max_message));
        }
        // The buffer grows with the data that arrives, never from the size the peer announced:
        // a 24-byte chunk start claiming 256 MiB costs nothing until the bytes come.
        s.reassembly_total = start.total;
        s.reassembly.clear();
        if (!grow_reassembly(s, data)) {
          return s.fail(
              Status::kProtocolError,
              base::str_printf("receive ring: cannot allocate %" PRIu64 " bytes for a chunked message", data));
        }
        s.rx.read(sizeof start, s.reassembly.data(), data);
        s.rx.pop();
        s.reassembling = true;
        s.reassembly_kind = start.kind;
        s.reassembly_total = start.total;
        s.reassembly_got = data;
        break;
      }
      case layout::kKindChunkMore:
        if (!s.reassembling || h.size == 0 || h.size > s.reassembly_total - s.reassembly_got) {
          return s.fail(Status::kProtocolError, base::str_printf("receive ring: unexpected chunk of %u bytes (%" PRIu64
                                                                 " of %" PRIu64 " bytes reassembled)",
                                                                 h.size, s.reassembly_got, s.reassembly_total));
        }
        if (!grow_reassembly(s, s.reassembly_got + h.size)) {
          return s.fail(Status::kProtocolError,
                        base::str_printf("receive ring: cannot allocate %" PRIu64 " bytes for a chunked message",
                                         s.reassembly_got + h.size));
        }
        s.rx.read(0, s.reassembly.data() + s.reassembly_got, h.size);
        s.rx.pop();
        s.reassembly_got += h.size;
        break;
      case layout::kKindChunkAbort:
        s.rx.pop();
        s.reassembling = false;
        continue;
      case layout::kKindGoodbye:
        s.rx.pop();
        s.rx_closed = true;
        s.reassembling = false;
        return Status::kClosed;
      default:
        return s.fail(Status::kProtocolError, base::str_printf("receive ring: record of reserved kind 0x%08x", h.kind));
    }
    if (s.reassembling && s.reassembly_got == s.reassembly_total) {
      s.reassembling = false;
      out.kind = s.reassembly_kind;
      out.payload.swap(s.reassembly);  // the old payload buffer is reused for the next one
      // ...unless it is large: a guest's one big upload must not stay resident for the session.
      if (s.reassembly.capacity() > kKeptReassemblyBytes) std::vector<std::byte>().swap(s.reassembly);
      ++s.msgs_received;
      s.bytes_received.add(s.reassembly_total);
      return Status::kOk;
    }
  }
}

bool Channel::poll_ready() const { return impl_ && impl_->rx.has_data(); }

Status Channel::send_fds(uint64_t tag, std::span<const int> fds, Deadline deadline) {
  if (!impl_) return Status::kClosed;
  Impl& s = *impl_;
  if (const Status b = s.check_broken(); b != Status::kOk) return b;
  if (fds.size() > kMaxFdsPerMessage) return Status::kTooLarge;
  if (s.link->socket() < 0) return Status::kClosed;  // no fd crosses this medium (a VM)
  detail::FdsPacket packet{};
  packet.header = {detail::kPacketMagic, static_cast<uint16_t>(detail::PacketType::kFds), 0};
  packet.count = static_cast<uint32_t>(fds.size());
  packet.tag = tag;
  // Its message adds nothing a caller of send_fds() acts on: the code says it all.
  return detail::send_packet(s.link->socket(), &packet, sizeof packet, fds, deadline).code();
}

Status Channel::recv_fds(uint64_t& tag, std::vector<int>& fds, Deadline deadline) {
  if (!impl_) return Status::kClosed;
  Impl& s = *impl_;
  if (const Status b = s.check_broken(); b != Status::kOk) return b;
  if (s.link->socket() < 0) return Status::kClosed;  // no fd crosses this medium (a VM)
  detail::Packet packet;
  const auto received = detail::recv_packet(s.link->socket(), &packet, deadline);
  if (received.code() == Status::kProtocolError) return s.fail(received.code(), "socket: " + received.error().message);
  if (!received) return received.code();
  detail::FdsPacket fp;
  if (packet.size != sizeof fp) {
    return s.fail(Status::kProtocolError, base::str_printf("socket: unexpected %zu-byte packet", packet.size));
  }
  std::memcpy(&fp, packet.bytes, sizeof fp);
  if (fp.header.magic != detail::kPacketMagic || fp.header.type != static_cast<uint16_t>(detail::PacketType::kFds) ||
      fp.count != packet.fds.size() || fp.count > kMaxFdsPerMessage) {
    return s.fail(Status::kProtocolError,
                  base::str_printf("socket: malformed fd packet (type %u, %u fds announced, %zu attached)",
                                   fp.header.type, fp.count, packet.fds.size()));
  }
  tag = fp.tag;
  fds.clear();
  for (base::UniqueFd& fd : packet.fds) fds.push_back(fd.release());
  return Status::kOk;
}

bool Channel::carries_fds() const { return impl_ && impl_->link->socket() >= 0; }
std::span<std::byte> Channel::shared_heap() const { return impl_ ? impl_->link->heap() : std::span<std::byte>(); }
bool Channel::peer_alive() const { return impl_ && !impl_->link->peer_gone(); }
pid_t Channel::peer_pid() const { return impl_ ? impl_->peer_cred.pid : -1; }
uid_t Channel::peer_uid() const { return impl_ ? impl_->peer_cred.uid : static_cast<uid_t>(-1); }
gid_t Channel::peer_gid() const { return impl_ ? impl_->peer_cred.gid : static_cast<gid_t>(-1); }

const Hello& Channel::peer_hello() const {
  static const Hello kNone{};
  return impl_ ? impl_->peer_hello : kNone;
}

layout::Feedback* Channel::feedback() const {
  if (!impl_) return nullptr;
  std::span<std::byte> region = impl_->link->region();
  if (region.size() < layout::kDataOffset) return nullptr;
  return reinterpret_cast<layout::Feedback*>(region.data() + layout::kFeedbackOffset);
}

void Channel::wake_feedback() const {
  if (layout::Feedback* f = feedback()) impl_->link->wake_all(&f->seq);
}

void Channel::sleep_feedback(uint32_t expected, std::chrono::nanoseconds timeout) const {
  if (layout::Feedback* f = feedback()) (void)impl_->link->sleep(&f->seq, expected, timeout);
}

std::chrono::nanoseconds Channel::liveness_slice() const {
  return impl_ ? impl_->link->liveness_slice() : std::chrono::nanoseconds(0);
}

const char* Channel::wakeups() const { return impl_ ? impl_->link->wakeups() : "none"; }

int Channel::socket_fd() const { return impl_ ? impl_->link->socket() : -1; }

void Channel::set_spin(uint32_t max_spins) {
  if (!impl_) return;
  impl_->send_spin.max = impl_->send_spin.budget = max_spins;
  impl_->recv_spin.max = impl_->recv_spin.budget = max_spins;
}

Channel::Stats Channel::stats() const {
  if (!impl_) return {};
  const Impl& s = *impl_;
  return Stats{s.msgs_sent.load(),
               s.bytes_sent.load(),
               s.msgs_received.load(),
               s.bytes_received.load(),
               s.tx.wakes_issued() + s.rx.wakes_issued(),
               s.send_sleeps.load() + s.recv_sleeps.load(),
               s.send_announces.load() + s.recv_announces.load()};
}

size_t Channel::tx_capacity() const { return impl_ ? impl_->tx.capacity() : 0; }
size_t Channel::tx_used() const { return impl_ ? impl_->tx.used() : 0; }
size_t Channel::rx_used() const { return impl_ ? impl_->rx.used() : 0; }
size_t Channel::max_message() const { return impl_ ? impl_->max_message : 0; }

std::string Channel::error_text() const {
  if (!impl_) return "channel is closed";
  std::lock_guard lock(impl_->error_mutex);
  return impl_->error;
}

std::span<std::byte> Channel::region_for_testing() const {
  if (!impl_) return {};
  return impl_->link->region();
}

}  // namespace bypass::transport
