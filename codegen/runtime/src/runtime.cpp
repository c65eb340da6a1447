#include "bypass/wire/runtime.h"

#include <algorithm>

#include "bypass/base/log.h"

namespace bypass::wire {

void* Arena::alloc(size_t size, size_t align) {
  // Pad every allocation so short reads past an array end stay in our memory.
  constexpr size_t kPad = 16;
  if (size > cap_ || used_ > cap_ - size) return nullptr;
  const size_t need = size + kPad;
  auto fit = [&](Block& b) -> size_t {
    uintptr_t base = reinterpret_cast<uintptr_t>(b.data.get());
    uintptr_t at = (base + b.pos + align - 1) & ~(uintptr_t(align) - 1);
    size_t pos = at - base;
    return pos <= b.size && b.size - pos >= need ? pos : SIZE_MAX;
  };
  size_t pos = blocks_.empty() ? SIZE_MAX : fit(blocks_.back());
  if (pos == SIZE_MAX) {
    // Blocks start small and double up to 64 KiB: most messages decode into a few hundred
    // bytes, and every allocation is zeroed where it is handed out, not the whole block.
    Block b;
    const size_t grow = blocks_.empty() ? 4096 : std::min<size_t>(blocks_.back().size * 2, 64 * 1024);
    b.size = std::max(need + align, grow);
    b.data = std::make_unique_for_overwrite<std::byte[]>(b.size);
    blocks_.push_back(std::move(b));
    pos = fit(blocks_.back());
  }
  Block& b = blocks_.back();
  void* p = b.data.get() + pos;
  std::memset(p, 0, need);
  b.pos = pos + need;
  used_ += need;
  return p;
}

void Arena::reset() {
  if (blocks_.size() > 1) {
    // Keep the largest block for reuse; the rest were growth for one big message.
    size_t best = 0;
    for (size_t i = 1; i < blocks_.size(); ++i)
      if (blocks_[i].size > blocks_[best].size) best = i;
    Block keep = std::move(blocks_[best]);
    blocks_.clear();
    blocks_.push_back(std::move(keep));
  }
  if (!blocks_.empty()) blocks_.back().pos = 0;
  used_ = 0;
}

const Table* verify_root(const uint8_t* data, size_t size, bool (*fn)(Verifier&, const Table*)) {
  if (!data || size < sizeof(flatbuffers::uoffset_t) || size >= kMaxMessageBytes) return nullptr;
  if (reinterpret_cast<uintptr_t>(data) % 8 != 0) return nullptr;
  Verifier v(data, size, kMaxDepth, kMaxTables);
  flatbuffers::uoffset_t root = v.VerifyOffset(0);
  if (!root) return nullptr;
  auto* t = reinterpret_cast<const Table*>(data + root);
  return fn(v, t) ? t : nullptr;
}

bool fail_enum(DecodeContext& c, const char* where, const char* type, int64_t value) {
  const std::string what = std::to_string(value) + " is not a valid " + type;
  return c.fail(where, what.c_str(), Fault::kInvalidUsage);
}

namespace {
// Applications call Vulkan from exit handlers (GL through zink tears its context down in an
// atexit handler: waffle, piglit), and a thread's thread_local objects are destroyed before
// those run. So the buffer lives behind a pointer that stays usable: its owner frees it at
// thread exit and clears the pointer, and a call after that makes a fresh one, which the ending
// process takes back (guest-icd/src/connection.cpp keeps its scratch the same way).
thread_local Packed* t_packed = nullptr;  // trivially destructible: valid at any time
struct PackedOwner {
  ~PackedOwner() {
    delete t_packed;
    t_packed = nullptr;
  }
};
thread_local PackedOwner t_packed_owner;
}  // namespace

Packed& thread_packed() {
  if (t_packed == nullptr) {
    t_packed = new Packed();
    (void)&t_packed_owner;  // constructs the owner in this thread (once), so thread exit frees it
  }
  return *t_packed;
}

void warn_unknown_stype(int32_t stype) {
  // Applications chain structures of extensions we do not carry as a matter of course
  // (vulkaninfo chains dozens): that is no fault of theirs, so only a debug line, once per type.
  base::log_once(base::LogLevel::kDebug, "unknown sType", stype, "skipping unknown sType %d in a pNext chain", stype);
}

}  // namespace bypass::wire
