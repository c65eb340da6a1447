// The guest ICD's settings: every environment variable it reads, read once, on first use, into
// one struct (docs/guest-icd.md lists them). The ICD runs inside someone else's process, whose
// environment does not change under it in ways we honour: a later setenv is not seen.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>

#include "bypass/base/log.h"
#include "bypass/memshare/dirty_tracker.h"

namespace bypass::icd {

struct Config {
  // BYPASS_ENDPOINT: where bypassd listens (unix:PATH, ivshmem:DEVICE). Empty: the user's own
  // server's socket when there is one, else the system service's (Connection::open).
  std::string endpoint;
  // BYPASS_CONNECT_TIMEOUT_MS (1..600000): how long a server that accepted may take to finish
  // the handshake. A VM's connection gets at least 5 s whatever this says.
  std::chrono::milliseconds connect_timeout{3000};
  // BYPASS_SERVER_UID: one more uid (besides root and our own) whose server we talk to.
  std::optional<uid_t> server_uid;
  // BYPASS_LOG (error, warn, info, debug): what the ICD says on stderr.
  base::LogLevel log_level = base::kDefaultLogLevel;
  // BYPASS_MEMORY=shadow: host-visible memory as a guest-side copy moved by barriers, even where
  // pages could be shared.
  bool shadow_memory = false;
  // BYPASS_DIRTY_TRACKING (adaptive, uffd, mprotect, hash): how shadow memory finds the pages
  // the program wrote (docs/memshare.md#dirty-tracking); unset: memshare's default (adaptive
  // where the kernel has userfaultfd's async write-protect).
  memshare::TrackingMethod dirty_tracking = memshare::TrackingMethod::kAuto;
  // BYPASS_HOST_POINTERS=0: VK_EXT_external_memory_host not offered (the ICD mirrors imports
  // around the submissions that reach them; a program with a fallback, such as ffmpeg, then
  // copies through staging buffers).
  bool host_pointers = true;
  // BYPASS_QUERY_MIRROR=0: every vkGetQueryPoolResults goes to bypassd (queries.cpp).
  bool query_mirror = true;
  // The network path (BYPASS_ENDPOINT=grpc://HOST:PORT, docs/network.md): BYPASS_INSECURE=1 for
  // plaintext (loopback tests), else TLS with the roots in BYPASS_TLS_CA (default: the system's),
  // a client certificate BYPASS_TLS_CERT + BYPASS_TLS_KEY, and a bearer token BYPASS_TOKEN.
  bool insecure = false;
  // BYPASS_NET_STATS (set, not 0): one line of network traffic figures when a connection closes.
  bool net_stats = false;
  std::string tls_ca, tls_cert, tls_key, token;
  // BYPASS_WSI_NO_SHM=1: present with core PutImage, not MIT-SHM.
  bool wsi_no_shm = false;
  // BYPASS_WSI_TRANSFER=0: frames come back through the readback memory, not a memshare transfer.
  bool wsi_transfer = true;
  // BYPASS_WSI_REFRESH_HZ (0..1000]: the FIFO/MAILBOX pacing clock; 0 (unset): no pacing.
  std::chrono::nanoseconds wsi_refresh_period{0};
  // BYPASS_WSI_STATS (set, not 0): one line of presentation figures per destroyed swapchain.
  bool wsi_stats = false;
};

// The settings, read from the environment by the first caller (thread-safe); the log level is
// applied to base's log at the same time.
const Config& config();

// Parses an environment as config() does (for tests): `get` returns a variable's value or null.
Config parse_config(const char* (*get)(const char* name));

}  // namespace bypass::icd
