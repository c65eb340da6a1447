// One single-producer/single-consumer ring in shared memory, split into its two halves.
// Neither half blocks: RingProducer::try_write says kFull and RingConsumer::peek says kEmpty,
// and Channel (channel.h) adds spinning, futex sleeps and peer-death checks on top. Both
// halves treat the shared control block as hostile: an index or record size that would
// point outside the ring is reported as kCorrupt (the reason in error_text()) and nothing is
// read or written through it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bypass/transport/layout.h"
#include "bypass/transport/link.h"

namespace bypass::transport {

// A received message. Reuse one Message across recv() calls: its payload keeps its capacity.
struct Message {
  uint32_t kind = 0;
  std::vector<std::byte> payload;
};

using ByteSpan = std::span<const std::byte>;

// A statistics counter with a single writer, readable from any thread. The increment is a
// relaxed load + store (no locked instruction): only the owning thread writes it.
class Counter {
 public:
  Counter() = default;
  Counter(const Counter& other) : value_(other.load()) {}
  Counter& operator=(const Counter& other) {
    value_.store(other.load(), std::memory_order_relaxed);
    return *this;
  }
  void add(uint64_t n) { value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  Counter& operator++() {
    add(1);
    return *this;
  }
  uint64_t load() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class RingProducer {
 public:
  enum class Result { kDone, kFull, kCorrupt };

  RingProducer() = default;
  // `data` holds `capacity` bytes (a power of two >= layout::kMinRingBytes). The producer
  // keeps its own head: it never trusts the shared copy of what it wrote itself.
  // `asymmetric_fences`: both processes registered for membarrier (see futex.h), so the
  // publishing path needs no StoreLoad barrier; must be the same on both sides of a ring.
  // `waker`: how a sleeping peer is woken and how we sleep (link.h); null: futex_waker().
  RingProducer(layout::RingControl* control, std::byte* data, uint64_t capacity, bool asymmetric_fences = false,
               Waker* waker = nullptr);

  uint64_t capacity() const { return capacity_; }
  uint64_t max_record_payload() const { return layout::max_record_payload(capacity_); }

  // Appends one record whose payload is the concatenation of `parts` (at most
  // max_record_payload() bytes in all) and publishes it; wakes the consumer if it announced
  // that it sleeps. kFull: not enough free space right now, nothing was written. kCorrupt: a
  // record over the limit or an invalid tail, with error_text() saying which.
  Result try_write(uint32_t kind, std::span<const ByteSpan> parts);

  // Whether `record_bytes` bytes are free (re-reads and validates the consumer's tail).
  Result has_space(uint64_t record_bytes);
  // Why the last call said kCorrupt (one line).
  const std::string& error_text() const { return error_; }
  // Bytes published and not yet consumed, from the shared indices (safe from any thread).
  uint64_t used() const;

  // Sleep protocol for a producer waiting for space: announce, re-check with has_space(),
  // then sleep(token) or cancel_sleep(). The consumer wakes us after freeing space.
  uint32_t announce_sleep();
  void cancel_sleep();
  bool sleep(uint32_t token, std::chrono::nanoseconds timeout);  // true: timed out

  uint64_t wakes_issued() const { return wakes_.load(); }

 private:
  bool refresh_tail();

  layout::RingControl* control_ = nullptr;
  std::byte* data_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t mask_ = 0;
  uint64_t head_ = 0;         // our own count of bytes published
  uint64_t cached_tail_ = 0;  // the consumer's tail as last read (validated)
  bool asymmetric_ = false;
  Waker* waker_ = nullptr;
  Counter wakes_;
  std::string error_;  // the reason of the last kCorrupt
};

class RingConsumer {
 public:
  enum class Result { kDone, kEmpty, kCorrupt };

  RingConsumer() = default;
  RingConsumer(layout::RingControl* control, std::byte* data, uint64_t capacity, bool asymmetric_fences = false,
               Waker* waker = nullptr);

  uint64_t capacity() const { return capacity_; }

  // Validates the next record's header and returns a private copy of it. The record stays
  // current until pop(); further peeks return the same header without re-reading memory.
  // kCorrupt: the producer's head or the record's size is invalid, error_text() says which.
  Result peek(layout::RecordHeader* header);
  // Why the last peek() said kCorrupt (one line).
  const std::string& error_text() const { return error_; }
  // Copies `size` payload bytes of the current record, starting `offset` bytes into the
  // payload, to `out`. Requires offset + size <= the header's size (checked by the caller).
  void read(uint64_t offset, std::byte* out, uint64_t size) const;
  // Consumes the current record; wakes the producer if it announced that it sleeps.
  void pop();

  // Whether the producer published anything not yet consumed (no validation, no side effect).
  bool has_data() const;
  uint64_t used() const;

  // Sleep protocol for a consumer waiting for data, mirror of RingProducer's.
  uint32_t announce_sleep();
  void cancel_sleep();
  bool sleep(uint32_t token, std::chrono::nanoseconds timeout);  // true: timed out

  uint64_t wakes_issued() const { return wakes_.load(); }

 private:
  layout::RingControl* control_ = nullptr;
  std::byte* data_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t mask_ = 0;
  uint64_t tail_ = 0;           // our own count of bytes consumed
  uint64_t cached_head_ = 0;    // the producer's head as last read (validated)
  uint64_t current_bytes_ = 0;  // record bytes of the peeked record, 0 if none
  layout::RecordHeader current_{};
  bool asymmetric_ = false;
  Waker* waker_ = nullptr;
  Counter wakes_;
  std::string error_;  // the reason of the last kCorrupt
};

}  // namespace bypass::transport
