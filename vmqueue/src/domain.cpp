#include "bypass/vmqueue/domain.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <immintrin.h>
#include <algorithm>
#include <cerrno>
#include <map>
#include <optional>

#include "bypass/base/mapping.h"
#include "bypass/transport/kick.h"
#include "bypass/transport/session.h"
#include "page_pool.h"
#include "wire.h"

namespace bypass::vmqueue {

using wire::Kind;
using wire::Record;
using Clock = std::chrono::steady_clock;

namespace {
// How long a waiting domain spins on its rings before it sleeps in poll(): long enough to
// catch a reply from a busy broker, short enough not to starve it on a small machine.
constexpr auto kSpin = std::chrono::microseconds(20);
// Pages a domain keeps unmapped in its local cache before giving the excess back to the host.
constexpr uint32_t kCacheLimit[2] = {2048, 4};
// Extra 4 KiB pages asked for on a cache miss, so small allocations rarely need the host.
constexpr uint32_t kRefill4K = 256;
constexpr uint32_t kNotCached = 1;
}  // namespace

namespace detail {

struct DomainState : std::enable_shared_from_this<DomainState> {
  Identity self;
  std::optional<transport::Channel> channel;  // the session with the broker (set-up, death)
  int sock = -1;                              // its socket, polled for the broker's death
  base::Mapping region;
  base::UniqueFd pool_fds[2];
  uint32_t pool_pages[2] = {0, 0};
  transport::Kick broker_kick;
  transport::Kick kick;
  SlotRing<Record> requests;  // produced here
  SlotRing<Record> replies;   // consumed here
  SlotRing<Record> queue;     // consumed here
  bool hugetlb = false;
  bool lost = false;    // broker gone
  bool closed = false;  // Domain destroyed; Pages left over just unmap
  uint32_t next_req = 1;
  std::map<uint32_t, Record> answers;  // replies by req_id
  std::map<uint32_t, Identity> peers;
  std::vector<Identity> dead;
  size_t dead_reported = 0;
  PagePool cache[2];  // "free" = owned by this domain, unmapped, ready for alloc()

  // ---- waiting ----

  // Pulls every reply-ring record into `answers` / `peers` / `dead`.
  void drain_replies() {
    Record r;
    bool kick_broker = false;
    while (replies.pop(&r, &kick_broker)) {
      switch (static_cast<Kind>(r.kind)) {
        case Kind::kIntroduced:
          if (r.status == 0) {
            wire::WireIdentity w;
            std::memcpy(&w, r.runs, sizeof w);
            w.name[wire::kNameMax] = 0;
            peers[r.peer] = Identity{r.peer, std::string(wire::name_of(w.name)), w.pid, w.uid, w.gid};
          }
          answers[r.req_id] = r;
          break;
        case Kind::kPeerDown: {
          auto it = peers.find(r.peer);
          if (it != peers.end()) {
            dead.push_back(it->second);
            peers.erase(it);
          }
          break;
        }
        default:
          answers[r.req_id] = r;
          break;
      }
    }
    if (kick_broker) broker_kick.signal();
  }

  // Sleeps until the broker kicks this domain, the deadline passes or the broker dies.
  // `ready` is re-checked after announcing sleep so no kick is missed.
  template <class Ready>
  void wait(Clock::time_point deadline, bool forever, Ready ready) {
    auto spin_until = Clock::now() + kSpin;
    while (Clock::now() < spin_until) {
      if (ready()) return;
      _mm_pause();
    }
    queue.consumer_prepare_wait();
    replies.consumer_prepare_wait();
    if (ready()) return;
    int timeout_ms = -1;
    if (!forever) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      timeout_ms = static_cast<int>(std::clamp<long long>(left + 1, 0, 1'000'000));
    }
    if (transport::wait_kick_or_hangup(kick, sock, timeout_ms) == transport::KickWait::kPeerGone) lost = true;
  }

