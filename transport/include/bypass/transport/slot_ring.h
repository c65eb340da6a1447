// A single-producer/single-consumer ring of fixed-size records in shared memory: the
// page-granular paths' ring (VM-queue requests, replies and inbound queues; the crossover
// NIC's descriptor rings), beside the byte ring of ring.h.
//
// Layout: a layout::RingControl (the byte ring's control block: head, tail and the two wait
// groups, each on its own 64-byte line) followed by `capacity` records of T. Indices count
// records and grow monotonically; slot = index % capacity. Validation of the peer's index and
// the sleep/wake protocol are ring_sync.h's, shared with the byte ring: a producer that
// finds the consumer asleep bumps `data_seq` (and a consumer that frees space for a waiting
// producer bumps `space_seq`) and tells its caller to wake the peer, by whatever the medium
// offers: an eventfd Kick (kick.h) that one epoll loop can wait on beside many others, or a
// sleeper polling the wait word where no fd crosses (a VM).
//
// The peer's index is hostile: one that goes backwards, passes our own or overfills the ring
// marks the ring corrupt, and every later call on it fails, so the trusted side (the host)
// can end that peer instead of reading out of bounds. A record is read once (pop() copies it).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "bypass/transport/layout.h"
#include "bypass/transport/ring_sync.h"

namespace bypass::transport {

// Bytes a ring of `capacity` records of T takes in shared memory, control block included,
// rounded to a cache line. Place rings at multiples of 64 bytes.
template <class T>
constexpr size_t slot_ring_bytes(uint32_t capacity) {
  return (sizeof(layout::RingControl) + sizeof(T) * capacity + layout::kCacheLine - 1) / layout::kCacheLine *
         layout::kCacheLine;
}

template <class T>
class SlotRing {
  static_assert(std::is_trivially_copyable_v<T>);
  static_assert(alignof(T) <= layout::kCacheLine);

 public:
  SlotRing() = default;
  // `memory` (64-byte aligned) must hold slot_ring_bytes<T>(capacity). `initialize` zeroes the
  // control block: the creator does that once, before sharing.
  SlotRing(void* memory, uint32_t capacity, bool initialize = false)
      : control_(static_cast<layout::RingControl*>(memory)),
        slots_(reinterpret_cast<T*>(static_cast<std::byte*>(memory) + sizeof(layout::RingControl))),
        capacity_(capacity) {
    if (initialize) {
      control_->head.store(0, std::memory_order_relaxed);
      control_->tail.store(0, std::memory_order_relaxed);
      control_->data_seq.store(0, std::memory_order_relaxed);
      control_->consumer_sleeping.store(0, std::memory_order_relaxed);
      control_->space_seq.store(0, std::memory_order_relaxed);
      control_->producer_sleeping.store(0, std::memory_order_relaxed);
    }
    // Both sides start from what is published (pairs with the creator's initialisation, which
    // the fd passing or the device handshake orders before this).
    head_ = control_->head.load(std::memory_order_acquire);
    tail_ = control_->tail.load(std::memory_order_acquire);
    if (head_ - tail_ > capacity_) corrupt_ = true;
    cached_head_ = head_;
    cached_tail_ = tail_;
  }

  explicit operator bool() const { return control_ != nullptr; }
  uint32_t capacity() const { return capacity_; }
  bool corrupt() const { return corrupt_; }

  // ---- producer side ----
  // The free record to fill, or nullptr when the ring is full (or corrupt).
  T* producer_slot() {
    if (corrupt_) return nullptr;
    if (head_ - cached_tail_ >= capacity_) {
      if (!refresh_tail()) return nullptr;
      if (head_ - cached_tail_ >= capacity_) return nullptr;
    }
    return &slots_[head_ % capacity_];
  }
  // Makes the record from producer_slot() visible. True when the consumer announced that it
  // sleeps: the caller must wake it (data_seq was bumped already).
  bool publish() { return publish_n(1); }
  // Several records at once, filled through producer_slot_at(0 .. n-1) after producer_free().
  T* producer_slot_at(uint32_t ahead) { return &slots_[(head_ + ahead) % capacity_]; }
  uint32_t producer_free() {
    if (corrupt_ || !refresh_tail()) return 0;
    return static_cast<uint32_t>(capacity_ - (head_ - cached_tail_));
  }
  bool publish_n(uint32_t n) {
    head_ += n;
    // Publishes the records (pairs with the consumer's load of head in consumer_slot()).
    if (!ring_sync::publish_and_claim_sleeper(control_->head, head_, control_->consumer_sleeping, false)) return false;
    ring_sync::bump(control_->data_seq);
    return true;
  }
  // Producer about to sleep for space: announce it, then re-check. True when space appeared
  // meanwhile (do not sleep). The consumer's release() claims the announcement.
  bool producer_prepare_wait() {
    ring_sync::announce_sleep(control_->producer_sleeping, control_->space_seq, false);
    return producer_slot() != nullptr;
  }

