// Anonymous shared memory files (memfd) for regions that are passed as fds: page pools, ring
// regions. The one place a memfd is made for them; sealed session regions are transport's
// (region.cpp), which seals what it creates.
#pragma once

#include <cstddef>

#include "bypass/base/result.h"
#include "bypass/base/unique_fd.h"

namespace bypass::base {

// A memfd of `size` bytes. With `hugetlb`, backed by 2 MiB hugetlbfs pages (fails when the
// kernel has none reserved at mmap time, not here).
Result<UniqueFd> make_memfd(const char* name, size_t size, bool hugetlb = false);

// Reopens a memfd read-only through /proc/self/fd, so the receiver of the new fd can only map
// it PROT_READ: page protection, not trust, keeps it from writing.
Result<UniqueFd> reopen_read_only(int fd);

}  // namespace bypass::base
