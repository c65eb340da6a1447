// memfd-backed memory: the unit a domain names and shares.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>

#include "bypass/base/mapping.h"
#include "bypass/base/unique_fd.h"
#include "bypass/memshare/error.h"

namespace bypass::memshare {

// Maps `size` bytes of `fd` at `offset` (page aligned), shared, into a base::Mapping (the one
// mapping owner). Read-only when !writable.
Result<base::Mapping> map_memory(int fd, uint64_t offset, uint64_t size, bool writable, bool populate = false);

// A memfd created with MFD_ALLOW_SEALING (the service seals named memfds against shrinking, so
// nobody can make its mappings fault) and mapped read-write in this process.
class Region {
 public:
  static Result<Region> create(uint64_t size, std::string_view debug_name = "memshare");

  std::byte* data() const { return memory_.data(); }
  uint64_t size() const { return memory_.size(); }
  int fd() const { return fd_.get(); }

 private:
  Region(base::UniqueFd fd, base::Mapping memory) : fd_(std::move(fd)), memory_(std::move(memory)) {}
  base::UniqueFd fd_;
  base::Mapping memory_;
};

// Creates a sealable memfd of `size` bytes.
Result<base::UniqueFd> create_memfd(uint64_t size, std::string_view debug_name);

}  // namespace bypass::memshare
