// Round trips of every struct and every command the protocol carries, with random contents:
// guest encode -> schema check (flatc's compiled schema, reflection verifier) -> host verify +
// decode -> deep compare; for commands with a reply, host handler outputs -> reply encode ->
// schema check -> guest decode -> deep compare. Also checks the schema layout the codecs
// assume (field ids of tables, offsets and sizes of fixed-layout structs) against flatc's.
#include <gtest/gtest.h>

#include <string>

#include "bypass/wire/gen/wire_tests.h"

namespace bypass::wire::test {
namespace {

constexpr int kStructIterations = 24;
constexpr int kCommandIterations = 24;

uint64_t seed_of(const char* name, int iteration) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (const char* p = name; *p; ++p) h = (h ^ static_cast<uint8_t>(*p)) * 0x100000001B3ull;
  return h + static_cast<uint64_t>(iteration);
}

TEST(WireRoundTrip, EveryStruct) {
  ASSERT_GT(kStructCaseCount, 300u);
  for (size_t i = 0; i < kStructCaseCount; ++i) {
    const StructCase& sc = kStructCases[i];
    for (int it = 0; it < kStructIterations; ++it) {
      Env e(seed_of(sc.name, it));
      Diff d;
      const bool ok = sc.roundtrip(e, d);
      ASSERT_TRUE(ok) << sc.name << " iteration " << it << ": " << d.path;
    }
  }
}

// One command, `iterations` random argument sets; returns false on the first failure.
void command_roundtrip(const CommandCaseInfo& info, int iterations) {
  auto c = info.make();
  for (int it = 0; it < iterations; ++it) {
    Env e(seed_of(info.name, it));
    e.reset();
    c->make(e);
    const std::string ctx = std::string(info.name) + " iteration " + std::to_string(it);
    if (!info.fixed) {
      std::string why;
      ASSERT_TRUE(e.schema.verify(std::string("bypass.wire.") + info.name + "_args", e.msg.get(), e.msg_size, &why))
          << ctx << ": " << why;
    }
    ASSERT_TRUE(e.run(info.id, e.msg.get(), e.msg_size))
        << ctx << ": host rejected a valid message: " << e.host.decode.error;
    ASSERT_TRUE(e.host.called) << ctx << ": handler not called";
    Diff d;
    ASSERT_TRUE(c->check_args(d)) << ctx << ": host decoded " << d.path << " differently";
    if (!info.sync) {
      EXPECT_EQ(e.host.replies, 0) << ctx;
      continue;
    }
    ASSERT_EQ(e.host.replies, 1) << ctx;
    EXPECT_EQ(e.host.reply_command, info.id) << ctx;
    EXPECT_EQ(e.host.reply_result, c->reply_result()) << ctx;
    std::string why;
    ASSERT_TRUE(e.schema.verify(std::string("bypass.wire.") + info.name + "_reply", e.host.reply.get(),
                                e.host.reply_size, &why))
        << ctx << ": " << why;
    DecodeContext gc = e.guest_context();
    ASSERT_TRUE(c->decode_reply(gc, e.host.reply.get(), e.host.reply_size))
        << ctx << ": guest rejected a valid reply: " << gc.error;
    Diff rd;
    ASSERT_TRUE(c->check_reply(rd)) << ctx << ": guest decoded reply " << rd.path << " differently";
  }
}

TEST(WireRoundTrip, EveryCommand) {
  ASSERT_GT(kCommandCaseCount, 250u);
  size_t fixed = 0, sync = 0;
  for (size_t i = 0; i < kCommandCaseCount; ++i) {
    const CommandCaseInfo& info = kCommandCases[i];
    fixed += info.fixed;
    sync += info.sync;
    SCOPED_TRACE(info.name);
    command_roundtrip(info, kCommandIterations);
    if (HasFatalFailure()) return;
  }
  std::printf("round trips: %zu structs, %zu commands (%zu fixed-layout, %zu with a reply), %d random sets each\n",
              kStructCaseCount, kCommandCaseCount, fixed, sync, kCommandIterations);
}

// Every id below the limit either has a run function and a case, or neither.
TEST(WireRoundTrip, RunTableMatchesCases) {
  std::vector<bool> has_case(kCommandIdLimit, false);
  for (size_t i = 0; i < kCommandCaseCount; ++i) {
    ASSERT_LT(kCommandCases[i].id, kCommandIdLimit);
    has_case[kCommandCases[i].id] = true;
  }
  for (uint16_t id = 0; id < kCommandIdLimit; ++id)
    EXPECT_EQ(kRunTable[id] != nullptr, has_case[id]) << "id " << id << " " << command_name(id);
}

TEST(WireSchema, TableFieldIdsMatchCompiledSchema) {
  const Schema& s = Schema::get();
  for (size_t i = 0; i < kTableLayoutCount; ++i) {
    const TableLayout& l = kTableLayouts[i];
    const reflection::Object* obj = s.object(l.table);
    ASSERT_NE(obj, nullptr) << l.table << " missing from commands.bfbs";
    EXPECT_FALSE(obj->is_struct()) << l.table;
    EXPECT_EQ(obj->fields()->size(), l.count) << l.table;
    for (size_t f = 0; f < l.count; ++f) {
      const reflection::Field* field = obj->fields()->LookupByKey(l.fields[f].name);
      ASSERT_NE(field, nullptr) << l.table << "." << l.fields[f].name;
      EXPECT_EQ(field->offset(), l.fields[f].offset) << l.table << "." << l.fields[f].name;
    }
  }
}

TEST(WireSchema, FixedLayoutsMatchCompiledSchema) {
  const Schema& s = Schema::get();
  ASSERT_GT(kFixedLayoutCount, 0u);
  for (size_t i = 0; i < kFixedLayoutCount; ++i) {
    const FixedLayout& l = kFixedLayouts[i];
    const reflection::Object* obj = s.object(l.name);
    ASSERT_NE(obj, nullptr) << l.name << " missing from commands.bfbs";
    EXPECT_TRUE(obj->is_struct()) << l.name;
    EXPECT_EQ(static_cast<size_t>(obj->bytesize()), l.size) << l.name;
    EXPECT_EQ(static_cast<size_t>(obj->minalign()), l.align) << l.name;
    EXPECT_EQ(obj->fields()->size(), l.count) << l.name;
    for (size_t f = 0; f < l.count; ++f) {
      const reflection::Field* field = obj->fields()->LookupByKey(l.fields[f].name);
      ASSERT_NE(field, nullptr) << l.name << "." << l.fields[f].name;
      EXPECT_EQ(field->offset(), l.fields[f].offset) << l.name << "." << l.fields[f].name;
    }
  }
}

}  // namespace
}  // namespace bypass::wire::test
