#include "bypass/wire/runtime.h"

#include <algorithm>

#include "bypass/base/log.h"
#include "bypass/base/thread_scratch.h"

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

// Usable from exit handlers too (base/thread_scratch.h says why).
Packed& thread_packed() { return base::thread_scratch<Packed>(); }

void warn_unknown_stype(int32_t stype) {
  // Applications chain structures of extensions we do not carry as a matter of course
  // (vulkaninfo chains dozens): that is no fault of theirs, so only a debug line, once per type.
  base::log_once(base::LogLevel::kDebug, "unknown sType", stype, "skipping unknown sType %d in a pNext chain", stype);
}

}  // namespace bypass::wire
