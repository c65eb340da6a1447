#include "futex.h"

#include "bypass/transport/link.h"

#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

namespace bypass::transport::detail {

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));

bool futex_wait(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::nanoseconds timeout) {
  if (timeout.count() <= 0) return true;
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(timeout.count() / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(timeout.count() % 1'000'000'000);
  // FUTEX_WAIT's timeout is relative (CLOCK_MONOTONIC). EAGAIN and EINTR mean "look again".
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0) != 0 &&
         errno == ETIMEDOUT;
}

void futex_wake(std::atomic<uint32_t>* word) {
  (void)syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
  (void)syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

bool register_asymmetric_fences() {
  static const bool registered = [] {
    const char* force = std::getenv("BYPASS_TRANSPORT_SYMMETRIC_FENCES");
    if (force != nullptr && std::strcmp(force, "1") == 0) return false;
    const long supported = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (supported < 0 || (supported & MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0) return false;
    return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
  }();
  return registered;
}

void heavy_fence() {
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) != 0) {
    // Cannot happen once registered; if it does, a missed wake-up is still bounded by the
    // sleeper's time slice (Channel sleeps in short slices), so degrade rather than fail.
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

}  // namespace bypass::transport::detail

namespace bypass::transport {

namespace {
class FutexWaker final : public Waker {
 public:
  void wake(std::atomic<uint32_t>* word) override { detail::futex_wake(word); }
  bool sleep(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::nanoseconds timeout) override {
    return detail::futex_wait(word, expected, timeout);
  }
};
}  // namespace

Waker& futex_waker() {
  static FutexWaker waker;
  return waker;
}

}  // namespace bypass::transport
