// libFuzzer target: a real bypassd session with the real driver behind it. The fuzzer is the
// worker process (host-server/src/worker.cpp's serve_connection runs Session::run the same way) and
// the guest at once: it sets up an instance and a device through the protocol, then sends each
// input as one batch and asks for the session's stats, so a crash is blamed on the input that
// caused it. A session that an input ends (the expected answer to most bad input) is torn down
// and a fresh one made for the next input, as a new guest would get.
//
// Input: records [u32 size][u16 command][u16 flags][payload]. Commands below 0xF000 are taken
// modulo the generated command range, control commands (0xF000 and up) as they are, so every
// record reaches a real decoder or control handler; sizes are what the session checks itself.
// With BYPASS_FUZZ_SEEDS set to a directory, valid records over the set-up device are written
// there first (creates of buffers, images, memory and a fill), the seed corpus.
//
// Needs a driver: VK_DRIVER_FILES names lavapipe's manifest (the ctest entry sets it).
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bypass/host/config.h"
#include "bypass/host/session.h"
#include "bypass/transport/session.h"
#include "raw_protocol.h"

namespace {

namespace transport = bypass::transport;
namespace wire = bypass::wire;
using bypass::test::append_record;
using bypass::test::IdentityHandles;
using bypass::test::kDeviceId;

constexpr auto kReplyWait = std::chrono::seconds(20);
constexpr uint64_t kBufferId = 1000, kImageId = 1001, kMemoryId2 = 1002;

bypass::host::ServerConfig& config() {
  static bypass::host::ServerConfig c = [] {
    bypass::host::ServerConfig c;
    c.ring_bytes = 1 << 20;
    c.max_message = 8 << 20;
    c.max_objects = 4096;
    c.max_memory_bytes = 256 << 20;
    c.send_timeout_ms = 2000;
    return c;
  }();
  return c;
}

// Waits for the reply to the record just sent: true when it came, false when the session ended.
bool await_reply(transport::Channel& guest) {
  transport::Message msg;
  while (true) {
    if (guest.recv(msg, transport::deadline_after(kReplyWait)) != transport::Status::kOk) return false;
    if (msg.kind == wire::kMsgError) return false;
    if (msg.kind == wire::kMsgReply) return true;
  }
}

// One session: the host side on its own thread, the guest side here.
struct Live {
  std::optional<transport::Channel> guest;
  std::unique_ptr<bypass::host::Session> session;
  std::thread host;

  bool start() {
    auto pair = transport::make_channel_pair(transport::SessionOptions{config().ring_bytes, config().max_message});
    if (!pair) {
      std::fprintf(stderr, "session_fuzz: %s\n", pair.error().message.c_str());
      std::abort();
    }
    guest.emplace(std::move(pair->guest));
    session = std::make_unique<bypass::host::Session>(1, std::move(pair->host), config());
    host = std::thread([s = session.get()] { s->run(); });
    return bypass::test::setup_device([&](uint16_t command, const void* data, size_t size) {
      std::vector<std::byte> batch;
      append_record(batch, command, wire::kRecordWantsReply, data, size);
      return guest->send(wire::kMsgBatch, batch, transport::deadline_after(kReplyWait)) == transport::Status::kOk &&
             await_reply(*guest);
    });
  }

