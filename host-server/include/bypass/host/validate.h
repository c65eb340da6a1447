// What the host knows about a session's memory, buffers, images, descriptor sets and query
// pools, for the range checks in
// validate.cpp: the driver (lavapipe) trusts the offsets, sizes and subresources a command
// names, so each is checked against these facts before the driver sees the command.
//
// Recorded by validate.cpp's record_ hooks when an object is created or bound, dropped by
// Session::remove_object when it goes (directly, or with its owner). Touched on the session
// thread only, so no lock: the checks sit on the command-recording path.
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

namespace bypass::host {

struct MemoryFacts {
  uint64_t size = 0;  // the guest's allocationSize (the driver's allocation may be larger)
  uint32_t type_index = 0;
  // What is bound to it, unbound when it is freed: (is an image, handle).
  std::vector<std::pair<bool, uint64_t>> bound;
};

struct BufferFacts {
  uint64_t size = 0;
  VkBufferCreateFlags flags = 0;
  uint64_t memory = 0;  // bound memory (0: none yet, or freed)
  bool sparse() const { return flags & VK_BUFFER_CREATE_SPARSE_BINDING_BIT; }
  // Commands may use the buffer: bound (non-sparse buffers must be, and lavapipe would read
  // through a null pointer otherwise).
  bool usable() const { return memory != 0 || sparse(); }
};

struct ImageFacts {
  VkImageType type = VK_IMAGE_TYPE_2D;
  VkFormat format = VK_FORMAT_UNDEFINED;
  VkExtent3D extent{};
  uint32_t mip_levels = 0;
  uint32_t array_layers = 0;
  VkImageCreateFlags flags = 0;
  uint64_t memory = 0;
  bool sparse() const { return flags & VK_IMAGE_CREATE_SPARSE_BINDING_BIT; }
  bool usable() const { return memory != 0 || sparse(); }
};

// A descriptor set layout's bindings, sorted by binding number. Sets keep their layout's
// facts alive: the spec lets the layout be destroyed while its sets live on.
struct SetLayoutFacts {
  struct Binding {
    uint32_t binding;
    VkDescriptorType type;
    uint32_t count;             // descriptors (bytes for inline uniform blocks)
    uint32_t dynamic_base = 0;  // dynamic buffer types: the set's dynamic index of element 0
  };
  std::vector<Binding> bindings;
  bool variable_last = false;  // the last binding's count is chosen when a set is allocated
  uint32_t dynamic_count = 0;  // dynamic buffer descriptors: dynamic offsets a bind needs
};

struct DescriptorSetFacts {
  std::shared_ptr<const SetLayoutFacts> layout;
  uint32_t variable_count = 0;  // the last binding's count when layout->variable_last
  // Per dynamic buffer descriptor, in binding and element order (the order of a bind's dynamic
  // offsets): how far a dynamic offset may move it and stay inside its buffer. 0 until written.
  std::vector<uint64_t> dynamic_slack;
};

struct PipelineLayoutFacts {
  std::vector<std::shared_ptr<const SetLayoutFacts>> sets;  // null where unknown or VK_NULL_HANDLE
  uint32_t push_end = 0;                                    // end of the last push constant range
};

struct QueryPoolFacts {
  VkQueryType type = VK_QUERY_TYPE_OCCLUSION;
  uint32_t count = 0;
  uint32_t values = 1;  // results per query (pipeline statistics: one per counter)
};

class Resources {
 public:
  MemoryFacts* memory(uint64_t handle) { return find(memory_, handle); }
  BufferFacts* buffer(uint64_t handle) { return find(buffers_, handle); }
  ImageFacts* image(uint64_t handle) { return find(images_, handle); }

  const std::shared_ptr<const SetLayoutFacts>* set_layout(uint64_t handle) { return find(set_layouts_, handle); }
  DescriptorSetFacts* descriptor_set(uint64_t handle) { return find(sets_, handle); }
  PipelineLayoutFacts* pipeline_layout(uint64_t handle) { return find(pipeline_layouts_, handle); }
  QueryPoolFacts* query_pool(uint64_t handle) { return find(query_pools_, handle); }

  void add_memory(uint64_t handle, const MemoryFacts& m) { memory_[handle] = m; }
  void add_set_layout(uint64_t handle, std::shared_ptr<const SetLayoutFacts> l) { set_layouts_[handle] = std::move(l); }
  void add_descriptor_set(uint64_t handle, DescriptorSetFacts s) { sets_[handle] = std::move(s); }
  void add_pipeline_layout(uint64_t handle, PipelineLayoutFacts p) { pipeline_layouts_[handle] = std::move(p); }
  void add_query_pool(uint64_t handle, const QueryPoolFacts& q) { query_pools_[handle] = q; }
  void add_buffer(uint64_t handle, const BufferFacts& b) { buffers_[handle] = b; }
  void add_image(uint64_t handle, const ImageFacts& i) { images_[handle] = i; }
  void bind_buffer(uint64_t buffer, uint64_t memory);
  void bind_image(uint64_t image, uint64_t memory);
  // An object of the session's table is gone: forget it (memory: unbind what it held).
  void forget(VkObjectType type, uint64_t handle);
  void clear();

 private:
  template <class M>
  static typename M::mapped_type* find(M& map, uint64_t handle) {
    auto it = map.find(handle);
    return it == map.end() ? nullptr : &it->second;
  }
  void unbind(uint64_t memory, bool image, uint64_t handle);

  std::unordered_map<uint64_t, MemoryFacts> memory_;
  std::unordered_map<uint64_t, BufferFacts> buffers_;
  std::unordered_map<uint64_t, ImageFacts> images_;
  std::unordered_map<uint64_t, std::shared_ptr<const SetLayoutFacts>> set_layouts_;
  std::unordered_map<uint64_t, DescriptorSetFacts> sets_;
  std::unordered_map<uint64_t, PipelineLayoutFacts> pipeline_layouts_;
  std::unordered_map<uint64_t, QueryPoolFacts> query_pools_;
};

}  // namespace bypass::host
