// Which submissions reach imported host memory: see bypass/icd/import_tracker.h.
#include "bypass/icd/import_tracker.h"

#include <algorithm>

#include "bypass/base/log.h"
#include "bypass/wire/gen/commands.h"

namespace bypass::icd {

namespace {

struct Ref {
  VkObjectType type;
  uint64_t id;
};

// The handles of the record this thread is building, and the first id handed out for it.
struct Pending {
  std::vector<Ref> refs;
  uint64_t new_from = 0;
  void clear() {
    refs.clear();
    new_from = 0;
  }
};
thread_local Pending t_pending;

// Handles that contain everything else and reach nothing themselves.
bool container(VkObjectType t) {
  return t == VK_OBJECT_TYPE_INSTANCE || t == VK_OBJECT_TYPE_PHYSICAL_DEVICE || t == VK_OBJECT_TYPE_DEVICE ||
         t == VK_OBJECT_TYPE_QUEUE;
}

// Links deeper than this (nested secondary command buffers) are taken to reach.
constexpr size_t kMaxLinkDepth = 8;

// Reaching handles kept at most. Descriptor sets freed with their pool (vkResetDescriptorPool)
// are never named again, so a program that writes imports into fresh sets every frame would
// grow the set without end: past this, every submission reaches and nothing more is kept.
constexpr size_t kMaxReaching = size_t{1} << 16;
constexpr size_t kMaxUnread = 4096;  // reaching submissions not yet read back

}  // namespace

void ImportTracker::imported(uint64_t memory_id) {
  std::lock_guard lock(mu_);
  reach_.insert(memory_id);
  active_.store(true, std::memory_order_relaxed);
}

void ImportTracker::note(VkObjectType type, uint64_t id) {
  if (id) t_pending.refs.push_back({type, id});
}

void ImportTracker::note_new(uint64_t id) {
  if (t_pending.new_from == 0) t_pending.new_from = id;
}

void ImportTracker::appended(uint16_t command) {
  Pending& p = t_pending;
  if (p.refs.empty()) return p.clear();
  const wire::RefRole role = wire::ref_role(command);
  std::lock_guard lock(mu_);
  if (everything()) return p.clear();  // gave up on another thread meanwhile
  auto mark = [&](auto&& pick) {
    for (const Ref& r : p.refs)
      if (!container(r.type) && pick(r)) reach_.insert(r.id);
  };
  auto of_type = [](VkObjectType t) { return [t](const Ref& r) { return r.type == t; }; };
  auto any_reaching = [&] {
    return std::any_of(p.refs.begin(), p.refs.end(), [&](const Ref& r) { return reaching(r.id); });
  };
  switch (role) {
    case wire::RefRole::kInert:
    case wire::RefRole::kSubmit:
      break;
    case wire::RefRole::kRecord:
      for (const Ref& cb : p.refs) {
        if (cb.type != VK_OBJECT_TYPE_COMMAND_BUFFER) continue;
        for (const Ref& r : p.refs) {
          if ((r.type != VK_OBJECT_TYPE_DESCRIPTOR_SET && r.type != VK_OBJECT_TYPE_COMMAND_BUFFER) || r.id == cb.id)
            continue;
          std::vector<uint64_t>& links = links_[cb.id];
          if (std::find(links.begin(), links.end(), r.id) == links.end()) links.push_back(r.id);
        }
      }
      if (any_reaching()) mark(of_type(VK_OBJECT_TYPE_COMMAND_BUFFER));
      break;
    case wire::RefRole::kBegin:
      for (const Ref& r : p.refs)
        if (r.type == VK_OBJECT_TYPE_COMMAND_BUFFER) drop_locked(r.id);
      // A secondary's inheritance (its framebuffer) may reach.
      if (any_reaching()) mark(of_type(VK_OBJECT_TYPE_COMMAND_BUFFER));
      break;
    case wire::RefRole::kDescriptorWrite:
      if (any_reaching()) mark(of_type(VK_OBJECT_TYPE_DESCRIPTOR_SET));
      break;
    case wire::RefRole::kBind:
      if (any_reaching()) mark([](const Ref&) { return true; });
      break;
    case wire::RefRole::kCreate:
      if (any_reaching()) mark([&](const Ref& r) { return p.new_from == 0 || r.id >= p.new_from; });
      break;
    case wire::RefRole::kRelease:
      for (const Ref& r : p.refs) drop_locked(r.id);
      break;
    case wire::RefRole::kOther:
      if (any_reaching()) give_up_locked("a command names it in a way not tracked");
      break;
  }
  if (reach_.size() + links_.size() > kMaxReaching) give_up_locked("over 65,536 handles reach it");
  p.clear();
}

void ImportTracker::give_up_locked(const char* why) {
  if (everything()) return;
  everything_.store(true, std::memory_order_relaxed);
  reach_.clear();
  links_.clear();
  unread_.clear();
  base::log(base::LogLevel::kDebug, "imported host memory: %s; every submission now mirrors the imports", why);
}

void ImportTracker::forget(uint64_t id) {
  if (!noting()) return;
  std::lock_guard lock(mu_);
  drop_locked(id);
}

bool ImportTracker::reaches_locked(uint64_t command_buffer, std::vector<uint64_t>& seen) {
  if (reaching(command_buffer)) return true;
  auto it = links_.find(command_buffer);
  if (it == links_.end()) return false;
  // A primary and its secondaries name each other (vkCmdExecuteCommands links both ways).
  if (std::find(seen.begin(), seen.end(), command_buffer) != seen.end()) return false;
  if (seen.size() >= kMaxLinkDepth) return true;
  seen.push_back(command_buffer);
  // Copied: the recursion may look up other command buffers' links.
  const std::vector<uint64_t> links = it->second;
  for (uint64_t l : links)
    if (reaches_locked(l, seen)) return true;
  return false;
}

bool ImportTracker::reaches(std::span<const uint64_t> command_buffers) {
  if (!active()) return false;
  if (everything()) return true;
  std::lock_guard lock(mu_);
  return std::any_of(command_buffers.begin(), command_buffers.end(), [&](uint64_t cb) {
    std::vector<uint64_t> seen;
    return reaches_locked(cb, seen);
  });
}

void ImportTracker::submitted(uint64_t serial) {
  std::lock_guard lock(mu_);
  // Every submission reaches from then on: every wait reads the imports back anyway.
  if (everything()) return;
  // Submissions never waited for while the feedback could still show them done (their slots
  // since taken by later serials) would stay here for ever: past this many, give up tracking.
  if (unread_.size() >= kMaxUnread) return give_up_locked("over 4,096 submissions not read back");
  unread_.push_back(serial);
}

void ImportTracker::settled(std::span<const uint64_t> serials) {
  if (serials.empty()) return;
  std::lock_guard lock(mu_);
  std::erase_if(unread_, [&](uint64_t s) { return std::find(serials.begin(), serials.end(), s) != serials.end(); });
}

}  // namespace bypass::icd
