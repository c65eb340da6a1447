// Shared pieces of the icd_bench workloads: the size preset, the workload table and the few
// Vulkan helpers the samples' library does not have.
#pragma once

#include <vulkan/vulkan.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "context.h"
#include "handles.h"
#include "report.h"

namespace bypass::bench {

// How much work a run does. kSmoke only proves the harness works (ctest), kQuick is
// `bench/run --quick`, kFull the default run.
enum class Scale { kSmoke, kQuick, kFull };

constexpr uint32_t pick(Scale s, uint32_t smoke, uint32_t quick, uint32_t full) {
  return s == Scale::kSmoke ? smoke : s == Scale::kQuick ? quick : full;
}

// A workload: what bench/run asks for by name.
struct Workload {
  const char* name;
  const char* summary;
  void (*run)(const samples::Context& ctx, Scale scale, Report& out);
};

void run_frame_loop(const samples::Context& ctx, Scale scale, Report& out);
void run_compute_small(const samples::Context& ctx, Scale scale, Report& out);
void run_compute_large(const samples::Context& ctx, Scale scale, Report& out);
void run_cmd_stream(const samples::Context& ctx, Scale scale, Report& out);
void run_cmd_stream_fixed(const samples::Context& ctx, Scale scale, Report& out);
void run_cmd_stream_arrays(const samples::Context& ctx, Scale scale, Report& out);
void run_sync_rtt(const samples::Context& ctx, Scale scale, Report& out);
void run_map_write(const samples::Context& ctx, Scale scale, Report& out);
void run_upload(const samples::Context& ctx, Scale scale, Report& out);

// All workloads, in the order bench/run runs them (defined in icd_bench.cpp).
std::span<const Workload> workloads();

// ---- Vulkan helpers

using UniqueDescriptorSetLayout = samples::UniqueDescriptorSetLayout;
using UniqueDescriptorPool = samples::UniqueDescriptorPool;

// A layout with one descriptor of `type` at binding 0.
UniqueDescriptorSetLayout create_single_binding_layout(VkDevice device, VkDescriptorType type,
                                                       VkShaderStageFlags stages);
// A pool for `sets` sets of one `type` descriptor each.
UniqueDescriptorPool create_pool(VkDevice device, VkDescriptorType type, uint32_t sets);
VkDescriptorSet allocate_set(VkDevice device, VkDescriptorPool pool, VkDescriptorSetLayout layout);
void write_buffer_descriptor(VkDevice device, VkDescriptorSet set, VkDescriptorType type, VkBuffer buffer,
                             VkDeviceSize offset, VkDeviceSize range);

// vkQueueSubmit of one command buffer signalling `fence`.
void submit(VkQueue queue, VkCommandBuffer cmd, VkFence fence);
// Waits for `fence` (bounded, so a lost host is an error, not a hang) and resets it.
void wait_and_reset(VkDevice device, VkFence fence);

}  // namespace bypass::bench
