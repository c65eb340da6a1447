// json_escape: any input, control characters included, gives a valid JSON string literal;
// checked byte for byte and by python3's json parser.
#include <cstdio>
#include <string>

#include <gtest/gtest.h>

#include "bypass/base/json.h"

namespace bypass::base {
namespace {

TEST(JsonEscapeTest, QuotesBackslashesAndControlCharactersAreEscaped) {
  EXPECT_EQ(json_escape("plain"), "plain");
  EXPECT_EQ(json_escape("a\"b\\c"), "a\\\"b\\\\c");
  EXPECT_EQ(json_escape(std::string("\n\t\x01\x1f", 4)), "\\u000a\\u0009\\u0001\\u001f");
  EXPECT_EQ(json_escape(std::string("\0x", 2)), "\\u0000x");
  EXPECT_EQ(json_escape("\x7f"), "\x7f");
}

TEST(JsonEscapeTest, EveryByteBelow0x80RoundTripsThroughPython) {
  std::string all;
  for (int c = 1; c < 0x80; ++c) all += static_cast<char>(c);
  const std::string doc = "{\"name\": \"" + json_escape(all) + "\"}";
  // python3 parses the document and prints the code points it decoded; they must be 1..127.
  const std::string path = ::testing::TempDir() + "/json_escape_test.json";
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fwrite(doc.data(), 1, doc.size(), f);
  std::fclose(f);
  const std::string command =
      "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); "
      "print(\",\".join(str(ord(c)) for c in d[\"name\"]))' " +
      path;
  FILE* p = ::popen(command.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buffer[4096];
  while (size_t n = std::fread(buffer, 1, sizeof buffer, p)) out.append(buffer, n);
  ASSERT_EQ(::pclose(p), 0) << "python3 could not parse: " << doc;
  std::string expected;
  for (int c = 1; c < 0x80; ++c) expected += (c > 1 ? "," : "") + std::to_string(c);
  EXPECT_EQ(out, expected + "\n");
}

}  // namespace
}  // namespace bypass::base
