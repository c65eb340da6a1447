// VM queues against a real vmqd process: ordering, page ownership moving without copies,
// lazy versus immediate delivery, length query, backpressure, dead peers, introductions.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "bypass/base/unique_fd.h"
#include "bypass/transport/session.h"
#include "helpers.h"

using namespace bypass::vmqueue;
using namespace std::chrono_literals;
using vmq_test::BrokerProcess;
using vmq_test::filled;
using vmq_test::looks_filled;

namespace {

struct Pair {
  Domain a;
  Domain b;
  Identity a_id;  // as b sees it
  Identity b_id;  // as a sees it
};

// Two domains in this process, introduced to each other. Introductions are mutual, so the two
// introduce() calls run on two threads.
Pair make_pair(const BrokerProcess& broker, QueueOptions b_options = {}, QueueOptions a_options = {}) {
  auto a = broker.connect("alpha", a_options);
  auto b = broker.connect("beta", b_options);
  EXPECT_TRUE(a.ok()) << to_string(a.code());
  EXPECT_TRUE(b.ok()) << to_string(b.code());
  Result<Identity> a_sees = make_error(Errc::kInvalid);
  std::thread t([&] { a_sees = a->introduce("beta", 5s); });
  auto b_sees = b->introduce("alpha", 5s);
  t.join();
  EXPECT_TRUE(a_sees.ok());
  EXPECT_TRUE(b_sees.ok());
  return Pair{std::move(*a), std::move(*b), *b_sees, *a_sees};
}

}  // namespace

TEST(VmQueue, IdentityExchangeUsesHostCredentials) {
  BrokerProcess broker;
  auto p = make_pair(broker);
  EXPECT_EQ(p.b_id.name, "beta");
  EXPECT_EQ(p.a_id.name, "alpha");
  EXPECT_EQ(p.b_id.pid, ::getpid());  // SO_PEERCRED of beta's connection
  EXPECT_EQ(p.a_id.id, p.a.self().id);
  EXPECT_NE(p.a_id.id, p.b_id.id);
  // A second domain may not take a live name.
  EXPECT_EQ(broker.connect("alpha").code(), Errc::kNameTaken);
  EXPECT_EQ(broker.connect("bad name!").code(), Errc::kInvalid);
}

TEST(VmQueue, OnlyIntroducedQueuesCanBeSentTo) {
  BrokerProcess broker;
  auto a = broker.connect("a");
  auto b = broker.connect("b");
  ASSERT_TRUE(a.ok() && b.ok());
  auto pages = filled(*a, 1, 7);
  EXPECT_EQ(a->send(b->self().id, std::move(pages), 10), Errc::kNotIntroduced);
  // Refused: the pages are still ours and still mapped.
  ASSERT_TRUE(pages);
  EXPECT_TRUE(looks_filled(pages.bytes(), 7));
  // A one-sided introduction does not complete.
  EXPECT_EQ(a->introduce("b", 100ms).code(), Errc::kTimedOut);
  EXPECT_EQ(b->pending(), 0u);
}

TEST(VmQueue, MessagesArriveInOrderWithTheirPayload) {
  BrokerProcess broker;
  auto p = make_pair(broker, QueueOptions{.capacity = 256});
  constexpr int kMessages = 200;
  for (int i = 0; i < kMessages; ++i) {
    size_t count = 1 + i % 5;
    auto pages = filled(p.a, count, static_cast<uint8_t>(i));
    ASSERT_EQ(p.a.send(p.b_id.id, std::move(pages), count * 4096 - i, {.tag = uint32_t(i)}), Errc::kOk);
  }
  EXPECT_EQ(p.b.pending(), size_t(kMessages));
  for (int i = 0; i < kMessages; ++i) {
    auto m = p.b.recv(1s);
    ASSERT_TRUE(m.ok()) << to_string(m.code());
    EXPECT_EQ(m->tag, uint32_t(i));
    EXPECT_EQ(m->sender, p.a_id.id);
    EXPECT_EQ(m->pages.count(), size_t(1 + i % 5));
    EXPECT_EQ(m->length, m->pages.count() * 4096 - i);
    EXPECT_TRUE(looks_filled(m->pages.bytes(), static_cast<uint8_t>(i)));
  }
  EXPECT_EQ(p.b.pending(), 0u);
}

