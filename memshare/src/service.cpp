#include "bypass/memshare/service.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <set>
#include <span>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bypass/base/unix_socket.h"
#include "bypass/memshare/client.h"
#include "bypass/memshare/page_ranges.h"
#include "bypass/memshare/region.h"
#include "bypass/memshare/socket_io.h"
#include "layout.h"
#include "protocol.h"
#include "transfer_engine.h"

namespace bypass::memshare {

namespace {

constexpr uint64_t kMaxBufferBytes = uint64_t{1} << 40;
constexpr size_t kMaxNamesPerDomain = 65536;
constexpr size_t kMaxShadowsPerDomain = 4096;
constexpr uint64_t kPopulateLimit = uint64_t{256} << 20;

std::string domain_text(DomainId id) { return "domain " + std::to_string(id); }

Result<Name> random_name() {
  Name name;
  uint64_t bits[2];
  size_t got = 0;
  while (got < sizeof bits) {
    const ssize_t n = ::getrandom(reinterpret_cast<char*>(bits) + got, sizeof bits - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("getrandom", errno);
    }
    got += static_cast<size_t>(n);
  }
  name.hi = bits[0];
  name.lo = bits[1];
  return name;
}

// Validates a domain's buffer fd and maps it for the service.
Result<std::shared_ptr<Buffer>> make_buffer(base::UniqueFd fd, uint64_t offset, uint64_t size) {
  if (!fd.valid()) return make_error(Errc::kInvalidArgument, "no file descriptor came with the request");
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0) return io_error("fcntl(F_GETFL)", errno);
  if ((flags & O_ACCMODE) != O_RDWR) return make_error(Errc::kInvalidArgument, "buffer fd must be open read-write");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return io_error("fstat", errno);
  if (!S_ISREG(st.st_mode)) return make_error(Errc::kInvalidArgument, "buffer fd is not a memfd or regular file");
  if (size == 0 || size > kMaxBufferBytes) {
    return make_error(Errc::kInvalidArgument, "buffer size " + std::to_string(size) + " is zero or too large");
  }
  if (offset % kPageSize != 0) return make_error(Errc::kInvalidArgument, "buffer offset not page aligned");
  if (!range_fits(offset, size, static_cast<uint64_t>(st.st_size))) {
    return make_error(Errc::kOutOfRange, "[" + std::to_string(offset) + ", +" + std::to_string(size) +
                                             ") lies outside the file of " + std::to_string(st.st_size) + " bytes");
  }
  // Nobody may shrink the file under a mapping (that would turn accesses into SIGBUS).
  const int seals = ::fcntl(fd.get(), F_GET_SEALS);
  if (seals < 0) {
    return make_error(Errc::kInvalidArgument, "buffer fd cannot be sealed: create the memfd with MFD_ALLOW_SEALING");
  }
  if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) {
    return make_error(Errc::kInvalidArgument, "buffer memfd is sealed against writing");
  }
  if (!(seals & F_SEAL_SHRINK) && ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK) != 0) {
    return make_error(Errc::kInvalidArgument,
                      "cannot seal the buffer against shrinking (create the memfd with "
                      "MFD_ALLOW_SEALING and do not seal it with F_SEAL_SEAL)");
  }
  // Pre-fault the service's view so transfers run at memcpy speed, but only where the domain
  // already allocated most of the file: populating a sparse memfd would make the service
  // allocate memory on a domain's behalf.
  const bool resident = static_cast<uint64_t>(st.st_blocks) * 512 >= size / 2;
  const bool populate = resident && size <= kPopulateLimit;
  auto view = map_memory(fd.get(), offset, size, true, populate);
  if (!view) return view.error();
  auto buffer = std::make_shared<Buffer>();
  buffer->fd = std::move(fd);
  buffer->fd_offset = offset;
  buffer->size = size;
  buffer->view = std::move(*view);
  return buffer;
}

struct ShadowState {
  Name name;
  Access access;
  std::shared_ptr<Buffer> memory;  // the shadow memfd, mapped by the service
};

struct NameEntry {
  Name name;
  DomainId owner = kNoDomain;
  std::shared_ptr<Buffer> buffer;
  std::unordered_map<DomainId, Access> rights;
  uint32_t generation = 0;
  std::set<std::pair<DomainId, uint32_t>> mappers;  // (domain, mapping slot)
};

}  // namespace

struct Domain {
  DomainId id = kNoDomain;
  base::UniqueFd socket;
  base::PeerCredentials peer;
  std::string label;
  base::UniqueFd control_fd;
  base::Mapping control_view;
  // Everything below is guarded by Service::Impl::mutex.
  bool registered = false;
  bool ended = false;
  std::vector<Name> slot_names = std::vector<Name>(kMappingSlots);  // empty Name: free slot
  std::unordered_map<uint32_t, ShadowState> shadows;
  uint32_t next_shadow = 1;
  size_t names_owned = 0;

  ControlPage* control() const { return reinterpret_cast<ControlPage*>(control_view.data()); }
};

struct Service::Impl {
  explicit Impl(ServiceOptions opts) : options(opts), engine(opts.workers, opts.chunk_bytes) {}

  ServiceOptions options;

  mutable std::mutex mutex;  // guards names, tombstones, domains, next_domain and Domain tables
  std::unordered_map<Name, NameEntry, NameHash> names;
  std::unordered_map<Name, DomainId, NameHash> tombstones;  // name -> owner that ended
  std::deque<Name> tombstone_order;
  std::unordered_map<DomainId, std::shared_ptr<Domain>> domains;
  DomainId next_domain = 1;

