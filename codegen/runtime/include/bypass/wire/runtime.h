// Runtime support for the generated wire code: the arena the host decodes into, handle
// translation, verification helpers and the batch record header.
//
// Everything a guest sends is hostile until verified. The generated `verify_*` functions run
// the FlatBuffers verifier over a whole message before any `decode_*` reads it, and decoders
// check every length against the counts the message itself declares, so a driver call never
// sees an array shorter than the count next to it.
#pragma once

#include <flatbuffers/flatbuffers.h>
#include <vulkan/vulkan.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace bypass::wire {

using Builder = flatbuffers::FlatBufferBuilder;
using Table = flatbuffers::Table;
using Verifier = flatbuffers::Verifier;
using Off = flatbuffers::uoffset_t;  // 0 means "field absent"
using TableVec = flatbuffers::Vector<flatbuffers::Offset<flatbuffers::Table>>;
using StringVec = flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>;
template <class T>
using Vec = flatbuffers::Vector<T>;

// Limits applied to every message a peer sends.
inline constexpr flatbuffers::uoffset_t kMaxDepth = 64;
inline constexpr flatbuffers::uoffset_t kMaxTables = 1u << 20;
inline constexpr size_t kMaxMessageBytes = size_t{256} << 20;

// Translates handles between a side's own values and wire ids.
//  guest: dispatchable handles are ICD objects carrying an id; non-dispatchable handles are
//         the ids themselves.
//  host:  ids map to the real driver's handles through the session's object table.
class HandleMap {
 public:
  virtual ~HandleMap() = default;
  virtual uint64_t to_wire(VkObjectType type, uint64_t handle) = 0;
  // Resolves a non-zero id; false when the id is unknown or of another type.
  virtual bool from_wire(VkObjectType type, uint64_t id, uint64_t* handle) = 0;
};