// One send_batch() of 200 messages, two of them refused: the others arrive in order with their
// payload, the refused ones are still the sender's, mapped where they were, same bytes.
TEST(VmQueue, ABatchArrivesInOrderAndGivesBackWhatWasRefused) {
  BrokerProcess broker;
  auto p = make_pair(broker, QueueOptions{.capacity = 256});
  constexpr int kMessages = 200;
  std::vector<Outgoing> out;
  for (int i = 0; i < kMessages; ++i) {
    const size_t count = 1 + i % 5;
    out.push_back(Outgoing{.peer = p.b_id.id,
                           .pages = filled(p.a, count, static_cast<uint8_t>(i)),
                           .length = count * 4096 - i,
                           .tag = uint32_t(i)});
  }
  out[70].peer = 999'999;      // nobody we were introduced to
  out[140].length = 6 * 4096;  // more than its pages hold
  std::byte* refused_at = out[70].pages.data();
  EXPECT_EQ(p.a.send_batch(out), size_t(kMessages - 2));
  for (int i = 0; i < kMessages; ++i) {
    if (i == 70 || i == 140) continue;
    EXPECT_EQ(out[i].result, Errc::kOk) << i;
    EXPECT_FALSE(out[i].pages) << i;
  }
  EXPECT_EQ(out[70].result, Errc::kNotIntroduced);
  EXPECT_EQ(out[140].result, Errc::kInvalid);
  ASSERT_TRUE(out[70].pages && out[140].pages);
  EXPECT_EQ(out[70].pages.data(), refused_at);
  EXPECT_TRUE(looks_filled(out[70].pages.bytes(), 70));
  EXPECT_TRUE(looks_filled(out[140].pages.bytes(), 140));
  EXPECT_EQ(p.b.pending(), size_t(kMessages - 2));
  for (int i = 0; i < kMessages; ++i) {
    if (i == 70 || i == 140) continue;
    auto m = p.b.recv(1s);
    ASSERT_TRUE(m.ok()) << to_string(m.code());
    EXPECT_EQ(m->tag, uint32_t(i));
    EXPECT_EQ(m->length, m->pages.count() * 4096 - i);
    EXPECT_TRUE(looks_filled(m->pages.bytes(), static_cast<uint8_t>(i)));
  }
  // What was refused can still be sent.
  EXPECT_EQ(p.a.send(p.b_id.id, std::move(out[70].pages), 4096, {.tag = 70}), Errc::kOk);
  EXPECT_EQ(p.b.recv(1s)->tag, 70u);
}

// A batch into a queue of 4: without waiting, 4 go and the rest come back; with a timeout, the
// same after it; waiting for ever, all of them once the receiver reads.
TEST(VmQueue, ABatchIntoAFullQueueGivesBackWhatDidNotFit) {
  BrokerProcess broker;
  auto p = make_pair(broker, QueueOptions{.capacity = 4});
  auto batch = [&](int first) {
    std::vector<Outgoing> out;
    for (int i = first; i < first + 10; ++i)
      out.push_back(
          Outgoing{.peer = p.b_id.id, .pages = filled(p.a, 1, uint8_t(i)), .length = 4096, .tag = uint32_t(i)});
    return out;
  };
  auto out = batch(0);
  EXPECT_EQ(p.a.send_batch(out, 0ms), 4u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(out[i].result, i < 4 ? Errc::kOk : Errc::kFull) << i;
    if (i >= 4) {
      EXPECT_TRUE(out[i].pages && looks_filled(out[i].pages.bytes(), uint8_t(i))) << i;
    }
  }
  auto later = batch(10);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(p.a.send_batch(later, 100ms), 0u);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 100ms);
  for (auto& m : later) EXPECT_TRUE(m.result == Errc::kFull && m.pages);
  // The receiver reads 4, then 10: the blocking batch goes as room appears, in order.
  std::thread receiver([&] {
    for (int i = 0; i < 14; ++i) {
      auto m = p.b.recv(5s);
      ASSERT_TRUE(m.ok()) << to_string(m.code());
      EXPECT_EQ(m->tag, uint32_t(i < 4 ? i : i + 6));  // 0-3, then 10-19
      EXPECT_TRUE(looks_filled(m->pages.bytes(), uint8_t(m->tag)));
    }
  });
  EXPECT_EQ(p.a.send_batch(later), 10u);
  receiver.join();
  EXPECT_EQ(p.b.pending(), 0u);
}

