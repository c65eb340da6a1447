// The domain side of memshare: register with the service, name local memory, grant other
// domains access, map their buffers, keep shadows in step with barriers, and queue transfers.
// A Client is thread-safe (one request at a time on its socket); Mapping, Shadow and
// TransferHandle keep the connection alive and clean up after themselves.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "bypass/base/unique_fd.h"
#include "bypass/memshare/dirty_tracker.h"
#include "bypass/memshare/error.h"
#include "bypass/memshare/region.h"
#include "bypass/memshare/types.h"

namespace bypass::memshare {

namespace detail {
struct Connection;
struct MappingState;
struct ShadowState;
}  // namespace detail

struct NameInfo {
  uint64_t size = 0;
  DomainId owner = kNoDomain;
  uint32_t generation = 0;        // bumped by every rebind
  Access access = Access::kRead;  // what the asking domain may do
  bool is_image = false;
};

// Another domain's buffer (or our own) mapped contiguously into this process, no copy.
class Mapping {
 public:
  Mapping() = default;
  Mapping(Mapping&&) noexcept = default;
  Mapping& operator=(Mapping&&) noexcept = default;
  ~Mapping();

  std::byte* data() const;
  uint64_t size() const;
  Access access() const;
  const Name& name() const;
  explicit operator bool() const { return state_ != nullptr; }

  // The name was revoked (owner ended, released, or our grant withdrawn). The memory stays
  // readable; once the client processes revocations it reads as zeros, and the owner's pages
  // are no longer referenced from here.
  bool revoked() const;
  // The name was rebound to another buffer since this mapping was made (Client::refresh).
  bool stale() const;

  // Checked accessors: fail with kDomainGone once revoked, kOutOfRange outside the buffer.
  Result<void> read(uint64_t offset, std::span<std::byte> out) const;
  Result<void> write(uint64_t offset, std::span<const std::byte> in) const;

 private:
  friend class Client;
  std::shared_ptr<detail::MappingState> state_;
};

// A private copy of a named buffer in this domain, kept in step by barriers (for memory that
// is not shared: the owner's side may be device memory or across a network). Writes to data()
// are tracked; a write barrier moves only the pages written since the last barrier.
class Shadow {
 public:
  Shadow() = default;
  Shadow(Shadow&&) noexcept = default;
  Shadow& operator=(Shadow&&) noexcept = default;
  ~Shadow();

  std::byte* data() const;
  uint64_t size() const;
  const Name& name() const;
  Access access() const;
  TrackingMethod method() const;  // kAuto for read-only shadows (nothing to track)
  explicit operator bool() const { return state_ != nullptr; }

 private:
  friend class Client;
  std::shared_ptr<detail::ShadowState> state_;
};

// A queued transfer. The service's workers copy; the result lands in shared memory, so poll()
// costs no system call. Dropping an unfinished handle is safe (the slot is reclaimed later).
class TransferHandle {
 public:
  TransferHandle() = default;
  TransferHandle(TransferHandle&& other) noexcept;
  TransferHandle& operator=(TransferHandle&& other) noexcept;
  ~TransferHandle();

  // The result if the transfer finished: bytes moved, or the error.
  std::optional<Result<uint64_t>> poll();
  // Waits for the result. kTimeout if it has not finished in time (it may still finish);
  // kDisconnected if the service went away.
  Result<uint64_t> wait(std::chrono::nanoseconds timeout = std::chrono::nanoseconds::max());
  uint64_t ticket() const { return ticket_; }

 private:
  friend class Client;
  void release_slot();
  std::shared_ptr<detail::Connection> conn_;
  uint32_t slot_ = 0;
  uint64_t ticket_ = 0;
  bool holding_ = false;
  std::optional<Result<uint64_t>> result_;
};

class Client {
 public:
  // Connects to a service socket and registers; `label` shows in the service's log.
  static Result<Client> connect(const std::string& socket_path, std::string_view label = "domain");
  // Registers over an already connected SOCK_SEQPACKET socket.
  static Result<Client> adopt(base::UniqueFd socket, std::string_view label = "domain");

  Client(Client&&) noexcept = default;
  Client& operator=(Client&&) noexcept = default;
  ~Client();

  DomainId domain() const;

  // Names [offset, offset + size) of a memfd (created with MFD_ALLOW_SEALING, opened
  // read-write, offset page aligned). The service seals it against shrinking.
  Result<Name> name(int fd, uint64_t offset, uint64_t size);
  Result<Name> name(const Region& region) { return name(region.fd(), 0, region.size()); }
  // Owner only: lets `domain` map the name with `access`; revoke() withdraws it and tears
  // down that domain's mappings; release() ends the name for everybody.
  Result<void> grant(const Name& name, DomainId domain, Access access);
  Result<void> revoke(const Name& name, DomainId domain);
  Result<void> release(const Name& name);
  Result<NameInfo> query(const Name& name);

  // Maps a name into this process. Read access yields a read-only mapping of a read-only file
  // description: a write faults, and it cannot be made writable.
  Result<Mapping> map(const Name& name, Access access);
  // After a rebind: maps the new buffer (at the same address when the size allows).
  Result<void> refresh(Mapping& mapping);
  // Owner only: the name now stands for [offset, offset + size) of `fd`.
  Result<uint32_t> rebind(const Name& name, int fd, uint64_t offset, uint64_t size);
  Result<uint32_t> rebind(const Name& name, const Region& region) {
    return rebind(name, region.fd(), 0, region.size());
  }

  // A shadow copy of the name, initially equal to it.
  Result<Shadow> open_shadow(const Name& name, Access access, TrackingMethod method = TrackingMethod::kAuto);
  // Write: the shadow's dirty pages in `range` -> the named buffer. Read: the buffer's pages
  // in `range` -> the shadow (only pages that differ; local unflushed writes there are
  // discarded).
  Result<BarrierStats> barrier(Shadow& shadow, BarrierDirection direction, Range range = Range::whole());

  // Queues a copy between two names (buffers or device images); needs read access to src and
  // write access to dst. Errors found later (unknown name, denied, out of range, domain gone)
  // come back through the handle.
  Result<TransferHandle> transfer(const Name& src, const Name& dst, std::span<const CopyRange> ranges);
  Result<TransferHandle> transfer(const Name& src, const Name& dst, CopyRange range) {
    return transfer(src, dst, std::span<const CopyRange>(&range, 1));
  }

  // Replaces every revoked mapping by zero pages (reads keep working and see zeros), dropping
  // this process's references to the ended owner's memory. Runs automatically before each
  // request; returns how many mappings it tore down.
  size_t process_revocations();

 private:
  explicit Client(std::shared_ptr<detail::Connection> conn) : conn_(std::move(conn)) {}
  std::shared_ptr<detail::Connection> conn_;
};

}  // namespace bypass::memshare
