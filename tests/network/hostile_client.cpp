// A hostile network guest for network_test.py's `hostile` case: it speaks to bypass-grpcd
// directly (no ICD) and breaks the protocol one way per run. It prints one line saying how the
// server answered and exits 0 when the server refused or ended the stream as it should.
//
//   network_hostile_client ENDPOINT MODE
//     garbage       a frame that is not a FlatBuffer
//     oversized     a 2 MiB frame (the limit is 1 MiB + 4 KiB)
//     no-hello      a batch before any hello
//     bad-hello     a hello of the wrong size
//     old-schema    a hello with another schema hash: refused with both sides' versions
//     reserved-kind a ring-reserved kind after a good handshake
//     silent        connects and says nothing: dropped at the handshake deadline
//     stop-reading  asks for replies (session stats, 4096 a batch) and never reads one: bypassd
//                   ends the session (--send-timeout) and the relay cancels the stream
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bypass/net/client.h"
#include "bypass/net/frame.h"
#include "bypass/wire/gen/schema_hash.h"
#include "bypass/wire/protocol.h"
#include "bypass/wire/runtime.h"

namespace net = bypass::net;

namespace {

net::FrameMessage raw_message(const std::vector<uint8_t>& bytes) {
  return net::FrameMessage(grpc::Slice(bytes.data(), bytes.size()));
}

net::FrameMessage hello_frame(uint64_t schema_hash) {
  bypass::transport::Hello h{bypass::wire::kProtocolVersion, schema_hash, "hostile"};
  const net::HelloPayload p = net::make_hello(h);
  return net::make_frame(net::kFrameHello, 0, std::as_bytes(std::span(&p, 1)));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s grpc://HOST:PORT MODE\n", argv[0]);
    return 2;
  }
  std::string address;
  if (!net::parse_endpoint(argv[1], address)) return 2;
  const std::string mode = argv[2];
  grpc::ChannelArguments args;  // no send limit of our own: the server must be the one to refuse
  args.SetInt(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, -1);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  auto stub = net::fb::Remote::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = stub->Session(&ctx);
  if (mode == "garbage") {
    (void)stream->Write(raw_message(std::vector<uint8_t>(64, 0xAB)));
  } else if (mode == "oversized") {
    (void)stream->Write(net::make_frame(bypass::wire::kMsgBatch, 0, std::vector<std::byte>(2 << 20)));
  } else if (mode == "no-hello") {
    (void)stream->Write(net::make_frame(bypass::wire::kMsgBatch, 0, std::vector<std::byte>(64)));
  } else if (mode == "bad-hello") {
    (void)stream->Write(net::make_frame(net::kFrameHello, 0, std::vector<std::byte>(7)));
  } else if (mode == "old-schema") {
    (void)stream->Write(hello_frame(bypass::wire::kSchemaHash ^ 1));
  } else if (mode == "reserved-kind") {
    (void)stream->Write(hello_frame(bypass::wire::kSchemaHash));
    net::FrameMessage welcome;
    if (!stream->Read(&welcome) || !net::Received<net::fb::Frame>(welcome) ||
        net::Received<net::fb::Frame>(welcome)->kind() != net::kFrameWelcome) {
      std::printf("hostile: no welcome for a good hello\n");
      return 1;
    }
    (void)stream->Write(net::make_frame(0xFFFF0001u, 0, std::vector<std::byte>(16)));
  } else if (mode == "stop-reading") {
    (void)stream->Write(hello_frame(bypass::wire::kSchemaHash));
    net::FrameMessage welcome;
    if (!stream->Read(&welcome)) {
      std::printf("hostile: no welcome for a good hello\n");
      return 1;
    }
    std::vector<std::byte> batch;
    for (int i = 0; i < 4096; ++i) {
      const bypass::wire::RecordHeader h{sizeof(bypass::wire::RecordHeader), bypass::wire::kCtlSessionStats,
                                         bypass::wire::kRecordWantsReply};
      const auto* p = reinterpret_cast<const std::byte*>(&h);
      batch.insert(batch.end(), p, p + sizeof(h));
    }
    const auto start = std::chrono::steady_clock::now();
    size_t sent = 0;
    while (stream->Write(net::make_frame(bypass::wire::kMsgBatch, 0, batch))) ++sent;
    std::printf("hostile stop-reading: the server stopped taking batches after %zu (%zu replies asked for) in %.1f s\n",
                sent, sent * 4096, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  } else if (mode != "silent") {
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  net::FrameMessage reply;
  std::string said;
  while (stream->Read(&reply)) {
    const net::Received<net::fb::Frame> r(reply);
    if (r && r->kind() == net::kFrameReject && r->data())
      said.assign(reinterpret_cast<const char*>(r->data()->data()), r->data()->size());
  }
  const grpc::Status st = stream->Finish();
  std::printf("hostile %s: status %d: %s%s%s\n", mode.c_str(), static_cast<int>(st.error_code()),
              st.error_message().c_str(), said.empty() ? "" : "; reject: ", said.c_str());
  // The server must end the stream with an error, never OK and never by our deadline.
  return !st.ok() && st.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED ? 0 : 1;
}
