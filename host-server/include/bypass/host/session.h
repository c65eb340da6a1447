// One guest session: its channel, its object table, its decoder thread and its waiters.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "bypass/host/device_heap.h"
#include "bypass/host/end_reason.h"
#include "bypass/host/gen/handwritten.h"
#include "bypass/host/guest_view.h"
#include "bypass/host/object_table.h"
#include "bypass/host/validate.h"
#include "bypass/memshare/types.h"
#include "bypass/transport/session.h"
#include "bypass/wire/host_context.h"
#include "bypass/wire/protocol.h"

namespace bypass::host {

struct ServerConfig;

// Host-visible memory the guest reaches. Either a memfd mapped here and imported into the
// driver (the guest maps the same fd), or, for memory imported or exported as an fd, the
// driver's own allocation mapped with vkMapMemory: when its pages are a file the guest can
// map too (`fd`, at `file_offset`), they are shared; otherwise (fd < 0) the guest shadows
// them through kCtlMemoryWrite/kCtlMemoryRead.
struct SharedMemory {
  int fd = -1;  // ours to close
  void* ptr = nullptr;
  size_t size = 0;
  uint64_t file_offset = 0;
  bool driver_mapped = false;             // ptr is the driver's mapping, which vkFreeMemory ends
  std::unique_ptr<GuestView> guest_view;  // made at the first shadow barrier
  // Our own mapping (not the driver's): unmapped when the last holder lets go, the session or
  // a presentation transfer still reading it.
  std::shared_ptr<void> mapping;
  std::vector<memshare::Name> present_names;  // memshare names over this memory
  bool in_heap = false;                       // a block at `file_offset` of the session's DeviceHeap
};

// What the host knows about a device it created for the guest.
struct DeviceInfo {
  uint64_t physical_device = 0;
  bool host_memory_import = false;
  uint64_t import_alignment = 4096;
  VkPhysicalDeviceMemoryProperties memory{};
};

struct SessionStats {
  std::atomic<uint64_t> records{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> replies{0};
  std::atomic<uint64_t> objects{0};
  std::atomic<uint64_t> memory_bytes{0};
};

// Threads (docs/host-threads.md): the session thread runs run() and everything it decodes;
// waiter threads run blocking calls (run_blocking) and send their replies; bypassd's main
// thread (or the worker's report page) sees only SessionStats and stop_request. Each member
// below says which thread owns it and which lock, if any, guards it. "Session thread" means:
// only the thread in run() (or, before run() and after it, the one that owns the Session)
// touches it, so it takes no lock.
class Session final : public wire::HostContext, private wire::HandleMap {
 public:
  // `stats` and `stop_request` may live in memory shared with bypassd's main process (a worker's
  // report page); null: the session's own.
  Session(uint64_t id, transport::Channel channel, const ServerConfig& config, SessionStats* stats = nullptr,
          const std::atomic<uint32_t>* stop_request = nullptr);
  ~Session() override;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // ---- for whoever runs the session (worker.cpp, tests)
  // Runs the decoder loop until the guest leaves or misbehaves, then tears everything down.
  void run();
  // Asks the loop to stop (server shutdown); returns at once. Any thread.
  void stop();
  uint64_t id() const { return id_; }
  // Why it ended, and the detail (which command, what): read once finished(); the session
  // thread writes them before run() returns.
  EndReason end_reason() const { return end_reason_; }
  const std::string& end_detail() const { return end_detail_; }
  bool finished() const { return finished_.load(std::memory_order_acquire); }  // any thread