// The sender runs in a child process: it records the physical frames behind its pages, sends
// them, and checks it lost the mapping. The receiver must see the very same frames.
static void check_pages_move_without_copy(PageSize size, size_t count, std::vector<std::string> broker_args) {
  BrokerProcess broker(std::move(broker_args));
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  // The sender stays alive until the receiver has been introduced to it: introducing oneself
  // to a domain that already left fails (by design), so an early exit would make this racy.
  int gofd[2];
  ASSERT_EQ(::pipe(gofd), 0);
  pid_t child = ::fork();
  if (child == 0) {
    ::close(pipefd[0]);
    ::close(gofd[1]);
    auto d = broker.connect("sender");
    if (!d) ::_exit(10);
    auto peer = d->introduce("receiver", 10s);
    if (!peer) ::_exit(11);
    auto pages = d->alloc(count, size);
    if (!pages) ::_exit(12);
    std::vector<uint64_t> frames;
    size_t step = 4096;
    for (size_t off = 0; off < pages->bytes().size(); off += step) {
      std::memset(pages->data() + off, (0x5a ^ int(off / step)) & 0xff, 64);
      frames.push_back(vmq_test::page_frame_number(pages->data() + off));
    }
    void* old = pages->data();
    size_t len = pages->bytes().size();
    if (d->send(peer->id, std::move(*pages), len) != Errc::kOk) ::_exit(13);
    // The pages are gone from this process: the range is unmapped or an inaccessible reservation.
    uint64_t lost = vmq_test::unreachable(old, len) ? 1 : 0;
    uint64_t n = frames.size();
    if (::write(pipefd[1], &lost, sizeof lost) != sizeof lost) ::_exit(14);
    if (::write(pipefd[1], &n, sizeof n) != sizeof n) ::_exit(14);
    if (::write(pipefd[1], frames.data(), n * 8) != ssize_t(n * 8)) ::_exit(14);
    char go;
    if (::read(gofd[0], &go, 1) < 0) ::_exit(15);  // EOF (0) is fine: the receiver is done
    ::_exit(0);
  }
  ::close(pipefd[1]);
  ::close(gofd[0]);
  auto d = broker.connect("receiver");
  ASSERT_TRUE(d.ok());
  auto peer = d->introduce("sender", 10s);
  ::close(gofd[1]);  // the sender may leave now
  ASSERT_TRUE(peer.ok()) << to_string(peer.code()) << "; sender exit status " << vmq_test::wait_exit(child);
  auto m = d->recv(10s);
  ASSERT_TRUE(m.ok()) << to_string(m.code());
  uint64_t lost = 0, n = 0;
  ASSERT_EQ(::read(pipefd[0], &lost, sizeof lost), ssize_t(sizeof lost));
  ASSERT_EQ(::read(pipefd[0], &n, sizeof n), ssize_t(sizeof n));
  std::vector<uint64_t> frames(n);
  ASSERT_EQ(::read(pipefd[0], frames.data(), n * 8), ssize_t(n * 8));
  ::close(pipefd[0]);
  EXPECT_EQ(vmq_test::wait_exit(child), 0);
  EXPECT_EQ(lost, 1u) << "sender still maps the pages it sent";
  ASSERT_EQ(m->pages.bytes().size(), n * 4096);
  if (frames[0] == 0) GTEST_SKIP() << "pagemap hides frame numbers (not root?)";
  for (size_t i = 0; i < n; ++i) {
    std::byte* at = m->pages.data() + i * 4096;
    EXPECT_EQ(std::to_integer<int>(at[0]), (0x5a ^ int(i)) & 0xff) << "page " << i;
    EXPECT_EQ(vmq_test::page_frame_number(at), frames[i]) << "page " << i << " was copied, not moved";
  }
}

