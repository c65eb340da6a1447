// libFuzzer target: arbitrary batches of records fed to the generated host run table, the way
// a session walks a batch (host-server/src/session.cpp process_batch). The test kit's host context
// has no driver; its handlers read every decoded input by its counts and write outputs the
// way a driver would, so AddressSanitizer sees any decoder that hands out a short array.
//
// Input: records [u32 size][u16 command][u16 flags][payload]. The command is taken modulo the
// number of generated commands so every record reaches a real decoder. With BYPASS_FUZZ_SEEDS
// set to a directory, one valid record per command is written there first (the seed corpus).
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "bypass/wire/gen/wire_tests.h"

using namespace bypass::wire;
using namespace bypass::wire::test;

namespace {

void write_seeds(const char* dir) {
  ::mkdir(dir, 0755);
  for (size_t i = 0; i < kCommandCaseCount; ++i) {
    Env e(i + 1);
    auto c = kCommandCases[i].make();
    e.reset();
    c->make(e);
    const size_t padded = (e.msg_size + 7) & ~size_t{7};
    RecordHeader h{static_cast<uint32_t>(sizeof(h) + padded), static_cast<uint16_t>(i), 0};
    const std::string path = std::string(dir) + "/" + kCommandCases[i].name;
    if (FILE* f = std::fopen(path.c_str(), "wb")) {
      std::fwrite(&h, sizeof(h), 1, f);
      std::fwrite(e.msg.get(), 1, e.msg_size, f);
      static const uint8_t zeros[8] = {};
      std::fwrite(zeros, 1, padded - e.msg_size, f);
      std::fclose(f);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("BYPASS_FUZZ_SEEDS")) write_seeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Env* e = new Env(7);
  size_t off = 0;
  while (size - off >= sizeof(RecordHeader)) {
    RecordHeader h;
    std::memcpy(&h, data + off, sizeof(h));
    const size_t left = size - off - sizeof(h);
    // The session rejects a bad size; here a short record is cut to what is left so the
    // decoders see truncation too.
    const size_t n = h.size < sizeof(h) ? 0 : std::min<size_t>(h.size - sizeof(h), left);
    const uint16_t id = kCommandCases[h.command % kCommandCaseCount].id;
    std::unique_ptr<uint8_t[]> payload(new uint8_t[n ? n : 1]);  // exact size: overreads are caught
    if (n) std::memcpy(payload.get(), data + off + sizeof(h), n);
    e->host.expect(0xFFFF, nullptr, 0);
    const bool ok = e->run(id, payload.get(), n);
    e->pool.reset();
    if (!ok) {
      if (e->host.decode.error.empty()) std::abort();  // every rejection must say why
      break;                                           // a session ends here
    }
    off += sizeof(h) + n;
  }
  return 0;
}