// An enum value as the application stored it. A C program may put any int in a VkFormat; C++
// must not load that as the enum type (UBSan's enum check), so the encoders copy its bits.
template <class E>
inline int32_t enum_bits(const E& e) {
  static_assert(std::is_enum_v<E> && sizeof(E) == sizeof(int32_t));
  int32_t v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

// Handles are pointers on every 64-bit ABI we support.
static_assert(sizeof(VkImage) == sizeof(uint64_t));
template <class H>
inline uint64_t handle_bits(H h) {
  return reinterpret_cast<uint64_t>(h);
}
template <class H>
inline H handle_from_bits(uint64_t b) {
  return reinterpret_cast<H>(b);
}

// The first structure of type `sType` in a pNext chain, or nullptr. Decoded chains live in
// the arena, so a host handler may adjust what it finds (a guest fd for the host's own).
template <class T>
inline T* find_in_chain(const void* chain, VkStructureType sType) {
  for (auto* p = static_cast<const VkBaseInStructure*>(chain); p; p = p->pNext)
    if (p->sType == sType) return reinterpret_cast<T*>(const_cast<VkBaseInStructure*>(p));
  return nullptr;
}

// Bump allocator for decoded arguments; everything is freed at once after the call.
// Allocations are zeroed and padded so a driver reading a little past a short array
// (e.g. codeSize not a multiple of 4) stays inside memory we own.
class Arena {
 public:
  explicit Arena(size_t cap = size_t{512} << 20) : cap_(cap) {}
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  void* alloc(size_t size, size_t align);
  template <class T>
  T* make(size_t n) {
    if (n > (cap_ / sizeof(T))) return nullptr;
    return static_cast<T*>(alloc(n * sizeof(T), alignof(T) < 8 ? 8 : alignof(T)));
  }
  void reset();
  size_t used() const { return used_; }

 private:
  struct Block {
    std::unique_ptr<std::byte[]> data;
    size_t size = 0;
    size_t pos = 0;
  };
  std::vector<Block> blocks_;
  size_t cap_;
  size_t used_ = 0;
};

// What kind of rule a failed record broke, for the host's end reason (host/end_reason.h).
enum class Fault : uint8_t {
  kMalformed,     // the message itself: framing, verification, sizes, a missing field
  kInvalidUsage,  // well-formed, but against a rule the host checks: unknown handle, bad enum
  kObjectLimit,   // the session's object limit (HostContext::refuse_new_id)
  kPendingLimit,  // the session's limit on pending blocking calls (HostContext::run_blocking)
  kDriver,        // the host's driver failed or lacks the call
};

struct DecodeContext {
  Arena* arena = nullptr;
  HandleMap* handles = nullptr;
  std::string error;  // first failure, "<where>: <what>"
  // The kind of the first failure: the one its fail() named, else what a callback whose refusal
  // the generated code then reports (an unknown id, a limit) set beforehand, else kMalformed.
  // Cleared with `error` for every record.
  Fault fault = Fault::kMalformed;
  // Set by the host: an enum value must be one the covered API defines (enums.h). The guest
  // leaves it clear, so a newer host driver's values in outputs do not fail a reply.
  bool check_values = false;

  bool fail(const char* where, const char* what) {
    if (error.empty()) {
      error = where;
      error += ": ";
      error += what;
    }
    return false;
  }
  bool fail(const char* where, const char* what, Fault kind) {
    if (error.empty()) fault = kind;
    return fail(where, what);
  }
  // For a callback about to refuse (the generated caller then calls fail without a kind).
  void expect_fault(Fault kind) {
    if (error.empty()) fault = kind;
  }
  void clear() {
    error.clear();
    fault = Fault::kMalformed;
  }
};

// An enum value outside its type's range or values: "<where>: <value> is not a valid <type>".
bool fail_enum(DecodeContext& c, const char* where, const char* type, int64_t value);

// One record of a batch: [RecordHeader][payload], size includes the header, 8-byte aligned.
struct RecordHeader {
  uint32_t size;
  uint16_t command;
  uint16_t flags;
};
static_assert(sizeof(RecordHeader) == 8);
inline constexpr uint16_t kRecordWantsReply = 1;  // the guest waits for a reply to this one
inline constexpr uint16_t kRecordFixed = 2;       // payload is a fixed-layout struct

// Reply header on the reply ring, followed by the reply FlatBuffer.
struct ReplyHeader {
  uint64_t seq;  // count of kRecordWantsReply records before this one, from 1
  uint32_t command;
  int32_t result;  // VkResult, or a bypass error below
};
static_assert(sizeof(ReplyHeader) == 16);

// ---------------------------------------------------------------- verification helpers
inline bool verify_table_field(Verifier& v, const Table* t, flatbuffers::voffset_t vo,
                               bool (*fn)(Verifier&, const Table*)) {
  if (!t->VerifyOffset(v, vo)) return false;
  auto* s = t->GetPointer<const Table*>(vo);
  return !s || fn(v, s);
}
inline bool verify_table_vector(Verifier& v, const Table* t, flatbuffers::voffset_t vo,
                                bool (*fn)(Verifier&, const Table*)) {
  if (!t->VerifyOffset(v, vo)) return false;
  auto* vec = t->GetPointer<const TableVec*>(vo);
  if (!vec) return true;
  if (!v.VerifyVector(vec)) return false;
  for (flatbuffers::uoffset_t i = 0; i < vec->size(); ++i) {
    if (!fn(v, vec->Get(i))) return false;
  }
  return true;
}
template <class T>
inline bool verify_vector_field(Verifier& v, const Table* t, flatbuffers::voffset_t vo) {
  if (!t->VerifyOffset(v, vo)) return false;
  auto* vec = t->GetPointer<const Vec<T>*>(vo);
  // The verifier checks only the length word's alignment; decoders read elements in place and
  // hand scalar arrays straight to the driver, so a hostile vector of 8-byte elements at a
  // 4-byte boundary must be rejected (the buffer itself is 8-aligned, see verify_root). The
  // builder does not align empty vectors, and nothing is read from them.
  return v.VerifyVector(vec) &&
         (!vec || vec->size() == 0 || reinterpret_cast<uintptr_t>(vec->data()) % alignof(T) == 0);
}
inline bool verify_string_field(Verifier& v, const Table* t, flatbuffers::voffset_t vo) {
  return t->VerifyOffset(v, vo) && v.VerifyString(t->GetPointer<const flatbuffers::String*>(vo));
}
inline bool verify_string_vector_field(Verifier& v, const Table* t, flatbuffers::voffset_t vo) {
  if (!t->VerifyOffset(v, vo)) return false;
  auto* vec = t->GetPointer<const StringVec*>(vo);
  return !vec || (v.VerifyVector(vec) && v.VerifyVectorOfStrings(vec));
}

// Verifies a complete buffer whose root is a table checked by `fn`; nullptr if invalid.
const Table* verify_root(const uint8_t* data, size_t size, bool (*fn)(Verifier&, const Table*));

// ---------------------------------------------------------------- encoding helpers
template <class T>
inline void add_scalar(Builder& b, flatbuffers::voffset_t vo, T v) {
  b.AddElement<T>(vo, v, T{});
}
// Floats are compared by bits so -0.0 survives the default-value elision.
inline void add_scalar(Builder& b, flatbuffers::voffset_t vo, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if (bits) b.AddElement<float>(vo, v);
}
inline void add_scalar(Builder& b, flatbuffers::voffset_t vo, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  if (bits) b.AddElement<double>(vo, v);
}
inline void add_offset(Builder& b, flatbuffers::voffset_t vo, Off off) {
  if (off) b.AddOffset(vo, flatbuffers::Offset<void>(off));
}
inline Off table_vector(Builder& b, const Off* offs, size_t n) {
  b.StartVector(n, sizeof(Off));
  for (size_t i = n; i-- > 0;) b.PushElement(flatbuffers::Offset<void>(offs[i]));
  return b.EndVector(n);
}
inline Off handle_vector(Builder& b, HandleMap& h, VkObjectType type, const uint64_t* bits, size_t n) {
  b.StartVector(n, sizeof(uint64_t));
  for (size_t i = n; i-- > 0;) b.PushElement<uint64_t>(bits[i] ? h.to_wire(type, bits[i]) : 0);
  return b.EndVector(n);
}
// Handles straight from the application's array: no intermediate copy on the hot path.
template <class H>
inline Off handle_array_vector(Builder& b, HandleMap& h, VkObjectType type, const H* handles, size_t n) {
  b.StartVector(n, sizeof(uint64_t));
  for (size_t i = n; i-- > 0;) {
    const uint64_t bits = handle_bits(handles[i]);
    b.PushElement<uint64_t>(bits ? h.to_wire(type, bits) : 0);
  }
  return b.EndVector(n);
}
// Element offsets collected before their vector is written: on the stack for the short arrays
// of nearly every call, so encoding one allocates nothing.
template <class T, size_t N = 16>
class StackBuf {
 public:
  explicit StackBuf(size_t n) : p_(n <= N ? local_ : (heap_ = std::make_unique<T[]>(n)).get()) {}
  StackBuf(const StackBuf&) = delete;
  StackBuf& operator=(const StackBuf&) = delete;
  T* data() { return p_; }
  T& operator[](size_t i) { return p_[i]; }

 private:
  T local_[N];
  std::unique_ptr<T[]> heap_;
  T* p_;
};
template <class T>
inline Off scalar_vector(Builder& b, const T* p, size_t n) {
  return b.CreateVector(p, n).o;
}
inline Off bytes_vector(Builder& b, const void* p, size_t n) {
  b.ForceVectorAlignment(n, 1, 8);
  return b.CreateVector(static_cast<const uint8_t*>(p), n).o;
}

// A fixed-layout record with trailing arrays, as the guest builds it: the command's struct, then
// each array's bytes, every piece starting 8-aligned. One buffer per thread, reused, so a record
// costs no allocation once the buffer has grown to the largest one.
class Packed {
 public:
  static constexpr size_t align(size_t n) { return (n + 7) & ~size_t{7}; }
  // Starts a record with its struct.
  void start(const void* head, size_t size) {
    bytes_.clear();
    put(head, size);
  }
  // Appends `size` bytes from `p` (zeros when p is null: an application's missing array, which
  // the host then sees as zeros, not as memory we would read through a null pointer).
  void put(const void* p, size_t size) {
    const size_t at = bytes_.size();
    bytes_.resize(at + align(size));
    if (size && p) std::memcpy(bytes_.data() + at, p, size);
    if (!p) std::memset(bytes_.data() + at, 0, size);
    std::memset(bytes_.data() + at + size, 0, align(size) - size);
  }
  // Room for n elements of T, to fill in place (handle ids).
  template <class T>
  T* reserve(size_t n) {
    const size_t at = bytes_.size();
    bytes_.resize(at + align(n * sizeof(T)));
    std::memset(bytes_.data() + at, 0, align(n * sizeof(T)));
    return reinterpret_cast<T*>(bytes_.data() + at);
  }
  const uint8_t* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }

 private:
  std::vector<uint8_t> bytes_;
};
// The calling thread's record buffer.
Packed& thread_packed();

