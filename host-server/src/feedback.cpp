// Completion feedback: what bypassd learns of the guest's submissions, published in the session
// region (transport::layout::Feedback) so the guest answers vkGetFenceStatus and
// vkWaitForFences on finished work without a round trip, and a guest waiting for unfinished work
// sleeps on a word the host bumps, not on a reply.
//
// Every guest submission gets a serial (the guest numbers its vkQueueSubmit records as it
// appends them, the host counts them as it runs them: submit.cpp) and a tracking fence behind
// it on the same queue. The feedback thread waits for each queue's tracking fences, oldest
// first; once one signals, every submission on that queue up to it is done, and it stores each
// serial s into done[s % kFeedbackSlots] (never lowering a slot, from its own copy: it never
// reads back what the guest could have written), bumps `seq` and wakes the guest only when a
// guest thread announced that it sleeps. A submission that could not be tracked, or the session's
// end, sets `stopped`: the guest then asks the host, as it does for anything it cannot be sure of.
// The guest decides what a serial means for a fence (guest-icd/src/sync.cpp); nothing the guest
// writes here is read by the host but `sleepers`, a hint that only decides a wake-up.
//
// Threads (docs/host-threads.md): the feedback thread runs feedback_main and publish; the queues
// of fences in flight are shared with the session thread under feedback_mu_. It waits on a
// fence without the lock, in slices, with busy_device_ saying which device it is in, so
// drop_tracking (a device going away) waits for it to come out. It never resets or destroys a
// fence and never touches a queue: fences it saw signalled go to free_fences_ for the session
// thread to reuse.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <vector>

#include "bypass/host/session.h"

namespace bypass::host {

namespace {

// The longest wait on one fence before the loop looks again for a stop request; and, when
// several queues have work in flight, before it turns to the next queue.
constexpr uint64_t kFeedbackSliceNs = 50'000'000;
constexpr uint64_t kFeedbackTurnNs = 1'000'000;

}  // namespace

void Session::feedback_main() {
  std::vector<uint64_t> done;
  std::unique_lock lock(feedback_mu_);
  size_t turn = 0;  // which queue with work in flight gets the next wait
  while (!feedback_stop_) {
    std::vector<TrackedQueue*> busy;
    for (auto& [queue, tq] : tracked_)
      if (!tq.pending.empty()) busy.push_back(&tq);
    if (busy.empty()) {
      feedback_cv_.wait(lock);
      continue;
    }
    TrackedQueue& tq = *busy[turn++ % busy.size()];
    const uint64_t device = tq.device;
    const VkFence fence = tq.pending.front().fence;
    busy_device_ = device;
    lock.unlock();
    // dispatch_mu_ is taken alone (docs/host-threads.md); the device cannot go meanwhile
    // (busy_device_ holds drop_tracking off).
    std::shared_ptr<wire::Dispatch> d = dispatch_ptr(device);
    if (!d || !d->vkWaitForFences || !d->vkGetFenceStatus) {
      lock.lock();
      busy_device_ = 0;
      feedback_cv_.notify_all();
      break;
    }
    const VkResult r = d->vkWaitForFences(wire::handle_from_bits<VkDevice>(device), 1, &fence, VK_TRUE,
                                          busy.size() > 1 ? kFeedbackTurnNs : kFeedbackSliceNs);
    lock.lock();
    busy_device_ = 0;
    feedback_cv_.notify_all();  // drop_tracking may wait for this device
    if (r == VK_TIMEOUT) continue;
    if (r != VK_SUCCESS) {
      spdlog::debug("session {}: completion feedback stops: the tracking fence wait failed ({})", id_,
                    static_cast<int>(r));
      break;
    }
    // The queue may have been dropped (its device destroyed) while we waited without the lock;
    // then `tq` is gone and so are its fences.
    bool still_there = false;
    for (auto& [queue, other] : tracked_)
      if (&other == &tq) still_there = true;
    if (!still_there) continue;
    // Signalled: it and everything before it on the queue. The ones after it that have already
    // signalled too go in the same publication.
    done.clear();
    auto dev = wire::handle_from_bits<VkDevice>(device);
    std::vector<VkFence>& spare = free_fences_[device];
    while (!tq.pending.empty()) {
      const Tracked t = tq.pending.front();
      if (t.fence != fence && d->vkGetFenceStatus(dev, t.fence) != VK_SUCCESS) break;
      tq.pending.pop_front();
      done.push_back(t.serial);
      spare.push_back(t.fence);
    }
    publish(done);
  }
  const bool stopping = feedback_stop_;
  lock.unlock();
  // Left the loop for a reason other than the session's end: the guest can no longer count on
  // the slots and asks the host from now on.
  if (!stopping) feedback_unreliable();
}

void Session::publish(const std::vector<uint64_t>& serials) {
  if (!feedback_ || serials.empty()) return;
  namespace layout = transport::layout;
  for (uint64_t s : serials) {
    uint64_t& mine = published_[s % layout::kFeedbackSlots];
    if (s <= mine) continue;  // a later submission of this slot finished first (another queue)
    mine = s;
    // Release: the guest's acquire load of the slot sees everything before it.
    feedback_->done[s % layout::kFeedbackSlots].store(s, std::memory_order_release);
  }
  // seq_cst on both: the bump is ordered before our load of `sleepers`, and the guest's
  // increment of `sleepers` before its re-check of the slots (a Dekker pair), so either it sees
  // the slot or we see it asleep.
  feedback_->seq.fetch_add(1, std::memory_order_seq_cst);
  if (feedback_->sleepers.load(std::memory_order_seq_cst) != 0) channel_.wake_feedback();
}

void Session::feedback_unreliable() {
  if (!feedback_) return;
  feedback_->stopped.store(1, std::memory_order_release);
  feedback_->seq.fetch_add(1, std::memory_order_seq_cst);
  if (feedback_->sleepers.load(std::memory_order_seq_cst) != 0) channel_.wake_feedback();
}

void Session::stop_feedback() {
  {
    std::lock_guard lock(feedback_mu_);
    feedback_stop_ = true;
  }
  feedback_cv_.notify_all();
  if (feedback_thread_.joinable()) feedback_thread_.join();
  // Nothing is published after this: a guest still waiting asks the host (and learns it is gone).
  feedback_unreliable();
}

}  // namespace bypass::host
