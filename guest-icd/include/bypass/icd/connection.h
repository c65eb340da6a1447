// The guest's connection to bypassd: batching of asynchronous records, synchronous calls that
// wait for their reply, and the ICD's dispatchable objects.
#pragma once

#include <vulkan/vk_icd.h>
#include <vulkan/vulkan.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "bypass/base/default_init.h"
#include "bypass/icd/host_link.h"
#include "bypass/icd/import_tracker.h"
#include "bypass/memshare/client.h"
#include "bypass/transport/session.h"
#include "bypass/wire/protocol.h"
#include "bypass/wire/runtime.h"

namespace bypass::icd {

class Connection;

// Every dispatchable handle the ICD hands out: the loader's dispatch slot comes first.
struct Object {
  VK_LOADER_DATA loader_data;
  uint64_t id = 0;
  Connection* conn = nullptr;
  VkObjectType type = VK_OBJECT_TYPE_UNKNOWN;
};

template <class H>
inline Object* object_of(H h) {
  return reinterpret_cast<Object*>(h);
}
template <class H>
inline Connection* connection_of(H h) {
  return object_of(h)->conn;
}

// A record sent right behind a call, in the same batch, that wants a reply of its own
// (Connection::call with followers): `seq` is its reply's, set when it is sent.
struct Follower {
  uint16_t command = 0;
  std::vector<uint8_t> payload;
  uint64_t seq = 0;
  std::shared_ptr<void> owner;  // what the caller needs to use its reply (a shadow region)
};

// A reply received for a synchronous call: ReplyHeader + FlatBuffer.
class Reply {
 public:
  const uint8_t* data() const {
    return reinterpret_cast<const uint8_t*>(msg_.payload.data()) + sizeof(wire::ReplyHeader);
  }
  size_t size() const { return msg_.payload.size() - sizeof(wire::ReplyHeader); }
  const wire::ReplyHeader& header() const { return *reinterpret_cast<const wire::ReplyHeader*>(msg_.payload.data()); }
  wire::DecodeContext context(wire::HandleMap& h) {
    arena_.reset();
    wire::DecodeContext c;
    c.arena = &arena_;
    c.handles = &h;
    return c;
  }
  transport::Message& message() { return msg_; }

 private:
  transport::Message msg_;
  wire::Arena arena_{size_t{64} << 20};
};

// Installed on a connection whose host-visible memory is a guest shadow (BYPASS_MEMORY=shadow):
// called by the generated entry points at the barrier points of codegen/data/barriers.txt.
class MemoryHooks {
 public:
  virtual ~MemoryHooks() = default;
  // Before a submission; `imports`: whether it may reach imported host memory (ImportTracker).
  virtual void write_barrier(Object* first_param, bool imports) = 0;
  virtual void read_barrier(Object* first_param) = 0;  // after a wait succeeded
  // A wait through bypassd: the read barrier rides behind it in the same batch. `read_ahead`
  // adds the reads (Follower records) before the call; `finish_read_ahead`, once the call's
  // reply is decoded, takes their replies and completes the barrier if `succeeded`.
  virtual void read_ahead(Object* first_param, std::vector<Follower>& followers) = 0;
  virtual void finish_read_ahead(Object* first_param, std::vector<Follower>& followers, bool succeeded) = 0;
};

// What the guest knows of its fences for completion feedback (sync.cpp): the serial of the
// submission each fence rides on, for fences submitted since they were created or last reset.
// Any thread.
class FenceTracker {
 public:
  void submitted(uint64_t fence, uint64_t serial) {
    std::lock_guard lock(mu_);
    serial_[fence] = serial;
  }
  void forget(uint64_t fence) {
    std::lock_guard lock(mu_);
    serial_.erase(fence);
  }
  uint64_t serial_of(uint64_t fence) {  // 0: not known (never submitted, reset, signalled otherwise)
    std::lock_guard lock(mu_);
    auto it = serial_.find(fence);
    return it == serial_.end() ? 0 : it->second;
  }

