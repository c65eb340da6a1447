// Page protection + SIGSEGV: clean pages are read-only; the first write to one faults, the
// handler records the page and makes it writable again. One process-wide handler serves every
// tracker through a small lock-free table; faults outside tracked memory go to the handler
// that was installed before ours.
#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <mutex>

#include "bypass/memshare/page_ranges.h"
#include "dirty_tracker_impl.h"

namespace bypass::memshare::detail {
namespace {

constexpr int kMaxTrackers = 256;

struct TrackedSlot {
  // begin != 0 publishes the slot: written last with release on registration, cleared first
  // on removal; the signal handler loads it with acquire before reading end and bits.
  std::atomic<uintptr_t> begin{0};
  std::atomic<uintptr_t> end{0};
  std::atomic<std::atomic<uint8_t>*> bits{nullptr};
};
TrackedSlot g_slots[kMaxTrackers];
std::mutex g_registry_mutex;  // registration and removal only; never taken in the handler
struct sigaction g_previous_action;
std::once_flag g_install_once;
bool g_installed = false;

static_assert(std::atomic<uintptr_t>::is_always_lock_free);
static_assert(std::atomic<uint8_t>::is_always_lock_free);

void on_segv(int sig, siginfo_t* info, void* context) {
  const auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  if (info->si_code == SEGV_ACCERR) {
    for (TrackedSlot& slot : g_slots) {
      const uintptr_t begin = slot.begin.load(std::memory_order_acquire);
      if (begin == 0 || addr < begin || addr >= slot.end.load(std::memory_order_relaxed)) continue;
      const int saved_errno = errno;
      const uintptr_t page = addr & ~uintptr_t{kPageSize - 1};
      // Unprotect first, then mark: collect() clears the mark before re-protecting, so either
      // order of the two racing sides leaves the page either marked or read-only.
      if (::mprotect(reinterpret_cast<void*>(page), kPageSize, PROT_READ | PROT_WRITE) == 0) {
        slot.bits.load(std::memory_order_relaxed)[(page - begin) / kPageSize].store(1, std::memory_order_release);
        errno = saved_errno;
        return;
      }
      errno = saved_errno;
      break;
    }
  }
  // Not ours: hand it to whoever handled SIGSEGV before us.
  if (g_previous_action.sa_flags & SA_SIGINFO) {
    g_previous_action.sa_sigaction(sig, info, context);
  } else if (g_previous_action.sa_handler != SIG_DFL && g_previous_action.sa_handler != SIG_IGN) {
    g_previous_action.sa_handler(sig);
  } else {
    // Default action: restore it and return; the faulting instruction runs again and the
    // kernel delivers the signal to the default disposition (core dump).
    signal(SIGSEGV, SIG_DFL);
  }
}

void install_handler() {
  struct sigaction action {};
  action.sa_sigaction = on_segv;
  action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  g_installed = ::sigaction(SIGSEGV, &action, &g_previous_action) == 0;
}

class MprotectTracker final : public DirtyTracker {
 public:
  MprotectTracker(std::byte* base, uint64_t size, int slot, std::unique_ptr<std::atomic<uint8_t>[]> bits)
      : DirtyTracker(base, size), slot_(slot), bits_(std::move(bits)) {}

  // Precondition (documented on the tracker): nobody writes the memory while it is destroyed.
  ~MprotectTracker() override {
    std::lock_guard lock(g_registry_mutex);
    g_slots[slot_].begin.store(0, std::memory_order_release);
    g_slots[slot_].bits.store(nullptr, std::memory_order_relaxed);
    ::mprotect(base(), page_ceil(size()), PROT_READ | PROT_WRITE);
  }

  TrackingMethod method() const override { return TrackingMethod::kMprotect; }

  Result<void> collect(Range range, std::vector<PageRange>& out) override {
    auto span = page_span(range, size());
    if (!span) return span.error();
    const size_t first = out.size();
    for (uint64_t page = span->offset; page < span->offset + span->size; page += kPageSize) {
      // Clear before re-protecting (pairs with the handler's unprotect-then-mark).
      if (bits_[page / kPageSize].exchange(0, std::memory_order_acq_rel) != 0) append_run(out, page, kPageSize);
    }
    for (size_t i = first; i < out.size(); ++i) {
      if (::mprotect(base() + out[i].offset, out[i].size, PROT_READ) != 0) return io_error("mprotect", errno);
      out[i].size = std::min(out[i].size, size() - out[i].offset);
    }
    return {};
  }

 private:
  int slot_;
  std::unique_ptr<std::atomic<uint8_t>[]> bits_;
};

}  // namespace

Result<std::unique_ptr<DirtyTracker>> make_mprotect_tracker(std::byte* base, uint64_t size) {
  std::call_once(g_install_once, install_handler);
  if (!g_installed) return io_error("sigaction(SIGSEGV)", errno);
  const uint64_t pages = page_ceil(size) / kPageSize;
  std::unique_ptr<std::atomic<uint8_t>[]> bits(new std::atomic<uint8_t>[pages]);
  for (uint64_t i = 0; i < pages; ++i) bits[i].store(0, std::memory_order_relaxed);
  std::lock_guard lock(g_registry_mutex);
  for (int i = 0; i < kMaxTrackers; ++i) {
    TrackedSlot& slot = g_slots[i];
    if (slot.begin.load(std::memory_order_relaxed) != 0) continue;
    if (::mprotect(base, page_ceil(size), PROT_READ) != 0) return io_error("mprotect", errno);
    slot.end.store(reinterpret_cast<uintptr_t>(base) + page_ceil(size), std::memory_order_relaxed);
    slot.bits.store(bits.get(), std::memory_order_relaxed);
    slot.begin.store(reinterpret_cast<uintptr_t>(base), std::memory_order_release);  // pairs with the handler
    return std::unique_ptr<DirtyTracker>(new MprotectTracker(base, size, i, std::move(bits)));
  }
  return make_error(Errc::kBusy, "too many mprotect trackers in this process");
}

}  // namespace bypass::memshare::detail
