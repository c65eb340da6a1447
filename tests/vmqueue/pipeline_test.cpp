// The three-process sample pipeline (reader -> transform -> writer) on a real vmqd, with the
// output verified against the input.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "helpers.h"

using vmq_test::BrokerProcess;
using vmq_test::spawn;
using vmq_test::wait_exit;

namespace {

std::string temp_path(const std::string& what) {
  return "/tmp/vmq-pipeline-" + std::to_string(::getpid()) + "-" + what;
}

// Compressible but not trivial: words drawn from a small vocabulary, with random numbers.
std::string make_input(size_t size) {
  static const char* words[] = {"queue ", "page ", "domain ", "host ", "remap ", "owner ", "ring ", "\n"};
  std::mt19937_64 rng(1234);
  std::string s;
  s.reserve(size + 32);
  while (s.size() < size) {
    s += words[rng() % 8];
    if (rng() % 4 == 0) s += std::to_string(rng() % 100000) + ' ';
  }
  s.resize(size);
  return s;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Files {
  std::string input = temp_path("in");
  std::string output = temp_path("out");
  std::string log = temp_path("writer.log");
  ~Files() {
    std::remove(input.c_str());
    std::remove(output.c_str());
    std::remove(log.c_str());
  }
};

void run_pipeline(const std::string& mode, bool huge, size_t size) {
  vmq_test::HugePageReserve reserve(huge ? 8 : 0);
  BrokerProcess broker(huge ? std::vector<std::string>{"--pages-2m", "8"} : std::vector<std::string>{});
  Files f;
  std::string data = make_input(size);
  std::ofstream(f.input, std::ios::binary) << data;
  std::string tool = PIPELINE_PATH;
  const std::string& s = broker.socket();
  // Started downstream-first and upstream-first alike: the identity exchange waits for peers.
  pid_t writer = spawn({tool, "-s", s, "writer", "--output", f.output}, f.log);
  std::vector<std::string> reader_args = {tool, "-s", s, "reader", "--input", f.input};
  if (huge) reader_args.push_back("--huge");
  pid_t reader = spawn(reader_args, "/dev/null");
  pid_t transform = spawn({tool, "-s", s, "transform", "--mode", mode}, "/dev/null");
  EXPECT_EQ(wait_exit(reader), 0);
  EXPECT_EQ(wait_exit(transform), 0);
  ASSERT_EQ(wait_exit(writer), 0);
  std::string out = slurp(f.output);
  if (mode == "compress") {
    ASSERT_LT(out.size(), data.size() / 2) << "not compressed";
    std::string back(data.size(), '\0');
    uLongf back_len = back.size();
    ASSERT_EQ(uncompress(reinterpret_cast<Bytef*>(back.data()), &back_len, reinterpret_cast<const Bytef*>(out.data()),
                         out.size()),
              Z_OK);
    ASSERT_EQ(back_len, data.size());
    EXPECT_TRUE(back == data) << "decompressed output differs from the input";
  } else {
    ASSERT_EQ(out.size(), data.size());
    EXPECT_TRUE(out == data) << "output differs from the input";
  }
  // The transform's CRC-32, carried to the writer in the end record, matches the input's.
  unsigned crc = static_cast<unsigned>(crc32(0, reinterpret_cast<const Bytef*>(data.data()), data.size()));
  char expect[64];
  std::snprintf(expect, sizeof expect, "input %zu bytes, crc32 %08x", data.size(), crc);
  EXPECT_NE(slurp(f.log).find(expect), std::string::npos) << slurp(f.log);
}

}  // namespace

TEST(VmQueuePipeline, CompressesAFileThroughThreeDomains) { run_pipeline("compress", false, 8u << 20); }

TEST(VmQueuePipeline, ChecksumForwardsTheSamePages) { run_pipeline("checksum", false, (8u << 20) + 12345); }

TEST(VmQueuePipeline, HugePagesThroughThreeDomains) { run_pipeline("checksum", true, (6u << 20) + 7); }
