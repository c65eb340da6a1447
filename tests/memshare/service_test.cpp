// memshare service tests: a real memshared daemon, domains in real (forked) processes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

#include "bypass/base/unix_socket.h"
#include "bypass/memshare/client.h"
#include "bypass/memshare/page_ranges.h"
#include "bypass/memshare/service.h"
#include "bypass/memshare/socket_io.h"
#include "test_support.h"

namespace bypass::memshare {
namespace {

using test::Child;
using test::Daemon;
using test::Pipe;

constexpr uint64_t kMiB = 1 << 20;

#define CHILD_CHECK(cond)                                                           \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "child check failed at line %d: %s\n", __LINE__, #cond); \
      return __LINE__ % 200 + 1;                                                    \
    }                                                                               \
  } while (0)

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(daemon_.ok()) << "memshared did not start"; }
  Client connect(const char* label) {
    auto client = Client::connect(daemon_.socket(), label);
    EXPECT_TRUE(client) << client.error().message;
    return std::move(*client);
  }
  Daemon daemon_;
};

TEST_F(ServiceTest, NamingAndMappingAcrossTwoProcesses) {
  Client owner = connect("owner");
  auto region = Region::create(2 * kMiB);
  ASSERT_TRUE(region);
  test::fill_pattern(region->data(), region->size(), 1);
  auto name = owner.name(*region);
  ASSERT_TRUE(name) << name.error().message;

  Pipe to_child;
  Pipe to_parent;
  const std::string socket = daemon_.socket();
  Child child([&] {
    auto client = Client::connect(socket, "mapper");
    CHILD_CHECK(client);
    const DomainId me = client->domain();
    CHILD_CHECK(to_parent.send(me));
    Name shared;
    CHILD_CHECK(to_child.recv(shared));
    auto mapping = client->map(shared, Access::kReadWrite);
    CHILD_CHECK(mapping);
    CHILD_CHECK(mapping->size() == 2 * kMiB);
    std::vector<std::byte> expected(2 * kMiB);
    test::fill_pattern(expected.data(), expected.size(), 1);
    CHILD_CHECK(std::memcmp(mapping->data(), expected.data(), expected.size()) == 0);
    // Write through the mapping: the owner sees it without any copy.
    std::memset(mapping->data() + kMiB, 0xab, 4096);
    return 0;
  });
  DomainId child_domain = kNoDomain;
  ASSERT_TRUE(to_parent.recv(child_domain));
  EXPECT_NE(child_domain, owner.domain());
  ASSERT_TRUE(owner.grant(*name, child_domain, Access::kReadWrite));
  ASSERT_TRUE(to_child.send(*name));
  ASSERT_TRUE(test::exited_ok(child.wait()));
  for (size_t i = 0; i < 4096; ++i) ASSERT_EQ(region->data()[kMiB + i], std::byte{0xab});

  // The owner itself can map its name too: a second view of the same pages.
  auto own = owner.map(*name, Access::kRead);
  ASSERT_TRUE(own);
  EXPECT_EQ(own->data()[kMiB], std::byte{0xab});
  auto info = owner.query(*name);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->size, 2 * kMiB);
  EXPECT_EQ(info->owner, owner.domain());
}