 private:
  std::mutex mu_;
  std::unordered_map<uint64_t, uint64_t> serial_;
};

// What the guest knows of its timeline semaphores for completion feedback (sync.cpp): the values
// its submissions signal, each with the submission's serial. A value whose submission is done
// has been reached (a counter only grows), so a wait for it needs no round trip; a wait for a
// value a pending submission signals can wait for that submission. Any thread.
class TimelineTracker {
 public:
  struct Pending {
    uint64_t value, serial;
  };
  // A timeline semaphore made by this process, with its initial value.
  void created(uint64_t semaphore, uint64_t initial) {
    std::lock_guard lock(mu_);
    by_semaphore_[semaphore] = Entry{initial, initial, true, {}};
  }
  void signalled_by(uint64_t semaphore, uint64_t value, uint64_t serial) {
    std::lock_guard lock(mu_);
    auto& e = by_semaphore_[semaphore];
    e.submitted = std::max(e.submitted, value);
    if (e.pending.size() < kMaxPending) e.pending.push_back({value, serial});
  }
  // vkSignalSemaphore, once its record is sent: every wait bypassd runs after it sees `value`.
  void signalled_on_host(uint64_t semaphore, uint64_t value) {
    std::lock_guard lock(mu_);
    auto& e = by_semaphore_[semaphore];
    e.reached = std::max(e.reached, value);
    e.submitted = std::max(e.submitted, value);
  }
  // Whether a submission made before now signals `value` (or a later one): a wait for it then
  // depends on earlier submissions only.
  bool submitted_before(uint64_t semaphore, uint64_t value) {
    std::lock_guard lock(mu_);
    auto it = by_semaphore_.find(semaphore);
    return it != by_semaphore_.end() && value <= it->second.submitted;
  }
  void forget(uint64_t semaphore) {
    std::lock_guard lock(mu_);
    by_semaphore_.erase(semaphore);
  }
  // What a wait for `value` can count on, under one lock: whether it is known reached
  // (`done(serial)` says whether a submission is known done), and if not, the serial of the
  // earliest pending submission known to signal `value` or more on a timeline semaphore made by
  // this process (0 when none is known: a value past what was noted, kMaxPending, a semaphore
  // not seen created). A signal's value must exceed every value signalled before it, so the
  // first pending one at or above `value` is the earliest to reach it.
  struct Reach {
    bool reached = false;
    uint64_t serial = 0;
  };
  template <class Done>
  Reach reach(uint64_t semaphore, uint64_t value, Done done) {
    std::lock_guard lock(mu_);
    auto it = by_semaphore_.find(semaphore);
    if (it == by_semaphore_.end()) return {};
    Entry& e = it->second;
    std::erase_if(e.pending, [&](const Pending& p) {
      if (!done(p.serial)) return false;
      e.reached = std::max(e.reached, p.value);
      return true;
    });
    if (value <= e.reached) return {true, 0};
    if (e.timeline)
      for (const Pending& p : e.pending)
        if (p.value >= value) return {false, p.serial};
    return {};
  }

 private:
  static constexpr size_t kMaxPending = 256;  // more in flight: the rest are asked of bypassd
  struct Entry {
    uint64_t reached = 0;
    uint64_t submitted = 0;  // the highest value a submission (or vkSignalSemaphore) signals
    bool timeline = false;   // seen created as a timeline semaphore (created())
    std::vector<Pending> pending;
  };
  std::mutex mu_;
  std::unordered_map<uint64_t, Entry> by_semaphore_;
};

class Connection : private wire::HandleMap {
 public:
  // Connects to BYPASS_ENDPOINT (or the default socket). The error is the transport's
  // ("cannot reach bypassd at ...") or kRefused for a server of a uid we do not trust.
  static transport::Result<std::unique_ptr<Connection>> open();
  // Whether the configured endpoint is a VM's shared-memory device (BYPASS_ENDPOINT=ivshmem:...):
  // then no file descriptor crosses, so what needs one (VK_KHR_external_memory_fd, MIT-SHM,
  // presentation through memshare) is not offered, and host-visible memory lies in the
  // session's shared heap (shared_heap()).
  static bool endpoint_is_vm();
  // Whether file descriptors cross to bypassd: not to a VM, not over the network
  // (BYPASS_ENDPOINT=grpc://, where host-visible memory is always a shadow copy).
  static bool endpoint_carries_fds();
  static bool endpoint_is_network();
  std::span<std::byte> shared_heap() const { return link_->shared_heap(); }
  ~Connection() override;

  wire::HandleMap& handles() { return *this; }
  uint64_t new_id() { return noted_new(next_id_.fetch_add(1, std::memory_order_relaxed)); }
  uint64_t reserve_ids(uint64_t n) { return noted_new(next_id_.fetch_add(n, std::memory_order_relaxed)); }
  bool alive() const { return !dead_.load(std::memory_order_acquire); }

