// raw_client: a hostile guest for the end-to-end tests. It speaks the transport directly (no
// ICD, no Vulkan loader) and sends bypassd one kind of bad input, then reports what came back.
//
//   raw_client ENDPOINT MODE
//
// Every mode except the handshake ones first asks for the session's stats (a well-formed
// control record), so the test knows the stream was accepted before the bad message. Then it
// sends the bad message and prints, one line each, what the host sends until the session is
// over:
//   connected session_pid=<our pid>
//   reply seq=<n> command=<id> result=<VkResult> [objects=.. records=..]
//   error <reason text>            (a kMsgError message)
//   end <transport status>         (peer_gone, closed, timeout, ...)
//   connect-failed <error text>    (handshake modes)
// Exit status: 0 when it got that far, 2 on bad arguments, 1 when the well-formed stats
// request got no proper reply (the test then cannot tell what the bad input did).
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bypass/transport/session.h"
#include "bypass/wire/gen/commands.h"
#include "bypass/wire/protocol.h"
#include "bypass/wire/runtime.h"
#include "raw_protocol.h"

namespace {

namespace transport = bypass::transport;
namespace wire = bypass::wire;
using bypass::test::append_record;
using bypass::test::IdentityHandles;
using bypass::test::kDeviceId;
using bypass::test::kInstanceId;
using bypass::test::kMemoryId;

constexpr auto kWait = std::chrono::seconds(10);

void append_header(std::vector<std::byte>& batch, uint32_t size, uint16_t command, uint16_t flags) {
  wire::RecordHeader h{size, command, flags};
  const size_t at = batch.size();
  batch.resize(at + sizeof(h));
  std::memcpy(batch.data() + at, &h, sizeof(h));
}

const char* status_name(transport::Status s) { return transport::to_string(s); }

// Prints one received message; false once the session is over.
bool print_next(transport::Channel& ch) {
  transport::Message msg;
  const transport::Status st = ch.recv(msg, transport::deadline_after(kWait));
  if (st != transport::Status::kOk) {
    std::printf("end %s\n", status_name(st));
    return false;
  }
  if (msg.kind == wire::kMsgError) {
    std::printf("error %.*s\n", static_cast<int>(msg.payload.size()),
                reinterpret_cast<const char*>(msg.payload.data()));
  } else if (msg.kind == wire::kMsgReply && msg.payload.size() >= sizeof(wire::ReplyHeader)) {
    wire::ReplyHeader h;
    std::memcpy(&h, msg.payload.data(), sizeof(h));
    std::printf("reply seq=%llu command=%u result=%d", static_cast<unsigned long long>(h.seq), h.command, h.result);
    if (h.command == wire::kCtlSessionStats && msg.payload.size() >= sizeof(h) + sizeof(wire::StatsReply)) {
      wire::StatsReply r;
      std::memcpy(&r, msg.payload.data() + sizeof(h), sizeof(r));
      std::printf(" objects=%llu records=%llu", static_cast<unsigned long long>(r.objects),
                  static_cast<unsigned long long>(r.records));
    }
    std::printf("\n");
  } else {
    std::printf("unexpected kind=%u bytes=%zu\n", msg.kind, msg.payload.size());
  }
  std::fflush(stdout);
  return true;
}

// Sends one record that wants a reply and prints the reply; false when none came.
bool call(transport::Channel& ch, uint16_t command, const void* data, size_t size) {
  std::vector<std::byte> batch;
  append_record(batch, command, wire::kRecordWantsReply, data, size);
  return ch.send(wire::kMsgBatch, batch, transport::deadline_after(kWait)) == transport::Status::kOk && print_next(ch);
}

// An instance and a device with VK_KHR_external_memory_fd, for the modes whose bad record needs
// a device.
bool setup_device(transport::Channel& ch) {
  return bypass::test::setup_device(
      [&](uint16_t command, const void* data, size_t size) { return call(ch, command, data, size); },
      {VK_KHR_EXTERNAL_MEMORY_FD_EXTENSION_NAME});
}

// The bad batch of each mode; empty if the mode is unknown.
bool bad_message(const std::string& mode, uint32_t* kind, std::vector<std::byte>& batch) {
  *kind = wire::kMsgBatch;
  IdentityHandles ids;
  wire::Builder b(256);
  if (mode == "garbage") {
    // Deterministic noise (xorshift), so a failure reproduces.
    uint64_t x = 0x9e3779b97f4a7c15ull;
    batch.resize(4096);
    for (auto& byte : batch) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      byte = static_cast<std::byte>(x >> 24);
    }
  } else if (mode == "garbage-payload") {
    // A known command whose payload is not a FlatBuffer of its arguments.
    std::vector<uint8_t> junk(64, 0xA5);
    append_record(batch, wire::kCmd_vkDestroyBuffer, 0, junk.data(), junk.size());
  } else if (mode == "unknown-command") {
    // Below the control range, above every Vulkan command id.
    append_record(batch, 0xEFFF, 0, nullptr, 0);
  } else if (mode == "unknown-control") {
    append_record(batch, 0xF0FF, wire::kRecordWantsReply, nullptr, 0);
  } else if (mode == "bad-handle") {
    // A well-formed vkDestroyBuffer naming a device id this session never created.
    wire::encode_vkDestroyBuffer(b, ids, reinterpret_cast<VkDevice>(uintptr_t{0x7777}),
                                 reinterpret_cast<VkBuffer>(uintptr_t{0x8888}), nullptr);
    append_record(batch, wire::kCmd_vkDestroyBuffer, 0, b.GetBufferPointer(), b.GetSize());
  } else if (mode == "bad-handle-sync") {
    // The same with a reply wanted: the host must end the session, not leave us waiting.
    wire::EnumeratePhysicalDevicesRequest req{0x7777, 100, 4, 0};
    append_record(batch, wire::kCtlEnumeratePhysicalDevices, wire::kRecordWantsReply, &req, sizeof(req));
  } else if (mode == "truncated-header") {
    batch.resize(4);
  } else if (mode == "record-too-long") {
    append_header(batch, 1024, wire::kCmd_vkDestroyBuffer, 0);
  } else if (mode == "record-too-short") {
    append_header(batch, 4, wire::kCmd_vkDestroyBuffer, 0);
    batch.resize(16);
  } else if (mode == "external-memory-unknown") {
    // Asks how to map external memory this session never allocated.
    const uint64_t id = 0x9999;
    append_record(batch, wire::kCtlExternalMemory, wire::kRecordWantsReply, &id, sizeof(id));
  } else if (mode == "present-name-before-join") {
    // Asks bypassd to name memory for presentation without having joined its memshare service.
    const wire::PresentNameRequest req{0x9999, 0, 4096};
    append_record(batch, wire::kCtlPresentName, wire::kRecordWantsReply, &req, sizeof(req));
  } else if (mode == "import-without-fd") {
    // After setup_device: an fd import whose fd never comes on the socket.
    VkImportMemoryFdInfoKHR import{VK_STRUCTURE_TYPE_IMPORT_MEMORY_FD_INFO_KHR};
    import.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT;
    import.fd = 3;
    VkMemoryAllocateInfo alloc{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, &import};
    alloc.allocationSize = 65536;
    alloc.memoryTypeIndex = 0;
    VkDeviceMemory memory = reinterpret_cast<VkDeviceMemory>(uintptr_t{kMemoryId});
    wire::encode_vkAllocateMemory(b, ids, reinterpret_cast<VkDevice>(uintptr_t{kDeviceId}), &alloc, nullptr, &memory);
    append_record(batch, wire::kCmd_vkAllocateMemory, wire::kRecordWantsReply, b.GetBufferPointer(), b.GetSize());
  } else if (mode == "wrong-kind") {
    *kind = 99;
    batch.resize(8);
  } else {
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s ENDPOINT MODE\n", argv[0]);
    return 2;
  }
  const std::string endpoint = argv[1];
  const std::string mode = argv[2];

