#include "output.h"

#include <png.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace bypass::samples {
namespace {

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<FILE, FileCloser>;

File open_for_writing(const std::string& path) {
  File f(std::fopen(path.c_str(), "wb"));
  if (!f) throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
  return f;
}

void close_checked(File f, const std::string& path) {
  if (std::fclose(f.release()) != 0) {
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
  }
}

// Warnings (none expected for plain RGBA8) are not worth a line on stderr.
void on_png_warning(png_structp, png_const_charp) {}

}  // namespace

void write_png(const std::string& path, const Rgba8Image& image) {
  if (image.width == 0 || image.height == 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 4) {
    throw std::invalid_argument("write_png: pixel buffer does not match the image size");
  }
  File f = open_for_writing(path);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, on_png_warning);
  if (png == nullptr) throw std::runtime_error("png_create_write_struct failed");
  png_infop info = png_create_info_struct(png);
  if (info == nullptr) {
    png_destroy_write_struct(&png, nullptr);
    throw std::runtime_error("png_create_info_struct failed");
  }
  std::vector<png_const_bytep> rows(image.height);
  for (uint32_t y = 0; y < image.height; ++y) rows[y] = image.at(0, y);

  // libpng reports errors by longjmp back here (throwing through its C frames is not safe).
  // Only libpng's own frames are skipped, and no C++ object is created after this point.
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw std::runtime_error("libpng failed writing " + path);
  }
  png_init_io(png, f.get());
  png_set_IHDR(png, info, image.width, image.height, 8, PNG_COLOR_TYPE_RGB_ALPHA, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(png, 6);
  png_write_info(png, info);
  png_write_image(png, const_cast<png_bytepp>(rows.data()));
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  close_checked(std::move(f), path);
}

void write_file(const std::string& path, std::span<const uint8_t> bytes) {
  File f = open_for_writing(path);
  if (!bytes.empty() && std::fwrite(bytes.data(), 1, bytes.size(), f.get()) != bytes.size()) {
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
  }
  close_checked(std::move(f), path);
}

}  // namespace bypass::samples
