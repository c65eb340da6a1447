// A single-producer/single-consumer ring of fixed-size records in shared memory, with
// notification suppression. Used for the VM-queue request/reply/inbound rings and for the
// crossover NIC's descriptor rings.
//
// Layout: a RingHeader (head, tail and the two sleep flags, each on its own 64-byte line) and
// `capacity` records of T. Indices grow monotonically; slot = index % capacity.
//
// Each side keeps its own index privately and only publishes it; the other side's index is
// read from shared memory and treated as hostile: a value that would make the fill level
// negative or larger than the capacity marks the ring corrupt, and every call on a corrupt ring
// fails, so the trusted side (the host) can end that peer instead of reading out of bounds.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace bypass::vmqueue {

struct alignas(64) SharedIndex {
  std::atomic<uint64_t> value{0};
};
static_assert(sizeof(SharedIndex) == 64);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

struct RingHeader {
  // Producer stores (release) after writing a record; consumer loads (acquire) before reading.
  SharedIndex head;
  // Consumer stores (release) after it is done with a record; producer loads (acquire) before
  // reusing the slot.
  SharedIndex tail;
  // Consumer stores 1 (seq_cst) before its last emptiness check and going to sleep; producer
  // exchanges it to 0 (seq_cst) after publishing and kicks the consumer when it was 1.
  SharedIndex consumer_sleeping;
  // Producer stores 1 (seq_cst) before its last fullness check when it waits for space;
  // consumer exchanges it to 0 (seq_cst) after releasing records and kicks the producer.
  SharedIndex producer_waiting;
};
static_assert(sizeof(RingHeader) == 256);

// Bytes a ring of `capacity` records of T takes in shared memory, header included, rounded to
// 64 bytes.
template <class T>
constexpr size_t ring_bytes(uint32_t capacity) {
  return (sizeof(RingHeader) + sizeof(T) * capacity + 63) / 64 * 64;
}

template <class T>
class SlotRing {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  SlotRing() = default;
  // `memory` must hold ring_bytes<T>(capacity). `initialize` zeroes the header (the creator
  // does that once, before sharing).
  SlotRing(void* memory, uint32_t capacity, bool initialize = false)
      : header_(static_cast<RingHeader*>(memory)),
        slots_(reinterpret_cast<T*>(static_cast<std::byte*>(memory) + sizeof(RingHeader))),
        capacity_(capacity) {
    if (initialize) {
      header_->head.value.store(0, std::memory_order_relaxed);
      header_->tail.value.store(0, std::memory_order_relaxed);
      header_->consumer_sleeping.value.store(0, std::memory_order_relaxed);
      header_->producer_waiting.value.store(0, std::memory_order_relaxed);
    }
    // Both sides start from what is published, so a side that attaches late (the host after a
    // restart is not supported, but a tool reading stats is) sees consistent indices.
    head_ = header_->head.value.load(std::memory_order_acquire);
    tail_ = header_->tail.value.load(std::memory_order_acquire);
    cached_head_ = head_;
    cached_tail_ = tail_;
  }

  explicit operator bool() const { return header_ != nullptr; }
  uint32_t capacity() const { return capacity_; }
  bool corrupt() const { return corrupt_; }

  // ---- producer side ----
  // The free record to fill, or nullptr when the ring is full (or corrupt).
  T* producer_slot() {
    if (corrupt_) return nullptr;
    if (head_ - cached_tail_ >= capacity_) {
      cached_tail_ = header_->tail.value.load(std::memory_order_acquire);  // pairs with consumer release()
      if (!check(head_, cached_tail_)) return nullptr;
      if (head_ - cached_tail_ >= capacity_) return nullptr;
    }
    return &slots_[head_ % capacity_];
  }
  // Makes the record from producer_slot() visible. Returns true when the consumer announced it
  // sleeps, i.e. the caller must kick it.
  bool publish() {
    ++head_;
    header_->head.value.store(head_, std::memory_order_release);  // pairs with consumer_slot()'s acquire
    return consumer_needs_kick();
  }
  // Publishes several records filled through producer_slot_at().
  T* producer_slot_at(uint32_t ahead) { return &slots_[(head_ + ahead) % capacity_]; }
  uint32_t producer_free() {
    if (corrupt_) return 0;
    cached_tail_ = header_->tail.value.load(std::memory_order_acquire);  // pairs with consumer release()
    if (!check(head_, cached_tail_)) return 0;
    return static_cast<uint32_t>(capacity_ - (head_ - cached_tail_));
  }
  bool publish_n(uint32_t n) {
    head_ += n;
    header_->head.value.store(head_, std::memory_order_release);  // pairs with consumer_slot()'s acquire
    return consumer_needs_kick();
  }
  // Producer about to sleep for space: announce it, then re-check. Returns true when space
  // appeared meanwhile (do not sleep).
  bool producer_prepare_wait() {
    header_->producer_waiting.value.store(1, std::memory_order_seq_cst);  // pairs with consumer's exchange in release()
    return producer_slot() != nullptr;
  }

