// Blocking calls (codegen/data/blocking.txt). Each first runs on the session thread (the try_
// handlers): most waits find their work done or about to be, and answering there saves handing
// the call to a waiter thread (a wake-up, a thread switch and a job allocation per call). The
// try checks without blocking, then, only while no other input waits to be decoded, waits once
// for at most kInlineWaitNs: that bounds how long one guest thread's wait can hold up another
// thread's commands. The wait is one slice on purpose: a driver wait that times out costs a
// timer expiry and a wake-up on this VM, and slices of 20 us doubling to 200 us (checking for
// input between them) made the small compute loop slower than the hand-off it replaces. What the try cannot finish goes
// to a waiter thread (Session::run_blocking), where an unbounded wait is cut into slices so a session that is closing
// never leaves a thread stuck in the driver. Timeouts are the driver's own in both places: the waiter waits only what
// the try left of the guest's timeout.
//
// Threads: try_ handlers run on the session thread and may end the session (c.fail) when the
// call cannot be made at all. The handlers without try_ run on waiter threads and never call
// c.fail (the decode state is the session thread's): what goes wrong there is the call's
// VkResult. Idle waits never call the driver's vkQueueWaitIdle/vkDeviceWaitIdle on a waiter:
// a queue is externally synchronized and the session thread submits to it meanwhile; they go
// through Session::wait_idle (an empty submission with a fence, made under queue_mu_, then a
// wait on the fence without it).
#include <algorithm>
#include <chrono>
#include <mutex>
#include <vector>

#include "bypass/host/session.h"

namespace bypass::host {

namespace {

Session& session(wire::HostContext& c) { return static_cast<Session&>(c); }

constexpr uint64_t kSliceNs = 50'000'000;
// A small job's fence on lavapipe signals 40-160 us after the wait arrives (compute loop,
// small job, measured here); longer waits go to a waiter thread after this.
constexpr uint64_t kInlineWaitNs = 200'000;

uint64_t ns_since(std::chrono::steady_clock::time_point start) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
}

template <class Wait>
VkResult sliced_wait(Session& s, uint64_t timeout, Wait wait) {
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    const uint64_t elapsed = ns_since(start);
    const uint64_t left = timeout > elapsed ? timeout - elapsed : 0;
    VkResult r = wait(std::min(left, kSliceNs));
    if (r != VK_TIMEOUT || left <= kSliceNs) return r;
    if (s.closing()) return VK_ERROR_DEVICE_LOST;
  }
}

// The session thread's attempt: true with *result when the wait finished (or timed out) here,
// false with *waited_ns when it must go on on a waiter thread.
template <class Wait>
bool wait_inline(Session& s, uint64_t timeout, VkResult* result, uint64_t* waited_ns, Wait wait) {
  // A closing session answers through the waiters, which report the device lost.
  if (s.closing()) return false;
  VkResult r = wait(0);
  if (r != VK_TIMEOUT || timeout == 0) {
    *result = r;
    return true;
  }
  if (s.input_waiting()) return false;
  const auto start = std::chrono::steady_clock::now();
  r = wait(std::min(timeout, kInlineWaitNs));
  if (r != VK_TIMEOUT || timeout <= kInlineWaitNs) {
    *result = r;
    return true;
  }
  *waited_ns = ns_since(start);
  return false;
}

uint64_t left_of(uint64_t timeout, uint64_t waited_ns) { return timeout > waited_ns ? timeout - waited_ns : 0; }

// What a waiter answers for a call whose driver function went missing after its try_ found it
// (it cannot: the device outlives the call, destroy_ok): the device is gone as far as it knows.
constexpr VkResult kNoFunction = VK_ERROR_DEVICE_LOST;

}  // namespace

void handle_vkWaitForFences(wire::HostContext& c, wire::Args_vkWaitForFences& a) {
  Session& s = session(c);
  auto fn = s.dispatch_of(wire::handle_bits(a.device)).vkWaitForFences;
  if (!fn) {
    a.result = kNoFunction;
    return;
  }
  a.result = sliced_wait(s, left_of(a.timeout, a.waited_ns),
                         [&](uint64_t t) { return fn(a.device, a.fenceCount, a.pFences, a.waitAll, t); });
}

