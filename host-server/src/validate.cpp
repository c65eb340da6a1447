// Range checks before the driver: the offsets, sizes, subresources and create parameters that
// lavapipe trusts, checked against the session's own objects (validate.h). A guest that breaks
// one is told why and never reaches the driver: a call it waits for gets a VkResult, anything
// else (every vkCmd*, the asynchronous creates and binds) ends the session with one reason
// naming the command, the member and the numbers, e.g.
//   vkCmdCopyBuffer.pRegions[0]: srcOffset 0 + size 16384 exceeds the buffer's 4096 bytes
//
// Which commands are checked is codegen/data/checked.txt; the generated run functions call
// check_vkX before the handler and record_vkX after it succeeded. Enum values are checked by
// the generated decoders themselves (codegen/gen_enums.py), before anything here runs.
//
// Everything here runs on the session thread for every checked record: lookups in the
// session's tables, no allocation and no lock unless a check fails.
#include "bypass/host/validate.h"

#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <string>

#include "bypass/host/session.h"
#include "bypass/wire/gen/enums.h"
#include "bypass/wire/gen/formats.h"

namespace bypass::host {

// ---------------------------------------------------------------- Resources
void Resources::bind_buffer(uint64_t buffer, uint64_t memory) {
  BufferFacts* b = this->buffer(buffer);
  MemoryFacts* m = this->memory(memory);
  if (!b || !m) return;
  b->memory = memory;
  m->bound.emplace_back(false, buffer);
}

void Resources::bind_image(uint64_t image, uint64_t memory) {
  ImageFacts* i = this->image(image);
  MemoryFacts* m = this->memory(memory);
  if (!i || !m) return;
  i->memory = memory;
  m->bound.emplace_back(true, image);
}

void Resources::unbind(uint64_t memory, bool image, uint64_t handle) {
  if (MemoryFacts* m = this->memory(memory)) std::erase(m->bound, std::pair{image, handle});
}

void Resources::forget(VkObjectType type, uint64_t handle) {
  switch (type) {
    case VK_OBJECT_TYPE_DEVICE_MEMORY:
      if (auto it = memory_.find(handle); it != memory_.end()) {
        // What was bound to it may not be used any more: the driver's pointers into it dangle.
        for (auto [is_image, h] : it->second.bound) {
          if (is_image) {
            if (ImageFacts* i = image(h)) i->memory = 0;
          } else if (BufferFacts* b = buffer(h)) {
            b->memory = 0;
          }
        }
        memory_.erase(it);
      }
      break;
    case VK_OBJECT_TYPE_BUFFER:
      if (auto it = buffers_.find(handle); it != buffers_.end()) {
        if (it->second.memory) unbind(it->second.memory, false, handle);
        buffers_.erase(it);
      }
      break;
    case VK_OBJECT_TYPE_IMAGE:
      if (auto it = images_.find(handle); it != images_.end()) {
        if (it->second.memory) unbind(it->second.memory, true, handle);
        images_.erase(it);
      }
      break;
    case VK_OBJECT_TYPE_DESCRIPTOR_SET_LAYOUT:
      set_layouts_.erase(handle);
      break;
    case VK_OBJECT_TYPE_DESCRIPTOR_SET:
      sets_.erase(handle);
      break;
    case VK_OBJECT_TYPE_PIPELINE_LAYOUT:
      pipeline_layouts_.erase(handle);
      break;
    case VK_OBJECT_TYPE_QUERY_POOL:
      query_pools_.erase(handle);
      break;
    default:
      break;
  }
}

void Resources::clear() {
  memory_.clear();
  buffers_.clear();
  images_.clear();
  set_layouts_.clear();
  sets_.clear();
  pipeline_layouts_.clear();
  query_pools_.clear();
}

namespace {

Session& session(wire::HostContext& c) { return static_cast<Session&>(c); }
uint64_t bits(auto handle) { return wire::handle_bits(handle); }

// Guest numbers may overflow: a saturated result fails every bound.
uint64_t add(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}
uint64_t mul(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}
uint64_t ceil_div(uint64_t a, uint64_t b) { return b ? a / b + (a % b != 0) : a; }

// Where a check failed: "vkCmdCopyBuffer.pRegions[0]". Formatted only when one fails.
struct Where {
  const char* command;
  const char* member = nullptr;
  int64_t index = -1;
  std::string str() const {
    std::string s = command;
    if (member) s += std::string(".") + member;
    if (index >= 0) s += "[" + std::to_string(index) + "]";
    return s;
  }
};

// Ends the session (invalid_usage) with "<where>: <what>"; returns false for the caller to return.
template <class... A>
bool violation(wire::HostContext& c, const Where& w, fmt::format_string<A...> f, A&&... args) {
  const std::string where = w.str();
  const std::string what = fmt::format(f, std::forward<A>(args)...);
  return c.decode.fail(where.c_str(), what.c_str(), wire::Fault::kInvalidUsage);
}

// For a call the guest waits for: answer `result` instead of calling the driver, with one log
// line saying why (the session goes on). Returns false for the check to return.
template <class... A>
bool refuse(wire::HostContext& c, VkResult* out, VkResult result, const Where& w, fmt::format_string<A...> f,
            A&&... args) {
  spdlog::warn("session {}: {}: {} (answered {})", session(c).id(), w.str(), fmt::format(f, std::forward<A>(args)...),
               static_cast<int>(result));
  *out = result;
  return false;
}

// The facts of a buffer a command reads or writes through the driver: known and bound.
BufferFacts* usable_buffer(wire::HostContext& c, VkBuffer buffer, const Where& w, const char* name) {
  BufferFacts* b = session(c).resources().buffer(bits(buffer));
  if (!b) {
    violation(c, w, "{} was not created by this session's vkCreateBuffer", name);
    return nullptr;
  }
  if (!b->usable()) {
    violation(c, w, "{} is not bound to memory", name);
    return nullptr;
  }
  return b;
}

ImageFacts* usable_image(wire::HostContext& c, VkImage image, const Where& w, const char* name) {
  ImageFacts* i = session(c).resources().image(bits(image));
  if (!i) {
    violation(c, w, "{} was not created by this session's vkCreateImage", name);
    return nullptr;
  }
  if (!i->usable()) {
    violation(c, w, "{} is not bound to memory", name);
    return nullptr;
  }
  return i;
}

// offset + size within a buffer of `limit` bytes.
bool within(wire::HostContext& c, const Where& w, const char* offset_name, uint64_t offset, const char* size_name,
            uint64_t size, uint64_t limit) {
  if (add(offset, size) <= limit) return true;
  return violation(c, w, "{} {} + {} {} exceeds the buffer's {} bytes", offset_name, offset, size_name, size, limit);
}

// A buffer range that may be VK_WHOLE_SIZE (fills, descriptors, views): offset inside the
// buffer, and a range that is not whole non-zero and within it.
bool range_within(wire::HostContext& c, const Where& w, const char* offset_name, uint64_t offset, const char* size_name,
                  uint64_t size, uint64_t limit) {
  if (offset >= limit) return violation(c, w, "{} {} is not inside the buffer's {} bytes", offset_name, offset, limit);
  if (size == VK_WHOLE_SIZE) return true;
  if (size == 0) return violation(c, w, "{} is 0", size_name);
  return within(c, w, offset_name, offset, size_name, size, limit);
}

bool aligned4(wire::HostContext& c, const Where& w, const char* name, uint64_t value) {
  if (value % 4 == 0) return true;
  return violation(c, w, "{} {} is not a multiple of 4", name, value);
}

// ---------------------------------------------------------------- image geometry
struct Dims {
  uint64_t w, h, d;
};

Dims level_dims(const ImageFacts& im, uint32_t level) {
  return {std::max<uint64_t>(1, im.extent.width >> level), std::max<uint64_t>(1, im.extent.height >> level),
          std::max<uint64_t>(1, im.extent.depth >> level)};
}

int plane_of(VkImageAspectFlags aspect) {
  switch (aspect) {
    case VK_IMAGE_ASPECT_PLANE_0_BIT:
      return 0;
    case VK_IMAGE_ASPECT_PLANE_1_BIT:
      return 1;
    case VK_IMAGE_ASPECT_PLANE_2_BIT:
      return 2;
    default:
      return -1;
  }
}

// What one block of `aspect` of the image occupies in a buffer, and its extent in texels.
struct Block {
  uint64_t bytes, w, h, d;
  uint64_t wdiv = 1, hdiv = 1;  // a plane's subsampling
};

Block block_of(const wire::FormatInfo& f, VkImageAspectFlags aspect) {
  if (aspect == VK_IMAGE_ASPECT_DEPTH_BIT) return {f.depth_bytes, 1, 1, 1};
  if (aspect == VK_IMAGE_ASPECT_STENCIL_BIT) return {f.stencil_bytes, 1, 1, 1};
  if (const int p = plane_of(aspect); p >= 0 && f.plane_count)
    return {f.planes[p].block_size, 1, 1, 1, f.planes[p].width_divisor, f.planes[p].height_divisor};
  return {f.block_size, f.block_width, f.block_height, f.block_depth};
}

const wire::FormatInfo* format_of(wire::HostContext& c, const ImageFacts& im, const Where& w) {
  const wire::FormatInfo* f = wire::format_info(im.format);
  if (!f) violation(c, w, "the image's format {} has no known layout", static_cast<int>(im.format));
  return f;
}

// Aspects the format has; `single`: exactly one (buffer<->image copies).
bool aspects_ok(wire::HostContext& c, const Where& w, const wire::FormatInfo& f, VkImageAspectFlags aspects,
                bool single) {
  if (aspects == 0 || (aspects & ~static_cast<VkImageAspectFlags>(f.aspects)))
    return violation(c, w, "aspectMask 0x{:x} is not an aspect of the image's format (0x{:x})", aspects, f.aspects);
  if (single && std::popcount(aspects) != 1)
    return violation(c, w, "aspectMask 0x{:x} names more than one aspect", aspects);
  if (f.plane_count && (aspects & VK_IMAGE_ASPECT_COLOR_BIT) && single)
    return violation(c, w, "aspectMask of a multi-planar image must name a plane");
  return true;
}

bool layers_ok(wire::HostContext& c, const Where& w, const ImageFacts& im, const VkImageSubresourceLayers& s) {
  if (s.mipLevel >= im.mip_levels)
    return violation(c, w, "mipLevel {} is not below the image's {} levels", s.mipLevel, im.mip_levels);
  if (s.layerCount == 0) return violation(c, w, "layerCount is 0");
  if (add(s.baseArrayLayer, s.layerCount) > im.array_layers)
    return violation(c, w, "baseArrayLayer {} + layerCount {} exceeds the image's {} layers", s.baseArrayLayer,
                     s.layerCount, im.array_layers);
  return true;
}

// offset + extent of a region inside the subresource's level (a plane's, for plane aspects).
// A block-compressed level is whole blocks: a region may run to the edge of its last block (a
// 257-texel-wide BC level holds 65 blocks, 260 texels; zink copies such levels from and to
// uncompressed images of 65 texels). `layered`: the image is not 3D and the region's depth
// counts layers instead (copies between 3D and 2D images): then z is 0 and the depth is 1 or
// the layer count.
bool region_ok(wire::HostContext& c, const Where& w, const ImageFacts& im, const Block& blk,
               const VkImageSubresourceLayers& s, VkOffset3D off, VkExtent3D ext, bool layered, const char* side) {
  const Dims lv = level_dims(im, s.mipLevel);
  const uint64_t dims[3] = {ceil_div(ceil_div(lv.w, blk.wdiv), blk.w) * blk.w,
                            ceil_div(ceil_div(lv.h, blk.hdiv), blk.h) * blk.h, ceil_div(lv.d, blk.d) * blk.d};
  const int64_t offs[3] = {off.x, off.y, off.z};
  const uint64_t exts[3] = {ext.width, ext.height, ext.depth};
  const int axes = layered ? 2 : 3;
  for (int i = 0; i < axes; ++i) {
    if (offs[i] < 0 || add(static_cast<uint64_t>(offs[i]), exts[i]) > dims[i])
      return violation(c, w, "{}Offset.{} {} + extent {} exceeds the {} texels of mip level {}", side, "xyz"[i],
                       offs[i], exts[i], dims[i], s.mipLevel);
  }
  if (layered && (off.z != 0 || (ext.depth != 1 && ext.depth != s.layerCount)))
    return violation(c, w, "{}Offset.z {} and depth {} do not fit a {}-layer subresource of a non-3D image", side,
                     off.z, ext.depth, s.layerCount);
  return true;
}

// Bytes of the buffer a buffer<->image region touches, from bufferOffset (the spec's "Buffer
// and Image Addressing"): rows of bufferRowLength texels, slices of bufferImageHeight rows,
// one slice per depth texel and per layer.
template <class R>
uint64_t buffer_bytes(const R& r, const Block& blk) {
  if (r.imageExtent.width == 0 || r.imageExtent.height == 0 || r.imageExtent.depth == 0) return 0;
  const uint64_t row = ceil_div(r.bufferRowLength ? r.bufferRowLength : r.imageExtent.width, blk.w);
  const uint64_t height = ceil_div(r.bufferImageHeight ? r.bufferImageHeight : r.imageExtent.height, blk.h);
  const uint64_t w = ceil_div(r.imageExtent.width, blk.w);
  const uint64_t h = ceil_div(r.imageExtent.height, blk.h);
  const uint64_t slices = mul(ceil_div(r.imageExtent.depth, blk.d), r.imageSubresource.layerCount);
  const uint64_t blocks = add(mul(add(mul(slices - 1, height), h - 1), row), w);
  return mul(blocks, blk.bytes);
}

template <class R>
bool buffer_image_regions(wire::HostContext& c, const char* command, VkBuffer buffer, VkImage image, uint32_t count,
                          const R* regions) {
  const Where w0{command};
  BufferFacts* b = usable_buffer(c, buffer, w0, "the buffer");
  ImageFacts* im = b ? usable_image(c, image, w0, "the image") : nullptr;
  if (!im) return false;
  const wire::FormatInfo* f = format_of(c, *im, w0);
  if (!f) return false;
  for (uint32_t i = 0; i < count; ++i) {
    const R& r = regions[i];
    const Where w{command, "pRegions", i};
    if (!aspects_ok(c, w, *f, r.imageSubresource.aspectMask, true) || !layers_ok(c, w, *im, r.imageSubresource))
      return false;
    const Block blk = block_of(*f, r.imageSubresource.aspectMask);
    if (!region_ok(c, w, *im, blk, r.imageSubresource, r.imageOffset, r.imageExtent, false, "image")) return false;
    if (!within(c, w, "bufferOffset", r.bufferOffset, "the region's", buffer_bytes(r, blk), b->size)) return false;
  }
  return true;
}

// Image to image (copies, resolves): both sides inside their images. A copy between formats
// of different block sizes (compressed and not) covers as many blocks on both sides.
template <class R>
bool image_regions(wire::HostContext& c, const char* command, VkImage src, VkImage dst, uint32_t count,
                   const R* regions) {
  const Where w0{command};
  ImageFacts* s = usable_image(c, src, w0, "srcImage");
  ImageFacts* d = s ? usable_image(c, dst, w0, "dstImage") : nullptr;
  if (!d) return false;
  const wire::FormatInfo* sf = format_of(c, *s, w0);
  const wire::FormatInfo* df = sf ? format_of(c, *d, w0) : nullptr;
  if (!df) return false;
  const bool mixed = (s->type == VK_IMAGE_TYPE_3D) != (d->type == VK_IMAGE_TYPE_3D);
  for (uint32_t i = 0; i < count; ++i) {
    const R& r = regions[i];
    const Where w{command, "pRegions", i};
    if (!aspects_ok(c, w, *sf, r.srcSubresource.aspectMask, false) || !layers_ok(c, w, *s, r.srcSubresource) ||
        !aspects_ok(c, w, *df, r.dstSubresource.aspectMask, false) || !layers_ok(c, w, *d, r.dstSubresource))
      return false;
    const Block sb = block_of(*sf, std::popcount(r.srcSubresource.aspectMask) == 1 ? r.srcSubresource.aspectMask : 0);
    const Block db = block_of(*df, std::popcount(r.dstSubresource.aspectMask) == 1 ? r.dstSubresource.aspectMask : 0);
    VkExtent3D dext = r.extent;
    dext.width = static_cast<uint32_t>(std::min<uint64_t>(UINT32_MAX, ceil_div(r.extent.width, sb.w) * db.w));
    dext.height = static_cast<uint32_t>(std::min<uint64_t>(UINT32_MAX, ceil_div(r.extent.height, sb.h) * db.h));
    if (!region_ok(c, w, *s, sb, r.srcSubresource, r.srcOffset, r.extent, mixed && s->type != VK_IMAGE_TYPE_3D,
                   "src") ||
        !region_ok(c, w, *d, db, r.dstSubresource, r.dstOffset, dext, mixed && d->type != VK_IMAGE_TYPE_3D, "dst"))
      return false;
  }
  return true;
}

// Blits name two corners per side; each lies inside the level (inclusive of its far edge).
bool corners_ok(wire::HostContext& c, const Where& w, const ImageFacts& im, const VkImageSubresourceLayers& s,
                const VkOffset3D (&offs)[2], const char* side) {
  const Dims lv = level_dims(im, s.mipLevel);
  const uint64_t dims[3] = {lv.w, lv.h, lv.d};
  for (int k = 0; k < 2; ++k) {
    const int32_t o[3] = {offs[k].x, offs[k].y, offs[k].z};
    for (int i = 0; i < 3; ++i)
      if (o[i] < 0 || static_cast<uint64_t>(o[i]) > dims[i])
        return violation(c, w, "{}Offsets[{}].{} {} is outside the {} texels of mip level {}", side, k, "xyz"[i], o[i],
                         dims[i], s.mipLevel);
  }
  return true;
}

template <class R>
bool blit_regions(wire::HostContext& c, const char* command, VkImage src, VkImage dst, uint32_t count,
                  const R* regions) {
  const Where w0{command};
  ImageFacts* s = usable_image(c, src, w0, "srcImage");
  ImageFacts* d = s ? usable_image(c, dst, w0, "dstImage") : nullptr;
  if (!d) return false;
  const wire::FormatInfo* sf = format_of(c, *s, w0);
  const wire::FormatInfo* df = sf ? format_of(c, *d, w0) : nullptr;
  if (!df) return false;
  for (uint32_t i = 0; i < count; ++i) {
    const R& r = regions[i];
    const Where w{command, "pRegions", i};
    if (!aspects_ok(c, w, *sf, r.srcSubresource.aspectMask, false) || !layers_ok(c, w, *s, r.srcSubresource) ||
        !aspects_ok(c, w, *df, r.dstSubresource.aspectMask, false) || !layers_ok(c, w, *d, r.dstSubresource) ||
        !corners_ok(c, w, *s, r.srcSubresource, r.srcOffsets, "src") ||
        !corners_ok(c, w, *d, r.dstSubresource, r.dstOffsets, "dst"))
      return false;
  }
  return true;
}

// A subresource range (views, clears): levels and layers inside the image, counts may be
// VK_REMAINING_*. `layer_limit`: layers the range may address (a 3D image's depth slices for a
// 2D view of it).
bool subresource_range_ok(wire::HostContext& c, const Where& w, const ImageFacts& im, const wire::FormatInfo& f,
                          const VkImageSubresourceRange& r, uint64_t layer_limit) {
  if (!aspects_ok(c, w, f, r.aspectMask, false)) return false;
  if (r.baseMipLevel >= im.mip_levels)
    return violation(c, w, "baseMipLevel {} is not below the image's {} levels", r.baseMipLevel, im.mip_levels);
  if (r.levelCount != VK_REMAINING_MIP_LEVELS &&
      (r.levelCount == 0 || add(r.baseMipLevel, r.levelCount) > im.mip_levels))
    return violation(c, w, "baseMipLevel {} + levelCount {} exceeds the image's {} levels", r.baseMipLevel,
                     r.levelCount, im.mip_levels);
  if (r.baseArrayLayer >= layer_limit)
    return violation(c, w, "baseArrayLayer {} is not below the image's {} layers", r.baseArrayLayer, layer_limit);
  if (r.layerCount != VK_REMAINING_ARRAY_LAYERS &&
      (r.layerCount == 0 || add(r.baseArrayLayer, r.layerCount) > layer_limit))
    return violation(c, w, "baseArrayLayer {} + layerCount {} exceeds the image's {} layers", r.baseArrayLayer,
                     r.layerCount, layer_limit);
  return true;
}

bool clear_ranges(wire::HostContext& c, const char* command, VkImage image, uint32_t count,
                  const VkImageSubresourceRange* ranges) {
  const Where w0{command};
  ImageFacts* im = usable_image(c, image, w0, "image");
  const wire::FormatInfo* f = im ? format_of(c, *im, w0) : nullptr;
  if (!f) return false;
  for (uint32_t i = 0; i < count; ++i)
    if (!subresource_range_ok(c, Where{command, "pRanges", i}, *im, *f, ranges[i], im->array_layers)) return false;
  return true;
}

// The descriptors a write or copy addresses, `count` from `element` of `binding` on: inside
// the binding or, as the spec allows, spilling into the following bindings of the same type,
// never past the set's last descriptor (the driver indexes its descriptor array with them).
// Inline uniform blocks count bytes and do not spill.
bool set_range_ok(wire::HostContext& c, const Where& w, const DescriptorSetFacts& set, const char* side,
                  uint32_t binding, uint32_t element, uint32_t count, VkDescriptorType type) {
  const auto& bs = set.layout->bindings;
  auto it = std::lower_bound(bs.begin(), bs.end(), binding,
                             [](const SetLayoutFacts::Binding& b, uint32_t n) { return b.binding < n; });
  auto count_of = [&](decltype(it) b) {
    return set.layout->variable_last && b + 1 == bs.end() ? set.variable_count : b->count;
  };
  if (it == bs.end() || it->binding != binding || count_of(it) == 0)
    return violation(c, w, "{}Binding {} is not a binding of the set's layout", side, binding);
  if (it->type != type)
    return violation(c, w, "descriptorType {} is not binding {}'s type {}", static_cast<int>(type), binding,
                     static_cast<int>(it->type));
  uint64_t skip = element, left = count;
  for (auto b = it; b != bs.end() && left; ++b) {
    const uint64_t n = count_of(b);
    if (n == 0) continue;
    if (b != it && b->type != type)
      return violation(c, w,
                       "{}ArrayElement {} + descriptorCount {} spills from binding {} into binding {} of another "
                       "type",
                       side, element, count, binding, b->binding);
    const uint64_t here = skip < n ? std::min(n - skip, left) : 0;
    skip = skip < n ? 0 : skip - n;
    left -= here;
    if (type == VK_DESCRIPTOR_TYPE_INLINE_UNIFORM_BLOCK) break;
  }
  if (left == 0) return true;
  return violation(c, w, "{}ArrayElement {} + descriptorCount {} exceeds the descriptors from binding {} on", side,
                   element, count, binding);
}

bool is_dynamic_descriptor(VkDescriptorType t) {
  return t == VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER_DYNAMIC || t == VK_DESCRIPTOR_TYPE_STORAGE_BUFFER_DYNAMIC;
}

// Calls f(binding, element) for each of `count` descriptors from `element` of `binding` on,
// spilling into the following bindings as set_range_ok allowed.
template <class F>
void for_each_descriptor(const DescriptorSetFacts& set, uint32_t binding, uint32_t element, uint32_t count, F f) {
  const auto& bs = set.layout->bindings;
  auto b = std::lower_bound(bs.begin(), bs.end(), binding,
                            [](const SetLayoutFacts::Binding& x, uint32_t n) { return x.binding < n; });
  uint64_t skip = element;
  for (; b != bs.end() && count; ++b) {
    const uint32_t n = set.layout->variable_last && b + 1 == bs.end() ? set.variable_count : b->count;
    for (uint64_t e = skip; e < n && count; ++e, --count) f(*b, static_cast<uint32_t>(e));
    skip = skip < n ? 0 : skip - n;
  }
}

bool is_buffer_descriptor(VkDescriptorType t) {
  return t == VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER || t == VK_DESCRIPTOR_TYPE_STORAGE_BUFFER ||
         t == VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER_DYNAMIC || t == VK_DESCRIPTOR_TYPE_STORAGE_BUFFER_DYNAMIC;
}

// Buffer descriptors: each range inside its buffer. A null buffer is the nullDescriptor
// feature's, which the driver handles.
bool buffer_infos_ok(wire::HostContext& c, const Where& w, const VkWriteDescriptorSet& wr) {
  for (uint32_t j = 0; j < wr.descriptorCount; ++j) {
    const VkDescriptorBufferInfo& info = wr.pBufferInfo[j];
    if (!info.buffer) continue;
    BufferFacts* b = session(c).resources().buffer(bits(info.buffer));
    if (!b) return violation(c, w, "pBufferInfo[{}].buffer was not created by this session's vkCreateBuffer", j);
    if (info.offset >= b->size)
      return violation(c, w, "pBufferInfo[{}].offset {} is not inside the buffer's {} bytes", j, info.offset, b->size);
    if (info.range != VK_WHOLE_SIZE && (info.range == 0 || add(info.offset, info.range) > b->size))
      return violation(c, w, "pBufferInfo[{}]: offset {} + range {} exceeds the buffer's {} bytes", j, info.offset,
                       info.range, b->size);
  }
  return true;
}

// Writes into sets (`push`: the set of a push-descriptor layout, whatever dstSet says).
bool descriptor_writes(wire::HostContext& c, const char* command, uint32_t count, const VkWriteDescriptorSet* writes,
                       const DescriptorSetFacts* push) {
  Resources& r = session(c).resources();
  for (uint32_t i = 0; i < count; ++i) {
    const VkWriteDescriptorSet& wr = writes[i];
    const Where w{command, "pDescriptorWrites", i};
    const DescriptorSetFacts* set = push ? push : r.descriptor_set(bits(wr.dstSet));
    if (!set) return violation(c, w, "dstSet was not allocated by this session's vkAllocateDescriptorSets");
    if (!set_range_ok(c, w, *set, "dst", wr.dstBinding, wr.dstArrayElement, wr.descriptorCount, wr.descriptorType))
      return false;
    if (is_buffer_descriptor(wr.descriptorType) && !buffer_infos_ok(c, w, wr)) return false;
  }
  return true;
}

bool descriptor_copies(wire::HostContext& c, uint32_t count, const VkCopyDescriptorSet* copies) {
  Resources& r = session(c).resources();
  for (uint32_t i = 0; i < count; ++i) {
    const VkCopyDescriptorSet& cp = copies[i];
    const Where w{"vkUpdateDescriptorSets", "pDescriptorCopies", i};
    const DescriptorSetFacts* src = r.descriptor_set(bits(cp.srcSet));
    const DescriptorSetFacts* dst = r.descriptor_set(bits(cp.dstSet));
    if (!src || !dst) return violation(c, w, "a set was not allocated by this session's vkAllocateDescriptorSets");
    const auto& bs = src->layout->bindings;
    auto it = std::find_if(bs.begin(), bs.end(),
                           [&](const SetLayoutFacts::Binding& b) { return b.binding == cp.srcBinding; });
    if (it == bs.end()) return violation(c, w, "srcBinding {} is not a binding of the set's layout", cp.srcBinding);
    if (!set_range_ok(c, w, *src, "src", cp.srcBinding, cp.srcArrayElement, cp.descriptorCount, it->type) ||
        !set_range_ok(c, w, *dst, "dst", cp.dstBinding, cp.dstArrayElement, cp.descriptorCount, it->type))
      return false;
  }
  return true;
}

// `count` records of `stride` bytes, each `size` bytes, from `offset`.
bool records_within(wire::HostContext& c, const Where& w, uint64_t offset, uint32_t count, uint32_t stride,
                    uint64_t size, uint64_t limit) {
  if (!aligned4(c, w, "offset", offset)) return false;
  if (count == 0) return true;
  if (count > 1 && (stride % 4 != 0 || stride < size))
    return violation(c, w, "stride {} is not a multiple of 4 of at least {} bytes", stride, size);
  const uint64_t span = add(mul(count - 1, stride), size);
  if (add(offset, span) <= limit) return true;
  if (count == 1) return violation(c, w, "offset {} + {} bytes exceeds the buffer's {} bytes", offset, size, limit);
  return violation(c, w, "offset {} + {} records of stride {} ({} bytes) exceeds the buffer's {} bytes", offset, count,
                   stride, span, limit);
}

// ---------------------------------------------------------------- memory, buffers, images
bool check_vkAllocateMemory(wire::HostContext& c, wire::Args_vkAllocateMemory& a) {
  if (a.pAllocateInfo->allocationSize != 0) return true;
  spdlog::warn("session {}: vkAllocateMemory.pAllocateInfo: allocationSize is 0 (VK_ERROR_OUT_OF_DEVICE_MEMORY)",
               session(c).id());
  a.result = VK_ERROR_OUT_OF_DEVICE_MEMORY;
  return false;
}

void record_vkAllocateMemory(wire::HostContext& c, wire::Args_vkAllocateMemory& a) {
  session(c).resources().add_memory(bits(*a.pMemory),
                                    MemoryFacts{a.pAllocateInfo->allocationSize, a.pAllocateInfo->memoryTypeIndex, {}});
}

bool check_vkCreateBuffer(wire::HostContext& c, wire::Args_vkCreateBuffer& a) {
  const Where w{"vkCreateBuffer", "pCreateInfo"};
  if (a.pCreateInfo->size == 0) return violation(c, w, "size is 0");
  if (a.pCreateInfo->usage == 0) return violation(c, w, "usage is 0");
  return true;
}

void record_vkCreateBuffer(wire::HostContext& c, wire::Args_vkCreateBuffer& a) {
  session(c).resources().add_buffer(bits(*a.pBuffer), BufferFacts{a.pCreateInfo->size, a.pCreateInfo->flags, 0});
}

bool check_vkCreateImage(wire::HostContext& c, wire::Args_vkCreateImage& a) {
  Session& s = session(c);
  const VkImageCreateInfo& ci = *a.pCreateInfo;
  const Where w{"vkCreateImage", "pCreateInfo"};
  const VkExtent3D e = ci.extent;
  if (e.width == 0 || e.height == 0 || e.depth == 0)
    return violation(c, w, "extent {}x{}x{} has a dimension of 0", e.width, e.height, e.depth);
  if (ci.imageType == VK_IMAGE_TYPE_1D && (e.height != 1 || e.depth != 1))
    return violation(c, w, "a 1D image has extent {}x{}x{}, not Nx1x1", e.width, e.height, e.depth);
  if (ci.imageType == VK_IMAGE_TYPE_2D && e.depth != 1)
    return violation(c, w, "a 2D image has depth {}, not 1", e.depth);
  const uint32_t largest = std::max({e.width, e.height, e.depth});
  const uint32_t max_levels = static_cast<uint32_t>(std::bit_width(largest));  // floor(log2) + 1
  if (ci.mipLevels == 0 || ci.mipLevels > max_levels)
    return violation(c, w, "mipLevels {} is not in 1..{} for extent {}x{}x{}", ci.mipLevels, max_levels, e.width,
                     e.height, e.depth);
  if (ci.arrayLayers == 0) return violation(c, w, "arrayLayers is 0");
  if (ci.imageType == VK_IMAGE_TYPE_3D && ci.arrayLayers != 1)
    return violation(c, w, "a 3D image has arrayLayers {}, not 1", ci.arrayLayers);
  if (ci.format == VK_FORMAT_UNDEFINED) return violation(c, w, "format is VK_FORMAT_UNDEFINED");
  if (ci.usage == 0) return violation(c, w, "usage is 0");
  // Cube-compatible wants 6 layers to view as a cube. Its square extent is for the cube views, not
  // the image: zink flags non-square 2D arrays cube-compatible, and lavapipe makes them as
  // natively (piglit's arb_get_texture_sub_image-get).
  if ((ci.flags & VK_IMAGE_CREATE_CUBE_COMPATIBLE_BIT) && ci.arrayLayers < 6)
    return violation(c, w, "a cube-compatible image has {} layers", ci.arrayLayers);
  // The device's limits for this format, type, tiling, usage and flags.
  const uint64_t dev = bits(a.device);
  const DeviceInfo* info = s.device_info(dev);
  auto query = s.dispatch_of(dev).vkGetPhysicalDeviceImageFormatProperties;
  if (!info || !query) return violation(c, w, "no physical device to check the image against");
  VkImageFormatProperties p{};
  const VkResult r = query(wire::handle_from_bits<VkPhysicalDevice>(info->physical_device), ci.format, ci.imageType,
                           ci.tiling, ci.usage, ci.flags, &p);
  if (r != VK_SUCCESS)
    return violation(c, w,
                     "format {}, type {}, tiling {}, usage 0x{:x}, flags 0x{:x} is not supported by the device ({})",
                     static_cast<int>(ci.format), static_cast<int>(ci.imageType), static_cast<int>(ci.tiling), ci.usage,
                     ci.flags, static_cast<int>(r));
  if (e.width > p.maxExtent.width || e.height > p.maxExtent.height || e.depth > p.maxExtent.depth)
    return violation(c, w, "extent {}x{}x{} exceeds the device's {}x{}x{}", e.width, e.height, e.depth,
                     p.maxExtent.width, p.maxExtent.height, p.maxExtent.depth);
  if (ci.mipLevels > p.maxMipLevels)
    return violation(c, w, "mipLevels {} exceeds the device's {}", ci.mipLevels, p.maxMipLevels);
  if (ci.arrayLayers > p.maxArrayLayers)
    return violation(c, w, "arrayLayers {} exceeds the device's {}", ci.arrayLayers, p.maxArrayLayers);
  if (!(ci.samples & p.sampleCounts)) {
    // Programs ask for more than this format, usage and flags allow, and drivers make them all
    // the same (zink asks lavapipe for 4-sample images its answer for their usage says 1 to):
    // what the device supports for any image is what no driver is unprepared for.
    VkPhysicalDeviceProperties props{};
    if (auto get = s.dispatch_of(dev).vkGetPhysicalDeviceProperties)
      get(wire::handle_from_bits<VkPhysicalDevice>(info->physical_device), &props);
    const VkPhysicalDeviceLimits& l = props.limits;
    const VkSampleCountFlags any = l.framebufferColorSampleCounts | l.framebufferDepthSampleCounts |
                                   l.framebufferStencilSampleCounts | l.sampledImageColorSampleCounts |
                                   l.sampledImageDepthSampleCounts | l.sampledImageStencilSampleCounts |
                                   l.sampledImageIntegerSampleCounts | l.storageImageSampleCounts;
    if (!(ci.samples & any))
      return violation(c, w, "samples {} is not among the device's 0x{:x}", static_cast<int>(ci.samples),
                       p.sampleCounts | any);
  }
  return true;
}

void record_vkCreateImage(wire::HostContext& c, wire::Args_vkCreateImage& a) {
  const VkImageCreateInfo& ci = *a.pCreateInfo;
  session(c).resources().add_image(
      bits(*a.pImage), ImageFacts{ci.imageType, ci.format, ci.extent, ci.mipLevels, ci.arrayLayers, ci.flags, 0});
}

bool check_vkCreateImageView(wire::HostContext& c, wire::Args_vkCreateImageView& a) {
  const VkImageViewCreateInfo& ci = *a.pCreateInfo;
  const Where w{"vkCreateImageView", "pCreateInfo"};
  ImageFacts* im = usable_image(c, ci.image, w, "image");
  const wire::FormatInfo* f = im ? format_of(c, *im, w) : nullptr;
  if (!f) return false;
  uint64_t layers = im->array_layers;
  // A 2D (array) view of a 3D image addresses its depth slices as layers.
  if (im->type == VK_IMAGE_TYPE_3D &&
      (ci.viewType == VK_IMAGE_VIEW_TYPE_2D || ci.viewType == VK_IMAGE_VIEW_TYPE_2D_ARRAY) &&
      ci.subresourceRange.baseMipLevel < im->mip_levels)
    layers = std::max(layers, level_dims(*im, ci.subresourceRange.baseMipLevel).d);
  return subresource_range_ok(c, Where{"vkCreateImageView", "pCreateInfo->subresourceRange"}, *im, *f,
                              ci.subresourceRange, layers);
}

bool check_vkCreateBufferView(wire::HostContext& c, wire::Args_vkCreateBufferView& a) {
  const VkBufferViewCreateInfo& ci = *a.pCreateInfo;
  const Where w{"vkCreateBufferView", "pCreateInfo"};
  BufferFacts* b = usable_buffer(c, ci.buffer, w, "buffer");
  return b && range_within(c, w, "offset", ci.offset, "range", ci.range, b->size);
}

// A bind: the object known and not yet bound, the memory known, the driver's requirements met
// inside the guest's allocation (and the create size too: a driver's requirement computed
// from a huge size may have wrapped).
bool bind_ok(wire::HostContext& c, const Where& w, bool already_bound, VkDeviceMemory memory, uint64_t offset,
             const VkMemoryRequirements& req, uint64_t create_size) {
  if (already_bound) return violation(c, w, "the object is already bound to memory");
  if (!memory) return violation(c, w, "memory is VK_NULL_HANDLE");
  MemoryFacts* m = session(c).resources().memory(bits(memory));
  if (!m) return violation(c, w, "memory was not allocated by this session's vkAllocateMemory");
  if (req.alignment && offset % req.alignment)
    return violation(c, w, "memoryOffset {} is not a multiple of the required alignment {}", offset, req.alignment);
  if (m->type_index >= 32 || !(req.memoryTypeBits & (1u << m->type_index)))
    return violation(c, w, "memory type {} is not among the allowed 0x{:x}", m->type_index, req.memoryTypeBits);
  const uint64_t need = std::max(req.size, create_size);
  if (add(offset, need) > m->size)
    return violation(c, w, "memoryOffset {} + size {} exceeds the memory's {} bytes", offset, need, m->size);
  return true;
}

bool buffer_bind_ok(wire::HostContext& c, const Where& w, VkDevice device, VkBuffer buffer, VkDeviceMemory memory,
                    uint64_t offset) {
  Session& s = session(c);
  BufferFacts* b = s.resources().buffer(bits(buffer));
  if (!b) return violation(c, w, "buffer was not created by this session's vkCreateBuffer");
  VkMemoryRequirements req{};
  s.dispatch_of(bits(device)).vkGetBufferMemoryRequirements(device, buffer, &req);
  return bind_ok(c, w, b->memory != 0, memory, offset, req, b->size);
}

bool image_bind_ok(wire::HostContext& c, const Where& w, VkDevice device, VkImage image, VkDeviceMemory memory,
                   uint64_t offset) {
  Session& s = session(c);
  ImageFacts* im = s.resources().image(bits(image));
  if (!im) return violation(c, w, "image was not created by this session's vkCreateImage");
  VkMemoryRequirements req{};
  s.dispatch_of(bits(device)).vkGetImageMemoryRequirements(device, image, &req);
  return bind_ok(c, w, im->memory != 0, memory, offset, req, 0);
}

bool check_vkBindBufferMemory(wire::HostContext& c, wire::Args_vkBindBufferMemory& a) {
  return buffer_bind_ok(c, Where{"vkBindBufferMemory"}, a.device, a.buffer, a.memory, a.memoryOffset);
}
void record_vkBindBufferMemory(wire::HostContext& c, wire::Args_vkBindBufferMemory& a) {
  session(c).resources().bind_buffer(bits(a.buffer), bits(a.memory));
}
bool check_vkBindBufferMemory2(wire::HostContext& c, wire::Args_vkBindBufferMemory2& a) {
  for (uint32_t i = 0; i < a.bindInfoCount; ++i) {
    const VkBindBufferMemoryInfo& b = a.pBindInfos[i];
    if (!buffer_bind_ok(c, Where{"vkBindBufferMemory2", "pBindInfos", i}, a.device, b.buffer, b.memory, b.memoryOffset))
      return false;
    for (uint32_t j = 0; j < i; ++j)
      if (a.pBindInfos[j].buffer == b.buffer)
        return violation(c, Where{"vkBindBufferMemory2", "pBindInfos", i}, "the buffer is bound twice");
  }
  return true;
}
void record_vkBindBufferMemory2(wire::HostContext& c, wire::Args_vkBindBufferMemory2& a) {
  for (uint32_t i = 0; i < a.bindInfoCount; ++i)
    session(c).resources().bind_buffer(bits(a.pBindInfos[i].buffer), bits(a.pBindInfos[i].memory));
}
bool check_vkBindImageMemory(wire::HostContext& c, wire::Args_vkBindImageMemory& a) {
  return image_bind_ok(c, Where{"vkBindImageMemory"}, a.device, a.image, a.memory, a.memoryOffset);
}
void record_vkBindImageMemory(wire::HostContext& c, wire::Args_vkBindImageMemory& a) {
  session(c).resources().bind_image(bits(a.image), bits(a.memory));
}
bool check_vkBindImageMemory2(wire::HostContext& c, wire::Args_vkBindImageMemory2& a) {
  for (uint32_t i = 0; i < a.bindInfoCount; ++i) {
    const VkBindImageMemoryInfo& b = a.pBindInfos[i];
    if (!image_bind_ok(c, Where{"vkBindImageMemory2", "pBindInfos", i}, a.device, b.image, b.memory, b.memoryOffset))
      return false;
    for (uint32_t j = 0; j < i; ++j)
      if (a.pBindInfos[j].image == b.image)
        return violation(c, Where{"vkBindImageMemory2", "pBindInfos", i}, "the image is bound twice");
  }
  return true;
}
void record_vkBindImageMemory2(wire::HostContext& c, wire::Args_vkBindImageMemory2& a) {
  for (uint32_t i = 0; i < a.bindInfoCount; ++i)
    session(c).resources().bind_image(bits(a.pBindInfos[i].image), bits(a.pBindInfos[i].memory));
}

// ---------------------------------------------------------------- descriptors
// The driver sizes a layout's tables by its largest binding number.
constexpr uint32_t kMaxBindingNumber = 65535;

bool check_vkCreateDescriptorSetLayout(wire::HostContext& c, wire::Args_vkCreateDescriptorSetLayout& a) {
  const VkDescriptorSetLayoutCreateInfo& ci = *a.pCreateInfo;
  for (uint32_t i = 0; i < ci.bindingCount; ++i) {
    const Where w{"vkCreateDescriptorSetLayout", "pCreateInfo->pBindings", i};
    if (ci.pBindings[i].binding > kMaxBindingNumber)
      return violation(c, w, "binding {} is above the {} bypass allows", ci.pBindings[i].binding, kMaxBindingNumber);
    for (uint32_t j = 0; j < i; ++j)
      if (ci.pBindings[j].binding == ci.pBindings[i].binding)
        return violation(c, w, "binding {} appears twice", ci.pBindings[i].binding);
  }
  return true;
}

void record_vkCreateDescriptorSetLayout(wire::HostContext& c, wire::Args_vkCreateDescriptorSetLayout& a) {
  const VkDescriptorSetLayoutCreateInfo& ci = *a.pCreateInfo;
  auto facts = std::make_shared<SetLayoutFacts>();
  auto* flags = wire::find_in_chain<VkDescriptorSetLayoutBindingFlagsCreateInfo>(
      ci.pNext, VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_BINDING_FLAGS_CREATE_INFO);
  uint32_t variable = UINT32_MAX;  // the binding number whose count a set chooses
  for (uint32_t i = 0; i < ci.bindingCount; ++i) {
    const VkDescriptorSetLayoutBinding& b = ci.pBindings[i];
    facts->bindings.push_back({b.binding, b.descriptorType, b.descriptorCount});
    if (flags && i < flags->bindingCount && flags->pBindingFlags &&
        (flags->pBindingFlags[i] & VK_DESCRIPTOR_BINDING_VARIABLE_DESCRIPTOR_COUNT_BIT))
      variable = b.binding;
  }
  std::sort(facts->bindings.begin(), facts->bindings.end(),
            [](const auto& x, const auto& y) { return x.binding < y.binding; });
  for (auto& b : facts->bindings)
    if (is_dynamic_descriptor(b.type)) {
      b.dynamic_base = facts->dynamic_count;
      facts->dynamic_count += b.count;
    }
  facts->variable_last = !facts->bindings.empty() && facts->bindings.back().binding == variable;
  session(c).resources().add_set_layout(bits(*a.pSetLayout), std::move(facts));
}

bool check_vkAllocateDescriptorSets(wire::HostContext& c, wire::Args_vkAllocateDescriptorSets& a) {
  const VkDescriptorSetAllocateInfo& ai = *a.pAllocateInfo;
  auto* variable = wire::find_in_chain<VkDescriptorSetVariableDescriptorCountAllocateInfo>(
      ai.pNext, VK_STRUCTURE_TYPE_DESCRIPTOR_SET_VARIABLE_DESCRIPTOR_COUNT_ALLOCATE_INFO);
  for (uint32_t i = 0; i < ai.descriptorSetCount; ++i) {
    const Where w{"vkAllocateDescriptorSets", "pAllocateInfo->pSetLayouts", i};
    auto* layout = session(c).resources().set_layout(bits(ai.pSetLayouts[i]));
    if (!layout) return violation(c, w, "the layout was not created by this session's vkCreateDescriptorSetLayout");
    if (variable && variable->descriptorSetCount && (*layout)->variable_last && variable->pDescriptorCounts &&
        i < variable->descriptorSetCount && variable->pDescriptorCounts[i] > (*layout)->bindings.back().count)
      return violation(c, w, "variable descriptor count {} exceeds the binding's {}", variable->pDescriptorCounts[i],
                       (*layout)->bindings.back().count);
  }
  return true;
}

void record_vkAllocateDescriptorSets(wire::HostContext& c, wire::Args_vkAllocateDescriptorSets& a) {
  const VkDescriptorSetAllocateInfo& ai = *a.pAllocateInfo;
  auto* variable = wire::find_in_chain<VkDescriptorSetVariableDescriptorCountAllocateInfo>(
      ai.pNext, VK_STRUCTURE_TYPE_DESCRIPTOR_SET_VARIABLE_DESCRIPTOR_COUNT_ALLOCATE_INFO);
  Resources& r = session(c).resources();
  for (uint32_t i = 0; i < ai.descriptorSetCount; ++i) {
    auto* layout = r.set_layout(bits(ai.pSetLayouts[i]));
    if (!layout || !a.pDescriptorSets[i]) continue;
    DescriptorSetFacts set{*layout, 0, {}};
    if (variable && variable->pDescriptorCounts && i < variable->descriptorSetCount)
      set.variable_count = variable->pDescriptorCounts[i];
    set.dynamic_slack.assign((*layout)->dynamic_count, 0);
    r.add_descriptor_set(bits(a.pDescriptorSets[i]), std::move(set));
  }
}

// The driver keeps a pipeline layout's sets and push constants in fixed-size arrays.
bool check_vkCreatePipelineLayout(wire::HostContext& c, wire::Args_vkCreatePipelineLayout& a) {
  Session& s = session(c);
  const VkPipelineLayoutCreateInfo& ci = *a.pCreateInfo;
  const Where w{"vkCreatePipelineLayout", "pCreateInfo"};
  const DeviceInfo* info = s.device_info(bits(a.device));
  auto props = s.dispatch_of(bits(a.device)).vkGetPhysicalDeviceProperties;
  if (!info || !props) return violation(c, w, "no physical device to check the layout against");
  VkPhysicalDeviceProperties p{};
  props(wire::handle_from_bits<VkPhysicalDevice>(info->physical_device), &p);
  if (ci.setLayoutCount > p.limits.maxBoundDescriptorSets)
    return violation(c, w, "setLayoutCount {} exceeds the device's {}", ci.setLayoutCount,
                     p.limits.maxBoundDescriptorSets);
  for (uint32_t i = 0; i < ci.pushConstantRangeCount; ++i) {
    const VkPushConstantRange& r = ci.pPushConstantRanges[i];
    if (r.size == 0 || add(r.offset, r.size) > p.limits.maxPushConstantsSize)
      return violation(c, Where{"vkCreatePipelineLayout", "pCreateInfo->pPushConstantRanges", i},
                       "offset {} + size {} is not within the device's {} bytes of push constants", r.offset, r.size,
                       p.limits.maxPushConstantsSize);
  }
  return true;
}

void record_vkCreatePipelineLayout(wire::HostContext& c, wire::Args_vkCreatePipelineLayout& a) {
  Resources& r = session(c).resources();
  PipelineLayoutFacts facts;
  for (uint32_t i = 0; i < a.pCreateInfo->setLayoutCount; ++i) {
    auto* l = r.set_layout(bits(a.pCreateInfo->pSetLayouts[i]));
    facts.sets.push_back(l ? *l : nullptr);
  }
  for (uint32_t i = 0; i < a.pCreateInfo->pushConstantRangeCount; ++i) {
    const VkPushConstantRange& p = a.pCreateInfo->pPushConstantRanges[i];
    facts.push_end = std::max(facts.push_end, p.offset + p.size);  // checked above: no overflow
  }
  r.add_pipeline_layout(bits(*a.pPipelineLayout), std::move(facts));
}

bool check_vkCmdPushConstants(wire::HostContext& c, wire::Args_vkCmdPushConstants& a) {
  const Where w{"vkCmdPushConstants"};
  const PipelineLayoutFacts* l = session(c).resources().pipeline_layout(bits(a.layout));
  if (!l) return violation(c, w, "layout was not created by this session's vkCreatePipelineLayout");
  if (add(a.offset, a.size) > l->push_end)
    return violation(c, w, "offset {} + size {} exceeds the layout's {} bytes of push constants", a.offset, a.size,
                     l->push_end);
  return true;
}

// The sets bound replace sets firstSet.. of the layout, and take one dynamic offset per dynamic
// buffer descriptor: the driver indexes its per-set arrays and the offsets with them.
bool check_vkCmdBindDescriptorSets(wire::HostContext& c, wire::Args_vkCmdBindDescriptorSets& a) {
  const Where w{"vkCmdBindDescriptorSets"};
  Resources& r = session(c).resources();
  const PipelineLayoutFacts* l = r.pipeline_layout(bits(a.layout));
  if (!l) return violation(c, w, "layout was not created by this session's vkCreatePipelineLayout");
  if (add(a.firstSet, a.descriptorSetCount) > l->sets.size())
    return violation(c, w, "firstSet {} + descriptorSetCount {} exceeds the layout's {} sets", a.firstSet,
                     a.descriptorSetCount, l->sets.size());
  uint64_t dynamic = 0, dynamic_of_sets = 0;
  for (uint32_t i = 0; i < a.descriptorSetCount; ++i) {
    if (const auto& layout = l->sets[a.firstSet + i]) dynamic += layout->dynamic_count;
    if (!a.pDescriptorSets[i]) continue;
    const DescriptorSetFacts* set = r.descriptor_set(bits(a.pDescriptorSets[i]));
    if (!set)
      return violation(c, Where{"vkCmdBindDescriptorSets", "pDescriptorSets", i},
                       "the set was not allocated by this session's vkAllocateDescriptorSets");
    // Each dynamic offset moves one dynamic buffer descriptor: it must stay inside its buffer.
    for (size_t k = 0; k < set->dynamic_slack.size(); ++k) {
      const uint64_t at = dynamic_of_sets + k;
      if (at < a.dynamicOffsetCount && a.pDynamicOffsets[at] > set->dynamic_slack[k])
        return violation(c, w,
                         "pDynamicOffsets[{}] {} moves set {}'s dynamic descriptor {} past its buffer's end (at "
                         "most {})",
                         at, a.pDynamicOffsets[at], a.firstSet + i, k, set->dynamic_slack[k]);
    }
    dynamic_of_sets += set->layout->dynamic_count;
  }
  if (a.dynamicOffsetCount != dynamic || a.dynamicOffsetCount != dynamic_of_sets)
    return violation(c, w, "dynamicOffsetCount {} is not the {} dynamic descriptors of the sets", a.dynamicOffsetCount,
                     std::max(dynamic, dynamic_of_sets));
  return true;
}

bool check_vkUpdateDescriptorSets(wire::HostContext& c, wire::Args_vkUpdateDescriptorSets& a) {
  return descriptor_writes(c, "vkUpdateDescriptorSets", a.descriptorWriteCount, a.pDescriptorWrites, nullptr) &&
         descriptor_copies(c, a.descriptorCopyCount, a.pDescriptorCopies);
}

// Remembers how far each written dynamic buffer descriptor may be moved by a dynamic offset.
void record_vkUpdateDescriptorSets(wire::HostContext& c, wire::Args_vkUpdateDescriptorSets& a) {
  Resources& r = session(c).resources();
  for (uint32_t i = 0; i < a.descriptorWriteCount; ++i) {
    const VkWriteDescriptorSet& wr = a.pDescriptorWrites[i];
    DescriptorSetFacts* set = is_dynamic_descriptor(wr.descriptorType) ? r.descriptor_set(bits(wr.dstSet)) : nullptr;
    if (!set) continue;
    uint32_t j = 0;
    for_each_descriptor(*set, wr.dstBinding, wr.dstArrayElement, wr.descriptorCount,
                        [&](const SetLayoutFacts::Binding& b, uint32_t e) {
                          const VkDescriptorBufferInfo& info = wr.pBufferInfo[j++];
                          const BufferFacts* buf = info.buffer ? r.buffer(bits(info.buffer)) : nullptr;
                          uint64_t slack = 0;  // checked: offset (+ range) within the buffer
                          if (buf && info.range != VK_WHOLE_SIZE) slack = buf->size - info.offset - info.range;
                          set->dynamic_slack[b.dynamic_base + e] = slack;
                        });
  }
  for (uint32_t i = 0; i < a.descriptorCopyCount; ++i) {
    const VkCopyDescriptorSet& cp = a.pDescriptorCopies[i];
    DescriptorSetFacts* src = r.descriptor_set(bits(cp.srcSet));
    DescriptorSetFacts* dst = r.descriptor_set(bits(cp.dstSet));
    if (!src || !dst || !src->layout->dynamic_count) continue;
    std::vector<uint64_t> moved;  // copies of dynamic descriptors are rare: an allocation is fine
    for_each_descriptor(*src, cp.srcBinding, cp.srcArrayElement, cp.descriptorCount,
                        [&](const SetLayoutFacts::Binding& b, uint32_t e) {
                          moved.push_back(is_dynamic_descriptor(b.type) ? src->dynamic_slack[b.dynamic_base + e] : 0);
                        });
    size_t j = 0;
    for_each_descriptor(*dst, cp.dstBinding, cp.dstArrayElement, cp.descriptorCount,
                        [&](const SetLayoutFacts::Binding& b, uint32_t e) {
                          const uint64_t slack = j < moved.size() ? moved[j] : 0;
                          ++j;
                          if (is_dynamic_descriptor(b.type)) dst->dynamic_slack[b.dynamic_base + e] = slack;
                        });
  }
}

bool check_vkCmdPushDescriptorSetKHR(wire::HostContext& c, wire::Args_vkCmdPushDescriptorSetKHR& a) {
  const Where w{"vkCmdPushDescriptorSetKHR"};
  const PipelineLayoutFacts* l = session(c).resources().pipeline_layout(bits(a.layout));
  if (!l) return violation(c, w, "layout was not created by this session's vkCreatePipelineLayout");
  if (a.set >= l->sets.size() || !l->sets[a.set])
    return violation(c, w, "set {} is not a set of the pipeline layout's {}", a.set, l->sets.size());
  const DescriptorSetFacts push{l->sets[a.set], 0, {}};
  return descriptor_writes(c, "vkCmdPushDescriptorSetKHR", a.descriptorWriteCount, a.pDescriptorWrites, &push);
}

// ---------------------------------------------------------------- queries
bool check_vkCreateQueryPool(wire::HostContext& c, wire::Args_vkCreateQueryPool& a) {
  if (a.pCreateInfo->queryCount == 0) return violation(c, Where{"vkCreateQueryPool", "pCreateInfo"}, "queryCount is 0");
  return true;
}

void record_vkCreateQueryPool(wire::HostContext& c, wire::Args_vkCreateQueryPool& a) {
  const VkQueryPoolCreateInfo& ci = *a.pCreateInfo;
  QueryPoolFacts q{ci.queryType, ci.queryCount, 1};
  if (ci.queryType == VK_QUERY_TYPE_PIPELINE_STATISTICS)
    q.values = static_cast<uint32_t>(std::popcount(ci.pipelineStatistics));
  else if (ci.queryType == VK_QUERY_TYPE_TRANSFORM_FEEDBACK_STREAM_EXT)
    q.values = 2;
  session(c).resources().add_query_pool(bits(*a.pQueryPool), q);
}

// Queries first..first+count of a pool: the driver indexes its query array with them.
const QueryPoolFacts* queries(wire::HostContext& c, const Where& w, VkQueryPool pool, uint32_t first, uint32_t count) {
  const QueryPoolFacts* q = session(c).resources().query_pool(bits(pool));
  if (!q) {
    violation(c, w, "queryPool was not created by this session's vkCreateQueryPool");
    return nullptr;
  }
  if (first >= q->count || add(first, count) > q->count) {
    violation(c, w, "queries {} + {} exceed the pool's {}", first, count, q->count);
    return nullptr;
  }
  return q;
}

// Bytes one query's results take with these flags.
uint64_t result_size(const QueryPoolFacts& q, VkQueryResultFlags flags) {
  const uint64_t values = q.values + ((flags & VK_QUERY_RESULT_WITH_AVAILABILITY_BIT) ? 1 : 0);
  return values * ((flags & VK_QUERY_RESULT_64_BIT) ? 8 : 4);
}

bool check_vkCmdBeginQuery(wire::HostContext& c, wire::Args_vkCmdBeginQuery& a) {
  return queries(c, Where{"vkCmdBeginQuery"}, a.queryPool, a.query, 1);
}
bool check_vkCmdEndQuery(wire::HostContext& c, wire::Args_vkCmdEndQuery& a) {
  return queries(c, Where{"vkCmdEndQuery"}, a.queryPool, a.query, 1);
}
bool check_vkCmdBeginQueryIndexedEXT(wire::HostContext& c, wire::Args_vkCmdBeginQueryIndexedEXT& a) {
  return queries(c, Where{"vkCmdBeginQueryIndexedEXT"}, a.queryPool, a.query, 1);
}
bool check_vkCmdEndQueryIndexedEXT(wire::HostContext& c, wire::Args_vkCmdEndQueryIndexedEXT& a) {
  return queries(c, Where{"vkCmdEndQueryIndexedEXT"}, a.queryPool, a.query, 1);
}
bool check_vkCmdWriteTimestamp(wire::HostContext& c, wire::Args_vkCmdWriteTimestamp& a) {
  return queries(c, Where{"vkCmdWriteTimestamp"}, a.queryPool, a.query, 1);
}
bool check_vkCmdWriteTimestamp2(wire::HostContext& c, wire::Args_vkCmdWriteTimestamp2& a) {
  return queries(c, Where{"vkCmdWriteTimestamp2"}, a.queryPool, a.query, 1);
}
bool check_vkCmdResetQueryPool(wire::HostContext& c, wire::Args_vkCmdResetQueryPool& a) {
  return a.queryCount == 0 || queries(c, Where{"vkCmdResetQueryPool"}, a.queryPool, a.firstQuery, a.queryCount);
}
bool check_vkResetQueryPool(wire::HostContext& c, wire::Args_vkResetQueryPool& a) {
  return a.queryCount == 0 || queries(c, Where{"vkResetQueryPool"}, a.queryPool, a.firstQuery, a.queryCount);
}

bool check_vkCmdCopyQueryPoolResults(wire::HostContext& c, wire::Args_vkCmdCopyQueryPoolResults& a) {
  const Where w{"vkCmdCopyQueryPoolResults"};
  if (a.queryCount == 0) return true;
  const QueryPoolFacts* q = queries(c, w, a.queryPool, a.firstQuery, a.queryCount);
  BufferFacts* b = q ? usable_buffer(c, a.dstBuffer, w, "dstBuffer") : nullptr;
  if (!b) return false;
  const uint64_t size = result_size(*q, a.flags);
  if (a.dstOffset % 4 || (a.queryCount > 1 && a.stride % ((a.flags & VK_QUERY_RESULT_64_BIT) ? 8 : 4)))
    return violation(c, w, "dstOffset {} or stride {} is not aligned to the results", a.dstOffset, a.stride);
  const uint64_t span = add(mul(a.queryCount - 1, a.stride), size);
  if (add(a.dstOffset, span) <= b->size) return true;
  return violation(c, w, "dstOffset {} + {} results of stride {} ({} bytes) exceeds the buffer's {} bytes", a.dstOffset,
                   a.queryCount, a.stride, span, b->size);
}

// The driver writes the results into a dataSize-byte reply buffer of bypassd's own.
bool check_vkGetQueryPoolResults(wire::HostContext& c, wire::Args_vkGetQueryPoolResults& a) {
  const Where w{"vkGetQueryPoolResults"};
  const QueryPoolFacts* q = session(c).resources().query_pool(bits(a.queryPool));
  if (!q) return violation(c, w, "queryPool was not created by this session's vkCreateQueryPool");
  if (a.queryCount == 0) return true;
  if (a.firstQuery >= q->count || add(a.firstQuery, a.queryCount) > q->count)
    return refuse(c, &a.result, VK_ERROR_VALIDATION_FAILED_EXT, w, "queries {} + {} exceed the pool's {}", a.firstQuery,
                  a.queryCount, q->count);
  const uint64_t span = add(mul(a.queryCount - 1, a.stride), result_size(*q, a.flags));
  if (a.stride % ((a.flags & VK_QUERY_RESULT_64_BIT) ? 8 : 4) || span > a.dataSize)
    return refuse(c, &a.result, VK_ERROR_VALIDATION_FAILED_EXT, w,
                  "{} results of stride {} ({} bytes) do not fit dataSize {}", a.queryCount, a.stride, span,
                  a.dataSize);
  return true;
}

// ---------------------------------------------------------------- transfers
bool buffer_regions(wire::HostContext& c, const char* command, VkBuffer src, VkBuffer dst, uint32_t count,
                    const auto* regions) {
  const Where w0{command};
  BufferFacts* s = usable_buffer(c, src, w0, "srcBuffer");
  BufferFacts* d = s ? usable_buffer(c, dst, w0, "dstBuffer") : nullptr;
  if (!d) return false;
  for (uint32_t i = 0; i < count; ++i) {
    const auto& r = regions[i];
    const Where w{command, "pRegions", i};
    if (r.size == 0) return violation(c, w, "size is 0");
    if (!within(c, w, "srcOffset", r.srcOffset, "size", r.size, s->size) ||
        !within(c, w, "dstOffset", r.dstOffset, "size", r.size, d->size))
      return false;
  }
  return true;
}

bool check_vkCmdCopyBuffer(wire::HostContext& c, wire::Args_vkCmdCopyBuffer& a) {
  return buffer_regions(c, "vkCmdCopyBuffer", a.srcBuffer, a.dstBuffer, a.regionCount, a.pRegions);
}
bool check_vkCmdCopyBuffer2(wire::HostContext& c, wire::Args_vkCmdCopyBuffer2& a) {
  const VkCopyBufferInfo2& i = *a.pCopyBufferInfo;
  return buffer_regions(c, "vkCmdCopyBuffer2", i.srcBuffer, i.dstBuffer, i.regionCount, i.pRegions);
}
bool check_vkCmdCopyBufferToImage(wire::HostContext& c, wire::Args_vkCmdCopyBufferToImage& a) {
  return buffer_image_regions(c, "vkCmdCopyBufferToImage", a.srcBuffer, a.dstImage, a.regionCount, a.pRegions);
}
bool check_vkCmdCopyBufferToImage2(wire::HostContext& c, wire::Args_vkCmdCopyBufferToImage2& a) {
  const VkCopyBufferToImageInfo2& i = *a.pCopyBufferToImageInfo;
  return buffer_image_regions(c, "vkCmdCopyBufferToImage2", i.srcBuffer, i.dstImage, i.regionCount, i.pRegions);
}
bool check_vkCmdCopyImageToBuffer(wire::HostContext& c, wire::Args_vkCmdCopyImageToBuffer& a) {
  return buffer_image_regions(c, "vkCmdCopyImageToBuffer", a.dstBuffer, a.srcImage, a.regionCount, a.pRegions);
}
bool check_vkCmdCopyImageToBuffer2(wire::HostContext& c, wire::Args_vkCmdCopyImageToBuffer2& a) {
  const VkCopyImageToBufferInfo2& i = *a.pCopyImageToBufferInfo;
  return buffer_image_regions(c, "vkCmdCopyImageToBuffer2", i.dstBuffer, i.srcImage, i.regionCount, i.pRegions);
}
bool check_vkCmdCopyImage(wire::HostContext& c, wire::Args_vkCmdCopyImage& a) {
  return image_regions(c, "vkCmdCopyImage", a.srcImage, a.dstImage, a.regionCount, a.pRegions);
}
bool check_vkCmdCopyImage2(wire::HostContext& c, wire::Args_vkCmdCopyImage2& a) {
  const VkCopyImageInfo2& i = *a.pCopyImageInfo;
  return image_regions(c, "vkCmdCopyImage2", i.srcImage, i.dstImage, i.regionCount, i.pRegions);
}
bool check_vkCmdResolveImage(wire::HostContext& c, wire::Args_vkCmdResolveImage& a) {
  return image_regions(c, "vkCmdResolveImage", a.srcImage, a.dstImage, a.regionCount, a.pRegions);
}
bool check_vkCmdResolveImage2(wire::HostContext& c, wire::Args_vkCmdResolveImage2& a) {
  const VkResolveImageInfo2& i = *a.pResolveImageInfo;
  return image_regions(c, "vkCmdResolveImage2", i.srcImage, i.dstImage, i.regionCount, i.pRegions);
}
bool check_vkCmdBlitImage(wire::HostContext& c, wire::Args_vkCmdBlitImage& a) {
  return blit_regions(c, "vkCmdBlitImage", a.srcImage, a.dstImage, a.regionCount, a.pRegions);
}
bool check_vkCmdBlitImage2(wire::HostContext& c, wire::Args_vkCmdBlitImage2& a) {
  const VkBlitImageInfo2& i = *a.pBlitImageInfo;
  return blit_regions(c, "vkCmdBlitImage2", i.srcImage, i.dstImage, i.regionCount, i.pRegions);
}
bool check_vkCmdClearColorImage(wire::HostContext& c, wire::Args_vkCmdClearColorImage& a) {
  return clear_ranges(c, "vkCmdClearColorImage", a.image, a.rangeCount, a.pRanges);
}
bool check_vkCmdClearDepthStencilImage(wire::HostContext& c, wire::Args_vkCmdClearDepthStencilImage& a) {
  return clear_ranges(c, "vkCmdClearDepthStencilImage", a.image, a.rangeCount, a.pRanges);
}

bool check_vkCmdFillBuffer(wire::HostContext& c, wire::Args_vkCmdFillBuffer& a) {
  const Where w{"vkCmdFillBuffer"};
  BufferFacts* b = usable_buffer(c, a.dstBuffer, w, "dstBuffer");
  return b && aligned4(c, w, "dstOffset", a.dstOffset) && (a.size == VK_WHOLE_SIZE || aligned4(c, w, "size", a.size)) &&
         range_within(c, w, "dstOffset", a.dstOffset, "size", a.size, b->size);
}

bool check_vkCmdUpdateBuffer(wire::HostContext& c, wire::Args_vkCmdUpdateBuffer& a) {
  const Where w{"vkCmdUpdateBuffer"};
  BufferFacts* b = usable_buffer(c, a.dstBuffer, w, "dstBuffer");
  if (!b || !aligned4(c, w, "dstOffset", a.dstOffset) || !aligned4(c, w, "dataSize", a.dataSize)) return false;
  if (a.dataSize == 0 || a.dataSize > 65536) return violation(c, w, "dataSize {} is not in 1..65536", a.dataSize);
  return within(c, w, "dstOffset", a.dstOffset, "dataSize", a.dataSize, b->size);
}

// ---------------------------------------------------------------- draws and dispatches
bool indirect(wire::HostContext& c, const char* command, VkBuffer buffer, uint64_t offset, uint32_t count,
              uint32_t stride, uint64_t size) {
  const Where w{command};
  BufferFacts* b = usable_buffer(c, buffer, w, "buffer");
  return b && records_within(c, w, offset, count, stride, size, b->size);
}

bool count_buffer(wire::HostContext& c, const char* command, VkBuffer buffer, uint64_t offset) {
  const Where w{command, "countBuffer"};
  BufferFacts* b = usable_buffer(c, buffer, w, "countBuffer");
  return b && aligned4(c, w, "countBufferOffset", offset) &&
         within(c, w, "countBufferOffset", offset, "count", 4, b->size);
}

bool check_vkCmdDrawIndirect(wire::HostContext& c, wire::Args_vkCmdDrawIndirect& a) {
  return indirect(c, "vkCmdDrawIndirect", a.buffer, a.offset, a.drawCount, a.stride, sizeof(VkDrawIndirectCommand));
}
bool check_vkCmdDrawIndexedIndirect(wire::HostContext& c, wire::Args_vkCmdDrawIndexedIndirect& a) {
  return indirect(c, "vkCmdDrawIndexedIndirect", a.buffer, a.offset, a.drawCount, a.stride,
                  sizeof(VkDrawIndexedIndirectCommand));
}
bool check_vkCmdDrawIndirectCount(wire::HostContext& c, wire::Args_vkCmdDrawIndirectCount& a) {
  return indirect(c, "vkCmdDrawIndirectCount", a.buffer, a.offset, a.maxDrawCount, a.stride,
                  sizeof(VkDrawIndirectCommand)) &&
         count_buffer(c, "vkCmdDrawIndirectCount", a.countBuffer, a.countBufferOffset);
}
bool check_vkCmdDrawIndexedIndirectCount(wire::HostContext& c, wire::Args_vkCmdDrawIndexedIndirectCount& a) {
  return indirect(c, "vkCmdDrawIndexedIndirectCount", a.buffer, a.offset, a.maxDrawCount, a.stride,
                  sizeof(VkDrawIndexedIndirectCommand)) &&
         count_buffer(c, "vkCmdDrawIndexedIndirectCount", a.countBuffer, a.countBufferOffset);
}
bool check_vkCmdDispatchIndirect(wire::HostContext& c, wire::Args_vkCmdDispatchIndirect& a) {
  return indirect(c, "vkCmdDispatchIndirect", a.buffer, a.offset, 1, 0, sizeof(VkDispatchIndirectCommand));
}

bool check_vkCmdBindIndexBuffer(wire::HostContext& c, wire::Args_vkCmdBindIndexBuffer& a) {
  const Where w{"vkCmdBindIndexBuffer"};
  BufferFacts* b = usable_buffer(c, a.buffer, w, "buffer");
  if (!b) return false;
  if (a.offset >= b->size) return violation(c, w, "offset {} is not inside the buffer's {} bytes", a.offset, b->size);
  const uint64_t index_size = a.indexType == VK_INDEX_TYPE_UINT32 ? 4 : a.indexType == VK_INDEX_TYPE_UINT16 ? 2 : 1;
  if (a.offset % index_size)
    return violation(c, w, "offset {} is not a multiple of the index size {}", a.offset, index_size);
  return true;
}

bool vertex_buffers(wire::HostContext& c, const char* command, uint32_t count, const VkBuffer* buffers,
                    const VkDeviceSize* offsets, const VkDeviceSize* sizes) {
  for (uint32_t i = 0; i < count; ++i) {
    if (!buffers[i]) continue;  // nullDescriptor
    const Where w{command, "pBuffers", i};
    BufferFacts* b = usable_buffer(c, buffers[i], w, "the buffer");
    if (!b) return false;
    if (offsets[i] >= b->size)
      return violation(c, w, "pOffsets[{}] {} is not inside the buffer's {} bytes", i, offsets[i], b->size);
    if (sizes && sizes[i] != VK_WHOLE_SIZE && add(offsets[i], sizes[i]) > b->size)
      return violation(c, w, "pOffsets[{}] {} + pSizes[{}] {} exceeds the buffer's {} bytes", i, offsets[i], i,
                       sizes[i], b->size);
  }
  return true;
}

bool check_vkCmdBindVertexBuffers(wire::HostContext& c, wire::Args_vkCmdBindVertexBuffers& a) {
  return vertex_buffers(c, "vkCmdBindVertexBuffers", a.bindingCount, a.pBuffers, a.pOffsets, nullptr);
}
bool check_vkCmdBindVertexBuffers2(wire::HostContext& c, wire::Args_vkCmdBindVertexBuffers2& a) {
  return vertex_buffers(c, "vkCmdBindVertexBuffers2", a.bindingCount, a.pBuffers, a.pOffsets, a.pSizes);
}

// ---------------------------------------------------------------- Format queries
// A format this registry does not know (a newer Vulkan's, such as VK_KHR_maintenance5's
// VK_FORMAT_A1B5G5R5_UNORM_PACK16_KHR): the CTS, and programs built with newer headers, ask
// about such formats and get "unsupported" from a driver that does not know them. bypassd
// answers so itself, and the driver never sees a format it may not be prepared for.
bool format_known(wire::HostContext& c, const char* command, VkFormat format) {
  if (wire::valid_VkFormat(format)) return true;
  spdlog::debug("session {}: {}: format {} is unknown here: answered as unsupported", session(c).id(), command,
                static_cast<int>(format));
  return false;
}

bool check_vkGetPhysicalDeviceFormatProperties(wire::HostContext& c,
                                               wire::Args_vkGetPhysicalDeviceFormatProperties& a) {
  if (format_known(c, "vkGetPhysicalDeviceFormatProperties", a.format)) return true;
  *a.pFormatProperties = VkFormatProperties{};
  return false;
}

bool check_vkGetPhysicalDeviceFormatProperties2(wire::HostContext& c,
                                                wire::Args_vkGetPhysicalDeviceFormatProperties2& a) {
  if (format_known(c, "vkGetPhysicalDeviceFormatProperties2", a.format)) return true;
  a.pFormatProperties->formatProperties = VkFormatProperties{};
  for (auto* p = static_cast<VkBaseOutStructure*>(a.pFormatProperties->pNext); p; p = p->pNext) {
    switch (p->sType) {
      case VK_STRUCTURE_TYPE_FORMAT_PROPERTIES_3: {
        auto* f3 = reinterpret_cast<VkFormatProperties3*>(p);
        f3->linearTilingFeatures = f3->optimalTilingFeatures = f3->bufferFeatures = 0;
        break;
      }
      case VK_STRUCTURE_TYPE_DRM_FORMAT_MODIFIER_PROPERTIES_LIST_EXT:
        reinterpret_cast<VkDrmFormatModifierPropertiesListEXT*>(p)->drmFormatModifierCount = 0;
        break;
      case VK_STRUCTURE_TYPE_DRM_FORMAT_MODIFIER_PROPERTIES_LIST_2_EXT:
        reinterpret_cast<VkDrmFormatModifierPropertiesList2EXT*>(p)->drmFormatModifierCount = 0;
        break;
      default:
        break;
    }
  }
  return false;
}

bool check_vkGetPhysicalDeviceImageFormatProperties(wire::HostContext& c,
                                                    wire::Args_vkGetPhysicalDeviceImageFormatProperties& a) {
  if (format_known(c, "vkGetPhysicalDeviceImageFormatProperties", a.format)) return true;
  a.result = VK_ERROR_FORMAT_NOT_SUPPORTED;
  return false;
}

bool check_vkGetPhysicalDeviceImageFormatProperties2(wire::HostContext& c,
                                                     wire::Args_vkGetPhysicalDeviceImageFormatProperties2& a) {
  if (format_known(c, "vkGetPhysicalDeviceImageFormatProperties2", a.pImageFormatInfo->format)) return true;
  a.result = VK_ERROR_FORMAT_NOT_SUPPORTED;
  return false;
}

bool check_vkGetPhysicalDeviceSparseImageFormatProperties(
    wire::HostContext& c, wire::Args_vkGetPhysicalDeviceSparseImageFormatProperties& a) {
  if (format_known(c, "vkGetPhysicalDeviceSparseImageFormatProperties", a.format)) return true;
  *a.pPropertyCount = 0;
  return false;
}

bool check_vkGetPhysicalDeviceSparseImageFormatProperties2(
    wire::HostContext& c, wire::Args_vkGetPhysicalDeviceSparseImageFormatProperties2& a) {
  if (format_known(c, "vkGetPhysicalDeviceSparseImageFormatProperties2", a.pFormatInfo->format)) return true;
  *a.pPropertyCount = 0;
  return false;
}

}  // namespace

void register_validate_handlers(wire::Handlers& h) {
  h.check_vkGetPhysicalDeviceFormatProperties = check_vkGetPhysicalDeviceFormatProperties;
  h.check_vkGetPhysicalDeviceFormatProperties2 = check_vkGetPhysicalDeviceFormatProperties2;
  h.check_vkGetPhysicalDeviceImageFormatProperties = check_vkGetPhysicalDeviceImageFormatProperties;
  h.check_vkGetPhysicalDeviceImageFormatProperties2 = check_vkGetPhysicalDeviceImageFormatProperties2;
  h.check_vkGetPhysicalDeviceSparseImageFormatProperties = check_vkGetPhysicalDeviceSparseImageFormatProperties;
  h.check_vkGetPhysicalDeviceSparseImageFormatProperties2 = check_vkGetPhysicalDeviceSparseImageFormatProperties2;
  h.check_vkAllocateMemory = check_vkAllocateMemory;
  h.record_vkAllocateMemory = record_vkAllocateMemory;
  h.check_vkCreateBuffer = check_vkCreateBuffer;
  h.record_vkCreateBuffer = record_vkCreateBuffer;
  h.check_vkCreateImage = check_vkCreateImage;
  h.record_vkCreateImage = record_vkCreateImage;
  h.check_vkCreateImageView = check_vkCreateImageView;
  h.check_vkCreateBufferView = check_vkCreateBufferView;
  h.check_vkBindBufferMemory = check_vkBindBufferMemory;
  h.record_vkBindBufferMemory = record_vkBindBufferMemory;
  h.check_vkBindBufferMemory2 = check_vkBindBufferMemory2;
  h.record_vkBindBufferMemory2 = record_vkBindBufferMemory2;
  h.check_vkBindImageMemory = check_vkBindImageMemory;
  h.record_vkBindImageMemory = record_vkBindImageMemory;
  h.check_vkBindImageMemory2 = check_vkBindImageMemory2;
  h.record_vkBindImageMemory2 = record_vkBindImageMemory2;
  h.check_vkCreateDescriptorSetLayout = check_vkCreateDescriptorSetLayout;
  h.record_vkCreateDescriptorSetLayout = record_vkCreateDescriptorSetLayout;
  h.check_vkAllocateDescriptorSets = check_vkAllocateDescriptorSets;
  h.record_vkAllocateDescriptorSets = record_vkAllocateDescriptorSets;
  h.check_vkCreatePipelineLayout = check_vkCreatePipelineLayout;
  h.record_vkCreatePipelineLayout = record_vkCreatePipelineLayout;
  h.check_vkCmdPushConstants = check_vkCmdPushConstants;
  h.check_vkCmdBindDescriptorSets = check_vkCmdBindDescriptorSets;
  h.check_vkCreateQueryPool = check_vkCreateQueryPool;
  h.record_vkCreateQueryPool = record_vkCreateQueryPool;
  h.check_vkCmdBeginQuery = check_vkCmdBeginQuery;
  h.check_vkCmdEndQuery = check_vkCmdEndQuery;
  h.check_vkCmdBeginQueryIndexedEXT = check_vkCmdBeginQueryIndexedEXT;
  h.check_vkCmdEndQueryIndexedEXT = check_vkCmdEndQueryIndexedEXT;
  h.check_vkCmdWriteTimestamp = check_vkCmdWriteTimestamp;
  h.check_vkCmdWriteTimestamp2 = check_vkCmdWriteTimestamp2;
  h.check_vkCmdResetQueryPool = check_vkCmdResetQueryPool;
  h.check_vkResetQueryPool = check_vkResetQueryPool;
  h.check_vkCmdCopyQueryPoolResults = check_vkCmdCopyQueryPoolResults;
  h.check_vkGetQueryPoolResults = check_vkGetQueryPoolResults;
  h.check_vkUpdateDescriptorSets = check_vkUpdateDescriptorSets;
  h.record_vkUpdateDescriptorSets = record_vkUpdateDescriptorSets;
  h.check_vkCmdPushDescriptorSetKHR = check_vkCmdPushDescriptorSetKHR;
  h.check_vkCmdCopyBuffer = check_vkCmdCopyBuffer;
  h.check_vkCmdCopyBuffer2 = check_vkCmdCopyBuffer2;
  h.check_vkCmdCopyBufferToImage = check_vkCmdCopyBufferToImage;
  h.check_vkCmdCopyBufferToImage2 = check_vkCmdCopyBufferToImage2;
  h.check_vkCmdCopyImageToBuffer = check_vkCmdCopyImageToBuffer;
  h.check_vkCmdCopyImageToBuffer2 = check_vkCmdCopyImageToBuffer2;
  h.check_vkCmdCopyImage = check_vkCmdCopyImage;
  h.check_vkCmdCopyImage2 = check_vkCmdCopyImage2;
  h.check_vkCmdBlitImage = check_vkCmdBlitImage;
  h.check_vkCmdBlitImage2 = check_vkCmdBlitImage2;
  h.check_vkCmdResolveImage = check_vkCmdResolveImage;
  h.check_vkCmdResolveImage2 = check_vkCmdResolveImage2;
  h.check_vkCmdClearColorImage = check_vkCmdClearColorImage;
  h.check_vkCmdClearDepthStencilImage = check_vkCmdClearDepthStencilImage;
  h.check_vkCmdFillBuffer = check_vkCmdFillBuffer;
  h.check_vkCmdUpdateBuffer = check_vkCmdUpdateBuffer;
  h.check_vkCmdDrawIndirect = check_vkCmdDrawIndirect;
  h.check_vkCmdDrawIndexedIndirect = check_vkCmdDrawIndexedIndirect;
  h.check_vkCmdDrawIndirectCount = check_vkCmdDrawIndirectCount;
  h.check_vkCmdDrawIndexedIndirectCount = check_vkCmdDrawIndexedIndirectCount;
  h.check_vkCmdDispatchIndirect = check_vkCmdDispatchIndirect;
  h.check_vkCmdBindIndexBuffer = check_vkCmdBindIndexBuffer;
  h.check_vkCmdBindVertexBuffers = check_vkCmdBindVertexBuffers;
  h.check_vkCmdBindVertexBuffers2 = check_vkCmdBindVertexBuffers2;
}

}  // namespace bypass::host