  // Appends an asynchronous record; `flush` sends the batch now (submissions, signals).
  void send(uint16_t command, const wire::Builder& b, bool flush = false);
  void send_fixed(uint16_t command, const void* data, size_t size);
  // An asynchronous control record (wire::ControlCommand) with a raw payload.
  void send_raw(uint16_t command, const void* data, size_t size);
  // The same, the record's payload in two pieces (a header and bytes that follow it), copied
  // once, into the batch.
  void send_raw(uint16_t command, const void* head, size_t head_size, const void* body, size_t body_size);
  // Appends a record that wants a reply, sends the batch and waits. false: the host is gone.
  // Queries whose answer never changes (answer_never_changes) are asked once per argument list
  // and answered from a copy after that.
  bool call(uint16_t command, const wire::Builder& b, Reply& reply);
  bool call_raw(uint16_t command, const void* data, size_t size, Reply& reply);
  // The same, with `followers` appended behind the call in its batch (each wants a reply, taken
  // afterwards with take_reply; each's seq is set). Never answered from the copy of
  // answer_never_changes. false: the host is gone, and no follower's reply will come.
  bool call(uint16_t command, const wire::Builder& b, Reply& reply, std::vector<Follower>& followers);
  bool take_reply(uint64_t seq, Reply& reply) { return wait_reply(seq, reply); }
  // Records that each want a reply, sent in one batch without waiting (each's seq is set); the
  // caller takes every reply with take_reply. false: the host is gone.
  bool send_calls(std::span<Follower> calls);
  // A reply bypassd pushed unasked (wire::pushed_seq) before the reply of a call this thread made:
  // read already, or next on the ring. False when the session is lost.
  bool take_pushed(uint64_t seq, Reply& reply) { return wait_reply(seq, reply); }
  // A reply bypassd may have pushed before the reply this thread just received: taken if it did,
  // never waited for (it would have been read already).
  bool try_take_pushed(uint64_t seq, Reply& reply);
  // A socket session's small-memory heap (wire::kFdTagSmallMemoryHeap): mapped whole at the
  // first placement in it and kept until the connection ends. Empty when it cannot be had.
  std::span<std::byte> small_memory_heap();
  void flush();
  // Appends a vkQueueSubmit/vkQueueSubmit2 record and sends the batch: the serial bypassd gives
  // the same submission (every such record is numbered 1, 2, ... in the order it is appended).
  uint64_t send_submission(uint16_t command, const wire::Builder& b);

  // Completion feedback (sync.cpp): the block bypassd publishes completions in, the fences'
  // submissions, and the wait on the block's word (a futex, or polling on a VM link).
  const transport::layout::Feedback* feedback() const { return feedback_; }
  transport::layout::Feedback* feedback_for_testing() const { return feedback_; }
  FenceTracker& fences() { return fences_; }
  TimelineTracker& timelines() { return timelines_; }
  // Which submissions reach memory imported from application pages (import_tracker.h).
  ImportTracker& imports() { return imports_; }
  void sleep_feedback(uint32_t expected, std::chrono::nanoseconds timeout) const {
    link_->sleep_feedback(expected, timeout);
  }
  std::chrono::nanoseconds liveness_slice() const { return link_->liveness_slice(); }
  // Whether this process can have learned, by any way but the feedback block, that submission
  // `serial` is done: bypassd reported a fence of it or of a later submission signalled, or
  // answered a call that shows signal operations (shows_signals) after it was made; or a
  // submission waited for a timeline value that a later one may signal (then a published earlier
  // serial may stand for any later one). When it cannot, and the block has nothing at or after
  // `serial`, the submission is not done as far as this process can tell, and a zero-timeout
  // poll may say so without a round trip (sync.cpp).
  bool may_know_done(uint64_t serial) const {
    return timeline_waits_.load(std::memory_order_acquire) || serial <= reply_horizon_.load(std::memory_order_acquire);
  }
  // A submission waited for a timeline value no earlier submission signals (it may be signalled
  // by a later one, or from elsewhere): polls ask bypassd from now on.
  void saw_timeline_wait() { timeline_waits_.store(true, std::memory_order_release); }
  bool saw_timeline_waits() const { return timeline_waits_.load(std::memory_order_acquire); }
  // This process learned that submissions up to `serial` may be done (a fence bypassd reported
  // signalled: sync.cpp; answers that show signal operations: call_raw).
  void learned_done(uint64_t serial);
  // The serial of the latest submission appended.
  uint64_t last_submission() {
    std::lock_guard lock(send_mu_);
    return submit_serial_;
  }
  // Checks the peer (a system call): marks the connection dead when bypassd is gone.
  bool check_peer();

  // Takes the fd the host sent with `tag` (wire::kFdTag*), waiting for it. -1: the host is gone.
  int take_fd(uint64_t tag);
  // Sends a duplicate of `fd` to the host with `tag`, ahead of the record that uses it.
  bool send_fd(uint64_t tag, int fd);
  void protocol_error(const std::string& what);

