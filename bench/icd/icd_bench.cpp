// icd_bench: one workload of the bypass-vs-native comparison, run on whatever Vulkan driver
// the loader finds. bench/run starts it with VK_DRIVER_FILES naming lavapipe (native) and
// again naming the bypass guest ICD, and compares what the two runs print: one JSON object on
// stdout with the workload's figures. Every workload also checks its own result, so a fast
// but wrong path fails (exit 1) instead of winning.
//
//   icd_bench --workload frame_loop [--scale smoke|quick|full] [--expect native|bypass]
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "args.h"
#include "bench_util.h"
#include "context.h"
#include "sample_main.h"

namespace bypass::bench {

std::span<const Workload> workloads() {
  static const Workload kAll[] = {
      {"frame_loop", "offscreen frames of 1,000 draws (4 pipelines, 16 descriptor sets, push constants), 2 in flight",
       run_frame_loop},
      {"compute_small", "submit + fence wait of one 64-invocation dispatch, repeated", run_compute_small},
      {"compute_large", "submit + fence wait of a 1M-invocation dispatch, repeated", run_compute_large},
      {"cmd_stream", "record command buffers of 10,000 cheap commands, submit, wait", run_cmd_stream},
      {"cmd_stream_fixed", "cmd_stream with only commands the wire carries as fixed-layout records",
       run_cmd_stream_fixed},
      {"cmd_stream_arrays",
       "cmd_stream with only commands that take arrays or bytes (viewports, scissors, push constants)",
       run_cmd_stream_arrays},
      {"sync_rtt", "vkGetFenceStatus on a signalled fence: back to back, and after idle gaps", run_sync_rtt},
      {"map_write", "memcpy into mapped host-visible memory, then a submit that reads it; plain memcpy beside it",
       run_map_write},
      {"upload", "256 MiB through a 64 MiB staging buffer into a device-local 8192x8192 RGBA8 image", run_upload},
  };
  return kAll;
}

namespace {

// The guest ICD reports its devices as "bypass (<host device name>)".
bool is_bypass_device(const VkPhysicalDeviceProperties& p) { return std::strncmp(p.deviceName, "bypass (", 8) == 0; }

void run(int argc, char** argv) {
  samples::CommonArgs common;  // --out/--frames/--timing are accepted and ignored
  std::string workload;
  std::string scale_name = "full";
  std::string expect = "any";
  bool list = false;
  uint32_t host_pid = 0;
  std::vector<std::string> names;
  std::string help = "Workloads:\n";
  for (const Workload& w : workloads()) {
    names.push_back(w.name);
    help += std::string("  ") + w.name + ": " + w.summary + "\n";
  }
  samples::ArgParser parser("icd_bench",
                            "Runs one workload of the bypass benchmark on the Vulkan driver the loader finds\n"
                            "and prints its figures as one JSON object.\n" +
                                help,
                            common);
  parser.add_choice("--workload", "what to run", names, &workload);
  parser.add_choice("--scale", "how much work", {"smoke", "quick", "full"}, &scale_name);
  parser.add_choice("--expect", "fail unless the device is native or the bypass", {"any", "native", "bypass"}, &expect);
  parser.add_uint("--host-pid", "PID", "the host server, whose CPU time is measured too (0: none)", &host_pid, 0,
                  0x7fffffff);
  parser.add_flag("--list", "print the workload names and exit", &list);
  if (!parser.parse(argc, argv)) return;
  if (list) {
    for (const auto& n : names) std::printf("%s\n", n.c_str());
    return;
  }
  if (workload.empty()) throw samples::UsageError("--workload is required (see --help)");
  const Scale scale = scale_name == "smoke" ? Scale::kSmoke : scale_name == "quick" ? Scale::kQuick : Scale::kFull;

  set_host_pid(static_cast<int>(host_pid));
  const Workload* w = nullptr;
  for (const Workload& candidate : workloads())
    if (workload == candidate.name) w = &candidate;

  Report report;
  {
    samples::Context ctx({.app_name = "bypass-icd-bench"});
    const bool bypass = is_bypass_device(ctx.properties());
    if (expect == "native" && bypass)
      throw std::runtime_error("expected a native device, got " + std::string(ctx.properties().deviceName));
    if (expect == "bypass" && !bypass)
      throw std::runtime_error("expected the bypass device, got " + std::string(ctx.properties().deviceName));
    report.set("workload", w->name);
    report.set("scale", scale_name);
    report.set("device", ctx.properties().deviceName);
    report.set("path", bypass ? "bypass" : "native");
    w->run(ctx, scale, report);
  }
  std::printf("%s\n", report.json().c_str());
  std::fflush(stdout);
}

}  // namespace
}  // namespace bypass::bench

int main(int argc, char** argv) {
  return bypass::samples::sample_main("icd_bench", [&] { bypass::bench::run(argc, argv); });
}
