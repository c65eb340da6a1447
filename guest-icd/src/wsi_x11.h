// The X11 side of presentation: window geometry and putting finished frames into a window.
// libxcb (and libX11-xcb for Xlib surfaces) are opened at run time, so the ICD loads on guests
// without X libraries; a program that made an X surface has them loaded already. Only this
// header's users see no X types; the X headers stay inside wsi_x11.cpp and wsi_xlib.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bypass/base/result.h"

struct xcb_connection_t;

namespace bypass::icd::wsi {

// The xcb (and Xlib-to-xcb) functions the ICD uses, resolved once; null when libxcb is missing.
struct XcbApi;
const XcbApi* xcb_api();
// Xlib surfaces: the Display's xcb connection (XGetXCBConnection); null without libX11-xcb.
xcb_connection_t* xlib_to_xcb(void* display);

enum class WindowState {
  kOk,
  kGone,    // the window no longer exists (destroyed, or its connection broke)
  kFailed,  // libxcb missing, or an unexpected X error
};

struct WindowGeometry {
  uint32_t width = 0;
  uint32_t height = 0;
  uint8_t depth = 0;
};

// Size and depth of `window`; one round trip.
WindowState query_window(xcb_connection_t* conn, uint32_t window, WindowGeometry* out);

// Whether frames of 32-bit BGRX pixels can be shown on a window of this depth on this server
// (depth 24 or 32 stored in 32 bits per pixel).
bool depth_supported(xcb_connection_t* conn, uint8_t depth);
// The depth of a visual of the connection's screens; 0 if unknown.
uint8_t visual_depth(xcb_connection_t* conn, uint32_t visual_id);

// Puts frames into one window: MIT-SHM from a memfd segment when the server offers it and
// accepts the segment (a local server), core PutImage requests otherwise.
class WindowBlitter {
 public:
  // Frames up to width x height pixels. The error says what the window or server lacks.
  static base::Result<std::unique_ptr<WindowBlitter>> create(xcb_connection_t* conn, uint32_t window, uint32_t width,
                                                             uint32_t height);
  ~WindowBlitter();
  WindowBlitter(const WindowBlitter&) = delete;
  WindowBlitter& operator=(const WindowBlitter&) = delete;

  // Shows `pixels` (BGRX rows `stride` bytes apart) at the window's origin and reads the
  // window's geometry in the same round trip: when put returns, the server is done with the
  // pixels. A window smaller than the frame clips it, as X does.
  WindowState put(const uint8_t* pixels, uint32_t width, uint32_t height, size_t stride, WindowGeometry* now);

  bool uses_shm() const { return shm_seg_ != 0; }
  // The MIT-SHM segment as a place frames can be written to directly (a memshare transfer
  // target): its sealable memfd, or -1 when there is none or the server wants the bytes of a
  // pixel the other way round. put() of segment() itself then copies nothing.
  int segment_fd() const { return shm_seg_ && !swap_bytes_ ? shm_fd_ : -1; }
  const uint8_t* segment() const { return static_cast<const uint8_t*>(shm_); }
  size_t segment_size() const { return shm_size_; }

 private:
  WindowBlitter() = default;
  void put_core(const uint8_t* pixels, uint32_t width, uint32_t height, size_t stride, std::vector<uint32_t>& cookies);

  const XcbApi* x_ = nullptr;
  xcb_connection_t* conn_ = nullptr;
  uint32_t window_ = 0;
  uint32_t gc_ = 0;
  uint8_t depth_ = 24;
  bool swap_bytes_ = false;  // a big-endian server wants the pixel bytes the other way round
  uint32_t shm_seg_ = 0;
  int shm_fd_ = -1;  // ours; the one xcb sent went to the server
  void* shm_ = nullptr;
  size_t shm_size_ = 0;
  size_t max_request_bytes_ = 0;
};

}  // namespace bypass::icd::wsi
