#include "region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <new>

#include "bypass/base/text.h"
#include "bypass/transport/session.h"

namespace bypass::transport::detail {

using base::str_printf;

using layout::RegionHeader;
using layout::RingControl;

namespace {

constexpr unsigned kRequiredSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

bool is_power_of_two(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

Result<base::Mapping> map_shared(int fd, size_t size) {
  // No MAP_POPULATE: an idle session must not cost its whole ring size in resident memory
  // (16 MiB at the default 8 MiB per ring); pages fault in as messages first reach them.
  auto mapped = base::Mapping::map_shared(fd, 0, size, /*writable=*/true);
  if (!mapped) {
    return make_error(
        Status::kIo, str_printf("cannot map the session region (%zu bytes): %s", size, mapped.error().message.c_str()));
  }
  return std::move(mapped).value();
}

struct Range {
  uint64_t begin, end;
};

}  // namespace

Result<RegionLayout> plan_region(const SessionOptions& options) {
  uint64_t capacity = layout::kMinRingBytes;
  if (options.ring_bytes > layout::kMaxRingBytes) {
    return make_error(Status::kInvalidArgument, str_printf("ring_bytes %zu exceeds the limit of %" PRIu64 " bytes",
                                                           options.ring_bytes, layout::kMaxRingBytes));
  }
  while (capacity < options.ring_bytes) capacity *= 2;
  if (options.max_message == 0) {
    return make_error(Status::kInvalidArgument, "max_message must be at least 1 byte");
  }
  RegionLayout plan;
  plan.max_message = options.max_message;
  for (uint32_t i = 0; i < layout::kRingCount; ++i) {
    plan.rings[i].control_offset = layout::kControlOffset + i * sizeof(RingControl);
    plan.rings[i].data_offset = layout::kDataOffset + i * capacity;
    plan.rings[i].capacity = capacity;
  }
  plan.hints_offset = layout::kControlOffset + layout::kRingCount * sizeof(RingControl);
  plan.size = layout::kDataOffset + layout::kRingCount * capacity;
  return plan;
}

void write_region(const RegionLayout& plan, std::byte* base) {
  for (uint32_t i = 0; i < layout::kRingCount; ++i) new (base + plan.rings[i].control_offset) RingControl{};
  auto* hints = new (base + plan.hints_offset) layout::SchedulingHints{};
  hints->guest_cpu.store(layout::kUnknownCpu, std::memory_order_relaxed);
  hints->host_cpu.store(layout::kUnknownCpu, std::memory_order_relaxed);
  // A VM slot's region is written again for every session: no completion of the last one stays.
  new (base + layout::kFeedbackOffset) layout::Feedback{};
  RegionHeader header{};
  header.magic = layout::kRegionMagic;
  header.layout_version = layout::kLayoutVersion;
  header.region_size = plan.size;
  header.max_message = plan.max_message;
  for (uint32_t i = 0; i < layout::kRingCount; ++i) header.rings[i] = plan.rings[i];
  header.hints_offset = plan.hints_offset;
  std::memcpy(base, &header, sizeof header);
}

Result<CreatedRegion> create_region(const RegionLayout& plan) {
  base::UniqueFd fd(::memfd_create("bypass-session", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) {
    return make_error(Status::kIo, str_printf("memfd_create failed: %s", std::strerror(errno)));
  }
  if (::ftruncate(fd.get(), static_cast<off_t>(plan.size)) != 0) {
    return make_error(Status::kIo, str_printf("cannot size the session region to %" PRIu64 " bytes: %s", plan.size,
                                              std::strerror(errno)));
  }
  // Sealed against shrinking, a guest cannot make the host fault (SIGBUS) on the mapping.
  if (::fcntl(fd.get(), F_ADD_SEALS, kRequiredSeals) != 0) {
    return make_error(Status::kIo, str_printf("cannot seal the session region: %s", std::strerror(errno)));
  }
  auto map = map_shared(fd.get(), plan.size);
  if (!map) return map.error();
  write_region(plan, map->data());
  return CreatedRegion{std::move(fd), std::move(map).value()};
}

Result<OpenedRegion> open_region(int memfd) {
  struct stat st {};
  if (::fstat(memfd, &st) != 0) {
    return make_error(Status::kIo, str_printf("cannot stat the session region: %s", std::strerror(errno)));
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  constexpr uint64_t kMaxRegion = layout::kDataOffset + layout::kRingCount * layout::kMaxRingBytes;
  if (!S_ISREG(st.st_mode) || size < layout::kDataOffset || size > kMaxRegion) {
    return make_error(Status::kProtocolError,
                      str_printf("session region has an invalid size (%" PRIu64 " bytes)", size));
  }
  const int seals = ::fcntl(memfd, F_GET_SEALS);
  if (seals < 0 || (static_cast<unsigned>(seals) & kRequiredSeals) != kRequiredSeals) {
    return make_error(Status::kProtocolError, "session region is not sealed against resizing");
  }
  auto map = map_shared(memfd, size);
  if (!map) return map.error();
  auto layout = validate_region({map->data(), map->size()});
  if (!layout) return layout.error();
  return OpenedRegion{std::move(map).value(), *layout};
}

Result<RegionLayout> validate_region(std::span<const std::byte> region) {
  const uint64_t size = region.size();
  if (size < layout::kDataOffset) {
    return make_error(Status::kProtocolError,
                      str_printf("session region has an invalid size (%" PRIu64 " bytes)", size));
  }
  RegionHeader header;
  std::memcpy(&header, region.data(), sizeof header);
  if (header.magic != layout::kRegionMagic || header.layout_version != layout::kLayoutVersion) {
    return make_error(Status::kProtocolError,
                      str_printf("session region has magic 0x%08x layout version %u, expected 0x%08x version %u",
                                 header.magic, header.layout_version, layout::kRegionMagic, layout::kLayoutVersion));
  }
  if (header.region_size != size || header.max_message == 0) {
    return make_error(Status::kProtocolError,
                      str_printf("session region header says %" PRIu64 " bytes (max message %" PRIu64
                                 ") but the region holds %" PRIu64,
                                 header.region_size, header.max_message, size));
  }
  // Every piece must lie inside the region and no two may overlap.
  Range ranges[2 + 2 * layout::kRingCount];
  ranges[0] = {0, sizeof(RegionHeader)};
  if (header.hints_offset % layout::kCacheLine != 0 || header.hints_offset > size ||
      size - header.hints_offset < sizeof(layout::SchedulingHints)) {
    return make_error(Status::kProtocolError,
                      str_printf("session region hints at %" PRIu64 " are invalid", header.hints_offset));
  }
  ranges[1 + 2 * layout::kRingCount] = {header.hints_offset, header.hints_offset + sizeof(layout::SchedulingHints)};
  for (uint32_t i = 0; i < layout::kRingCount; ++i) {
    const layout::RingDescriptor& d = header.rings[i];
    if (!is_power_of_two(d.capacity) || d.capacity < layout::kMinRingBytes || d.capacity > layout::kMaxRingBytes ||
        d.control_offset % layout::kCacheLine != 0 || d.data_offset % 8 != 0 || d.control_offset > size ||
        size - d.control_offset < sizeof(RingControl) || d.data_offset > size || size - d.data_offset < d.capacity) {
      return make_error(Status::kProtocolError,
                        str_printf("session region ring %u is invalid (control at %" PRIu64 ", data at %" PRIu64
                                   ", capacity %" PRIu64 ", region %" PRIu64 " bytes)",
                                   i, d.control_offset, d.data_offset, d.capacity, size));
    }
    ranges[1 + 2 * i] = {d.control_offset, d.control_offset + sizeof(RingControl)};
    ranges[2 + 2 * i] = {d.data_offset, d.data_offset + d.capacity};
  }
  for (size_t a = 0; a < std::size(ranges); ++a) {
    for (size_t b = a + 1; b < std::size(ranges); ++b) {
      if (ranges[a].begin < ranges[b].end && ranges[b].begin < ranges[a].end) {
        return make_error(Status::kProtocolError, "session region has overlapping rings");
      }
    }
  }
  RegionLayout result;
  result.size = size;
  result.max_message = header.max_message;
  for (uint32_t i = 0; i < layout::kRingCount; ++i) result.rings[i] = header.rings[i];
  result.hints_offset = header.hints_offset;
  return result;
}

}  // namespace bypass::transport::detail
