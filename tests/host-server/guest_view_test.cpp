// GuestView: a shadowing guest's read barrier gets exactly the bytes that differ from its copy.
#include "bypass/host/guest_view.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace bypass::host {
namespace {

constexpr uint64_t kPage = memshare::kPageSize;

// Applies a read barrier's runs to a guest copy, as the ICD does.
struct Guest {
  std::vector<std::byte> copy;
  uint64_t bytes_received = 0;
  void read(GuestView& view, const std::vector<std::byte>& host, uint64_t offset, uint64_t size) {
    std::vector<wire::MemoryRun> runs;
    view.changed(host.data(), offset, size, runs);
    for (const auto& r : runs) {
      ASSERT_GE(r.offset, offset);
      ASSERT_LE(r.offset + r.size, offset + size);
      std::memcpy(copy.data() + r.offset, host.data() + r.offset, r.size);
      bytes_received += r.size;
    }
  }
};

TEST(GuestView, FirstReadSendsEverythingThenOnlyChangedPages) {
  const uint64_t size = 16 * kPage + 100;  // a partial last page
  std::vector<std::byte> host(size, std::byte{7});
  GuestView view(size);
  Guest guest{std::vector<std::byte>(size), 0};
  guest.read(view, host, 0, size);
  EXPECT_EQ(guest.bytes_received, size);
  EXPECT_EQ(guest.copy, host);

  guest.bytes_received = 0;
  guest.read(view, host, 0, size);
  EXPECT_EQ(guest.bytes_received, 0u) << "nothing changed";

  host[3 * kPage + 5] = std::byte{1};
  host[4 * kPage] = std::byte{2};  // adjacent page: one run
  host[size - 1] = std::byte{3};   // the partial last page
  guest.bytes_received = 0;
  guest.read(view, host, 0, size);
  EXPECT_EQ(guest.bytes_received, 2 * kPage + 100);
  EXPECT_EQ(guest.copy, host);
}

TEST(GuestView, GuestWritesAreNotSentBack) {
  const uint64_t size = 8 * kPage;
  std::vector<std::byte> host(size);
  GuestView view(size);
  Guest guest{std::vector<std::byte>(size), 0};
  guest.read(view, host, 0, size);
  // The guest writes two whole pages (a write barrier): the host now holds its bytes.
  for (uint64_t i = 2 * kPage; i < 4 * kPage; ++i) guest.copy[i] = host[i] = std::byte{9};
  view.wrote(host.data(), 2 * kPage, 2 * kPage);
  guest.bytes_received = 0;
  guest.read(view, host, 0, size);
  EXPECT_EQ(guest.bytes_received, 0u);
}

TEST(GuestView, PartialPagesAreNeverTrusted) {
  const uint64_t size = 4 * kPage;
  std::vector<std::byte> host(size);
  GuestView view(size);
  Guest guest{std::vector<std::byte>(size), 0};
  guest.read(view, host, 0, size);
  // A write of part of page 1: the rest of that page may differ between the two sides.
  view.wrote(host.data(), kPage + 10, 20);
  host[kPage + 100] = std::byte{5};  // the device wrote elsewhere in that page
  guest.bytes_received = 0;
  guest.read(view, host, 0, size);
  EXPECT_EQ(guest.bytes_received, kPage);
  EXPECT_EQ(guest.copy, host);

  // A read of a range that cuts pages: the edge pieces go as they are and are never trusted.
  host[2 * kPage + 1] = std::byte{6};
  guest.bytes_received = 0;
  guest.read(view, host, kPage + 50, kPage);
  EXPECT_EQ(guest.bytes_received, kPage);  // the piece of page 1 and the piece of page 2
  guest.bytes_received = 0;
  guest.read(view, host, 0, size);
  EXPECT_EQ(guest.bytes_received, 2 * kPage) << "pages 1 and 2 were seen only in part";
  EXPECT_EQ(guest.copy, host);
}

}  // namespace
}  // namespace bypass::host