  transport::Hello hello{wire::kProtocolVersion, wire::kSchemaHash, "raw_client " + mode};
  if (mode == "bad-schema") hello.schema_hash = 0x0123456789abcdefull;
  if (mode == "bad-version") hello.protocol_version = 999;
  auto ch = transport::connect(endpoint, hello, transport::deadline_after(kWait));
  if (!ch) {
    std::printf("connect-failed %s\n", ch.error().message.c_str());
    return 0;
  }
  std::printf("connected session_pid=%d\n", static_cast<int>(getpid()));
  std::fflush(stdout);
  if (mode == "bad-schema" || mode == "bad-version") {
    std::printf("unexpected: the handshake was accepted\n");
    return 0;
  }

  std::vector<std::byte> stats;
  append_record(stats, wire::kCtlSessionStats, wire::kRecordWantsReply, nullptr, 0);
  const transport::Status asked = ch->send(wire::kMsgBatch, stats, transport::deadline_after(kWait));
  if (asked != transport::Status::kOk || !print_next(*ch)) {
    std::printf("no reply to the stats request\n");
    return 1;
  }
  if (mode == "stats") {
    ch->close();
    return 0;
  }

  if (mode == "no-read") {
    // A guest that asks and never reads the answers: the host's reply ring fills. Flood until
    // the host gives up on us (our sends fail), then keep the connection open, still not
    // reading, until killed.
    std::vector<std::byte> many;
    for (int i = 0; i < 64; ++i) append_record(many, wire::kCtlSessionStats, wire::kRecordWantsReply, nullptr, 0);
    transport::Status st;
    size_t sent = 0;
    while ((st = ch->send(wire::kMsgBatch, many, transport::deadline_after(std::chrono::seconds(60)))) ==
           transport::Status::kOk) {
      sent += 64;
      if (sent == 64 * 64) {
        std::printf("flooding\n");
        std::fflush(stdout);
      }
    }
    std::printf("host-ended %s after %zu requests\n", status_name(st), sent);
    std::fflush(stdout);
    pause();
    return 0;
  }
  if (mode == "import-without-fd" && !setup_device(*ch)) {
    std::printf("device setup failed\n");
    return 1;
  }
  uint32_t kind = 0;
  std::vector<std::byte> batch;
  if (!bad_message(mode, &kind, batch)) {
    std::fprintf(stderr, "raw_client: unknown mode %s\n", mode.c_str());
    return 2;
  }
  const transport::Status st = ch->send(kind, batch, transport::deadline_after(kWait));
  std::printf("sent %zu bytes: %s\n", batch.size(), status_name(st));
  std::fflush(stdout);
  // The session should be over now. A stats request after the bad message must not be
  // answered; asking shows whether the host really stopped reading this stream.
  const transport::Status stats_st =
      ch->send(wire::kMsgBatch, stats, transport::deadline_after(std::chrono::milliseconds(200)));
  std::printf("stats request after it: %s\n", status_name(stats_st));
  while (print_next(*ch)) {
  }
  return 0;
}
