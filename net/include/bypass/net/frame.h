// The network path's frames (docs/network.md): what one gRPC stream message carries. A ring
// message (a batch, a reply, an end-of-session line) travels as one Frame of the same kind, or
// as several with kFrameMore set when it is larger than kChunkBytes; the stream's own kinds
// (hello, welcome, reject) lie above every ring kind. Both sides treat frames as hostile: the
// FlatBuffer is verified, a chunked message is checked against its size cap as it grows, and
// kinds the other side may not send are refused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "bypass/transport/ring.h"
#include "bypass/transport/session.h"
#include "remote.grpc.fb.h"
#include "remote_generated.h"

namespace bypass::net {

using FrameMessage = flatbuffers::grpc::Message<fb::Frame>;

// A FlatBuffer received from gRPC, verified and readable. gRPC hands a message over where its
// slice lies, usually one byte past a 4-byte boundary (after the 5-byte message prefix), and
// FlatBuffers reads its scalars in place: misaligned reads (undefined behaviour, which UBSan
// reports on every message). So gRPC's deserializer does not verify in place
// (FLATBUFFERS_GRPC_DISABLE_AUTO_VERIFICATION, set for everything that links bypass_net_grpc);
// a misaligned message is copied to aligned memory here, and verified there. Every message
// read from a stream goes through this; get() is null for one that is not a valid T.
template <class T>
class Received {
 public:
  explicit Received(const flatbuffers::grpc::Message<T>& m) {
    const uint8_t* bytes = m.data();
    const size_t size = m.size();
    // gRPC refuses larger messages than kMaxFrameBytes on every stream of ours; 1 GiB bounds
    // the copy for any message type.
    if (!bytes || size == 0 || size > (size_t{1} << 30)) return;
    if (reinterpret_cast<uintptr_t>(bytes) % alignof(uint64_t) != 0) {
      words_.resize(size / sizeof(uint64_t) + 1);
      std::memcpy(words_.data(), bytes, size);
      bytes = reinterpret_cast<const uint8_t*>(words_.data());
    }
    flatbuffers::Verifier verifier(bytes, size);
    if (verifier.VerifyBuffer<T>(nullptr)) root_ = flatbuffers::GetRoot<T>(bytes);
  }
  const T* get() const { return root_; }
  const T* operator->() const { return root_; }
  explicit operator bool() const { return root_ != nullptr; }

 private:
  std::vector<uint64_t> words_;  // the aligned copy, when one was needed
  const T* root_ = nullptr;
};

// Kinds the stream itself uses; ring kinds stay below (transport::layout::kReservedKindBase and
// everything >= kFrameKindBase is never relayed to a ring).
inline constexpr uint32_t kFrameKindBase = 0xFFFE0000u;
inline constexpr uint32_t kFrameHello = kFrameKindBase + 1;    // guest -> host: HelloPayload
inline constexpr uint32_t kFrameWelcome = kFrameKindBase + 2;  // host -> guest: HelloPayload
inline constexpr uint32_t kFrameReject = kFrameKindBase + 3;   // host -> guest: one line of text

inline constexpr uint32_t kFrameMore = 1;  // flags: the message continues in the next frame

// A message larger than this is sent in frames of this size; a frame larger than
// kMaxFrameBytes (data plus FlatBuffers framing) is refused by gRPC on receipt.
inline constexpr size_t kChunkBytes = size_t{1} << 20;
inline constexpr size_t kMaxFrameBytes = kChunkBytes + 4096;
// What a Reassembler sets aside when a message comes in several frames (at most the session's
// limit): a shadow read window's reply, 8 MiB and its headers, fits.
inline constexpr size_t kReassemblyReserve = (size_t{8} << 20) + kChunkBytes;

// The handshake's payload, fixed layout (little-endian, as the ring's).
struct HelloPayload {
  char magic[4] = {'B', 'Y', 'P', 'N'};
  uint32_t transport_version = 0;
  uint32_t protocol_version = 0;
  uint32_t reserved = 0;
  uint64_t schema_hash = 0;
  char name[transport::kMaxNameBytes] = {};
};
static_assert(sizeof(HelloPayload) == 24 + transport::kMaxNameBytes);

HelloPayload make_hello(const transport::Hello& hello);
// false (with why) for a payload of the wrong size or magic; the name is cut to printable ASCII.
bool parse_hello(std::span<const std::byte> data, transport::Hello& out, uint32_t& transport_version, std::string& why);

FrameMessage make_frame(uint32_t kind, uint32_t flags, std::span<const std::byte> data);

// Writes `data` as one message of `kind`: a frame, or frames of kChunkBytes with kFrameMore on
// all but the last. Stream is a gRPC WriterInterface<FrameMessage>; false when it broke.
template <class Stream>
bool write_message(Stream& stream, uint32_t kind, std::span<const std::byte> data) {
  do {
    const size_t n = std::min(data.size(), kChunkBytes);
    const uint32_t flags = n < data.size() ? kFrameMore : 0;
    if (!stream.Write(make_frame(kind, flags, data.first(n)))) return false;
    data = data.subspan(n);
  } while (!data.empty());
  return true;
}

// Reassembles frames into messages, trusting nothing: each frame is verified, a message may not
// change kind half way or grow past `max_message`.
class Reassembler {
 public:
  explicit Reassembler(size_t max_message) : max_message_(max_message) {}
  enum class Step { kMore, kMessage, kError };
  // kMessage: the message is complete in out; kError: why says what was wrong.
  Step add(FrameMessage& frame, transport::Message& out, std::string& why);

 private:
  size_t max_message_;
  bool partial_ = false;
  transport::Message pending_;
};

// grpc://HOST:PORT -> HOST:PORT; false for anything else.
bool parse_endpoint(const std::string& endpoint, std::string& address);

}  // namespace bypass::net
