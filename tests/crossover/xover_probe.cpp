// A TCP stream with CRC-32s on both ends, for the crossover's VM tests (it runs inside the
// guests, which have busybox but nothing that checksums a stream end to end):
//   xover_probe recv PORT [TIMEOUT_S]        accept one connection, read to EOF
//   xover_probe send HOST PORT BYTES [TIMEOUT_S]
// Each prints one line: "received|sent BYTES crc32 XXXXXXXX seconds S". `send` retries the
// connection until the timeout (the peer VM may still be booting). Exit status 0 on success.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

int do_recv(int port, int timeout_s) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listener, 1) != 0) {
    std::perror("xover_probe: bind/listen");
    return 1;
  }
  timeval tv{timeout_s, 0};
  ::setsockopt(listener, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const int c = ::accept(listener, nullptr, nullptr);
  if (c < 0) {
    std::perror("xover_probe: accept");
    return 1;
  }
  ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const auto start = Clock::now();
  std::vector<unsigned char> buf(1 << 20);
  uLong crc = crc32(0, nullptr, 0);
  uint64_t total = 0;
  ssize_t n;
  while ((n = ::read(c, buf.data(), buf.size())) > 0) {
    crc = crc32(crc, buf.data(), static_cast<uInt>(n));
    total += static_cast<uint64_t>(n);
  }
  if (n < 0) std::perror("xover_probe: read");
  std::printf("received %llu crc32 %08lx seconds %.2f\n", static_cast<unsigned long long>(total), crc, since(start));
  return n < 0 ? 1 : 0;
}

int do_send(const char* host, int port, uint64_t bytes, int timeout_s) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    std::fprintf(stderr, "xover_probe: bad address %s\n", host);
    return 2;
  }
  const auto give_up = Clock::now() + std::chrono::seconds(timeout_s);
  int s = -1;
  for (;;) {
    s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (::connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) break;
    ::close(s);
    if (Clock::now() > give_up) {
      std::perror("xover_probe: connect");
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const auto start = Clock::now();
  std::vector<uint64_t> block((1 << 20) / 8);
  std::mt19937_64 rng(42);
  uLong crc = crc32(0, nullptr, 0);
  for (uint64_t sent = 0; sent < bytes;) {
    for (auto& w : block) w = rng();
    const size_t len = static_cast<size_t>(std::min<uint64_t>(bytes - sent, block.size() * 8));
    const auto* p = reinterpret_cast<const unsigned char*>(block.data());
    crc = crc32(crc, p, static_cast<uInt>(len));
    for (size_t off = 0; off < len;) {
      const ssize_t n = ::write(s, p + off, len - off);
      if (n <= 0) {
        std::perror("xover_probe: write");
        return 1;
      }
      off += static_cast<size_t>(n);
    }
    sent += len;
  }
  ::shutdown(s, SHUT_WR);
  char drain[256];
  while (::read(s, drain, sizeof drain) > 0) {
  }
  std::printf("sent %llu crc32 %08lx seconds %.2f\n", static_cast<unsigned long long>(bytes), crc, since(start));
  ::close(s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 3 && std::strcmp(argv[1], "recv") == 0)
    return do_recv(std::atoi(argv[2]), argc > 3 ? std::atoi(argv[3]) : 300);
  if (argc >= 5 && std::strcmp(argv[1], "send") == 0)
    return do_send(argv[2], std::atoi(argv[3]), std::strtoull(argv[4], nullptr, 10),
                   argc > 5 ? std::atoi(argv[5]) : 300);
  std::fprintf(stderr, "usage: xover_probe recv PORT [TIMEOUT_S] | send HOST PORT BYTES [TIMEOUT_S]\n");
  return 2;
}
