// Thin wrappers over the futex system call on words in shared (MAP_SHARED) memory. These are
// process-shared futexes (no FUTEX_PRIVATE_FLAG): the kernel keys them by the memfd page, so
// a wake in one process reaches a waiter in the other.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace bypass::transport::detail {

// Sleeps while *word == expected, at most `timeout`. Returns on wake, timeout, signal or a
// changed value alike (callers re-check their condition); true if the timeout ran out.
bool futex_wait(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::nanoseconds timeout);
// Wakes the (single) waiter on `word`.
void futex_wake(std::atomic<uint32_t>* word);
// Wakes every sleeper on the word (several guest threads may wait on one feedback word).
void futex_wake_all(std::atomic<uint32_t>* word);

// Asymmetric fences (membarrier(2)): the hot path (publishing a record) gets away with a
// compiler-only barrier between its index store and its load of the peer's sleeping flag,
// because the rare path (a side about to sleep) issues heavy_fence(), which runs a full memory
// barrier on every CPU currently running a thread of a registered process. Both processes of
// a session must have registered; the handshake only enables this when both sides did.
//
// Registers this process (once); false if the kernel or a seccomp filter refuses, or if the
// environment sets BYPASS_TRANSPORT_SYMMETRIC_FENCES=1 (forces seq_cst fences, for tests).
bool register_asymmetric_fences();
// The heavy side: a full barrier here and on every CPU running a registered process.
void heavy_fence();
// The light side: orders our own store before our own load as far as the compiler goes; the
// CPU-level ordering is supplied by the peer's heavy_fence().
inline void light_fence() { std::atomic_signal_fence(std::memory_order_seq_cst); }

// One spin-wait iteration: tells the core we are spinning (PAUSE on x86).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace bypass::transport::detail
