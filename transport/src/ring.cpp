#include "bypass/transport/ring.h"

#include <algorithm>
#include <cinttypes>
#include <cstring>

#include "bypass/base/text.h"
#include "bypass/transport/ring_sync.h"
#include "futex.h"

namespace bypass::transport {

using layout::RecordHeader;

namespace {

constexpr uint64_t kAlign = 8;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Producer

RingProducer::RingProducer(layout::RingControl* control, std::byte* data, uint64_t capacity, bool asymmetric_fences,
                           Waker* waker)
    : control_(control),
      data_(data),
      capacity_(capacity),
      mask_(capacity - 1),
      asymmetric_(asymmetric_fences),
      waker_(waker != nullptr ? waker : &futex_waker()) {}

bool RingProducer::refresh_tail() {
  // Pairs with the consumer's tail store in pop(): once we see the new tail, the consumer
  // has finished copying those bytes out and we may overwrite them. seq_cst rather
  // than acquire because after announce_sleep() this load must not move before that store.
  const uint64_t tail = control_->tail.load(std::memory_order_seq_cst);
  // The consumer can only move forward, never past what we published, in whole records.
  if (!ring_sync::valid_peer_tail(tail, cached_tail_, head_, kAlign)) {
    error_ = base::str_printf("ring tail %" PRIu64 " is invalid (previous tail %" PRIu64 ", head %" PRIu64
                              ", capacity %" PRIu64 ")",
                              tail, cached_tail_, head_, capacity_);
    return false;
  }
  cached_tail_ = tail;
  return true;
}

RingProducer::Result RingProducer::has_space(uint64_t record_bytes) {
  if (capacity_ - (head_ - cached_tail_) >= record_bytes) return Result::kDone;
  if (!refresh_tail()) return Result::kCorrupt;
  return capacity_ - (head_ - cached_tail_) >= record_bytes ? Result::kDone : Result::kFull;
}

uint64_t RingProducer::used() const {
  // Both loads are of shared atomics (not our private head_), so any thread may ask.
  const uint64_t tail = control_->tail.load(std::memory_order_acquire);
  const uint64_t used = control_->head.load(std::memory_order_acquire) - tail;
  return used <= capacity_ ? used : capacity_;
}

RingProducer::Result RingProducer::try_write(uint32_t kind, std::span<const ByteSpan> parts) {
  uint64_t size = 0;
  for (const ByteSpan& part : parts) size += part.size();
  if (size > max_record_payload()) {
    error_ = base::str_printf("record of %" PRIu64 " bytes exceeds the ring's record limit %" PRIu64, size,
                              max_record_payload());
    return Result::kCorrupt;
  }
  const uint64_t bytes = layout::record_bytes(size);
  if (const Result r = has_space(bytes); r != Result::kDone) return r;

  // The header never wraps (head_ is 8-aligned, capacity a multiple of 8); payload parts may.
  const RecordHeader header{static_cast<uint32_t>(size), kind};
  std::memcpy(data_ + (head_ & mask_), &header, sizeof header);
  uint64_t pos = head_ + sizeof header;
  for (const ByteSpan& part : parts) {
    const uint64_t at = pos & mask_;
    const uint64_t first = std::min<uint64_t>(part.size(), capacity_ - at);
    if (first != 0) std::memcpy(data_ + at, part.data(), first);
    if (first < part.size()) std::memcpy(data_, part.data() + first, part.size() - first);
    pos += part.size();
  }
  head_ += bytes;

  // Publish, then look whether the consumer announced that it sleeps (ring_sync.h: the
  // StoreLoad pair and the two fence schemes). The store also publishes the record: pairs
  // with the consumer's load of head in peek() / has_data().
  if (ring_sync::publish_and_claim_sleeper(control_->head, head_, control_->consumer_sleeping, asymmetric_)) {
    // Bumping the futex word makes a consumer that is about to call FUTEX_WAIT return at once.
    ring_sync::bump(control_->data_seq);
    waker_->wake(&control_->data_seq);
    ++wakes_;
  }
  return Result::kDone;
}

uint32_t RingProducer::announce_sleep() {
  // Pairs with the consumer's tail store + load of producer_sleeping in pop(); the caller
  // re-checks the tail after this.
  return ring_sync::announce_sleep(control_->producer_sleeping, control_->space_seq, asymmetric_);
}

void RingProducer::cancel_sleep() { ring_sync::cancel_sleep(control_->producer_sleeping); }

bool RingProducer::sleep(uint32_t token, std::chrono::nanoseconds timeout) {
  return waker_->sleep(&control_->space_seq, token, timeout);
}

// ---------------------------------------------------------------------------------------------
// Consumer

RingConsumer::RingConsumer(layout::RingControl* control, std::byte* data, uint64_t capacity, bool asymmetric_fences,
                           Waker* waker)
    : control_(control),
      data_(data),
      capacity_(capacity),
      mask_(capacity - 1),
      asymmetric_(asymmetric_fences),
      waker_(waker != nullptr ? waker : &futex_waker()) {}

bool RingConsumer::has_data() const {
  // Pairs with the producer's head store in try_write(); seq_cst so that after
  // announce_sleep() it is ordered after the consumer_sleeping store.
  return control_->head.load(std::memory_order_seq_cst) != tail_;
}

uint64_t RingConsumer::used() const {
  const uint64_t head = control_->head.load(std::memory_order_acquire);
  const uint64_t used = head - tail_;
  return used <= capacity_ ? used : capacity_;  // a corrupt head is reported by peek()
}

RingConsumer::Result RingConsumer::peek(RecordHeader* header) {
  if (current_bytes_ != 0) {
    *header = current_;
    return Result::kDone;
  }
  if (cached_head_ == tail_) {
    // seq_cst (not just acquire) so that after announce_sleep() this load is ordered after
    // the consumer_sleeping store (symmetric scheme); pairs with the producer's head store.
    const uint64_t head = control_->head.load(std::memory_order_seq_cst);
    if (!ring_sync::valid_peer_head(head, cached_head_, tail_, capacity_, kAlign)) {
      error_ = base::str_printf("ring head %" PRIu64 " is invalid (tail %" PRIu64 ", previous head %" PRIu64
                                ", capacity %" PRIu64 ")",
                                head, tail_, cached_head_, capacity_);
      return Result::kCorrupt;
    }
    cached_head_ = head;
    if (head == tail_) return Result::kEmpty;
  }
  // Copy the header once into private memory; the peer may change the shared bytes at any
  // time, so everything below uses only this copy.
  RecordHeader copy;
  std::memcpy(&copy, data_ + (tail_ & mask_), sizeof copy);
  const uint64_t available = cached_head_ - tail_;
  if (copy.size > layout::max_record_payload(capacity_) || layout::record_bytes(copy.size) > available) {
    error_ = base::str_printf("record at %" PRIu64 " claims %u payload bytes but %" PRIu64
                              " bytes are published (record limit %" PRIu64 ")",
                              tail_, copy.size, available - sizeof copy, layout::max_record_payload(capacity_));
    return Result::kCorrupt;
  }
  current_ = copy;
  current_bytes_ = layout::record_bytes(copy.size);
  *header = copy;
  return Result::kDone;
}

void RingConsumer::read(uint64_t offset, std::byte* out, uint64_t size) const {
  const uint64_t at = (tail_ + sizeof(RecordHeader) + offset) & mask_;
  const uint64_t first = std::min(size, capacity_ - at);
  if (first != 0) std::memcpy(out, data_ + at, first);
  if (first < size) std::memcpy(out + first, data_, size - first);
}

void RingConsumer::pop() {
  tail_ += current_bytes_;
  current_bytes_ = 0;
  // Hands the space back (pairs with the producer's load of tail in refresh_tail()), then
  // looks for a sleeping producer: the mirror image of try_write().
  if (ring_sync::publish_and_claim_sleeper(control_->tail, tail_, control_->producer_sleeping, asymmetric_)) {
    ring_sync::bump(control_->space_seq);
    waker_->wake(&control_->space_seq);
    ++wakes_;
  }
}

uint32_t RingConsumer::announce_sleep() {
  // Pairs with the producer's head store + load of consumer_sleeping in try_write().
  return ring_sync::announce_sleep(control_->consumer_sleeping, control_->data_seq, asymmetric_);
}

void RingConsumer::cancel_sleep() { ring_sync::cancel_sleep(control_->consumer_sleeping); }

bool RingConsumer::sleep(uint32_t token, std::chrono::nanoseconds timeout) {
  return waker_->sleep(&control_->data_seq, token, timeout);
}

}  // namespace bypass::transport