TEST(VmQueue, SmallPagesChangeOwnerWithoutCopy) { check_pages_move_without_copy(PageSize::k4K, 8, {}); }

TEST(VmQueue, HugePagesChangeOwnerWithoutCopy) {
  vmq_test::HugePageReserve reserve(4);
  check_pages_move_without_copy(PageSize::k2M, 2, {"--pages-2m", "4"});
}

TEST(VmQueue, HugePagesFallBackWithoutHugetlb) {
  check_pages_move_without_copy(PageSize::k2M, 1, {"--pages-2m", "2", "--no-hugetlb"});
}

TEST(VmQueue, ImmediateIsVisibleAtOnceLazyWaitsForFlush) {
  BrokerProcess broker;
  // A long lazy delay, so only the flush can deliver in this test.
  auto p = make_pair(broker, QueueOptions{.capacity = 16, .lazy_delay = 10s});
  ASSERT_EQ(p.a.send(p.b_id.id, filled(p.a, 1, 1), 4096, {.tag = 1, .delivery = Delivery::kImmediate}), Errc::kOk);
  EXPECT_EQ(p.b.pending(), 1u);  // enqueued before the send returned
  ASSERT_EQ(p.a.send(p.b_id.id, filled(p.a, 1, 2), 4096, {.tag = 2, .delivery = Delivery::kLazy}), Errc::kOk);
  ASSERT_EQ(p.a.send(p.b_id.id, filled(p.a, 1, 3), 4096, {.tag = 3, .delivery = Delivery::kLazy}), Errc::kOk);
  EXPECT_EQ(p.b.pending(), 1u);
  auto m = p.b.recv(0ms);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->tag, 1u);
  EXPECT_EQ(p.b.recv(50ms).code(), Errc::kTimedOut);
  ASSERT_EQ(p.a.flush(), Errc::kOk);
  EXPECT_EQ(p.b.pending(), 2u);
  EXPECT_EQ(p.b.recv(0ms)->tag, 2u);
  EXPECT_EQ(p.b.recv(0ms)->tag, 3u);
  // An immediate send is a flush point: lazy messages before it arrive before it.
  ASSERT_EQ(p.a.send(p.b_id.id, filled(p.a, 1, 4), 4096, {.tag = 4, .delivery = Delivery::kLazy}), Errc::kOk);
  ASSERT_EQ(p.a.send(p.b_id.id, filled(p.a, 1, 5), 4096, {.tag = 5, .delivery = Delivery::kImmediate}), Errc::kOk);
  EXPECT_EQ(p.b.pending(), 2u);
  EXPECT_EQ(p.b.recv(0ms)->tag, 4u);
  EXPECT_EQ(p.b.recv(0ms)->tag, 5u);
}

TEST(VmQueue, LazyMessagesArriveAfterTheBoundedDelayWithoutFlush) {
  BrokerProcess broker;
  // The queue defaults to lazy delivery; the sender does not choose.
  auto p = make_pair(broker, QueueOptions{.capacity = 16, .default_delivery = Delivery::kLazy, .lazy_delay = 50ms});
  auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(p.a.send(p.b_id.id, filled(p.a, 2, 9), 8192, {.tag = 9}), Errc::kOk);
  auto m = p.b.recv(10s);  // no flush: only the broker's timer can deliver it
  ASSERT_TRUE(m.ok()) << to_string(m.code());
  EXPECT_EQ(m->tag, 9u);
  EXPECT_TRUE(looks_filled(m->data(), 9));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 40ms);  // not delivered before the delay
  // A per-message choice overrides the queue's default.
  ASSERT_EQ(p.a.send(p.b_id.id, filled(p.a, 1, 10), 1, {.tag = 10, .delivery = Delivery::kImmediate}), Errc::kOk);
  EXPECT_EQ(p.b.pending(), 1u);
}

