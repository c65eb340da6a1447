// libFuzzer target: what bypass-grpcd reads from a network guest (docs/network.md), past gRPC's
// own framing: stream messages fed to one net::Reassembler as the relay's handler feeds them
// (host-server/tools/bypass_grpcd.cpp), each first read as a hello the way the handshake reads
// the first one. Every message gRPC hands over is a slice at whatever alignment it lies; here
// each frame is placed at the offset the input chooses, so net::Received's aligned copy and the
// FlatBuffers verifier see both cases.
//
// Input: frames [u8 offset][u32 size][size bytes], the last cut to what is left. With
// BYPASS_FUZZ_SEEDS set to a directory, streams are written there first (the seed corpus): a
// hello, messages of one and of two frames, an empty one, and one of each kind the relay refuses.
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "bypass/net/frame.h"

using namespace bypass;

namespace {

// The session's limit in the fuzzer: small, so that inputs (4 KiB at most by default) pass it.
constexpr size_t kMaxMessage = 1024;
// The most one frame is copied to (gRPC refuses larger frames before the relay sees them).
constexpr size_t kMaxFrame = net::kMaxFrameBytes;

void append_frame(std::vector<uint8_t>& out, uint8_t offset, const net::FrameMessage& m) {
  const uint32_t size = static_cast<uint32_t>(m.size());
  out.push_back(offset);
  const auto* s = reinterpret_cast<const uint8_t*>(&size);
  out.insert(out.end(), s, s + sizeof(size));
  out.insert(out.end(), m.data(), m.data() + m.size());
}

void write_seed(const std::string& path, const std::vector<uint8_t>& bytes) {
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  }
}

void write_seeds(const char* dir) {
  ::mkdir(dir, 0755);
  const std::string d(dir);
  auto stream = [&](const char* name, std::initializer_list<std::pair<uint8_t, net::FrameMessage>> frames) {
    std::vector<uint8_t> bytes;
    for (const auto& [offset, frame] : frames) append_frame(bytes, offset, frame);
    write_seed(d + "/" + name, bytes);
  };
  const net::HelloPayload hello = net::make_hello(transport::Hello{1, 0x1234, "fuzz"});
  stream("hello", {{1, net::make_frame(net::kFrameHello, 0, std::as_bytes(std::span(&hello, 1)))}});

  std::vector<std::byte> payload(kMaxMessage);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<std::byte>(i);
  const std::span<const std::byte> all(payload);
  // What the relay passes on, and each way of being refused (frame_test.cpp has the same cases).
  stream("one_frame", {{0, net::make_frame(7, 0, all.first(300))}});
  stream("two_frames",
         {{3, net::make_frame(7, net::kFrameMore, all.first(600))}, {5, net::make_frame(7, 0, all.first(300))}});
  stream("empty", {{0, net::make_frame(9, 0, {})}});
  stream("over_limit",
         {{1, net::make_frame(7, net::kFrameMore, all.first(600))}, {2, net::make_frame(7, 0, all.first(600))}});
  stream("kind_changed",
         {{0, net::make_frame(7, net::kFrameMore, all.first(10))}, {0, net::make_frame(8, 0, all.first(10))}});
  stream("unknown_flags", {{0, net::make_frame(7, 2, all.first(10))}});
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("BYPASS_FUZZ_SEEDS")) write_seeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Where each frame is placed: 8-byte aligned storage, at the offset the input asks for.
  static std::vector<uint64_t>* storage = new std::vector<uint64_t>(kMaxFrame / sizeof(uint64_t) + 2);
  net::Reassembler reassembler(kMaxMessage);
  size_t off = 0;
  bool first = true;
  while (size - off >= 5) {
    const uint8_t offset = data[off] % 8;
    uint32_t n = 0;
    std::memcpy(&n, data + off + 1, sizeof(n));
    off += 5;
    n = static_cast<uint32_t>(std::min<size_t>({n, size - off, kMaxFrame}));
    auto* place = reinterpret_cast<uint8_t*>(storage->data()) + offset;
    if (n) std::memcpy(place, data + off, n);
    off += n;
    // A slice over our storage, as gRPC hands over one over its own (the message does not own it).
    net::FrameMessage frame(::grpc::Slice(place, n, ::grpc::Slice::STATIC_SLICE));

    if (first) {
      // The handshake's reading of the first frame.
      first = false;
      const net::Received<net::fb::Frame> f(frame);
      if (f && f->kind() == net::kFrameHello && f->flags() == 0) {
        transport::Hello hello;
        uint32_t version = 0;
        std::string why;
        const auto* d = f->data();
        const bool ok = net::parse_hello(
            d ? std::as_bytes(std::span(d->data(), d->size())) : std::span<const std::byte>(), hello, version, why);
        if (!ok && why.empty()) std::abort();  // a refusal always says why
        if (ok && hello.peer_name.size() > transport::kMaxNameBytes) std::abort();
        continue;
      }
    }
    transport::Message message;
    std::string why;
    switch (reassembler.add(frame, message, why)) {
      case net::Reassembler::Step::kMore:
        break;
      case net::Reassembler::Step::kMessage:
        if (message.payload.size() > kMaxMessage) std::abort();  // the limit held
        break;
      case net::Reassembler::Step::kError:
        if (why.empty()) std::abort();
        return 0;  // the relay ends the session here
    }
  }
  return 0;
}