bool try_vkWaitForFences(wire::HostContext& c, wire::Args_vkWaitForFences& a) {
  Session& s = session(c);
  auto fn = s.dispatch_of(wire::handle_bits(a.device)).vkWaitForFences;
  if (!fn) return c.decode.fail("vkWaitForFences", "not supported by the host driver", wire::Fault::kDriver);
  return wait_inline(s, a.timeout, &a.result, &a.waited_ns,
                     [&](uint64_t t) { return fn(a.device, a.fenceCount, a.pFences, a.waitAll, t); });
}

void handle_vkWaitSemaphores(wire::HostContext& c, wire::Args_vkWaitSemaphores& a) {
  Session& s = session(c);
  auto fn = s.dispatch_of(wire::handle_bits(a.device)).vkWaitSemaphores;
  if (!fn) {
    a.result = kNoFunction;
    return;
  }
  a.result = sliced_wait(s, left_of(a.timeout, a.waited_ns), [&](uint64_t t) { return fn(a.device, a.pWaitInfo, t); });
}

bool try_vkWaitSemaphores(wire::HostContext& c, wire::Args_vkWaitSemaphores& a) {
  Session& s = session(c);
  auto fn = s.dispatch_of(wire::handle_bits(a.device)).vkWaitSemaphores;
  if (!fn) return c.decode.fail("vkWaitSemaphores", "not supported by the host driver", wire::Fault::kDriver);
  return wait_inline(s, a.timeout, &a.result, &a.waited_ns, [&](uint64_t t) { return fn(a.device, a.pWaitInfo, t); });
}

namespace {

// Idle waits have no timeout and no status query; the session's tracking fences (submit.cpp:
// one after every guest submission) tell the same thing: once all of a device's have
// signalled, every queue of it is idle. When the tracking cannot tell, or the work is not done
// within the inline wait, the waiter thread waits through Session::wait_idle.
bool try_device_idle(Session& s, uint64_t device, VkResult* result) {
  uint64_t waited_ns = 0;
  VkResult r = VK_SUCCESS;
  const bool done = wait_inline(s, UINT64_MAX, &r, &waited_ns, [&](uint64_t t) { return s.wait_tracked(device, t); });
  if (!done || r == VK_INCOMPLETE) return false;
  *result = r;
  return true;
}

bool try_vkQueueWaitIdle(wire::HostContext& c, wire::Args_vkQueueWaitIdle& a) {
  Session& s = session(c);
  const ObjectEntry* q = s.objects().entry_of_handle(wire::handle_bits(a.queue));
  return q && try_device_idle(s, q->owner, &a.result);
}

bool try_vkDeviceWaitIdle(wire::HostContext& c, wire::Args_vkDeviceWaitIdle& a) {
  return try_device_idle(session(c), wire::handle_bits(a.device), &a.result);
}

// Without VK_QUERY_RESULT_WAIT_BIT the call never blocks. With it, the same call without the
// bit answers whenever every query is already available (VK_SUCCESS: the same values the
// waiting call would write); VK_NOT_READY sends the waiting call to a waiter thread, which
// decodes its own copy of the arguments, so the values written here are not seen.
bool try_vkGetQueryPoolResults(wire::HostContext& c, wire::Args_vkGetQueryPoolResults& a) {
  if (session(c).closing()) return false;
  auto fn = c.dispatch_of(wire::handle_bits(a.device)).vkGetQueryPoolResults;
  if (!fn) return c.decode.fail("vkGetQueryPoolResults", "not supported by the host driver", wire::Fault::kDriver);
  const VkQueryResultFlags flags = a.flags & ~VkQueryResultFlags{VK_QUERY_RESULT_WAIT_BIT};
  const VkResult r = fn(a.device, a.queryPool, a.firstQuery, a.queryCount, a.dataSize, a.pData, a.stride, flags);
  if (r == VK_NOT_READY && flags != a.flags) return false;
  a.result = r;
  return true;
}

}  // namespace

