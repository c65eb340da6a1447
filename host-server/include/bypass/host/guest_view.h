// What a shadowing guest (BYPASS_MEMORY=shadow, or external memory it cannot map) holds of one
// host-visible memory, as memshare page hashes: a read barrier then sends only the pages whose
// content differs from the guest's copy, instead of the whole memory after every wait.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "bypass/memshare/page_ranges.h"
#include "bypass/wire/protocol.h"

namespace bypass::host {

class GuestView {
 public:
  // Every page starts unknown: the first read barrier sends all of them.
  explicit GuestView(uint64_t memory_size) : hashes_(memory_size) {}

  // The guest's bytes landed at [offset, offset + size) of `memory`: whole pages are now the
  // same on both sides; a page written in part holds bytes the guest may not have.
  void wrote(const std::byte* memory, uint64_t offset, uint64_t size);

  // Appends to `runs` the parts of [offset, offset + size) the guest must fetch: every whole
  // page whose content differs from the guest's copy (adjacent pages merged), and the pieces of
  // partly covered pages at the edges; records them as the guest's from now on.
  void changed(const std::byte* memory, uint64_t offset, uint64_t size, std::vector<wire::MemoryRun>& runs);

 private:
  memshare::PageHashes hashes_;
  std::vector<memshare::PageRange> scratch_;
};

}  // namespace bypass::host
