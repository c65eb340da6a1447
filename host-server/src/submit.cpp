// Submissions and the work they leave in flight.
//
// A guest may free memory, or destroy a buffer, image or pool, while the GPU still uses it.
// That is invalid usage, but a hostile or buggy guest can do it, and on the host it would be
// a use-after-free in the driver (shared memory is even unmapped on free). So after every
// guest submission the host queues an empty submission of its own with a host fence. Not the
// guest's submission itself carrying that fence when it has none: lavapipe signals a
// submission's fence before its semaphores, so the feedback below would tell the guest a
// submission is done before the timeline values it signals are reached (icd_timeline-waits
// caught a wait returning with the counter still below its value).
//
// A destroy of one child of a device (vkDestroyBuffer, vkFreeMemory, vkDestroyRenderPass...:
// command_may_defer_destroy) made while that device has work in flight retires the object:
// it leaves the session's table at once (the guest can no longer name it) and the driver
// destroys it once every submission made before the destroy is done (run_retired, at the
// next batch). Correct programs destroy in flight too, objects of earlier frames that the
// frames in flight do not use; waiting for the GPU there, as a native driver never does,
// made each such destroy a full stall. The retired list is bounded (kMaxRetired objects, and
// host-visible memory within --max-memory: make_room); past that a destroy waits as the
// others do. Other destroys and frees (vkFreeCommandBuffers and vkFreeDescriptorSets return
// to a pool the guest may allocate from next; devices, instances) wait for the tracking
// fences first (quiesce).
//
// The same tracking fences tell the guest when its work is done: the feedback thread
// (feedback.cpp) waits for them and publishes each submission's serial in the session region.
//
// Threads: all of this runs on the session thread. The submissions here (the guest's and the
// tracking one) run with queue_mu_ held: process_batch takes it for every vkQueue* record, since
// a waiter's wait_idle (sync.cpp) submits to the same queues. The fences in flight are shared
// with the feedback thread under feedback_mu_; only this thread resets, reuses or destroys one.
#include <algorithm>
#include <unordered_map>
#include <vector>

#include "bypass/host/config.h"
#include "bypass/host/session.h"