  bool push(const Record& r) {
    for (;;) {
      if (lost) return false;
      if (Record* slot = requests.producer_slot()) {
        *slot = r;
        if (requests.publish()) broker_kick.signal();
        return true;
      }
      if (requests.corrupt()) {
        lost = true;
        return false;
      }
      if (requests.producer_prepare_wait()) continue;
      if (transport::wait_kick_or_hangup(kick, sock, 100) == transport::KickWait::kPeerGone) lost = true;
    }
  }

  // Waits for the reply to req_id. Returns false on timeout or broker loss (see `lost`).
  bool await(uint32_t req_id, Clock::time_point deadline, bool forever, Record* out) {
    for (;;) {
      drain_replies();
      auto it = answers.find(req_id);
      if (it != answers.end()) {
        *out = it->second;
        answers.erase(it);
        return true;
      }
      if (lost) return false;
      if (!forever && Clock::now() >= deadline) return false;
      wait(deadline, forever, [&] { return replies.consumer_slot() != nullptr; });
    }
  }

  Errc call(Record req, Record* answer) {
    req.req_id = next_req++;
    if (!push(req)) return Errc::kBrokerLost;
    if (!await(req.req_id, {}, true, answer)) return Errc::kBrokerLost;
    return static_cast<Errc>(answer->status);
  }

  // ---- page mappings ----