TEST(VmQueue, ParkedSendBehindLazyMessagesDoesNotStallTheBroker) {
  // Capacity 2, both slots promised to lazy messages, a third lazy send parked: the broker must
  // sleep until the lazy timer delivers, not spin on the ring's free slots (which the parked
  // send may not take) and never reach its timer. The old broker delivered only when the
  // parked send gave up, after its whole timeout.
  BrokerProcess broker;
  auto p = make_pair(broker, QueueOptions{.capacity = 2, .default_delivery = Delivery::kLazy, .lazy_delay = 50ms});
  const auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(p.a.send(p.b_id.id, filled(p.a, 1, 1), 4096, {.tag = 1}), Errc::kOk);
  ASSERT_EQ(p.a.send(p.b_id.id, filled(p.a, 1, 2), 4096, {.tag = 2}), Errc::kOk);
  Errc third = Errc::kInvalid;
  std::thread sender([&] { third = p.a.send(p.b_id.id, filled(p.a, 1, 3), 4096, {.tag = 3, .timeout = 3s}); });
  std::vector<uint32_t> tags;
  for (int i = 0; i < 3; ++i) {
    auto m = p.b.recv(5s);
    if (!m.ok()) {
      ADD_FAILURE() << "message " << i + 1 << ": " << to_string(m.code());
      break;
    }
    tags.push_back(m->tag);
  }
  sender.join();
  EXPECT_EQ(tags, (std::vector<uint32_t>{1, 2, 3}));
  EXPECT_EQ(third, Errc::kOk);
  // Two lazy delays and the hand-offs; the old broker needed the parked send's full 3 s.
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1500ms);
}

// introduce() that times out withdraws its request: 100 of them to domains that never come
// leave nothing behind at the broker (which keeps at most 64 waiting), and a real introduction
// still completes.
TEST(VmQueue, TimedOutIntroductionsAreWithdrawn) {
  BrokerProcess broker;
  auto a = broker.connect("alpha");
  ASSERT_TRUE(a.ok());
  for (int i = 0; i < 100; ++i) {
    auto r = a->introduce("nobody-" + std::to_string(i), 5ms);
    ASSERT_FALSE(r.ok());
    ASSERT_EQ(r.code(), Errc::kTimedOut) << i;
  }
  auto b = broker.connect("beta");
  ASSERT_TRUE(b.ok());
  Result<Identity> a_sees = make_error(Errc::kInvalid);
  std::thread t([&] { a_sees = a->introduce("beta", 5s); });
  auto b_sees = b->introduce("alpha", 5s);
  t.join();
  ASSERT_TRUE(a_sees.ok()) << to_string(a_sees.code());
  ASSERT_TRUE(b_sees.ok()) << to_string(b_sees.code());
  EXPECT_EQ(a_sees->name, "beta");
}

// Clients that connect to vmqd and say nothing: each handshake waits on a thread of its own,
// so two domains' messages flow meanwhile (when vmqd read hellos on its event loop, each silent
// client stopped everybody for its 1 s timeout: these 8 would have taken 8 s); past 16 such
// clients at once a connection is refused at once, and once they are gone a domain connects.
TEST(VmQueue, ClientsThatSayNothingHoldUpNobody) {
  BrokerProcess broker;
  auto p = make_pair(broker);
  auto silent = [&] {
    bypass::base::UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, broker.socket().c_str(), sizeof addr.sun_path - 1);
    EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    return fd;
  };
  std::vector<bypass::base::UniqueFd> quiet;
  for (int i = 0; i < 8; ++i) quiet.push_back(silent());
  std::this_thread::sleep_for(50ms);  // vmqd has accepted them
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(p.a.send(p.b_id.id, filled(p.a, 1, uint8_t(i)), 4096, {.tag = uint32_t(i)}), Errc::kOk);
    auto m = p.b.recv(5s);
    ASSERT_TRUE(m.ok()) << to_string(m.code());
    EXPECT_EQ(m->tag, uint32_t(i));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 500ms);
  // 16 handshakes waiting: the next connection is refused, not kept.
  for (int i = 0; i < 8; ++i) quiet.push_back(silent());
  std::this_thread::sleep_for(50ms);
  auto refused = Domain::connect(broker.socket(), "gamma");
  EXPECT_FALSE(refused.ok());
  // The silent ones time out (1 s); then a domain connects.
  quiet.clear();
  std::this_thread::sleep_for(1200ms);
  auto c = broker.connect("gamma");
  EXPECT_TRUE(c.ok()) << to_string(c.code());
}

