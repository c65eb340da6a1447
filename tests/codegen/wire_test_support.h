// Support for the generated wire tests (build/generated/tests/, made by codegen/gen_tests.py):
// a deterministic random source, a guest-side pool the random arguments live in, an identity
// handle map, a host context whose handlers record what the generated host code decoded, the
// compiled schema (flatc's commands.bfbs) for reflection checks, and the tables the generated
// code exports.
#pragma once

#include <flatbuffers/flatbuffers.h>
#include <flatbuffers/reflection.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "bypass/wire/host_context.h"

namespace bypass::wire::test {

// equal_X flags: kInto compares like the guest's decode into an output struct (pointer members
// stay the application's); kNoChain compares a chain link without following its pNext.
inline constexpr unsigned kInto = 1;
inline constexpr unsigned kNoChain = 2;

// Where a comparison failed, outermost first ("VkSubmitInfo.pCommandBuffers > ...").
struct Diff {
  std::string path;
  bool at(const std::string& where) {
    path = path.empty() ? where : where + " > " + path;
    return false;
  }
};

// splitmix64: deterministic on every platform, so a failure reproduces from its seed.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return n ? next() % n : 0; }
  bool one_in(uint64_t n) { return below(n) == 0; }

 private:
  uint64_t s_;
};

// Guest-side memory for random arguments: one heap block per allocation, so AddressSanitizer
// sees any encoder that reads past an array its count describes.
class Pool {
 public:
  template <class T>
  T* make(size_t n) {
    const size_t bytes = (n ? n : 1) * sizeof(T);
    blocks_.emplace_back(new std::byte[bytes]());
    return reinterpret_cast<T*>(blocks_.back().get());
  }
  void reset() { blocks_.clear(); }

 private:
  std::vector<std::unique_ptr<std::byte[]>> blocks_;
};

template <class P>
using Elem = std::remove_cv_t<std::remove_pointer_t<P>>;

struct Fill;
using LinkFn = VkBaseOutStructure* (*)(Fill&, int depth);

// Random values for the generated fillers. Depth bounds nesting: deeper structs get empty
// arrays, no optional pointers and no chains, so every random message stays small.
struct Fill {
  Rng& rng;
  Pool& pool;

  template <class T>
  void scalar(T& v) {
    if constexpr (requires { enum_values(T{}); }) {
      // An enum the host checks (enums.h): one of its values, as a valid guest sends.
      const EnumValueList list = enum_values(T{});
      v = static_cast<T>(list.values[rng.below(list.count)]);
    } else if constexpr (std::is_enum_v<T>) {
      // Small values hit the enumerants conditions test (descriptor types, sharing modes);
      // never negative, which is outside the range of most Vulkan enums.
      const uint64_t r = rng.one_in(8) ? (rng.next() & 0x7FFFFFFF) : rng.below(13);
      v = static_cast<T>(r);
    } else if constexpr (std::is_floating_point_v<T>) {
      bytes(&v, sizeof(v));
    } else {
      v = rng.one_in(4) ? T{} : static_cast<T>(rng.next());
    }
  }
  void bytes(void* p, size_t n) {
    auto* b = static_cast<uint8_t*>(p);
    for (size_t i = 0; i < n; i += 8) {
      const uint64_t r = rng.next();
      std::memcpy(b + i, &r, n - i < 8 ? n - i : 8);
    }
  }
  template <class H>
  H handle(bool optional) {
    if (optional && rng.one_in(4)) return H{};
    uint64_t bits = (rng.next() >> 8) | 1;
    H h;
    std::memcpy(&h, &bits, sizeof(h));
    return h;
  }
  void fixed_string(char* dst, size_t cap) {
    const size_t len = rng.below(cap < 16 ? cap : 16);
    for (size_t i = 0; i < len; ++i) dst[i] = static_cast<char>('a' + rng.below(26));
    dst[len] = 0;
  }
  const char* string(bool optional) {
    if (optional && rng.one_in(4)) return nullptr;
    const size_t len = rng.below(12);
    char* s = pool.make<char>(len + 1);
    fixed_string(s, len + 1);
    return s;
  }
  bool present(int depth, bool optional, bool top) {
    if (!optional) return true;
    if (depth >= 3) return false;
    return !rng.one_in(top ? 10 : 4);
  }
  size_t count(int depth, size_t limit) { return depth >= 3 ? 0 : static_cast<size_t>(rng.below(limit + 1)); }
  // A chain of up to two distinct structs drawn from `fns` (the structs that extend the owner).
  const void* chain(const LinkFn* fns, size_t n, int depth);
};

