// TAP devices and network namespaces.
#pragma once

#include <cstdint>
#include <string>

#include "bypass/base/result.h"
#include "bypass/base/unique_fd.h"
#include "bypass/crossover/detector.h"

namespace bypass::crossover {

struct TapConfig {
  std::string name = "xo0";
  Mac mac{};            // all zero: keep the kernel's random address
  int mtu = 0;          // 0: keep the default (1500)
  std::string address;  // IPv4 CIDR ("10.0.0.1/24"); empty: none
  bool offload = true;  // TUNSETOFFLOAD (checksum, TSO4/6): 64 KiB frames; the vnet header is there either way
  int txqueuelen = 0;   // 0: keep the default
};

// Creates a TAP device in the calling thread's network namespace, configures it and brings it
// up. The device lives as long as the returned fd. The error names the step that failed.
base::Result<base::UniqueFd> create_tap(const TapConfig& config);
// The device's MAC address.
base::Result<Mac> tap_mac(const std::string& name);

// Opens /run/netns/NAME (what `ip netns add NAME` creates).
base::Result<base::UniqueFd> open_netns(const std::string& name);
bool netns_exists(const std::string& name);

// Moves the calling thread into a network namespace and back on destruction.
class NetnsScope {
 public:
  static base::Result<NetnsScope> enter(const std::string& name);
  ~NetnsScope();
  NetnsScope(NetnsScope&&) = default;
  NetnsScope& operator=(NetnsScope&&) = delete;
  NetnsScope(const NetnsScope&) = delete;
  NetnsScope& operator=(const NetnsScope&) = delete;

 private:
  explicit NetnsScope(base::UniqueFd original) : original_(std::move(original)) {}
  base::UniqueFd original_;  // where to go back; empty once moved from
};

}  // namespace bypass::crossover