  std::mutex threads_mutex;  // guards threads, finished, listener thread
  std::unordered_map<DomainId, std::thread> threads;
  std::vector<DomainId> finished;
  base::UniqueFd listener;
  std::thread accept_thread;
  std::atomic<bool> stopping{false};  // set by stop(); read by accept loop and adopt()

  // Statistics: relaxed counters, read only for reporting.
  std::atomic<uint64_t> transfers{0};
  std::atomic<uint64_t> transfer_bytes{0};
  std::atomic<uint64_t> barrier_bytes{0};

  // Declared last: destroyed first, so queued transfers finish while everything they report
  // to is still alive.
  TransferEngine engine;

  void log(const char* format, ...) __attribute__((format(printf, 2, 3))) {
    if (!options.verbose) return;
    va_list args;
    va_start(args, format);
    std::fprintf(stderr, "memshare: ");
    std::vfprintf(stderr, format, args);
    std::fputc('\n', stderr);
    va_end(args);
  }

  // ---- connection management ----
  Result<DomainId> add_domain(base::UniqueFd socket) {
    if (stopping.load(std::memory_order_acquire)) return make_error(Errc::kDisconnected, "service is stopping");
    auto domain = std::make_shared<Domain>();
    auto peer = base::peer_credentials(socket.get());
    if (peer) domain->peer = *peer;
    {
      std::lock_guard lock(mutex);
      if (domains.size() >= options.max_domains) {
        // Its registration, the first thing it asks, gets this answer (it is already waiting in
        // its socket); no thread is started for it.
        const Error busy = make_error(Errc::kBusy, "the memshare service serves " + std::to_string(domains.size()) +
                                                       " domains, its limit (max_domains)");
        (void)send_error(socket.get(), wire::Op::kRegister, busy);
        log("refused a domain: %s", busy.message.c_str());
        linger(std::move(socket));
        return busy;
      }
      domain->socket = std::move(socket);
      domain->id = next_domain++;
      domains.emplace(domain->id, domain);
    }
    reap();
    std::lock_guard lock(threads_mutex);
    threads.emplace(domain->id, std::thread([this, domain] { serve_domain(domain); }));
    return domain->id;
  }

  // A refused connection is kept open (write side shut) for a second before it is closed:
  // closed at once, the client's request still unread here would reset the connection and
  // lose the refusal waiting in its socket. At most kLingering at once, oldest closed first.
  // Called with `mutex` held.
  static constexpr size_t kLingering = 64;
  std::deque<std::pair<base::UniqueFd, std::chrono::steady_clock::time_point>> lingering;
  void linger(base::UniqueFd socket) {
    const auto now = std::chrono::steady_clock::now();
    while (!lingering.empty() &&
           (lingering.size() >= kLingering || now - lingering.front().second > std::chrono::seconds(1)))
      lingering.pop_front();
    ::shutdown(socket.get(), SHUT_WR);
    lingering.emplace_back(std::move(socket), now);
  }

  void reap() {
    std::vector<std::thread> done;
    {
      std::lock_guard lock(threads_mutex);
      for (DomainId id : finished) {
        auto it = threads.find(id);
        if (it != threads.end()) {
          done.push_back(std::move(it->second));
          threads.erase(it);
        }
      }
      finished.clear();
    }
    for (std::thread& t : done) t.join();
  }

