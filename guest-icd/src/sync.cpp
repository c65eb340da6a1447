// Fences answered from bypassd's completion feedback (transport::layout::Feedback, published by
// host-server/src/feedback.cpp).
//
// Every vkQueueSubmit/vkQueueSubmit2 record gets a serial as it is appended (Connection), the
// same number bypassd gives it as it runs it; a fence submitted with it rides on that serial
// (FenceTracker). bypassd stores a submission's serial in done[serial % kFeedbackSlots] once a
// fence of its own, submitted behind it on the same queue, has signalled, so all of the
// submission's work is finished. Then:
//   vkGetFenceStatus   a fence whose serial is published is signalled: no round trip;
//   vkWaitForFences    the same for every fence (or one, waitAll false); otherwise the guest
//                      polls the block, then sleeps on its word until bypassd publishes, and
//                      asks bypassd at the deadline, so a timeout is the host's exact answer;
//   polls (timeout 0)  of a pending submission that nothing could have told this process of
//                      (not_done_here, Connection::may_know_done): "not yet", no round trip;
//   vkWaitSemaphores   values reached (initial, vkSignalSemaphore, finished submissions) at
//                      once; values pending submissions signal are waited for as those
//                      submissions' fences would be, until wait-before-signal is seen.
// Anything not certain goes to bypassd as before (the generated call): a fence never submitted,
// reset, created signalled, used by vkQueueBindSparse or signalled by other means; a slot holding
// a later serial (another queue finished first); and everything once bypassd set `stopped` (a
// submission it could not track, the session's end). A fence is never reported signalled
// before the submission it rides on is complete; it may be reported a little late, which the
// round trip then answers exactly.
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "bypass/icd/connection.h"
#include "bypass/icd/gen/entrypoints.h"
#include "bypass/wire/gen/commands.h"
#include "objects.h"

