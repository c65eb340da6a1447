#include "check.h"

#include <cstdlib>

#include "vk_check.h"

namespace bypass::samples {
namespace {
constexpr size_t kFailuresShown = 5;
}

std::string rgba_string(const Rgba& c) {
  return "(" + std::to_string(c[0]) + "," + std::to_string(c[1]) + "," + std::to_string(c[2]) + "," +
         std::to_string(c[3]) + ")";
}

void ResultCheck::expect_pixel(const Rgba8Image& image, uint32_t x, uint32_t y, const Rgba& expected, int tolerance) {
  ++checked_;
  const uint8_t* p = image.at(x, y);
  for (int c = 0; c < 4; ++c) {
    if (std::abs(static_cast<int>(p[c]) - static_cast<int>(expected[c])) > tolerance) {
      fail("pixel (" + std::to_string(x) + "," + std::to_string(y) + ") is " + rgba_string({p[0], p[1], p[2], p[3]}) +
           ", expected " + rgba_string(expected) + (tolerance > 0 ? " +-" + std::to_string(tolerance) : std::string()));
      return;
    }
  }
}

void ResultCheck::expect(bool ok, const std::string& detail) {
  ++checked_;
  if (!ok) fail(detail);
}

void ResultCheck::fail(std::string detail) {
  ++failed_;
  if (first_failures_.size() < kFailuresShown) first_failures_.push_back(std::move(detail));
}

void ResultCheck::fail_equal(const char* what, uint64_t index, uint64_t actual, uint64_t expected) {
  fail(std::string(what) + "[" + std::to_string(index) + "] is " + std::to_string(actual) + ", expected " +
       std::to_string(expected));
}

void ResultCheck::finish() const {
  if (checked_ == 0) throw CheckError(what_ + ": nothing was checked");
  if (failed_ == 0) return;
  std::string message =
      what_ + ": " + std::to_string(failed_) + " of " + std::to_string(checked_) + " checks failed; first:";
  for (const auto& f : first_failures_) message += "\n  " + f;
  throw CheckError(message);
}

}  // namespace bypass::samples
