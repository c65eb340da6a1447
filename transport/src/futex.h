// Thin wrappers over the futex system call on words in shared (MAP_SHARED) memory. These are
// process-shared futexes (no FUTEX_PRIVATE_FLAG): the kernel keys them by the memfd page, so
// a wake in one process reaches a waiter in the other.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace bypass::transport::detail {

// Sleeps while *word == expected, at most `timeout`. Returns on wake, timeout, signal or a
// changed value alike: callers re-check their condition.
void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::nanoseconds timeout);
// Wakes the (single) waiter on `word`.
void futex_wake(std::atomic<uint32_t>* word);

// One spin-wait iteration: tells the core we are spinning (PAUSE on x86).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace bypass::transport::detail