// On a waiter thread, once the try_ above could not answer: through the session's own fences
// (Session::wait_idle), never the driver's idle waits.
void handle_vkQueueWaitIdle(wire::HostContext& c, wire::Args_vkQueueWaitIdle& a) {
  a.result = session(c).wait_idle(0, wire::handle_bits(a.queue));
}

void handle_vkDeviceWaitIdle(wire::HostContext& c, wire::Args_vkDeviceWaitIdle& a) {
  a.result = session(c).wait_idle(wire::handle_bits(a.device), 0);
}

// The waiting call on a waiter thread: the driver waits (WAIT_BIT), as the guest asked.
void handle_vkGetQueryPoolResults(wire::HostContext& c, wire::Args_vkGetQueryPoolResults& a) {
  auto fn = c.dispatch_of(wire::handle_bits(a.device)).vkGetQueryPoolResults;
  a.result =
      fn ? fn(a.device, a.queryPool, a.firstQuery, a.queryCount, a.dataSize, a.pData, a.stride, a.flags) : kNoFunction;
}

VkResult Session::submit_idle_fences(const wire::Dispatch& d, VkDevice device, const std::vector<VkQueue>& queues,
                                     std::vector<VkFence>* fences) {
  for (VkQueue queue : queues) {
    VkFenceCreateInfo info{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence fence = VK_NULL_HANDLE;
    if (const VkResult r = d.vkCreateFence(device, &info, nullptr, &fence); r != VK_SUCCESS) return r;
    // No batches, a fence: it signals once all work submitted to the queue before it is done.
    if (const VkResult r = d.vkQueueSubmit(queue, 0, nullptr, fence); r != VK_SUCCESS) {
      d.vkDestroyFence(device, fence, nullptr);
      return r;
    }
    fences->push_back(fence);
  }
  return VK_SUCCESS;
}

VkResult Session::wait_idle(uint64_t device, uint64_t queue) {
  if (queue) {
    std::lock_guard lock(queue_mu_);
    auto it = queue_device_.find(queue);
    if (it == queue_device_.end()) return kNoFunction;
    device = it->second;
  }
  const wire::Dispatch& d = dispatch_of(device);
  if (!d.vkCreateFence || !d.vkQueueSubmit || !d.vkWaitForFences || !d.vkDestroyFence) return kNoFunction;
  auto dev = wire::handle_from_bits<VkDevice>(device);
  std::vector<VkFence> fences;
  VkResult r;
  {
    std::lock_guard lock(queue_mu_);
    std::vector<VkQueue> queues;
    for (const auto& [q, owner] : queue_device_)
      if (owner == device && (queue == 0 || q == queue)) queues.push_back(wire::handle_from_bits<VkQueue>(q));
    r = submit_idle_fences(d, dev, queues, &fences);
  }
  if (r == VK_SUCCESS && !fences.empty())
    r = sliced_wait(*this, UINT64_MAX, [&](uint64_t t) {
      return d.vkWaitForFences(dev, static_cast<uint32_t>(fences.size()), fences.data(), VK_TRUE, t);
    });
  if (r == VK_SUCCESS) {
    for (VkFence f : fences) d.vkDestroyFence(dev, f, nullptr);
  } else {
    // A fence still in a queue cannot be destroyed yet: destroy_device does it after the
    // device is idle.
    std::lock_guard lock(queue_mu_);
    for (VkFence f : fences) abandoned_fences_.emplace_back(device, f);
  }
  return r;
}

void register_sync_handlers(wire::Handlers& h) {
  h.try_vkWaitForFences = try_vkWaitForFences;
  h.try_vkWaitSemaphores = try_vkWaitSemaphores;
  h.try_vkQueueWaitIdle = try_vkQueueWaitIdle;
  h.try_vkDeviceWaitIdle = try_vkDeviceWaitIdle;
  h.try_vkGetQueryPoolResults = try_vkGetQueryPoolResults;
}

}  // namespace bypass::host