// Ids are the handles themselves on both sides; any non-zero id is a valid new id.
class IdentityHandles final : public HandleMap {
 public:
  uint64_t to_wire(VkObjectType, uint64_t handle) override { return handle; }
  bool from_wire(VkObjectType, uint64_t id, uint64_t* handle) override {
    *handle = id;
    return true;
  }
};

// The host side of a test: no driver (an empty dispatch table; the handlers never call it),
// handlers that read every decoded input, write random outputs the way a driver would, and
// hand a copy of the decoded arguments to the case that expects them.
class TestHost final : public HostContext {
 public:
  explicit TestHost(Fill& f) : fill(&f) {
    decode.arena = &arena;
    decode.handles = &ids;
    decode.check_values = true;  // as bypassd: enum values must be the covered API's
    handlers = test_handlers_();
  }
  Arena arena{size_t{64} << 20};
  IdentityHandles ids;
  Fill* fill;
  Dispatch empty;

  // The case that waits for its arguments; other commands' handlers (hostile input) only
  // touch theirs.
  void expect(uint16_t id, void* slot, size_t size) {
    expect_id_ = id;
    slot_ = slot;
    slot_size_ = size;
  }
  void capture(uint16_t id, const void* args, size_t size) {
    if (id != expect_id_ || !slot_ || size != slot_size_) return;
    std::memcpy(slot_, args, size);
    called = true;
  }
  // Clears per-record state, as a session does before each record.
  void begin_record() {
    arena.reset();
    decode.clear();
    called = false;
    replies = 0;
    job = nullptr;
  }

  bool called = false;
  int replies = 0;
  uint16_t reply_command = 0;
  int32_t reply_result = 0;
  uint64_t reply_seq_seen = 0;
  std::unique_ptr<uint8_t[]> reply;
  size_t reply_size = 0;
  std::function<void()> job;  // a blocking call's job, kept alive until the next record

  const Dispatch& dispatch_of(uint64_t) override { return empty; }
  const char* refuse_new_id(VkObjectType, uint64_t) override { return nullptr; }
  bool destroy_ok(const char*, const char*, uint64_t) override { return true; }
  void add_object(VkObjectType, uint64_t, uint64_t, uint64_t) override {}
  void remove_object(VkObjectType, uint64_t) override {}
  void send_reply(uint64_t seq, uint16_t command, int32_t result, Builder& b) override {
    ++replies;
    reply_seq_seen = seq;
    reply_command = command;
    reply_result = result;
    reply_size = b.GetSize();
    reply.reset(new uint8_t[reply_size ? reply_size : 1]);
    std::memcpy(reply.get(), b.GetBufferPointer(), reply_size);
  }
  bool run_blocking(std::function<void()> j) override {
    job = std::move(j);
    job();
    return true;
  }
  Builder& reply_builder() override { return reply_builder_; }

 private:
  static Handlers test_handlers_();
  Builder reply_builder_{1024};
  uint16_t expect_id_ = 0xFFFF;
  void* slot_ = nullptr;
  size_t slot_size_ = 0;
};

// flatc's binary schema of the protocol (BYPASS_SCHEMA_BFBS), loaded once.
class Schema {
 public:
  static const Schema& get();
  const reflection::Object* object(const std::string& name) const;
  // Verifies `buf` as a `table` with flatbuffers' reflection verifier, then every pNext link's
  // nested buffer as the table its sType names.
  bool verify(const std::string& table, const uint8_t* buf, size_t size, std::string* why) const;
  const reflection::Schema* schema = nullptr;

 private:
  bool walk(const reflection::Object& obj, const flatbuffers::Table& t, std::string* why, int depth) const;
  std::string bytes_;
};

struct Env {
  explicit Env(uint64_t seed) : rng(seed) {}
  Rng rng;
  Pool pool;
  Fill fill{rng, pool};
  Builder b{1024};
  Packed packed;  // fixed-layout records with trailing arrays
  IdentityHandles handles;
  TestHost host{fill};
  Arena guest_arena{size_t{64} << 20};
  const Schema& schema = Schema::get();
  std::unique_ptr<uint8_t[]> msg;
  size_t msg_size = 0;