// vmqd --max-domains 2: a third domain is refused with kFull naming the limit, and once one of
// the two left, a new one connects.
TEST(VmQueue, DomainsBeyondTheLimitAreRefused) {
  BrokerProcess broker({"--max-domains", "2"});
  auto a = broker.connect("alpha");
  auto b = broker.connect("beta");
  ASSERT_TRUE(a.ok() && b.ok());
  auto c = broker.connect("gamma");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.code(), Errc::kFull);
  EXPECT_NE(c.message().find("--max-domains"), std::string::npos) << c.message();
  a = make_error(Errc::kInvalid);  // alpha leaves
  Result<Domain> again = make_error(Errc::kInvalid);
  for (int i = 0; i < 100 && !again.ok(); ++i) {
    again = broker.connect("gamma");
    if (!again.ok()) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(again.ok()) << again.message();
}

TEST(VmQueue, LengthQueryAndTimedWait) {
  BrokerProcess broker;
  auto p = make_pair(broker);
  EXPECT_EQ(p.b.pending(), 0u);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(p.b.recv(100ms).code(), Errc::kTimedOut);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 100ms);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(p.a.send(p.b_id.id, filled(p.a, 1, 0), 1), Errc::kOk);
  EXPECT_EQ(p.b.pending(), 5u);
  ASSERT_TRUE(p.b.recv(0ms).ok());
  ASSERT_TRUE(p.b.recv(0ms).ok());
  EXPECT_EQ(p.b.pending(), 3u);
  // A blocked receiver is woken by a send from another thread.
  std::thread sender([&] {
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(p.a.send(p.b_id.id, filled(p.a, 1, 0), 1, {.tag = 77}), Errc::kOk);
  });
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(p.b.recv(0ms).ok());
  auto m = p.b.recv(10s);
  sender.join();
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->tag, 77u);
}

TEST(VmQueue, FullQueueAppliesBackpressure) {
  BrokerProcess broker;
  auto p = make_pair(broker, QueueOptions{.capacity = 4});
  for (int i = 0; i < 4; ++i) ASSERT_EQ(p.a.send(p.b_id.id, filled(p.a, 1, i), 4096, {.tag = uint32_t(i)}), Errc::kOk);
  auto extra = filled(p.a, 1, 42);
  EXPECT_EQ(p.a.send(p.b_id.id, std::move(extra), 4096, {.tag = 4, .timeout = 0ms}), Errc::kFull);
  EXPECT_EQ(p.a.send(p.b_id.id, std::move(extra), 4096, {.tag = 4, .timeout = 50ms}), Errc::kFull);
  ASSERT_TRUE(extra);
  EXPECT_TRUE(looks_filled(extra.bytes(), 42));  // refused pages are ours again, same bytes
  // Lazy messages count too: the queue promised room for them.
  EXPECT_EQ(p.a.send(p.b_id.id, std::move(extra), 4096, {.tag = 4, .delivery = Delivery::kLazy, .timeout = 0ms}),
            Errc::kFull);
  // A blocking send waits until the receiver makes room.
  std::thread receiver([&] {
    std::this_thread::sleep_for(100ms);
    auto m = p.b.recv(1s);
    EXPECT_TRUE(m.ok());
    EXPECT_EQ(m->tag, 0u);
  });
  EXPECT_EQ(p.a.send(p.b_id.id, std::move(extra), 4096, {.tag = 4}), Errc::kOk);
  receiver.join();
  EXPECT_FALSE(extra);
  EXPECT_EQ(p.b.pending(), 4u);
  for (uint32_t i = 1; i <= 4; ++i) EXPECT_EQ(p.b.recv(0ms)->tag, i);
}