  // ---- consumer side ----
  // The oldest unread record, or nullptr when empty (or corrupt).
  const T* consumer_slot() {
    if (corrupt_) return nullptr;
    if (cached_head_ == tail_) {
      cached_head_ = header_->head.value.load(std::memory_order_acquire);  // pairs with publish()
      if (!check(cached_head_, tail_)) return nullptr;
      if (cached_head_ == tail_) return nullptr;
    }
    return &slots_[tail_ % capacity_];
  }
  // Copies the oldest record out (the producer may be hostile: read it once). Sets
  // *kick_producer when the producer waits for space and must be kicked.
  bool pop(T* out, bool* kick_producer) {
    const T* slot = consumer_slot();
    if (slot == nullptr) return false;
    *out = *slot;
    if (release()) *kick_producer = true;
    return true;
  }
  // Frees the record from consumer_slot(). Returns true when the producer waits for space,
  // i.e. the caller must kick it.
  bool release() {
    ++tail_;
    header_->tail.value.store(tail_, std::memory_order_release);  // pairs with producer_slot()'s acquire
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (header_->producer_waiting.value.load(std::memory_order_relaxed) == 0) return false;
    return header_->producer_waiting.value.exchange(0, std::memory_order_seq_cst) !=
           0;  // pairs with producer_prepare_wait()
  }
  // Records waiting, from the consumer's view (no blocking, one acquire load).
  uint64_t readable() {
    if (corrupt_) return 0;
    cached_head_ = header_->head.value.load(std::memory_order_acquire);  // pairs with publish()
    if (!check(cached_head_, tail_)) return 0;
    return cached_head_ - tail_;
  }
  // Consumer about to sleep: announce it, then re-check. Returns true when records arrived
  // meanwhile (do not sleep).
  bool consumer_prepare_wait() {
    header_->consumer_sleeping.value.store(1, std::memory_order_seq_cst);  // pairs with publish()'s exchange
    return consumer_slot() != nullptr;
  }

  // ---- either side, for the owner of both views (the host reading a ring it does not own) ----
  // Fill level from the shared indices alone; validated.
  uint64_t shared_fill() {
    uint64_t head = header_->head.value.load(std::memory_order_acquire);
    uint64_t tail = header_->tail.value.load(std::memory_order_acquire);
    if (head < tail || head - tail > capacity_) return 0;
    return head - tail;
  }
  RingHeader* header() const { return header_; }

 private:
  bool consumer_needs_kick() {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (header_->consumer_sleeping.value.load(std::memory_order_relaxed) == 0) return false;
    return header_->consumer_sleeping.value.exchange(0, std::memory_order_seq_cst) !=
           0;  // pairs with consumer_prepare_wait()
  }
  bool check(uint64_t head, uint64_t tail) {
    if (head < tail || head - tail > capacity_) corrupt_ = true;
    return !corrupt_;
  }

  RingHeader* header_ = nullptr;
  T* slots_ = nullptr;
  uint32_t capacity_ = 0;
  uint64_t head_ = 0;         // producer's own index
  uint64_t tail_ = 0;         // consumer's own index
  uint64_t cached_head_ = 0;  // consumer's copy of the producer's index
  uint64_t cached_tail_ = 0;  // producer's copy of the consumer's index
  bool corrupt_ = false;
};

}  // namespace bypass::vmqueue