  std::byte* reserve(size_t count, PageSize size) {
    size_t pb = page_bytes(size);
    size_t len = count * pb;
    size_t slack = size == PageSize::k2M ? pb : 0;
    void* p = ::mmap(nullptr, len + slack, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    auto addr = reinterpret_cast<uintptr_t>(p);
    uintptr_t aligned = (addr + pb - 1) / pb * pb;
    if (slack > 0) {
      if (aligned > addr) ::munmap(p, aligned - addr);
      uintptr_t end = addr + len + slack;
      if (end > aligned + len) ::munmap(reinterpret_cast<void*>(aligned + len), end - (aligned + len));
    }
    return reinterpret_cast<std::byte*>(aligned);
  }

  bool map_runs(std::byte* base, const std::vector<Pages::Run>& runs, PageSize size) {
    size_t pb = page_bytes(size);
    size_t pos = 0;
    for (const auto& r : runs) {
      void* want = base + pos * pb;
      void* got = ::mmap(want, r.count * pb, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                         pool_fds[static_cast<int>(size)].get(), static_cast<off_t>(size_t{r.first} * pb));
      if (got == MAP_FAILED) return false;
      pos += r.count;
    }
    return true;
  }

  // Builds Pages over `runs`: reserves a range and maps every run into it back to back.
  Result<Pages> make_pages(std::vector<Pages::Run> runs, PageSize size) {
    size_t count = 0;
    for (const auto& r : runs) count += r.count;
    std::byte* base = reserve(count, size);
    if (base == nullptr) return make_error(Errc::kNoPages);
    if (!map_runs(base, runs, size)) {
      ::munmap(base, count * page_bytes(size));
      return make_error(Errc::kNoPages);
    }
    Pages p;
    p.state_ = shared_from_this();
    p.base_ = base;
    p.count_ = count;
    p.size_ = size;
    p.runs_ = std::move(runs);
    return p;
  }

  // Pages dropped by their holder: unmapped, then cached (or given back) for later alloc().
  void give_back(Pages& p) {
    ::munmap(p.base_, p.count_ * page_bytes(p.size_));
    if (closed || lost) return;
    int k = static_cast<int>(p.size_);
    std::vector<wire::PageRun> runs;
    for (const auto& r : p.runs_) runs.push_back(wire::PageRun{r.first, r.count});
    cache[k].transfer(runs, kNotCached, PagePool::kFree);
    trim_cache(p.size_);
  }

  void trim_cache(PageSize size) {
    int k = static_cast<int>(size);
    while (cache[k].free_pages() > kCacheLimit[k]) {
      std::vector<wire::PageRun> runs;
      uint32_t n = cache[k].take_any(cache[k].free_pages() - kCacheLimit[k], kNotCached, wire::kMaxRuns, &runs);
      if (n == 0) break;
      Record r{};
      r.kind = static_cast<uint32_t>(Kind::kFree);
      r.page_size = static_cast<uint8_t>(size);
      r.n_runs = static_cast<uint32_t>(runs.size());
      std::copy(runs.begin(), runs.end(), r.runs);
      if (!push(r)) return;
    }
  }

  void close() {
    closed = true;
    if (channel) channel->close();
    sock = -1;
  }
};

}  // namespace detail

// ------------------------------------------------------------------- Pages

Pages::Pages(Pages&& other) noexcept
    : state_(std::move(other.state_)),
      base_(std::exchange(other.base_, nullptr)),
      count_(std::exchange(other.count_, 0)),
      size_(other.size_),
      runs_(std::move(other.runs_)) {}

Pages& Pages::operator=(Pages&& other) noexcept {
  if (this != &other) {
    Pages dropped(std::move(*this));
    state_ = std::move(other.state_);
    base_ = std::exchange(other.base_, nullptr);
    count_ = std::exchange(other.count_, 0);
    size_ = other.size_;
    runs_ = std::move(other.runs_);
  }
  return *this;
}

Pages::~Pages() {
  if (base_ == nullptr || !state_) return;
  state_->give_back(*this);
}

// ------------------------------------------------------------------- Domain

Domain::Domain(std::shared_ptr<detail::DomainState> state) : s_(std::move(state)) {}
Domain::Domain(Domain&&) noexcept = default;
Domain& Domain::operator=(Domain&& other) noexcept {
  if (this != &other) {
    if (s_) s_->close();
    s_ = std::move(other.s_);
  }
  return *this;
}
Domain::~Domain() {
  if (s_) s_->close();
}

Result<Domain> Domain::connect(const std::string& socket_path, std::string_view name, QueueOptions options) {
  if (!wire::valid_name(name) || options.capacity == 0 || options.capacity > wire::kMaxQueueCapacity ||
      options.lazy_delay.count() < 0 || options.lazy_delay > std::chrono::seconds(10))
    return make_error(Errc::kInvalid);
  auto s = std::make_shared<detail::DomainState>();
  // Session set-up on the transport: handshake (versions, schema hash, name), then our queue
  // options, the broker's welcome and the fds of the region, pools and kicks.
  auto deadline = transport::deadline_after(std::chrono::seconds(5));
  transport::Hello mine{wire::kVersion, wire::kSchemaHash, std::string(name)};
  auto channel = transport::connect(socket_path, mine, deadline);
  // Refused: the broker speaks another version of the queue protocol (the line names both).
  if (!channel) {
    return make_error(channel.code() == transport::Status::kRefused ? Errc::kProtocol : Errc::kBrokerLost,
                      channel.error().message);
  }
  wire::Hello hello;
  wire::copy_name(hello.name, name);
  hello.queue_capacity = options.capacity;
  hello.lazy_delay_us = static_cast<uint32_t>(options.lazy_delay.count());
  hello.default_delivery = static_cast<uint8_t>(options.default_delivery);
  wire::Welcome welcome;
  std::vector<base::UniqueFd> fds;
  transport::Message msg;
  if (channel->send(wire::kSessionHello, std::as_bytes(std::span(&hello, 1)), deadline) != transport::Status::kOk ||
      channel->recv(msg, deadline) != transport::Status::kOk)
    return make_error(Errc::kBrokerLost);
  if (msg.kind != wire::kSessionWelcome || msg.payload.size() != sizeof welcome) return make_error(Errc::kProtocol);
  std::memcpy(&welcome, msg.payload.data(), sizeof welcome);
  if (welcome.magic == wire::kMagic && welcome.status == 0) {
    uint64_t tag = 0;
    std::vector<int> raw;
    if (channel->recv_fds(tag, raw, deadline) != transport::Status::kOk) return make_error(Errc::kBrokerLost);
    for (int fd : raw) fds.emplace_back(fd);
    if (tag != wire::kWelcomeFdTag) return make_error(Errc::kProtocol);
  }
  if (welcome.magic != wire::kMagic || welcome.version != wire::kVersion) return make_error(Errc::kProtocol);
  if (welcome.status != 0) return make_error(static_cast<Errc>(welcome.status));
  wire::RegionLayout layout = wire::region_layout(welcome.queue_capacity);
  if (fds.size() != wire::kWelcomeFds || welcome.region_size != layout.size ||
      welcome.queue_capacity != options.capacity)
    return make_error(Errc::kProtocol);
  auto region = base::Mapping::map_shared(fds[wire::kFdRegion].get(), 0, layout.size, /*writable=*/true);
  if (!region) return make_error(Errc::kProtocol);  // not the region the welcome described
  s->region = std::move(region).value();
  s->requests = SlotRing<Record>(s->region.data() + layout.request_offset, wire::kRequestSlots);
  s->replies = SlotRing<Record>(s->region.data() + layout.reply_offset, wire::kReplySlots);
  s->queue = SlotRing<Record>(s->region.data() + layout.queue_offset, welcome.queue_capacity);
  s->pool_fds[0] = std::move(fds[wire::kFdPool4K]);
  s->pool_fds[1] = std::move(fds[wire::kFdPool2M]);
  s->pool_pages[0] = welcome.pages_4k;
  s->pool_pages[1] = welcome.pages_2m;
  for (int k = 0; k < 2; ++k) {
    s->cache[k] = PagePool(s->pool_pages[k]);
    std::vector<wire::PageRun> all;
    if (s->pool_pages[k] > 0) s->cache[k].allocate(s->pool_pages[k], kNotCached, 1, &all);
  }
  s->broker_kick = transport::Kick(std::move(fds[wire::kFdBrokerKick]));
  s->kick = transport::Kick(std::move(fds[wire::kFdDomainKick]));
  s->hugetlb = welcome.huge_backing == static_cast<uint8_t>(wire::HugeBacking::kHugetlb);
  s->channel = std::move(channel).value();
  s->sock = s->channel->socket_fd();
  s->self = Identity{welcome.domain_id, std::string(name), static_cast<int>(::getpid()), ::getuid(), ::getgid()};
  return Domain(std::move(s));
}

const Identity& Domain::self() const { return s_->self; }
bool Domain::huge_pages_are_hugetlb() const { return s_->hugetlb; }

Result<Identity> Domain::introduce(std::string_view peer, std::chrono::milliseconds timeout) {
  if (!wire::valid_name(peer) || peer == s_->self.name) return make_error(Errc::kInvalid);
  s_->drain_replies();
  for (auto& [id, ident] : s_->peers)
    if (ident.name == peer) return ident;
  Record req{};
  req.kind = static_cast<uint32_t>(Kind::kIntroduce);
  req.req_id = s_->next_req++;
  wire::WireIdentity w{};
  wire::copy_name(w.name, peer);
  std::memcpy(req.runs, &w, sizeof w);
  if (!s_->push(req)) return make_error(Errc::kBrokerLost);
  Record answer;
  bool forever = timeout.count() < 0;
  if (!s_->await(req.req_id, Clock::now() + timeout, forever, &answer))
    return make_error(s_->lost ? Errc::kBrokerLost : Errc::kTimedOut);
  if (answer.status != 0) return make_error(static_cast<Errc>(answer.status));
  // The introduction completed: the peer's identity is in the answer itself. The peer may have
  // sent its messages and died since (its kPeerDown drained in the same pass took it out of
  // `peers`); its messages are still delivered first, then kPeerDead, as for any dead peer.
  wire::WireIdentity who;
  std::memcpy(&who, answer.runs, sizeof who);
  who.name[wire::kNameMax] = 0;
  return Identity{answer.peer, std::string(wire::name_of(who.name)), who.pid, who.uid, who.gid};
}

const Identity* Domain::peer(uint32_t id) const {
  auto it = s_->peers.find(id);
  return it == s_->peers.end() ? nullptr : &it->second;
}

Result<Pages> Domain::alloc(size_t count, PageSize size) {
  auto& s = *s_;
  int k = static_cast<int>(size);
  if (s.lost) return make_error(Errc::kBrokerLost);
  if (count == 0) return make_error(Errc::kInvalid);
  if (count > s.pool_pages[k]) return make_error(Errc::kNoPages);
  auto want = static_cast<uint32_t>(count);
  std::vector<wire::PageRun> runs;
  uint32_t got = std::min(want, s.cache[k].free_pages());
  if (got > 0 && s.cache[k].allocate(got, kNotCached, wire::kMaxRuns, &runs) != Errc::kOk) {
    got = s.cache[k].take_any(got, kNotCached, wire::kMaxRuns, &runs);
  }
  if (got < want) {
    uint32_t need = want - got;
    uint32_t extra = size == PageSize::k4K ? kRefill4K : 0;
    Record req{};
    req.kind = static_cast<uint32_t>(Kind::kAlloc);
    req.page_size = static_cast<uint8_t>(size);
    req.bytes = std::min<uint64_t>(need + extra, s.pool_pages[k]);
    Record answer;
    Errc errc = s.call(req, &answer);
    if (errc == Errc::kNoPages && extra > 0) {
      req.bytes = need;
      errc = s.call(req, &answer);
    }
    if (errc != Errc::kOk || answer.n_runs > wire::kMaxRuns) {
      if (!runs.empty()) s.cache[k].transfer(runs, kNotCached, PagePool::kFree);
      return make_error(errc == Errc::kOk ? Errc::kProtocol : errc);
    }
    // Everything granted goes through the cache so the pages used come out as few runs.
    s.cache[k].transfer(std::span(answer.runs, answer.n_runs), kNotCached, PagePool::kFree);
    if (!runs.empty()) s.cache[k].transfer(runs, kNotCached, PagePool::kFree);
    Errc taken = s.cache[k].allocate(want, kNotCached, wire::kMaxRuns, &runs);
    if (taken != Errc::kOk) return make_error(taken);
  }
  std::vector<Pages::Run> mapped;
  for (const auto& r : runs) mapped.push_back(Pages::Run{r.first, r.count});
  auto pages = s.make_pages(std::move(mapped), size);
  if (!pages.ok()) {
    s.cache[k].transfer(runs, kNotCached, PagePool::kFree);
  }
  return pages;
}

Errc Domain::send(uint32_t peer, Pages&& pages, size_t length, SendOptions options) {
  auto& s = *s_;
  if (s.lost) return Errc::kBrokerLost;
  if (!pages || pages.state_ != s_ || length > pages.bytes().size()) return Errc::kInvalid;
  if (pages.runs_.size() > wire::kMaxRuns) return Errc::kTooFragmented;
  s.drain_replies();
  if (s.peers.count(peer) == 0) {
    for (const auto& d : s.dead)
      if (d.id == peer) return Errc::kPeerDead;
    return Errc::kNotIntroduced;
  }
  size_t len = pages.count_ * page_bytes(pages.size_);
  // From here on this domain cannot reach the pages: the range stays reserved (PROT_NONE) so
  // a refused send can map them back at the same address.
  if (::mmap(pages.base_, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED)
    return Errc::kNoPages;
  Record req{};
  req.kind = static_cast<uint32_t>(Kind::kSend);
  req.req_id = s.next_req++;
  req.peer = peer;
  req.tag = options.tag;
  req.bytes = length;
  req.page_size = static_cast<uint8_t>(pages.size_);
  req.delivery = static_cast<uint8_t>(options.delivery);
  req.flags = options.timeout.count() == 0 ? wire::kNoWait : 0;
  req.n_runs = static_cast<uint32_t>(pages.runs_.size());
  for (size_t i = 0; i < pages.runs_.size(); ++i)
    req.runs[i] = wire::PageRun{pages.runs_[i].first, pages.runs_[i].count};
  Record answer{};
  Errc errc = Errc::kBrokerLost;
  if (s.push(req)) {
    bool forever = options.timeout.count() < 0;
    if (s.await(req.req_id, Clock::now() + options.timeout, forever, &answer)) {
      errc = static_cast<Errc>(answer.status);
    } else if (!s.lost) {
      // Timed out while parked on a full queue: withdraw it. The broker answers either the
      // withdrawal (kFull) or, if it had just accepted the message, with kOk.
      Record cancel{};
      cancel.kind = static_cast<uint32_t>(Kind::kCancel);
      cancel.req_id = req.req_id;
      if (s.push(cancel) && s.await(req.req_id, {}, true, &answer)) errc = static_cast<Errc>(answer.status);
    }
  }
  if (errc == Errc::kOk) {
    ::munmap(pages.base_, len);
    pages.base_ = nullptr;
    pages.count_ = 0;
    pages.runs_.clear();
    pages.state_.reset();
    return Errc::kOk;
  }
  if (s.lost) return Errc::kBrokerLost;
  if (!s.map_runs(pages.base_, pages.runs_, pages.size_)) return Errc::kNoPages;
  return errc;
}

Errc Domain::flush() {
  Record req{};
  req.kind = static_cast<uint32_t>(Kind::kFlush);
  Record answer;
  return s_->call(req, &answer);
}

size_t Domain::pending() { return static_cast<size_t>(s_->queue.readable()); }

Result<Message> Domain::recv(std::chrono::milliseconds timeout) {
  auto& s = *s_;
  bool forever = timeout.count() < 0;
  auto deadline = Clock::now() + timeout;
  for (;;) {
    s.drain_replies();
    if (const Record* slot = s.queue.consumer_slot()) {
      Record r = *slot;
      if (s.queue.release()) s.broker_kick.signal();
      int k = r.page_size;
      std::vector<Pages::Run> runs;
      uint64_t pages = 0;
      bool valid =
          r.kind == static_cast<uint32_t>(Kind::kDeliver) && k <= 1 && r.n_runs >= 1 && r.n_runs <= wire::kMaxRuns;
      for (uint32_t i = 0; valid && i < r.n_runs; ++i) {
        const auto& run = r.runs[i];
        valid = run.count > 0 && run.first < s.pool_pages[k] && run.count <= s.pool_pages[k] - run.first;
        runs.push_back(Pages::Run{run.first, run.count});
        pages += run.count;
      }
      if (!valid || r.bytes > pages * page_bytes(static_cast<PageSize>(k))) return make_error(Errc::kProtocol);
      auto mapped = s.make_pages(std::move(runs), static_cast<PageSize>(k));
      if (!mapped.ok()) return mapped.error();
      Message m;
      m.sender = r.peer;
      m.tag = r.tag;
      m.length = static_cast<size_t>(r.bytes);
      m.pages = std::move(mapped).value();
      return m;
    }
    if (s.dead_reported < s.dead.size()) {
      ++s.dead_reported;
      return make_error(Errc::kPeerDead);
    }
    if (s.lost) return make_error(Errc::kBrokerLost);
    if (!forever && Clock::now() >= deadline) return make_error(Errc::kTimedOut);
    s.wait(deadline, forever,
           [&] { return s.queue.consumer_slot() != nullptr || s.replies.consumer_slot() != nullptr; });
  }
}

std::vector<Identity> Domain::dead_peers() const { return s_->dead; }

}  // namespace bypass::vmqueue
