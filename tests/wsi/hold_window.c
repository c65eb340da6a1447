// LD_PRELOAD shim for the screenshot tests: a program about to destroy its X window stops
// itself (SIGSTOP) first, so the test can capture the window's last frame (say, vkcube's after
// --c N frames), then lets it go on with SIGCONT. Nothing else of the program changes.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>

typedef struct xcb_connection_t xcb_connection_t;
typedef struct {
  unsigned int sequence;
} xcb_void_cookie_t;
typedef struct _XDisplay Display;

static void hold(void) {
  static int held;
  if (!held) {
    held = 1;
    raise(SIGSTOP);
  }
}

__attribute__((visibility("default"))) xcb_void_cookie_t xcb_destroy_window(xcb_connection_t* c, uint32_t window) {
  xcb_void_cookie_t (*real)(xcb_connection_t*, uint32_t) =
      (xcb_void_cookie_t(*)(xcb_connection_t*, uint32_t))dlsym(RTLD_NEXT, "xcb_destroy_window");
  hold();
  return real(c, window);
}

__attribute__((visibility("default"))) int XDestroyWindow(Display* d, unsigned long window) {
  int (*real)(Display*, unsigned long) = (int (*)(Display*, unsigned long))dlsym(RTLD_NEXT, "XDestroyWindow");
  hold();
  return real(d, window);
}
