// A device image as a transfer source or sink. The host plugs one in (Service::name_image)
// and gets a Name that transfers accept like any buffer name: surface readbacks and uploads go
// through the same worker pool. Bytes are addressed linearly (the host decides the layout,
// e.g. a linear staging image or a tightly packed copy of a tiled one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "bypass/memshare/error.h"

namespace bypass::memshare {

class ImageEndpoint {
 public:
  virtual ~ImageEndpoint() = default;

  // Size of the image's linear byte representation.
  virtual uint64_t size() const = 0;

  // A mapped linear image, if the host has one: workers memcpy to and from it directly.
  virtual std::byte* linear() { return nullptr; }

  // Image -> memory and memory -> image for endpoints that are not linearly mapped. Called
  // from several worker threads at once for disjoint ranges; [offset, offset + size) is
  // already checked against size().
  virtual Result<void> read(uint64_t offset, std::span<std::byte> dst) {
    std::byte* image = linear();
    if (image == nullptr) return make_error(Errc::kUnsupported, "image endpoint cannot be read");
    std::memcpy(dst.data(), image + offset, dst.size());
    return {};
  }
  virtual Result<void> write(uint64_t offset, std::span<const std::byte> src) {
    std::byte* image = linear();
    if (image == nullptr) return make_error(Errc::kUnsupported, "image endpoint cannot be written");
    std::memcpy(image + offset, src.data(), src.size());
    return {};
  }
};

}  // namespace bypass::memshare
