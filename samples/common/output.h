// Result files. PNGs are written by libpng with fixed settings and no time or text chunks, so
// the same pixels always give the same bytes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace bypass::samples {

// A tightly packed RGBA8 image, rows top to bottom.
struct Rgba8Image {
  uint32_t width = 0;
  uint32_t height = 0;
  std::vector<uint8_t> pixels;

  const uint8_t* at(uint32_t x, uint32_t y) const { return pixels.data() + (static_cast<size_t>(y) * width + x) * 4; }
};

// Throws std::runtime_error naming the file on any failure.
void write_png(const std::string& path, const Rgba8Image& image);
void write_file(const std::string& path, std::span<const uint8_t> bytes);

}  // namespace bypass::samples