TEST(VmQueue, DeadPeerIsAnErrorNotAHang) {
  BrokerProcess broker;
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  if (child == 0) {
    auto d = broker.connect("victim", QueueOptions{.capacity = 2});
    if (!d) ::_exit(10);
    auto peer = d->introduce("survivor", 10s);
    if (!peer) ::_exit(11);
    auto pages = d->alloc(1);
    if (!pages) ::_exit(12);
    std::memcpy(pages->data(), "last words", 11);
    if (d->send(peer->id, std::move(*pages), 11, {.tag = 99}) != Errc::kOk) ::_exit(13);
    char c = 'r';
    if (::write(ready[1], &c, 1) != 1) ::_exit(14);
    ::pause();  // killed by the parent
    ::_exit(0);
  }
  ::close(ready[1]);
  auto d = broker.connect("survivor");
  ASSERT_TRUE(d.ok());
  auto victim = d->introduce("victim", 10s);
  ASSERT_TRUE(victim.ok());
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  // Fill the victim's queue, then block on it while it dies.
  ASSERT_EQ(d->send(victim->id, filled(*d, 1, 0), 1), Errc::kOk);
  ASSERT_EQ(d->send(victim->id, filled(*d, 1, 0), 1), Errc::kOk);
  std::thread killer([&] {
    std::this_thread::sleep_for(100ms);
    ::kill(child, SIGKILL);
  });
  EXPECT_EQ(d->send(victim->id, filled(*d, 1, 0), 1), Errc::kPeerDead);
  killer.join();
  EXPECT_EQ(vmq_test::wait_exit(child), -SIGKILL);
  // What it sent before dying still arrives, then its death.
  auto m = d->recv(5s);
  ASSERT_TRUE(m.ok()) << to_string(m.code());
  EXPECT_EQ(m->tag, 99u);
  EXPECT_STREQ(reinterpret_cast<const char*>(m->data().data()), "last words");
  EXPECT_EQ(d->recv(5s).code(), Errc::kPeerDead);
  ASSERT_EQ(d->dead_peers().size(), 1u);
  EXPECT_EQ(d->dead_peers()[0].name, "victim");
  EXPECT_EQ(d->send(victim->id, filled(*d, 1, 0), 1), Errc::kPeerDead);
  EXPECT_EQ(d->recv(50ms).code(), Errc::kTimedOut);
}

TEST(VmQueue, DeadBrokerIsAnErrorNotAHang) {
  BrokerProcess broker;
  auto p = make_pair(broker);
  auto pages = filled(p.a, 1, 0);
  std::thread killer([&] {
    std::this_thread::sleep_for(100ms);
    broker.kill_hard();
  });
  EXPECT_EQ(p.b.recv(-1ms).code(), Errc::kBrokerLost);
  killer.join();
  EXPECT_EQ(p.a.send(p.b_id.id, std::move(pages), 1), Errc::kBrokerLost);
  EXPECT_EQ(p.a.alloc(1).code(), Errc::kBrokerLost);
}

TEST(VmQueue, PagesOfADeadDomainReturnToThePool) {
  BrokerProcess broker({"--pages-4k", "64", "--pages-2m", "1", "--no-hugetlb"});
  {
    auto d = broker.connect("hog");
    ASSERT_TRUE(d.ok());
    auto all = d->alloc(64);
    ASSERT_TRUE(all.ok());
    auto other = broker.connect("starved");
    ASSERT_TRUE(other.ok());
    EXPECT_EQ(other->alloc(1).code(), Errc::kNoPages);
  }
  // The hog disconnected with its pages still held.
  for (int i = 0; i < 100; ++i) {
    auto d = broker.connect("after");
    ASSERT_TRUE(d.ok());
    if (d->alloc(64).ok()) return;
    std::this_thread::sleep_for(10ms);
  }
  FAIL() << "pages of a gone domain never came back";
}