TEST_F(ServiceTest, AccessDeniedForUnlistedDomain) {
  Client owner = connect("owner");
  Client reader = connect("reader");
  Client stranger = connect("stranger");
  auto region = Region::create(64 * 1024);
  ASSERT_TRUE(region);
  auto name = owner.name(*region);
  ASSERT_TRUE(name);
  ASSERT_TRUE(owner.grant(*name, reader.domain(), Access::kRead));

  auto denied = stranger.map(*name, Access::kRead);
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.code(), Errc::kAccessDenied);
  EXPECT_NE(denied.error().message.find("not listed"), std::string::npos) << denied.error().message;
  EXPECT_EQ(stranger.query(*name).code(), Errc::kAccessDenied);
  EXPECT_EQ(stranger.open_shadow(*name, Access::kRead).code(), Errc::kAccessDenied);

  // Listed for reading only: a read-write map or a write into it is denied.
  EXPECT_EQ(reader.map(*name, Access::kReadWrite).code(), Errc::kAccessDenied);
  EXPECT_TRUE(reader.map(*name, Access::kRead));
  auto scratch = Region::create(64 * 1024);
  ASSERT_TRUE(scratch);
  auto scratch_name = reader.name(*scratch);
  ASSERT_TRUE(scratch_name);
  auto into = reader.transfer(*scratch_name, *name, CopyRange{0, 0, 4096});
  ASSERT_TRUE(into);
  EXPECT_EQ(into->wait().code(), Errc::kAccessDenied);
  auto from = stranger.transfer(*name, *name, CopyRange{0, 4096, 4096});
  ASSERT_TRUE(from);
  EXPECT_EQ(from->wait().code(), Errc::kAccessDenied);

  // Only the owner grants, rebinds or releases.
  EXPECT_EQ(reader.grant(*name, stranger.domain(), Access::kRead).code(), Errc::kAccessDenied);
  EXPECT_EQ(reader.release(*name).code(), Errc::kAccessDenied);
  EXPECT_EQ(reader.rebind(*name, *scratch).code(), Errc::kAccessDenied);

  // Names cannot be guessed: a made-up one is unknown, as is one from another server.
  EXPECT_EQ(stranger.map(Name{1, 2}, Access::kRead).code(), Errc::kUnknownName);
  EXPECT_EQ(owner.grant(*name, 987654, Access::kRead).code(), Errc::kInvalidArgument);

  // Withdrawing a grant tears down that domain's mappings.
  auto mapping = reader.map(*name, Access::kRead);
  ASSERT_TRUE(mapping);
  ASSERT_TRUE(owner.revoke(*name, reader.domain()));
  EXPECT_TRUE(mapping->revoked());
  std::byte byte;
  EXPECT_EQ(mapping->read(0, std::span(&byte, 1)).code(), Errc::kDomainGone);
  EXPECT_EQ(reader.map(*name, Access::kRead).code(), Errc::kAccessDenied);

  // Released names are gone for everybody.
  ASSERT_TRUE(owner.release(*name));
  EXPECT_EQ(owner.map(*name, Access::kRead).code(), Errc::kUnknownName);
}

TEST_F(ServiceTest, WriteToReadOnlyMappingFaultsInChild) {
  Client owner = connect("owner");
  auto region = Region::create(16 * 4096);
  ASSERT_TRUE(region);
  std::memset(region->data(), 0x42, region->size());
  auto name = owner.name(*region);
  ASSERT_TRUE(name);

  Pipe to_child;
  Pipe to_parent;
  const std::string socket = daemon_.socket();
  Child child([&] {
    auto client = Client::connect(socket, "reader");
    CHILD_CHECK(client);
    CHILD_CHECK(to_parent.send(client->domain()));
    Name shared;
    CHILD_CHECK(to_child.recv(shared));
    auto mapping = client->map(shared, Access::kRead);
    CHILD_CHECK(mapping);
    CHILD_CHECK(mapping->data()[5] == std::byte{0x42});
    // The read-only file description cannot be upgraded.
    CHILD_CHECK(::mprotect(mapping->data(), 4096, PROT_READ | PROT_WRITE) == -1 && errno == EACCES);
    test::default_segv_handler();
    CHILD_CHECK(to_parent.send(1));
    *reinterpret_cast<volatile std::byte*>(mapping->data() + 4096) = std::byte{0};  // must fault
    return 0;  // reaching here means the write went through: failure
  });
  DomainId child_domain = kNoDomain;
  ASSERT_TRUE(to_parent.recv(child_domain));
  ASSERT_TRUE(owner.grant(*name, child_domain, Access::kRead));
  ASSERT_TRUE(to_child.send(*name));
  int reached = 0;
  ASSERT_TRUE(to_parent.recv(reached)) << "child failed before the write";
  const int status = child.wait();
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  EXPECT_EQ(WTERMSIG(status), SIGSEGV);
  EXPECT_EQ(region->data()[4096], std::byte{0x42});
  EXPECT_TRUE(daemon_.alive());
}

