// egl_probe: OpenGL on a surfaceless EGL display (EGL_MESA_platform_surfaceless), for the zink
// tests: no window system at all. Prints the GL version, renderer and the sorted extension
// list, then draws a triangle into a framebuffer object and prints a checksum of the pixels,
// so a run through zink on the bypass ICD can be compared with zink on lavapipe directly.
// Exit status 0 on success, 1 when a step fails (the FAIL line says which).
#define GL_GLEXT_PROTOTYPES
#include <EGL/egl.h>
#include <EGL/eglext.h>
#include <GL/gl.h>
#include <GL/glext.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace {

int fail(const char* what) {
  std::printf("FAIL: %s (EGL error 0x%x, GL error 0x%x)\n", what, eglGetError(), glGetError());
  return 1;
}

}  // namespace

int main() {
  auto get_display = reinterpret_cast<PFNEGLGETPLATFORMDISPLAYEXTPROC>(eglGetProcAddress("eglGetPlatformDisplayEXT"));
  if (!get_display) return fail("eglGetPlatformDisplayEXT");
  EGLDisplay dpy = get_display(EGL_PLATFORM_SURFACELESS_MESA, EGL_DEFAULT_DISPLAY, nullptr);
  EGLint major = 0, minor = 0;
  if (dpy == EGL_NO_DISPLAY || !eglInitialize(dpy, &major, &minor)) return fail("eglInitialize");
  if (!eglBindAPI(EGL_OPENGL_API)) return fail("eglBindAPI");
  const EGLint config_attribs[] = {EGL_SURFACE_TYPE, 0, EGL_RENDERABLE_TYPE, EGL_OPENGL_BIT, EGL_NONE};
  EGLConfig config;
  EGLint n = 0;
  if (!eglChooseConfig(dpy, config_attribs, &config, 1, &n) || n == 0) return fail("eglChooseConfig");
  EGLContext ctx = eglCreateContext(dpy, config, EGL_NO_CONTEXT, nullptr);
  if (ctx == EGL_NO_CONTEXT) return fail("eglCreateContext");
  if (!eglMakeCurrent(dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, ctx)) return fail("eglMakeCurrent");

  std::printf("GL_VERSION: %s\n", reinterpret_cast<const char*>(glGetString(GL_VERSION)));
  std::printf("GL_RENDERER: %s\n", reinterpret_cast<const char*>(glGetString(GL_RENDERER)));
  std::printf("GL_SHADING_LANGUAGE_VERSION: %s\n", reinterpret_cast<const char*>(glGetString(GL_SHADING_LANGUAGE_VERSION)));
  GLint count = 0;
  glGetIntegerv(GL_NUM_EXTENSIONS, &count);
  std::vector<std::string> exts;
  for (GLint i = 0; i < count; ++i) exts.emplace_back(reinterpret_cast<const char*>(glGetStringi(GL_EXTENSIONS, static_cast<GLuint>(i))));
  std::sort(exts.begin(), exts.end());
  std::string list;
  for (auto& e : exts) list += (list.empty() ? "" : " ") + e;
  std::printf("GL_EXTENSIONS: %s\n", list.c_str());

  constexpr int kSize = 64;
  GLuint fbo = 0, rb = 0;
  glGenFramebuffers(1, &fbo);
  glGenRenderbuffers(1, &rb);
  glBindRenderbuffer(GL_RENDERBUFFER, rb);
  glRenderbufferStorage(GL_RENDERBUFFER, GL_RGBA8, kSize, kSize);
  glBindFramebuffer(GL_FRAMEBUFFER, fbo);
  glFramebufferRenderbuffer(GL_FRAMEBUFFER, GL_COLOR_ATTACHMENT0, GL_RENDERBUFFER, rb);
  if (glCheckFramebufferStatus(GL_FRAMEBUFFER) != GL_FRAMEBUFFER_COMPLETE) return fail("framebuffer incomplete");
  glViewport(0, 0, kSize, kSize);
  glClearColor(0.1f, 0.2f, 0.3f, 1.0f);
  glClear(GL_COLOR_BUFFER_BIT);
  glBegin(GL_TRIANGLES);
  glColor3f(1, 0, 0);
  glVertex2f(-0.8f, -0.8f);
  glColor3f(0, 1, 0);
  glVertex2f(0.8f, -0.8f);
  glColor3f(0, 0, 1);
  glVertex2f(0.0f, 0.8f);
  glEnd();
  std::vector<uint8_t> pixels(kSize * kSize * 4);
  glReadPixels(0, 0, kSize, kSize, GL_RGBA, GL_UNSIGNED_BYTE, pixels.data());
  if (glGetError() != GL_NO_ERROR) return fail("rendering");
  uint64_t hash = 1469598103934665603ull;  // FNV-1a
  size_t background = 0;
  for (size_t i = 0; i < pixels.size(); ++i) hash = (hash ^ pixels[i]) * 1099511628211ull;
  // The corner is outside the triangle: everything of its color is background.
  for (size_t i = 0; i < pixels.size(); i += 4)
    background += pixels[i] == pixels[0] && pixels[i + 1] == pixels[1] && pixels[i + 2] == pixels[2];
  std::printf("pixels: fnv1a %016llx, background %zu of %d\n", static_cast<unsigned long long>(hash), background,
              kSize * kSize);
  if (background == 0 || background == static_cast<size_t>(kSize * kSize)) return fail("the triangle is missing");
  glDeleteRenderbuffers(1, &rb);
  glDeleteFramebuffers(1, &fbo);
  eglMakeCurrent(dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT);
  eglDestroyContext(dpy, ctx);
  eglTerminate(dpy);
  return 0;
}
