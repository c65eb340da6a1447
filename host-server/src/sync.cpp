// Blocking calls (codegen/data/blocking.txt). Each first runs on the session thread (the try_
// handlers): most waits find their work done or about to be, and answering there saves handing
// the call to a waiter thread (a wake-up, a thread switch and a job allocation per call). The
// try checks without blocking, then, only while no other input waits to be decoded, waits once
// for at most kInlineWaitNs: that bounds how long one guest thread's wait can hold up another
// thread's commands. The wait is one slice on purpose: a driver wait that times out costs a
// timer expiry and a wake-up on this VM, and slices of 20 us doubling to 200 us (checking for
// input between them) made the small compute loop slower than the hand-off it replaces. What the try cannot finish goes to a waiter thread
// (Session::run_blocking), where an unbounded wait is cut into slices so a session that is
// closing never leaves a thread stuck in the driver. Timeouts are the driver's own in both
// places: the waiter waits only what the try left of the guest's timeout.
#include <algorithm>
#include <chrono>

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

}  // namespace

void handle_vkWaitForFences(wire::HostContext& c, wire::Args_vkWaitForFences& a) {
  Session& s = session(c);
  auto fn = s.dispatch_of(wire::handle_bits(a.device)).vkWaitForFences;
  a.result = sliced_wait(s, left_of(a.timeout, a.waited_ns),
                         [&](uint64_t t) { return fn(a.device, a.fenceCount, a.pFences, a.waitAll, t); });
}

bool try_vkWaitForFences(wire::HostContext& c, wire::Args_vkWaitForFences& a) {
  Session& s = session(c);
  auto fn = s.dispatch_of(wire::handle_bits(a.device)).vkWaitForFences;
  if (!fn) return false;
  return wait_inline(s, a.timeout, &a.result, &a.waited_ns,
                     [&](uint64_t t) { return fn(a.device, a.fenceCount, a.pFences, a.waitAll, t); });
}

void handle_vkWaitSemaphores(wire::HostContext& c, wire::Args_vkWaitSemaphores& a) {
  Session& s = session(c);
  auto fn = s.dispatch_of(wire::handle_bits(a.device)).vkWaitSemaphores;
  a.result = sliced_wait(s, left_of(a.timeout, a.waited_ns), [&](uint64_t t) { return fn(a.device, a.pWaitInfo, t); });
}

bool try_vkWaitSemaphores(wire::HostContext& c, wire::Args_vkWaitSemaphores& a) {
  Session& s = session(c);
  auto fn = s.dispatch_of(wire::handle_bits(a.device)).vkWaitSemaphores;
  if (!fn) return false;
  return wait_inline(s, a.timeout, &a.result, &a.waited_ns, [&](uint64_t t) { return fn(a.device, a.pWaitInfo, t); });
}

namespace {

// Idle waits have no timeout and no status query; the session's tracking fences (submit.cpp:
// one after every guest submission) tell the same thing: once all of a device's have
// signalled, every queue of it is idle. When the tracking cannot tell, the waiter thread asks
// the driver.
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
  if (!fn) return false;
  const VkQueryResultFlags flags = a.flags & ~VkQueryResultFlags{VK_QUERY_RESULT_WAIT_BIT};
  const VkResult r = fn(a.device, a.queryPool, a.firstQuery, a.queryCount, a.dataSize, a.pData, a.stride, flags);
  if (r == VK_NOT_READY && flags != a.flags) return false;
  a.result = r;
  return true;
}

}  // namespace

void register_sync_handlers(wire::Handlers& h) {
  h.try_vkWaitForFences = try_vkWaitForFences;
  h.try_vkWaitSemaphores = try_vkWaitSemaphores;
  h.try_vkQueueWaitIdle = try_vkQueueWaitIdle;
  h.try_vkDeviceWaitIdle = try_vkDeviceWaitIdle;
  h.try_vkGetQueryPoolResults = try_vkGetQueryPoolResults;
}

}  // namespace bypass::host
