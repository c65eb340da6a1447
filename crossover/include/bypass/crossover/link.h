// A crossover link: the host daemon (switch + uplink + control socket) and the endpoint
// process that runs inside each domain's network namespace.
#pragma once

#include <cstdint>
#include <string>

#include "bypass/base/result.h"
#include "bypass/crossover/detector.h"
#include "bypass/crossover/layout.h"

namespace bypass::crossover {

// CPU choice for a link's forwarding threads (the switch, each endpoint's port thread, the
// uplink's): all on one CPU, so a frame handed from one to the next is a same-CPU wake-up (no
// inter-processor interrupt, no halted virtual CPU to wake) and the 64 KiB frame the sender's
// endpoint just copied is still in that CPU's cache when the receiver's endpoint copies it out.
// The applications get the other CPUs.
constexpr int kCpuAuto = -2;  // the last CPU this process may run on
constexpr int kCpuNone = -1;  // no pinning: the scheduler places every thread

struct EndpointOptions {
  std::string control;  // the link's control socket
  std::string device;   // or, in a VM: the link's ivshmem device ("ivshmem:", a PCI address, a path)
  uint32_t side = kPortA;
  std::string ifname = "xo0";
  std::string address;  // IPv4 CIDR, optional
  Mac mac{};            // optional
  int mtu = 0;
  bool offload = true;
  int cpu = kCpuNone;  // >= 0: the endpoint's threads run on this CPU only
};

struct LinkOptions {
  std::string name;
  std::string socket_path;      // default: socket_for(name)
  std::string netns[2];         // the two domains' network namespaces
  std::string device;           // or: a VM device file (device.h) whose endpoints run in two VMs
  EndpointOptions endpoint[2];  // their TAP devices (control/side filled in by the daemon)
  std::string uplink_netns;     // empty: no uplink (frames for anything but the peer drop)
  std::string uplink_ifname = "xo-up0";
  std::string uplink_address;
  Mac uplink_mac{};
  uint32_t buffers = kDefaultBuffers;  // per port
  int cpu = kCpuAuto;                  // a CPU number, kCpuAuto or kCpuNone
  bool verbose = false;
  // A VM device's endpoint ports get doorbells (transport/doorbell.h): "<device>.<side>.sock",
  // side 0 (a) and 1 (b), each for one VM's QEMU. Without, the endpoints and the switch poll.
  bool doorbells = true;
};

// The control socket speaks transport sessions (bypass/transport/session.h): endpoints attach
// and the CLI asks for status or shutdown after a handshake that checks these two; a client of
// another build is refused with a line naming both versions.
inline constexpr uint32_t kControlVersion = 1;
// Changes whenever the control records or the shared ring/pool layout (layout.h) do.
inline constexpr uint64_t kControlSchema = 0x786f760000000000ull | (uint64_t{sizeof(Desc)} << 32) |
                                           (uint64_t{kRingSlots} << 16) | (kBufferStride >> 12) << 4 | kRingsPerPort;

std::string socket_for(const std::string& link_name);
// Parses --cpu: "auto", "none" or a CPU number. False on anything else.
bool parse_cpu(const std::string& text, int* cpu);
bool valid_link_name(const std::string& name);

// Runs the host side until told to stop (SIGTERM/SIGINT or a `destroy` request). Writes
// "ok\n" to ready_fd (when >= 0) once both endpoints are attached, or "error: ...\n".
// Returns the process exit code.
int run_link_daemon(const LinkOptions& options, int ready_fd);

// Runs an endpoint in the calling process's network namespace until the host goes away.
int run_endpoint(const EndpointOptions& options);

// CLI requests to a running daemon; an error when it is not reachable or does not answer.
// request_status gives the daemon's status text (JSON when `json`).
base::Result<std::string> request_status(const std::string& socket_path, bool json);
base::Result<void> request_shutdown(const std::string& socket_path);

}  // namespace bypass::crossover