  // ---- for the hand-written handlers (instance.cpp, device.cpp, memory.cpp, sync.cpp,
  // submit.cpp, validate.cpp). Session thread only, unless a comment says otherwise.
  const ServerConfig& config() const { return config_; }  // any thread (immutable)
  const SessionStats& stats() const { return stats_; }    // any thread (atomics)
  const ObjectTable& objects() const { return objects_; }
  Resources& resources() { return resources_; }
  // The heap host-visible memory of `bytes` (rounded to pages) is a block of, or null for a memfd
  // of its own (memory.cpp): a VM guest's slot heap, always; on a socket session the small-memory
  // heap for allocations up to ServerConfig::small_memory_max(), made and its fd sent to the guest
  // (wire::kFdTagSmallMemoryHeap) at the first. Held by every block's SharedMemory::mapping too.
  std::shared_ptr<DeviceHeap> heap_for(uint64_t bytes);
  // A VM guest's session: every host-visible allocation is a block of the slot's heap.
  bool memory_only_in_heap() const { return vm_heap_; }
  PFN_vkGetInstanceProcAddr gipa() const { return gipa_; }
  void set_dispatch(uint64_t dispatchable, std::shared_ptr<wire::Dispatch> d);
  std::shared_ptr<wire::Dispatch> dispatch_ptr(uint64_t dispatchable);
  void set_device_info(uint64_t device, uint64_t physical_device, bool host_memory_import);
  const DeviceInfo* device_info(uint64_t device) const;
  void add_memory(uint64_t memory_handle, SharedMemory mem);
  // The fd the guest sent on the session socket with `tag` (wire::kFdTag*), waiting briefly
  // for it: the guest sends it before the record that needs it. -1 when it does not come.
  int take_guest_fd(uint64_t tag);
  // Sends `fds` to the guest with `tag`, in order with the replies (the channel's send side
  // has one user at a time: reply_mu_), bounded by --send-timeout.
  transport::Status send_fds(uint64_t tag, std::span<const int> fds);
  // Sends a reply that is not a generated FlatBuffer (control commands). Any thread.
  void send_raw_reply(uint64_t seq, uint16_t command, int32_t result, const void* data, size_t size);
  void remove_owned(uint64_t owner);
  // Destroys `device` in the driver with everything it still owns, children before what they
  // use (the order teardown uses), once its work is done. The table entries stay: the caller
  // removes them (remove_object) or drops the whole table.
  void destroy_device(uint64_t device);
  // Counts a guest vkQueueSubmit/vkQueueSubmit2 record (whatever its result): the serial the
  // guest gave the same submission (submit.cpp), 1, 2, ... per session.
  uint64_t next_submission_serial() { return ++submit_serial_; }
  // After guest submission `serial` on `queue` (submit.cpp): a host fence behind it, which
  // destroys and frees wait for and whose signal the feedback thread publishes to the guest.
  // Runs with queue_mu_ held (process_batch holds it for vkQueue* records).
  void track_submission(VkQueue queue, uint64_t serial);
  // Waits up to timeout_ns for every guest submission on `device` through the tracking fences:
  // VK_SUCCESS once all are done, VK_TIMEOUT, or VK_INCOMPLETE when the tracking cannot tell.
  VkResult wait_tracked(uint64_t device, uint64_t timeout_ns);
  // vkQueueWaitIdle (`queue`, its device found here) or vkDeviceWaitIdle (`device`, queue 0) off
  // the session thread: each queue gets an empty submission with a fence of ours while
  // queue_mu_ is held, then the fences are waited for without it, so the wait never overlaps a
  // submission on the same queue and never holds one up. Ends with VK_ERROR_DEVICE_LOST when
  // the session closes first, or names a queue the session does not have. Waiter threads.
  VkResult wait_idle(uint64_t device, uint64_t queue);
  // Any thread.
  bool closing() const {
    return closing_.load(std::memory_order_acquire) ||
           (stop_request_ && stop_request_->load(std::memory_order_acquire) != 0);
  }
  // True while more input waits for the decoder (records left in the batch being decoded, or
  // a message in the receive ring): a blocking call must not keep the session thread then.
  bool input_waiting() const;

  // ---- wire::HostContext. Session thread, except: dispatch_of, send_reply and reply_builder
  // are called by waiter threads too; waiter threads never call fail() (decode is the session
  // thread's): what they run reports through the call's VkResult.
  const wire::Dispatch& dispatch_of(uint64_t dispatchable) override;
  const char* refuse_new_id(VkObjectType type, uint64_t id) override;
  void add_object(VkObjectType type, uint64_t id, uint64_t handle, uint64_t owner) override;
  void remove_object(VkObjectType type, uint64_t handle) override;
  void send_reply(uint64_t seq, uint16_t command, int32_t result, wire::Builder& b) override;
  bool run_blocking(std::function<void()> job) override;
  bool destroy_ok(const char* command, const char* what, uint64_t handle) override;
  bool defer_destroy(uint64_t device, VkObjectType type, uint64_t handle) override;
  wire::Builder& reply_builder() override;
  // Before a host-visible allocation of `bytes` (memory.cpp): when the session would pass
  // --max-memory while memory freed by the guest is still held for work in flight (retired,
  // counted until the driver frees it), waits for that work and frees it, so retiring never
  // refuses an allocation a native run would make.
  void make_room(uint64_t bytes);

