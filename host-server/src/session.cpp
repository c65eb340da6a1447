#include "bypass/host/session.h"

#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <new>

#include "bypass/host/config.h"
#include "bypass/host/worker.h"     // WorkerReport::kStopOperator
#include "bypass/wire/gen/enums.h"  // wire::is_dispatchable
#include "presentation.h"

namespace bypass::host {

using transport::Status;

namespace {

const wire::Dispatch kNoDispatch{};

}  // namespace

Session::Session(uint64_t id, transport::Channel channel, const ServerConfig& config, SessionStats* stats,
                 const std::atomic<uint32_t>* stop_request)
    : id_(id),
      config_(config),
      stop_request_(stop_request),
      stats_(stats ? *stats : own_stats_),
      channel_(std::move(channel)),
      heap_(channel_.shared_heap().empty() ? nullptr : std::make_shared<DeviceHeap>(channel_.shared_heap())),
      vm_heap_(heap_ != nullptr) {
  gipa_ = vkGetInstanceProcAddr;
  decode.arena = &arena_;
  decode.handles = this;
  decode.check_values = true;  // enum values outside the covered API never reach the driver
  feedback_ = channel_.feedback();
  published_.assign(transport::layout::kFeedbackSlots, 0);
  handlers = wire::default_handlers();
  register_handwritten_handlers(handlers);  // codegen/data/handwritten.txt, side host
  register_sync_handlers(handlers);
  register_validate_handlers(handlers);
  destroys_.assign(wire::kCommandIdLimit, false);
  defers_.assign(wire::kCommandIdLimit, false);
  uses_queue_.assign(wire::kCommandIdLimit, false);
  for (uint16_t cmd = 0; cmd < wire::kCommandIdLimit; ++cmd) {
    destroys_[cmd] = wire::command_destroys(cmd);
    defers_[cmd] = wire::command_may_defer_destroy(cmd);
    // Every vkQueue* command takes its queue externally synchronized. The blocking ones
    // (vkQueueWaitIdle) never reach the driver's queue from the session thread: their try_
    // waits on fences, their waiter uses wait_idle.
    uses_queue_[cmd] = std::string_view(wire::command_name(cmd)).starts_with("vkQueue") && !wire::command_blocks(cmd);
  }
}

Session::~Session() {
  stop();
  if (!finished()) teardown();
}

void Session::stop() { closing_.store(true, std::memory_order_release); }

size_t Session::object_count() const { return stats_.objects.load(std::memory_order_relaxed); }

void Session::run() {
  session_thread_ = std::this_thread::get_id();
  spdlog::info("session {}: start (pid {}, uid {}, guest \"{}\")", id_, channel_.peer_pid(), channel_.peer_uid(),
               channel_.peer_hello().peer_name);
  transport::Message msg;
  while (!closing()) {
    Status st = channel_.recv(msg, transport::deadline_after(std::chrono::milliseconds(200)));
    if (st == Status::kTimeout) continue;
    if (st == Status::kClosed) {
      end(EndReason::kGuestGoodbye, "the guest closed the session");
      break;
    }
    if (st == Status::kPeerGone) {
      end(EndReason::kPeerGone, "the guest disconnected without a goodbye");
      break;
    }
    if (st != Status::kOk) {
      std::string detail = std::string("transport: ") + transport::to_string(st);
      if (const std::string text = channel_.error_text(); !text.empty()) detail += ": " + text;
      end(EndReason::kProtocolError, std::move(detail));
      break;
    }
    if (msg.kind != wire::kMsgBatch) {
      end(EndReason::kProtocolError, "unexpected message kind " + std::to_string(msg.kind));
      break;
    }
    stats_.bytes.fetch_add(msg.payload.size(), std::memory_order_relaxed);
    bool ok;
    try {
      ok = process_batch(msg.payload.data(), msg.payload.size());
    } catch (const std::bad_alloc&) {
      // In a worker, RLIMIT_DATA bounds everything the guest makes us (or the driver) allocate.
      ok = end(EndReason::kOutOfMemory, "the session reached its data limit (" +
                                            std::to_string(worker_data_limit(config_) >> 20) +
                                            " MiB, --worker-data-limit)");
    }
    if (ok) settle_feedback();
    // A large batch's buffer is not kept for the rest of the session.
    if (msg.payload.capacity() > (4u << 20)) std::vector<std::byte>().swap(msg.payload);
    {
      std::lock_guard lock(reply_mu_);
      if (send_failure_ != EndReason::kNone) {
        // It outranks whatever the batch ended with: nothing more reaches this guest.
        end_reason_ = send_failure_;
        end_detail_ = send_failure_detail_;
        break;
      }
    }
    if (!ok) break;
  }
  {
    std::lock_guard lock(reply_mu_);
    if (send_failure_ != EndReason::kNone) end(send_failure_, send_failure_detail_);
  }
  // When nothing else ended it: a stop request.
  if (stop_request_ && stop_request_->load(std::memory_order_acquire) == WorkerReport::kStopOperator)
    end(EndReason::kEndedByOperator, "an operator ended the session (bypassctl end)");
  else
    end(EndReason::kServerShutdown, "server shutting down");
  const bool clean = is_clean(end_reason_);
  // Waiter threads still running stop here: they answer nothing more.
  closing_.store(true, std::memory_order_release);
  if (!clean) {
    // Tell the guest why before the socket closes; it may already be gone, and the session ends
    // either way: a failure is only worth a debug line. Waiter threads may be sending a reply
    // this moment: the reply ring takes one producer at a time.
    std::lock_guard lock(reply_mu_);
    if (const transport::Status st = channel_.send(wire::kMsgError, std::as_bytes(std::span(end_detail_)),
                                                   transport::deadline_after(std::chrono::milliseconds(100)));
        st != transport::Status::kOk) {
      spdlog::debug("session {}: the end reason did not reach the guest ({})", id_, transport::to_string(st));
    }
  }
  const size_t objects_before = object_count();
  teardown();
  // The guest learns at once that the session is over, not when the server reaps it.
  channel_.close();
  // The one line naming the session, the reason and its detail (which names the command).
  if (clean)
    spdlog::info("session {}: end ({}: {}), {} objects released", id_, to_string(end_reason_), end_detail_,
                 objects_before);
  else
    spdlog::warn("session {}: end ({}: {}), {} objects released", id_, to_string(end_reason_), end_detail_,
                 objects_before);
  if (shadow_read_asked_ > 0 || reads_after_skipped_ > 0)
    spdlog::info(
        "session {}: shadow read barriers sent {} of the {} bytes they covered; {} read behind their wait, {} skipped",
        id_, shadow_read_sent_, shadow_read_asked_, reads_after_, reads_after_skipped_);
  finished_.store(true, std::memory_order_release);
}

bool Session::end(EndReason reason, std::string detail) {
  if (end_reason_ == EndReason::kNone) {
    end_reason_ = reason;
    end_detail_ = std::move(detail);
  }
  return false;
}

namespace {

EndReason reason_of(wire::Fault fault) {
  switch (fault) {
    case wire::Fault::kMalformed:
      return EndReason::kProtocolError;
    case wire::Fault::kInvalidUsage:
      return EndReason::kInvalidUsage;
    case wire::Fault::kObjectLimit:
      return EndReason::kObjectLimit;
    case wire::Fault::kPendingLimit:
      return EndReason::kPendingLimit;
    case wire::Fault::kDriver:
      return EndReason::kDriverError;
  }
  return EndReason::kProtocolError;
}

// Whether the records of a batch from an offset on are all read barriers riding behind a call
// (kCtlMemoryReadAfter): they wait for that call, so a wait need not make way for them. A
// malformed record is input like any other (process_batch ends the session on it). Each record
// of the batch is looked at once however many times it is asked, so a batch of many such
// records costs no more than its length.
class ReadsAfterTail {
 public:
  ReadsAfterTail(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool from(size_t off) {
    if (off >= tail_) return true;
    if (blocker_ != kNone && off <= blocker_) return false;
    size_t at = off;
    while (at < size_) {
      wire::RecordHeader h;
      if (size_ - at < sizeof(h)) break;
      std::memcpy(&h, data_ + at, sizeof(h));
      if (h.command != wire::kCtlMemoryReadAfter || h.size < sizeof(h) || h.size > size_ - at) break;
      at += h.size;
    }
    if (at >= size_) {
      tail_ = off;
      return true;
    }
    blocker_ = at;
    return false;
  }

 private:
  static constexpr size_t kNone = SIZE_MAX;
  const uint8_t* data_;
  size_t size_;
  size_t tail_ = kNone;     // from here on only reads-after, when known
  size_t blocker_ = kNone;  // a record that is not one, the last found
};

}  // namespace

bool Session::process_batch(const std::byte* bytes, size_t size) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes);
  size_t off = 0;
  // Counted once per batch: the stats live in a page bypassd's main process reads, and an atomic
  // add per record (10,000 per command buffer) is not free.
  uint64_t records = 0;
  if (!retired_.empty()) run_retired();
  struct Count {
    std::atomic<uint64_t>& to;
    uint64_t& n;
    ~Count() { to.fetch_add(n, std::memory_order_relaxed); }
  } count{stats_.records, records};
  ReadsAfterTail tail(data, size);
  while (off < size) {
    wire::RecordHeader h;
    if (size - off < sizeof(h)) return end(EndReason::kProtocolError, "truncated record header");
    std::memcpy(&h, data + off, sizeof(h));
    if (h.size < sizeof(h) || h.size > size - off || h.size % 8 != 0)
      return end(EndReason::kProtocolError, "record size " + std::to_string(h.size) + " out of bounds");
    const uint8_t* payload = data + off + sizeof(h);
    const size_t n = h.size - sizeof(h);
    wants_reply = h.flags & wire::kRecordWantsReply;
    if (wants_reply) reply_seq = ++seq_;
    arena_.reset();
    decode.clear();
    batch_rest_ = h.size < size - off && !tail.from(off + h.size);
    record_command_ = h.command;
    record_blocks_ = h.command < wire::kCommandIdLimit && wire::command_blocks(h.command);
    record_handles_.clear();
    bool ok;
    if (h.command >= 0xF000) {
      // A control command may report the count (kCtlSessionStats): bring it up to date first.
      stats_.records.fetch_add(records, std::memory_order_relaxed);
      records = 0;
      ok = run_control(h.command, payload, n);
    } else if (h.command < wire::kCommandIdLimit && wire::kRunTable[h.command]) {
      // A destroy of one device child retires it (defer_destroy); others wait for the work.
      if (destroys_[h.command] && !defers_[h.command]) quiesce();
      if (uses_queue_[h.command]) {
        // A waiter's wait_idle submits to the same queues; held for this one call only.
        std::lock_guard lock(queue_mu_);
        ok = wire::kRunTable[h.command](*this, payload, n);
      } else {
        ok = wire::kRunTable[h.command](*this, payload, n);
      }
    } else {
      decode.fail("record", "unknown command");
      ok = false;
    }
    ++records;
    if (!ok) {
      // decode.error already names where it failed ("vkCmdDraw.commandBuffer: unknown handle
      // id"); add the command only when it does not.
      const std::string name = h.command >= 0xF000 ? "control command " + std::to_string(h.command)
                               : h.command < wire::kCommandIdLimit && wire::kRunTable[h.command]
                                   ? std::string(wire::command_name(h.command))
                                   : "command id " + std::to_string(h.command);
      const std::string& why = decode.error.empty() ? std::string("failed") : decode.error;
      return end(reason_of(decode.fault), why.starts_with(name) ? why : name + ": " + why);
    }
    off += h.size;
  }
  return true;
}

