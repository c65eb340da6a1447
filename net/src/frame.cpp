// Frames of the network path: building, chunking and reassembly (frame.h).
#include "bypass/net/frame.h"

#include <algorithm>
#include <cstring>

namespace bypass::net {

HelloPayload make_hello(const transport::Hello& hello) {
  HelloPayload p;
  p.transport_version = transport::kTransportVersion;
  p.protocol_version = hello.protocol_version;
  p.schema_hash = hello.schema_hash;
  std::memcpy(p.name, hello.peer_name.data(), std::min(hello.peer_name.size(), sizeof(p.name) - 1));
  return p;
}

bool parse_hello(std::span<const std::byte> data, transport::Hello& out, uint32_t& transport_version,
                 std::string& why) {
  HelloPayload p;
  if (data.size() != sizeof(p)) {
    why = "hello of " + std::to_string(data.size()) + " bytes, expected " + std::to_string(sizeof(p));
    return false;
  }
  std::memcpy(&p, data.data(), sizeof(p));
  if (std::memcmp(p.magic, "BYPN", 4) != 0) {
    why = "hello without the BYPN magic";
    return false;
  }
  transport_version = p.transport_version;
  out.protocol_version = p.protocol_version;
  out.schema_hash = p.schema_hash;
  out.peer_name.clear();
  for (size_t i = 0; i < sizeof(p.name) && p.name[i]; ++i)
    out.peer_name.push_back(p.name[i] >= 0x20 && p.name[i] < 0x7f ? p.name[i] : '?');
  return true;
}

FrameMessage make_frame(uint32_t kind, uint32_t flags, std::span<const std::byte> data) {
  flatbuffers::grpc::MessageBuilder mb(data.size() + 64);
  uint8_t* bytes = nullptr;
  auto vec = mb.CreateUninitializedVector(data.size(), &bytes);
  if (!data.empty()) std::memcpy(bytes, data.data(), data.size());
  mb.Finish(fb::CreateFrame(mb, kind, flags, vec));
  return mb.ReleaseMessage<fb::Frame>();
}

Reassembler::Step Reassembler::add(FrameMessage& frame, transport::Message& out, std::string& why) {
  const Received<fb::Frame> f(frame);
  if (!f) {
    why = "a frame that is not a valid FlatBuffer";
    return Step::kError;
  }
  const auto* data = f->data();
  const size_t n = data ? data->size() : 0;
  if (f->flags() & ~kFrameMore) {
    why = "a frame with unknown flags " + std::to_string(f->flags());
    return Step::kError;
  }
  if (partial_ && f->kind() != pending_.kind) {
    why = "a chunked message changed kind half way";
    return Step::kError;
  }
  const bool more = (f->flags() & kFrameMore) != 0;
  if (!partial_) {
    pending_.kind = f->kind();
    pending_.payload.clear();
    // A message in several frames: room for a shadow read window's reply (8 MiB and its
    // headers) at once, so that one is not moved as the vector grows.
    if (more) pending_.payload.reserve(std::min(max_message_, kReassemblyReserve));
  }
  if (n > max_message_ - pending_.payload.size()) {
    why = "a message larger than the session's limit of " + std::to_string(max_message_) + " bytes";
    return Step::kError;
  }
  if (n) {
    const auto* bytes = reinterpret_cast<const std::byte*>(data->data());
    pending_.payload.insert(pending_.payload.end(), bytes, bytes + n);
  }
  partial_ = more;
  if (partial_) return Step::kMore;
  out = std::move(pending_);
  pending_ = {};
  return Step::kMessage;
}

bool parse_endpoint(const std::string& endpoint, std::string& address) {
  constexpr std::string_view kScheme = "grpc://";
  if (!endpoint.starts_with(kScheme)) return false;
  address = endpoint.substr(kScheme.size());
  while (!address.empty() && address.back() == '/') address.pop_back();
  const size_t colon = address.rfind(':');
  return !address.empty() && colon != std::string::npos && colon + 1 < address.size() && colon > 0;
}

}  // namespace bypass::net
