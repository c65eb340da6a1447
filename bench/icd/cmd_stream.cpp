// Command stream: how many commands per second get from the application's recording calls to
// the driver's execution. Each command buffer holds 10,000 cheap commands (dynamic state and
// push constants: almost nothing for the driver to execute) ending in a vkCmdFillBuffer that
// stamps the buffer's number, so the run proves every buffer was executed, in order. Two
// buffers are in flight: the application records the next while the previous executes, as a
// renderer does.
//
// Natively this measures lavapipe's recording and execution; through the bypass it adds the
// guest's encoding, the ring, and bypassd's decoding and replay of every command. Half of the
// commands take only scalars and handles, half take arrays or bytes (viewports, scissors,
// blend constants, push constants), so there are three mixes: cmd_stream (half and half, the
// headline figure), cmd_stream_fixed and cmd_stream_arrays, which show what each kind costs.
// All of them travel as fixed-layout records, the array commands with their arrays after the
// struct (docs/codegen.md); until December 2026 those were FlatBuffers tables.
#include <array>
#include <string>

#include "bench_util.h"
#include "check.h"
#include "commands.h"
#include "pipeline.h"
#include "resources.h"
#include "vk_check.h"

namespace bypass::bench {
namespace {

using samples::vk_check;

constexpr uint32_t kCommandsPerBuffer = 10'000;
constexpr uint32_t kInFlight = 2;

enum class Mix { kHalf, kFixed, kArrays };

// Commands that take an array or bytes: fixed-layout records with trailing arrays on the wire.
void record_array_command(VkCommandBuffer cmd, VkPipelineLayout layout, uint32_t c, uint32_t index) {
  const float f = static_cast<float>(c % 97);
  switch (c % 4) {
    case 0: {
      const float push[4] = {f, f + 1, f + 2, static_cast<float>(index)};
      vkCmdPushConstants(cmd, layout, VK_SHADER_STAGE_VERTEX_BIT, 0, sizeof push, push);
      break;
    }
    case 1: {
      const VkViewport viewport{0, 0, 64 + f, 64 + f, 0, 1};
      vkCmdSetViewport(cmd, 0, 1, &viewport);
      break;
    }
    case 2: {
      const VkRect2D scissor{{0, 0}, {64 + c % 97, 64}};
      vkCmdSetScissor(cmd, 0, 1, &scissor);
      break;
    }
    default: {
      const float blend[4] = {f / 97, 0.5f, 0.25f, 1.0f};
      vkCmdSetBlendConstants(cmd, blend);
      break;
    }
  }
}

// Commands the wire carries as fixed-layout records (scalars and handles only).
void record_fixed_command(VkCommandBuffer cmd, uint32_t c) {
  switch (c % 4) {
    case 0:
      vkCmdSetLineWidth(cmd, 1.0f);
      break;
    case 1:
      vkCmdSetDepthBias(cmd, static_cast<float>(c % 97), 0.0f, 1.0f);
      break;
    case 2:
      vkCmdSetStencilReference(cmd, VK_STENCIL_FACE_FRONT_AND_BACK, c & 0xFF);
      break;
    default:
      vkCmdSetStencilCompareMask(cmd, VK_STENCIL_FACE_FRONT_AND_BACK, c & 0xFF);
      break;
  }
}

void record_stream(VkCommandBuffer cmd, Mix mix, VkPipelineLayout layout, VkBuffer stamp, VkDeviceSize offset,
                   uint32_t index) {
  // The last two commands are the stamp and the barrier that makes it visible to the host.
  for (uint32_t c = 0; c + 2 < kCommandsPerBuffer; ++c) {
    const bool arrays = mix == Mix::kArrays || (mix == Mix::kHalf && (c / 4) % 2 == 0);
    if (arrays)
      record_array_command(cmd, layout, c, index);
    else
      record_fixed_command(cmd, c);
  }
  vkCmdFillBuffer(cmd, stamp, offset, 4, index);
  samples::record_memory_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
                                 VK_PIPELINE_STAGE_HOST_BIT, VK_ACCESS_HOST_READ_BIT);
}

void run(const samples::Context& ctx, Mix mix, Scale scale, Report& out) {
  VkDevice device = ctx.device();
  const uint32_t buffers = pick(scale, 4, 100, 300);
  const uint32_t warmup = pick(scale, 2, 6, 10);

  const VkPushConstantRange push_range{VK_SHADER_STAGE_VERTEX_BIT, 0, 16};
  auto layout = samples::create_pipeline_layout(device, {}, std::span(&push_range, 1));
  std::array<samples::UniqueCommandPool, kInFlight> pools;
  std::array<VkCommandBuffer, kInFlight> cmds{};
  std::array<samples::UniqueFence, kInFlight> fences;
  samples::Buffer stamps(ctx, 4 * kInFlight, VK_BUFFER_USAGE_TRANSFER_DST_BIT, samples::MemoryUse::kReadback);
  for (uint32_t i = 0; i < kInFlight; ++i) {
    pools[i] = samples::create_command_pool(device, ctx.queue_family(), VK_COMMAND_POOL_CREATE_TRANSIENT_BIT);
    cmds[i] = samples::allocate_command_buffers(device, pools[i].get(), VK_COMMAND_BUFFER_LEVEL_PRIMARY, 1)[0];
    fences[i] = samples::create_fence(device, /*signaled=*/true);
  }

  samples::ResultCheck check("command stream stamps");
  double record_s = 0;
  // Buffer n uses slot n % 2; before reusing a slot, its previous buffer's stamp is checked.
  std::array<int64_t, kInFlight> in_slot{-1, -1};
  auto check_slot = [&](uint32_t slot) {
    if (in_slot[slot] < 0) return;
    stamps.invalidate();
    check.expect_equal("stamp of buffer", static_cast<uint64_t>(in_slot[slot]), stamps.mapped<uint32_t>()[slot],
                       static_cast<uint64_t>(in_slot[slot]));
  };
  auto one_buffer = [&](uint32_t n) {
    const uint32_t slot = n % kInFlight;
    wait_and_reset(device, fences[slot].get());
    check_slot(slot);
    vk_check(vkResetCommandPool(device, pools[slot].get(), 0), "vkResetCommandPool");
    const auto t0 = Clock::now();
    samples::begin_command_buffer(cmds[slot], VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT);
    // Each slot stamps its own 4 bytes.
    record_stream(cmds[slot], mix, layout.get(), stamps.get(), VkDeviceSize{slot} * 4, n);
    samples::end_command_buffer(cmds[slot]);
    record_s += seconds_between(t0, Clock::now());
    submit(ctx.queue(), cmds[slot], fences[slot].get());
    in_slot[slot] = n;
  };
  auto drain = [&] {
    for (uint32_t slot = 0; slot < kInFlight; ++slot) {
      VkFence fence = fences[slot].get();
      vk_check(vkWaitForFences(device, 1, &fence, VK_TRUE, 60'000'000'000ull), "vkWaitForFences");
      check_slot(slot);
      in_slot[slot] = -1;
    }
  };

  for (uint32_t n = 0; n < warmup; ++n) one_buffer(n);
  drain();
  record_s = 0;
  CpuMeter cpu;
  cpu.start();
  const auto start = Clock::now();
  for (uint32_t n = warmup; n < warmup + buffers; ++n) one_buffer(n);
  drain();
  const double elapsed = seconds_between(start, Clock::now());
  cpu.stop();
  check.finish();

  const double commands = double{kCommandsPerBuffer} * buffers;
  out.set("buffers", buffers);
  out.set("commands_per_buffer", kCommandsPerBuffer);
  out.set("seconds", elapsed);
  out.set("commands_per_s", commands / elapsed);
  out.set("ns_per_command", elapsed * 1e9 / commands);
  out.set("record_ns_per_command", record_s * 1e9 / commands);
  cpu.report(out);
}

}  // namespace

void run_cmd_stream(const samples::Context& ctx, Scale scale, Report& out) { run(ctx, Mix::kHalf, scale, out); }
void run_cmd_stream_fixed(const samples::Context& ctx, Scale scale, Report& out) { run(ctx, Mix::kFixed, scale, out); }
void run_cmd_stream_arrays(const samples::Context& ctx, Scale scale, Report& out) {
  run(ctx, Mix::kArrays, scale, out);
}

}  // namespace bypass::bench
