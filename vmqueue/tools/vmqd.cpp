// vmqd: the host broker of the VM-queue path (to be folded into bypassd later).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bypass/vmqueue/broker.h"

namespace {
bypass::vmqueue::Broker* g_broker = nullptr;
void on_signal(int) {
  if (g_broker != nullptr) g_broker->stop();  // an atomic store and an eventfd write: signal-safe
}

std::string default_socket() {
  if (::geteuid() == 0) return "/run/bypass/vmq.sock";
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  return std::string(xdg != nullptr ? xdg : "/tmp") + "/bypass/vmq.sock";
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vmqd: VM-queue host broker (page-granular message passing between domains)"};
  bypass::vmqueue::BrokerOptions options;
  options.socket_path = default_socket();
  bool no_hugetlb = false;
  app.add_option("-s,--socket", options.socket_path, "UNIX socket domains connect to")->capture_default_str();
  app.add_option("--pages-4k", options.pages_4k, "4 KiB pages in the pool")->capture_default_str();
  app.add_option("--pages-2m", options.pages_2m, "2 MiB pages in the pool")->capture_default_str();
  app.add_flag("--no-hugetlb", no_hugetlb, "back 2 MiB pages by ordinary shared memory, not hugetlbfs");
  app.add_flag("-v,--verbose", options.verbose, "log sessions to stderr");
  CLI11_PARSE(app, argc, argv);
  options.hugetlb = !no_hugetlb;

  auto dir = options.socket_path.substr(0, options.socket_path.rfind('/'));
  if (!dir.empty()) ::mkdir(dir.c_str(), 0755);
  try {
    bypass::vmqueue::Broker broker(options);
    g_broker = &broker;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    ::sigaction(SIGTERM, &sa, nullptr);
    ::sigaction(SIGINT, &sa, nullptr);
    std::printf("vmqd: listening on %s; pools: %u x 4 KiB, %u x 2 MiB (%s)\n", options.socket_path.c_str(),
                options.pages_4k, options.pages_2m,
                broker.stats().huge_pages_are_hugetlb ? "hugetlbfs" : "shared-memory fallback");
    std::fflush(stdout);
    broker.run();
    g_broker = nullptr;
    auto st = broker.stats();
    std::printf("vmqd: stopped; %llu domains served, %llu messages, %llu pages moved\n",
                static_cast<unsigned long long>(st.domains_connected), static_cast<unsigned long long>(st.messages),
                static_cast<unsigned long long>(st.pages_moved));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmqd: %s\n", e.what());
    return 1;
  }
  return 0;
}
