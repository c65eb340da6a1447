// Command ids are the wire's contract between a guest and a host built from different
// revisions: codegen/data/command_ids.txt is append-only. This test fails when an existing
// line changed (against every committed version of the file), when ids are not unique and
// increasing, or when a generated kCmd_vkX differs from its line.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bypass/wire/gen/wire_tests.h"

namespace bypass::wire::test {
namespace {

const std::string kIdsPath = "codegen/data/command_ids.txt";

struct IdLine {
  long id;
  std::string name;
  bool operator==(const IdLine&) const = default;
};

// Same rules as codegen/wire.py read_list: '#' starts a comment, blank lines are skipped.
bool parse_ids(const std::string& text, std::vector<IdLine>* out, std::string* err) {
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    line = line.substr(0, line.find('#'));
    std::istringstream words(line);
    IdLine l;
    std::string extra;
    if (!(words >> l.id)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      *err = "line " + std::to_string(lineno) + ": no id";
      return false;
    }
    if (!(words >> l.name) || (words >> extra)) {
      *err = "line " + std::to_string(lineno) + ": expected `<id> <command>`";
      return false;
    }
    out->push_back(l);
  }
  return true;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

bool run_command(const std::string& cmd, std::string* out) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return false;
  char buf[4096];
  size_t n;
  out->clear();
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out->append(buf, n);
  return pclose(p) == 0;
}

// Where `old` stops being a prefix of `now`, or -1.
long first_change(const std::vector<IdLine>& old, const std::vector<IdLine>& now) {
  for (size_t i = 0; i < old.size(); ++i)
    if (i >= now.size() || !(old[i] == now[i])) return static_cast<long>(i);
  return -1;
}

std::vector<IdLine> current_ids() {
  std::vector<IdLine> ids;
  std::string err;
  EXPECT_TRUE(parse_ids(read_text(std::string(BYPASS_SOURCE_DIR) + "/" + kIdsPath), &ids, &err)) << err;
  return ids;
}

TEST(CommandIds, UniqueAndIncreasing) {
  const auto ids = current_ids();
  ASSERT_GT(ids.size(), 250u);
  std::set<std::string> names;
  long last = 0;
  for (const IdLine& l : ids) {
    EXPECT_GT(l.id, last) << l.name << ": ids must increase line by line";
    EXPECT_LT(l.id, 0xF000) << l.name << ": ids from 0xF000 are control commands";
    EXPECT_TRUE(names.insert(l.name).second) << l.name << " has two ids";
    last = l.id;
  }
}

TEST(CommandIds, GeneratedIdsMatchTheTable) {
  std::map<std::string, long> table;
  for (const IdLine& l : current_ids()) table[l.name] = l.id;
  ASSERT_GT(kCommandIdCount, 250u);
  for (size_t i = 0; i < kCommandIdCount; ++i) {
    auto it = table.find(kCommandIdTable[i].name);
    ASSERT_NE(it, table.end()) << kCommandIdTable[i].name << " is generated but has no line in " << kIdsPath;
    EXPECT_EQ(kCommandIdTable[i].id, it->second) << kCommandIdTable[i].name;
    EXPECT_STREQ(command_name(kCommandIdTable[i].id), kCommandIdTable[i].name);
  }
}

TEST(CommandIds, PrefixCheckCatchesEdits) {
  const std::vector<IdLine> now{{1, "vkA"}, {2, "vkB"}, {3, "vkC"}};
  EXPECT_EQ(first_change({{1, "vkA"}, {2, "vkB"}}, now), -1);
  EXPECT_EQ(first_change({{1, "vkA"}, {2, "vkX"}}, now), 1);                          // renamed
  EXPECT_EQ(first_change({{1, "vkA"}, {3, "vkB"}}, now), 1);                          // renumbered
  EXPECT_EQ(first_change({{1, "vkA"}, {2, "vkB"}, {3, "vkC"}, {4, "vkD"}}, now), 3);  // removed
}

TEST(CommandIds, EveryCommittedVersionIsAPrefix) {
  const std::string git = "git -C '" + std::string(BYPASS_SOURCE_DIR) + "' ";
  std::string out;
  if (!run_command(git + "rev-parse --is-inside-work-tree 2>/dev/null", &out) || out.rfind("true", 0) != 0)
    GTEST_SKIP() << "not in a git checkout";
  ASSERT_TRUE(run_command(git + "log --format=%H -- " + kIdsPath, &out));
  const auto now = current_ids();
  std::istringstream revs(out);
  std::string rev;
  int checked = 0;
  while (std::getline(revs, rev)) {
    if (rev.empty()) continue;
    std::string text;
    // A revision may have removed the file (history rewritten elsewhere): nothing to compare.
    if (!run_command(git + "show " + rev + ":" + kIdsPath + " 2>/dev/null", &text)) continue;
    std::vector<IdLine> old;
    std::string err;
    ASSERT_TRUE(parse_ids(text, &old, &err)) << rev << ": " << err;
    const long at = first_change(old, now);
    EXPECT_EQ(at, -1) << kIdsPath << " as of " << rev << " is not a prefix of the current one: entry " << at << " ("
                      << old[static_cast<size_t>(at < 0 ? 0 : at)].id << " "
                      << old[static_cast<size_t>(at < 0 ? 0 : at)].name
                      << ") changed or was removed; the table is append-only";
    ++checked;
  }
  std::printf("checked %d committed versions of %s\n", checked, kIdsPath.c_str());
}

}  // namespace
}  // namespace bypass::wire::test
