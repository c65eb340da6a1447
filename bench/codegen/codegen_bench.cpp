// Cost of the generated wire codecs per call, as the ICD and bypassd use them:
//  encode: the guest encoder plus appending the record ([RecordHeader][payload padded to 8])
//          to a batch, like guest-icd/src/connection.cpp append_locked (without its mutex);
//  decode: the host's kRunTable entry (verify, decode, call the handler; a no-op here) plus the
//          per-record arena reset a session does;
//  bytes:  the record on the wire, header included.
// Commands: vkCmdDraw (fixed layout), vkCmdBindDescriptorSets (4 sets), vkCmdPipelineBarrier
// (one image barrier), vkQueueSubmit (one command buffer).
//
//   codegen_bench [--json] [--quick]
// With --json the last line is one JSON object with every figure.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bypass/wire/host_context.h"

namespace bypass::wire::bench {
namespace {

inline void keep(const void* p) { asm volatile("" : : "r"(p) : "memory"); }

// Non-dispatchable handles are ids on the guest; the host maps ids to driver handles. Both are
// an identity here, a virtual call like the real ones.
class Identity final : public HandleMap {
 public:
  uint64_t to_wire(VkObjectType, uint64_t handle) override { return handle; }
  bool from_wire(VkObjectType, uint64_t id, uint64_t* handle) override {
    *handle = id;
    return true;
  }
};

class BenchHost final : public HostContext {
 public:
  BenchHost() {
    decode.arena = &arena;
    decode.handles = &ids;
    decode.check_values = true;  // as bypassd: decode includes the enum value checks
  }
  Arena arena;
  Identity ids;
  Dispatch empty;
  Builder rb{1024};
  const Dispatch& dispatch_of(uint64_t) override { return empty; }
  const char* refuse_new_id(VkObjectType, uint64_t id) override { return id != 0 ? nullptr : "id 0"; }
  bool destroy_ok(const char*, const char*, uint64_t) override { return true; }
  void add_object(VkObjectType, uint64_t, uint64_t, uint64_t) override {}
  void remove_object(VkObjectType, uint64_t) override {}
  void send_reply(uint64_t, uint16_t, int32_t, Builder&) override {}
  bool run_blocking(std::function<void()> job) override {
    job();
    return true;
  }
  Builder& reply_builder() override { return rb; }
};

template <class A>
void noop(HostContext&, A& a) {
  keep(&a);
}

// The guest's batch: records appended back to back, "flushed" (cleared) at 64 KiB.
class Batch {
 public:
  Batch() { bytes_.reserve(kFlush + 4096); }
  void append(uint16_t command, uint16_t flags, const void* data, size_t size) {
    const size_t padded = (size + 7) & ~size_t{7};
    const size_t at = bytes_.size();
    bytes_.resize(at + sizeof(RecordHeader) + padded);
    RecordHeader h{static_cast<uint32_t>(sizeof(h) + padded), command, flags};
    std::memcpy(bytes_.data() + at, &h, sizeof(h));
    std::memcpy(bytes_.data() + at + sizeof(h), data, size);
    std::memset(bytes_.data() + at + sizeof(h) + size, 0, padded - size);
    if (bytes_.size() >= kFlush) bytes_.clear();
  }
  void clear() { bytes_.clear(); }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  static constexpr size_t kFlush = 64 * 1024;
  std::vector<uint8_t> bytes_;
};

// Best of `reps` runs of `iters` calls, in ns per call: the minimum is the figure least
// disturbed by other work on a shared machine.
double time_ns(size_t iters, int reps, const std::function<void(size_t)>& body) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    body(iters);
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(iters));
  }
  return best;
}

template <class H>
H handle(uint64_t v) {
  return reinterpret_cast<H>(v);
}

struct Figures {
  double encode_ns = 0, decode_ns = 0;
  size_t bytes = 0;
};

struct Bench {
  Identity guest;
  BenchHost host;
  Builder b{1024};
  Batch batch;
  size_t iters;
  int reps;

  // One record: encoded by `encode` (which appends it), decoded by the host from a copy.
  Figures measure(uint16_t id, const std::function<void()>& encode) {
    Figures f;
    f.encode_ns = time_ns(iters, reps, [&](size_t n) {
      for (size_t i = 0; i < n; ++i) encode();
    });
    batch.clear();
    encode();
    const std::vector<uint8_t> record = batch.bytes();
    f.bytes = record.size();
    RecordHeader h;
    std::memcpy(&h, record.data(), sizeof(h));
    const uint8_t* payload = record.data() + sizeof(h);
    const size_t n = h.size - sizeof(h);
    host.arena.reset();
    if (h.command != id || !kRunTable[id](host, payload, n)) {
      std::fprintf(stderr, "%s: the host rejects the benchmark's record: %s\n", command_name(id),
                   host.decode.error.c_str());
      std::exit(1);
    }
    f.decode_ns = time_ns(iters, reps, [&](size_t count) {
      for (size_t i = 0; i < count; ++i) {
        host.arena.reset();
        host.decode.error.clear();
        const bool ok = kRunTable[id](host, payload, n);
        keep(&ok);
      }
    });
    return f;
  }
};

