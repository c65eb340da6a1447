// Sessions with guests that are virtual machines: the rings live in a shared-memory PCI device
// (QEMU's ivshmem-plain, its BAR 2 backed on the host by a file bypassd creates and maps), the
// guest drives it from user space (sysfs resource2 mmap), and the same ring code as on a UNIX
// socket runs over it (link.h). What lives where in the device: layout.h, "A VM guest's device".
//
// Wake-ups: a futex does not cross the VM boundary. With doorbells (VmDeviceOptions::doorbells,
// and QEMU given a virtio-serial port per slot wired to bypassd's socket for it), a sleeping
// side blocks until the peer writes a byte to its doorbell, which reaches a guest as an
// interrupt. Without them (or when one side lacks its end) a side that found nothing while
// spinning yields, then sleeps in short, growing naps (kVmPollMin .. kVmPollMax), re-reading
// the ring's wait word. Peer death: heartbeat words in the device (bypassd's, and each open session's guest's).
// No file descriptor crosses: Channel::carries_fds() is false, and host-visible memory is
// sub-allocated from the slot's heap instead (Channel::shared_heap()).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "bypass/base/mapping.h"
#include "bypass/base/unique_fd.h"
#include "bypass/transport/channel.h"
#include "bypass/transport/doorbell.h"
#include "bypass/transport/session.h"

namespace bypass::transport {

// A polling sleeper first yields its CPU for kVmYieldPhase, re-reading the word between
// yields; then it naps, from kVmPollMin doubling up to kVmPollMax. The longest nap bounds the
// wake-up latency of an idle side and sets what an idle session costs (about 1/kVmPollMax
// wake-ups per second on each side).
inline constexpr std::chrono::microseconds kVmYieldPhase{50};
inline constexpr std::chrono::microseconds kVmPollMin{5};
inline constexpr std::chrono::microseconds kVmPollMax{200};
// How often bypassd's main process and an open session's guest bump their heartbeat, and how
// long each side waits for the other's before it declares the peer dead.
inline constexpr std::chrono::milliseconds kVmHeartbeatPeriod{50};
inline constexpr std::chrono::milliseconds kVmHostTimeout{2000};   // guest's view of bypassd
inline constexpr std::chrono::milliseconds kVmGuestTimeout{4000};  // bypassd's view of a guest

void vm_yield();  // sched_yield(), out of line

struct VmDeviceOptions {
  uint64_t size = uint64_t{256} << 20;  // a power of two: QEMU's ivshmem wants one
  uint32_t slots = 4;                   // guest processes of the VM with a session at once
  size_t ring_bytes = size_t{1} << 20;  // per ring per slot
  size_t max_message = size_t{64} << 20;
  // Listen on doorbell_path(path, slot) for each slot's doorbell (doorbell.h: a UNIX stream
  // socket QEMU's chardev connects to, backing the virtio-serial port "<file name>.<slot>").
  bool doorbells = false;
};

// Host side: the device file. Made (or re-made: every slot starts free) by bypassd before QEMU
// maps it; bypassd's main process polls the slots and bumps the heartbeat, a worker per
// requested slot accepts the session.
class VmDevice {
 public:
  static Result<VmDevice> create(const std::string& path, const VmDeviceOptions& options);
  VmDevice(VmDevice&&) noexcept;
  VmDevice& operator=(VmDevice&&) noexcept;
  ~VmDevice();

  const std::string& path() const { return path_; }
  uint32_t slot_count() const;
  void heartbeat();  // bypassd's main process, at least every kVmHeartbeatPeriod
  // A guest asked for a session in `slot` (and is waiting for accept()).
  bool slot_requested(uint32_t slot) const;
  // Main process: frees slots a guest claimed or was refused in and then left (a guest that
  // died half way through its handshake); `now` is the caller's clock.
  void sweep_stale_slots(Clock::time_point now);
  // The session in `slot` is over (its worker ended): the guest, if any, sees its peer gone.
  void free_slot(uint32_t slot);
  // Main process, before it hands a requested slot to a worker: the slot's doorbell connection
  // (a duplicate; the device keeps the newest one QEMU made), or an empty fd (no doorbells, or
  // nobody connected).
  base::UniqueFd doorbell(uint32_t slot);
  // Main process: what to poll for the idle slots' doorbells (a guest rings as it asks for a
  // session, so the main process need not look at the slots often), and the work after the poll
  // (DoorbellListener::watch / serve). `busy`: the slots a worker serves.
  void watch_doorbells(std::vector<pollfd>* fds, const std::vector<bool>& busy) const;
  void serve_doorbells(const std::vector<bool>& busy);
  // Worker: answers the guest waiting in `slot` (checks its hello, writes the region, says
  // Active) or refuses it with the reason (kRefused). The channel's link keeps the device mapped.
  // With `doorbell` (from doorbell()) and a guest that holds its end, wake-ups ring it.
  Result<Channel> accept(uint32_t slot, const Hello& mine, base::UniqueFd doorbell = {});

