// Waits run on a waiter thread (see Session::run_blocking). An unbounded wait is cut into
// slices so a session that is closing never leaves a thread stuck in the driver.
#include <algorithm>
#include <chrono>

#include "session.h"

namespace bypass::host {

namespace {

Session& session(wire::HostContext& c) { return static_cast<Session&>(c); }

constexpr uint64_t kSliceNs = 50'000'000;

template <class Wait>
VkResult sliced_wait(Session& s, uint64_t timeout, Wait wait) {
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    const uint64_t elapsed = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
    const uint64_t left = timeout > elapsed ? timeout - elapsed : 0;
    VkResult r = wait(std::min(left, kSliceNs));
    if (r != VK_TIMEOUT || left <= kSliceNs) return r;
    if (s.closing()) return VK_ERROR_DEVICE_LOST;
  }
}

void handle_vkWaitForFences(wire::HostContext& c, wire::Args_vkWaitForFences& a) {
  Session& s = session(c);
  auto fn = s.dispatch_of(wire::handle_bits(a.device)).vkWaitForFences;
  a.result = sliced_wait(s, a.timeout, [&](uint64_t t) { return fn(a.device, a.fenceCount, a.pFences, a.waitAll, t); });
}

void handle_vkWaitSemaphores(wire::HostContext& c, wire::Args_vkWaitSemaphores& a) {
  Session& s = session(c);
  auto fn = s.dispatch_of(wire::handle_bits(a.device)).vkWaitSemaphores;
  a.result = sliced_wait(s, a.timeout, [&](uint64_t t) { return fn(a.device, a.pWaitInfo, t); });
}

}  // namespace

void register_sync_handlers(wire::Handlers& h) {
  h.vkWaitForFences = handle_vkWaitForFences;
  h.vkWaitSemaphores = handle_vkWaitSemaphores;
}

}  // namespace bypass::host
