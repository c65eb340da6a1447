// vmq-pipeline: a three-domain sample on VM queues. `reader` reads a file into pages,
// `transform` compresses (zlib) or checksums (CRC-32, forwarding the very same pages) them,
// `writer` writes what arrives to a file. Each stage is its own process and its own domain;
// they find each other through the broker's identity exchange.
#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <string>

#include "bypass/base/socket_path.h"
#include "bypass/vmqueue/domain.h"

using namespace bypass::vmqueue;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t kData = 1;
constexpr uint32_t kEnd = 2;

struct EndRecord {
  uint64_t bytes_in;  // bytes the reader read
  uint32_t crc_in;    // CRC-32 of them (computed by transform)
  uint32_t pad;
};

int fail(const char* stage, const char* what, Errc errc) {
  std::fprintf(stderr, "%s: %s: %s\n", stage, what, to_string(errc));
  return 2;
}

Result<Domain> join(const std::string& socket, const std::string& name) {
  // The broker may still be starting: retry for a few seconds.
  for (int i = 0;; ++i) {
    auto d = Domain::connect(socket, name);
    if (d.ok() || d.code() != Errc::kBrokerLost || i == 100) return d;
    ::usleep(50'000);
  }
}

Errc send_end(Domain& d, uint32_t to, const EndRecord& end) {
  auto page = d.alloc(1);
  if (!page) return page.code();
  std::memcpy(page->data(), &end, sizeof end);
  return d.send(to, std::move(*page), sizeof end, {.tag = kEnd, .delivery = Delivery::kImmediate});
}

int run_reader(const std::string& socket, const std::string& name, const std::string& next, const std::string& input,
               size_t chunk_pages, bool huge) {
  auto d = join(socket, name);
  if (!d) return fail("reader", "connect", d.code());
  auto peer = d->introduce(next, 10s);
  if (!peer) return fail("reader", "introduce", peer.code());
  int fd = ::open(input.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::perror(("reader: " + input).c_str());
    return 2;
  }
  PageSize size = huge ? PageSize::k2M : PageSize::k4K;
  size_t count = huge ? 1 : chunk_pages;
  uint64_t total = 0;
  for (;;) {
    auto pages = d->alloc(count, size);
    if (!pages) return fail("reader", "alloc", pages.code());
    size_t filled = 0;
    while (filled < pages->bytes().size()) {
      ssize_t n = ::read(fd, pages->data() + filled, pages->bytes().size() - filled);
      if (n < 0) {
        std::perror("reader: read");
        return 2;
      }
      if (n == 0) break;
      filled += static_cast<size_t>(n);
    }
    if (filled == 0) break;
    total += filled;
    // Lazy: the transform is woken once per batch (at the bounded delay or the final flush).
    Errc e = d->send(peer->id, std::move(*pages), filled, {.tag = kData, .delivery = Delivery::kLazy});
    if (e != Errc::kOk) return fail("reader", "send", e);
  }
  ::close(fd);
  Errc e = send_end(*d, peer->id, EndRecord{total, 0, 0});  // immediate: flushes the lazy ones first
  if (e != Errc::kOk) return fail("reader", "send end", e);
  std::printf("reader: %llu bytes sent\n", static_cast<unsigned long long>(total));
  return 0;
}

int run_transform(const std::string& socket, const std::string& name, const std::string& prev, const std::string& next,
                  const std::string& mode) {
  auto d = join(socket, name);
  if (!d) return fail("transform", "connect", d.code());
  auto up = d->introduce(prev, 10s);
  if (!up) return fail("transform", "introduce upstream", up.code());
  auto down = d->introduce(next, 10s);
  if (!down) return fail("transform", "introduce downstream", down.code());
  bool compress = mode == "compress";
  z_stream z{};
  if (compress && deflateInit(&z, 6) != Z_OK) return 2;
  uLong crc = crc32(0, nullptr, 0);
  constexpr size_t kOutPages = 16;
  Pages out;
  auto ship = [&](bool final) -> Errc {
    size_t used = out.bytes().size() - z.avail_out;
    if (used == 0 && !final) return Errc::kOk;
    Errc e =
        used == 0 ? Errc::kOk : d->send(down->id, std::move(out), used, {.tag = kData, .delivery = Delivery::kLazy});
    out = Pages();
    return e;
  };
  for (;;) {
    auto m = d->recv(30s);
    if (!m) return fail("transform", "recv", m.code());
    if (m->sender != up->id) continue;
    if (m->tag == kEnd) {
      EndRecord end;
      std::memcpy(&end, m->data().data(), sizeof end);
      end.crc_in = static_cast<uint32_t>(crc);
      if (compress) {
        int rc;
        do {
          if (!out) {
            auto p = d->alloc(kOutPages);
            if (!p) return fail("transform", "alloc", p.code());
            out = std::move(*p);
            z.next_out = reinterpret_cast<Bytef*>(out.data());
            z.avail_out = static_cast<uInt>(out.bytes().size());
          }
          rc = deflate(&z, Z_FINISH);
          if (z.avail_out == 0 || rc == Z_STREAM_END) {
            if (Errc e = ship(rc == Z_STREAM_END); e != Errc::kOk) return fail("transform", "send", e);
          }
        } while (rc != Z_STREAM_END);
        deflateEnd(&z);
      }
      if (Errc e = send_end(*d, down->id, end); e != Errc::kOk) return fail("transform", "send end", e);
      std::printf("transform: %llu bytes in, crc32 %08x\n", static_cast<unsigned long long>(end.bytes_in), end.crc_in);
      return 0;
    }
    auto data = m->data();
    crc = crc32(crc, reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size()));
    if (!compress) {
      // Zero-copy forwarding: the same pages move on to the writer.
      size_t len = m->length;
      Errc e = d->send(down->id, std::move(m->pages), len, {.tag = kData, .delivery = Delivery::kLazy});
      if (e != Errc::kOk) return fail("transform", "send", e);
      continue;
    }
    z.next_in = reinterpret_cast<Bytef*>(data.data());
    z.avail_in = static_cast<uInt>(data.size());
    while (z.avail_in > 0) {
      if (!out) {
        auto p = d->alloc(kOutPages);
        if (!p) return fail("transform", "alloc", p.code());
        out = std::move(*p);
        z.next_out = reinterpret_cast<Bytef*>(out.data());
        z.avail_out = static_cast<uInt>(out.bytes().size());
      }
      deflate(&z, Z_NO_FLUSH);
      if (z.avail_out == 0) {
        if (Errc e = ship(false); e != Errc::kOk) return fail("transform", "send", e);
      }
    }
  }
}