TEST_F(ServiceTest, RebindSwapsTheBufferBehindAName) {
  Client owner = connect("owner");
  Client guest = connect("guest");
  auto first = Region::create(256 * 1024);
  auto second = Region::create(256 * 1024);
  auto bigger = Region::create(512 * 1024);
  ASSERT_TRUE(first && second && bigger);
  std::memset(first->data(), 'A', first->size());
  std::memset(second->data(), 'B', second->size());
  std::memset(bigger->data(), 'C', bigger->size());
  auto name = owner.name(*first);
  ASSERT_TRUE(name);
  ASSERT_TRUE(owner.grant(*name, guest.domain(), Access::kReadWrite));

  auto mapping = guest.map(*name, Access::kReadWrite);
  ASSERT_TRUE(mapping);
  std::byte* before = mapping->data();
  EXPECT_EQ(before[0], std::byte{'A'});
  EXPECT_FALSE(mapping->stale());

  auto generation = owner.rebind(*name, *second);
  ASSERT_TRUE(generation) << generation.error().message;
  EXPECT_EQ(*generation, 1u);
  EXPECT_TRUE(mapping->stale());
  ASSERT_TRUE(guest.refresh(*mapping));
  EXPECT_FALSE(mapping->stale());
  EXPECT_EQ(mapping->data(), before) << "same size: remapped in place";
  EXPECT_EQ(mapping->data()[100], std::byte{'B'});
  mapping->data()[7] = std::byte{'b'};
  EXPECT_EQ(second->data()[7], std::byte{'b'});
  EXPECT_EQ(first->data()[7], std::byte{'A'});

  // Transfers through the name now read the new buffer.
  auto dst = Region::create(4096);
  ASSERT_TRUE(dst);
  auto dst_name = guest.name(*dst);
  ASSERT_TRUE(dst_name);
  auto t = guest.transfer(*name, *dst_name, CopyRange{0, 0, 16});
  ASSERT_TRUE(t);
  ASSERT_TRUE(t->wait());
  EXPECT_EQ(dst->data()[7], std::byte{'b'});
  EXPECT_EQ(dst->data()[8], std::byte{'B'});

  // A bigger buffer: the mapping moves and grows.
  ASSERT_TRUE(owner.rebind(*name, *bigger));
  ASSERT_TRUE(guest.refresh(*mapping));
  EXPECT_EQ(mapping->size(), 512u * 1024);
  EXPECT_EQ(mapping->data()[500 * 1024], std::byte{'C'});
  auto info = guest.query(*name);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->generation, 2u);

  // A rebind to something invalid is refused and leaves the name as it was.
  auto unsealable = ::memfd_create("plain", MFD_CLOEXEC);
  ASSERT_GE(unsealable, 0);
  ASSERT_EQ(::ftruncate(unsealable, 4096), 0);
  EXPECT_EQ(owner.rebind(*name, unsealable, 0, 4096).code(), Errc::kInvalidArgument);
  ::close(unsealable);
  EXPECT_EQ(owner.rebind(*name, second->fd(), 0, 10 * kMiB).code(), Errc::kOutOfRange);
  EXPECT_FALSE(mapping->stale());
}

class BarrierTest : public ServiceTest, public ::testing::WithParamInterface<TrackingMethod> {};

