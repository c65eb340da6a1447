// X11 presentation through libxcb opened at run time. Every request that could fail because
// the program destroyed its window is a checked one, so the error comes back to us instead of
// landing in the program's event queue (or Xlib's error handler, which would exit).
#include "wsi_x11.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <xcb/shm.h>
#include <xcb/xcb.h>

#include "config.h"

namespace bypass::icd::wsi {

// X-macro lists, one entry per xcb function, laid out by hand:
// clang-format off
#define BYPASS_XCB_FUNCTIONS(X)                                                                 \
  X(xcb_connection_has_error) X(xcb_get_setup) X(xcb_setup_roots_iterator) X(xcb_screen_next)   \
  X(xcb_screen_allowed_depths_iterator) X(xcb_depth_next) X(xcb_depth_visuals_iterator)         \
  X(xcb_visualtype_next) X(xcb_setup_pixmap_formats) X(xcb_setup_pixmap_formats_length)         \
  X(xcb_get_geometry) X(xcb_get_geometry_reply) X(xcb_generate_id) X(xcb_create_gc_checked)     \
  X(xcb_free_gc) X(xcb_put_image_checked) X(xcb_request_check) X(xcb_flush)                     \
  X(xcb_get_maximum_request_length) X(xcb_get_extension_data)
#define BYPASS_XCB_SHM_FUNCTIONS(X) \
  X(xcb_shm_query_version) X(xcb_shm_query_version_reply) X(xcb_shm_attach_fd_checked) X(xcb_shm_detach) \
  X(xcb_shm_put_image_checked)
// clang-format on

struct XcbApi {
#define BYPASS_XCB_MEMBER(name) decltype(&::name) name = nullptr;
  BYPASS_XCB_FUNCTIONS(BYPASS_XCB_MEMBER)
  BYPASS_XCB_SHM_FUNCTIONS(BYPASS_XCB_MEMBER)
#undef BYPASS_XCB_MEMBER
  xcb_extension_t* shm_id = nullptr;  // null: no libxcb-shm, core PutImage only
};

namespace {

template <class F>
bool load(void* lib, const char* name, F& out) {
  out = reinterpret_cast<F>(dlsym(lib, name));
  return out != nullptr;
}

XcbApi* load_api() {
  // The program that made an X surface has libxcb loaded already: this only takes a reference.
  void* xcb = dlopen("libxcb.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!xcb) return nullptr;
  auto* api = new XcbApi();
  bool ok = true;
#define BYPASS_XCB_LOAD(name) ok = load(xcb, #name, api->name) && ok;
  BYPASS_XCB_FUNCTIONS(BYPASS_XCB_LOAD)
  if (!ok) {
    delete api;
    return nullptr;
  }
#undef BYPASS_XCB_LOAD
  if (void* shm = dlopen("libxcb-shm.so.0", RTLD_NOW | RTLD_LOCAL)) {
    bool shm_ok = true;
#define BYPASS_XCB_LOAD(name) shm_ok = load(shm, #name, api->name) && shm_ok;
    BYPASS_XCB_SHM_FUNCTIONS(BYPASS_XCB_LOAD)
#undef BYPASS_XCB_LOAD
    api->shm_id = static_cast<xcb_extension_t*>(dlsym(shm, "xcb_shm_id"));
    if (!shm_ok) api->shm_id = nullptr;
  }
  return api;
}

// Bits per pixel the server stores a pixmap of `depth` in; 0 if it has no such format.
uint8_t bits_per_pixel(const XcbApi& x, const xcb_setup_t* setup, uint8_t depth) {
  const xcb_format_t* f = x.xcb_setup_pixmap_formats(setup);
  const int n = x.xcb_setup_pixmap_formats_length(setup);
  for (int i = 0; i < n; ++i)
    if (f[i].depth == depth) return f[i].bits_per_pixel;
  return 0;
}

}  // namespace

const XcbApi* xcb_api() {
  static XcbApi* api = load_api();
  return api;
}

xcb_connection_t* xlib_to_xcb(void* display) {
  using GetXcb = xcb_connection_t* (*)(void*);
  static GetXcb get = [] {
    void* lib = dlopen("libX11-xcb.so.1", RTLD_NOW | RTLD_LOCAL);
    return lib ? reinterpret_cast<GetXcb>(dlsym(lib, "XGetXCBConnection")) : nullptr;
  }();
  return get && display ? get(display) : nullptr;
}

WindowState query_window(xcb_connection_t* conn, uint32_t window, WindowGeometry* out) {
  const XcbApi* x = xcb_api();
  if (!x || !conn) return WindowState::kFailed;
  if (x->xcb_connection_has_error(conn)) return WindowState::kGone;
  xcb_generic_error_t* err = nullptr;
  xcb_get_geometry_reply_t* g = x->xcb_get_geometry_reply(conn, x->xcb_get_geometry(conn, window), &err);
  if (!g) {
    const bool gone = !err || err->error_code == XCB_DRAWABLE || err->error_code == XCB_WINDOW;
    std::free(err);
    return gone || x->xcb_connection_has_error(conn) ? WindowState::kGone : WindowState::kFailed;
  }
  out->width = g->width;
  out->height = g->height;
  out->depth = g->depth;
  std::free(g);
  return WindowState::kOk;
}

bool depth_supported(xcb_connection_t* conn, uint8_t depth) {
  const XcbApi* x = xcb_api();
  if (!x || !conn || x->xcb_connection_has_error(conn)) return false;
  return (depth == 24 || depth == 32) && bits_per_pixel(*x, x->xcb_get_setup(conn), depth) == 32;
}

uint8_t visual_depth(xcb_connection_t* conn, uint32_t visual_id) {
  const XcbApi* x = xcb_api();
  if (!x || !conn || x->xcb_connection_has_error(conn)) return 0;
  for (auto s = x->xcb_setup_roots_iterator(x->xcb_get_setup(conn)); s.rem; x->xcb_screen_next(&s))
    for (auto d = x->xcb_screen_allowed_depths_iterator(s.data); d.rem; x->xcb_depth_next(&d))
      for (auto v = x->xcb_depth_visuals_iterator(d.data); v.rem; x->xcb_visualtype_next(&v))
        if (v.data->visual_id == visual_id) return v.data->_class == XCB_VISUAL_CLASS_TRUE_COLOR ? d.data->depth : 0;
  return 0;
}

base::Result<std::unique_ptr<WindowBlitter>> WindowBlitter::create(xcb_connection_t* conn, uint32_t window,
                                                                   uint32_t width, uint32_t height) {
  const XcbApi* x = xcb_api();
  if (!x) return base::make_error(base::Errc::kIo, "libxcb.so.1 cannot be loaded");
  WindowGeometry g;
  const WindowState st = query_window(conn, window, &g);
  if (st != WindowState::kOk) {
    return base::make_error(base::Errc::kIo,
                            st == WindowState::kGone ? "the window is gone" : "the window's geometry cannot be read");
  }
  if (!depth_supported(conn, g.depth)) {
    return base::make_error(base::Errc::kInvalidArgument,
                            "windows of depth " + std::to_string(g.depth) + " are not supported");
  }
  std::unique_ptr<WindowBlitter> b(new WindowBlitter());
  b->x_ = x;
  b->conn_ = conn;
  b->window_ = window;
  b->depth_ = g.depth;
  b->swap_bytes_ = x->xcb_get_setup(conn)->image_byte_order != XCB_IMAGE_ORDER_LSB_FIRST;
  b->max_request_bytes_ = size_t{x->xcb_get_maximum_request_length(conn)} * 4;
  b->gc_ = x->xcb_generate_id(conn);
  if (xcb_generic_error_t* err =
          x->xcb_request_check(conn, x->xcb_create_gc_checked(conn, b->gc_, window, 0, nullptr))) {
    std::free(err);
    b->gc_ = 0;
    return base::make_error(base::Errc::kIo, "cannot create a graphics context on the window");
  }
  // MIT-SHM 1.2 takes a memfd: no SysV segment that could outlive a killed guest. A remote
  // server refuses the segment; core PutImage then carries the pixels in the requests.
  const xcb_query_extension_reply_t* ext = x->shm_id ? x->xcb_get_extension_data(conn, x->shm_id) : nullptr;
  if (ext && ext->present && !config().wsi_no_shm) {
    auto* ver = x->xcb_shm_query_version_reply(conn, x->xcb_shm_query_version(conn), nullptr);
    const bool fd_ok = ver && (ver->major_version > 1 || (ver->major_version == 1 && ver->minor_version >= 2));
    std::free(ver);
    const size_t size = size_t{width} * height * 4;
    // Sealable, so memshare can name it as a transfer target (segment_fd()).
    const int fd = fd_ok ? memfd_create("bypass-wsi", MFD_CLOEXEC | MFD_ALLOW_SEALING) : -1;
    if (fd >= 0 && ftruncate(fd, static_cast<off_t>(size)) == 0) {
      void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p != MAP_FAILED) {
        const uint32_t seg = x->xcb_generate_id(conn);
        const int kept = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        // xcb sends the fd and closes it; the mapping and `kept` stay ours.
        xcb_generic_error_t* err = x->xcb_request_check(conn, x->xcb_shm_attach_fd_checked(conn, seg, fd, 1));
        if (!err) {
          b->shm_seg_ = seg;
          b->shm_fd_ = kept;
          b->shm_ = p;
          b->shm_size_ = size;
        } else {
          std::free(err);
          munmap(p, size);
          if (kept >= 0) close(kept);
        }
      } else {
        close(fd);
      }
    } else if (fd >= 0) {
      close(fd);
    }
  }
  return b;
}

WindowBlitter::~WindowBlitter() {
  if (!x_) return;
  if (!x_->xcb_connection_has_error(conn_)) {
    if (shm_seg_) x_->xcb_shm_detach(conn_, shm_seg_);
    if (gc_) x_->xcb_free_gc(conn_, gc_);
    x_->xcb_flush(conn_);
  }
  if (shm_) munmap(shm_, shm_size_);
  if (shm_fd_ >= 0) close(shm_fd_);
}

namespace {

void copy_rows(uint8_t* dst, size_t dst_stride, const uint8_t* src, size_t src_stride, uint32_t width, uint32_t rows,
               bool swap) {
  for (uint32_t y = 0; y < rows; ++y) {
    if (!swap) {
      std::memcpy(dst + y * dst_stride, src + y * src_stride, size_t{width} * 4);
      continue;
    }
    const uint8_t* s = src + y * src_stride;
    uint8_t* d = dst + y * dst_stride;
    for (uint32_t i = 0; i < width; ++i) {
      d[4 * i + 0] = s[4 * i + 3];
      d[4 * i + 1] = s[4 * i + 2];
      d[4 * i + 2] = s[4 * i + 1];
      d[4 * i + 3] = s[4 * i + 0];
    }
  }
}

}  // namespace

void WindowBlitter::put_core(const uint8_t* pixels, uint32_t width, uint32_t height, size_t stride,
                             std::vector<uint32_t>& cookies) {
  // Bands of rows that fit the server's request limit; the header is 24 bytes.
  const size_t row = size_t{width} * 4;
  const uint32_t rows_per = static_cast<uint32_t>(std::max<size_t>(1, (max_request_bytes_ - 64) / row));
  std::vector<uint8_t> band;
  for (uint32_t y = 0; y < height; y += rows_per) {
    const uint32_t n = std::min(rows_per, height - y);
    const uint8_t* src = pixels + y * stride;
    if (stride != row || swap_bytes_) {
      band.resize(row * n);
      copy_rows(band.data(), row, src, stride, width, n, swap_bytes_);
      src = band.data();
    }
    cookies.push_back(x_->xcb_put_image_checked(conn_, XCB_IMAGE_FORMAT_Z_PIXMAP, window_, gc_,
                                                static_cast<uint16_t>(width), static_cast<uint16_t>(n), 0,
                                                static_cast<int16_t>(y), 0, depth_, static_cast<uint32_t>(row * n), src)
                          .sequence);
  }
}

WindowState WindowBlitter::put(const uint8_t* pixels, uint32_t width, uint32_t height, size_t stride,
                               WindowGeometry* now) {
  if (x_->xcb_connection_has_error(conn_)) return WindowState::kGone;
  width = std::min<uint32_t>(width, 0x7fff);
  height = std::min<uint32_t>(height, 0x7fff);
  std::vector<uint32_t> cookies;
  if (shm_seg_ && size_t{width} * height * 4 <= shm_size_) {
    // Pixels already in the segment (a transfer wrote them there) stay where they are.
    const bool in_place = pixels == shm_ && stride == size_t{width} * 4 && !swap_bytes_;
    if (!in_place)
      copy_rows(static_cast<uint8_t*>(shm_), size_t{width} * 4, pixels, stride, width, height, swap_bytes_);
    cookies.push_back(x_->xcb_shm_put_image_checked(conn_, window_, gc_, static_cast<uint16_t>(width),
                                                    static_cast<uint16_t>(height), 0, 0, static_cast<uint16_t>(width),
                                                    static_cast<uint16_t>(height), 0, 0, depth_,
                                                    XCB_IMAGE_FORMAT_Z_PIXMAP, 0, shm_seg_, 0)
                          .sequence);
  } else {
    put_core(pixels, width, height, stride, cookies);
  }
  // The geometry reply comes after the puts are processed: one round trip for all, and the
  // shared segment is free again once it arrives. Checking the puts after it costs nothing.
  const WindowState st = query_window(conn_, window_, now);
  bool put_failed = false;
  for (uint32_t seq : cookies) {
    if (xcb_generic_error_t* err = x_->xcb_request_check(conn_, xcb_void_cookie_t{seq})) {
      std::free(err);
      put_failed = true;
    }
  }
  return st == WindowState::kOk && put_failed ? WindowState::kFailed : st;
}

}  // namespace bypass::icd::wsi
