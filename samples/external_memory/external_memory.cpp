// external_memory: VK_KHR_external_memory_fd between two Vulkan instances of one process, the
// way a compositor, a video decoder or OpenGL interop (GL_EXT_memory_object_fd) shares memory.
// Instance A allocates exportable memory, fills it and exports an opaque fd; instance B imports
// the fd and reads A's data; then B writes (with the GPU, and with the CPU where the memory is
// host-visible) and A sees B's writes. Each memory kind the device offers for buffers
// (host-visible, device-local) is shared in turn, plus an fd that is not memory at all.
// The result file lists each step and its outcome; it is the same on any conformant driver, so
// the e2e tests compare the bypass run (two bypass sessions) with the native one.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "args.h"
#include "check.h"
#include "commands.h"
#include "context.h"
#include "output.h"
#include "resources.h"
#include "sample_main.h"
#include "vk_check.h"

namespace bypass::samples {
namespace {

constexpr VkExternalMemoryHandleTypeFlagBits kOpaqueFd = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT;
constexpr VkDeviceSize kSize = 256 * 1024;

class Log {
 public:
  explicit Log(ResultCheck& check) : check_(check) {}
  void line(const std::string& text) { text_ += text + "\n"; }
  void expect(const std::string& what, bool ok) {
    line(what + ": " + (ok ? "yes" : "no"));
    check_.expect(ok, what);
  }
  // Every word of `got` must be `pattern(i)`; one line with the outcome.
  template <class Pattern>
  void expect_words(const std::string& what, const uint32_t* got, size_t count, Pattern pattern) {
    size_t wrong = 0;
    for (size_t i = 0; i < count; ++i) wrong += got[i] != pattern(i);
    line(what + ": " + std::to_string(count - wrong) + "/" + std::to_string(count) + " words right");
    check_.expect(wrong == 0, what + ": " + std::to_string(wrong) + " words wrong");
  }
  const std::string& text() const { return text_; }