TEST_P(BarrierTest, BarriersMoveExactlyTheDirtyPages) {
  if (!tracking_available(GetParam())) GTEST_SKIP() << "tracking method not available";
  constexpr uint64_t kPages = 256;
  Client owner = connect("owner");
  Client guest = connect("guest");
  auto region = Region::create(kPages * kPageSize);
  ASSERT_TRUE(region);
  test::fill_pattern(region->data(), region->size(), 3);
  auto name = owner.name(*region);
  ASSERT_TRUE(name);
  ASSERT_TRUE(owner.grant(*name, guest.domain(), Access::kReadWrite));

  auto shadow = guest.open_shadow(*name, Access::kReadWrite, GetParam());
  ASSERT_TRUE(shadow) << shadow.error().message;
  EXPECT_EQ(shadow->method(), GetParam());
  ASSERT_EQ(std::memcmp(shadow->data(), region->data(), region->size()), 0) << "a shadow starts equal";
  std::vector<std::byte> before(region->data(), region->data() + region->size());

  // Nothing written: nothing moves.
  auto idle = guest.barrier(*shadow, BarrierDirection::kWrite);
  ASSERT_TRUE(idle) << idle.error().message;
  EXPECT_EQ(idle->pages, 0u);

  // Six pages in four runs, some partly written.
  const uint64_t written[] = {3, 4, 5, 100, 200, 255};
  for (uint64_t p : written) shadow->data()[p * kPageSize + p] = std::byte{0xee};
  auto moved = guest.barrier(*shadow, BarrierDirection::kWrite);
  ASSERT_TRUE(moved) << moved.error().message;
  EXPECT_EQ(moved->pages, 6u);
  EXPECT_EQ(moved->bytes, 6 * kPageSize);
  EXPECT_EQ(moved->ranges, 4u);
  for (uint64_t p = 0; p < kPages; ++p) {
    const bool dirty = std::find(std::begin(written), std::end(written), p) != std::end(written);
    const std::byte* expect = dirty ? shadow->data() + p * kPageSize : before.data() + p * kPageSize;
    ASSERT_EQ(std::memcmp(region->data() + p * kPageSize, expect, kPageSize), 0) << "page " << p;
  }
  auto again = guest.barrier(*shadow, BarrierDirection::kWrite);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->pages, 0u);

  // Sub-range: only the pages inside the range move; the rest waits for the next barrier.
  shadow->data()[20 * kPageSize] = std::byte{1};
  shadow->data()[120 * kPageSize] = std::byte{1};
  auto part = guest.barrier(*shadow, BarrierDirection::kWrite, Range{0, 64 * kPageSize});
  ASSERT_TRUE(part);
  EXPECT_EQ(part->pages, 1u);
  EXPECT_EQ(region->data()[120 * kPageSize], before[120 * kPageSize]);
  auto rest = guest.barrier(*shadow, BarrierDirection::kWrite);
  ASSERT_TRUE(rest);
  EXPECT_EQ(rest->pages, 1u);
  EXPECT_EQ(region->data()[120 * kPageSize], std::byte{1});

  // Read barrier: the owner changed three pages; exactly those come back.
  region->data()[10 * kPageSize] = std::byte{7};
  region->data()[11 * kPageSize + 4000] = std::byte{7};
  region->data()[50 * kPageSize + 1] = std::byte{7};
  auto back = guest.barrier(*shadow, BarrierDirection::kRead);
  ASSERT_TRUE(back) << back.error().message;
  EXPECT_EQ(back->pages, 3u);
  EXPECT_EQ(std::memcmp(shadow->data(), region->data(), region->size()), 0);
  // What the read barrier wrote is not a local write.
  auto quiet = guest.barrier(*shadow, BarrierDirection::kWrite);
  ASSERT_TRUE(quiet);
  EXPECT_EQ(quiet->pages, 0u);

  EXPECT_EQ(guest.barrier(*shadow, BarrierDirection::kWrite, Range{kPages * kPageSize, 1}).code(), Errc::kOutOfRange);

  // A read-only shadow may read but not write back.
  Client reader = connect("reader");
  ASSERT_TRUE(owner.grant(*name, reader.domain(), Access::kRead));
  auto read_only = reader.open_shadow(*name, Access::kRead);
  ASSERT_TRUE(read_only);
  EXPECT_EQ(reader.barrier(*read_only, BarrierDirection::kWrite).code(), Errc::kAccessDenied);
  EXPECT_TRUE(reader.barrier(*read_only, BarrierDirection::kRead));
}

INSTANTIATE_TEST_SUITE_P(Methods, BarrierTest,
                         ::testing::Values(TrackingMethod::kUffdAsync, TrackingMethod::kMprotect, TrackingMethod::kHash,
                                           TrackingMethod::kAdaptive),
                         test::method_param_name<::testing::TestParamInfo<TrackingMethod>>);

