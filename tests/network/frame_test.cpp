// The network path's frames (net/src/frame.cpp): messages cut into frames and put back
// together, and what the reassembler refuses.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "bypass/net/frame.h"

namespace bypass::net {
namespace {

std::vector<std::byte> pattern(size_t size, uint8_t seed) {
  std::vector<std::byte> v(size);
  for (size_t i = 0; i < size; ++i) v[i] = static_cast<std::byte>((i * 131 + seed) & 0xff);
  return v;
}

// Collects what write_message() writes, as a gRPC stream would carry it.
struct Recorder {
  std::vector<FrameMessage> frames;
  bool Write(FrameMessage m) {
    frames.push_back(std::move(m));
    return true;
  }
};

TEST(Reassembler, MessagesOfOneAndOfManyFramesComeBackWhole) {
  Reassembler r(64 << 20);
  // Empty, small, exactly one chunk, one byte over, a shadow read window's reply and more.
  for (size_t size :
       {size_t{0}, size_t{100}, kChunkBytes, kChunkBytes + 1, (size_t{8} << 20) + 4096, (size_t{20} << 20) + 7}) {
    const auto data = pattern(size, static_cast<uint8_t>(size));
    Recorder out;
    ASSERT_TRUE(write_message(out, 42, data));
    EXPECT_EQ(out.frames.size(), std::max<size_t>(1, (size + kChunkBytes - 1) / kChunkBytes)) << size;
    transport::Message message;
    std::string why;
    for (size_t i = 0; i < out.frames.size(); ++i) {
      const auto step = r.add(out.frames[i], message, why);
      ASSERT_EQ(step, i + 1 < out.frames.size() ? Reassembler::Step::kMore : Reassembler::Step::kMessage)
          << size << " frame " << i << ": " << why;
    }
    EXPECT_EQ(message.kind, 42u);
    ASSERT_EQ(message.payload.size(), size);
    EXPECT_TRUE(size == 0 || std::memcmp(message.payload.data(), data.data(), size) == 0) << size;
  }
}

TEST(Reassembler, RefusesWhatBreaksTheRules) {
  const auto chunk = pattern(kChunkBytes, 1);
  std::string why;
  transport::Message message;
  {
    Reassembler r(2 * kChunkBytes);  // the session's limit: two chunks
    auto first = make_frame(7, kFrameMore, chunk);
    auto second = make_frame(7, kFrameMore, chunk);
    auto third = make_frame(7, 0, std::span(chunk).first(1));
    EXPECT_EQ(r.add(first, message, why), Reassembler::Step::kMore);
    EXPECT_EQ(r.add(second, message, why), Reassembler::Step::kMore);
    EXPECT_EQ(r.add(third, message, why), Reassembler::Step::kError);
    EXPECT_NE(why.find("larger than the session's limit"), std::string::npos) << why;
  }
  {
    Reassembler r(64 << 20);
    auto first = make_frame(7, kFrameMore, chunk);
    auto other = make_frame(8, 0, chunk);
    EXPECT_EQ(r.add(first, message, why), Reassembler::Step::kMore);
    EXPECT_EQ(r.add(other, message, why), Reassembler::Step::kError);
    EXPECT_NE(why.find("changed kind"), std::string::npos) << why;
  }
  {
    Reassembler r(64 << 20);
    auto flagged = make_frame(7, 2, chunk);
    EXPECT_EQ(r.add(flagged, message, why), Reassembler::Step::kError);
    EXPECT_NE(why.find("unknown flags"), std::string::npos) << why;
  }
  {
    Reassembler r(64 << 20);
    FrameMessage garbage;  // no bytes at all: not a FlatBuffer
    EXPECT_EQ(r.add(garbage, message, why), Reassembler::Step::kError);
    EXPECT_NE(why.find("not a valid FlatBuffer"), std::string::npos) << why;
  }
}

}  // namespace
}  // namespace bypass::net
