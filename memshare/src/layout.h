// Layout of the per-domain control page: a memfd the service creates at registration and maps
// in both itself and the domain. The service writes transfer completions and mapping state;
// the domain reads them without a system call and sleeps on a futex when it must wait.
// Nothing the service reads from this page is trusted: the service only writes it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace bypass::memshare {

inline constexpr uint32_t kControlMagic = 0x4b534d42;  // "BMSK"
inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr uint32_t kCompletionSlots = 1024;
inline constexpr uint32_t kMappingSlots = 4096;
inline constexpr size_t kCompletionDetailBytes = 96;

// Completion slot states (the futex word).
enum : uint32_t {
  kSlotFree = 0,     // domain: free for a new transfer
  kSlotPending = 1,  // domain: set before sending the request
  kSlotWaiting = 2,  // domain: pending, and a thread sleeps on the futex
  kSlotDone = 3,     // service: result fields are valid
};

struct alignas(128) ControlHeader {
  uint32_t magic;
  uint32_t version;
  uint32_t completion_slots;
  uint32_t mapping_slots;
  // Bumped (release) by the service after it sets a MappingSlot::revoked; the domain compares
  // it (acquire) with the count it last processed to find revoked mappings cheaply.
  std::atomic<uint32_t> revocations;
};

struct alignas(128) CompletionSlot {
  // Domain stores kSlotPending before sending; domain CASes pending->waiting before a futex
  // wait; the service exchanges in kSlotDone (release) after writing the fields below and
  // wakes the futex if it saw kSlotWaiting. The domain loads it with acquire.
  std::atomic<uint32_t> state;
  uint32_t error;                       // Errc
  uint64_t bytes;                       // bytes moved
  uint64_t ticket;                      // copied from the request, so the domain can check what completed
  char detail[kCompletionDetailBytes];  // error message, NUL terminated
};

struct MappingSlot {
  // Bumped (release) by the service when the name is rebound; the domain's Mapping remembers
  // the value it mapped and compares (acquire) to know it is stale.
  std::atomic<uint32_t> generation;
  // Set to 1 (release) by the service when the name is revoked (owner gone, released, or this
  // domain's grant withdrawn); read (acquire) by the domain before trusting the mapping.
  std::atomic<uint32_t> revoked;
};

struct ControlPage {
  ControlHeader header;
  CompletionSlot completions[kCompletionSlots];
  MappingSlot mappings[kMappingSlots];
};

static_assert(std::atomic<uint32_t>::is_always_lock_free, "futex words must be lock-free");
static_assert(sizeof(std::atomic<uint32_t>) == 4, "futex words are 32-bit");
static_assert(sizeof(ControlHeader) == 128);
static_assert(sizeof(CompletionSlot) == 128);
static_assert(sizeof(MappingSlot) == 8);
static_assert(sizeof(ControlPage) == 128 + kCompletionSlots * 128 + kMappingSlots * 8, "no padding between arrays");
inline constexpr size_t kControlPageBytes = (sizeof(ControlPage) + 4095) & ~size_t{4095};

// Futex on a word of a shared mapping (not FUTEX_PRIVATE: the other side is another process).
// Returns false on timeout. timeout_ns < 0 waits forever.
bool futex_wait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ns);
void futex_wake_all(std::atomic<uint32_t>* word);

}  // namespace bypass::memshare
