// vmqd: the host broker of the VM-queue path (to be folded into bypassd later).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bypass/base/socket_path.h"
#include "bypass/base/unix_socket.h"
#include "bypass/vmqueue/broker.h"

namespace {
bypass::vmqueue::Broker* g_broker = nullptr;
void on_signal(int) {
  if (g_broker != nullptr) g_broker->stop();  // an atomic store and an eventfd write: signal-safe
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vmqd: VM-queue host broker (page-granular message passing between domains)"};
  bypass::vmqueue::BrokerOptions options;
  options.socket_path = bypass::base::default_socket_path("vmq.sock");
  bool no_hugetlb = false;
  app.add_option("-s,--socket", options.socket_path, "UNIX socket domains connect to")->capture_default_str();
  app.add_option("--pages-4k", options.pages_4k, "4 KiB pages in the pool")->capture_default_str();
  app.add_option("--pages-2m", options.pages_2m, "2 MiB pages in the pool")->capture_default_str();
  app.add_flag("--no-hugetlb", no_hugetlb, "back 2 MiB pages by ordinary shared memory, not hugetlbfs");
  app.add_option("--device", options.device_path,
                 "VM device file (QEMU: -object memory-backend-file,share=on,mem-path=FILE + -device "
                 "ivshmem-plain): the pools live in it and domains inside VMs attach through it");
  app.add_option("--vm-slots", options.vm_slots, "VM domains the device holds at once")->capture_default_str();
  app.add_option("--max-domains", options.max_domains,
                 "domains connected on the socket at once; one more is refused (kFull)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1'000'000u));
  std::vector<std::string> vms;
  app.add_option("--vm", vms,
                 "NAME:PATH[:SLOTS] a VM's own control device (repeatable; needs --device): that VM's domains "
                 "attach through its slots there (default 4), which no other VM maps; --device then holds the "
                 "pools only. The VM gets both devices");
  bool no_doorbell = false;
  app.add_flag("--no-doorbell", no_doorbell,
               "no doorbell sockets (DEVICE.<slot>.sock) for the VM slots: VM domains and vmqd poll the rings");
  app.add_flag("-v,--verbose", options.verbose, "log sessions to stderr");
  CLI11_PARSE(app, argc, argv);
  options.hugetlb = !no_hugetlb;
  options.doorbells = !no_doorbell;
  for (const std::string& vm : vms) {
    const size_t a = vm.find(':');
    const size_t b = a == std::string::npos ? a : vm.find(':', a + 1);
    bypass::vmqueue::BrokerOptions::Vm parsed;
    parsed.name = vm.substr(0, a);
    parsed.path = a == std::string::npos ? "" : vm.substr(a + 1, b == std::string::npos ? b : b - a - 1);
    char* end = nullptr;
    if (b != std::string::npos) parsed.slots = static_cast<uint32_t>(std::strtoul(vm.c_str() + b + 1, &end, 10));
    if (parsed.name.empty() || parsed.path.empty() || (end != nullptr && *end != '\0')) {
      std::fprintf(stderr, "vmqd: --vm %s: want NAME:PATH[:SLOTS]\n", vm.c_str());
      return 1;
    }
    options.vms.push_back(parsed);
  }

  // Our own directory (0755 for the system service, 0700 for a user's broker), refused when
  // another user made it first: the same rule as bypassd's.
  if (auto dir = bypass::base::secure_socket_dir(options.socket_path, ::geteuid() == 0 ? 0755 : 0700); !dir) {
    std::fprintf(stderr, "vmqd: cannot listen on %s: %s\n", options.socket_path.c_str(), dir.error().message.c_str());
    return 1;
  }
  auto created = bypass::vmqueue::Broker::create(options);
  if (!created) {
    std::fprintf(stderr, "vmqd: %s\n", created.error().message.c_str());
    return 1;
  }
  bypass::vmqueue::Broker& broker = **created;
  g_broker = &broker;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  std::printf("vmqd: listening on %s; pools: %u x 4 KiB, %u x 2 MiB (%s)\n", options.socket_path.c_str(),
              options.pages_4k, options.pages_2m,
              !options.device_path.empty()            ? "in the VM device"
              : broker.stats().huge_pages_are_hugetlb ? "hugetlbfs"
                                                      : "shared-memory fallback");
  if (!options.device_path.empty()) {
    struct stat st {};
    ::stat(options.device_path.c_str(), &st);
    std::printf("vmqd: VM device %s: %lld MiB, %u slots\n", options.device_path.c_str(),
                static_cast<long long>(st.st_size >> 20), options.vms.empty() ? options.vm_slots : 0);
    for (const auto& vm : options.vms) {
      ::stat(vm.path.c_str(), &st);
      std::printf("vmqd: VM '%s' control device %s: %lld KiB, %u slots\n", vm.name.c_str(), vm.path.c_str(),
                  static_cast<long long>(st.st_size >> 10), vm.slots);
    }
  }
  std::fflush(stdout);
  const auto served = broker.run();
  g_broker = nullptr;
  if (!served) {
    std::fprintf(stderr, "vmqd: %s\n", served.error().message.c_str());
    return 1;
  }
  auto st = broker.stats();
  std::printf(
      "vmqd: stopped; %llu domains served, %llu messages, %llu pages moved, %llu pages free, %llu VM domains "
      "silent, %llu sessions ended for protocol errors\n",
      static_cast<unsigned long long>(st.domains_connected), static_cast<unsigned long long>(st.messages),
      static_cast<unsigned long long>(st.pages_moved), static_cast<unsigned long long>(st.pages_free),
      static_cast<unsigned long long>(st.vm_domains_silent),
      static_cast<unsigned long long>(st.sessions_ended_for_protocol));
  return 0;
}
