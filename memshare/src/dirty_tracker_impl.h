// Private: the three DirtyTracker implementations.
#pragma once

#include <memory>

#include "bypass/memshare/dirty_tracker.h"

namespace bypass::memshare::detail {

bool uffd_async_probe();
Result<std::unique_ptr<DirtyTracker>> make_uffd_tracker(std::byte* base, uint64_t size);
Result<std::unique_ptr<DirtyTracker>> make_mprotect_tracker(std::byte* base, uint64_t size);
Result<std::unique_ptr<DirtyTracker>> make_hash_tracker(std::byte* base, uint64_t size);

}  // namespace bypass::memshare::detail
