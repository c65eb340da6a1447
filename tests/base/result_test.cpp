// Result semantics: a value or an error, never both; the message names the code; a lower
// layer's error rebranded keeps its detail; move-only values move out.
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "bypass/base/result.h"
#include "bypass/base/unique_fd.h"

namespace bypass::base {
namespace {

enum class LayerCode { kOk = 0, kBroken = 1 };
std::string_view to_string(LayerCode code) { return code == LayerCode::kOk ? "ok" : "broken"; }

Result<int> parse(bool good) {
  if (!good) return make_error(Errc::kInvalidArgument, "not a number");
  return 42;
}

TEST(ResultTest, AValueIsOkAndCarriesNoError) {
  Result<int> r = parse(true);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(static_cast<bool>(r));
  EXPECT_EQ(*r, 42);
  EXPECT_EQ(r.code(), Errc::kOk);
  EXPECT_TRUE(r.message().empty());
}

TEST(ResultTest, AnErrorIsNotOkAndItsMessageStartsWithTheCodeName) {
  Result<int> r = parse(false);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), Errc::kInvalidArgument);
  EXPECT_EQ(r.error().message, "invalid argument: not a number");
  EXPECT_EQ(r.message(), "invalid argument: not a number");
}

TEST(ResultTest, VoidResultsAreOkByDefault) {
  Result<void> good;
  EXPECT_TRUE(good.ok());
  Result<void> bad = errno_error(Errc::kIo, "open x", ENOENT);
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.code(), Errc::kIo);
  EXPECT_NE(bad.message().find("open x: "), std::string_view::npos);
}

TEST(ResultTest, ALayerCodeIsATemplateParameterAndRebrandKeepsTheDetail) {
  Result<int> low = parse(false);
  Result<int, LayerCode> high = rebrand(LayerCode::kBroken, low.error());
  EXPECT_EQ(high.code(), LayerCode::kBroken);
  EXPECT_EQ(high.message(), "broken: invalid argument: not a number");
  Result<void, LayerCode> fine;
  EXPECT_EQ(fine.code(), LayerCode::kOk);
}

TEST(ResultTest, MoveOnlyValuesMoveOut) {
  Result<std::unique_ptr<int>> r = std::make_unique<int>(7);
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 7);
  Result<UniqueFd> fd = UniqueFd(-1);
  EXPECT_TRUE(fd.ok());
  EXPECT_FALSE(fd->valid());
}

}  // namespace
}  // namespace bypass::base
