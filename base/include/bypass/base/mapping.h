// An owned mmap(): unmapped exactly once, movable, never copied. The one mapping owner of
// every part (session regions, memshare buffers, VM-queue pools, crossover rings).
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "bypass/base/result.h"

namespace bypass::base {

class Mapping {
 public:
  Mapping() = default;
  Mapping(void* data, size_t size) : data_(static_cast<std::byte*>(data)), size_(size) {}
  Mapping(Mapping&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  Mapping& operator=(Mapping&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  // MAP_SHARED of [offset, offset + size) of fd (offset page aligned); read-only unless
  // `writable`; MAP_POPULATE with `populate`. kInvalidArgument for size 0, kIo for mmap's errno.
  static Result<Mapping> map_shared(int fd, uint64_t offset, uint64_t size, bool writable, bool populate = false);

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  bool valid() const { return data_ != nullptr; }
  explicit operator bool() const { return valid(); }
  void reset();
  // Gives up ownership without unmapping (the caller has replaced the mapping in place).
  void release() {
    data_ = nullptr;
    size_ = 0;
  }

 private:
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace bypass::base
