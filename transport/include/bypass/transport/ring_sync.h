// The index and sleep protocol every ring in shared memory follows, whatever it carries: the
// byte ring (ring.h: variable-size records, Channel on top) and the slot ring (slot_ring.h:
// fixed-size records, VM-queue and crossover descriptors). Both keep their indices in a
// layout::RingControl and go through these helpers, so the rules below are written once:
//
//  - Indices grow monotonically. A side keeps its own index privately and only publishes it;
//    the other side's index is read from shared memory and validated before use
//    (valid_peer_head / valid_peer_tail): it never goes backwards, never passes the other
//    index, and keeps the ring's alignment.
//  - A side about to sleep announces it (announce_sleep), then re-checks the ring. A side that
//    publishes an index looks for that announcement right after (publish_and_claim_sleeper);
//    the store/load pairs on both sides are ordered (StoreLoad), so at least one side sees the
//    other and no wake-up is lost. The waker bumps the sleeper's wait word (data_seq or
//    space_seq) before it wakes it, so a sleeper that polls the word (a VM) needs no system
//    call at all, and a futex or an eventfd wakes one that blocks.
//
// Two fence schemes: symmetric (seq_cst store + seq_cst load on every publish) and asymmetric
// (a compiler barrier on the publishing path, membarrier(2) on the announcing one; see
// register_asymmetric_fences() in the library). Both sides of one ring use the same scheme.
#pragma once

#include <atomic>
#include <cstdint>

namespace bypass::transport::ring_sync {

// The producer's head as the consumer reads it: not behind the head it saw before, at most
// `capacity` ahead of the consumer's own tail, a multiple of `align`.
constexpr bool valid_peer_head(uint64_t head, uint64_t previous_head, uint64_t tail, uint64_t capacity,
                               uint64_t align) {
  // Unsigned difference: a head behind our tail wraps to a huge value and is caught too.
  return head - tail <= capacity && head >= previous_head && head % align == 0;
}

// The consumer's tail as the producer reads it: not behind the tail it saw before, never past
// what the producer published, a multiple of `align`.
constexpr bool valid_peer_tail(uint64_t tail, uint64_t previous_tail, uint64_t head, uint64_t align) {
  return tail >= previous_tail && tail <= head && tail % align == 0;
}

// The heavy side of the asymmetric scheme: a full barrier here and on every CPU running a
// registered process (membarrier). Defined in the transport library.
void heavy_fence();
// The light side: orders our own store before our own load as far as the compiler goes; the
// CPU-level ordering is supplied by the peer's heavy_fence().
inline void light_fence() { std::atomic_signal_fence(std::memory_order_seq_cst); }

// Publishes our own index (head after writing records, tail after consuming them) and claims
// the peer's sleep announcement. True exactly once per announced sleep: the caller must then
// wake the peer (bump_and_wake order: wait word first, then the wake-up).
// The store publishes the records (pairs with the peer's load of this index); the load of
// `peer_sleeping` pairs with the peer's store in announce_sleep().
inline bool publish_and_claim_sleeper(std::atomic<uint64_t>& index, uint64_t value,
                                      std::atomic<uint32_t>& peer_sleeping, bool asymmetric) {
  uint32_t sleeping;
  if (asymmetric) {
    index.store(value, std::memory_order_release);
    light_fence();
    sleeping = peer_sleeping.load(std::memory_order_relaxed);
  } else {
    index.store(value, std::memory_order_seq_cst);
    sleeping = peer_sleeping.load(std::memory_order_seq_cst);
  }
  // exchange: only one wake per announced sleep, however many records follow.
  return sleeping != 0 && peer_sleeping.exchange(0, std::memory_order_acq_rel) != 0;
}

// Bumps the sleeper's wait word: a sleeper about to block on it (FUTEX_WAIT's value check) or
// polling it sees the change. Pairs with the acquire load in announce_sleep().
inline void bump(std::atomic<uint32_t>& wait_word) { wait_word.fetch_add(1, std::memory_order_release); }

// Announces that we are about to sleep; the caller re-checks the ring afterwards (with a
// seq_cst load of the peer's index) and sleeps only if it still has nothing to do. Returns the
// wait word's value to sleep on: any wake-up issued after this point changes it.
inline uint32_t announce_sleep(std::atomic<uint32_t>& sleeping, std::atomic<uint32_t>& wait_word, bool asymmetric) {
  const uint32_t token = wait_word.load(std::memory_order_acquire);
  if (asymmetric) {
    sleeping.store(1, std::memory_order_relaxed);
    heavy_fence();
  } else {
    sleeping.store(1, std::memory_order_seq_cst);
  }
  return token;
}

// Withdraws an announcement when the re-check found work.
inline void cancel_sleep(std::atomic<uint32_t>& sleeping) { sleeping.store(0, std::memory_order_relaxed); }

}  // namespace bypass::transport::ring_sync
