// The domain side of the VM-queue path: a process (in production, a VM or container) that owns
// a queue at the host broker, allocates pages from the host's pools, and sends them to other
// domains' queues. Payload pages change owner by being unmapped here and mapped there; their
// bytes are never copied.
//
// A Domain is used from one thread at a time (like a socket). Pages and Messages may outlive
// their Domain: they then simply unmap.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bypass/vmqueue/types.h"

namespace bypass::vmqueue {

namespace detail {
struct DomainState;
}

// Pages this domain owns, mapped contiguously at bytes().data(). Move-only; dropping it returns
// the pages to the domain's local cache (then, past a limit, to the host pool).
class Pages {
 public:
  Pages() = default;
  Pages(Pages&& other) noexcept;
  Pages& operator=(Pages&& other) noexcept;
  Pages(const Pages&) = delete;
  Pages& operator=(const Pages&) = delete;
  ~Pages();

  std::span<std::byte> bytes() const { return {base_, count_ * page_bytes(size_)}; }
  std::byte* data() const { return base_; }
  size_t count() const { return count_; }
  PageSize page_size() const { return size_; }
  explicit operator bool() const { return base_ != nullptr; }

 private:
  friend struct detail::DomainState;
  friend class Domain;
  struct Run {
    uint32_t first;
    uint32_t count;
  };
  std::shared_ptr<detail::DomainState> state_;
  std::byte* base_ = nullptr;  // start of the reserved virtual range
  size_t count_ = 0;
  PageSize size_ = PageSize::k4K;
  std::vector<Run> runs_;  // pool page indices, in mapping order
};

struct Message {
  uint32_t sender = 0;  // Identity::id of the sending domain
  uint32_t tag = 0;     // sender's choice
  size_t length = 0;    // meaningful payload bytes at the start of pages
  Pages pages;
  std::span<std::byte> data() const { return pages.bytes().first(length); }
};

struct SendOptions {
  uint32_t tag = 0;
  Delivery delivery = Delivery::kQueueDefault;
  // How long to wait for room when the destination queue is full: negative waits for ever,
  // zero fails at once with Errc::kFull.
  std::chrono::milliseconds timeout{-1};
};

// One message of Domain::send_batch().
struct Outgoing {
  uint32_t peer = 0;
  Pages pages;
  size_t length = 0;  // payload bytes at the start of pages
  uint32_t tag = 0;
  Delivery delivery = Delivery::kQueueDefault;
  Errc result = Errc::kOk;  // what send_batch() decided for this message
};

class Domain {
 public:
  // Connects to the broker at `socket_path` and registers `name` (letters, digits, '-', '_',
  // '.'; at most 63). Fails with kNameTaken, kProtocol (host speaks another version),
  // kBrokerLost (nobody listening), kFull (the broker serves its --max-domains) or kInvalid.
  // Inside a VM, `socket_path` is "ivshmem:" (the VM's first ivshmem PCI device),
  // "ivshmem:0000:00:04.0" (a PCI address) or "ivshmem:/a/file" (a resource2, or in tests the
  // host's device file): the domain attaches through a slot of the broker's VM device (vmqd
  // --device) and its queue holds at most 256 messages.
  static Result<Domain> connect(const std::string& socket_path, std::string_view name, QueueOptions options = {});

  Domain(Domain&&) noexcept;
  Domain& operator=(Domain&&) noexcept;
  ~Domain();

  const Identity& self() const;
  // Whether the host backs 2 MiB pages by hugetlbfs (else by ordinary shared memory).
  bool huge_pages_are_hugetlb() const;

  // Identity exchange through the host: completes once the domain called `peer` also asked to
  // be introduced to this one. Afterwards each may send to the other. Returns the peer's
  // identity as the host saw it. On kTimedOut the request is withdrawn; kFull: 64 other
  // introductions of this domain are waiting for their peers.
  Result<Identity> introduce(std::string_view peer, std::chrono::milliseconds timeout);
  // Identity of an introduced peer by id, or nullptr.
  const Identity* peer(uint32_t id) const;

  // `count` pages of `size`, mapped read/write and owned by this domain.
  Result<Pages> alloc(size_t count, PageSize size = PageSize::k4K);

  // Moves `pages` to the queue of `peer`; `length` bytes of it are payload. On success `pages`
  // is left empty and this domain can no longer reach those pages; on failure it still owns
  // them, mapped where they were.
  Errc send(uint32_t peer, Pages&& pages, size_t length, SendOptions options = {});
  // Sends several messages with one wait: their requests go into the request ring back to back
  // (up to 64 outstanding), the broker decides them in its passes and this waits for the answers
  // together, so a stream of small messages costs a broker pass per batch instead of a round trip
  // per message, and the receiver is woken once for what one pass delivered. Each message ends
  // as send() would leave it, in `result`: sent (its pages gone) or refused (its pages still
  // this domain's, mapped where they were). Messages to one peer are decided in order, but a
  // refused one leaves a gap that later ones of the batch may already have passed. `timeout`
  // bounds the wait for room in full queues, for the whole batch (negative: for ever; zero: a
  // full queue refuses at once). Returns how many were sent.
  size_t send_batch(std::span<Outgoing> messages, std::chrono::milliseconds timeout = std::chrono::milliseconds(-1));
  // Delivers this domain's lazy messages now.
  Errc flush();

  // Messages waiting in this domain's queue; never blocks.
  size_t pending();
  // The oldest message in the queue. timeout 0: do not block; negative: wait for ever.
  // Returns kPeerDead once for each introduced peer that died (after its last messages),
  // kTimedOut, or kBrokerLost.
  Result<Message> recv(std::chrono::milliseconds timeout);
  // Peers seen dying, in order.
  std::vector<Identity> dead_peers() const;

 private:
  explicit Domain(std::shared_ptr<detail::DomainState> state);
  static Result<Domain> connect_device(const std::string& endpoint, std::string_view name, QueueOptions options);
  std::shared_ptr<detail::DomainState> s_;
};

}  // namespace bypass::vmqueue
