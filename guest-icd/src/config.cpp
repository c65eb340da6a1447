// Reading the guest's settings (config.h): each variable parsed in one place, with what a bad
// value falls back to.
#include "config.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace bypass::icd {

namespace {

// A decimal integer that is the whole of `text`, within [lo, hi]; nullopt otherwise.
std::optional<unsigned long long> whole_number(const char* text, unsigned long long lo, unsigned long long hi) {
  if (!text || !*text || *text < '0' || *text > '9') return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || !end || *end != '\0' || v < lo || v > hi) return std::nullopt;
  return v;
}

}  // namespace

Config parse_config(const char* (*get)(const char* name)) {
  Config c;
  auto set = [&](const char* name) -> const char* {
    const char* v = get(name);
    return v && *v ? v : nullptr;
  };
  if (const char* e = set("BYPASS_ENDPOINT")) c.endpoint = e;
  if (auto ms = whole_number(set("BYPASS_CONNECT_TIMEOUT_MS"), 1, 600000))
    c.connect_timeout = std::chrono::milliseconds(*ms);
  if (auto uid = whole_number(set("BYPASS_SERVER_UID"), 0, static_cast<uid_t>(-1) - 1))
    c.server_uid = static_cast<uid_t>(*uid);
  if (const char* e = set("BYPASS_LOG")) {
    if (auto level = base::parse_log_level(e)) {
      c.log_level = *level;
    } else {
      base::log(base::LogLevel::kWarn, "BYPASS_LOG=%s is not one of error, warn, info, debug; using %s", e,
                base::to_string(c.log_level));
    }
  }
  if (const char* e = set("BYPASS_MEMORY")) c.shadow_memory = std::strcmp(e, "shadow") == 0;
  if (const char* e = set("BYPASS_DIRTY_TRACKING")) {
    bool known = false;
    for (auto method : {memshare::TrackingMethod::kAdaptive, memshare::TrackingMethod::kUffdAsync,
                        memshare::TrackingMethod::kMprotect, memshare::TrackingMethod::kHash}) {
      const std::string_view name = memshare::tracking_method_name(method);
      // "uffd" stands for the full name, uffd-wp-async.
      if (name == e || (method == memshare::TrackingMethod::kUffdAsync && std::strcmp(e, "uffd") == 0)) {
        c.dirty_tracking = method;
        known = true;
      }
    }
    if (!known) {
      base::log(base::LogLevel::kWarn,
                "BYPASS_DIRTY_TRACKING=%s is not one of adaptive, uffd, mprotect, hash; using %s", e,
                std::string(memshare::tracking_method_name(memshare::default_tracking_method())).c_str());
    }
  }
  if (const char* e = set("BYPASS_HOST_POINTERS")) c.host_pointers = std::strcmp(e, "0") != 0;
  if (const char* e = set("BYPASS_QUERY_MIRROR")) c.query_mirror = std::strcmp(e, "0") != 0;
  // Memory cannot be shared with another machine: the network path always shadows it.
  if (c.endpoint.starts_with("grpc://")) c.shadow_memory = true;
  if (const char* e = set("BYPASS_NET_STATS")) c.net_stats = *e != '0';
  if (const char* e = set("BYPASS_INSECURE")) c.insecure = std::strcmp(e, "1") == 0;
  if (const char* e = set("BYPASS_TLS_CA")) c.tls_ca = e;
  if (const char* e = set("BYPASS_TLS_CERT")) c.tls_cert = e;
  if (const char* e = set("BYPASS_TLS_KEY")) c.tls_key = e;
  if (const char* e = set("BYPASS_TOKEN")) c.token = e;
  if (const char* e = set("BYPASS_WSI_NO_SHM")) c.wsi_no_shm = *e == '1';
  if (const char* e = set("BYPASS_WSI_TRANSFER")) c.wsi_transfer = std::strcmp(e, "0") != 0;
  if (const char* e = set("BYPASS_WSI_REFRESH_HZ")) {
    const double hz = std::atof(e);
    if (hz > 0.0 && hz <= 1000.0) c.wsi_refresh_period = std::chrono::nanoseconds(static_cast<int64_t>(1e9 / hz));
  }
  if (const char* e = set("BYPASS_WSI_STATS")) c.wsi_stats = *e != '0';
  return c;
}

const Config& config() {
  // A function-local static: initialized once, by whichever thread gets here first, the others
  // waiting for it.
  static const Config c = [] {
    Config parsed = parse_config([](const char* name) -> const char* { return std::getenv(name); });
    base::set_log_level(parsed.log_level);
    return parsed;
  }();
  return c;
}

}  // namespace bypass::icd
