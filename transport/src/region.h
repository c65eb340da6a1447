// The session region: planning its layout, creating it (host) and validating it (guest).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "bypass/transport/layout.h"
#include "bypass/base/mapping.h"
#include "bypass/base/unique_fd.h"

namespace bypass::transport {
struct SessionOptions;
}

namespace bypass::transport::detail {

// Where everything lives; a validated private copy, never re-read from shared memory.
struct RegionLayout {
  uint64_t size = 0;
  uint64_t max_message = 0;
  layout::RingDescriptor rings[layout::kRingCount] = {};
  uint64_t hints_offset = 0;
};

bool plan_region(const SessionOptions& options, RegionLayout* out, std::string* error);

// Writes the header and empty rings of `plan` at `base` (plan.size bytes of shared memory).
void write_region(const RegionLayout& plan, std::byte* base);

// Checks a region's header (every piece inside, no two overlapping) into *out, from a copy: the
// shared bytes are not read again.
bool validate_region(std::span<const std::byte> region, RegionLayout* out, std::string* error);

// Host: creates the sealed memfd, maps it and writes the header and empty rings.
bool create_region(const RegionLayout& plan, base::UniqueFd* memfd, base::Mapping* mapping, std::string* error);

// Guest: checks the memfd (size, seals), maps it and validates the header into *out.
bool open_region(int memfd, base::Mapping* mapping, RegionLayout* out, std::string* error);

}  // namespace bypass::transport::detail