namespace bypass::host {

namespace {

Session& session(wire::HostContext& c) { return static_cast<Session&>(c); }

}  // namespace

void handle_vkQueueSubmit(wire::HostContext& c, wire::Args_vkQueueSubmit& a) {
  // Counted before the driver sees it: the guest numbered the record when it appended it.
  const uint64_t serial = session(c).next_submission_serial();
  wire::default_vkQueueSubmit(c, a);
  if (a.result == VK_SUCCESS) {
    session(c).track_submission(a.queue, serial);
  } else {
    session(c).feedback_unreliable();  // this serial will never be published
  }
}

void handle_vkQueueSubmit2(wire::HostContext& c, wire::Args_vkQueueSubmit2& a) {
  const uint64_t serial = session(c).next_submission_serial();
  wire::default_vkQueueSubmit2(c, a);
  if (a.result == VK_SUCCESS) {
    session(c).track_submission(a.queue, serial);
  } else {
    session(c).feedback_unreliable();
  }
}

void Session::track_submission(VkQueue queue, uint64_t serial) {
  const uint64_t q = wire::handle_bits(queue);
  const ObjectEntry* qe = objects_.entry_of_handle(q);
  if (!qe) {
    feedback_unreliable();
    return;
  }
  const uint64_t device = qe->owner;
  auto dev = wire::handle_from_bits<VkDevice>(device);
  const wire::Dispatch& d = dispatch_of(device);
  VkFence fence = VK_NULL_HANDLE;
  {
    // A fence the feedback thread saw signalled and let go; a long queue of new ones means the
    // guest runs far ahead, which costs one fence each.
    std::lock_guard lock(feedback_mu_);
    auto it = free_fences_.find(device);
    // Not the one the feedback thread may still be waiting on: nobody resets a fence in use.
    if (it != free_fences_.end() && !it->second.empty()) {
      auto& spare = it->second;
      for (size_t i = spare.size(); i-- > 0;) {
        if (spare[i] == busy_fence_) continue;
        fence = spare[i];
        spare.erase(spare.begin() + static_cast<std::ptrdiff_t>(i));
        break;
      }
    }
  }
  if (fence != VK_NULL_HANDLE) {
    d.vkResetFences(dev, 1, &fence);
  } else {
    VkFenceCreateInfo info{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if (d.vkCreateFence(dev, &info, nullptr, &fence) != VK_SUCCESS) {
      untracked_devices_.insert(device);
      feedback_unreliable();
      return;
    }
  }
  VkSubmitInfo empty{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  if (d.vkQueueSubmit(queue, 1, &empty, fence) != VK_SUCCESS) {
    d.vkDestroyFence(dev, fence, nullptr);
    untracked_devices_.insert(device);
    feedback_unreliable();
    return;
  }
  {
    std::lock_guard lock(feedback_mu_);
    TrackedQueue& tq = tracked_[q];
    tq.device = device;
    tq.pending.push_back(Tracked{fence, serial});
  }
  // Published by the session thread after this batch, or handed to the feedback thread
  // (settle_feedback, feedback.cpp).
  last_tracked_ = LastTracked{q, device, fence};
  feedback_kick_ = true;
}

// The session thread's own waits on tracking fences (idle waits, quiesce): the fences it copies
// under feedback_mu_ stay valid without it, since only this thread resets or destroys them.
VkResult Session::wait_tracked(uint64_t device, uint64_t timeout_ns) {
  if (untracked_devices_.count(device)) return VK_INCOMPLETE;
  std::vector<VkFence> fences;
  {
    std::lock_guard lock(feedback_mu_);
    for (const auto& [queue, tq] : tracked_)
      if (tq.device == device)
        for (const Tracked& t : tq.pending) fences.push_back(t.fence);
  }
  if (fences.empty()) return VK_SUCCESS;  // nothing in flight on this device
  const wire::Dispatch& d = dispatch_of(device);
  // Tracking fences signal in submission order per queue, not across queues: wait for all.
  return d.vkWaitForFences(wire::handle_from_bits<VkDevice>(device), static_cast<uint32_t>(fences.size()),
                           fences.data(), VK_TRUE, timeout_ns);
}

bool Session::quiesce() {
  std::unordered_map<uint64_t, std::vector<VkFence>> by_device;
  {
    std::lock_guard lock(feedback_mu_);
    for (const auto& [queue, tq] : tracked_)
      for (const Tracked& t : tq.pending) by_device[tq.device].push_back(t.fence);
  }
  bool done = true;
  for (auto& [device, fences] : by_device) {
    const wire::Dispatch& d = dispatch_of(device);
    // Bounded so a device that never finishes cannot hold the session forever.
    done &= d.vkWaitForFences(wire::handle_from_bits<VkDevice>(device), static_cast<uint32_t>(fences.size()),
                              fences.data(), VK_TRUE, 10'000'000'000ull) == VK_SUCCESS;
  }
  return done;
}

void Session::drain_retired() {
  // The fences just waited for may still be in tracked_ (the feedback thread collects them in
  // its own time): run_retired would take their work for running.
  run_retired(quiesce() ? kAllDevices : 0);
}

bool Session::defer_destroy(uint64_t device, VkObjectType type, uint64_t handle) {
  // A device whose submissions went untracked: nothing tells when its work is done.
  if (untracked_devices_.count(device)) {
    quiesce();
    return false;
  }
  bool in_flight = false;
  {
    std::lock_guard lock(feedback_mu_);
    for (const auto& [queue, tq] : tracked_) in_flight |= tq.device == device && !tq.pending.empty();
  }
  if (!in_flight) {
    run_retired();  // this device's go first: the guest destroyed them before this one
    return false;
  }
  if (retired_.size() >= kMaxRetired) {
    drain_retired();
    return false;
  }
  Retired r{device, type, handle, submit_serial_, 0, nullptr};
  if (type == VK_OBJECT_TYPE_DEVICE_MEMORY) {
    if (auto it = memory_.find(handle); it != memory_.end()) {
      r.bytes = it->second.size;
      r.mapping = it->second.mapping;
    }
  }
  // Still held, so still counted (bypassctl's figure, --max-memory) until the driver frees it;
  // remove_object takes the memory off the count next.
  stats_.memory_bytes.fetch_add(r.bytes, std::memory_order_relaxed);
  retired_.push_back(std::move(r));
  return true;
}

void Session::run_retired(uint64_t idle_device) {
  if (retired_.empty()) return;
  std::unordered_map<uint64_t, uint64_t> oldest;  // device -> oldest guest submission in flight
  {
    std::lock_guard lock(feedback_mu_);
    for (const auto& [queue, tq] : tracked_) {
      if (tq.pending.empty()) continue;
      auto [it, fresh] = oldest.try_emplace(tq.device, tq.pending.front().serial);
      if (!fresh) it->second = std::min(it->second, tq.pending.front().serial);
    }
  }
  // In the guest's order: a buffer before the memory it was bound to.
  for (auto it = retired_.begin(); it != retired_.end();) {
    const auto busy = oldest.find(it->device);
    if (idle_device != kAllDevices && it->device != idle_device && busy != oldest.end() && busy->second <= it->serial) {
      ++it;
      continue;
    }
    (void)wire::destroy_device_child(dispatch_of(it->device), wire::handle_from_bits<VkDevice>(it->device), it->type,
                                     it->handle);
    stats_.memory_bytes.fetch_sub(it->bytes, std::memory_order_relaxed);
    it = retired_.erase(it);
  }
}

void Session::make_room(uint64_t bytes) {
  // Nothing to wait for when it fits, or when no freeing could make it fit.
  const uint64_t limit = config_.max_memory_bytes;
  if (bytes > limit || stats_.memory_bytes.load() + bytes <= limit) return;
  if (std::none_of(retired_.begin(), retired_.end(), [](const Retired& r) { return r.bytes != 0; })) return;
  drain_retired();
}

void Session::drop_tracking(uint64_t device) {
  std::vector<VkFence> fences;
  {
    std::unique_lock lock(feedback_mu_);
    // The feedback thread may be in a wait on one of them: let it come out (its waits are short
    // slices, and the device is idle by now).
    feedback_cv_.wait(lock, [&] { return busy_device_ != device; });
    std::erase_if(tracked_, [&](auto& entry) {
      if (entry.second.device != device) return false;
      for (const Tracked& t : entry.second.pending) fences.push_back(t.fence);
      return true;
    });
    if (auto it = free_fences_.find(device); it != free_fences_.end()) {
      fences.insert(fences.end(), it->second.begin(), it->second.end());
      free_fences_.erase(it);
    }
  }
  untracked_devices_.erase(device);
  if (last_tracked_.device == device) last_tracked_ = {};  // a batch may submit, then destroy
  const wire::Dispatch& d = dispatch_of(device);
  auto dev = wire::handle_from_bits<VkDevice>(device);
  if (d.vkDestroyFence)
    for (VkFence f : fences) d.vkDestroyFence(dev, f, nullptr);
}

}  // namespace bypass::host