 private:
  ResultCheck& check_;
  std::string text_;
};

uint32_t pattern_a(size_t i) { return static_cast<uint32_t>(i * 2654435761u) ^ 0xA5A5A5A5u; }
uint32_t pattern_b(size_t i) { return static_cast<uint32_t>(i * 40503u + 7u); }
constexpr uint32_t kFillB = 0xC0FFEE00u;

// A buffer bound to memory that is exported (import == nullptr) or imported from an fd.
class SharedBuffer {
 public:
  SharedBuffer(const Context& ctx, uint32_t type, const VkImportMemoryFdInfoKHR* import) : device_(ctx.device()) {
    VkExternalMemoryBufferCreateInfo external{VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO};
    external.handleTypes = kOpaqueFd;
    VkBufferCreateInfo info{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, &external};
    info.size = kSize;
    info.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    vk_check(vkCreateBuffer(device_, &info, nullptr, buffer_.put(device_)), "vkCreateBuffer");
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(device_, buffer_.get(), &req);
    if (!(req.memoryTypeBits & (1u << type))) throw std::runtime_error("memory type not allowed for the buffer");
    size_ = req.size;

    VkExportMemoryAllocateInfo export_info{VK_STRUCTURE_TYPE_EXPORT_MEMORY_ALLOCATE_INFO};
    export_info.handleTypes = kOpaqueFd;
    VkMemoryAllocateInfo alloc{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
    alloc.pNext = import ? static_cast<const void*>(import) : &export_info;
    alloc.allocationSize = req.size;
    alloc.memoryTypeIndex = type;
    vk_check(vkAllocateMemory(device_, &alloc, nullptr, memory_.put(device_)), "vkAllocateMemory");
    vk_check(vkBindBufferMemory(device_, buffer_.get(), memory_.get(), 0), "vkBindBufferMemory");
    const VkMemoryPropertyFlags flags = ctx.memory_properties().memoryTypes[type].propertyFlags;
    coherent_ = flags & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    if (flags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)
      vk_check(vkMapMemory(device_, memory_.get(), 0, VK_WHOLE_SIZE, 0, &mapped_), "vkMapMemory");
  }
  ~SharedBuffer() {
    if (mapped_) vkUnmapMemory(device_, memory_.get());
  }
  SharedBuffer(const SharedBuffer&) = delete;
  SharedBuffer& operator=(const SharedBuffer&) = delete;

  VkBuffer get() const { return buffer_.get(); }
  VkDeviceSize allocation_size() const { return size_; }
  uint32_t* words() const { return static_cast<uint32_t*>(mapped_); }

  int export_fd() const {
    auto get_fd = reinterpret_cast<PFN_vkGetMemoryFdKHR>(vkGetDeviceProcAddr(device_, "vkGetMemoryFdKHR"));
    if (!get_fd) throw std::runtime_error("vkGetMemoryFdKHR not found");
    VkMemoryGetFdInfoKHR info{VK_STRUCTURE_TYPE_MEMORY_GET_FD_INFO_KHR};
    info.memory = memory_.get();
    info.handleType = kOpaqueFd;
    int fd = -1;
    vk_check(get_fd(device_, &info, &fd), "vkGetMemoryFdKHR");
    return fd;
  }
  // Host writes made visible to the device, device writes to the host (non-coherent memory).
  void flush() const { range_op(vkFlushMappedMemoryRanges, "vkFlushMappedMemoryRanges"); }
  void invalidate() const { range_op(vkInvalidateMappedMemoryRanges, "vkInvalidateMappedMemoryRanges"); }

 private:
  void range_op(PFN_vkFlushMappedMemoryRanges fn, const char* name) const {
    if (coherent_) return;
    VkMappedMemoryRange range{VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE};
    range.memory = memory_.get();
    range.size = VK_WHOLE_SIZE;
    vk_check(fn(device_, 1, &range), name);
  }

  VkDevice device_;
  UniqueMemory memory_;  // declared before buffer_: the buffer goes first
  UniqueBuffer buffer_;
  VkDeviceSize size_ = 0;
  void* mapped_ = nullptr;
  bool coherent_ = true;
};

// Runs `record` in a one-time command buffer on `ctx` and waits for it.
template <class Record>
void run_commands(const Context& ctx, Record record) {
  UniqueCommandPool pool = create_command_pool(ctx.device(), ctx.queue_family());
  VkCommandBuffer cmd = allocate_command_buffers(ctx.device(), pool.get(), VK_COMMAND_BUFFER_LEVEL_PRIMARY, 1)[0];
  begin_command_buffer(cmd, VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT);
  record(cmd);
  record_memory_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                        VK_ACCESS_HOST_READ_BIT);
  end_command_buffer(cmd);
  VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  submit.commandBufferCount = 1;
  submit.pCommandBuffers = &cmd;
  ctx.submit_and_wait(submit);
}

void copy(const Context& ctx, VkBuffer from, VkBuffer to) {
  run_commands(ctx, [&](VkCommandBuffer cmd) {
    VkBufferCopy region{0, 0, kSize};
    vkCmdCopyBuffer(cmd, from, to, 1, &region);
  });
}

// The words of `buffer` as `ctx`'s device sees them, through a readback buffer.
std::vector<uint32_t> device_read(const Context& ctx, VkBuffer buffer) {
  Buffer readback(ctx, kSize, VK_BUFFER_USAGE_TRANSFER_DST_BIT, MemoryUse::kReadback);
  copy(ctx, buffer, readback.get());
  readback.invalidate();
  auto words = readback.mapped<uint32_t>();
  return {words.begin(), words.end()};
}

void device_write(const Context& ctx, VkBuffer buffer, uint32_t (*pattern)(size_t)) {
  Buffer upload(ctx, kSize, VK_BUFFER_USAGE_TRANSFER_SRC_BIT, MemoryUse::kUpload);
  auto words = upload.mapped<uint32_t>();
  for (size_t i = 0; i < words.size(); ++i) words[i] = pattern(i);
  upload.flush();
  copy(ctx, upload.get(), buffer);
}

std::string handle_features(VkExternalMemoryFeatureFlags f) {
  std::string s;
  if (f & VK_EXTERNAL_MEMORY_FEATURE_DEDICATED_ONLY_BIT) s += " dedicated-only";
  if (f & VK_EXTERNAL_MEMORY_FEATURE_EXPORTABLE_BIT) s += " exportable";
  if (f & VK_EXTERNAL_MEMORY_FEATURE_IMPORTABLE_BIT) s += " importable";
  return s.empty() ? " none" : s;
}

void report_capabilities(const Context& ctx, Log& log) {
  VkPhysicalDeviceExternalBufferInfo info{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_BUFFER_INFO};
  info.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  info.handleType = kOpaqueFd;
  VkExternalBufferProperties props{VK_STRUCTURE_TYPE_EXTERNAL_BUFFER_PROPERTIES};
  vkGetPhysicalDeviceExternalBufferProperties(ctx.physical_device(), &info, &props);
  const auto& m = props.externalMemoryProperties;
  log.line("buffer opaque fd:" + handle_features(m.externalMemoryFeatures) + ", compatible 0x" +
           std::to_string(m.compatibleHandleTypes));
  log.expect("buffer opaque fd exportable and importable",
             (m.externalMemoryFeatures & VK_EXTERNAL_MEMORY_FEATURE_EXPORTABLE_BIT) &&
                 (m.externalMemoryFeatures & VK_EXTERNAL_MEMORY_FEATURE_IMPORTABLE_BIT));

  VkPhysicalDeviceExternalImageFormatInfo ext_image{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_IMAGE_FORMAT_INFO};
  ext_image.handleType = kOpaqueFd;
  VkPhysicalDeviceImageFormatInfo2 image{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_IMAGE_FORMAT_INFO_2, &ext_image};
  image.format = VK_FORMAT_R8G8B8A8_UNORM;
  image.type = VK_IMAGE_TYPE_2D;
  image.tiling = VK_IMAGE_TILING_OPTIMAL;
  image.usage = VK_IMAGE_USAGE_SAMPLED_BIT | VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT;
  VkExternalImageFormatProperties ext_props{VK_STRUCTURE_TYPE_EXTERNAL_IMAGE_FORMAT_PROPERTIES};
  VkImageFormatProperties2 image_props{VK_STRUCTURE_TYPE_IMAGE_FORMAT_PROPERTIES_2, &ext_props};
  const VkResult r = vkGetPhysicalDeviceImageFormatProperties2(ctx.physical_device(), &image, &image_props);
  log.line(std::string("image opaque fd: ") + vk_result_name(r) +
           handle_features(ext_props.externalMemoryProperties.externalMemoryFeatures));
}

// A exports memory of `type`, B imports it; data crosses both ways.
void share(const Context& a, const Context& b, uint32_t type, const std::string& kind, Log& log) {
  SharedBuffer exported(a, type, nullptr);
  if (exported.words()) {
    for (size_t i = 0; i < kSize / 4; ++i) exported.words()[i] = pattern_a(i);
    exported.flush();
  } else {
    device_write(a, exported.get(), pattern_a);
  }

  const int fd = exported.export_fd();
  log.expect(kind + ": exported fd is valid", fd >= 0 && fcntl(fd, F_GETFD) >= 0);
  VkImportMemoryFdInfoKHR import{VK_STRUCTURE_TYPE_IMPORT_MEMORY_FD_INFO_KHR};
  import.handleType = kOpaqueFd;
  import.fd = fd;  // owned by B's implementation once the import succeeds
  SharedBuffer imported(b, type, &import);
  log.expect(kind + ": importer and exporter agree on the size",
             imported.allocation_size() == exported.allocation_size());

  auto seen = device_read(b, imported.get());
  log.expect_words(kind + ": B's device reads A's data", seen.data(), seen.size(), pattern_a);
  if (imported.words()) {
    imported.invalidate();
    log.expect_words(kind + ": B's mapping reads A's data", imported.words(), kSize / 4, pattern_a);
  }

  // B writes with its device; A sees it.
  run_commands(b, [&](VkCommandBuffer cmd) { vkCmdFillBuffer(cmd, imported.get(), 0, kSize, kFillB); });
  const auto fill = [](size_t) { return kFillB; };
  seen = device_read(a, exported.get());
  log.expect_words(kind + ": A's device reads B's device writes", seen.data(), seen.size(), fill);
  if (exported.words()) {
    exported.invalidate();
    log.expect_words(kind + ": A's mapping reads B's device writes", exported.words(), kSize / 4, fill);
  }

  // B writes with the CPU (or through its device where nothing is mapped); A's device sees it.
  if (imported.words()) {
    for (size_t i = 0; i < kSize / 4; ++i) imported.words()[i] = pattern_b(i);
    imported.flush();
  } else {
    device_write(b, imported.get(), pattern_b);
  }
  seen = device_read(a, exported.get());
  log.expect_words(kind + ": A's device reads B's later writes", seen.data(), seen.size(), pattern_b);

  // A second export of the same memory is another fd for the same pages.
  const int again = exported.export_fd();
  import.fd = again;
  SharedBuffer imported_again(b, type, &import);
  seen = device_read(b, imported_again.get());
  log.expect_words(kind + ": a second export shows the same memory", seen.data(), seen.size(), pattern_b);
}

// An fd that is not Vulkan memory (an empty file) is refused, and the device goes on working.
void import_garbage(const Context& b, uint32_t type, Log& log) {
  char path[] = "/tmp/bypass-external-memory-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  unlink(path);
  VkImportMemoryFdInfoKHR import{VK_STRUCTURE_TYPE_IMPORT_MEMORY_FD_INFO_KHR};
  import.handleType = kOpaqueFd;
  import.fd = fd;
  VkMemoryAllocateInfo alloc{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, &import};
  alloc.allocationSize = kSize;
  alloc.memoryTypeIndex = type;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  const VkResult r = vkAllocateMemory(b.device(), &alloc, nullptr, &memory);
  log.line(std::string("importing an empty file: ") + vk_result_name(r));
  log.expect("importing an empty file fails", r != VK_SUCCESS);
  if (r == VK_SUCCESS) vkFreeMemory(b.device(), memory, nullptr);
  // A failed import leaves the fd with the application, says the spec; lavapipe closes it
  // anyway, so what happened to it is not part of the result.
  if (fcntl(fd, F_GETFD) >= 0) close(fd);

  // Properties of an fd asked with a handle type the device does not offer.
  SharedBuffer exported(b, type, nullptr);
  const int exported_fd = exported.export_fd();
  auto props_of =
      reinterpret_cast<PFN_vkGetMemoryFdPropertiesKHR>(vkGetDeviceProcAddr(b.device(), "vkGetMemoryFdPropertiesKHR"));
  VkMemoryFdPropertiesKHR props{VK_STRUCTURE_TYPE_MEMORY_FD_PROPERTIES_KHR};
  const VkResult pr = props_of(b.device(), VK_EXTERNAL_MEMORY_HANDLE_TYPE_DMA_BUF_BIT_EXT, exported_fd, &props);
  log.line(std::string("dma-buf properties of an opaque fd: ") + vk_result_name(pr));
  close(exported_fd);
  // The device still works.
  const auto zero = [](size_t) { return 0u; };
  SharedBuffer fresh(b, type, nullptr);
  run_commands(b, [&](VkCommandBuffer cmd) { vkCmdFillBuffer(cmd, fresh.get(), 0, kSize, 0); });
  auto seen = device_read(b, fresh.get());
  log.expect_words("the device works after the failed import", seen.data(), seen.size(), zero);
}

void run(int argc, char** argv) {
  CommonArgs args;
  bool hostile = false;
  ArgParser parser("external_memory",
                   "Shares memory between two Vulkan instances through VK_KHR_external_memory_fd\n"
                   "(opaque fds): export, import, writes both ways, for each memory kind.\n"
                   "--out writes one line per step with its outcome.",
                   args);
  parser.add_flag("--import-garbage",
                  "also import an empty file, which must fail (invalid usage: run without validation)", &hostile);
  if (!parser.parse(argc, argv)) return;
  ContextOptions options;
  options.min_api_version = VK_API_VERSION_1_1;
  options.device_extensions = {VK_KHR_EXTERNAL_MEMORY_FD_EXTENSION_NAME};
  options.app_name = "bypass-external-memory-a";
  Context a(options);
  options.app_name = "bypass-external-memory-b";
  Context b(options);
  ResultCheck check("external_memory");
  Log log(check);
  report_capabilities(a, log);

  // The memory types a transfer buffer may use, one of each kind.
  VkExternalMemoryBufferCreateInfo external{VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO};
  external.handleTypes = kOpaqueFd;
  VkBufferCreateInfo info{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, &external};
  info.size = kSize;
  info.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  UniqueBuffer probe;
  vk_check(vkCreateBuffer(a.device(), &info, nullptr, probe.put(a.device())), "vkCreateBuffer");
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(a.device(), probe.get(), &req);
  const uint32_t visible =
      a.find_memory_type(req.memoryTypeBits, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT, VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
  const uint32_t local = a.find_memory_type(req.memoryTypeBits, 0, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);

  for (uint32_t round = 0; round < args.frames; ++round) {
    share(a, b, visible, "host-visible", log);
    if (a.memory_properties().memoryTypes[local].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)
      log.line("device-local: the device has no memory type that is not host-visible");
    else
      share(a, b, local, "device-local", log);
  }
  if (hostile) import_garbage(b, visible, log);

  if (!args.out.empty())
    write_file(args.out, std::span(reinterpret_cast<const uint8_t*>(log.text().data()), log.text().size()));
  check.finish();
  std::printf("external_memory: OK, %llu checks on %s%s%s\n", static_cast<unsigned long long>(check.checked()),
              a.properties().deviceName, args.out.empty() ? "" : ", wrote ", args.out.c_str());
}

}  // namespace
}  // namespace bypass::samples

int main(int argc, char** argv) {
  return bypass::samples::sample_main("external_memory", [&] { bypass::samples::run(argc, argv); });
}