  struct Impl;

 private:
  explicit VmDevice(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string path_;
};

// Guest side. `endpoint`: "ivshmem:" (the VM's first ivshmem device), "ivshmem:0000:00:04.0"
// (a PCI address), or "ivshmem:/a/file" (the file to map: a sysfs resource2, or in tests the
// host's device file itself). Claims a free slot, handshakes, and keeps a heartbeat thread
// running for as long as the channel lives. Fails by the deadline with one line (kTimeout: no
// answer or no free slot; kPeerGone: no bypassd beats; kRefused: bypassd said why).
Result<Channel> connect_vm(const std::string& endpoint, const Hello& mine, Deadline deadline);

// Guest side, for users of a device other than bypassd's sessions (the crossover NIC): maps the
// whole device behind `endpoint` (as connect_vm() resolves it) read/write. kIo with one line
// when there is no such device or it is smaller than `min_bytes`.
Result<base::Mapping> map_vm_device(const std::string& endpoint, uint64_t min_bytes);

// Guest side, for users that map parts of the device themselves (the VM queues map each
// message's pages at their offset in the BAR): the device behind `endpoint`, opened read/write.
struct VmDeviceFile {
  base::UniqueFd fd;
  uint64_t size = 0;
  std::string path;  // what `endpoint` resolved to (a sysfs resource2, or a file)
};
Result<VmDeviceFile> open_vm_device(const std::string& endpoint, uint64_t min_bytes);

// Guest side: every ivshmem device of this VM, as endpoints ("ivshmem:0000:00:04.0"), in PCI
// address order (the first is what "ivshmem:" means). Empty outside a VM.
std::vector<std::string> list_vm_devices();

// Host side, for users of a device other than bypassd's sessions: opens or creates the regular
// file at `path` (never through a symlink) and sizes it to `size` bytes. Existing contents are
// kept: a QEMU that still maps the file would fault on a truncated one.
Result<base::UniqueFd> create_vm_device_file(const std::string& path, uint64_t size);

// The polling sleeper of every VM-device user (a futex does not cross the VM boundary): yields
// for kVmYieldPhase, then naps from kVmPollMin doubling up to kVmPollMax, until `ready()` or
// `timeout`. Returns whether `ready()` held.
void vm_nap(std::chrono::nanoseconds d);
// The first phase of every VM sleeper, polling or on a doorbell: yields for kVmYieldPhase,
// re-checking `ready()` between yields. What comes within it is noticed at once (no nap, no trip
// through the hypervisor), and whoever else wants this CPU (the peer itself, when it shares it)
// gets it. Returns whether `ready()` held.
template <class Ready>
bool vm_yield_phase(Ready ready) {
  const Clock::time_point start = Clock::now();
  while (Clock::now() - start < kVmYieldPhase) {
    if (ready()) return true;
    vm_yield();
  }
  return false;
}
template <class Ready>
bool vm_poll_until(Ready ready, std::chrono::nanoseconds timeout) {
  const Clock::time_point end = Clock::now() + timeout;
  if (vm_yield_phase(ready)) return true;
  std::chrono::nanoseconds step = kVmPollMin;
  for (;;) {
    if (ready()) return true;
    const Clock::time_point now = Clock::now();
    if (now >= end) return false;
    vm_nap(std::min<std::chrono::nanoseconds>(step, end - now));
    step = std::min<std::chrono::nanoseconds>(step * 2, kVmPollMax);
  }
}

}  // namespace bypass::transport