 private:
  // wire::HandleMap (the session thread's decoding)
  uint64_t to_wire(VkObjectType type, uint64_t handle) override;
  bool from_wire(VkObjectType type, uint64_t id, uint64_t* handle) override;

  size_t object_count() const;
  // Records why the session ends (the first reason given wins); returns false.
  bool end(EndReason reason, std::string detail);
  bool process_batch(const std::byte* data, size_t size);
  void waiter_main();
  void finish_pending(uint64_t seq);
  void teardown();
  void destroy_object(const ObjectEntry& e);
  void release_memory(uint64_t memory_handle);
  // Before a destroy or free that cannot be deferred (vkFreeCommandBuffers, vkDestroyDevice...):
  // waits (bounded) for the tracking fences of every device; true when all of them signalled.
  bool quiesce();
  // Destroys the retired objects whose work is done: every one of `idle_device` (0: none;
  // kAllDevices: every device is idle) and, of the other devices, those retired before the
  // oldest submission still in flight there.
  static constexpr uint64_t kAllDevices = ~uint64_t{0};
  void run_retired(uint64_t idle_device = 0);
  // quiesce(), then destroys every retired object whose work that wait saw done.
  void drain_retired();
  void drop_tracking(uint64_t device);
  // Completion feedback (feedback.cpp): the feedback thread's loop; what a submission that could
  // not be tracked, or the session's end, does to the guest's view (any thread, feedback_mu_ not held).
  void feedback_main();
  void stop_feedback();

 public:
  // The guest's feedback can no longer be complete (a submission that will not be published):
  // sets the block's `stopped` word. Any thread.
  void feedback_unreliable();

 private:
  // After a batch with submissions (session thread): waits briefly for the newest and
  // publishes, or hands what is left to the feedback thread.
  void settle_feedback();
  // Under feedback_mu_: moves the signalled fences at the front of `tq` to free_fences_ and
  // publishes their serials; publish stores them and wakes a sleeping guest.
  struct TrackedQueue;
  void collect(TrackedQueue& tq, const wire::Dispatch& d);
  void publish(const std::vector<uint64_t>& serials);
  // Submits an empty batch with a new fence on each of `queues` (queue_mu_ held by the caller);
  // false when a fence cannot be made or submitted (the fences made so far are in *fences).
  VkResult submit_idle_fences(const wire::Dispatch& d, VkDevice device, const std::vector<VkQueue>& queues,
                              std::vector<VkFence>* fences);

  // ---- control commands (src/control.cpp): one function each, on the session thread.
  bool run_control(uint16_t command, const uint8_t* data, size_t size);
  bool control_enumerate_physical_devices(const uint8_t* data, size_t size);
  bool control_session_stats(const uint8_t* data, size_t size);
  bool control_memory_write(const uint8_t* data, size_t size);
  bool control_memory_read(const uint8_t* data, size_t size);
  bool control_memory_read_after(const uint8_t* data, size_t size);
  // A shadow read barrier's reply: the runs of [offset, offset + size) of `m` that differ from
  // the guest's copy (`command`: which read asked).
  void send_shadow_read(SharedMemory& m, uint16_t command, uint64_t offset, uint64_t size);
  bool send_read_flags(uint16_t command, uint32_t flags);
  bool control_external_memory(const uint8_t* data, size_t size);
  bool control_memory_placement(const uint8_t* data, size_t size);
  bool control_present_join(const uint8_t* data, size_t size);
  bool control_present_name(const uint8_t* data, size_t size);
  // The host-visible memory behind the guest's memory id: false (the session fails, naming
  // `where`) for an id it does not have; *out stays null for memory that is not host-visible.
  bool memory_of_id(uint64_t id, const char* where, SharedMemory** out);
  // The host-visible memory a shadow-memory request (a wire::MemoryRange, then data) names, its
  // range checked and its guest view made; nullptr once the request has ended the session.
  // nullptr and *gone: the memory was freed (an id the session used before, no object now).
  SharedMemory* shadow_range_of(const uint8_t* data, size_t size, wire::MemoryRange& r, bool* gone);

  // ---- set at construction, read by any thread
  const uint64_t id_;
  const ServerConfig& config_;
  const std::atomic<uint32_t>* stop_request_;  // bypassd's "end now", or null
  PFN_vkGetInstanceProcAddr gipa_ = nullptr;
  std::vector<bool> destroys_;    // command id -> destroys or frees
  std::vector<bool> defers_;      // command id -> destroys one device child, may retire it
  std::vector<bool> uses_queue_;  // command id -> a vkQueue* call the session thread makes
  SessionStats own_stats_;
  SessionStats& stats_;  // atomics: bypassd's main process reads them any time

