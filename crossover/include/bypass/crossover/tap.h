// TAP devices and network namespaces.
#pragma once

#include <cstdint>
#include <string>

#include "bypass/crossover/detector.h"
#include "bypass/vmqueue/os.h"

namespace bypass::crossover {

using vmqueue::os::Fd;

struct TapConfig {
  std::string name = "xo0";
  Mac mac{};             // all zero: keep the kernel's random address
  int mtu = 0;           // 0: keep the default (1500)
  std::string address;   // IPv4 CIDR ("10.0.0.1/24"); empty: none
  bool offload = true;   // IFF_VNET_HDR + TUNSETOFFLOAD (checksum, TSO4/6): 64 KiB frames
  int txqueuelen = 0;    // 0: keep the default
};

// Creates a TAP device in the calling thread's network namespace, configures it and brings it
// up. The device lives as long as the returned fd. Throws std::system_error.
Fd create_tap(const TapConfig& config);
// The device's MAC address.
Mac tap_mac(const std::string& name);

// Opens /run/netns/NAME (what `ip netns add NAME` creates).
Fd open_netns(const std::string& name);
bool netns_exists(const std::string& name);

// Moves the calling thread into a network namespace and back on destruction.
class NetnsScope {
 public:
  explicit NetnsScope(const std::string& name);
  ~NetnsScope();
  NetnsScope(const NetnsScope&) = delete;
  NetnsScope& operator=(const NetnsScope&) = delete;

 private:
  Fd original_;
};

}  // namespace bypass::crossover
