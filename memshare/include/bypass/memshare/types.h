// Value types shared by the memshare client, service and shadow helpers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bypass::memshare {

inline constexpr size_t kPageSize = 4096;

// A domain is a guest session (process or VM) or the host. The service assigns ids at
// registration; 0 is never a valid domain.
using DomainId = uint64_t;
inline constexpr DomainId kNoDomain = 0;

// A name for a buffer: 128 random bits drawn by the service. Names are only meaningful to the
// service that drew them, and cannot be guessed.
struct Name {
  uint64_t hi = 0;
  uint64_t lo = 0;

  bool empty() const { return hi == 0 && lo == 0; }
  friend bool operator==(const Name&, const Name&) = default;
  std::string to_string() const;  // 32 lowercase hex digits
  static std::optional<Name> parse(std::string_view text);
};

struct NameHash {
  size_t operator()(const Name& n) const { return static_cast<size_t>(n.hi ^ (n.lo * 0x9e3779b97f4a7c15ull)); }
};

enum class Access : uint32_t {
  kRead = 1,
  kReadWrite = 3,
};
inline bool allows(Access granted, Access wanted) {
  return (static_cast<uint32_t>(granted) & static_cast<uint32_t>(wanted)) == static_cast<uint32_t>(wanted);
}

// A byte range [offset, offset + size) inside one buffer.
struct Range {
  uint64_t offset = 0;
  uint64_t size = 0;
  static constexpr uint64_t kWhole = ~uint64_t{0};
  // The whole buffer, whatever its size.
  static Range whole() { return Range{0, kWhole}; }
};

// A run of pages, in bytes from the start of a buffer: [offset, offset + size), page aligned.
struct PageRange {
  uint64_t offset = 0;
  uint64_t size = 0;
  friend bool operator==(const PageRange&, const PageRange&) = default;
};

// One piece of a transfer: size bytes from src_offset in the source to dst_offset in the
// destination.
struct CopyRange {
  uint64_t src_offset = 0;
  uint64_t dst_offset = 0;
  uint64_t size = 0;
};

// Write: accessing domain's copy -> owner. Read: owner -> accessing domain's copy.
enum class BarrierDirection : uint32_t { kWrite = 1, kRead = 2 };

struct BarrierStats {
  uint64_t bytes = 0;   // bytes copied
  uint64_t pages = 0;   // pages copied
  uint64_t ranges = 0;  // contiguous runs copied
};

// Overflow-checked "offset + size <= limit".
inline bool range_fits(uint64_t offset, uint64_t size, uint64_t limit) {
  return offset <= limit && size <= limit - offset;
}

}  // namespace bypass::memshare
