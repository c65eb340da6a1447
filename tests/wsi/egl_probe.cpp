// egl_probe: OpenGL on a surfaceless EGL display (EGL_MESA_platform_surfaceless), for the zink
// tests: no window system at all. Prints the GL version, renderer and the sorted extension
// list, then draws a triangle into a framebuffer object and prints a checksum of the pixels,
// so a run through zink on the bypass ICD can be compared with zink on lavapipe directly.
// Then Vulkan/OpenGL interop (GL_EXT_memory_object_fd): this program's own Vulkan device
// exports a buffer's memory as an fd, GL imports it, and each side reads what the other wrote.
// Exit status 0 on success, 1 when a step fails (the FAIL line says which).
#define GL_GLEXT_PROTOTYPES
#include <EGL/egl.h>
#include <EGL/eglext.h>
#include <GL/gl.h>
#include <GL/glext.h>
#include <vulkan/vulkan.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

int fail(const char* what) {
  std::printf("FAIL: %s (EGL error 0x%x, GL error 0x%x)\n", what, eglGetError(), glGetError());
  return 1;
}

uint32_t pattern(size_t i) { return static_cast<uint32_t>(i * 2654435761u) ^ 0x5A5A5A5Au; }

// A Vulkan buffer in exportable host-visible memory, made through the loader like any
// application's (the bypass ICD or lavapipe, whichever the environment selects).
struct VulkanSide {
  VkInstance instance = VK_NULL_HANDLE;
  VkPhysicalDevice physical = VK_NULL_HANDLE;
  VkDevice device = VK_NULL_HANDLE;
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  VkDeviceSize size = 0;
  uint32_t* words = nullptr;
  uint8_t device_uuid[VK_UUID_SIZE] = {};