int run_writer(const std::string& socket, const std::string& name, const std::string& prev, const std::string& output) {
  auto d = join(socket, name);
  if (!d) return fail("writer", "connect", d.code());
  auto up = d->introduce(prev, 10s);
  if (!up) return fail("writer", "introduce", up.code());
  int fd = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror(("writer: " + output).c_str());
    return 2;
  }
  uint64_t written = 0;
  for (;;) {
    auto m = d->recv(30s);
    if (!m) return fail("writer", "recv", m.code());
    if (m->tag == kEnd) {
      EndRecord end;
      std::memcpy(&end, m->data().data(), sizeof end);
      ::close(fd);
      std::printf("writer: %llu bytes written; input %llu bytes, crc32 %08x\n",
                  static_cast<unsigned long long>(written), static_cast<unsigned long long>(end.bytes_in), end.crc_in);
      return 0;
    }
    auto data = m->data();
    for (size_t off = 0; off < data.size();) {
      ssize_t n = ::write(fd, data.data() + off, data.size() - off);
      if (n < 0) {
        std::perror("writer: write");
        return 2;
      }
      off += static_cast<size_t>(n);
    }
    written += data.size();
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vmq-pipeline: read -> transform -> write, three domains passing pages over VM queues"};
  app.require_subcommand(1);
  std::string socket = bypass::base::default_socket_path("vmq.sock");
  app.add_option("-s,--socket", socket, "vmqd socket")->capture_default_str();
  // Each subcommand gets its own variables: CLI11 applies default_val() at definition time.
  std::string r_name, r_next, t_name, t_prev, t_next, w_name, w_prev, input, output, mode = "compress";
  size_t chunk_pages = 16;
  bool huge = false;
  auto* reader = app.add_subcommand("reader", "read a file and send it as pages");
  reader->add_option("--name", r_name)->default_val("reader");
  reader->add_option("--next", r_next)->default_val("transform");
  reader->add_option("--input", input)->required();
  reader->add_option("--chunk-pages", chunk_pages, "4 KiB pages per message")->capture_default_str();
  reader->add_flag("--huge", huge, "send 2 MiB pages");
  auto* transform = app.add_subcommand("transform", "compress (zlib) or checksum (CRC-32) the stream");
  transform->add_option("--name", t_name)->default_val("transform");
  transform->add_option("--prev", t_prev)->default_val("reader");
  transform->add_option("--next", t_next)->default_val("writer");
  transform->add_option("--mode", mode)->check(CLI::IsMember({"compress", "checksum"}))->capture_default_str();
  auto* writer = app.add_subcommand("writer", "write what arrives to a file");
  writer->add_option("--name", w_name)->default_val("writer");
  writer->add_option("--prev", w_prev)->default_val("transform");
  writer->add_option("--output", output)->required();
  CLI11_PARSE(app, argc, argv);
  if (chunk_pages == 0 || chunk_pages > 512) {
    std::fprintf(stderr, "--chunk-pages must be 1..512\n");
    return 2;
  }
  if (reader->parsed()) return run_reader(socket, r_name, r_next, input, chunk_pages, huge);
  if (transform->parsed()) return run_transform(socket, t_name, t_prev, t_next, mode);
  return run_writer(socket, w_name, w_prev, output);
}