  void stop() {
    guest->close();
    host.join();
    session.reset();
    guest.reset();
  }
};

Live* g_live = nullptr;

void write_seed(const std::string& dir, const char* name, uint16_t command, uint16_t flags, const void* data,
                size_t size) {
  std::vector<std::byte> batch;
  append_record(batch, command, flags, data, size);
  if (FILE* f = std::fopen((dir + "/" + name).c_str(), "wb")) {
    std::fwrite(batch.data(), 1, batch.size(), f);
    std::fclose(f);
  }
}

void write_seeds(const std::string& dir) {
  ::mkdir(dir.c_str(), 0755);
  IdentityHandles ids;
  wire::Builder b(1024);
  const auto device = reinterpret_cast<VkDevice>(uintptr_t{kDeviceId});
  VkBufferCreateInfo buffer_info{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  buffer_info.size = 4096;
  buffer_info.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  VkBuffer buffer = reinterpret_cast<VkBuffer>(uintptr_t{kBufferId});
  wire::encode_vkCreateBuffer(b, ids, device, &buffer_info, nullptr, &buffer);
  write_seed(dir, "create-buffer", wire::kCmd_vkCreateBuffer, 0, b.GetBufferPointer(), b.GetSize());

  VkImageCreateInfo image_info{VK_STRUCTURE_TYPE_IMAGE_CREATE_INFO};
  image_info.imageType = VK_IMAGE_TYPE_2D;
  image_info.format = VK_FORMAT_R8G8B8A8_UNORM;
  image_info.extent = {64, 64, 1};
  image_info.mipLevels = 7;
  image_info.arrayLayers = 1;
  image_info.samples = VK_SAMPLE_COUNT_1_BIT;
  image_info.tiling = VK_IMAGE_TILING_OPTIMAL;
  image_info.usage = VK_IMAGE_USAGE_SAMPLED_BIT | VK_IMAGE_USAGE_TRANSFER_DST_BIT;
  VkImage image = reinterpret_cast<VkImage>(uintptr_t{kImageId});
  b.Clear();
  wire::encode_vkCreateImage(b, ids, device, &image_info, nullptr, &image);
  write_seed(dir, "create-image", wire::kCmd_vkCreateImage, 0, b.GetBufferPointer(), b.GetSize());

  VkMemoryAllocateInfo alloc{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  alloc.allocationSize = 65536;
  VkDeviceMemory memory = reinterpret_cast<VkDeviceMemory>(uintptr_t{kMemoryId2});
  b.Clear();
  wire::encode_vkAllocateMemory(b, ids, device, &alloc, nullptr, &memory);
  write_seed(dir, "allocate-memory", wire::kCmd_vkAllocateMemory, 0, b.GetBufferPointer(), b.GetSize());

  wire::vkBindBufferMemory_s bind{};
  wire::encode_vkBindBufferMemory(bind, ids, device, buffer, memory, 0);
  write_seed(dir, "bind-buffer-memory", wire::kCmd_vkBindBufferMemory, wire::kRecordFixed, &bind, sizeof(bind));

  // The control commands (host-server/src/control.cpp) over that memory, each a seed of its
  // own: the shadow barriers, external memory, placement, presentation names.
  const wire::MemoryRange range{kMemoryId2, 0, 4096};
  std::vector<std::byte> write(sizeof(range) + 64, std::byte{0x5A});
  std::memcpy(write.data(), &range, sizeof(range));
  write_seed(dir, "ctl-memory-write", wire::kCtlMemoryWrite, 0, write.data(), write.size());
  write_seed(dir, "ctl-memory-read", wire::kCtlMemoryRead, wire::kRecordWantsReply, &range, sizeof(range));
  const uint64_t id = kMemoryId2;
  write_seed(dir, "ctl-external-memory", wire::kCtlExternalMemory, wire::kRecordWantsReply, &id, sizeof(id));
  write_seed(dir, "ctl-memory-placement", wire::kCtlMemoryPlacement, wire::kRecordWantsReply, &id, sizeof(id));
  const wire::PresentNameRequest name{kMemoryId2, 0, 4096};
  write_seed(dir, "ctl-present-name", wire::kCtlPresentName, wire::kRecordWantsReply, &name, sizeof(name));
  const wire::EnumeratePhysicalDevicesRequest enumerate{bypass::test::kInstanceId, 2000, 4, 0};
  write_seed(dir, "ctl-enumerate", wire::kCtlEnumeratePhysicalDevices, wire::kRecordWantsReply, &enumerate,
             sizeof(enumerate));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("BYPASS_FUZZ_SEEDS")) write_seeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!g_live) {
    g_live = new Live();
    if (!g_live->start()) {
      std::fprintf(stderr, "session_fuzz: the set-up of a fresh session failed\n");
      std::abort();
    }
  }
  // Rebuild the input as a batch the session accepts the framing of: each record's size as the
  // session would check it, payload padded to 8 bytes.
  std::vector<std::byte> batch;
  size_t off = 0;
  while (size - off >= sizeof(wire::RecordHeader)) {
    wire::RecordHeader h;
    std::memcpy(&h, data + off, sizeof(h));
    const size_t left = size - off - sizeof(h);
    const size_t n = h.size < sizeof(h) ? 0 : std::min<size_t>(h.size - sizeof(h), left);
    const uint16_t command = h.command >= 0xF000 ? h.command : static_cast<uint16_t>(h.command % wire::kCommandIdLimit);
    append_record(batch, command, h.flags, data + off + sizeof(h), n);
    off += sizeof(h) + n;
  }
  // Then the stats request: its answer means the whole input was handled.
  append_record(batch, wire::kCtlSessionStats, wire::kRecordWantsReply, nullptr, 0);
  const bool sent =
      g_live->guest->send(wire::kMsgBatch, batch, transport::deadline_after(kReplyWait)) == transport::Status::kOk;
  // Replies to the input's own records come first; the last reply is the stats'.
  bool alive = sent;
  while (alive) {
    transport::Message msg;
    if (g_live->guest->recv(msg, transport::deadline_after(kReplyWait)) != transport::Status::kOk ||
        msg.kind == wire::kMsgError) {
      alive = false;
      break;
    }
    wire::ReplyHeader rh;
    if (msg.kind == wire::kMsgReply && msg.payload.size() >= sizeof(rh)) {
      std::memcpy(&rh, msg.payload.data(), sizeof(rh));
      if (rh.command == wire::kCtlSessionStats) break;
    }
  }
  if (!alive) {  // the input ended the session: the next input gets a fresh one
    g_live->stop();
    delete g_live;
    g_live = nullptr;
  }
  return 0;
}
