// What a session's rings need from the medium that carries them: the shared region, a way to
// wake the peer and a way to learn that it died. The ring code (ring.h, channel.h: layout,
// validation, chunking, backpressure) is the same on every medium; a Link supplies these three.
//
//   SocketLink (session.h)  a sealed memfd, futex wake-ups, the UNIX socket's hang-up (and its
//                           SCM_RIGHTS for file descriptors)
//   VmLink     (vm.h)       a slot of a shared-memory PCI device (QEMU ivshmem), wake-ups by
//                           a doorbell (a virtio-serial port) or by polling the ring's wait
//                           word (a futex does not cross the VM boundary), heartbeat words in
//                           the device for peer death
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

namespace bypass::transport {

// How a waiting side sleeps and how the other side wakes it. The ring bumps the wait word
// (RingControl::data_seq / space_seq) before it calls wake(), so a sleeper that only polls the
// word needs no wake() at all.
class Waker {
 public:
  virtual ~Waker() = default;
  // Wakes the peer sleeping on `word` (the ring bumped it just before).
  virtual void wake(std::atomic<uint32_t>* word) = 0;
  // Wakes every thread sleeping on `word` (the completion feedback word has one per waiting
  // guest thread). A medium whose sleepers poll needs nothing more than wake().
  virtual void wake_all(std::atomic<uint32_t>* word) { wake(word); }
  // Sleeps while *word == expected, at most `timeout`; may return early (callers re-check).
  // True if the timeout ran out.
  virtual bool sleep(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::nanoseconds timeout) = 0;
  // How sleepers are woken, for logs and statistics: "futex", "doorbell", "polling".
  virtual const char* wakeups() const { return "futex"; }
};

// FUTEX_WAIT / FUTEX_WAKE on the word: both sides are processes of one kernel.
Waker& futex_waker();

class Link : public Waker {
 public:
  // The whole shared region of the session (header, ring control blocks, ring data).
  virtual std::span<std::byte> region() const = 0;
  // Whether the peer is known to be gone (crashed, killed, its VM reset). Asked only after a
  // sleep slice ran out with no wake, so it may cost a system call.
  virtual bool peer_gone() = 0;
  // The longest single sleep before peer_gone() is asked again: the bound on noticing a death.
  virtual std::chrono::nanoseconds liveness_slice() const = 0;
  // The UNIX socket that carries file descriptors, or -1 where none can cross (a VM).
  virtual int socket() const { return -1; }
  // Shared memory beside the rings that the host sub-allocates for the guest (a VM slot's
  // heap); empty where memory is shared by passing file descriptors instead.
  virtual std::span<std::byte> heap() const { return {}; }
};

}  // namespace bypass::transport