  void accept_loop() {
    for (;;) {
      const int fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (stopping.load(std::memory_order_acquire)) {
        if (fd >= 0) ::close(fd);
        return;
      }
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
          continue;
        }
        log("accept failed: %s; no longer accepting", std::strerror(errno));
        return;
      }
      auto added = add_domain(base::UniqueFd(fd));
      if (!added) log("could not add a domain: %s", added.error().message.c_str());
    }
  }

  void serve_domain(const std::shared_ptr<Domain>& domain) {
    std::vector<std::byte> buffer(wire::kMaxMessageBytes);
    std::vector<base::UniqueFd> fds;
    std::string reason = "closed its connection";
    bool abnormal = false;
    for (;;) {
      fds.clear();
      auto n = recv_message(domain->socket.get(), buffer, fds);
      if (!n) {
        if (n.code() != Errc::kDisconnected) {
          reason = n.error().message;
          abnormal = true;
        }
        break;
      }
      auto handled = dispatch(*domain, std::span<const std::byte>(buffer.data(), *n), fds);
      if (!handled) {
        reason = handled.error().message;
        abnormal = handled.code() != Errc::kDisconnected;
        break;
      }
    }
    // A session ended by bad input always gets its one log line; clean ends only when verbose.
    if (abnormal || options.verbose) {
      std::fprintf(stderr, "memshare: %s (pid %d, '%s') ended: %s\n", domain_text(domain->id).c_str(),
                   static_cast<int>(domain->peer.pid), domain->label.c_str(), reason.c_str());
    }
    end_domain(domain);
    std::lock_guard lock(threads_mutex);
    finished.push_back(domain->id);
  }

  // Revokes everything a domain owned and forgets it. Idempotent.
  void end_domain(const std::shared_ptr<Domain>& domain) {
    {
      std::lock_guard lock(mutex);
      if (domain->ended) return;
      domain->ended = true;
      std::vector<Name> owned;
      for (auto& [name, entry] : names) {
        if (entry.owner == domain->id) owned.push_back(name);
      }
      for (const Name& name : owned) revoke_name_locked(name, /*tombstone=*/true);
      for (uint32_t slot = 0; slot < kMappingSlots; ++slot) unmap_slot_locked(*domain, slot);
      domain->shadows.clear();
      domains.erase(domain->id);
    }
    // Wakes the domain's thread if the end came from elsewhere (Service::end_domain, stop()).
    ::shutdown(domain->socket.get(), SHUT_RDWR);
  }

  // ---- tables (mutex held) ----
  DomainId domain_status_locked(DomainId id, Error* error) const {
    if (domains.count(id) != 0) return id;
    if (id != kNoDomain && id < next_domain) {
      *error = make_error(Errc::kDomainGone, domain_text(id) + " has ended");
    } else {
      *error = make_error(Errc::kInvalidArgument, "no " + domain_text(id) + " was ever registered");
    }
    return kNoDomain;
  }

  Result<NameEntry*> lookup_locked(const Name& name) {
    auto it = names.find(name);
    if (it != names.end()) return &it->second;
    auto gone = tombstones.find(name);
    if (gone != tombstones.end()) {
      return make_error(Errc::kDomainGone,
                        "name " + name.to_string() + " was revoked: its owner " + domain_text(gone->second) + " ended");
    }
    return make_error(Errc::kUnknownName, "no name " + name.to_string() + " in this service");
  }

  static Result<void> check_access(const NameEntry& entry, DomainId domain, Access wanted) {
    if (entry.owner == domain) return {};
    auto it = entry.rights.find(domain);
    if (it == entry.rights.end()) {
      return make_error(Errc::kAccessDenied, domain_text(domain) + " is not listed for name " + entry.name.to_string());
    }
    if (!allows(it->second, wanted)) {
      return make_error(Errc::kAccessDenied, domain_text(domain) + " may only read name " + entry.name.to_string());
    }
    return {};
  }

  static Result<void> check_owner(const NameEntry& entry, DomainId domain, const char* what) {
    if (entry.owner == domain) return {};
    return make_error(Errc::kAccessDenied, std::string("only the owner (") + domain_text(entry.owner) + ") may " +
                                               what + " name " + entry.name.to_string());
  }

  void mark_revoked_locked(DomainId domain_id, uint32_t slot) {
    auto it = domains.find(domain_id);
    if (it == domains.end()) return;
    ControlPage* page = it->second->control();
    if (page == nullptr) return;
    page->mappings[slot].revoked.store(1, std::memory_order_release);  // pairs with Mapping::revoked()
    page->header.revocations.fetch_add(1, std::memory_order_release);  // pairs with process_revocations()
  }

  void revoke_name_locked(const Name& name, bool tombstone) {
    auto it = names.find(name);
    if (it == names.end()) return;
    NameEntry& entry = it->second;
    entry.buffer->revoked.store(true, std::memory_order_release);  // pairs with TransferEngine::copy
    for (const auto& [domain_id, slot] : entry.mappers) mark_revoked_locked(domain_id, slot);
    if (tombstone) {
      tombstones.emplace(name, entry.owner);
      tombstone_order.push_back(name);
      while (tombstone_order.size() > options.tombstones) {
        tombstones.erase(tombstone_order.front());
        tombstone_order.pop_front();
      }
    }
    auto owner = domains.find(entry.owner);
    if (owner != domains.end() && owner->second->names_owned > 0) --owner->second->names_owned;
    names.erase(it);
  }

  void unmap_slot_locked(Domain& domain, uint32_t slot) {
    Name& name = domain.slot_names[slot];
    if (name.empty()) return;
    auto it = names.find(name);
    if (it != names.end()) it->second.mappers.erase({domain.id, slot});
    name = Name{};
  }

  // ---- replies ----
  static Result<void> send_reply(Domain& domain, wire::Op op, const void* body, size_t size, int fd = -1) {
    std::byte message[sizeof(wire::MessageHeader) + 64];
    const wire::MessageHeader header{static_cast<uint32_t>(op), 0};
    std::memcpy(message, &header, sizeof header);
    if (size > 64) return make_error(Errc::kProtocol, "reply body too large");
    if (size) std::memcpy(message + sizeof header, body, size);
    const int fds[1] = {fd};
    return send_message(domain.socket.get(), std::span<const std::byte>(message, sizeof header + size),
                        fd >= 0 ? std::span<const int>(fds) : std::span<const int>());
  }

  static Result<void> send_error(int socket, wire::Op op, const Error& error) {
    std::byte message[sizeof(wire::MessageHeader) + wire::kMaxErrorText];
    const wire::MessageHeader header{static_cast<uint32_t>(op), static_cast<uint32_t>(error.code)};
    std::memcpy(message, &header, sizeof header);
    const size_t n = std::min(error.message.size(), wire::kMaxErrorText);
    std::memcpy(message + sizeof header, error.message.data(), n);
    return send_message(socket, std::span<const std::byte>(message, sizeof header + n));
  }
  static Result<void> send_error(Domain& domain, wire::Op op, const Error& error) {
    return send_error(domain.socket.get(), op, error);
  }

  template <typename T>
  static Result<void> reply(Domain& domain, wire::Op op, const Result<T>& result, int fd = -1) {
    if (!result) return send_error(domain, op, result.error());
    return send_reply(domain, op, &result.value(), sizeof(T), fd);
  }

  static Result<void> reply_void(Domain& domain, wire::Op op, const Result<void>& result) {
    if (!result) return send_error(domain, op, result.error());
    return send_reply(domain, op, nullptr, 0);
  }

  // ---- dispatch ----
  template <typename T>
  static Result<T> parse(std::span<const std::byte> message, size_t trailing = 0) {
    if (message.size() != sizeof(wire::MessageHeader) + sizeof(T) + trailing) {
      return make_error(Errc::kProtocol, "request of " + std::to_string(message.size()) + " bytes has the wrong size");
    }
    T body;
    std::memcpy(&body, message.data() + sizeof(wire::MessageHeader), sizeof(T));
    return body;
  }

  template <typename Elem, typename T>
  static Result<std::vector<Elem>> parse_array(std::span<const std::byte> message, uint32_t count, size_t limit) {
    if (count > limit) return make_error(Errc::kProtocol, "too many ranges in one request");
    std::vector<Elem> out(count);
    if (count) std::memcpy(out.data(), message.data() + sizeof(wire::MessageHeader) + sizeof(T), count * sizeof(Elem));
    return out;
  }

  Result<void> dispatch(Domain& domain, std::span<const std::byte> message, std::vector<base::UniqueFd>& fds) {
    if (message.size() < sizeof(wire::MessageHeader)) return make_error(Errc::kProtocol, "runt message");
    wire::MessageHeader header;
    std::memcpy(&header, message.data(), sizeof header);
    const auto op = static_cast<wire::Op>(header.op);
    if (!domain.registered && op != wire::Op::kRegister) {
      return make_error(Errc::kProtocol, "request before registration");
    }
    // Descriptors only come with the requests that carry one.
    const bool takes_fd = op == wire::Op::kName || op == wire::Op::kRebind;
    if (fds.size() > (takes_fd ? 1u : 0u)) return make_error(Errc::kProtocol, "unexpected file descriptors");
    base::UniqueFd fd = fds.empty() ? base::UniqueFd() : std::move(fds[0]);
    switch (op) {
      case wire::Op::kRegister:
        return on_register(domain, message);
      case wire::Op::kName:
        return on_name(domain, message, std::move(fd));
      case wire::Op::kGrant:
        return on_grant(domain, message);
      case wire::Op::kRevoke:
        return on_revoke(domain, message);
      case wire::Op::kRelease:
        return on_release(domain, message);
      case wire::Op::kQuery:
        return on_query(domain, message);
      case wire::Op::kMap:
        return on_map(domain, message);
      case wire::Op::kUnmap:
        return on_unmap(domain, message);
      case wire::Op::kRebind:
        return on_rebind(domain, message, std::move(fd));
      case wire::Op::kShadowOpen:
        return on_shadow_open(domain, message);
      case wire::Op::kShadowClose:
        return on_shadow_close(domain, message);
      case wire::Op::kBarrier:
        return on_barrier(domain, message);
      case wire::Op::kTransfer:
        return on_transfer(domain, message);
    }
    return make_error(Errc::kProtocol, "unknown request " + std::to_string(header.op));
  }

  Result<void> on_register(Domain& domain, std::span<const std::byte> message) {
    auto req = parse<wire::RegisterRequest>(message);
    if (!req) return req.error();
    if (domain.registered) return make_error(Errc::kProtocol, "registered twice");
    if (req->version != kProtocolVersion) {
      return send_error(domain, wire::Op::kRegister,
                        make_error(Errc::kProtocol, "protocol version " + std::to_string(req->version) +
                                                        " but the service speaks " + std::to_string(kProtocolVersion)));
    }
    domain.label.assign(req->label, strnlen(req->label, sizeof req->label));
    auto fd = create_memfd(kControlPageBytes, "memshare-control");
    if (!fd) return send_error(domain, wire::Op::kRegister, fd.error());
    auto view = map_memory(fd->get(), 0, kControlPageBytes, true);
    if (!view) return send_error(domain, wire::Op::kRegister, view.error());
    auto* page = reinterpret_cast<ControlPage*>(view->data());
    page->header.magic = kControlMagic;
    page->header.version = kProtocolVersion;
    page->header.completion_slots = kCompletionSlots;
    page->header.mapping_slots = kMappingSlots;
    {
      std::lock_guard lock(mutex);
      domain.control_fd = std::move(*fd);
      domain.control_view = std::move(*view);
      domain.registered = true;
    }
    log("%s registered: pid %d uid %d label '%s'", domain_text(domain.id).c_str(), static_cast<int>(domain.peer.pid),
        static_cast<int>(domain.peer.uid), domain.label.c_str());
    const wire::RegisterReply body{domain.id, kControlPageBytes, kCompletionSlots, kMappingSlots};
    return send_reply(domain, wire::Op::kRegister, &body, sizeof body, domain.control_fd.get());
  }

  Result<Name> insert_name_locked(DomainId owner, std::shared_ptr<Buffer> buffer) {
    for (;;) {
      auto name = random_name();
      if (!name) return name.error();
      if (name->empty() || names.count(*name) || tombstones.count(*name)) continue;
      NameEntry entry;
      entry.name = *name;
      entry.owner = owner;
      entry.buffer = std::move(buffer);
      names.emplace(*name, std::move(entry));
      auto d = domains.find(owner);
      if (d != domains.end()) ++d->second->names_owned;
      return *name;
    }
  }

  Result<void> on_name(Domain& domain, std::span<const std::byte> message, base::UniqueFd fd) {
    auto req = parse<wire::NameRequest>(message);
    if (!req) return req.error();
    auto buffer = make_buffer(std::move(fd), req->offset, req->size);
    if (!buffer) return send_error(domain, wire::Op::kName, buffer.error());
    Result<Name> name = make_error(Errc::kBusy, "");
    {
      std::lock_guard lock(mutex);
      if (domain.names_owned >= kMaxNamesPerDomain) {
        name = make_error(Errc::kBusy, domain_text(domain.id) + " owns too many names");
      } else {
        name = insert_name_locked(domain.id, std::move(*buffer));
      }
    }
    if (!name) return send_error(domain, wire::Op::kName, name.error());
    const wire::NameReply body{wire::to_wire(*name)};
    return send_reply(domain, wire::Op::kName, &body, sizeof body);
  }

  Result<void> grant_locked(const Name& name, DomainId caller, DomainId target, uint32_t access_bits) {
    if (access_bits != static_cast<uint32_t>(Access::kRead) &&
        access_bits != static_cast<uint32_t>(Access::kReadWrite)) {
      return make_error(Errc::kInvalidArgument, "unknown access " + std::to_string(access_bits));
    }
    auto entry = lookup_locked(name);
    if (!entry) return entry.error();
    if (caller != kNoDomain) {
      if (auto r = check_owner(**entry, caller, "grant"); !r) return r;
    }
    Error error;
    if (domain_status_locked(target, &error) == kNoDomain) return error;
    (*entry)->rights[target] = static_cast<Access>(access_bits);
    return {};
  }

  Result<void> on_grant(Domain& domain, std::span<const std::byte> message) {
    auto req = parse<wire::GrantRequest>(message);
    if (!req) return req.error();
    Result<void> result;
    {
      std::lock_guard lock(mutex);
      result = grant_locked(wire::from_wire(req->name), domain.id, req->domain, req->access);
    }
    return reply_void(domain, wire::Op::kGrant, result);
  }

  Result<void> on_revoke(Domain& domain, std::span<const std::byte> message) {
    auto req = parse<wire::RevokeRequest>(message);
    if (!req) return req.error();
    Result<void> result;
    {
      std::lock_guard lock(mutex);
      auto entry = lookup_locked(wire::from_wire(req->name));
      if (!entry) {
        result = entry.error();
      } else if (auto r = check_owner(**entry, domain.id, "revoke rights to"); !r) {
        result = r;
      } else {
        (*entry)->rights.erase(req->domain);
        // Tear down that domain's mappings of the name.
        auto& mappers = (*entry)->mappers;
        for (auto it = mappers.begin(); it != mappers.end();) {
          if (it->first == req->domain) {
            mark_revoked_locked(it->first, it->second);
            it = mappers.erase(it);
          } else {
            ++it;
          }
        }
      }
    }
    return reply_void(domain, wire::Op::kRevoke, result);
  }

  Result<void> on_release(Domain& domain, std::span<const std::byte> message) {
    auto req = parse<wire::ReleaseRequest>(message);
    if (!req) return req.error();
    Result<void> result;
    {
      std::lock_guard lock(mutex);
      const Name name = wire::from_wire(req->name);
      auto entry = lookup_locked(name);
      if (!entry) {
        result = entry.error();
      } else if (auto r = check_owner(**entry, domain.id, "release"); !r) {
        result = r;
      } else {
        revoke_name_locked(name, /*tombstone=*/false);
      }
    }
    return reply_void(domain, wire::Op::kRelease, result);
  }

  Result<void> on_query(Domain& domain, std::span<const std::byte> message) {
    auto req = parse<wire::QueryRequest>(message);
    if (!req) return req.error();
    Result<wire::QueryReply> result = wire::QueryReply{};
    {
      std::lock_guard lock(mutex);
      auto entry = lookup_locked(wire::from_wire(req->name));
      if (!entry) {
        result = entry.error();
      } else if (auto r = check_access(**entry, domain.id, Access::kRead); !r) {
        result = r.error();
      } else {
        const NameEntry& e = **entry;
        wire::QueryReply body{};
        body.size = e.buffer->size;
        body.owner = e.owner;
        body.generation = e.generation;
        body.access = e.owner == domain.id ? static_cast<uint32_t>(Access::kReadWrite)
                                           : static_cast<uint32_t>(e.rights.at(domain.id));
        body.is_image = e.buffer->image ? 1 : 0;
        result = body;
      }
    }
    return reply(domain, wire::Op::kQuery, result);
  }

  Result<void> on_map(Domain& domain, std::span<const std::byte> message) {
    auto req = parse<wire::MapRequest>(message);
    if (!req) return req.error();
    if (req->access != static_cast<uint32_t>(Access::kRead) &&
        req->access != static_cast<uint32_t>(Access::kReadWrite)) {
      return send_error(domain, wire::Op::kMap, make_error(Errc::kInvalidArgument, "unknown access"));
    }
    const Access access = static_cast<Access>(req->access);
    const Name name = wire::from_wire(req->name);
    std::shared_ptr<Buffer> buffer;
    wire::MapReply body{};
    {
      std::lock_guard lock(mutex);
      auto entry = lookup_locked(name);
      if (!entry) return send_error(domain, wire::Op::kMap, entry.error());
      if (auto r = check_access(**entry, domain.id, access); !r) return send_error(domain, wire::Op::kMap, r.error());
      buffer = (*entry)->buffer;
      if (buffer->image) {
        return send_error(
            domain, wire::Op::kMap,
            make_error(Errc::kInvalidArgument, "name " + name.to_string() + " is a device image; use transfers"));
      }
      uint32_t slot = 0;
      while (slot < kMappingSlots && !domain.slot_names[slot].empty()) ++slot;
      if (slot == kMappingSlots) {
        return send_error(domain, wire::Op::kMap,
                          make_error(Errc::kBusy, "too many mappings in " + domain_text(domain.id)));
      }
      domain.slot_names[slot] = name;
      (*entry)->mappers.insert({domain.id, slot});
      MappingSlot& state = domain.control()->mappings[slot];
      state.revoked.store(0, std::memory_order_relaxed);
      state.generation.store((*entry)->generation, std::memory_order_release);  // pairs with Mapping::stale()
      body = wire::MapReply{buffer->fd_offset, buffer->size, slot, (*entry)->generation};
    }
    if (access == Access::kReadWrite) return send_reply(domain, wire::Op::kMap, &body, sizeof body, buffer->fd.get());
    // Read access gets its own read-only file description: the domain cannot mprotect or
    // mmap it writable (EACCES), so a write through the mapping faults.
    const std::string path = "/proc/self/fd/" + std::to_string(buffer->fd.get());
    base::UniqueFd read_only(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!read_only.valid()) {
      const Error error = io_error("reopen read-only", errno);
      std::lock_guard lock(mutex);
      unmap_slot_locked(domain, body.slot);
      return send_error(domain, wire::Op::kMap, error);
    }
    return send_reply(domain, wire::Op::kMap, &body, sizeof body, read_only.get());
  }

  Result<void> on_unmap(Domain& domain, std::span<const std::byte> message) {
    auto req = parse<wire::UnmapRequest>(message);
    if (!req) return req.error();
    if (req->slot >= kMappingSlots) return make_error(Errc::kProtocol, "mapping slot out of range");
    std::lock_guard lock(mutex);
    unmap_slot_locked(domain, req->slot);
    return {};
  }

  Result<void> on_rebind(Domain& domain, std::span<const std::byte> message, base::UniqueFd fd) {
    auto req = parse<wire::RebindRequest>(message);
    if (!req) return req.error();
    const Name name = wire::from_wire(req->name);
    {
      // Check ownership before paying for the mapping.
      std::lock_guard lock(mutex);
      auto entry = lookup_locked(name);
      if (!entry) return send_error(domain, wire::Op::kRebind, entry.error());
      if (auto r = check_owner(**entry, domain.id, "rebind"); !r)
        return send_error(domain, wire::Op::kRebind, r.error());
    }
    auto buffer = make_buffer(std::move(fd), req->offset, req->size);
    if (!buffer) return send_error(domain, wire::Op::kRebind, buffer.error());
    Result<wire::RebindReply> result = wire::RebindReply{};
    {
      std::lock_guard lock(mutex);
      auto entry = lookup_locked(name);
      if (!entry) {
        result = entry.error();
      } else if (auto r = check_owner(**entry, domain.id, "rebind"); !r) {
        result = r.error();
      } else {
        NameEntry& e = **entry;
        // In-flight transfers keep the old buffer alive and finish on it.
        e.buffer = std::move(*buffer);
        ++e.generation;
        for (const auto& [domain_id, slot] : e.mappers) {
          auto d = domains.find(domain_id);
          if (d != domains.end()) {
            d->second->control()->mappings[slot].generation.store(e.generation, std::memory_order_release);
          }
        }
        result = wire::RebindReply{e.generation, 0};
      }
    }
    return reply(domain, wire::Op::kRebind, result);
  }

  Result<void> on_shadow_open(Domain& domain, std::span<const std::byte> message) {
    auto req = parse<wire::ShadowOpenRequest>(message);
    if (!req) return req.error();
    if (req->access != static_cast<uint32_t>(Access::kRead) &&
        req->access != static_cast<uint32_t>(Access::kReadWrite)) {
      return send_error(domain, wire::Op::kShadowOpen, make_error(Errc::kInvalidArgument, "unknown access"));
    }
    const Name name = wire::from_wire(req->name);
    std::shared_ptr<Buffer> buffer;
    {
      std::lock_guard lock(mutex);
      auto entry = lookup_locked(name);
      if (!entry) return send_error(domain, wire::Op::kShadowOpen, entry.error());
      if (auto r = check_access(**entry, domain.id, static_cast<Access>(req->access)); !r) {
        return send_error(domain, wire::Op::kShadowOpen, r.error());
      }
      if (domain.shadows.size() >= kMaxShadowsPerDomain) {
        return send_error(domain, wire::Op::kShadowOpen, make_error(Errc::kBusy, "too many shadows"));
      }
      buffer = (*entry)->buffer;
    }
    if (buffer->image) {
      return send_error(
          domain, wire::Op::kShadowOpen,
          make_error(Errc::kInvalidArgument, "name " + name.to_string() + " is a device image; use transfers"));
    }
    auto fd = create_memfd(buffer->size, "memshare-shadow");
    if (!fd) return send_error(domain, wire::Op::kShadowOpen, fd.error());
    auto shadow = make_buffer(std::move(*fd), 0, buffer->size);
    if (!shadow) return send_error(domain, wire::Op::kShadowOpen, shadow.error());
    // The shadow starts equal to the buffer.
    std::memcpy((*shadow)->view.data(), buffer->view.data(), buffer->size);
    wire::ShadowOpenReply body{buffer->size, 0, 0};
    {
      std::lock_guard lock(mutex);
      body.shadow = domain.next_shadow++;
      domain.shadows.emplace(body.shadow, ShadowState{name, static_cast<Access>(req->access), *shadow});
    }
    return send_reply(domain, wire::Op::kShadowOpen, &body, sizeof body, (*shadow)->fd.get());
  }

  Result<void> on_shadow_close(Domain& domain, std::span<const std::byte> message) {
    auto req = parse<wire::ShadowCloseRequest>(message);
    if (!req) return req.error();
    std::lock_guard lock(mutex);
    domain.shadows.erase(req->shadow);
    return {};
  }

  Result<void> on_barrier(Domain& domain, std::span<const std::byte> message) {
    if (message.size() < sizeof(wire::MessageHeader) + sizeof(wire::BarrierRequest)) {
      return make_error(Errc::kProtocol, "short barrier request");
    }
    wire::BarrierRequest head;
    std::memcpy(&head, message.data() + sizeof(wire::MessageHeader), sizeof head);
    if (head.count > wire::kMaxBarrierRuns) return make_error(Errc::kProtocol, "too many runs in a barrier");
    auto req = parse<wire::BarrierRequest>(message, head.count * sizeof(PageRange));
    if (!req) return req.error();
    auto runs = parse_array<PageRange, wire::BarrierRequest>(message, head.count, wire::kMaxBarrierRuns);
    if (!runs) return runs.error();
    const auto fail = [&](Error e) { return send_error(domain, wire::Op::kBarrier, e); };
    if (head.direction != static_cast<uint32_t>(BarrierDirection::kWrite) &&
        head.direction != static_cast<uint32_t>(BarrierDirection::kRead)) {
      return fail(make_error(Errc::kInvalidArgument, "unknown barrier direction"));
    }
    const bool write = head.direction == static_cast<uint32_t>(BarrierDirection::kWrite);
    std::shared_ptr<Buffer> buffer;
    std::shared_ptr<Buffer> shadow;
    {
      std::lock_guard lock(mutex);
      auto it = domain.shadows.find(head.shadow);
      if (it == domain.shadows.end()) {
        return fail(make_error(Errc::kInvalidArgument, "unknown shadow " + std::to_string(head.shadow)));
      }
      auto entry = lookup_locked(it->second.name);
      if (!entry) return fail(entry.error());
      // Rights are checked again: they may have been withdrawn since the shadow was opened.
      const Access wanted = write ? Access::kReadWrite : Access::kRead;
      if (!allows(it->second.access, wanted)) {
        return fail(make_error(Errc::kAccessDenied, "shadow was opened read-only; a write barrier needs write access"));
      }
      if (auto r = check_access(**entry, domain.id, wanted); !r) return fail(r.error());
      buffer = (*entry)->buffer;
      shadow = it->second.memory;
    }
    const uint64_t limit = std::min(buffer->size, shadow->size);
    auto span = page_span(Range{head.offset, head.size}, limit);
    if (!span) return fail(span.error());
    BarrierStats stats;
    if (write) {
      for (const PageRange& run : *runs) {
        if (run.offset % kPageSize != 0 || run.offset < span->offset ||
            !range_fits(run.offset, run.size, span->offset + span->size)) {
          return fail(make_error(Errc::kOutOfRange, "dirty run [" + std::to_string(run.offset) + ", +" +
                                                        std::to_string(run.size) + ") outside the barrier range"));
        }
      }
      stats = copy_runs(buffer->view.data(), shadow->view.data(), *runs);
    } else {
      stats = copy_changed_pages(shadow->view.data(), buffer->view.data(), *span, limit);
    }
    barrier_bytes.fetch_add(stats.bytes, std::memory_order_relaxed);
    const wire::BarrierReply body{stats.bytes, stats.pages, stats.ranges};
    return send_reply(domain, wire::Op::kBarrier, &body, sizeof body);
  }

  static void post(Domain& domain, uint32_t slot, uint64_t ticket, const Error& error, uint64_t bytes) {
    CompletionSlot& s = domain.control()->completions[slot];
    s.error = static_cast<uint32_t>(error.code);
    s.bytes = bytes;
    s.ticket = ticket;
    const size_t n = std::min(error.message.size(), kCompletionDetailBytes - 1);
    std::memcpy(s.detail, error.message.data(), n);
    s.detail[n] = '\0';
    // Publishes the fields above; pairs with TransferHandle's acquire load.
    if (s.state.exchange(kSlotDone, std::memory_order_acq_rel) == kSlotWaiting) futex_wake_all(&s.state);
  }

  Result<void> on_transfer(Domain& domain, std::span<const std::byte> message) {
    if (message.size() < sizeof(wire::MessageHeader) + sizeof(wire::TransferRequest)) {
      return make_error(Errc::kProtocol, "short transfer request");
    }
    wire::TransferRequest head;
    std::memcpy(&head, message.data() + sizeof(wire::MessageHeader), sizeof head);
    if (head.count > wire::kMaxTransferRanges) return make_error(Errc::kProtocol, "too many ranges in a transfer");
    auto req = parse<wire::TransferRequest>(message, head.count * sizeof(CopyRange));
    if (!req) return req.error();
    if (head.slot >= kCompletionSlots) return make_error(Errc::kProtocol, "completion slot out of range");
    auto ranges = parse_array<CopyRange, wire::TransferRequest>(message, head.count, wire::kMaxTransferRanges);
    if (!ranges) return ranges.error();
    std::shared_ptr<Domain> self;
    std::shared_ptr<Buffer> src;
    std::shared_ptr<Buffer> dst;
    // Every failure from here on is the transfer's status, posted to its completion slot.
    const auto fail = [&](const Error& error) {
      post(domain, head.slot, head.ticket, error, 0);
      return Result<void>();
    };
    {
      std::lock_guard lock(mutex);
      auto d = domains.find(domain.id);
      if (d == domains.end()) return make_error(Errc::kDisconnected, "domain ended");
      self = d->second;
      auto s = lookup_locked(wire::from_wire(head.src));
      if (!s) return fail(s.error());
      if (auto r = check_access(**s, domain.id, Access::kRead); !r) return fail(r.error());
      auto t = lookup_locked(wire::from_wire(head.dst));
      if (!t) return fail(t.error());
      if (auto r = check_access(**t, domain.id, Access::kReadWrite); !r) return fail(r.error());
      src = (*s)->buffer;
      dst = (*t)->buffer;
    }
    for (const CopyRange& r : *ranges) {
      if (!range_fits(r.src_offset, r.size, src->size) || !range_fits(r.dst_offset, r.size, dst->size)) {
        return fail(make_error(Errc::kOutOfRange, "copy of " + std::to_string(r.size) + " bytes from " +
                                                      std::to_string(r.src_offset) + " to " +
                                                      std::to_string(r.dst_offset) + " exceeds a buffer"));
      }
      if (src == dst && r.src_offset < r.dst_offset + r.size && r.dst_offset < r.src_offset + r.size) {
        return fail(make_error(Errc::kInvalidArgument, "overlapping copy within one buffer"));
      }
    }
    auto job = std::make_shared<TransferJob>();
    job->src = std::move(src);
    job->dst = std::move(dst);
    job->ranges = std::move(*ranges);
    const uint32_t slot = head.slot;
    const uint64_t ticket = head.ticket;
    job->done = [this, self, slot, ticket](const Error& error, uint64_t bytes) {
      // Counted before the completion is visible, so a domain that saw it also sees the count.
      transfers.fetch_add(1, std::memory_order_relaxed);
      transfer_bytes.fetch_add(bytes, std::memory_order_relaxed);
      post(*self, slot, ticket, error, bytes);
    };
    engine.submit(std::move(job));
    return {};
  }

  void stop() {
    if (stopping.exchange(true, std::memory_order_acq_rel)) return;
    {
      std::lock_guard lock(threads_mutex);
      if (listener.valid()) ::shutdown(listener.get(), SHUT_RDWR);
    }
    if (accept_thread.joinable()) accept_thread.join();
    std::vector<std::shared_ptr<Domain>> live;
    {
      std::lock_guard lock(mutex);
      for (auto& [id, d] : domains) live.push_back(d);
    }
    for (auto& d : live) ::shutdown(d->socket.get(), SHUT_RDWR);
    std::unordered_map<DomainId, std::thread> all;
    {
      std::lock_guard lock(threads_mutex);
      all.swap(threads);
      finished.clear();
    }
    for (auto& [id, t] : all) t.join();
    listener.reset();
  }
};