  // ---- the channel. Receive side (recv, poll_ready, recv_fds): the session thread. Send side
  // (replies, fds, the final error): any thread, one at a time, under reply_mu_. close(): the
  // session thread, after the waiters are gone.
  transport::Channel channel_;
  std::shared_ptr<DeviceHeap> heap_;  // a VM slot's, set at construction; or heap_for's (session thread)
  const bool vm_heap_;                // heap_ is a VM slot's
  bool heap_tried_ = false;           // heap_for tried to make the small-memory heap (session thread)

  // ---- the session thread's own: no lock
  ObjectTable objects_;  // no other thread reads it (the stats reader reads stats_.objects)
  Resources resources_;  // sizes and bindings for validate.cpp
  std::unordered_map<uint64_t, SharedMemory> memory_;
  std::unordered_multimap<uint64_t, int> guest_fds_;         // received, not yet taken
  std::vector<std::byte> read_reply_;                        // kCtlMemoryRead's reply, reused
  memshare::DomainId present_domain_ = memshare::kNoDomain;  // joined for presentation
  uint64_t shadow_read_asked_ = 0;                           // bytes the read barriers covered
  uint64_t shadow_read_sent_ = 0;                            // and the bytes that differed
  uint64_t highest_id_ = 0;                                  // the highest object id the guest has used (add_object)
  uint64_t reads_after_ = 0;                                 // kCtlMemoryReadAfter answered with the wait's data
  uint64_t reads_after_skipped_ = 0;                         // and skipped (the wait did not succeed at once)
  std::unordered_map<uint64_t, DeviceInfo> devices_;
  uint64_t submit_serial_ = 0;                      // guest submissions run so far
  std::unordered_set<uint64_t> untracked_devices_;  // a submission went untracked (no fence)
  wire::Arena arena_;
  uint64_t seq_ = 0;
  // Records other than read barriers riding behind it (kCtlMemoryReadAfter) follow the one
  // being run in the current batch: input_waiting().
  bool batch_rest_ = false;
  // The record being run: its command (whether it wants a reply is HostContext::wants_reply),
  // and, for a blocking command, every handle its decoding resolved (what a waiter thread would use).
  uint16_t record_command_ = 0;
  bool record_blocks_ = false;
  std::vector<uint64_t> record_handles_;
  std::string refusal_;                      // refuse_new_id's last reason
  EndReason end_reason_ = EndReason::kNone;  // others read it (and the detail) once finished()
  std::string end_detail_;
  std::thread::id session_thread_;  // run()'s thread; written before any waiter exists

  // ---- dispatch tables: written by the session thread only, under dispatch_mu_; read by it
  // without the lock and by waiter threads with it (dispatch_of, dispatch_ptr).
  std::mutex dispatch_mu_;
  std::unordered_map<uint64_t, std::shared_ptr<wire::Dispatch>> dispatch_;
  // The session thread's last lookup in dispatch_ (no lock: only it reads or writes this, and it
  // forgets it whenever it changes dispatch_).
  struct DispatchCache {
    uint64_t key = 0;
    const wire::Dispatch* table = nullptr;
  };
  DispatchCache dispatch_cache_;

  // ---- queues: a VkQueue is externally synchronized, and the session thread (vkQueue*
  // records, tracking fences) and waiter threads (wait_idle) both use queues. Every driver
  // call on a queue is made with queue_mu_ held, and only for as long as the call takes
  // (submissions, never waits). queue_device_ is written by the session thread and read by
  // waiters, both under queue_mu_. Lock order: queue_mu_ before reply_mu_ (a vkQueue* record
  // that answers replies with it held); no other lock is held when it is taken.
  std::mutex queue_mu_;
  std::unordered_map<uint64_t, uint64_t> queue_device_;  // queue -> its device
  // Idle fences a waiter stopped waiting for when the session closed: still in a queue, so
  // destroyed only after their device is idle (destroy_device).
  std::vector<std::pair<uint64_t, VkFence>> abandoned_fences_;