TEST_F(ServiceTest, TransfersCompleteWithStatusUnderConcurrency) {
  Client owner = connect("owner");
  constexpr uint64_t kSize = 8 * kMiB;
  auto src = Region::create(kSize);
  ASSERT_TRUE(src);
  test::fill_pattern(src->data(), kSize, 9);
  auto src_name = owner.name(*src);
  ASSERT_TRUE(src_name);

  constexpr int kThreads = 4;
  constexpr int kPerThread = 40;
  std::vector<Region> dsts;
  std::vector<Name> dst_names;
  for (int i = 0; i < kThreads; ++i) {
    auto r = Region::create(kSize);
    ASSERT_TRUE(r);
    auto n = owner.name(*r);
    ASSERT_TRUE(n);
    dsts.push_back(std::move(*r));
    dst_names.push_back(*n);
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t) + 1);
      std::vector<TransferHandle> pending;
      std::vector<std::pair<CopyRange, bool>> expected;  // range, should succeed
      for (int i = 0; i < kPerThread; ++i) {
        const uint64_t size = 1 + rng() % (3 * kMiB);
        // Each thread writes its own destination, in disjoint slices per transfer index.
        const uint64_t slot = kSize / kPerThread;
        CopyRange range{rng() % (kSize - size), static_cast<uint64_t>(i) * slot, std::min(size, slot)};
        const bool bad = i % 10 == 9;
        if (bad) range.src_offset = kSize - range.size / 2;  // runs off the end: kOutOfRange
        auto h = owner.transfer(*src_name, dst_names[t], range);
        if (!h) {
          failures++;
          continue;
        }
        pending.push_back(std::move(*h));
        expected.emplace_back(range, !bad);
      }
      for (size_t i = 0; i < pending.size(); ++i) {
        auto r = i % 2 ? pending[i].wait() : [&] {
          for (;;) {  // the polling style
            if (auto p = pending[i].poll()) return *p;
            std::this_thread::yield();
          }
        }();
        const auto& [range, good] = expected[i];
        if (good) {
          if (!r || *r != range.size ||
              std::memcmp(dsts[t].data() + range.dst_offset, src->data() + range.src_offset, range.size) != 0) {
            failures++;
          }
        } else if (r.code() != Errc::kOutOfRange) {
          failures++;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);

  // A second process transfers at the same time as this one.
  Pipe to_child;
  Pipe to_parent;
  const std::string socket = daemon_.socket();
  Child child([&] {
    auto client = Client::connect(socket, "second");
    CHILD_CHECK(client);
    CHILD_CHECK(to_parent.send(client->domain()));
    Name names[2];
    CHILD_CHECK(to_child.recv(names));
    std::vector<TransferHandle> handles;
    for (int i = 0; i < 32; ++i) {
      auto h = client->transfer(names[0], names[1], CopyRange{0, 0, kSize});
      CHILD_CHECK(h);
      handles.push_back(std::move(*h));
    }
    for (auto& h : handles) {
      auto r = h.wait(std::chrono::seconds(20));
      CHILD_CHECK(r && *r == kSize);
    }
    return 0;
  });
  DomainId child_domain = kNoDomain;
  ASSERT_TRUE(to_parent.recv(child_domain));
  auto sink = Region::create(kSize);
  ASSERT_TRUE(sink);
  auto sink_name = owner.name(*sink);
  ASSERT_TRUE(sink_name);
  ASSERT_TRUE(owner.grant(*src_name, child_domain, Access::kRead));
  ASSERT_TRUE(owner.grant(*sink_name, child_domain, Access::kReadWrite));
  const Name pair[2] = {*src_name, *sink_name};
  ASSERT_TRUE(to_child.send(pair));
  for (int i = 0; i < 16; ++i) {
    auto h = owner.transfer(*src_name, dst_names[0], CopyRange{0, 0, kSize});
    ASSERT_TRUE(h);
    auto r = h->wait();
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, kSize);
  }
  ASSERT_TRUE(test::exited_ok(child.wait()));
  EXPECT_EQ(std::memcmp(sink->data(), src->data(), kSize), 0);

  // Dropping handles without waiting is fine; their slots come back (the client waits for one
  // when all are in use).
  for (int i = 0; i < 3 * 1024; ++i) {
    auto h = owner.transfer(*src_name, dst_names[1], CopyRange{0, 0, 64});
    ASSERT_TRUE(h) << h.error().message;
  }
}

