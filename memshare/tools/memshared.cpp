// memshared: the memshare service as a standalone daemon (tests and deployments without
// bypassd). Serves until SIGINT/SIGTERM.
//   memshared --socket PATH [--workers N] [--chunk-kib N] [--verbose]
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "bypass/memshare/service.h"

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: memshared --socket PATH [--workers N] [--chunk-kib N] [--max-domains N] [--verbose]\n"
               "  --socket PATH    UNIX socket to listen on (replaced if it exists)\n"
               "  --workers N      transfer worker threads (default 2)\n"
               "  --chunk-kib N    transfer chunk size in KiB (default 1024)\n"
               "  --max-domains N  domains connected at once; one more is refused (default 1024)\n"
               "  --verbose        log domain connects and disconnects to stderr\n");
}

bool parse_unsigned(const char* text, unsigned long& out) {
  char* end = nullptr;
  errno = 0;
  out = std::strtoul(text, &end, 10);
  return errno == 0 && end != text && *end == '\0';
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path;
  bypass::memshare::ServiceOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    unsigned long value = 0;
    if (arg == "--help" || arg == "-h") {
      usage(stdout);
      return 0;
    } else if (arg == "--socket" && has_value) {
      socket_path = argv[++i];
    } else if (arg == "--workers" && has_value && parse_unsigned(argv[i + 1], value) && value >= 1 && value <= 64) {
      options.workers = static_cast<unsigned>(value);
      ++i;
    } else if (arg == "--chunk-kib" && has_value && parse_unsigned(argv[i + 1], value) && value >= 4 &&
               value <= 1024 * 1024) {
      options.chunk_bytes = value * 1024;
      ++i;
    } else if (arg == "--max-domains" && has_value && parse_unsigned(argv[i + 1], value) && value >= 1 &&
               value <= 1'000'000) {
      options.max_domains = value;
      ++i;
    } else if (arg == "--verbose") {
      options.verbose = true;
    } else {
      std::fprintf(stderr, "memshared: bad argument '%s'\n", arg.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (socket_path.empty()) {
    std::fprintf(stderr, "memshared: --socket PATH is required\n");
    usage(stderr);
    return 2;
  }

  // Block the stop signals in every thread; the main thread waits for them synchronously.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  bypass::memshare::Service service(options);
  if (auto r = service.listen(socket_path); !r) {
    std::fprintf(stderr, "memshared: %s\n", r.error().message.c_str());
    return 1;
  }
  if (options.verbose) std::fprintf(stderr, "memshare: listening on %s\n", socket_path.c_str());
  // Tells a parent waiting on our stdout that the socket accepts connections.
  std::printf("ready\n");
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  service.stop();
  ::unlink(socket_path.c_str());
  return 0;
}