  // ---- replies: any thread, under reply_mu_ (the reply ring has one producer at a time)
  std::mutex reply_mu_;
  // Set when a reply could not be sent within --send-timeout (the guest stopped reading) or at
  // all. The decoder loop ends the session with it.
  EndReason send_failure_ = EndReason::kNone;
  std::string send_failure_detail_;
  // The last reply to a Vulkan call, from any thread: what a kCtlMemoryReadAfter checks.
  uint64_t last_call_seq_ = 0;
  int32_t last_call_result_ = 0;

  // ---- blocking calls: the session thread queues them, waiter threads run them; all under
  // jobs_mu_ except waiters_, which only the session thread touches (it joins them).
  std::mutex jobs_mu_;
  std::condition_variable jobs_cv_;
  struct Job {
    uint64_t seq;
    std::function<void()> run;
  };
  std::deque<Job> jobs_;
  // Blocking calls queued or running on a waiter thread, by reply sequence number: the
  // command, and the handles it uses with every owner above them (a fence's device, physical
  // device and instance). A destroy of any of those is refused while the call is pending; the
  // entry goes just before the reply, so a guest that saw the reply may destroy at once.
  struct PendingCall {
    uint16_t command;
    std::vector<uint64_t> uses;
  };
  std::unordered_map<uint64_t, PendingCall> pending_;
  std::atomic<size_t> pending_count_{0};  // pending_.size(), read without the lock by replies
  size_t idle_waiters_ = 0;
  std::vector<std::thread> waiters_;  // session thread (started in run_blocking, joined in teardown)

  // ---- tracking fences and completion feedback (submit.cpp, feedback.cpp): the session thread
  // puts a fence of ours behind every guest submission (tracked_), the feedback thread waits
  // for them in each queue's order, publishes the serials in the region's Feedback block and
  // hands signalled fences back (free_fences_), which only the session thread resets and
  // reuses, destroys (drop_tracking) or waits on itself (wait_tracked, quiesce). Everything
  // here under feedback_mu_, except feedback_ (set at construction), last_tracked_ and
  // feedback_kick_ (the session thread's) and feedback_thread_ (the session thread's: started
  // when work outlives settle_feedback's wait, joined by teardown).
  struct Tracked {
    VkFence fence;
    uint64_t serial;
  };
  struct TrackedQueue {
    uint64_t device = 0;
    std::deque<Tracked> pending;  // submitted, not yet seen signalled, oldest first
  };
  std::mutex feedback_mu_;
  std::condition_variable feedback_cv_;                 // work for the feedback thread; busy_device_ went to 0
  std::unordered_map<uint64_t, TrackedQueue> tracked_;  // queue -> its fences in flight
  std::unordered_map<uint64_t, std::vector<VkFence>> free_fences_;  // device -> signalled, unused
  uint64_t busy_device_ = 0;             // the device whose fence the feedback thread waits on right now
  VkFence busy_fence_ = VK_NULL_HANDLE;  // and that fence: not reused until it is out
  // The session thread's: the last tracking fence of the batch being run, for settle_feedback.
  struct LastTracked {
    uint64_t queue = 0;
    uint64_t device = 0;
    VkFence fence = VK_NULL_HANDLE;
  };
  LastTracked last_tracked_;
  // Objects the guest destroyed or freed while work was in flight on their device (session
  // thread only): gone from the table, destroyed by run_retired once every submission made
  // before the destroy is done. A memory's mapping is held with it (a VM guest's heap block
  // must not be reused while the driver may still read it).
  struct Retired {
    uint64_t device;
    VkObjectType type;
    uint64_t handle;
    uint64_t serial;  // submit_serial_ at the destroy
    uint64_t bytes;   // host-visible memory it holds (still counted in stats_.memory_bytes)
    std::shared_ptr<void> mapping;
  };
  static constexpr size_t kMaxRetired = 4096;  // then a destroy waits for the work, as before
  std::deque<Retired> retired_;
  bool feedback_kick_ = false;
  bool feedback_stop_ = false;
  transport::layout::Feedback* feedback_ = nullptr;  // in the channel's region; null: none
  std::vector<uint64_t> published_;                  // our copy of done[] (feedback_mu_)
  uint64_t published_highest_ = 0;                   // our copy of `highest` (feedback_mu_)
  std::thread feedback_thread_;

  // ---- life: any thread
  std::atomic<bool> closing_{false};
  std::atomic<bool> finished_{false};
};

// Hand-written handlers, one registration function per object file.
void register_sync_handlers(wire::Handlers& h);
void register_validate_handlers(wire::Handlers& h);

}  // namespace bypass::host
