// bypass-xover: sets up, inspects and tears down crossover links (two virtual NICs wired back
// to back through shared memory, one TAP device in each of two network namespaces).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "bypass/crossover/link.h"

using namespace bypass::crossover;

namespace {

bool parse_side(const std::string& s, uint32_t* side) {
  if (s == "a")
    *side = kPortA;
  else if (s == "b")
    *side = kPortB;
  else
    return false;
  return true;
}

bool mac_option(const std::string& text, Mac* mac, const char* what) {
  if (text.empty()) return true;
  if (parse_mac(text, mac)) return true;
  std::fprintf(stderr, "bypass-xover: bad MAC for %s: %s\n", what, text.c_str());
  return false;
}

// Starts the daemon in the background and waits until both endpoints are attached.
int create_detached(const LinkOptions& o) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return 1;
  pid_t pid = ::fork();
  if (pid < 0) return 1;
  if (pid == 0) {
    ::close(pipefd[0]);
    ::setsid();
    if (::fork() != 0) ::_exit(0);  // the daemon is not a session leader: no controlling tty
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
      if (!o.verbose) ::dup2(null, 2);
    }
    ::_exit(run_link_daemon(o, pipefd[1]));
  }
  ::close(pipefd[1]);
  std::string answer;
  char buf[256];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) answer.append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  int status;
  ::waitpid(pid, &status, 0);
  if (answer.rfind("ok", 0) == 0) return 0;
  std::fprintf(stderr, "bypass-xover: %s", answer.empty() ? "daemon died during set-up\n" : answer.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bypass-xover: crossover links between network namespaces over shared memory"};
  app.require_subcommand(1);

  LinkOptions link;
  std::string mac_a, mac_b, mac_up;
  bool foreground = false, no_offload = false;
  int mtu = 0;
  std::string cpu = "auto";
  auto* create = app.add_subcommand("create", "create two endpoints in two network namespaces and wire them");
  create->add_option("name", link.name, "link name")->required();
  auto* netns_a = create->add_option("--netns-a", link.netns[0], "network namespace of endpoint a");
  auto* netns_b = create->add_option("--netns-b", link.netns[1], "network namespace of endpoint b");
  auto* vm_device = create->add_option("--device", link.device,
                                       "instead of namespaces: a VM device file (QEMU ivshmem memory) whose endpoints "
                                       "run in two VMs (bypass-xover endpoint --device ivshmem: --side a|b)");
  netns_a->excludes(vm_device);
  netns_b->excludes(vm_device);
  create->add_option("--ifname-a", link.endpoint[0].ifname, "TAP device name in namespace a")->capture_default_str();
  create->add_option("--ifname-b", link.endpoint[1].ifname, "TAP device name in namespace b")->capture_default_str();
  create->add_option("--addr-a", link.endpoint[0].address, "IPv4 address/prefix of endpoint a");
  create->add_option("--addr-b", link.endpoint[1].address, "IPv4 address/prefix of endpoint b");
  create->add_option("--mac-a", mac_a, "MAC address of endpoint a");
  create->add_option("--mac-b", mac_b, "MAC address of endpoint b");
  create->add_option("--mtu", mtu, "MTU of every TAP device (default 1500)");
  create->add_flag("--no-offload", no_offload, "no checksum / TSO offload: one wire-size frame per descriptor");
  bool no_doorbell = false;
  create->add_flag("--no-doorbell", no_doorbell,
                   "with --device: no doorbell sockets (DEVICE.0.sock for side a, DEVICE.1.sock for side b); the "
                   "endpoints and the switch poll");
  create->add_option("--uplink-netns", link.uplink_netns, "namespace for the uplink TAP (frames not for the peer)");
  create->add_option("--uplink-ifname", link.uplink_ifname, "uplink TAP device name")->capture_default_str();
  create->add_option("--uplink-addr", link.uplink_address, "IPv4 address/prefix of the uplink TAP");
  create->add_option("--uplink-mac", mac_up, "MAC address of the uplink TAP");
  create->add_option("--buffers", link.buffers, "frame buffers per port")->capture_default_str();
  create
      ->add_option("--cpu", cpu,
                   "CPU for all forwarding threads (switch, endpoints, uplink): a number, 'auto' (the last one "
                   "allowed) or 'none' (no pinning)")
      ->capture_default_str();
  create->add_option("--socket", link.socket_path, "control socket (default /run/bypass/xover-NAME.sock)");
  create->add_flag("--foreground", foreground, "run the host daemon in this process until SIGTERM");
  create->add_flag("-v,--verbose", link.verbose, "log to stderr");

  std::string name;
  std::string socket_path;
  bool json = false;
  auto* status = app.add_subcommand("status", "counters and the learnt MAC table of a link");
  status->add_option("name", name, "link name")->required();
  status->add_option("--socket", socket_path, "control socket");
  status->add_flag("--json", json, "one JSON object");
  auto* destroy = app.add_subcommand("destroy", "tear a link down (its TAP devices disappear)");
  destroy->add_option("name", name, "link name")->required();
  destroy->add_option("--socket", socket_path, "control socket");

  EndpointOptions ep;
  std::string side = "a", mac_ep;
  bool ep_no_offload = false, ep_verbose = false;
  auto* endpoint = app.add_subcommand("endpoint", "(internal) run one endpoint in the current network namespace");
  auto* control = endpoint->add_option("--control", ep.control, "the link's control socket");
  auto* ep_device = endpoint->add_option("--device", ep.device,
                                         "in a VM: the link's ivshmem device ('ivshmem:', a PCI address or a path)");
  control->excludes(ep_device);
  endpoint->add_option("--side", side, "a or b")->required();
  endpoint->add_option("--ifname", ep.ifname)->capture_default_str();
  endpoint->add_option("--addr", ep.address);
  endpoint->add_option("--mac", mac_ep);
  endpoint->add_option("--mtu", ep.mtu);
  endpoint->add_flag("--no-offload", ep_no_offload);
  endpoint->add_flag("--verbose", ep_verbose);
  std::string ep_cpu = "none";
  endpoint->add_option("--cpu", ep_cpu, "CPU for the endpoint's threads, or 'none'")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  if (endpoint->parsed()) {
    if (ep.control.empty() == ep.device.empty()) {
      std::fprintf(stderr, "bypass-xover endpoint: say --control SOCKET or --device DEVICE\n");
      return 2;
    }
    ep.offload = !ep_no_offload;
    if (!parse_side(side, &ep.side) || !mac_option(mac_ep, &ep.mac, "endpoint")) return 2;
    if (!parse_cpu(ep_cpu, &ep.cpu) || ep.cpu == kCpuAuto) {
      std::fprintf(stderr, "bypass-xover: bad --cpu '%s' (a CPU number or 'none')\n", ep_cpu.c_str());
      return 2;
    }
    return run_endpoint(ep);
  }
  if (create->parsed()) {
    link.doorbells = !no_doorbell;
    if (link.device.empty() && (link.netns[0].empty() || link.netns[1].empty())) {
      std::fprintf(stderr, "bypass-xover: create needs --netns-a and --netns-b, or --device\n");
      return 2;
    }
    if (!valid_link_name(link.name)) {
      std::fprintf(stderr, "bypass-xover: bad link name '%s' (letters, digits, '-', '_')\n", link.name.c_str());
      return 2;
    }
    if (!mac_option(mac_a, &link.endpoint[0].mac, "a") || !mac_option(mac_b, &link.endpoint[1].mac, "b") ||
        !mac_option(mac_up, &link.uplink_mac, "uplink"))
      return 2;
    if (!parse_cpu(cpu, &link.cpu)) {
      std::fprintf(stderr, "bypass-xover: bad --cpu '%s' (a CPU number, 'auto' or 'none')\n", cpu.c_str());
      return 2;
    }
    for (auto& e : link.endpoint) {
      e.mtu = mtu;
      e.offload = !no_offload;
    }
    if (link.socket_path.empty()) link.socket_path = socket_for(link.name);
    if (foreground) {
      ::signal(SIGPIPE, SIG_IGN);
      int rc = run_link_daemon(link, -1);
      return rc;
    }
    int rc = create_detached(link);
    if (rc == 0 && !link.device.empty())
      std::printf("link %s up: VM device %s\n", link.name.c_str(), link.device.c_str());
    else if (rc == 0)
      std::printf(
          "link %s up: %s/%s <-> %s/%s%s\n", link.name.c_str(), link.netns[0].c_str(), link.endpoint[0].ifname.c_str(),
          link.netns[1].c_str(), link.endpoint[1].ifname.c_str(),
          link.uplink_netns.empty() ? "" : (", uplink " + link.uplink_netns + "/" + link.uplink_ifname).c_str());
    return rc;
  }
  if (socket_path.empty()) {
    if (!valid_link_name(name)) {
      std::fprintf(stderr, "bypass-xover: bad link name '%s'\n", name.c_str());
      return 2;
    }
    socket_path = socket_for(name);
  }
  if (status->parsed()) {
    auto out = request_status(socket_path, json);
    if (!out) {
      std::fprintf(stderr, "bypass-xover: %s\n", out.error().message.c_str());
      return 1;
    }
    std::printf("%s\n", out->c_str());
    return 0;
  }
  if (auto down = request_shutdown(socket_path); !down) {
    std::fprintf(stderr, "bypass-xover: %s\n", down.error().message.c_str());
    return 1;
  }
  std::printf("link %s down\n", name.c_str());
  return 0;
}
