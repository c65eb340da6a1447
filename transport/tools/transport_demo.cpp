// transport_demo: a host and a guest process move data through one bypass session and say
// what happened. By default it forks: the parent is the host (a Listener on a temporary UNIX
// socket), the child the guest (connect()). Run the halves yourself with --server/--client.
//
//   transport_demo [--mib N] [--server PATH | --client PATH]
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "bypass/transport/session.h"

namespace {

using namespace bypass::transport;
using namespace std::chrono_literals;

constexpr uint32_t kProtocolVersion = 1;
constexpr uint64_t kSchemaHash = 0x62797061737364ull;  // stands in for the generated schema's hash

// Message kinds of the demo protocol.
constexpr uint32_t kData = 1;    // payload: bytes to count and checksum
constexpr uint32_t kReport = 2;  // guest asks / host answers: Totals since the last report
constexpr uint32_t kPing = 3;    // echoed back
constexpr uint32_t kFdNote = 4;  // a memfd follows on the socket; host answers with its text

constexpr uint64_t kChecksumSeed = 0xcbf29ce484222325ull;

struct Totals {
  uint64_t messages = 0, bytes = 0, checksum = 0;
};

// Order-sensitive 64-bit checksum over 8-byte words (multiply + xor-shift), then tail bytes.
uint64_t checksum(std::span<const std::byte> data, uint64_t h) {
  size_t i = 0;
  for (; i + 8 <= data.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, data.data() + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  for (; i < data.size(); ++i) h = (h ^ static_cast<uint64_t>(data[i])) * 0x100000001b3ull;
  return h ^ data.size();
}

// Pseudo-random contents (splitmix64), different per message.
void fill(std::vector<std::byte>& v, uint64_t seed) {
  for (size_t i = 0; i < v.size(); i += 8) {
    uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::memcpy(v.data() + i, &z, std::min<size_t>(8, v.size() - i));
  }
}

double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

void print_stats(const char* who, const Channel& ch) {
  const Channel::Stats s = ch.stats();
  std::printf("%s: sent %" PRIu64 " msgs / %" PRIu64 " bytes, received %" PRIu64 " msgs / %" PRIu64 " bytes, %" PRIu64
              " futex sleeps, %" PRIu64 " wakes issued\n",
              who, s.msgs_sent, s.bytes_sent, s.msgs_received, s.bytes_received, s.sleeps, s.wakes_issued);
}

// Serves one guest until it says goodbye (or dies). Returns false on a protocol failure.
bool serve(Channel& ch) {
  Totals t;
  t.checksum = kChecksumSeed;
  Message m;
  for (;;) {
    const Status st = ch.recv(m);
    if (st == Status::kClosed) {
      std::printf("host: guest said goodbye\n");
      print_stats("host", ch);
      return true;
    }
    if (st != Status::kOk) {
      std::printf("host: session ended: %s %s\n", to_string(st), ch.error_text().c_str());
      return st == Status::kPeerGone;
    }
    switch (m.kind) {
      case kData:
        ++t.messages;
        t.bytes += m.payload.size();
        t.checksum = checksum(m.payload, t.checksum);
        break;
      case kReport:
        if (ch.send(kReport, std::as_bytes(std::span(&t, 1))) != Status::kOk) return false;
        t = {};
        t.checksum = kChecksumSeed;
        break;
      case kPing:
        if (ch.send(kPing, m.payload) != Status::kOk) return false;
        break;
      case kFdNote: {
        uint64_t tag = 0;
        std::vector<int> fds;
        if (ch.recv_fds(tag, fds, deadline_after(5s)) != Status::kOk || fds.size() != 1) return false;
        char text[128] = {};
        const ssize_t n = pread(fds[0], text, sizeof text - 1, 0);
        close(fds[0]);
        std::printf("host: received memfd (tag %" PRIu64 ") over SCM_RIGHTS, it reads \"%s\"\n", tag,
                    n > 0 ? text : "");
        const std::string reply = "host read " + std::to_string(n > 0 ? n : 0) + " bytes";
        if (ch.send(kFdNote, std::as_bytes(std::span(reply.data(), reply.size()))) != Status::kOk) return false;
        break;
      }
      default:
        std::printf("host: unknown message kind %u\n", m.kind);
        return false;
    }
  }
}

// Sends `count` messages of `size` bytes, then asks for the host's totals and compares.
bool transfer(Channel& ch, const char* label, uint64_t count, size_t size) {
  std::vector<std::byte> payload(size);
  Totals mine;
  mine.checksum = kChecksumSeed;
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < count; ++i) {
    fill(payload, i + size);
    if (ch.send(kData, payload) != Status::kOk) return false;
    ++mine.messages;
    mine.bytes += size;
    mine.checksum = checksum(payload, mine.checksum);
  }
  Message m;
  Totals host;
  if (ch.send(kReport, {}) != Status::kOk || ch.recv(m) != Status::kOk || m.payload.size() != sizeof host) {
    return false;
  }
  const double s = since(start);
  std::memcpy(&host, m.payload.data(), sizeof host);
  const bool match = host.messages == mine.messages && host.bytes == mine.bytes && host.checksum == mine.checksum;
  std::printf("guest: %-26s %8" PRIu64
              " msgs %10.1f MiB in %6.3f s = %8.1f MiB/s %9.0f msgs/s  checksum "
              "%016" PRIx64 " host %016" PRIx64 " %s\n",
              label, mine.messages, mine.bytes / 1048576.0, s, mine.bytes / 1048576.0 / s, mine.messages / s,
              mine.checksum, host.checksum, match ? "MATCH" : "MISMATCH");
  return match;
}

bool run_guest(const std::string& endpoint, uint64_t mib) {
  auto ch = connect(endpoint, Hello{kProtocolVersion, kSchemaHash, "transport_demo-guest"}, deadline_after(5s));
  if (!ch) {
    std::printf("guest: %s\n", ch.error().message.c_str());
    return false;
  }
  std::printf("guest: connected to '%s' (pid %d), protocol %u, schema 0x%" PRIx64 ", rings of %zu bytes\n",
              ch->peer_hello().peer_name.c_str(), static_cast<int>(ch->peer_pid()), ch->peer_hello().protocol_version,
              ch->peer_hello().schema_hash, ch->tx_capacity());

  bool ok = transfer(*ch, "64-byte messages", 1'000'000, 64) && transfer(*ch, "4 KiB messages", 100'000, 4096) &&
            transfer(*ch, "1 MiB messages", mib, 1 << 20) &&
            transfer(*ch, "64 MiB messages (chunked)", std::max<uint64_t>(1, mib / 64), 64 << 20);

  // Round trips: spinning first, then futex sleeps only.
  for (const uint32_t spins : {Channel::kDefaultMaxSpins, 0u}) {
    ch->set_spin(spins);
    std::vector<double> us;
    Message m;
    const std::byte ping[64] = {};
    for (int i = 0; ok && i < 20000; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      ok = ch->send(kPing, ping) == Status::kOk && ch->recv(m) == Status::kOk && m.kind == kPing;
      us.push_back(since(t0) * 1e6);
    }
    std::sort(us.begin(), us.end());
    if (ok) {
      std::printf("guest: request/reply round trip (%s): median %.2f us, p99 %.2f us\n",
                  spins != 0 ? "guest spins, host adaptive" : "guest futex only", us[us.size() / 2],
                  us[us.size() * 99 / 100]);
    }
  }

  // A file descriptor through the socket.
  if (ok) {
    const int memfd = memfd_create("demo-note", MFD_CLOEXEC);
    const char note[] = "hello from the guest's memfd";
    ok = memfd >= 0 && pwrite(memfd, note, sizeof note - 1, 0) == sizeof note - 1 &&
         ch->send(kFdNote, {}) == Status::kOk && ch->send_fds(7, std::span<const int>(&memfd, 1)) == Status::kOk;
    if (memfd >= 0) close(memfd);
    Message m;
    ok = ok && ch->recv(m) == Status::kOk;
    if (ok)
      std::printf("guest: host answered \"%.*s\"\n", static_cast<int>(m.payload.size()),
                  reinterpret_cast<const char*>(m.payload.data()));
  }
  print_stats("guest", *ch);
  ch->close();
  return ok;
}

// The host side: serve the guest, then show a refused handshake and a guest that is killed.
bool run_host(Listener& listener, pid_t demo_guest, bool demo_failures) {
  const Hello mine{kProtocolVersion, kSchemaHash, "transport_demo-host"};
  auto ch = listener.accept(mine, SessionOptions{}, deadline_after(10s));
  if (!ch) {
    std::printf("host: %s\n", ch.error().message.c_str());
    return false;
  }
  std::printf("host: accepted guest '%s' pid %d uid %d (SO_PEERCRED)\n", ch->peer_hello().peer_name.c_str(),
              static_cast<int>(ch->peer_pid()), static_cast<int>(ch->peer_uid()));
  bool ok = serve(*ch);
  ch->close();
  if (demo_guest > 0) {
    int status = 0;
    waitpid(demo_guest, &status, 0);
    ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  if (!demo_failures) return ok;

  // A guest built against another protocol version is refused, with the same line on both sides.
  const pid_t old_guest = fork();
  if (old_guest == 0) {
    auto c = connect(listener.path(), Hello{kProtocolVersion + 1, kSchemaHash, "newer-guest"}, deadline_after(5s));
    std::printf("guest (protocol %u): %s\n", kProtocolVersion + 1, c ? "connected?!" : c.error().message.c_str());
    std::fflush(stdout);
    _exit(c ? 1 : 0);
  }
  auto old = listener.accept(mine, SessionOptions{}, deadline_after(5s));
  const bool refused = !old;
  std::printf("host: %s\n", refused ? old.error().message.c_str() : "accepted?!");
  int status = 0;
  waitpid(old_guest, &status, 0);
  ok = ok && refused && WIFEXITED(status) && WEXITSTATUS(status) == 0;

  // A guest killed with SIGKILL while the host waits for its next message.
  const pid_t doomed = fork();
  if (doomed == 0) {
    auto c = connect(listener.path(), Hello{kProtocolVersion, kSchemaHash, "doomed-guest"}, deadline_after(5s));
    for (;;) pause();
  }
  auto victim = listener.accept(mine, SessionOptions{}, deadline_after(5s));
  if (!victim) return false;
  std::thread killer([doomed] {
    std::this_thread::sleep_for(50ms);
    kill(doomed, SIGKILL);
  });
  const auto t0 = std::chrono::steady_clock::now();
  Message m;
  const Status st = victim->recv(m);
  std::printf("host: blocked recv returned '%s' %.1f ms after the guest was killed (SIGKILL sent after 50 ms)\n",
              to_string(st), since(t0) * 1e3 - 50);
  killer.join();
  waitpid(doomed, &status, 0);
  return ok && st == Status::kPeerGone;
}

int usage() {
  std::fprintf(stderr, "usage: transport_demo [--mib N] [--server PATH | --client PATH]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t mib = 256;
  std::string server, client;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--mib" && i + 1 < argc) {
      mib = std::strtoull(argv[++i], nullptr, 10);
      if (mib == 0) return usage();
    } else if (a == "--server" && i + 1 < argc) {
      server = argv[++i];
    } else if (a == "--client" && i + 1 < argc) {
      client = argv[++i];
    } else {
      return usage();
    }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (!client.empty()) return run_guest(client, mib) ? 0 : 1;

  std::string path = server;
  std::filesystem::path temp_dir;
  if (path.empty()) {
    char tmpl[] = "/tmp/bypass-demo-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return 1;
    temp_dir = tmpl;
    path = temp_dir / "bypass.sock";
  }
  auto listener = Listener::listen("unix:" + path);
  if (!listener) {
    std::printf("host: %s\n", listener.error().message.c_str());
    return 1;
  }
  std::printf("host: pid %d listening on unix:%s\n", static_cast<int>(getpid()), path.c_str());
  bool ok;
  if (!server.empty()) {
    ok = run_host(*listener, -1, false);
  } else {
    const pid_t guest = fork();
    if (guest == 0) _exit(run_guest("unix:" + path, mib) ? 0 : 1);
    ok = run_host(*listener, guest, true);
  }
  { const Listener closing = std::move(*listener); }  // closes it and removes the socket file
  if (!temp_dir.empty()) std::filesystem::remove_all(temp_dir);
  std::printf("transport_demo: %s\n", ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}
