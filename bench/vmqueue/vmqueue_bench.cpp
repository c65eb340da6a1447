// VM-queue pages per second by message size, then the same through a VM device (vmqd --device:
// domains attached through device slots and polling, as inside a VM, here processes of this
// machine mapping the device file; vm_vmqueue measures two real guests). Prints a table, then
// one JSON line.
#include <cstdio>

#include "vmq_throughput.h"

int main() {
  using namespace std::chrono_literals;
  std::string json = "{";
  {
    vmq_bench::Vmqd broker(VMQD_PATH, {"--pages-2m", "16"});
    for (size_t n : {1, 4, 16, 64}) {
      auto f = vmq_bench::measure(broker, n, bypass::vmqueue::PageSize::k4K, 700ms);
      std::printf("4 KiB pages x %-3zu per message: %10.0f messages/s %11.0f pages/s (%.2f GB/s)%s\n", n,
                  f.messages_per_s, f.pages_per_s, f.pages_per_s * 4096 / 1e9, f.ok ? "" : "  [lost messages]");
      json += (json.size() > 1 ? "," : "") + std::string("\"pages_per_s_") + std::to_string(n) +
              "\":" + std::to_string(static_cast<long long>(f.pages_per_s));
    }
    // The same handed over in batches (Domain::send_batch): one broker pass per batch.
    for (size_t n : {1, 16}) {
      auto f = vmq_bench::measure(broker, n, bypass::vmqueue::PageSize::k4K, 700ms, false, 32);
      std::printf("4 KiB pages x %-3zu, batches of 32: %7.0f messages/s %11.0f pages/s (%.2f GB/s)%s\n", n,
                  f.messages_per_s, f.pages_per_s, f.pages_per_s * 4096 / 1e9, f.ok ? "" : "  [lost messages]");
      json +=
          ",\"batched_pages_per_s_" + std::to_string(n) + "\":" + std::to_string(static_cast<long long>(f.pages_per_s));
    }
    auto h = vmq_bench::measure(broker, 1, bypass::vmqueue::PageSize::k2M, 700ms);
    std::printf("2 MiB pages x 1   per message: %10.0f messages/s %11.0f pages/s (%.2f GB/s)\n", h.messages_per_s,
                h.pages_per_s, h.pages_per_s * (2 << 20) / 1e9);
    json += ",\"huge_pages_per_s\":" + std::to_string(static_cast<long long>(h.pages_per_s));
  }  // one broker at a time: both would listen on the same socket
  vmq_bench::Vmqd device_broker(VMQD_PATH, {"--pages-2m", "16"}, true);
  for (size_t n : {1, 16}) {
    auto f = vmq_bench::measure(device_broker, n, bypass::vmqueue::PageSize::k4K, 700ms, true);
    std::printf("VM device, 4 KiB pages x %-3zu: %10.0f messages/s %11.0f pages/s (%.2f GB/s)%s\n", n, f.messages_per_s,
                f.pages_per_s, f.pages_per_s * 4096 / 1e9, f.ok ? "" : "  [lost messages]");
    json += ",\"vm_pages_per_s_" + std::to_string(n) + "\":" + std::to_string(static_cast<long long>(f.pages_per_s));
  }
  {
    auto f = vmq_bench::measure(device_broker, 1, bypass::vmqueue::PageSize::k4K, 700ms, true, 32);
    std::printf("VM device, 4 KiB pages x 1, batches of 32: %7.0f messages/s %11.0f pages/s (%.2f GB/s)%s\n",
                f.messages_per_s, f.pages_per_s, f.pages_per_s * 4096 / 1e9, f.ok ? "" : "  [lost messages]");
    json += ",\"vm_batched_pages_per_s_1\":" + std::to_string(static_cast<long long>(f.pages_per_s));
  }
  auto vh = vmq_bench::measure(device_broker, 1, bypass::vmqueue::PageSize::k2M, 700ms, true);
  std::printf("VM device, 2 MiB pages x 1  : %10.0f messages/s %11.0f pages/s (%.2f GB/s)\n", vh.messages_per_s,
              vh.pages_per_s, vh.pages_per_s * (2 << 20) / 1e9);
  json += ",\"vm_huge_pages_per_s\":" + std::to_string(static_cast<long long>(vh.pages_per_s)) + "}";
  std::printf("%s\n", json.c_str());
  return 0;
}