  // An exact-size heap copy, so AddressSanitizer sees a decoder reading past the message.
  void set_message(const void* p, size_t n) {
    msg.reset(new uint8_t[n ? n : 1]);
    std::memcpy(msg.get(), p, n);
    msg_size = n;
  }
  // Runs one record through the generated host run table, as a session does.
  bool run(uint16_t id, const uint8_t* p, size_t n) {
    host.begin_record();
    return kRunTable[id](host, p, n);
  }
  DecodeContext guest_context() {
    guest_arena.reset();
    return DecodeContext{&guest_arena, &handles, {}};
  }
  void reset() {
    host.begin_record();
    host.expect(0xFFFF, nullptr, 0);
    pool.reset();
  }
};

// One command's generated round trip (Case_vkX).
struct CommandCase {
  CommandCase(const char* n, uint16_t i, bool f, bool s) : name(n), id(i), fixed(f), sync(s) {}
  virtual ~CommandCase() = default;
  const char* name;
  uint16_t id;
  bool fixed;
  bool sync;
  // Random arguments, encoded as the guest does; the message lands in e.msg and the host
  // context is told to capture this command's decoded arguments.
  virtual void make(Env& e) = 0;
  // The host's decoded arguments equal the guest's.
  virtual bool check_args(Diff& d) = 0;
  // Guest side of the reply: decodes into this case's output storage.
  virtual bool decode_reply(DecodeContext&, const uint8_t*, size_t) { return true; }
  // The guest's decoded outputs equal what the host's handler wrote.
  virtual bool check_reply(Diff&) { return true; }
  virtual int32_t reply_result() const { return 0; }
};

struct CommandCaseInfo {
  const char* name;
  uint16_t id;
  bool fixed;
  bool sync;
  std::unique_ptr<CommandCase> (*make)();
};
struct StructCase {
  const char* name;
  bool (*roundtrip)(Env&, Diff&);
};
struct FieldSlot {
  const char* name;
  size_t offset;  // voffset for tables, byte offset for structs
};
struct TableLayout {
  const char* table;
  const FieldSlot* fields;
  size_t count;
};
struct FixedLayout {
  const char* name;
  size_t size;
  size_t align;
  const FieldSlot* fields;
  size_t count;
};
struct CommandIdEntry {
  const char* name;
  uint16_t id;
};

// Generated tables (tables.cpp).
extern const StructCase kStructCases[];
extern const size_t kStructCaseCount;
extern const CommandCaseInfo kCommandCases[];
extern const size_t kCommandCaseCount;
extern const TableLayout kTableLayouts[];
extern const size_t kTableLayoutCount;
extern const FixedLayout kFixedLayouts[];
extern const size_t kFixedLayoutCount;
extern const CommandIdEntry kCommandIdTable[];
extern const size_t kCommandIdCount;

// Generated (handlers.cpp, links.cpp).
Handlers test_handlers();
void fill_links(Fill& f, void* chain, int depth);
bool equal_link(const VkBaseOutStructure* a, const VkBaseOutStructure* b, Diff& d, unsigned flags);
const char* table_of_stype(int32_t stype);

// Chains (wire_test_support.cpp).
bool equal_chain(const void* a, const void* b, Diff& d, unsigned flags);
bool same_stypes(const void* a, const void* b);
// A zeroed chain with the same sTypes (array elements of an output share one skeleton).
void* clone_chain(Fill& f, const void* chain);

// Encode, verify against the schema, verify, decode, compare one random struct.
template <class T>
bool roundtrip_struct(Env& e, Diff& d, const char* name, void (*fill)(Fill&, T&, int, int),
                      Off (*encode)(Builder&, const T&, HandleMap&, bool), bool (*verify)(Verifier&, const Table*),
                      bool (*decode)(DecodeContext&, const Table*, T&, bool),
                      bool (*equal)(const T&, const T&, Diff&, unsigned)) {
  T x{};
  fill(e.fill, x, 0, 0);
  e.b.Clear();
  e.b.Finish(flatbuffers::Offset<Table>(encode(e.b, x, e.handles, true)));
  e.set_message(e.b.GetBufferPointer(), e.b.GetSize());
  std::string why;
  if (!e.schema.verify(std::string("bypass.wire.") + name, e.msg.get(), e.msg_size, &why))
    return d.at(std::string("schema verification: ") + why);
  const Table* t = verify_root(e.msg.get(), e.msg_size, verify);
  if (!t) return d.at("verify_" + std::string(name) + " rejected the encoder's output");
  T y{};
  e.host.begin_record();
  if (!decode(e.host.decode, t, y, false)) return d.at("decode: " + e.host.decode.error);
  return equal(x, y, d, 0);
}

}  // namespace bypass::wire::test