Service::Service(ServiceOptions options) : impl_(std::make_shared<Impl>(options)) {}

Service::~Service() { stop(); }

void Service::stop() { impl_->stop(); }

const ServiceOptions& Service::options() const { return impl_->options; }

Result<void> Service::listen(const std::string& path) {
  auto fd = base::listen_unix(path, SOCK_SEQPACKET);
  if (!fd) return from_base(fd.error());
  return serve(std::move(*fd));
}

Result<void> Service::serve(base::UniqueFd listening_socket) {
  if (!listening_socket.valid()) return make_error(Errc::kInvalidArgument, "no listening socket");
  std::lock_guard lock(impl_->threads_mutex);
  if (impl_->listener.valid()) return make_error(Errc::kInvalidArgument, "service already listens");
  if (impl_->stopping.load(std::memory_order_acquire)) return make_error(Errc::kDisconnected, "service stopped");
  impl_->listener = std::move(listening_socket);
  Impl* impl = impl_.get();
  impl_->accept_thread = std::thread([impl] { impl->accept_loop(); });
  return {};
}

Result<DomainId> Service::adopt(base::UniqueFd connected_socket) {
  if (!connected_socket.valid()) return make_error(Errc::kInvalidArgument, "no socket");
  return impl_->add_domain(std::move(connected_socket));
}

