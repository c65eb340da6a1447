// Shared pieces of the icd_bench workloads: the size preset, the result record printed as one
// JSON object, timing, and the few Vulkan helpers the samples' library does not have.
#pragma once

#include <vulkan/vulkan.h>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "context.h"
#include "handles.h"

namespace bypass::bench {

// How much work a run does. kSmoke only proves the harness works (ctest), kQuick is
// `bench/run --quick`, kFull the default run.
enum class Scale { kSmoke, kQuick, kFull };

constexpr uint32_t pick(Scale s, uint32_t smoke, uint32_t quick, uint32_t full) {
  return s == Scale::kSmoke ? smoke : s == Scale::kQuick ? quick : full;
}

// The figures one workload run produces, printed by main() as one JSON object so bench/run
// can read them. Keys keep their insertion order.
class Report {
 public:
  void set(const std::string& key, double value);
  void set(const std::string& key, const std::string& value);
  std::string json() const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;  // key, JSON-encoded value
};

using Clock = std::chrono::steady_clock;

inline double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The median of `values` (which it reorders); 0 for none.
double median(std::vector<double>& values);
// The p-th percentile (0..100, nearest rank) of `values` (which it sorts); 0 for none.
double percentile(std::vector<double>& values, double p);

// CPU time spent on the measured work, by this process (all its threads: the application and,
// natively, the driver's) and by the host server whose pid bench/run passes with --host-pid
// (bypassd: decoder, waiter and driver threads). Unlike wall time it hardly depends on how busy
// the machine is, so native CPU / (guest + host CPU) is a steady measure of what remoting costs.
class CpuMeter {
 public:
  CpuMeter();
  void start();
  void stop();  // adds the time since start()
  // Sets cpu_guest_s and, with a host, cpu_host_s.
  void report(Report& out) const;

 private:
  clockid_t host_clock_{};
  bool has_host_ = false;
  double guest_s_ = 0, host_s_ = 0;
  double guest_start_ = 0, host_start_ = 0;
};

// The host server's pid for CpuMeter (0: none, e.g. a native run). Set once by main().
void set_host_pid(int pid);

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
void run_cmd_stream_tables(const samples::Context& ctx, Scale scale, Report& out);
void run_sync_rtt(const samples::Context& ctx, Scale scale, Report& out);
void run_map_write(const samples::Context& ctx, Scale scale, Report& out);
void run_upload(const samples::Context& ctx, Scale scale, Report& out);

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
void write_buffer_descriptor(VkDevice device, VkDescriptorSet set, VkDescriptorType type,
                             VkBuffer buffer, VkDeviceSize offset, VkDeviceSize range);

// vkQueueSubmit of one command buffer signalling `fence`.
void submit(VkQueue queue, VkCommandBuffer cmd, VkFence fence);
// Waits for `fence` (bounded, so a lost host is an error, not a hang) and resets it.
void wait_and_reset(VkDevice device, VkFence fence);

}  // namespace bypass::bench
