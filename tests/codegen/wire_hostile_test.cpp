// Hostile input against every generated host run function (kRunTable) and every guest reply
// decoder: truncated, oversized, wrong-type (another command's message under this id),
// bit-flipped and random buffers. Nothing may crash or read outside the buffer (run these
// under -DBYPASS_SANITIZE=ON); every rejection carries a reason. The test host has no driver:
// its handlers read every decoded input by the counts next to it and write outputs the way a
// driver would, so a decoder that hands out an array shorter than its count is caught by
// AddressSanitizer here.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "bypass/wire/gen/wire_tests.h"

namespace bypass::wire::test {
namespace {

struct Sample {
  uint16_t id;
  const char* name;
  std::vector<uint8_t> bytes;
};

struct Corpus {
  std::vector<Sample> messages;  // every command
  std::vector<Sample> replies;   // every command with a reply
};

// One valid message (and reply) per command, from the generated round trips.
const Corpus& corpus() {
  static const Corpus* c = [] {
    auto* out = new Corpus;
    for (size_t i = 0; i < kCommandCaseCount; ++i) {
      const CommandCaseInfo& info = kCommandCases[i];
      Env e(1000 + i);
      auto cs = info.make();
      e.reset();
      cs->make(e);
      out->messages.push_back({info.id, info.name, std::vector<uint8_t>(e.msg.get(), e.msg.get() + e.msg_size)});
      if (!e.run(info.id, e.msg.get(), e.msg_size)) {
        std::fprintf(stderr, "%s: valid message rejected: %s\n", info.name, e.host.decode.error.c_str());
        std::abort();
      }
      if (info.sync)
        out->replies.push_back(
            {info.id, info.name, std::vector<uint8_t>(e.host.reply.get(), e.host.reply.get() + e.host.reply_size)});
    }
    return out;
  }();
  return *c;
}

struct Tally {
  size_t runs = 0;
  size_t rejected = 0;
};

// Feeds `n` bytes (an exact-size copy, so reads past it are caught) to the run function of
// `id`; returns whether the host accepted them.
bool feed(Env& e, uint16_t id, const uint8_t* p, size_t n, Tally& t) {
  std::unique_ptr<uint8_t[]> copy(new uint8_t[n ? n : 1]);
  if (n) std::memcpy(copy.get(), p, n);
  e.host.expect(0xFFFF, nullptr, 0);
  const bool ok = e.run(id, copy.get(), n);
  ++t.runs;
  if (!ok) {
    ++t.rejected;
    EXPECT_FALSE(e.host.decode.error.empty()) << command_name(id) << ": rejected without a reason";
  }
  e.pool.reset();
  return ok;
}

std::vector<size_t> cut_points(size_t size) {
  std::vector<size_t> cuts;
  for (size_t n = 0; n < size; ++n)
    if (size <= 512 || n < 64 || size - n <= 64 || n % 37 == 0) cuts.push_back(n);
  return cuts;
}

TEST(WireHostile, TruncatedMessages) {
  Env e(1);
  Tally t;
  for (size_t i = 0; i < kCommandCaseCount; ++i) {
    const Sample& s = corpus().messages[i];
    for (size_t n : cut_points(s.bytes.size())) {
      if (!feed(e, s.id, s.bytes.data(), n, t)) continue;
      EXPECT_FALSE(kCommandCases[i].fixed) << s.name << ": short fixed-layout record accepted";
      // Accepting a truncated buffer is fine only when what was cut is builder padding.
      for (size_t k = n; k < s.bytes.size(); ++k)
        ASSERT_EQ(s.bytes[k], 0) << s.name << " truncated to " << n << " of " << s.bytes.size()
                                 << " bytes was accepted but lost data";
    }
  }
  std::printf("truncated: %zu runs, %zu rejected\n", t.runs, t.rejected);
  EXPECT_GT(t.rejected, t.runs * 9 / 10);
}

TEST(WireHostile, OversizedMessages) {
  Env e(2);
  Tally t;
  for (size_t i = 0; i < kCommandCaseCount; ++i) {
    const Sample& s = corpus().messages[i];
    const bool fixed = kCommandCases[i].fixed;
    for (size_t extra : {size_t{8}, size_t{64}, size_t{4096}}) {
      std::vector<uint8_t> big = s.bytes;
      big.resize(s.bytes.size() + extra);
      e.fill.bytes(big.data() + s.bytes.size(), extra);
      const bool ok = feed(e, s.id, big.data(), big.size(), t);
      // A fixed-layout record has exactly one size; a table ignores bytes it does not reach.
      if (fixed) {
        EXPECT_FALSE(ok) << s.name << " accepted a record of the wrong size";
      }
    }
  }
  // Past the per-message cap nothing is even verified.
  const size_t huge = kMaxMessageBytes + 8;
  std::unique_ptr<uint8_t, decltype(&std::free)> buf(static_cast<uint8_t*>(std::calloc(huge, 1)), &std::free);
  ASSERT_NE(buf, nullptr);
  for (const Sample& s : corpus().messages) {
    std::memcpy(buf.get(), s.bytes.data(), s.bytes.size());
    e.host.expect(0xFFFF, nullptr, 0);
    EXPECT_FALSE(e.run(s.id, buf.get(), huge)) << s.name << " accepted a message over kMaxMessageBytes";
    EXPECT_FALSE(e.host.decode.error.empty());
  }
  std::printf("oversized: %zu runs, %zu rejected\n", t.runs, t.rejected);
}

TEST(WireHostile, OtherCommandsMessages) {
  Env e(3);
  Tally t;
  const auto& msgs = corpus().messages;
  for (const Sample& target : msgs)
    for (const Sample& other : msgs)
      if (other.id != target.id) feed(e, target.id, other.bytes.data(), other.bytes.size(), t);
  std::printf("wrong type: %zu runs, %zu rejected\n", t.runs, t.rejected);
  EXPECT_GT(t.rejected, 0u);
}

TEST(WireHostile, BitFlippedMessages) {
  Env e(4);
  Tally t;
  for (const Sample& s : corpus().messages) {
    for (int v = 0; v < 400; ++v) {
      std::vector<uint8_t> m = s.bytes;
      const int flips = 1 + static_cast<int>(e.rng.below(4));
      for (int k = 0; k < flips; ++k) {
        const size_t bit = static_cast<size_t>(e.rng.below(m.size() * 8));
        m[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      }
      feed(e, s.id, m.data(), m.size(), t);
    }
  }
  std::printf("bit flips: %zu runs, %zu rejected\n", t.runs, t.rejected);
  EXPECT_GT(t.rejected, 0u);
}

TEST(WireHostile, RandomBuffers) {
  Env e(5);
  Tally t;
  for (const Sample& s : corpus().messages) {
    for (int v = 0; v < 200; ++v) {
      std::vector<uint8_t> m(static_cast<size_t>(e.rng.below(320)));
      e.fill.bytes(m.data(), m.size());
      // Half of them start with a plausible root offset, so the verifier gets further in.
      if (v % 2 && m.size() >= 8) {
        const uint32_t root = static_cast<uint32_t>(4 + 4 * e.rng.below(m.size() / 4));
        std::memcpy(m.data(), &root, 4);
      }
      feed(e, s.id, m.data(), m.size(), t);
    }
    std::vector<uint8_t> zeros(64, 0);
    EXPECT_FALSE(feed(e, s.id, zeros.data(), zeros.size(), t)) << s.name << " accepted zeros";
  }
  std::printf("random: %zu runs, %zu rejected\n", t.runs, t.rejected);
  EXPECT_GT(t.rejected, t.runs * 9 / 10);
}

// Pointers vk.xml does not mark optional must arrive: the driver would read through them.
TEST(WireHostile, MissingRequiredPointersAreRejected) {
  Env e(6);
  VkPipelineShaderStageCreateInfo stage{};
  stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
  stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  stage.module = reinterpret_cast<VkShaderModule>(uint64_t{0x1234});
  stage.pName = nullptr;
  e.b.Clear();
  e.b.Finish(flatbuffers::Offset<Table>(encode_VkPipelineShaderStageCreateInfo(e.b, stage, e.handles, true)));
  e.set_message(e.b.GetBufferPointer(), e.b.GetSize());
  const Table* t = verify_root(e.msg.get(), e.msg_size, verify_VkPipelineShaderStageCreateInfo);
  ASSERT_NE(t, nullptr);
  VkPipelineShaderStageCreateInfo out{};
  e.host.begin_record();
  EXPECT_FALSE(decode_VkPipelineShaderStageCreateInfo(e.host.decode, t, out, false));
  EXPECT_EQ(e.host.decode.error, "VkPipelineShaderStageCreateInfo.pName: missing required string");

  const auto device = reinterpret_cast<VkDevice>(uint64_t{0x10});
  VkImage image = reinterpret_cast<VkImage>(uint64_t{0x20});
  encode_vkCreateImage(e.b, e.handles, device, nullptr, nullptr, &image);
  e.set_message(e.b.GetBufferPointer(), e.b.GetSize());
  EXPECT_FALSE(e.run(kCmd_vkCreateImage, e.msg.get(), e.msg_size));
  EXPECT_EQ(e.host.decode.error, "vkCreateImage.pCreateInfo: missing required struct");
}

// Fixed-layout records with trailing arrays (vkCmdSetScissor, vkCmdBindDescriptorSets...): the
// counts in the struct must account for every byte after it, exactly; an array the counts put
// past the record's end, a count whose byte size overflows, spare bytes and a misaligned
// record are refused before any array or handle is read.
TEST(WireHostile, PackedCountsMustMatchTheirBytes) {
  Env e(7);
  const auto cb = reinterpret_cast<VkCommandBuffer>(uint64_t{0x10});
  const VkRect2D scissors[2] = {{{1, 2}, {3, 4}}, {{5, 6}, {7, 8}}};
  encode_vkCmdSetScissor(e.packed, e.handles, cb, 0, 2, scissors);
  std::vector<uint8_t> good(e.packed.data(), e.packed.data() + e.packed.size());
  ASSERT_EQ(good.size(), sizeof(vkCmdSetScissor_s) + sizeof(scissors));
  Tally t;
  auto with_count = [&](uint32_t count) {
    std::vector<uint8_t> m = good;
    vkCmdSetScissor_s w;
    std::memcpy(&w, m.data(), sizeof(w));
    w.scissorCount = count;
    std::memcpy(m.data(), &w, sizeof(w));
    return m;
  };
  auto refused = [&](const std::vector<uint8_t>& m, const char* what) {
    EXPECT_FALSE(feed(e, kCmd_vkCmdSetScissor, m.data(), m.size(), t)) << what;
    EXPECT_EQ(e.host.decode.error, "vkCmdSetScissor: bad record size") << what;
  };
  EXPECT_TRUE(feed(e, kCmd_vkCmdSetScissor, good.data(), good.size(), t));
  refused(with_count(3), "a count past the record's end");
  refused(with_count(1), "bytes left over");
  refused(with_count(0xFFFFFFFFu), "a count whose bytes overflow");
  std::vector<uint8_t> longer = good;
  longer.resize(good.size() + 8);
  refused(longer, "spare bytes");
  // Misaligned in memory: the arrays would be handed to the driver in place.
  std::unique_ptr<uint64_t[]> store(new uint64_t[good.size() / 8 + 2]);
  auto* odd = reinterpret_cast<uint8_t*>(store.get()) + 4;
  std::memcpy(odd, good.data(), good.size());
  e.host.expect(0xFFFF, nullptr, 0);
  EXPECT_FALSE(e.run(kCmd_vkCmdSetScissor, odd, good.size()));

  // Two arrays: the second one's place depends on the first one's count.
  const VkDescriptorSet sets[2] = {reinterpret_cast<VkDescriptorSet>(uint64_t{0x21}),
                                   reinterpret_cast<VkDescriptorSet>(uint64_t{0x22})};
  const uint32_t offsets[3] = {256, 512, 768};
  const auto layout = reinterpret_cast<VkPipelineLayout>(uint64_t{0x30});
  encode_vkCmdBindDescriptorSets(e.packed, e.handles, cb, VK_PIPELINE_BIND_POINT_GRAPHICS, layout, 0, 2, sets, 3,
                                 offsets);
  std::vector<uint8_t> bind(e.packed.data(), e.packed.data() + e.packed.size());
  EXPECT_TRUE(feed(e, kCmd_vkCmdBindDescriptorSets, bind.data(), bind.size(), t));
  vkCmdBindDescriptorSets_s w;
  std::memcpy(&w, bind.data(), sizeof(w));
  w.descriptorSetCount = 3;  // 8 more bytes of ids: the offsets' 16 would then end 8 bytes past
  std::memcpy(bind.data(), &w, sizeof(w));
  EXPECT_FALSE(feed(e, kCmd_vkCmdBindDescriptorSets, bind.data(), bind.size(), t));
  EXPECT_EQ(e.host.decode.error, "vkCmdBindDescriptorSets: bad record size");
}

// ------------------------------------------------------------------ replies on the guest
// Feeds hostile replies to the guest decoder of one command, its output storage made by a
// round trip (two-call capacities, chains, arrays sized by the call's own counts).
void feed_replies(const CommandCaseInfo& info, uint64_t seed, Tally& t,
                  const std::function<void(Env&, const std::function<void(const std::vector<uint8_t>&)>&)>& gen) {
  Env e(seed);
  auto cs = info.make();
  e.reset();
  cs->make(e);
  ASSERT_TRUE(e.run(info.id, e.msg.get(), e.msg_size)) << info.name;
  gen(e, [&](const std::vector<uint8_t>& bytes) {
    std::unique_ptr<uint8_t[]> copy(new uint8_t[bytes.size() ? bytes.size() : 1]);
    if (!bytes.empty()) std::memcpy(copy.get(), bytes.data(), bytes.size());
    DecodeContext gc = e.guest_context();
    ++t.runs;
    if (!cs->decode_reply(gc, copy.get(), bytes.size())) {
      ++t.rejected;
      EXPECT_FALSE(gc.error.empty()) << info.name;
    }
  });
}

const std::vector<uint8_t>& reply_of(uint16_t id) {
  for (const Sample& s : corpus().replies)
    if (s.id == id) return s.bytes;
  std::abort();
}

TEST(WireHostile, RepliesTruncatedFlippedRandom) {
  Tally t;
  for (size_t i = 0; i < kCommandCaseCount; ++i) {
    const CommandCaseInfo& info = kCommandCases[i];
    if (!info.sync) continue;
    const std::vector<uint8_t>& good = reply_of(info.id);
    feed_replies(info, 2000 + i, t, [&](Env& e, const auto& give) {
      for (size_t n : cut_points(good.size()))
        give(std::vector<uint8_t>(good.begin(), good.begin() + static_cast<long>(n)));
      for (int v = 0; v < 400; ++v) {
        std::vector<uint8_t> m = good;
        for (int k = 0, flips = 1 + static_cast<int>(e.rng.below(4)); k < flips; ++k) {
          const size_t bit = static_cast<size_t>(e.rng.below(m.size() * 8));
          m[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
        }
        give(m);
      }
      for (int v = 0; v < 200; ++v) {
        std::vector<uint8_t> m(static_cast<size_t>(e.rng.below(320)));
        e.fill.bytes(m.data(), m.size());
        give(m);
      }
      std::vector<uint8_t> big = good;
      big.resize(good.size() + 4096);
      give(big);
    });
    if (HasFatalFailure()) return;
  }
  std::printf("replies: %zu decodes, %zu rejected\n", t.runs, t.rejected);
  EXPECT_GT(t.rejected, 0u);
}

// Every command's reply decoder fed the reply of every other command. A decoder whose reply is
// only a VkResult accepts any table with a compatible result (nothing else is read); one with
// out-data must refuse some: a struct, string or vector where it expects another shape.
TEST(WireHostile, RepliesOfOtherCommands) {
  Tally t;
  size_t sync = 0, refusing = 0, with_data = 0;
  for (size_t i = 0; i < kCommandCaseCount; ++i) {
    const CommandCaseInfo& info = kCommandCases[i];
    if (!info.sync) continue;
    ++sync;
    const size_t rejected_before = t.rejected;
    feed_replies(info, 3000 + i, t, [&](Env&, const auto& give) {
      for (const Sample& s : corpus().replies)
        if (s.id != info.id) give(s.bytes);
    });
    if (HasFatalFailure()) return;
    if (t.rejected > rejected_before) ++refusing;
    // A reply with out-data is larger than a bare result table (at most 20 bytes).
    if (reply_of(info.id).size() > 20) {
      ++with_data;
      EXPECT_GT(t.rejected, rejected_before) << info.name << ": a decoder with out-data accepted every other reply";
    }
  }
  std::printf("replies of other commands: %zu decodes, %zu rejected; %zu of %zu decoders refused some\n", t.runs,
              t.rejected, refusing, sync);
  ASSERT_EQ(corpus().replies.size(), sync);
  EXPECT_EQ(t.runs, sync * (sync - 1)) << "every decoder gets every other command's reply";
  EXPECT_GE(refusing, with_data);
  // 1797 of 7140 when written: a drop below a fifth means decoders stopped checking shapes.
  EXPECT_GE(t.rejected, t.runs / 5);
}

}  // namespace
}  // namespace bypass::wire::test