// ---------------------------------------------------------------- replies
void Session::send_reply(uint64_t seq, uint16_t command, int32_t result, wire::Builder& b) {
  // A blocking call is done with its objects once it replies: the guest may destroy them as
  // soon as it reads this.
  if (pending_count_.load(std::memory_order_acquire) != 0) finish_pending(seq);
  send_raw_reply(seq, command, result, b.GetBufferPointer(), b.GetSize());
}

void Session::send_raw_reply(uint64_t seq, uint16_t command, int32_t result, const void* data, size_t size) {
  wire::ReplyHeader h{seq, command, result};
  std::array<std::span<const std::byte>, 2> parts{std::as_bytes(std::span(&h, 1)),
                                                  std::span(static_cast<const std::byte*>(data), size)};
  std::lock_guard lock(reply_mu_);
  if (send_failure_ != EndReason::kNone) return;  // the session is ending; nothing more goes out
  if (command < 0xF000 && !(seq & wire::kPushedSeqBit)) {
    last_call_seq_ = seq;
    last_call_result_ = result;
  }
  // A guest that stopped reading fills the ring. Waiting for it is bounded: past the deadline
  // the session ends (the decoder loop reads send_failure_), so neither this session's threads
  // nor bypassd's shutdown can be held by it.
  const Status st = channel_.sendv(wire::kMsgReply, parts,
                                   transport::deadline_after(std::chrono::milliseconds(config_.send_timeout_ms)));
  if (st == Status::kOk) {
    stats_.replies.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (st == Status::kTimeout) {
    send_failure_ = EndReason::kSendTimeout;
    send_failure_detail_ = "guest stopped reading replies (the reply ring stayed full for " +
                           std::to_string(config_.send_timeout_ms) + " ms, --send-timeout)";
  } else {
    send_failure_ = st == Status::kPeerGone || st == Status::kClosed ? EndReason::kPeerGone : EndReason::kProtocolError;
    send_failure_detail_ = std::string("cannot send a reply: ") + transport::to_string(st);
  }
  closing_.store(true, std::memory_order_release);
}

transport::Status Session::send_fds(uint64_t tag, std::span<const int> fds) {
  std::lock_guard lock(reply_mu_);
  return channel_.send_fds(tag, fds, transport::deadline_after(std::chrono::milliseconds(config_.send_timeout_ms)));
}

wire::Builder& Session::reply_builder() {
  thread_local wire::Builder b(4096);
  return b;
}

// ---------------------------------------------------------------- blocking calls
bool Session::input_waiting() const { return batch_rest_ || channel_.poll_ready(); }

bool Session::run_blocking(std::function<void()> job) {
  // A try_ handler that found the call cannot be made (sync.cpp) failed the session on this
  // thread; the waiter threads never do (decode is this thread's).
  if (!decode.error.empty()) return false;
  const char* name = wire::command_name(record_command_);
  // Pending calls are known by their reply's sequence number, which only a record that wants a
  // reply has.
  if (!record_blocks_ || !wants_reply) return decode.fail(name, "blocking call without a reply");
  // What the call uses, with every owner above it: destroying any of them would pull it from
  // under the waiter thread (destroy_ok).
  PendingCall call{record_command_, {}};
  for (uint64_t h : record_handles_)
    for (const ObjectEntry* e = objects_.entry_of_handle(h); e;
         e = e->owner ? objects_.entry_of_handle(e->owner) : nullptr) {
      if (std::find(call.uses.begin(), call.uses.end(), e->handle) != call.uses.end()) break;
      call.uses.push_back(e->handle);
    }
  std::lock_guard lock(jobs_mu_);
  if (pending_.size() >= config_.max_pending_waits) {
    const std::string why = "too many pending blocking calls (limit " + std::to_string(config_.max_pending_waits) + ")";
    return decode.fail(name, why.c_str(), wire::Fault::kPendingLimit);
  }
  pending_.emplace(reply_seq, std::move(call));
  pending_count_.store(pending_.size(), std::memory_order_release);
  jobs_.push_back(Job{reply_seq, std::move(job)});
  // A thread for every pending call that finds none idle: a pending call may block for ever
  // (the guest's timeout is its own), so a smaller pool could leave a call whose work is done
  // queued behind others that never end. max_pending_waits bounds the threads as it bounds the
  // calls; they stay for reuse until the session ends.
  if (idle_waiters_ == 0 && waiters_.size() < config_.max_pending_waits) {
    waiters_.emplace_back([this] { waiter_main(); });
  } else {
    jobs_cv_.notify_one();
  }
  return true;
}

void Session::finish_pending(uint64_t seq) {
  std::lock_guard lock(jobs_mu_);
  pending_.erase(seq);
  pending_count_.store(pending_.size(), std::memory_order_release);
}

bool Session::destroy_ok(const char* command, const char* what, uint64_t handle) {
  if (pending_count_.load(std::memory_order_acquire) == 0) return true;
  std::lock_guard lock(jobs_mu_);
  for (const auto& [seq, call] : pending_) {
    if (std::find(call.uses.begin(), call.uses.end(), handle) == call.uses.end()) continue;
    // Natively invalid usage; here a waiter thread is inside the driver with this object, and
    // a wait may never end: the session ends instead of waiting or freeing it under the waiter.
    const std::string why = std::string(what) + " is in use by a pending " + wire::command_name(call.command);
    return decode.fail(command, why.c_str(), wire::Fault::kInvalidUsage);
  }
  return true;
}

void Session::waiter_main() {
  std::unique_lock lock(jobs_mu_);
  while (true) {
    if (jobs_.empty() || closing()) {
      // A closing session answers nothing more: calls not started are dropped unrun.
      if (closing()) {
        for (const Job& j : jobs_) pending_.erase(j.seq);
        jobs_.clear();
        pending_count_.store(pending_.size(), std::memory_order_release);
        return;
      }
      ++idle_waiters_;
      jobs_cv_.wait(lock, [&] { return !jobs_.empty() || closing(); });
      --idle_waiters_;
      continue;
    }
    Job job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    job.run();
    job.run = nullptr;  // its arguments and message go before the lock is taken again
    lock.lock();
    pending_.erase(job.seq);  // normally gone already, with the reply
    pending_count_.store(pending_.size(), std::memory_order_release);
  }
}

// ---------------------------------------------------------------- objects
uint64_t Session::to_wire(VkObjectType, uint64_t handle) { return objects_.id_of(handle); }

bool Session::from_wire(VkObjectType type, uint64_t id, uint64_t* handle) {
  if (!objects_.lookup(type, id, handle)) {
    decode.expect_fault(wire::Fault::kInvalidUsage);  // the generated caller reports the unknown id
    return false;
  }
  if (record_blocks_) record_handles_.push_back(*handle);
  return true;
}

const char* Session::refuse_new_id(VkObjectType, uint64_t id) {
  if (id == 0) return "new object id 0";
  if (objects_.contains(id)) return "new object id already in use";
  if (objects_.size() >= config_.max_objects) {
    decode.expect_fault(wire::Fault::kObjectLimit);  // the caller reports the refusal
    refusal_ = "object limit reached (--max-objects " + std::to_string(config_.max_objects) + ")";
    return refusal_.c_str();
  }
  return nullptr;
}

void Session::add_object(VkObjectType type, uint64_t id, uint64_t handle, uint64_t owner) {
  highest_id_ = std::max(highest_id_, id);
  objects_.add(type, id, handle, owner);
  stats_.objects.store(objects_.size(), std::memory_order_relaxed);
  if (type == VK_OBJECT_TYPE_QUEUE) {
    std::lock_guard lock(queue_mu_);
    queue_device_[handle] = owner;  // vkGetDeviceQueue's owner is its device
  }
  if (wire::is_dispatchable(type) && !dispatch_.count(handle)) {
    // Queues, command buffers and physical devices use their owner's table; command
    // buffers are owned by a pool, which is owned by the device.
    std::lock_guard dlock(dispatch_mu_);
    for (uint64_t o = owner; o;) {
      auto it = dispatch_.find(o);
      if (it != dispatch_.end()) {
        dispatch_[handle] = it->second;
        dispatch_cache_ = {};
        break;
      }
      const ObjectEntry* e = objects_.entry_of_handle(o);
      o = e ? e->owner : 0;
    }
  }
}

void Session::remove_object(VkObjectType, uint64_t handle) {
  objects_.remove(handle, [&](const ObjectEntry& e) {
    resources_.forget(e.type, e.handle);
    if (e.type == VK_OBJECT_TYPE_DEVICE_MEMORY) release_memory(e.handle);
    if (e.type == VK_OBJECT_TYPE_DEVICE) {
      devices_.erase(e.handle);
      untracked_devices_.erase(e.handle);  // its fences died with it (destroy_device)
    }
    if (e.type == VK_OBJECT_TYPE_QUEUE) {
      std::lock_guard qlock(queue_mu_);
      queue_device_.erase(e.handle);
    }
    std::lock_guard dlock(dispatch_mu_);
    dispatch_.erase(e.handle);
    dispatch_cache_ = {};
  });
  stats_.objects.store(objects_.size(), std::memory_order_relaxed);
}

void Session::set_dispatch(uint64_t dispatchable, std::shared_ptr<wire::Dispatch> d) {
  std::lock_guard lock(dispatch_mu_);
  dispatch_[dispatchable] = std::move(d);
  dispatch_cache_ = {};
}

// The session thread is the only writer of dispatch_, so it reads without the lock; waiter
// threads (blocking calls) take it, since the session thread may be adding an entry meanwhile.
std::shared_ptr<wire::Dispatch> Session::dispatch_ptr(uint64_t dispatchable) {
  std::unique_lock lock(dispatch_mu_, std::defer_lock);
  if (std::this_thread::get_id() != session_thread_) lock.lock();
  auto it = dispatch_.find(dispatchable);
  return it == dispatch_.end() ? nullptr : it->second;
}

const wire::Dispatch& Session::dispatch_of(uint64_t dispatchable) {
  const bool session_thread = std::this_thread::get_id() == session_thread_;
  // Nearly every record names the same command buffer or device as the one before it.
  if (session_thread && dispatch_cache_.key == dispatchable && dispatchable != 0) return *dispatch_cache_.table;
  std::unique_lock lock(dispatch_mu_, std::defer_lock);
  if (!session_thread) lock.lock();
  auto it = dispatch_.find(dispatchable);
  if (session_thread && it != dispatch_.end()) dispatch_cache_ = {dispatchable, it->second.get()};
  // The table entry may go after the lock (the destroy of what a pending wait uses ends the
  // session instead: destroy_ok), so what is returned stays alive while a waiter uses it.
  return it == dispatch_.end() ? kNoDispatch : *it->second;
}

void Session::set_device_info(uint64_t device, uint64_t physical_device, bool host_memory_import) {
  DeviceInfo info;
  info.physical_device = physical_device;
  info.host_memory_import = host_memory_import;
  const wire::Dispatch& d = dispatch_of(device);
  auto pd = wire::handle_from_bits<VkPhysicalDevice>(physical_device);
  d.vkGetPhysicalDeviceMemoryProperties(pd, &info.memory);
  if (host_memory_import && d.vkGetPhysicalDeviceProperties2) {
    VkPhysicalDeviceExternalMemoryHostPropertiesEXT host{
        VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT};
    VkPhysicalDeviceProperties2 props{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, &host};
    d.vkGetPhysicalDeviceProperties2(pd, &props);
    info.import_alignment = host.minImportedHostPointerAlignment;
  }
  devices_[device] = info;
}

const DeviceInfo* Session::device_info(uint64_t device) const {
  auto it = devices_.find(device);
  return it == devices_.end() ? nullptr : &it->second;
}

void Session::remove_owned(uint64_t owner) {
  objects_.remove_owned(owner, [&](const ObjectEntry& e) {
    resources_.forget(e.type, e.handle);
    std::lock_guard dlock(dispatch_mu_);
    dispatch_.erase(e.handle);
    dispatch_cache_ = {};
  });
  stats_.objects.store(objects_.size(), std::memory_order_relaxed);
}

void Session::add_memory(uint64_t memory_handle, SharedMemory mem) {
  if (!mem.driver_mapped && !mem.mapping)
    mem.mapping = std::shared_ptr<void>(mem.ptr, [size = mem.size](void* p) { munmap(p, size); });
  stats_.memory_bytes.fetch_add(mem.size, std::memory_order_relaxed);
  memory_[memory_handle] = std::move(mem);
}

int Session::take_guest_fd(uint64_t tag) {
  // Fds another thread of the guest sent for later records wait here; a guest cannot make
  // the host hold more than a few.
  constexpr size_t kMaxPendingFds = 32;
  constexpr auto kFdWait = std::chrono::seconds(2);
  while (true) {
    if (auto it = guest_fds_.find(tag); it != guest_fds_.end()) {
      const int fd = it->second;
      guest_fds_.erase(it);
      return fd;
    }
    if (guest_fds_.size() >= kMaxPendingFds) return -1;
    uint64_t got = 0;
    std::vector<int> fds;
    if (channel_.recv_fds(got, fds, transport::deadline_after(kFdWait)) != transport::Status::kOk || fds.size() != 1) {
      for (int fd : fds) close(fd);
      return -1;
    }
    guest_fds_.emplace(got, fds[0]);
  }
}

void Session::release_memory(uint64_t memory_handle) {
  auto it = memory_.find(memory_handle);
  if (it == memory_.end()) return;
  // The driver's own mappings end with vkFreeMemory; ours when the last reader lets go.
  for (const auto& name : it->second.present_names) Presentation::get().release(name);
  if (it->second.fd >= 0) close(it->second.fd);
  stats_.memory_bytes.fetch_sub(it->second.size, std::memory_order_relaxed);
  memory_.erase(it);
}

// ---------------------------------------------------------------- teardown
namespace {

template <class H>
H as(uint64_t bits) {
  return wire::handle_from_bits<H>(bits);
}

}  // namespace

void Session::destroy_object(const ObjectEntry& e) {
  // vkDestroyX / vkFreeX of the object's type (codegen/gen_lifetime.py); other types are
  // destroyed with their owner.
  (void)wire::destroy_device_child(dispatch_of(e.owner), as<VkDevice>(e.owner), e.type, e.handle);
}

void Session::destroy_device(uint64_t device) {
  const wire::Dispatch& d = dispatch_of(device);
  // vkDeviceWaitIdle takes every queue of the device, externally synchronized: no waiter uses
  // one now (destroy_ok refused a destroy of the device, its physical device or its instance
  // while a pending call used any of them, and teardown joined the waiters first).
  if (d.vkDeviceWaitIdle) d.vkDeviceWaitIdle(as<VkDevice>(device));
  run_retired(device);
  drop_tracking(device);
  {
    std::lock_guard lock(queue_mu_);
    std::erase_if(abandoned_fences_, [&](const std::pair<uint64_t, VkFence>& f) {
      if (f.first != device) return false;
      if (d.vkDestroyFence) d.vkDestroyFence(as<VkDevice>(device), f.second, nullptr);
      return true;
    });
  }
  const std::vector<ObjectEntry> all = objects_.entries();
  for (size_t i = 0; i < wire::kTeardownOrderCount; ++i)
    for (const ObjectEntry& e : all)
      if (e.type == wire::kTeardownOrder[i] && e.owner == device) destroy_object(e);
  if (d.vkDestroyDevice) d.vkDestroyDevice(as<VkDevice>(device), nullptr);
}

void Session::teardown() {
  closing_.store(true, std::memory_order_release);
  {
    std::lock_guard lock(jobs_mu_);
    jobs_cv_.notify_all();
  }
  for (auto& t : waiters_)
    if (t.joinable()) t.join();
  waiters_.clear();
  stop_feedback();

  std::vector<ObjectEntry> all = objects_.entries();
  // Devices first (with their children), then instances.
  for (const ObjectEntry& dev : all)
    if (dev.type == VK_OBJECT_TYPE_DEVICE) destroy_device(dev.handle);
  for (const ObjectEntry& inst : all) {
    if (inst.type != VK_OBJECT_TYPE_INSTANCE) continue;
    const wire::Dispatch& d = dispatch_of(inst.handle);
    if (d.vkDestroyInstance) d.vkDestroyInstance(as<VkInstance>(inst.handle), nullptr);
  }
  Presentation::get().end(present_domain_);
  for (auto& [handle, mem] : memory_) {
    for (const auto& name : mem.present_names) Presentation::get().release(name);
    if (mem.fd >= 0) close(mem.fd);
  }
  memory_.clear();  // our mappings go with their last holder; the driver's went with its device
  for (auto& [tag, fd] : guest_fds_) close(fd);
  guest_fds_.clear();
  objects_ = ObjectTable();
  resources_.clear();
  {
    std::lock_guard dlock(dispatch_mu_);
    dispatch_.clear();
    dispatch_cache_ = {};
  }
  {
    std::lock_guard qlock(queue_mu_);
    queue_device_.clear();
  }
  stats_.objects.store(0, std::memory_order_relaxed);
  stats_.memory_bytes.store(0, std::memory_order_relaxed);
}

}  // namespace bypass::host