  const char* create(VkDeviceSize bytes) {
    VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.apiVersion = VK_API_VERSION_1_1;
    VkInstanceCreateInfo ii{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    ii.pApplicationInfo = &app;
    if (vkCreateInstance(&ii, nullptr, &instance) != VK_SUCCESS) return "vkCreateInstance";
    uint32_t n = 1;
    if (vkEnumeratePhysicalDevices(instance, &n, &physical) < 0 || n == 0) return "vkEnumeratePhysicalDevices";
    VkPhysicalDeviceIDProperties id{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES};
    VkPhysicalDeviceProperties2 props{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, &id};
    vkGetPhysicalDeviceProperties2(physical, &props);
    std::memcpy(device_uuid, id.deviceUUID, VK_UUID_SIZE);
    const float priority = 1.0f;
    VkDeviceQueueCreateInfo qi{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    qi.queueCount = 1;
    qi.pQueuePriorities = &priority;
    const char* ext = VK_KHR_EXTERNAL_MEMORY_FD_EXTENSION_NAME;
    VkDeviceCreateInfo di{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
    di.queueCreateInfoCount = 1;
    di.pQueueCreateInfos = &qi;
    di.enabledExtensionCount = 1;
    di.ppEnabledExtensionNames = &ext;
    if (vkCreateDevice(physical, &di, nullptr, &device) != VK_SUCCESS) return "vkCreateDevice";
    VkExternalMemoryBufferCreateInfo eb{VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO};
    eb.handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT;
    VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, &eb};
    bi.size = bytes;
    bi.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_VERTEX_BUFFER_BIT;
    if (vkCreateBuffer(device, &bi, nullptr, &buffer) != VK_SUCCESS) return "vkCreateBuffer";
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(device, buffer, &req);
    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(physical, &mp);
    const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    uint32_t type = mp.memoryTypeCount;
    for (uint32_t i = 0; i < mp.memoryTypeCount && type == mp.memoryTypeCount; ++i)
      if ((req.memoryTypeBits & (1u << i)) && (mp.memoryTypes[i].propertyFlags & want) == want) type = i;
    if (type == mp.memoryTypeCount) return "no host-visible coherent memory type";
    VkExportMemoryAllocateInfo ei{VK_STRUCTURE_TYPE_EXPORT_MEMORY_ALLOCATE_INFO};
    ei.handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT;
    VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, &ei};
    ai.allocationSize = size = req.size;
    ai.memoryTypeIndex = type;
    if (vkAllocateMemory(device, &ai, nullptr, &memory) != VK_SUCCESS) return "vkAllocateMemory";
    if (vkBindBufferMemory(device, buffer, memory, 0) != VK_SUCCESS) return "vkBindBufferMemory";
    void* p = nullptr;
    if (vkMapMemory(device, memory, 0, VK_WHOLE_SIZE, 0, &p) != VK_SUCCESS) return "vkMapMemory";
    words = static_cast<uint32_t*>(p);
    return nullptr;
  }

  int export_fd() const {
    auto get_fd = reinterpret_cast<PFN_vkGetMemoryFdKHR>(vkGetDeviceProcAddr(device, "vkGetMemoryFdKHR"));
    VkMemoryGetFdInfoKHR gi{VK_STRUCTURE_TYPE_MEMORY_GET_FD_INFO_KHR};
    gi.memory = memory;
    gi.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT;
    int fd = -1;
    return get_fd && get_fd(device, &gi, &fd) == VK_SUCCESS ? fd : -1;
  }

  ~VulkanSide() {
    if (device) {
      if (memory) vkFreeMemory(device, memory, nullptr);
      if (buffer) vkDestroyBuffer(device, buffer, nullptr);
      vkDestroyDevice(device, nullptr);
    }
    if (instance) vkDestroyInstance(instance, nullptr);
  }
};

template <class F>
F gl_proc(const char* name) {
  return reinterpret_cast<F>(eglGetProcAddress(name));
}

// GL_EXT_memory_object_fd with this process's Vulkan device as the exporter.
int memory_object_interop() {
  constexpr VkDeviceSize kBytes = 64 * 1024;
  VulkanSide vk;
  if (const char* step = vk.create(kBytes)) return fail(step);
  const size_t count = kBytes / 4;
  for (size_t i = 0; i < count; ++i) vk.words[i] = pattern(i);

  auto get_uuid = gl_proc<PFNGLGETUNSIGNEDBYTEI_VEXTPROC>("glGetUnsignedBytei_vEXT");
  auto create_objects = gl_proc<PFNGLCREATEMEMORYOBJECTSEXTPROC>("glCreateMemoryObjectsEXT");
  auto import_fd = gl_proc<PFNGLIMPORTMEMORYFDEXTPROC>("glImportMemoryFdEXT");
  auto storage_mem = gl_proc<PFNGLBUFFERSTORAGEMEMEXTPROC>("glBufferStorageMemEXT");
  auto delete_objects = gl_proc<PFNGLDELETEMEMORYOBJECTSEXTPROC>("glDeleteMemoryObjectsEXT");
  auto get_sub_data = gl_proc<PFNGLGETBUFFERSUBDATAPROC>("glGetBufferSubData");
  auto clear_data = gl_proc<PFNGLCLEARBUFFERDATAPROC>("glClearBufferData");
  if (!get_uuid || !create_objects || !import_fd || !storage_mem || !delete_objects || !get_sub_data || !clear_data)
    return fail("GL_EXT_memory_object_fd entry points");

  // The application's check that GL and Vulkan run on the same device.
  GLubyte gl_uuid[GL_UUID_SIZE_EXT] = {};
  get_uuid(GL_DEVICE_UUID_EXT, 0, gl_uuid);
  std::printf("interop same device: %s\n", std::memcmp(gl_uuid, vk.device_uuid, GL_UUID_SIZE_EXT) == 0 ? "yes" : "no");

  const int fd = vk.export_fd();
  if (fd < 0) return fail("vkGetMemoryFdKHR");
  GLuint object = 0, buffer = 0;
  create_objects(1, &object);
  import_fd(object, vk.size, GL_HANDLE_TYPE_OPAQUE_FD_EXT, fd);  // GL owns the fd now
  glGenBuffers(1, &buffer);
  glBindBuffer(GL_ARRAY_BUFFER, buffer);
  storage_mem(GL_ARRAY_BUFFER, kBytes, object, 0);
  if (glGetError() != GL_NO_ERROR) return fail("importing the Vulkan memory into GL");

  std::vector<uint32_t> seen(count);
  get_sub_data(GL_ARRAY_BUFFER, 0, kBytes, seen.data());
  size_t right = 0;
  for (size_t i = 0; i < count; ++i) right += seen[i] == pattern(i);
  std::printf("interop GL reads Vulkan's writes: %zu/%zu\n", right, count);

  const GLuint value = 0x600DF00Du;
  clear_data(GL_ARRAY_BUFFER, GL_R32UI, GL_RED_INTEGER, GL_UNSIGNED_INT, &value);
  glFinish();
  right = 0;
  for (size_t i = 0; i < count; ++i) right += vk.words[i] == value;
  std::printf("interop Vulkan reads GL's writes: %zu/%zu\n", right, count);
  if (glGetError() != GL_NO_ERROR) return fail("interop");

  glDeleteBuffers(1, &buffer);
  delete_objects(1, &object);
  return 0;
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
  std::printf("GL_SHADING_LANGUAGE_VERSION: %s\n",
              reinterpret_cast<const char*>(glGetString(GL_SHADING_LANGUAGE_VERSION)));
  GLint count = 0;
  glGetIntegerv(GL_NUM_EXTENSIONS, &count);
  std::vector<std::string> exts;
  for (GLint i = 0; i < count; ++i)
    exts.emplace_back(reinterpret_cast<const char*>(glGetStringi(GL_EXTENSIONS, static_cast<GLuint>(i))));
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
  if (std::find(exts.begin(), exts.end(), "GL_EXT_memory_object_fd") != exts.end()) {
    if (memory_object_interop() != 0) return 1;
  } else {
    std::printf("interop: GL_EXT_memory_object_fd missing\n");
  }
  eglMakeCurrent(dpy, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT);
  eglDestroyContext(dpy, ctx);
  eglTerminate(dpy);
  return 0;
}
