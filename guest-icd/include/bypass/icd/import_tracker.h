// Which submissions can reach memory imported from the application's pages
// (VK_EXT_external_memory_host, HostPointerMirror in objects.h), so that the barriers mirror the
// imports around those submissions only, not around every one (shadow_memory.cpp). A program
// that imports a frame for one copy and then records twenty passes of its own (ffmpeg's
// libplacebo chain) compared every imported byte three times per submission before.
//
// A handle *reaches* the imports when it is an imported memory, or was linked to one by a
// record the ICD sent, as each command's role says (wire::RefRole, generated from vk.xml's
// command names and outputs):
//   kBind            the buffers and images bound take on the memory;
//   kCreate          the objects created (views, framebuffers) take on what they are made of;
//   kDescriptorWrite the descriptor sets written take on the buffers and views written;
//   kRecord          the command buffers take on what their commands name; the descriptor sets
//                    and secondary command buffers they name are kept as links and looked at
//                    again at submission (a set may be written after it was bound);
//   kBegin           a command buffer starts afresh;
//   kRelease         what is destroyed or freed is forgotten;
//   kOther           a command of no known role naming a reaching handle (a device address of
//                    a reaching buffer, say) makes every submission reach from then on; so do
//                    more than 65,536 reaching handles and linked command buffers (sets freed
//                    with their pool are never named again), and nothing is kept from then on.
// A submission reaches when one of its command buffers does, or one of their links. Errors go
// one way only: a handle may be taken to reach when it does not (a barrier too many), never the
// other (vkQueueBindSparse always reaches).
//
// After a wait, the imports are read back while a reaching submission may have completed unseen
// (`unread`): one whose serial the completion feedback showed done before a read-back began is
// taken off the list after it; one the process cannot have learned is complete waits.
#pragma once

#include <vulkan/vulkan.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace bypass::icd {

class ImportTracker {
 public:
  // Memory `memory_id` mirrors application pages: from now on every record's handles are noted.
  void imported(uint64_t memory_id);
  bool active() const { return active_.load(std::memory_order_relaxed); }
  // Whether records are noted: active, and not given up (everything()), after which what they
  // name changes nothing.
  bool noting() const { return active() && !everything_.load(std::memory_order_relaxed); }

  // For the encoding thread, while noting: a handle a record names (its wire id), and the first
  // id handed out for the record being built (the objects it creates).
  static void note(VkObjectType type, uint64_t id);
  static void note_new(uint64_t id);
  // The record of `command` whose handles were noted on this thread went out.
  void appended(uint16_t command);

  // An object that went without a record naming it (the command buffers of a destroyed pool).
  void forget(uint64_t id);

  // Whether a submission of these command buffers (wire ids) may read or write imported memory.
  bool reaches(std::span<const uint64_t> command_buffers);
  // A reaching submission went out as submission `serial`.
  void submitted(uint64_t serial);

  // What the completion feedback tells this process of a submission (sync.cpp).
  enum class Seen { kDone, kMaybe, kPending };
  // Before a read barrier: whether the imports must be read back, and which unread submissions
  // `seen` shows complete (this read-back settles them). A submission this process cannot have
  // learned is complete (kPending) needs no read-back yet: nothing lets the application look at
  // what it writes.
  template <class SeenFn>
  bool read_due(SeenFn seen, std::vector<uint64_t>* settles) {
    std::lock_guard lock(mu_);
    bool due = everything();
    for (uint64_t s : unread_) {
      const Seen k = seen(s);
      if (k == Seen::kDone) settles->push_back(s);
      if (k != Seen::kPending) due = true;
    }
    return due;
  }
  void settled(std::span<const uint64_t> serials);

  // Whether every submission reaches now (a kOther record, or a bound passed): tracking gave up.
  bool everything() const { return everything_.load(std::memory_order_relaxed); }

 private:
  bool reaching(uint64_t id) const { return reach_.count(id) != 0; }
  void drop_locked(uint64_t id) {
    reach_.erase(id);
    links_.erase(id);
  }
  // From now on every submission reaches, and nothing is kept or noted.
  void give_up_locked(const char* why);
  bool reaches_locked(uint64_t command_buffer, std::vector<uint64_t>& seen);

  std::atomic<bool> active_{false};
  std::mutex mu_;
  std::unordered_set<uint64_t> reach_;                         // ids that reach imports
  std::unordered_map<uint64_t, std::vector<uint64_t>> links_;  // command buffer -> sets, secondaries
  std::vector<uint64_t> unread_;                               // reaching submissions not seen done
  std::atomic<bool> everything_{false};                        // set under mu_; read without it by noting()
};

}  // namespace bypass::icd
