// Completion feedback: what bypassd learns of the guest's submissions, published in the session
// region (transport::layout::Feedback) so the guest answers vkGetFenceStatus, vkWaitForFences and
// timeline waits on finished work without a round trip, and a guest waiting for unfinished work
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
// Who learns of a completion publishes it: the session thread, after a batch with submissions
// when no other input waits, waits up to 200 us for the newest tracking fence (settle_feedback:
// a small job is done by then, and the guest is woken with no other thread involved); what is
// still in flight after that is the feedback thread's.
//
// Threads (docs/host-threads.md): the feedback thread runs feedback_main; the session thread
// runs settle_feedback; both publish (collect, publish) under feedback_mu_, which guards the
// queues of fences in flight and published_. The feedback thread waits on a fence without the
// lock, in slices, with busy_device_/busy_fence_ saying where it is, so drop_tracking (a device
// going away) waits for it to come out and the session thread does not reuse that fence yet. It
// never resets or destroys a fence and never touches a queue: fences seen signalled go to
// free_fences_ for the session thread to reuse.
#include <sched.h>
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
// The session thread's own wait for the work it just submitted (settle_feedback).
constexpr uint64_t kSettleNs = 200'000;
constexpr std::chrono::microseconds kSettleLookout{10};

}  // namespace

void Session::feedback_main() {
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
    busy_fence_ = fence;
    lock.unlock();
    // dispatch_mu_ is taken alone (docs/host-threads.md); the device cannot go meanwhile
    // (busy_device_ holds drop_tracking off).
    std::shared_ptr<wire::Dispatch> d = dispatch_ptr(device);
    if (!d || !d->vkWaitForFences || !d->vkGetFenceStatus) {
      lock.lock();
      busy_device_ = 0;
      busy_fence_ = VK_NULL_HANDLE;
      feedback_cv_.notify_all();
      break;
    }
    const VkResult r = d->vkWaitForFences(wire::handle_from_bits<VkDevice>(device), 1, &fence, VK_TRUE,
                                          busy.size() > 1 ? kFeedbackTurnNs : kFeedbackSliceNs);
    lock.lock();
    busy_device_ = 0;
    busy_fence_ = VK_NULL_HANDLE;
    feedback_cv_.notify_all();  // drop_tracking may wait for this device
    if (r == VK_TIMEOUT) continue;
    if (r != VK_SUCCESS) {
      spdlog::debug("session {}: completion feedback stops: the tracking fence wait failed ({})", id_,
                    static_cast<int>(r));
      break;
    }
    collect(tq, *d);
  }
  const bool stopping = feedback_stop_;
  lock.unlock();
  // Left the loop for a reason other than the session's end: the guest can no longer count on
  // the slots and asks the host from now on.
  if (!stopping) feedback_unreliable();
}

void Session::collect(TrackedQueue& tq, const wire::Dispatch& d) {
  // Signalled fences leave the queue oldest first; the first one still unsignalled ends it (a
  // queue's fences signal in order).
  std::vector<uint64_t> done;
  auto dev = wire::handle_from_bits<VkDevice>(tq.device);
  std::vector<VkFence>& spare = free_fences_[tq.device];
  while (!tq.pending.empty()) {
    const Tracked t = tq.pending.front();
    if (d.vkGetFenceStatus(dev, t.fence) != VK_SUCCESS) break;
    tq.pending.pop_front();
    done.push_back(t.serial);
    spare.push_back(t.fence);
  }
  publish(done);
}

void Session::settle_feedback() {
  if (!feedback_kick_) return;
  feedback_kick_ = false;
  // The session thread learns of a completion itself while a guest thread waits for one and no
  // other input waits: one driver wait of at most kSettleNs on the oldest tracking fence (the same bound, and for the
  // same reason, as the blocking calls' inline wait in sync.cpp). A guest waiting on the feedback block is then woken
  // by this thread, as a reply would have; no hand-off to the feedback thread, which costs one more wake-up per
  // submission. Only for a guest that waits on the block now (`sleepers`, a hint: a guest that lies about it makes only
  // its own session's thread wait). A guest that submitted and goes on to wait gets here a microsecond or two after us:
  // look for it that long, unless input comes first, yielding the CPU meanwhile (the guest may be waiting for this
  // very CPU: spinning here kept it from announcing itself and sent one submission in six to the feedback thread).
  bool waiter = false;
  if (last_tracked_.fence != VK_NULL_HANDLE && feedback_ && !closing()) {
    const auto until = std::chrono::steady_clock::now() + kSettleLookout;
    while (!(waiter = feedback_->sleepers.load(std::memory_order_seq_cst) != 0) && !input_waiting() &&
           std::chrono::steady_clock::now() < until) {
      sched_yield();
    }
  }
  if (waiter && !input_waiting()) {
    // The oldest submission in flight on that queue: what a guest with frames in flight waits
    // for (for one in flight, the one just made). Only this thread resets or destroys it.
    VkFence oldest = last_tracked_.fence;
    size_t in_flight = 1;
    {
      std::lock_guard lock(feedback_mu_);
      if (auto it = tracked_.find(last_tracked_.queue); it != tracked_.end() && !it->second.pending.empty()) {
        oldest = it->second.pending.front().fence;
        in_flight = it->second.pending.size();
      }
    }
    // Only when that is all the queue has in flight (a submit-and-wait loop): with frames in
    // flight the oldest is a whole frame of rasterization away, and waiting for it here only
    // keeps the session thread from the next frame's commands.
    const wire::Dispatch& d = dispatch_of(last_tracked_.device);
    const VkResult r =
        in_flight > 1 || !d.vkWaitForFences || !d.vkGetFenceStatus
            ? VK_TIMEOUT
            : d.vkWaitForFences(wire::handle_from_bits<VkDevice>(last_tracked_.device), 1, &oldest, VK_TRUE, kSettleNs);
    if (r == VK_SUCCESS) {
      std::lock_guard lock(feedback_mu_);
      if (auto it = tracked_.find(last_tracked_.queue); it != tracked_.end()) collect(it->second, d);
    }
  }
  last_tracked_ = {};
  bool left = false;
  {
    std::lock_guard lock(feedback_mu_);
    for (const auto& [queue, tq] : tracked_) left = left || !tq.pending.empty();
    // Started at the first submission that outlives the session thread's wait: a session whose
    // work is always done by then pays no thread.
    if (left && !feedback_thread_.joinable() && !feedback_stop_)
      feedback_thread_ = std::thread([this] { feedback_main(); });
  }
  if (left) feedback_cv_.notify_one();
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
    published_highest_ = std::max(published_highest_, s);
  }
  // After the slots: a guest that reads this value sees every slot up to it.
  feedback_->highest.store(published_highest_, std::memory_order_release);
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