// The host's reading of a packed record: each trailing array's place, checked against the
// record's size before anything reads it. A count that does not fit, or bytes left over, is a
// malformed record.
class Unpacked {
 public:
  Unpacked(const uint8_t* data, size_t size, size_t head) : data_(data), size_(size), at_(Packed::align(head)) {}
  // `count` elements of `elem` bytes; nullptr with ok() false when they do not fit.
  const uint8_t* take(uint64_t count, size_t elem) {
    if (!ok_) return nullptr;
    if (count > (uint64_t{1} << 40) / elem) return fail();  // no multiplication overflow
    const uint64_t bytes = count * elem;
    if (at_ > size_ || bytes > size_ - at_) return fail();
    const uint8_t* p = data_ + at_;
    at_ += Packed::align(static_cast<size_t>(bytes));
    return count ? p : nullptr;
  }
  // Every byte accounted for, and the record 8-aligned in memory (its arrays are handed to the
  // driver in place).
  bool done() const { return ok_ && at_ == size_ && reinterpret_cast<uintptr_t>(data_) % 8 == 0; }

 private:
  const uint8_t* fail() {
    ok_ = false;
    return nullptr;
  }
  const uint8_t* data_;
  size_t size_;
  size_t at_;
  bool ok_ = true;
};

// Unknown sType in a chain: skipped, reported once per type at debug level (BYPASS_LOG=debug).
void warn_unknown_stype(int32_t stype);

}  // namespace bypass::wire
