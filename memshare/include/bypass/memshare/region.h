// memfd-backed memory: the unit a domain names and shares.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>

#include "bypass/memshare/error.h"
#include "bypass/memshare/unique_fd.h"

namespace bypass::memshare {

// An owning mmap() of some bytes; unmapped on destruction.
class MappedMemory {
 public:
  MappedMemory() = default;
  MappedMemory(std::byte* data, uint64_t size) : data_(data), size_(size) {}
  MappedMemory(MappedMemory&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  MappedMemory& operator=(MappedMemory&& other) noexcept;
  MappedMemory(const MappedMemory&) = delete;
  MappedMemory& operator=(const MappedMemory&) = delete;
  ~MappedMemory() { reset(); }

  // Maps `size` bytes of `fd` at `offset` (page aligned), shared. Read-only when !writable.
  static Result<MappedMemory> map(int fd, uint64_t offset, uint64_t size, bool writable, bool populate = false);

  std::byte* data() const { return data_; }
  uint64_t size() const { return size_; }
  bool valid() const { return data_ != nullptr; }
  void reset();
  // Gives up ownership without unmapping (the caller has replaced the mapping in place).
  void release() {
    data_ = nullptr;
    size_ = 0;
  }

 private:
  std::byte* data_ = nullptr;
  uint64_t size_ = 0;
};

// A memfd created with MFD_ALLOW_SEALING (the service seals named memfds against shrinking, so
// nobody can make its mappings fault) and mapped read-write in this process.
class Region {
 public:
  static Result<Region> create(uint64_t size, std::string_view debug_name = "memshare");

  std::byte* data() const { return memory_.data(); }
  uint64_t size() const { return memory_.size(); }
  int fd() const { return fd_.get(); }

 private:
  Region(UniqueFd fd, MappedMemory memory) : fd_(std::move(fd)), memory_(std::move(memory)) {}
  UniqueFd fd_;
  MappedMemory memory_;
};

// Creates a sealable memfd of `size` bytes.
Result<UniqueFd> create_memfd(uint64_t size, std::string_view debug_name);

}  // namespace bypass::memshare
