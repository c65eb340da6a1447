// The host side of the VM-queue path: owns the page pools and every domain's queue, checks
// page ownership and introductions, and moves message descriptors between domains.
//
// One thread runs the event loop (run()); stop() may be called from any thread or a signal
// handler context that can call write(2).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bypass/base/result.h"

namespace bypass::vmqueue {

struct BrokerOptions {
  std::string socket_path;    // UNIX socket domains connect to
  uint32_t pages_4k = 16384;  // 64 MiB pool of 4 KiB pages
  uint32_t pages_2m = 16;     // 32 MiB pool of 2 MiB pages
  bool hugetlb = true;        // back 2 MiB pages by hugetlbfs when the kernel has them reserved
  bool verbose = false;       // one log line per session start/end on stderr
  // Domains connected on the socket at once (each holds a region of up to 1 MiB and two
  // descriptors here); one more is refused (kFull). VM domains are bounded by their slots.
  uint32_t max_domains = 256;
  // A VM device file (QEMU maps it as each guest's ivshmem BAR): when set, the pools live in it
  // and domains inside VMs attach through its `vm_slots` slots (docs/vmqueue.md, "Between VMs").
  // Process domains still connect on the socket and share the same pools.
  std::string device_path;
  uint32_t vm_slots = 8;
  // VMs with a control device of their own (each needs device_path for the pools): that VM's
  // domains attach through its `slots` slots there, which no other VM maps; the shared device
  // then holds the pools only (vm_slots is ignored).
  struct Vm {
    std::string name;
    std::string path;
    uint32_t slots = 4;
  };
  std::vector<Vm> vms;
  // A doorbell per VM slot (transport/doorbell.h): a socket "<device file>.<slot>.sock" QEMU
  // backs the guest's virtio-serial port "<file name>.<slot>" with. Without, VM domains and
  // the broker poll the rings.
  bool doorbells = true;
};

struct BrokerStats {
  uint64_t domains_connected = 0;
  uint64_t domains_live = 0;
  uint64_t messages = 0;     // descriptors moved into a queue
  uint64_t pages_moved = 0;  // pages whose owner changed by a send
  uint64_t lazy_flushed_by_timer = 0;
  uint64_t sessions_ended_for_protocol = 0;
  // VM domains that died without leaving: their heartbeat stood still, or their doorbell closed
  // (their QEMU ended).
  uint64_t vm_domains_silent = 0;
  uint64_t pages_free = 0;  // 4 KiB and 2 MiB pages in the pools, owned by nobody
  bool huge_pages_are_hugetlb = false;
};

class Broker {
 public:
  // Creates the pools and binds the socket; the error names what failed.
  static base::Result<std::unique_ptr<Broker>> create(BrokerOptions options);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // Serves until stop(); an error only when the event loop itself fails (epoll_wait).
  base::Result<void> run();
  void stop();
  // A snapshot; safe from any thread.
  BrokerStats stats() const;

 private:
  struct Impl;
  explicit Broker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace bypass::vmqueue
