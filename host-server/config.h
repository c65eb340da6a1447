// bypassd's configuration: command line, config file and defaults.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace bypass::host {

struct ServerConfig {
  std::string socket_path;         // unix socket the guests connect to
  std::string control_path;        // unix socket bypassctl talks to ("" = socket_path + ".ctl")
  std::string device_name;         // substring of the physical device name to expose ("" = all)
  size_t ring_bytes = 8u << 20;    // per ring, per session
  size_t max_sessions = 64;
  uint64_t max_objects = 1u << 20;      // per session
  uint64_t max_memory_bytes = 16ull << 30;  // per session, host-visible memory shared with it
  std::string log_level = "info";
  // glibc's M_TRIM_THRESHOLD: free heap kept for reuse instead of handed back to the kernel (0:
  // glibc's adaptive default). lavapipe allocates and frees tens of MB per frame; handed back,
  // every frame faults them in again (about 8,800 page faults, most of a 1,000-draw frame's time).
  size_t malloc_trim_bytes = 64u << 20;
};

}  // namespace bypass::host
