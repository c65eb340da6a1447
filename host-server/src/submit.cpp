// Submissions and the work they leave in flight.
//
// A guest may free memory, or destroy a buffer, image or pool, while the GPU still uses it.
// That is invalid usage, but a hostile or buggy guest can do it, and on the host it would be
// a use-after-free in the driver (shared memory is even unmapped on free). So after every
// guest submission the host queues an empty submission of its own with a host fence; before
// a destroy or free it waits until those fences signal. A correct guest has already waited
// for its own work, so the check finds them signalled and costs a status query.
//
// Threads: all of this runs on the session thread. The submissions here (the guest's and the
// tracking one) run with queue_mu_ held: process_batch takes it for every vkQueue* record, since
// a waiter's wait_idle (sync.cpp) submits to the same queues.
#include <vector>

#include "bypass/host/session.h"

namespace bypass::host {

namespace {

Session& session(wire::HostContext& c) { return static_cast<Session&>(c); }

}  // namespace

void handle_vkQueueSubmit(wire::HostContext& c, wire::Args_vkQueueSubmit& a) {
  wire::default_vkQueueSubmit(c, a);
  if (a.result == VK_SUCCESS) session(c).track_submission(a.queue);
}

void handle_vkQueueSubmit2(wire::HostContext& c, wire::Args_vkQueueSubmit2& a) {
  wire::default_vkQueueSubmit2(c, a);
  if (a.result == VK_SUCCESS) session(c).track_submission(a.queue);
}

void Session::track_submission(VkQueue queue) {
  const uint64_t q = wire::handle_bits(queue);
  const ObjectEntry* qe = objects_.entry_of_handle(q);
  if (!qe) return;
  auto dev = wire::handle_from_bits<VkDevice>(qe->owner);
  const wire::Dispatch& d = dispatch_of(qe->owner);
  VkFence fence = VK_NULL_HANDLE;
  auto& track = in_flight_[qe->owner];
  // Reuse the oldest tracking fence once it has signalled; a long queue of them means the
  // guest runs far ahead, which costs one fence each.
  if (!track.fences.empty() && d.vkGetFenceStatus(dev, track.fences.front()) == VK_SUCCESS) {
    fence = track.fences.front();
    track.fences.pop_front();
    d.vkResetFences(dev, 1, &fence);
  } else {
    VkFenceCreateInfo info{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if (d.vkCreateFence(dev, &info, nullptr, &fence) != VK_SUCCESS) {
      track.incomplete = true;
      return;
    }
  }
  VkSubmitInfo empty{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  if (d.vkQueueSubmit(queue, 1, &empty, fence) != VK_SUCCESS) {
    d.vkDestroyFence(dev, fence, nullptr);
    track.incomplete = true;
    return;
  }
  track.fences.push_back(fence);
}

VkResult Session::wait_tracked(uint64_t device, uint64_t timeout_ns) {
  auto it = in_flight_.find(device);
  if (it == in_flight_.end()) return VK_SUCCESS;  // nothing submitted on this device
  InFlight& track = it->second;
  if (track.incomplete) return VK_INCOMPLETE;
  if (track.fences.empty()) return VK_SUCCESS;
  const wire::Dispatch& d = dispatch_of(device);
  // Tracking fences signal in submission order per queue, not across queues: wait for all.
  std::vector<VkFence> fences(track.fences.begin(), track.fences.end());
  return d.vkWaitForFences(wire::handle_from_bits<VkDevice>(device), static_cast<uint32_t>(fences.size()),
                           fences.data(), VK_TRUE, timeout_ns);
}

void Session::quiesce() {
  for (auto& [device, track] : in_flight_) {
    if (track.fences.empty()) continue;
    auto dev = wire::handle_from_bits<VkDevice>(device);
    const wire::Dispatch& d = dispatch_of(device);
    std::vector<VkFence> fences(track.fences.begin(), track.fences.end());
    // Bounded so a device that never finishes cannot hold the session forever.
    d.vkWaitForFences(dev, static_cast<uint32_t>(fences.size()), fences.data(), VK_TRUE, 10'000'000'000ull);
  }
}

void Session::drop_tracking(uint64_t device) {
  auto it = in_flight_.find(device);
  if (it == in_flight_.end()) return;
  const wire::Dispatch& d = dispatch_of(device);
  auto dev = wire::handle_from_bits<VkDevice>(device);
  if (d.vkDestroyFence)
    for (VkFence f : it->second.fences) d.vkDestroyFence(dev, f, nullptr);
  in_flight_.erase(it);
}

}  // namespace bypass::host
