// Vocabulary of the VM-queue path: page sizes, delivery modes, error codes, identities.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "bypass/base/result.h"

namespace bypass::vmqueue {

enum class PageSize : uint8_t { k4K = 0, k2M = 1 };

constexpr size_t page_bytes(PageSize size) { return size == PageSize::k2M ? size_t{2} << 20 : size_t{4096}; }

// When the destination is woken for a message.
enum class Delivery : uint8_t {
  kQueueDefault = 0,  // whatever the destination queue was created with
  kImmediate = 1,     // enqueued and the destination woken now
  kLazy = 2,          // held by the host until the sender's next flush point (flush(), or
                      // any immediate send from it) or the destination's lazy delay expires
};

enum class Errc : uint8_t {
  kOk = 0,
  kFull,           // destination queue full and the caller would not wait (or waited in vain)
  kTimedOut,       // nothing arrived / no space appeared within the timeout
  kPeerDead,       // the peer domain is gone
  kNotIntroduced,  // no completed identity exchange with that domain
  kNoPages,        // the host's page pool is exhausted
  kBrokerLost,     // the host broker is gone; the domain is unusable
  kInvalid,        // bad argument (pages not ours, size out of range, bad name...)
  kNameTaken,      // another live domain already has this name
  kTooFragmented,  // a message would need more page runs than a descriptor holds
  kProtocol,       // version mismatch or malformed host message
};

const char* to_string(Errc errc);

// A value or an Error (a code and a one-line message starting with the code's name); the
// library's one result type, base::Result (docs/base.md). The codes travel on the wire as one
// byte; the message does not (the receiver names the code).
using Error = base::Error<Errc>;
template <class T>
using Result = base::Result<T, Errc>;
inline Error make_error(Errc code, std::string_view message = {}) { return base::make_error(code, message); }

// Who a domain is, as the host saw it: the id the host assigned, the name it registered, and
// for a process domain the kernel's SO_PEERCRED credentials of its connection (not claims the
// domain made). For a domain inside a VM no kernel vouches for them: pid/uid/gid are what the
// guest wrote into its device slot, and `claimed` says so.
struct Identity {
  uint32_t id = 0;
  std::string name;
  int pid = 0;
  unsigned uid = 0;
  unsigned gid = 0;
  bool claimed = false;
};

struct QueueOptions {
  uint32_t capacity = 64;  // messages the queue holds before senders feel backpressure
  Delivery default_delivery = Delivery::kImmediate;
  std::chrono::microseconds lazy_delay{2000};  // upper bound on how long a lazy message waits
};

}  // namespace bypass::vmqueue