// What a domain leaves in its pages must not reach the next domain given them: pages freed
// (`freed`) or held by a domain that disconnected come back zeroed.
void check_pages_come_back_zeroed(PageSize size, uint32_t count, bool freed, std::vector<std::string> args) {
  BrokerProcess broker(std::move(args));
  {
    auto victim = broker.connect("victim");
    ASSERT_TRUE(victim.ok());
    auto pages = victim->alloc(count, size);
    ASSERT_TRUE(pages.ok()) << to_string(pages.code());
    std::memset(pages->data(), 0xA5, pages->bytes().size());
    if (freed) {
      pages = make_error(Errc::kInvalid);  // the Pages go back to the broker
      // A round trip behind the free: the broker has handled it.
      ASSERT_TRUE(victim->alloc(1, PageSize::k4K).ok());
    }
  }
  // Every page of the pool, for another domain (retrying while the victim's end is handled).
  for (int i = 0; i < 200; ++i) {
    auto next = broker.connect("next");
    ASSERT_TRUE(next.ok());
    auto pages = next->alloc(count, size);
    if (!pages.ok()) {
      std::this_thread::sleep_for(10ms);
      continue;
    }
    const std::span<std::byte> bytes = pages->bytes();
    const size_t left = static_cast<size_t>(std::count(bytes.begin(), bytes.end(), std::byte{0xA5}));
    EXPECT_EQ(left, 0u) << "bytes the last owner wrote reached the next one";
    EXPECT_EQ(static_cast<size_t>(std::count(bytes.begin(), bytes.end(), std::byte{0})), bytes.size());
    return;
  }
  FAIL() << "the pages never came back to the pool";
}

TEST(VmQueue, FreedSmallPagesComeBackZeroed) {
  check_pages_come_back_zeroed(PageSize::k4K, 16, true, {"--pages-4k", "17", "--pages-2m", "1", "--no-hugetlb"});
}

TEST(VmQueue, SmallPagesOfADeadDomainComeBackZeroed) {
  check_pages_come_back_zeroed(PageSize::k4K, 16, false, {"--pages-4k", "16", "--pages-2m", "1", "--no-hugetlb"});
}

TEST(VmQueue, FreedHugePagesComeBackZeroed) {
  vmq_test::HugePageReserve reserve(2);
  check_pages_come_back_zeroed(PageSize::k2M, 2, true, {"--pages-4k", "1", "--pages-2m", "2"});
}

TEST(VmQueue, FreedFallbackHugePagesComeBackZeroed) {
  check_pages_come_back_zeroed(PageSize::k2M, 2, true, {"--pages-4k", "1", "--pages-2m", "2", "--no-hugetlb"});
}

TEST(VmQueue, BadArgumentsAreErrors) {
  BrokerProcess broker({"--pages-4k", "32", "--pages-2m", "1", "--no-hugetlb"});
  auto d = broker.connect("x");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->alloc(0).code(), Errc::kInvalid);
  EXPECT_EQ(d->alloc(33).code(), Errc::kNoPages);
  auto p = d->alloc(1);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(d->send(1, std::move(*p), 5000), Errc::kInvalid);  // longer than the pages
  EXPECT_EQ(d->introduce("x", 10ms).code(), Errc::kInvalid);   // itself
  EXPECT_EQ(Domain::connect("/nonexistent/socket", "y").code(), Errc::kBrokerLost);
  EXPECT_EQ(Domain::connect(broker.socket(), "z", QueueOptions{.capacity = 0}).code(), Errc::kInvalid);
}

TEST(VmQueue, SessionWithAnotherProtocolVersionIsRefused) {
  BrokerProcess broker;
  ASSERT_TRUE(broker.connect("probe").ok());  // the broker is up
  bypass::transport::Hello future{999, 0, "from-the-future"};
  auto channel =
      bypass::transport::connect(broker.socket(), future, bypass::transport::deadline_after(std::chrono::seconds(5)));
  ASSERT_FALSE(channel);
  EXPECT_EQ(channel.code(), bypass::transport::Status::kRefused);
  const std::string error = channel.error().message;
  EXPECT_NE(error.find("999"), std::string::npos) << error;  // the refusal names the versions
}