  // Presentation through memshare (host-server/src/presentation.h): this session's domain in
  // bypassd's memshare service, joined on first use; nullptr when bypassd offers none.
  memshare::Client* present_client();
  // Names [offset, offset + size) of host-visible memory `memory_id` for the presenter to
  // transfer from. false when bypassd cannot (the caller presents from its mapping instead).
  bool present_name(uint64_t memory_id, uint64_t offset, uint64_t size, memshare::Name* out);

  // Installed at connect (BYPASS_MEMORY=shadow) or with the first shadowed allocation.
  MemoryHooks* memory_hooks() const { return hooks_.load(std::memory_order_acquire); }
  void set_memory_hooks(MemoryHooks* hooks) { hooks_.store(hooks, std::memory_order_release); }

  void register_object(Object* o);
  void unregister_object(Object* o);

 private:
  explicit Connection(std::unique_ptr<HostLink> link) : link_(std::move(link)), feedback_(link_->feedback()) {}
  uint64_t to_wire(VkObjectType type, uint64_t handle) override;
  uint64_t noted_new(uint64_t id) {
    if (imports_.noting()) ImportTracker::note_new(id);
    return id;
  }
  bool from_wire(VkObjectType type, uint64_t id, uint64_t* handle) override;
  // Returns the record's submission serial (0 for any other command).
  uint64_t append_locked(uint16_t command, uint16_t flags, const void* data, size_t size, const void* more = nullptr,
                         size_t more_size = 0);
  bool call_with(uint16_t command, const void* data, size_t size, Reply& reply, std::span<Follower> followers);
  void append_calls_locked(std::span<Follower> calls);  // each wants a reply; sets each's seq
  void flush_locked();
  bool wait_reply(uint64_t seq, Reply& reply);
  static bool answer_never_changes(uint16_t command);
  // Whether bypassd's answer to `command` may show signal operations of the guest's submissions
  // (may_know_done).
  static bool shows_signals(uint16_t command, int32_t result);
  void mark_dead(const std::string& why);
  std::string lost_text(transport::Status st) const;

  std::unique_ptr<HostLink> link_;
  std::mutex send_mu_;
  std::vector<uint8_t, base::DefaultInitAllocator<uint8_t>> batch_;  // grows without zeroing
  uint64_t sync_seq_ = 0;
  uint64_t submit_serial_ = 0;              // vkQueueSubmit/vkQueueSubmit2 records appended (send_mu_)
  std::atomic<uint64_t> reply_horizon_{0};  // the latest serial this process may know done (learned_done)
  std::atomic<bool> timeline_waits_{false};
  transport::layout::Feedback* feedback_ = nullptr;  // in the link's region (outlives every call); null: none
  FenceTracker fences_;
  TimelineTracker timelines_;
  ImportTracker imports_;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<bool> dead_{false};

  // Answers of answer_never_changes queries by command and encoded arguments (call), at most
  // kAnswerCacheBytes of them.
  static constexpr size_t kAnswerCacheBytes = size_t{1} << 20;
  std::mutex answers_mu_;
  std::unordered_map<std::string, std::vector<std::byte>> answers_;
  size_t answer_bytes_ = 0;

  std::mutex reply_mu_;
  std::condition_variable reply_cv_;
  bool reading_ = false;
  // What the reading thread receives into (only it touches it, outside reply_mu_): its own reply
  // is swapped into the caller's Reply, whose buffer comes back for the next read, so a call
  // allocates nothing for its reply once warm.
  transport::Message read_buf_;
  static constexpr size_t kKeptReadBytes = size_t{1} << 20;  // a larger buffer is not kept
  std::unordered_map<uint64_t, transport::Message> stash_;

  std::mutex objects_mu_;
  std::unordered_map<uint64_t, Object*> objects_;

  std::atomic<MemoryHooks*> hooks_{nullptr};  // pairs set_memory_hooks with the entry points

  std::mutex fds_mu_;
  std::unordered_multimap<uint64_t, int> fds_;  // received for another thread's call

  std::mutex present_mu_;
  bool present_tried_ = false;
  std::unique_ptr<memshare::Client> present_;

  std::mutex heap_mu_;
  std::span<std::byte> small_heap_;  // mapped by small_memory_heap (heap_mu_); unmapped at the end
};

wire::Builder& thread_builder();
Reply& thread_reply();
std::vector<Follower>& thread_followers();  // cleared by each caller before use

}  // namespace bypass::icd