TEST_F(ServiceTest, DomainKilledWhileOthersMapItsBuffers) {
  Pipe to_parent;
  Pipe to_child;
  const std::string socket = daemon_.socket();
  Client survivor = connect("survivor");
  const DomainId survivor_id = survivor.domain();
  Child owner([&] {
    auto client = Client::connect(socket, "doomed");
    CHILD_CHECK(client);
    auto region = Region::create(kMiB);
    CHILD_CHECK(region);
    std::memset(region->data(), 0x3c, region->size());
    auto name = client->name(*region);
    CHILD_CHECK(name);
    CHILD_CHECK(client->grant(*name, survivor_id, Access::kReadWrite));
    CHILD_CHECK(to_parent.send(*name));
    int never = 0;
    to_child.recv(never, 60000);  // wait to be killed
    return 0;
  });
  Name name;
  ASSERT_TRUE(to_parent.recv(name));
  auto mapping = survivor.map(name, Access::kReadWrite);
  ASSERT_TRUE(mapping) << mapping.error().message;
  auto shadow = survivor.open_shadow(name, Access::kReadWrite);
  ASSERT_TRUE(shadow);
  EXPECT_EQ(mapping->data()[12345], std::byte{0x3c});
  auto local = Region::create(kMiB);
  ASSERT_TRUE(local);
  auto local_name = survivor.name(*local);
  ASSERT_TRUE(local_name);
  // Transfers in flight while the owner dies end with a status, whichever way the race goes.
  std::vector<TransferHandle> in_flight;
  for (int i = 0; i < 64; ++i) {
    auto h = survivor.transfer(name, *local_name, CopyRange{0, 0, kMiB});
    ASSERT_TRUE(h);
    in_flight.push_back(std::move(*h));
  }

  owner.kill_now();

  for (auto& h : in_flight) {
    auto r = h.wait(std::chrono::seconds(10));
    EXPECT_TRUE(r.ok() || r.code() == Errc::kDomainGone) << r.error().message;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!mapping->revoked() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(mapping->revoked());
  std::byte out[16];
  EXPECT_EQ(mapping->read(0, out).code(), Errc::kDomainGone);
  EXPECT_EQ(survivor.process_revocations(), 1u);
  // Stale pointers do not crash: the range now reads as zeros.
  EXPECT_EQ(mapping->data()[12345], std::byte{0});

  auto again = survivor.map(name, Access::kRead);
  EXPECT_EQ(again.code(), Errc::kDomainGone);
  EXPECT_NE(again.error().message.find("ended"), std::string::npos) << again.error().message;
  auto t = survivor.transfer(name, *local_name, CopyRange{0, 0, 4096});
  ASSERT_TRUE(t);
  EXPECT_EQ(t->wait().code(), Errc::kDomainGone);
  shadow->data()[0] = std::byte{1};
  EXPECT_EQ(survivor.barrier(*shadow, BarrierDirection::kWrite).code(), Errc::kDomainGone);
  EXPECT_EQ(survivor.grant(*local_name, 1000000, Access::kRead).code(), Errc::kInvalidArgument);

  // The service goes on serving everybody else.
  EXPECT_TRUE(daemon_.alive());
  Client late = connect("late");
  ASSERT_TRUE(survivor.grant(*local_name, late.domain(), Access::kRead));
  EXPECT_TRUE(late.map(*local_name, Access::kRead));
  mapping = Mapping();
  shadow = Shadow();
}

TEST_F(ServiceTest, BadInputNeverCrashesTheService) {
  // Garbage on a raw connection ends that connection only.
  auto raw = base::connect_unix(daemon_.socket(), SOCK_SEQPACKET);
  ASSERT_TRUE(raw);
  const char junk[] = "this is not a memshare message";
  ASSERT_TRUE(send_message(raw->get(), std::as_bytes(std::span(junk))));
  std::byte buffer[64];
  std::vector<base::UniqueFd> fds;
  EXPECT_EQ(recv_message(raw->get(), buffer, fds).code(), Errc::kDisconnected);

  Client client = connect("client");
  // Not sealable, read-only, out of range, zero size: clear errors.
  const int plain = ::memfd_create("plain", MFD_CLOEXEC);
  ASSERT_EQ(::ftruncate(plain, 8192), 0);
  auto unsealable = client.name(plain, 0, 8192);
  EXPECT_EQ(unsealable.code(), Errc::kInvalidArgument);
  EXPECT_NE(unsealable.error().message.find("MFD_ALLOW_SEALING"), std::string::npos);
  ::close(plain);
  auto region = Region::create(8192);
  ASSERT_TRUE(region);
  EXPECT_EQ(client.name(region->fd(), 0, 3 * 8192).code(), Errc::kOutOfRange);
  EXPECT_EQ(client.name(region->fd(), 100, 4096).code(), Errc::kInvalidArgument);
  EXPECT_EQ(client.name(region->fd(), 0, 0).code(), Errc::kInvalidArgument);
  const std::string path = "/proc/self/fd/" + std::to_string(region->fd());
  const int read_only = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_EQ(client.name(read_only, 0, 4096).code(), Errc::kInvalidArgument);
  ::close(read_only);

  // A named memfd cannot be shrunk any more (that would make mappings fault).
  auto name = client.name(*region);
  ASSERT_TRUE(name);
  EXPECT_NE(::ftruncate(region->fd(), 4096), 0);

  // Transfer range checks, overlap and arithmetic overflow.
  auto t = client.transfer(*name, *name, CopyRange{0, 100, 200});
  ASSERT_TRUE(t);
  EXPECT_EQ(t->wait().code(), Errc::kInvalidArgument);
  t = client.transfer(*name, *name, CopyRange{~uint64_t{0} - 10, 0, 20});
  ASSERT_TRUE(t);
  EXPECT_EQ(t->wait().code(), Errc::kOutOfRange);
  std::vector<CopyRange> none;
  t = client.transfer(*name, *name, none);
  ASSERT_TRUE(t);
  auto zero = t->wait();
  ASSERT_TRUE(zero);
  EXPECT_EQ(*zero, 0u);
  EXPECT_TRUE(daemon_.alive());
}

// bypassd embeds the service: the host is a domain over a socket pair, and device images are
// transfer endpoints.
class PatternImage : public ImageEndpoint {
 public:
  explicit PatternImage(uint64_t size) : pixels_(size) {}
  uint64_t size() const override { return pixels_.size(); }
  // Not linearly mapped: every access goes through read()/write(), like a tiled image would.
  Result<void> read(uint64_t offset, std::span<std::byte> dst) override {
    if (fail_reads) return make_error(Errc::kIo, "device lost");
    std::memcpy(dst.data(), pixels_.data() + offset, dst.size());
    return {};
  }
  Result<void> write(uint64_t offset, std::span<const std::byte> src) override {
    std::memcpy(pixels_.data() + offset, src.data(), src.size());
    return {};
  }
  std::vector<std::byte> pixels_;
  std::atomic<bool> fail_reads{false};
};

// A service at max_domains refuses one more domain at its registration (kBusy, no thread
// started for it), and takes a new one once a domain left: a client that opens connections in a
// loop cannot exhaust the service's threads.
TEST(EmbeddedService, DomainsBeyondTheLimitAreRefusedAtRegistration) {
  char dir_template[] = "/tmp/memshare-limit-XXXXXX";
  const std::string dir = ::mkdtemp(dir_template);
  const std::string socket = dir + "/memshare.sock";
  ServiceOptions options;
  options.max_domains = 3;
  Service service(options);
  ASSERT_TRUE(service.listen(socket));
  std::vector<Client> clients;
  for (int i = 0; i < 3; ++i) {
    auto client = Client::connect(socket, "member");
    ASSERT_TRUE(client) << client.error().message;
    clients.push_back(std::move(*client));
  }
  auto extra = Client::connect(socket, "extra");
  ASSERT_FALSE(extra);
  EXPECT_EQ(extra.code(), Errc::kBusy);
  EXPECT_NE(extra.error().message.find("its limit"), std::string::npos) << extra.error().message;
  EXPECT_EQ(service.stats().domains, 3u);
  clients.pop_back();
  for (int i = 0; i < 200 && service.stats().domains != 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto again = Client::connect(socket, "again");
  EXPECT_TRUE(again) << again.error().message;
  service.stop();
  std::filesystem::remove_all(dir);
}

TEST(EmbeddedService, HostImageReadbackAndUploadThroughTransfers) {
  ServiceOptions options;
  options.chunk_bytes = 64 * 1024;
  Service service(options);
  auto host = service.connect_local("host");
  ASSERT_TRUE(host) << host.error().message;
  auto pair = base::socket_pair(SOCK_SEQPACKET);
  ASSERT_TRUE(pair);
  base::UniqueFd guest_end = std::move(pair->first);
  base::UniqueFd service_end = std::move(pair->second);
  auto guest_id = service.adopt(std::move(service_end));
  ASSERT_TRUE(guest_id);
  auto guest = Client::adopt(std::move(guest_end), "guest");
  ASSERT_TRUE(guest);
  EXPECT_EQ(guest->domain(), *guest_id);

  auto image = std::make_shared<PatternImage>(1 * kMiB);
  test::fill_pattern(image->pixels_.data(), image->pixels_.size(), 5);
  auto image_name = service.name_image(host->domain(), image);
  ASSERT_TRUE(image_name);
  ASSERT_TRUE(service.grant(*image_name, guest->domain(), Access::kReadWrite));
  EXPECT_EQ(guest->map(*image_name, Access::kRead).code(), Errc::kInvalidArgument);

  auto surface = Region::create(1 * kMiB);
  ASSERT_TRUE(surface);
  auto surface_name = guest->name(*surface);
  ASSERT_TRUE(surface_name);
  // Readback: image -> guest memory.
  auto readback = guest->transfer(*image_name, *surface_name, CopyRange{0, 0, kMiB});
  ASSERT_TRUE(readback);
  auto got = readback->wait();
  ASSERT_TRUE(got) << got.error().message;
  EXPECT_EQ(*got, kMiB);
  EXPECT_EQ(std::memcmp(surface->data(), image->pixels_.data(), kMiB), 0);
  // Upload: guest memory -> image.
  std::memset(surface->data(), 0x99, 4096);
  auto upload = guest->transfer(*surface_name, *image_name, CopyRange{0, 8192, 4096});
  ASSERT_TRUE(upload);
  ASSERT_TRUE(upload->wait());
  EXPECT_EQ(image->pixels_[8192 + 17], std::byte{0x99});
  // A failing device reports the endpoint's error through the completion.
  image->fail_reads = true;
  auto broken = guest->transfer(*image_name, *surface_name, CopyRange{0, 0, kMiB});
  ASSERT_TRUE(broken);
  auto status = broken->wait();
  EXPECT_EQ(status.code(), Errc::kIo);
  EXPECT_NE(status.error().message.find("device lost"), std::string::npos);

  // The host ends the guest's session: its names are revoked for the host.
  auto guest_region = Region::create(4096);
  ASSERT_TRUE(guest_region);
  auto guest_name = guest->name(*guest_region);
  ASSERT_TRUE(guest_name);
  ASSERT_TRUE(guest->grant(*guest_name, host->domain(), Access::kRead));
  auto host_view = host->map(*guest_name, Access::kRead);
  ASSERT_TRUE(host_view);
  service.end_domain(guest->domain());
  EXPECT_TRUE(host_view->revoked());
  EXPECT_EQ(host->map(*guest_name, Access::kRead).code(), Errc::kDomainGone);
  EXPECT_EQ(guest->name(*guest_region).code(), Errc::kDisconnected);
  const ServiceStats stats = service.stats();
  EXPECT_EQ(stats.domains, 1u);
  EXPECT_GE(stats.transfers, 3u);
}

}  // namespace
}  // namespace bypass::memshare
