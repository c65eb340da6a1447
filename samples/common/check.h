// Result checking: collects mismatches and, at the end, throws one CheckError that says how
// many values were wrong and shows the first few, so a failing run explains itself.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "output.h"

namespace bypass::samples {

using Rgba = std::array<uint8_t, 4>;

class ResultCheck {
 public:
  explicit ResultCheck(std::string what) : what_(std::move(what)) {}

  // Pixel (x, y) of `image` must be within `tolerance` of `expected` in every channel.
  void expect_pixel(const Rgba8Image& image, uint32_t x, uint32_t y, const Rgba& expected, int tolerance = 0);
  // Element `index` of `what` must equal `expected`; cheap when it does (no string is built).
  void expect_equal(const char* what, uint64_t index, uint64_t actual, uint64_t expected) {
    ++checked_;
    if (actual != expected) fail_equal(what, index, actual, expected);
  }
  // A free-form condition; `detail` is recorded when it fails.
  void expect(bool ok, const std::string& detail);

  uint64_t checked() const { return checked_; }
  uint64_t failed() const { return failed_; }
  // Throws CheckError when anything failed or nothing was checked at all.
  void finish() const;

 private:
  void fail(std::string detail);
  void fail_equal(const char* what, uint64_t index, uint64_t actual, uint64_t expected);

  std::string what_;
  uint64_t checked_ = 0;
  uint64_t failed_ = 0;
  std::vector<std::string> first_failures_;
};

std::string rgba_string(const Rgba& c);

}  // namespace bypass::samples
