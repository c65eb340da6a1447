// The host side of a crossover link: takes frames off each port's tx ring, asks the
// cross-talk detector where they go, and moves their descriptors into the receivers' rx rings
// (the crossover path to the peer, or the uplink); when every receiver handed a buffer back
// (rx_done), returns it to its owner (tx_done). Frames are never copied here.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "bypass/base/unique_fd.h"
#include "bypass/crossover/detector.h"
#include "bypass/crossover/layout.h"

namespace bypass::crossover {

struct SwitchStats {
  struct PortStats {
    bool live = false;
    uint64_t frames_in = 0, bytes_in = 0, frames_out = 0, bytes_out = 0, dropped_full = 0;
  } ports[kPorts];
  uint64_t crossover = 0;  // unicast frames endpoint -> peer endpoint
  uint64_t to_uplink = 0;  // unicast frames endpoint -> uplink
  uint64_t from_uplink = 0;
  uint64_t flooded = 0;  // broadcast / multicast / unknown destination
  uint64_t dropped = 0;  // no live destination, or bad descriptor
  uint64_t mac_moves = 0;
};

class Switch {
 public:
  // `spin`: poll the rings for a few microseconds before sleeping. Worth it only when the
  // ports' threads run on other CPUs; on a shared CPU spinning only delays them.
  Switch(uint32_t buffers_per_port, int host_kick_fd, int stop_fd, bool spin = true);

  // Thread-safe; takes effect at the switch thread's next pass. `pool` is the port's buffer
  // pool (read-only is enough), `rings` its ring region. Kick fds stay owned by the caller. A
  // port in a VM device has no kicks, and may have a doorbell (transport/doorbell.h), which the
  // switch then owns: it rings it for the endpoint, watches it for the endpoint's rings, and
  // takes its end for the VM's death (the port goes down).
  void attach(uint32_t port, std::byte* rings, const std::byte* pool, int tx_done_kick_fd, int rx_kick_fd,
              const Mac& mac, base::UniqueFd doorbell = {});
  // The port went away: its frames in flight are returned to their owners, its MACs forgotten.
  void detach(uint32_t port);
  // Whether the port's doorbell ended (its VM is gone) since the last call: the switch took the
  // port down already; its owner frees the device's slot. Any thread.
  bool doorbell_ended(uint32_t port) { return doorbell_ended_[port].exchange(false, std::memory_order_acq_rel); }

  void run();  // until stop_fd is readable
  SwitchStats stats() const;
  Detector& detector() { return detector_; }

 private:
  struct PortState {
    bool live = false;
    SlotRing<Desc> tx, tx_done, rx, rx_done;
    const std::byte* pool = nullptr;
    int tx_done_kick = -1, rx_kick = -1;
    std::shared_ptr<base::UniqueFd> doorbell;  // a VM port's, if any
    bool kick_tx_done = false, kick_rx = false;
    std::deque<uint32_t> rx_inflight;  // what we put on its rx ring, in order
  };
  struct Counters {
    std::atomic<uint64_t> frames_in{0}, bytes_in{0}, frames_out{0}, bytes_out{0}, dropped_full{0};
  };

  void apply_ops();
  bool drain_tx(uint32_t p);
  bool drain_rx_done(uint32_t p);
  void route(uint32_t from, uint32_t buf, uint32_t len);
  bool deliver(uint32_t to, uint32_t buf, uint32_t len);
  void unref(uint32_t buf);
  void do_detach(uint32_t p);
  uint32_t live_mask() const;

  uint32_t bpp_;
  int host_kick_, stop_;
  int epoll_ = -1;  // run()'s set, for the doorbells attach() adds
  bool spin_;
  PortState ports_[kPorts];
  std::vector<uint8_t> refs_;     // receivers still holding each buffer
  std::vector<uint8_t> at_port_;  // 1: the owner port holds the buffer
  uint32_t out_[kPorts] = {};     // buffers of each port not at the port (at_port_ == 0)
  Detector detector_;

  mutable std::mutex ops_mu_;
  std::vector<std::function<void()>> ops_;
  std::atomic<bool> ops_pending_{false};  // set by attach/detach (release), read by run() (acquire)

  Counters port_counters_[kPorts];
  std::atomic<uint64_t> crossover_{0}, to_uplink_{0}, from_uplink_{0}, flooded_{0}, dropped_{0};
  std::atomic<bool> live_[kPorts] = {};
  std::atomic<bool> doorbell_ended_[kPorts] = {};
};

}  // namespace bypass::crossover
