#include "bench_util.h"

#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "vk_check.h"

namespace bypass::bench {

namespace {

// Bounded like the samples' waits: generous for a loaded 2-core machine, short enough that a
// host that stopped answering fails the run instead of hanging it.
constexpr uint64_t kFenceTimeoutNs = 60ull * 1000 * 1000 * 1000;

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

int g_host_pid = 0;

double clock_seconds(clockid_t clock) {
  timespec ts{};
  if (clock_gettime(clock, &ts) != 0) return 0;
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace

void set_host_pid(int pid) { g_host_pid = pid; }

CpuMeter::CpuMeter() {
  // The host's process CPU-time clock counts all its threads, including ones that ended.
  if (g_host_pid > 0 && clock_getcpuclockid(g_host_pid, &host_clock_) == 0) has_host_ = true;
}

void CpuMeter::start() {
  guest_start_ = clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
  if (has_host_) host_start_ = clock_seconds(host_clock_);
}

void CpuMeter::stop() {
  guest_s_ += clock_seconds(CLOCK_PROCESS_CPUTIME_ID) - guest_start_;
  if (has_host_) host_s_ += clock_seconds(host_clock_) - host_start_;
}

void CpuMeter::report(Report& out) const {
  out.set("cpu_guest_s", guest_s_);
  if (has_host_) out.set("cpu_host_s", host_s_);
}

void Report::set(const std::string& key, double value) {
  char buf[64];
  // JSON has no NaN or infinity; a figure that could not be measured is null.
  if (std::isfinite(value))
    std::snprintf(buf, sizeof buf, "%.9g", value);
  else
    std::snprintf(buf, sizeof buf, "null");
  fields_.emplace_back(key, buf);
}

void Report::set(const std::string& key, const std::string& value) { fields_.emplace_back(key, json_string(value)); }

std::string Report::json() const {
  std::string out = "{";
  for (size_t i = 0; i < fields_.size(); ++i) {
    if (i) out += ", ";
    out += json_string(fields_[i].first) + ": " + fields_[i].second;
  }
  return out + "}";
}

double median(std::vector<double>& values) {
  if (values.empty()) return 0;
  const size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid), values.end());
  double m = values[mid];
  if (values.size() % 2 == 0) {
    m = (m + *std::max_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid))) / 2;
  }
  return m;
}

double percentile(std::vector<double>& values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(p / 100.0 * static_cast<double>(values.size()));
  const size_t index = static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(values.size()))) - 1;
  return values[index];
}

std::span<const Workload> workloads() {
  static const Workload kAll[] = {
      {"frame_loop", "offscreen frames of 1,000 draws (4 pipelines, 16 descriptor sets, push constants), 2 in flight",
       run_frame_loop},
      {"compute_small", "submit + fence wait of one 64-invocation dispatch, repeated", run_compute_small},
      {"compute_large", "submit + fence wait of a 1M-invocation dispatch, repeated", run_compute_large},
      {"cmd_stream", "record command buffers of 10,000 cheap commands, submit, wait", run_cmd_stream},
      {"cmd_stream_fixed", "cmd_stream with only commands the wire carries as fixed-layout records",
       run_cmd_stream_fixed},
      {"cmd_stream_tables", "cmd_stream with only commands the wire carries as FlatBuffers tables",
       run_cmd_stream_tables},
      {"sync_rtt", "vkGetFenceStatus on a signalled fence: back to back, and after idle gaps", run_sync_rtt},
      {"map_write", "memcpy into mapped host-visible memory, then a submit that reads it; plain memcpy beside it",
       run_map_write},
      {"upload", "256 MiB through a 64 MiB staging buffer into a device-local 8192x8192 RGBA8 image", run_upload},
  };
  return kAll;
}

UniqueDescriptorSetLayout create_single_binding_layout(VkDevice device, VkDescriptorType type,
                                                       VkShaderStageFlags stages) {
  VkDescriptorSetLayoutBinding binding{};
  binding.binding = 0;
  binding.descriptorType = type;
  binding.descriptorCount = 1;
  binding.stageFlags = stages;
  VkDescriptorSetLayoutCreateInfo info{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  info.bindingCount = 1;
  info.pBindings = &binding;
  UniqueDescriptorSetLayout layout;
  samples::vk_check(vkCreateDescriptorSetLayout(device, &info, nullptr, layout.put(device)),
                    "vkCreateDescriptorSetLayout");
  return layout;
}

UniqueDescriptorPool create_pool(VkDevice device, VkDescriptorType type, uint32_t sets) {
  VkDescriptorPoolSize size{type, sets};
  VkDescriptorPoolCreateInfo info{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
  info.maxSets = sets;
  info.poolSizeCount = 1;
  info.pPoolSizes = &size;
  UniqueDescriptorPool pool;
  samples::vk_check(vkCreateDescriptorPool(device, &info, nullptr, pool.put(device)), "vkCreateDescriptorPool");
  return pool;
}

VkDescriptorSet allocate_set(VkDevice device, VkDescriptorPool pool, VkDescriptorSetLayout layout) {
  VkDescriptorSetAllocateInfo info{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
  info.descriptorPool = pool;
  info.descriptorSetCount = 1;
  info.pSetLayouts = &layout;
  VkDescriptorSet set = VK_NULL_HANDLE;
  samples::vk_check(vkAllocateDescriptorSets(device, &info, &set), "vkAllocateDescriptorSets");
  return set;
}

void write_buffer_descriptor(VkDevice device, VkDescriptorSet set, VkDescriptorType type,
                             VkBuffer buffer, VkDeviceSize offset, VkDeviceSize range) {
  VkDescriptorBufferInfo buffer_info{buffer, offset, range};
  VkWriteDescriptorSet write{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
  write.dstSet = set;
  write.dstBinding = 0;
  write.descriptorCount = 1;
  write.descriptorType = type;
  write.pBufferInfo = &buffer_info;
  vkUpdateDescriptorSets(device, 1, &write, 0, nullptr);
}

void submit(VkQueue queue, VkCommandBuffer cmd, VkFence fence) {
  VkSubmitInfo info{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  info.commandBufferCount = 1;
  info.pCommandBuffers = &cmd;
  samples::vk_check(vkQueueSubmit(queue, 1, &info, fence), "vkQueueSubmit");
}

void wait_and_reset(VkDevice device, VkFence fence) {
  const VkResult r = vkWaitForFences(device, 1, &fence, VK_TRUE, kFenceTimeoutNs);
  if (r == VK_TIMEOUT) throw std::runtime_error("a submission did not finish within 60 s");
  samples::vk_check(r, "vkWaitForFences");
  samples::vk_check(vkResetFences(device, 1, &fence), "vkResetFences");
}

}  // namespace bypass::bench