namespace bypass::icd {

namespace {

namespace layout = transport::layout;
using Clock = std::chrono::steady_clock;

enum class Known { kDone, kPending, kUnsure };

// What the feedback block says of submission `serial` (0: no submission known).
Known known(const layout::Feedback* f, uint64_t serial) {
  if (f == nullptr || serial == 0) return Known::kUnsure;
  // Acquire: pairs with bypassd's release store of the slot (feedback.cpp, publish).
  const uint64_t v = f->done[serial % layout::kFeedbackSlots].load(std::memory_order_acquire);
  if (v == serial) return Known::kDone;
  if (v > serial || f->stopped.load(std::memory_order_acquire) != 0) return Known::kUnsure;
  return Known::kPending;
}

// Whether submission `serial` is surely not done as far as this process can tell: pending by
// the block, nothing at or after it published on any queue (a later submission that waited for
// it through a semaphore would say it is done), and nothing else told of it
// (Connection::may_know_done). A zero-timeout poll then answers "not yet" without a round trip.
bool not_done_here(Connection* conn, const layout::Feedback* f, uint64_t serial) {
  // The slot first, then `highest`: bypassd stores them in the other order, so a completion
  // published between the two loads shows in `highest`.
  return known(f, serial) == Known::kPending && serial > f->highest.load(std::memory_order_acquire) &&
         !conn->may_know_done(serial);
}

// All (waitAll) or any of the serials: kDone, kPending (worth waiting for), or kUnsure.
Known known_all(const layout::Feedback* f, const std::vector<uint64_t>& serials, bool all) {
  bool unsure = false, pending = false;
  for (uint64_t s : serials) {
    const Known k = known(f, s);
    if (k == Known::kDone && !all) return Known::kDone;
    if (k == Known::kUnsure) unsure = true;
    if (k == Known::kPending) pending = true;
  }
  if (all) return unsure ? Known::kUnsure : pending ? Known::kPending : Known::kDone;
  return unsure ? Known::kUnsure : Known::kPending;
}

// How long a waiting thread polls before it sleeps, per thread and adaptive: a wait that ended
// in the second half of the poll, or a sleep no longer than kMax (a poll that long would have
// seen the end), doubles it; a longer sleep halves it. The poll yields the CPU rather than spinning on it: on a
// two-core machine the driver's threads that finish the job may need this very CPU, and a CPU that stays busy avoids
// the wake-up of an idle one, which costs 20-30 us on a VM (a small job's whole wait here is
// 40-80 us). A program whose waits are long (frames in flight) brings it down to kMin within a
// few frames, so it costs them next to nothing.
struct PollBudget {
  static constexpr std::chrono::microseconds kMin{4}, kMax{400}, kStart{100};
  std::chrono::nanoseconds budget = kStart;
  void hit(Clock::duration polled) {
    if (polled >= budget / 2) budget = std::min<std::chrono::nanoseconds>(kMax, budget * 2);
  }
  void slept(Clock::duration d) {
    budget = d <= kMax ? std::min<std::chrono::nanoseconds>(kMax, budget * 2)
                       : std::max<std::chrono::nanoseconds>(kMin, budget / 2);
  }
};
thread_local PollBudget t_poll;

// bypassd answered a fence wait or status with VK_SUCCESS: the fences' submissions are done, and
// with them every signal operation before them on their queues (may_know_done). A fence not
// known to ride on a submission (vkQueueBindSparse, signalled otherwise) may stand for any.
VkResult learned(Connection* conn, const std::vector<uint64_t>& serials, VkResult r) {
  if (r != VK_SUCCESS) return r;
  const bool all_known = std::find(serials.begin(), serials.end(), uint64_t{0}) == serials.end();
  conn->learned_done(all_known ? *std::max_element(serials.begin(), serials.end()) : conn->last_submission());
  return r;
}

// A submission waits for `value` of `semaphore` (a binary semaphore's value is 0, or ignored).
// A wait for what no earlier submission signals makes the serials' order no longer the order of
// completion (a later submission, or the host, may signal it).
void note_wait(Connection* conn, VkSemaphore semaphore, uint64_t value) {
  if (value != 0 && !conn->timelines().submitted_before(wire::handle_bits(semaphore), value)) conn->saw_timeline_wait();
}

// The command buffers of a vkQueueSubmit / vkQueueSubmit2, in order: what the import tracker
// and the query mirrors look at. A per-thread list, valid until the thread's next submission.
const std::vector<CommandBuffer*>& command_buffers(uint32_t count, const VkSubmitInfo* submits) {
  thread_local std::vector<CommandBuffer*> cbs;
  cbs.clear();
  for (uint32_t i = 0; i < count; ++i)
    for (uint32_t j = 0; j < submits[i].commandBufferCount; ++j)
      cbs.push_back(as<CommandBuffer>(submits[i].pCommandBuffers[j]));
  return cbs;
}

const std::vector<CommandBuffer*>& command_buffers(uint32_t count, const VkSubmitInfo2* submits) {
  thread_local std::vector<CommandBuffer*> cbs;
  cbs.clear();
  for (uint32_t i = 0; i < count; ++i)
    for (uint32_t j = 0; j < submits[i].commandBufferInfoCount; ++j)
      cbs.push_back(as<CommandBuffer>(submits[i].pCommandBufferInfos[j].commandBuffer));
  return cbs;
}

bool reaches_imports(Connection* conn, const std::vector<CommandBuffer*>& cbs) {
  if (!conn->imports().active()) return false;
  std::vector<uint64_t> ids;
  for (const CommandBuffer* cb : cbs) ids.push_back(cb->id);
  return conn->imports().reaches(ids);
}

VkResult done(Connection* conn, VkDevice device) {
  if (MemoryHooks* hooks = conn->memory_hooks()) hooks->read_barrier(object_of(device));
  return VK_SUCCESS;
}

// Waits until the block publishes the submissions `serials` (all, or one), at most `timeout`
// ns: polls the block for a while, yielding the CPU (PollBudget: a small job is done within tens
// of microseconds, less than a sleep and wake-up cost here), then sleeps on its word until bypassd
// publishes or the deadline passes. `sleepers` counts this thread for the whole wait: bypassd
// wakes it and its session thread waits for the work it just ran on our behalf (feedback.cpp,
// settle_feedback). What is not certain goes to bypassd through `ask(timeout left)`: at the
// deadline (with 0, so VK_TIMEOUT is the host's exact answer) or once the block is unsure.
template <class Ask>
VkResult wait_published(Connection* conn, VkDevice device, const std::vector<uint64_t>& serials, bool all,
                        uint64_t timeout, Ask ask) {
  const layout::Feedback* f = conn->feedback();
  const Clock::time_point start = Clock::now();
  const bool forever = timeout > (uint64_t{1} << 62);  // past any steady_clock deadline
  const Clock::time_point deadline = forever ? Clock::time_point::max() : start + std::chrono::nanoseconds(timeout);
  auto* fw = const_cast<layout::Feedback*>(f);
  // seq_cst: announced before the checks below, so bypassd, which bumps `seq` before it reads
  // `sleepers`, either wakes us or we see its slot (feedback.cpp, publish).
  fw->sleepers.fetch_add(1, std::memory_order_seq_cst);
  bool polled = false;
  Known k;
  while (true) {
    const uint32_t seq = fw->seq.load(std::memory_order_seq_cst);
    k = known_all(f, serials, all);
    if (k != Known::kPending) break;
    const Clock::time_point now = Clock::now();
    if (now >= deadline) {
      fw->sleepers.fetch_sub(1, std::memory_order_relaxed);
      return ask(0);
    }
    if (!polled) {
      polled = true;
      const Clock::time_point poll_start = Clock::now();
      const Clock::time_point poll_end = std::min(deadline, poll_start + t_poll.budget);
      Clock::time_point t = poll_start;
      while (fw->seq.load(std::memory_order_acquire) == seq && (t = Clock::now()) < poll_end) sched_yield();
      if (fw->seq.load(std::memory_order_acquire) != seq) t_poll.hit(t - poll_start);
      continue;
    }
    const Clock::time_point slept_at = Clock::now();
    conn->sleep_feedback(seq, std::min<std::chrono::nanoseconds>(deadline - now, conn->liveness_slice()));
    t_poll.slept(Clock::now() - slept_at);
    if (fw->seq.load(std::memory_order_acquire) == seq && !conn->check_peer()) {
      fw->sleepers.fetch_sub(1, std::memory_order_relaxed);
      return VK_ERROR_DEVICE_LOST;
    }
  }
  fw->sleepers.fetch_sub(1, std::memory_order_relaxed);
  if (k == Known::kDone) return done(conn, device);
  // Not certain any more: bypassd waits what is left of the timeout.
  uint64_t left = timeout;
  if (!forever) {
    const auto spent = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
    left = timeout > static_cast<uint64_t>(spent) ? timeout - static_cast<uint64_t>(spent) : 0;
  }
  return ask(left);
}

const VkTimelineSemaphoreSubmitInfo* timeline_info(const VkSubmitInfo& submit) {
  for (auto* n = static_cast<const VkBaseInStructure*>(submit.pNext); n; n = n->pNext)
    if (n->sType == VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO)
      return reinterpret_cast<const VkTimelineSemaphoreSubmitInfo*>(n);
  return nullptr;
}

}  // namespace

ImportTracker::Seen seen_by_feedback(Connection* conn, uint64_t serial) {
  const layout::Feedback* f = conn->feedback();
  if (known(f, serial) == Known::kDone) return ImportTracker::Seen::kDone;
  return not_done_here(conn, f, serial) ? ImportTracker::Seen::kPending : ImportTracker::Seen::kMaybe;
}

// The values a submission waits for are noted before its record goes (a thread that sees it
// complete must find them noted); the timeline values it signals after, with its serial
// (binary semaphores' values are ignored, and no one may wait for them with vkWaitSemaphores).
VKAPI_ATTR VkResult VKAPI_CALL icd_vkQueueSubmit(VkQueue queue, uint32_t submitCount, const VkSubmitInfo* pSubmits,
                                                 VkFence fence) {
  Connection* conn = connection_of(queue);
  const std::vector<CommandBuffer*>& cbs = command_buffers(submitCount, pSubmits);
  const bool reach = reaches_imports(conn, cbs);
  if (MemoryHooks* hooks = conn->memory_hooks()) hooks->write_barrier(object_of(queue), reach);
  for (uint32_t i = 0; i < submitCount; ++i)
    if (const VkTimelineSemaphoreSubmitInfo* t = timeline_info(pSubmits[i]); t && t->pWaitSemaphoreValues)
      for (uint32_t j = 0; j < std::min(t->waitSemaphoreValueCount, pSubmits[i].waitSemaphoreCount); ++j)
        note_wait(conn, pSubmits[i].pWaitSemaphores[j], t->pWaitSemaphoreValues[j]);
  wire::Builder& b = thread_builder();
  wire::encode_vkQueueSubmit(b, conn->handles(), queue, submitCount, pSubmits, fence);
  const uint64_t serial = conn->send_submission(wire::kCmd_vkQueueSubmit, b);
  queries_submitted(as<Queue>(queue)->device, cbs, serial);
  if (reach) conn->imports().submitted(serial);
  if (fence != VK_NULL_HANDLE) conn->fences().submitted(wire::handle_bits(fence), serial);
  for (uint32_t i = 0; i < submitCount; ++i)
    if (const VkTimelineSemaphoreSubmitInfo* t = timeline_info(pSubmits[i]); t && t->pSignalSemaphoreValues)
      for (uint32_t j = 0; j < std::min(t->signalSemaphoreValueCount, pSubmits[i].signalSemaphoreCount); ++j)
        conn->timelines().signalled_by(wire::handle_bits(pSubmits[i].pSignalSemaphores[j]),
                                       t->pSignalSemaphoreValues[j], serial);
  return conn->alive() ? VK_SUCCESS : VK_ERROR_DEVICE_LOST;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkQueueSubmit2(VkQueue queue, uint32_t submitCount, const VkSubmitInfo2* pSubmits,
                                                  VkFence fence) {
  Connection* conn = connection_of(queue);
  const std::vector<CommandBuffer*>& cbs = command_buffers(submitCount, pSubmits);
  const bool reach = reaches_imports(conn, cbs);
  if (MemoryHooks* hooks = conn->memory_hooks()) hooks->write_barrier(object_of(queue), reach);
  for (uint32_t i = 0; i < submitCount; ++i)
    for (uint32_t j = 0; j < pSubmits[i].waitSemaphoreInfoCount; ++j)
      note_wait(conn, pSubmits[i].pWaitSemaphoreInfos[j].semaphore, pSubmits[i].pWaitSemaphoreInfos[j].value);
  wire::Builder& b = thread_builder();
  wire::encode_vkQueueSubmit2(b, conn->handles(), queue, submitCount, pSubmits, fence);
  const uint64_t serial = conn->send_submission(wire::kCmd_vkQueueSubmit2, b);
  queries_submitted(as<Queue>(queue)->device, cbs, serial);
  if (reach) conn->imports().submitted(serial);
  if (fence != VK_NULL_HANDLE) conn->fences().submitted(wire::handle_bits(fence), serial);
  for (uint32_t i = 0; i < submitCount; ++i)
    for (uint32_t j = 0; j < pSubmits[i].signalSemaphoreInfoCount; ++j)
      conn->timelines().signalled_by(wire::handle_bits(pSubmits[i].pSignalSemaphoreInfos[j].semaphore),
                                     pSubmits[i].pSignalSemaphoreInfos[j].value, serial);
  return conn->alive() ? VK_SUCCESS : VK_ERROR_DEVICE_LOST;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkResetFences(VkDevice device, uint32_t fenceCount, const VkFence* pFences) {
  Connection* conn = connection_of(device);
  for (uint32_t i = 0; i < fenceCount; ++i) conn->fences().forget(wire::handle_bits(pFences[i]));
  return forward_vkResetFences(device, fenceCount, pFences);
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroyFence(VkDevice device, VkFence fence, const VkAllocationCallbacks* pAllocator) {
  if (fence != VK_NULL_HANDLE) connection_of(device)->fences().forget(wire::handle_bits(fence));
  forward_vkDestroyFence(device, fence, pAllocator);
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroySemaphore(VkDevice device, VkSemaphore semaphore,
                                                  const VkAllocationCallbacks* pAllocator) {
  if (semaphore != VK_NULL_HANDLE) connection_of(device)->timelines().forget(wire::handle_bits(semaphore));
  forward_vkDestroySemaphore(device, semaphore, pAllocator);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateSemaphore(VkDevice device, const VkSemaphoreCreateInfo* pCreateInfo,
                                                     const VkAllocationCallbacks* pAllocator, VkSemaphore* pSemaphore) {
  Connection* conn = connection_of(device);
  *pSemaphore = wire::handle_from_bits<VkSemaphore>(conn->new_id());  // an asynchronous create names its object
  const VkResult r = forward_vkCreateSemaphore(device, pCreateInfo, pAllocator, pSemaphore);
  if (r != VK_SUCCESS) return r;
  auto* type =
      wire::find_in_chain<VkSemaphoreTypeCreateInfo>(pCreateInfo->pNext, VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO);
  if (type && type->semaphoreType == VK_SEMAPHORE_TYPE_TIMELINE)
    conn->timelines().created(wire::handle_bits(*pSemaphore), type->initialValue);
  return r;
}

// Sent first, then noted: a thread that sees the value reached sends its next records after it.
VKAPI_ATTR VkResult VKAPI_CALL icd_vkSignalSemaphore(VkDevice device, const VkSemaphoreSignalInfo* pSignalInfo) {
  const VkResult r = forward_vkSignalSemaphore(device, pSignalInfo);
  if (r == VK_SUCCESS)
    connection_of(device)->timelines().signalled_on_host(wire::handle_bits(pSignalInfo->semaphore), pSignalInfo->value);
  return r;
}

namespace {

// A timeline wait whose values the guest's own finished submissions (or its vkSignalSemaphore)
// already reached (every one, or one with VK_SEMAPHORE_WAIT_ANY_BIT) succeeds here. One for
// values that pending submissions of this process signal waits for those submissions on the
// feedback block, as vkWaitForFences does: no round trip, and one wake-up when they finish.
// That is the same wait only while each of them completes on its own: once a submission waited
// for a value nothing before it signals (wait-before-signal), one of them may wait for a signal
// this very wait holds up, and every wait that is not already reached goes to bypassd.
template <class Ask>
VkResult wait_semaphores(Connection* conn, VkDevice device, const VkSemaphoreWaitInfo* pWaitInfo, uint64_t timeout,
                         Ask ask) {
  const layout::Feedback* f = conn->feedback();
  if (!pWaitInfo || pWaitInfo->semaphoreCount == 0 || !f) return ask(timeout);
  const bool any = (pWaitInfo->flags & VK_SEMAPHORE_WAIT_ANY_BIT) != 0;
  auto done_serial = [&](uint64_t serial) { return known(f, serial) == Known::kDone; };
  std::vector<uint64_t> serials;  // of the submissions that reach the values not reached yet
  for (uint32_t i = 0; i < pWaitInfo->semaphoreCount; ++i) {
    const TimelineTracker::Reach r =
        conn->timelines().reach(wire::handle_bits(pWaitInfo->pSemaphores[i]), pWaitInfo->pValues[i], done_serial);
    if (!r.reached) {
      serials.push_back(r.serial);
    } else if (any) {
      return done(conn, device);
    }
  }
  if (serials.empty()) return done(conn, device);
  const bool all = !any || serials.size() == 1;
  if (timeout == 0 || conn->saw_timeline_waits() || known_all(f, serials, all) == Known::kUnsure) return ask(timeout);
  return wait_published(conn, device, serials, all, timeout, ask);
}

}  // namespace

VKAPI_ATTR VkResult VKAPI_CALL icd_vkWaitSemaphores(VkDevice device, const VkSemaphoreWaitInfo* pWaitInfo,
                                                    uint64_t timeout) {
  Connection* conn = connection_of(device);
  if (!conn->alive()) return VK_ERROR_DEVICE_LOST;
  bool asked = false;
  const VkResult r = wait_semaphores(conn, device, pWaitInfo, timeout, [&](uint64_t left) {
    asked = true;
    return forward_vkWaitSemaphores(device, pWaitInfo, left);
  });
  auto* dev = as<Device>(device);
  (asked ? dev->timeline_waits_asked : dev->timeline_waits_here).fetch_add(1, std::memory_order_relaxed);
  return r;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetFenceStatus(VkDevice device, VkFence fence) {
  Connection* conn = connection_of(device);
  if (!conn->alive()) return VK_ERROR_DEVICE_LOST;
  const layout::Feedback* f = conn->feedback();
  const uint64_t serial = conn->fences().serial_of(wire::handle_bits(fence));
  if (known(f, serial) == Known::kDone) return done(conn, device);
  if (not_done_here(conn, f, serial)) return VK_NOT_READY;
  return learned(conn, {serial}, forward_vkGetFenceStatus(device, fence));
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkWaitForFences(VkDevice device, uint32_t fenceCount, const VkFence* pFences,
                                                   VkBool32 waitAll, uint64_t timeout) {
  Connection* conn = connection_of(device);
  if (!conn->alive()) return VK_ERROR_DEVICE_LOST;
  const layout::Feedback* f = conn->feedback();
  std::vector<uint64_t> serials(fenceCount);
  for (uint32_t i = 0; i < fenceCount; ++i) serials[i] = conn->fences().serial_of(wire::handle_bits(pFences[i]));
  const bool all = waitAll || fenceCount == 1;
  Known k = known_all(f, serials, all);
  if (k == Known::kDone) return done(conn, device);
  if (k == Known::kPending && timeout == 0) {
    // A poll: not satisfied while one fence (all) or every fence (any) is surely not done.
    auto not_done = [&](uint64_t s) { return not_done_here(conn, f, s); };
    if (all ? std::any_of(serials.begin(), serials.end(), not_done)
            : std::all_of(serials.begin(), serials.end(), not_done))
      return VK_TIMEOUT;
  }
  if (k == Known::kUnsure || timeout == 0)
    return learned(conn, serials, forward_vkWaitForFences(device, fenceCount, pFences, waitAll, timeout));
  return wait_published(conn, device, serials, all, timeout, [&](uint64_t left) {
    return learned(conn, serials, forward_vkWaitForFences(device, fenceCount, pFences, waitAll, left));
  });
}

}  // namespace bypass::icd