int run(bool json, bool quick) {
  Bench B;
  B.iters = quick ? 20000 : 400000;
  B.reps = quick ? 3 : 7;
  B.host.handlers.vkCmdDraw = noop<Args_vkCmdDraw>;
  B.host.handlers.vkCmdBindDescriptorSets = noop<Args_vkCmdBindDescriptorSets>;
  B.host.handlers.vkCmdPipelineBarrier = noop<Args_vkCmdPipelineBarrier>;
  B.host.handlers.vkQueueSubmit = noop<Args_vkQueueSubmit>;

  const auto cb = handle<VkCommandBuffer>(0x10001);
  const auto queue = handle<VkQueue>(0x10002);

  const Figures draw = B.measure(kCmd_vkCmdDraw, [&] {
    vkCmdDraw_s w;
    encode_vkCmdDraw(w, B.guest, cb, 3, 1, 0, 0);
    B.batch.append(kCmd_vkCmdDraw, kRecordFixed, &w, sizeof(w));
  });

  const VkDescriptorSet sets[4] = {handle<VkDescriptorSet>(0x20001), handle<VkDescriptorSet>(0x20002),
                                   handle<VkDescriptorSet>(0x20003), handle<VkDescriptorSet>(0x20004)};
  const auto layout = handle<VkPipelineLayout>(0x30001);
  const Figures bind = B.measure(kCmd_vkCmdBindDescriptorSets, [&] {
    Packed& r = thread_packed();
    encode_vkCmdBindDescriptorSets(r, B.guest, cb, VK_PIPELINE_BIND_POINT_GRAPHICS, layout, 0, 4, sets, 0, nullptr);
    B.batch.append(kCmd_vkCmdBindDescriptorSets, kRecordFixed, r.data(), r.size());
  });

  VkImageMemoryBarrier imb{};
  imb.sType = VK_STRUCTURE_TYPE_IMAGE_MEMORY_BARRIER;
  imb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
  imb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT;
  imb.oldLayout = VK_IMAGE_LAYOUT_TRANSFER_DST_OPTIMAL;
  imb.newLayout = VK_IMAGE_LAYOUT_SHADER_READ_ONLY_OPTIMAL;
  imb.srcQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
  imb.dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED;
  imb.image = handle<VkImage>(0x40001);
  imb.subresourceRange = {VK_IMAGE_ASPECT_COLOR_BIT, 0, 1, 0, 1};
  const Figures barrier = B.measure(kCmd_vkCmdPipelineBarrier, [&] {
    encode_vkCmdPipelineBarrier(B.b, B.guest, cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_FRAGMENT_SHADER_BIT,
                                0, 0, nullptr, 0, nullptr, 1, &imb);
    B.batch.append(kCmd_vkCmdPipelineBarrier, 0, B.b.GetBufferPointer(), B.b.GetSize());
  });

  VkSubmitInfo si{};
  si.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cb;
  const auto fence = handle<VkFence>(0x50001);
  const Figures submit = B.measure(kCmd_vkQueueSubmit, [&] {
    encode_vkQueueSubmit(B.b, B.guest, queue, 1, &si, fence);
    B.batch.append(kCmd_vkQueueSubmit, 0, B.b.GetBufferPointer(), B.b.GetSize());
  });

  std::printf("%-34s %10s %10s %8s\n", "command", "encode ns", "decode ns", "bytes");
  auto row = [](const char* name, const Figures& f) {
    std::printf("%-34s %10.1f %10.1f %8zu\n", name, f.encode_ns, f.decode_ns, f.bytes);
  };
  row("vkCmdDraw (fixed layout)", draw);
  row("vkCmdBindDescriptorSets (4 sets)", bind);
  row("vkCmdPipelineBarrier (1 image)", barrier);
  row("vkQueueSubmit (1 command buffer)", submit);
  std::printf("targets: vkCmdDraw encode <= 30 ns (%s), <= 48 bytes (%s)\n", draw.encode_ns <= 30 ? "met" : "MISSED",
              draw.bytes <= 48 ? "met" : "MISSED");
  if (json) {
    std::printf(
        "{\"draw_encode_ns\": %.1f, \"draw_decode_ns\": %.1f, \"draw_bytes\": %zu, "
        "\"bind_sets_encode_ns\": %.1f, \"bind_sets_decode_ns\": %.1f, \"bind_sets_bytes\": %zu, "
        "\"barrier_encode_ns\": %.1f, \"barrier_decode_ns\": %.1f, \"barrier_bytes\": %zu, "
        "\"submit_encode_ns\": %.1f, \"submit_decode_ns\": %.1f, \"submit_bytes\": %zu}\n",
        draw.encode_ns, draw.decode_ns, draw.bytes, bind.encode_ns, bind.decode_ns, bind.bytes, barrier.encode_ns,
        barrier.decode_ns, barrier.bytes, submit.encode_ns, submit.decode_ns, submit.bytes);
  }
  return 0;
}

}  // namespace
}  // namespace bypass::wire::bench

int main(int argc, char** argv) {
  bool json = false, quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json") {
      json = true;
    } else if (a == "--quick") {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--json] [--quick]\n", argv[0]);
      return 2;
    }
  }
  return bypass::wire::bench::run(json, quick);
}