  // ---- consumer side ----
  // The oldest unread record, or nullptr when empty (or corrupt). The producer may rewrite it
  // at any time: copy what you use once (pop()).
  const T* consumer_slot() {
    if (corrupt_) return nullptr;
    if (cached_head_ == tail_) {
      if (!refresh_head()) return nullptr;
      if (cached_head_ == tail_) return nullptr;
    }
    return &slots_[tail_ % capacity_];
  }
  // Copies the oldest record out. Sets *kick_producer when the producer waits for space and
  // must be woken.
  bool pop(T* out, bool* kick_producer) {
    const T* slot = consumer_slot();
    if (slot == nullptr) return false;
    *out = *slot;
    if (release()) *kick_producer = true;
    return true;
  }
  // Frees the record from consumer_slot(). True when the producer waits for space: the
  // caller must wake it (space_seq was bumped already).
  bool release() {
    ++tail_;
    // Hands the slot back (pairs with the producer's load of tail in refresh_tail()).
    if (!ring_sync::publish_and_claim_sleeper(control_->tail, tail_, control_->producer_sleeping, false)) return false;
    ring_sync::bump(control_->space_seq);
    return true;
  }
  // Records waiting, from the consumer's view (no blocking, one load).
  uint64_t readable() {
    if (corrupt_ || !refresh_head()) return 0;
    return cached_head_ - tail_;
  }
  // Consumer about to sleep: announce it, then re-check. True when records arrived meanwhile
  // (do not sleep). The producer's publish() claims the announcement.
  bool consumer_prepare_wait() {
    ring_sync::announce_sleep(control_->consumer_sleeping, control_->data_seq, false);
    return consumer_slot() != nullptr;
  }

  // ---- for a reader of both indices (the host reporting a ring it does not drive) ----
  // Fill level from the shared indices alone; 0 when they are inconsistent.
  uint64_t shared_fill() const {
    const uint64_t head = control_->head.load(std::memory_order_acquire);
    const uint64_t tail = control_->tail.load(std::memory_order_acquire);
    return ring_sync::valid_peer_head(head, 0, tail, capacity_, 1) ? head - tail : 0;
  }
  layout::RingControl* control() const { return control_; }

 private:
  // seq_cst loads: after an announce_sleep() the re-check must not move before that store
  // (ring_sync.h); on x86 a seq_cst load is a plain load.
  bool refresh_head() {
    const uint64_t head = control_->head.load(std::memory_order_seq_cst);  // pairs with publish_n()
    if (!ring_sync::valid_peer_head(head, cached_head_, tail_, capacity_, 1)) {
      corrupt_ = true;
      return false;
    }
    cached_head_ = head;
    return true;
  }
  bool refresh_tail() {
    const uint64_t tail = control_->tail.load(std::memory_order_seq_cst);  // pairs with release()
    if (!ring_sync::valid_peer_tail(tail, cached_tail_, head_, 1)) {
      corrupt_ = true;
      return false;
    }
    cached_tail_ = tail;
    return true;
  }

  layout::RingControl* control_ = nullptr;
  T* slots_ = nullptr;
  uint32_t capacity_ = 0;
  uint64_t head_ = 0;         // producer's own index
  uint64_t tail_ = 0;         // consumer's own index
  uint64_t cached_head_ = 0;  // consumer's copy of the producer's index (validated)
  uint64_t cached_tail_ = 0;  // producer's copy of the consumer's index (validated)
  bool corrupt_ = false;
};

}  // namespace bypass::transport
