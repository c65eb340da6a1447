// The session region: planning its layout, creating it (host) and validating it (guest).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "bypass/base/mapping.h"
#include "bypass/base/unique_fd.h"
#include "bypass/transport/layout.h"
#include "bypass/transport/status.h"

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

// kInvalidArgument: ring_bytes or max_message out of range.
Result<RegionLayout> plan_region(const SessionOptions& options);

// Writes the header and empty rings of `plan` at `base` (plan.size bytes of shared memory).
void write_region(const RegionLayout& plan, std::byte* base);

// Checks a region's header (every piece inside, no two overlapping) into *out, from a copy: the
// shared bytes are not read again. kProtocolError naming what is wrong.
Result<RegionLayout> validate_region(std::span<const std::byte> region);

// Host: creates the sealed memfd, maps it and writes the header and empty rings (kIo).
struct CreatedRegion {
  base::UniqueFd memfd;
  base::Mapping mapping;
};
Result<CreatedRegion> create_region(const RegionLayout& plan);

// Guest: checks the memfd (size, seals: kProtocolError), maps it (kIo) and validates the header.
struct OpenedRegion {
  base::Mapping mapping;
  RegionLayout layout;
};
Result<OpenedRegion> open_region(int memfd);

}  // namespace bypass::transport::detail