Result<Client> Service::connect_local(std::string label) {
  auto pair = base::socket_pair(SOCK_SEQPACKET);
  if (!pair) return from_base(pair.error());
  auto id = adopt(std::move(pair->second));
  if (!id) return id.error();
  return Client::adopt(std::move(pair->first), label);
}

Result<Name> Service::name_image(DomainId owner, std::shared_ptr<ImageEndpoint> image) {
  if (!image || image->size() == 0) return make_error(Errc::kInvalidArgument, "image endpoint missing or empty");
  auto buffer = std::make_shared<Buffer>();
  buffer->size = image->size();
  buffer->image = std::move(image);
  std::lock_guard lock(impl_->mutex);
  Error error;
  if (impl_->domain_status_locked(owner, &error) == kNoDomain) return error;
  return impl_->insert_name_locked(owner, std::move(buffer));
}

Result<void> Service::grant(const Name& name, DomainId domain, Access access) {
  std::lock_guard lock(impl_->mutex);
  return impl_->grant_locked(name, kNoDomain, domain, static_cast<uint32_t>(access));
}

void Service::end_domain(DomainId domain) {
  std::shared_ptr<Domain> d;
  {
    std::lock_guard lock(impl_->mutex);
    auto it = impl_->domains.find(domain);
    if (it == impl_->domains.end()) return;
    d = it->second;
  }
  impl_->end_domain(d);
}

ServiceStats Service::stats() const {
  ServiceStats s;
  {
    std::lock_guard lock(impl_->mutex);
    s.domains = impl_->domains.size();
    s.names = impl_->names.size();
  }
  s.transfers = impl_->transfers.load(std::memory_order_relaxed);
  s.transfer_bytes = impl_->transfer_bytes.load(std::memory_order_relaxed);
  s.barrier_bytes = impl_->barrier_bytes.load(std::memory_order_relaxed);
  return s;
}

}  // namespace bypass::memshare
