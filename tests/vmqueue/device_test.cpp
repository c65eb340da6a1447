// VM queues through a VM device (vmqd --device), with the domains in processes of this machine
// that map the device file itself ("ivshmem:/path"), as a guest maps its ivshmem BAR: attach
// through a slot, pages moving owner by remapping the device, a process domain and a VM domain
// sharing the pools, and hostile or vanished VM domains (garbage in their rings, a heartbeat
// that stops, a device that is not one) ending only themselves. The same against two real
// QEMU guests: tests/vm/vmq_vm_test.py.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "../transport/test_util.h"
#include "bypass/transport/layout.h"
#include "bypass/transport/vm.h"
#include "device.h"
#include "helpers.h"

using namespace bypass::vmqueue;
using namespace std::chrono_literals;
using vmq_test::BrokerProcess;
using vmq_test::filled;
using vmq_test::looks_filled;

namespace {

std::string unique_device() {
  static int n = 0;
  return "/dev/shm/vmq-device-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

// vmqd serving a VM device (small pools), its stdout kept for the final statistics line. With
// `vms`, each of those VMs gets a control device of its own (2 slots; vmqd --vm NAME:PATH:2).
struct DeviceBroker {
  std::string device = unique_device();
  std::string out = device + ".out";
  std::vector<std::string> vms;
  std::vector<std::string> extra;
  BrokerProcess broker;
  explicit DeviceBroker(std::vector<std::string> vm_names = {}, std::vector<std::string> more = {})
      : vms(std::move(vm_names)), extra(std::move(more)), broker(arguments(), out) {}
  std::vector<std::string> arguments() const {
    std::vector<std::string> args = {"--device", device, "--pages-4k", "1024", "--pages-2m", "4", "--vm-slots", "4"};
    args.insert(args.end(), extra.begin(), extra.end());
    for (const std::string& vm : vms) {
      args.push_back("--vm");
      args.push_back(vm + ":" + control(vm) + ":2");
    }
    return args;
  }
  ~DeviceBroker() {
    broker.stop();
    ::unlink(device.c_str());
    ::unlink(out.c_str());
    for (const std::string& vm : vms) ::unlink(control(vm).c_str());
  }
  std::string control(const std::string& vm) const { return device + "-" + vm; }
  // The shared device, or what a domain in VM `vm` names: its control device and the pools.
  std::string endpoint(const std::string& vm = "") const {
    return vm.empty() ? "ivshmem:" + device : "ivshmem:" + control(vm) + "," + device;
  }
  // Attaches a VM domain (in VM `vm`, when given), retrying while vmqd starts.
  Result<Domain> attach(const std::string& name, QueueOptions o = {}, const std::string& vm = "") const {
    for (int i = 0;; ++i) {
      auto d = Domain::connect(endpoint(vm), name, o);
      if (d.ok() || d.code() != Errc::kBrokerLost || i == 200) return d;
      std::this_thread::sleep_for(20ms);
    }
  }
  // vmqd's last line, after it stopped.
  std::string stop_and_report() {
    broker.stop();
    std::ifstream in(out);
    std::string line, last;
    while (std::getline(in, line)) last = line;
    return last;
  }
};

void introduce(Domain& a, Domain& b) {
  Result<Identity> a_sees = make_error(Errc::kInvalid);
  std::thread t([&] { a_sees = a.introduce(b.self().name, 5s); });
  auto b_sees = b.introduce(a.self().name, 5s);
  t.join();
  ASSERT_TRUE(a_sees.ok()) << a_sees.message();
  ASSERT_TRUE(b_sees.ok()) << b_sees.message();
}

}  // namespace

TEST(VmQueueDevice, TwoVmDomainsMovePagesWithoutCopy) {
  DeviceBroker b;
  auto a = b.attach("vm-a");
  auto c = b.attach("vm-c");
  ASSERT_TRUE(a.ok()) << a.message();
  ASSERT_TRUE(c.ok()) << c.message();
  introduce(*a, *c);
  const Identity* sees = c->peer(a->self().id);
  ASSERT_NE(sees, nullptr);
  EXPECT_TRUE(sees->claimed);  // no SO_PEERCRED across a VM: what the guest said
  EXPECT_EQ(sees->pid, ::getpid());
  for (PageSize size : {PageSize::k4K, PageSize::k2M}) {
    const size_t count = size == PageSize::k4K ? 5 : 1;
    auto pages = filled(*a, count, 40, size);
    ASSERT_TRUE(pages);
    const uint64_t frame = vmq_test::page_frame_number(pages.data());
    std::byte* where = pages.data();
    ASSERT_EQ(a->send(c->self().id, std::move(pages), count * page_bytes(size) - 3), Errc::kOk);
    EXPECT_FALSE(pages);
    // The sender's range is gone (or an inaccessible reservation).
    EXPECT_TRUE(vmq_test::unreachable(where, count * page_bytes(size)));
    auto m = c->recv(5s);
    ASSERT_TRUE(m.ok()) << m.message();
    EXPECT_EQ(m->sender, a->self().id);
    EXPECT_EQ(m->length, count * page_bytes(size) - 3);
    EXPECT_TRUE(looks_filled(m->pages.bytes(), 40));
    // The very same page of the device, not a copy.
    if (frame != 0) {
      EXPECT_EQ(vmq_test::page_frame_number(m->pages.data()), frame);
    }
  }
}

TEST(VmQueueDevice, ProcessAndVmDomainsShareThePools) {
  DeviceBroker b;
  auto vm = b.attach("in-vm");
  ASSERT_TRUE(vm.ok()) << vm.message();
  auto proc = b.broker.connect("on-host");
  ASSERT_TRUE(proc.ok()) << proc.message();
  introduce(*vm, *proc);
  EXPECT_FALSE(vm->peer(proc->self().id)->claimed);  // the kernel's SO_PEERCRED
  ASSERT_EQ(proc->send(vm->self().id, filled(*proc, 3, 9), 3 * 4096), Errc::kOk);
  auto m = vm->recv(5s);
  ASSERT_TRUE(m.ok()) << m.message();
  EXPECT_TRUE(looks_filled(m->data(), 9));
  // And back, the very pages.
  ASSERT_EQ(vm->send(proc->self().id, std::move(m->pages), 3 * 4096), Errc::kOk);
  auto back = proc->recv(5s);
  ASSERT_TRUE(back.ok()) << back.message();
  EXPECT_TRUE(looks_filled(back->data(), 9));
}

TEST(VmQueueDevice, FreedPagesComeBackZeroedForTheNextVm) {
  DeviceBroker b;
  for (PageSize size : {PageSize::k4K, PageSize::k2M}) {
    const size_t count = size == PageSize::k4K ? 1024 : 4;  // the whole pool
    {
      auto victim = b.attach("vm-victim");
      ASSERT_TRUE(victim.ok()) << victim.message();
      auto pages = victim->alloc(count, size);
      ASSERT_TRUE(pages.ok()) << pages.message();
      std::memset(pages->data(), 0xA5, pages->bytes().size());
    }  // freed, then the domain leaves
    bool got = false;
    for (int i = 0; i < 200 && !got; ++i) {
      auto next = b.attach("vm-next");
      ASSERT_TRUE(next.ok()) << next.message();
      auto pages = next->alloc(count, size);
      if (!pages.ok()) {
        std::this_thread::sleep_for(10ms);
        continue;
      }
      got = true;
      const std::span<std::byte> bytes = pages->bytes();
      EXPECT_EQ(std::count(bytes.begin(), bytes.end(), std::byte{0}), static_cast<std::ptrdiff_t>(bytes.size()))
          << "bytes the last VM wrote reached the next one (" << page_bytes(size) << "-byte pages)";
    }
    EXPECT_TRUE(got) << "the pages never came back to the pool";
  }
}

namespace {

// Two VM domains of `b`, introduced to each other: the bystanders of a hostile domain.
std::optional<std::pair<Domain, Domain>> bystanders(const DeviceBroker& b) {
  auto a = b.attach("good-a");
  auto c = b.attach("good-c");
  if (!a.ok() || !c.ok()) return std::nullopt;
  introduce(*a, *c);
  return std::pair{std::move(*a), std::move(*c)};
}

// Pages from `a` reach `c` intact: the broker still serves them.
void expect_served(Domain& a, Domain& c, uint8_t seed) {
  ASSERT_EQ(a.send(c.self().id, filled(a, 2, seed), 8192), Errc::kOk);
  auto m = c.recv(5s);
  ASSERT_TRUE(m.ok()) << m.message();
  EXPECT_TRUE(looks_filled(m->data(), seed));
}

// Starts vmq_probe with `args` (its output in a file beside the device); probe_said() waits for
// it to exit 0 and returns the first line it printed.
pid_t start_probe(const DeviceBroker& b, std::vector<std::string> args) {
  args.insert(args.begin(), PROBE_PATH);
  return vmq_test::spawn(args, b.device + ".probe");
}
std::string probe_said(const DeviceBroker& b, pid_t probe) {
  EXPECT_EQ(vmq_test::wait_exit(probe, 30s), 0);
  std::ifstream said(b.device + ".probe");
  std::string line;
  std::getline(said, line);
  ::unlink((b.device + ".probe").c_str());
  return line;
}

}  // namespace

TEST(VmQueueDevice, GarbageInAVmDomainsRingEndsOnlyThatDomain) {
  DeviceBroker b;
  auto two = bystanders(b);
  ASSERT_TRUE(two);
  auto& [a, c] = *two;
  // The hostile domain is its own process (vmq_probe hostile): it corrupts its request ring.
  const std::string line = probe_said(b, start_probe(b, {"hostile", b.endpoint(), "evil"}));
  EXPECT_NE(line.find("the broker ended this domain"), std::string::npos) << line;
  // The others go on.
  expect_served(a, c, 77);
  const std::string report = b.stop_and_report();
  EXPECT_NE(report.find("1 sessions ended for protocol errors"), std::string::npos) << report;
}

// A domain that writes requests and never reads the answers: the broker stops reading it once
// it owes it wire::kMaxOwed answers beyond its reply ring, so it took a bounded number (without
// the bound it took every request, hundreds of thousands in 2 s, each answer kept in its
// memory), and everybody else is served meanwhile.
TEST(VmQueueDevice, ADomainThatNeverReadsItsRepliesIsNoLongerRead) {
  DeviceBroker b;
  auto two = bystanders(b);
  ASSERT_TRUE(two);
  auto& [a, c] = *two;
  const pid_t flood = start_probe(b, {"flood", b.endpoint(), "flood", "2"});
  std::this_thread::sleep_for(500ms);
  expect_served(a, c, 78);
  const std::string line = probe_said(b, flood);
  unsigned long long posted = 0;
  unsigned left = 0;
  ASSERT_EQ(std::sscanf(line.c_str(), "flood: posted %llu requests in 2 s, %u not taken", &posted, &left), 2) << line;
  // Taken: the reply ring's 128 answers and 128 owed; the ring holds the rest.
  EXPECT_LE(posted - left, 2u * 128u) << line;
  EXPECT_EQ(left, 128u) << line;
}

// A domain that asks for introductions to 1,000 domains that never come: the broker keeps 64
// waiting and refuses the rest (without the bound it kept every one, a name each, for ever).
TEST(VmQueueDevice, IntroductionsWaitingForPeersAreBounded) {
  DeviceBroker b;
  auto two = bystanders(b);
  ASSERT_TRUE(two);
  auto& [a, c] = *two;
  const std::string line = probe_said(b, start_probe(b, {"flood-introductions", b.endpoint(), "lonely", "1000"}));
  EXPECT_EQ(line, "flood-introductions: asked 1000, 936 answered, 936 refused");
  expect_served(a, c, 79);
}

TEST(VmQueueDevice, SilentVmDomainIsRemovedAndItsPagesReturn) {
  // The shared device's slots have no doorbells: only the heartbeat tells (in a VM's own control
  // device a process on this kernel holds its slot's doorbell socket, whose end tells at once:
  // the next test).
  DeviceBroker b;
  auto a = b.attach("survivor");
  ASSERT_TRUE(a.ok()) << a.message();
  // A domain that takes pages and dies without leaving: its heartbeat stops.
  pid_t mute = vmq_test::spawn({PROBE_PATH, "hold", b.endpoint(), "mute", "300"});
  ASSERT_EQ(vmq_test::wait_exit(mute, 30s), 0);
  // Its name is taken until the broker notices the silence (kGuestTimeout), then free again.
  const auto start = std::chrono::steady_clock::now();
  Result<Domain> again = make_error(Errc::kInvalid);
  for (;;) {
    again = Domain::connect(b.endpoint(), "mute");
    if (again.ok() || again.code() != Errc::kNameTaken || std::chrono::steady_clock::now() - start > 15s) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_TRUE(again.ok()) << again.message();
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, device::kGuestTimeout - 1s);
  introduce(*a, *again);
  ASSERT_EQ(a->send(again->self().id, filled(*a, 1, 3), 10), Errc::kOk);
  ASSERT_TRUE(again->recv(5s).ok());
  again = make_error(Errc::kInvalid);  // leaves: its pages go back too
  a = make_error(Errc::kInvalid);
  // Both names free again: vmqd has removed both (it looks every kServe), without a sleep that a
  // loaded machine could outlast.
  for (const char* name : {"mute", "survivor"}) {
    Result<Domain> probe = make_error(Errc::kInvalid);
    for (int i = 0; i < 500; ++i) {
      probe = Domain::connect(b.endpoint(), name);
      if (probe.ok() || probe.code() != Errc::kNameTaken) break;
      std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(probe.ok()) << probe.message();
  }
  const std::string report = b.stop_and_report();
  EXPECT_NE(report.find("1 VM domains silent"), std::string::npos) << report;
  EXPECT_NE(report.find(" 1028 pages free"), std::string::npos) << report;  // 1024 + 4: all of them
}

TEST(VmQueueDevice, AVmDomainWhoseDoorbellClosesIsRemovedAtOnce) {
  // The doorbell's stream lives as long as the guest's QEMU (here: the domain's own process,
  // which holds the socket): its end removes the domain at once, not after kGuestTimeout. Only
  // a VM's own control device has doorbells (the shared device's slots are every VM's).
  DeviceBroker b({"vma"});
  auto a = b.attach("survivor", {}, "vma");
  ASSERT_TRUE(a.ok()) << a.message();
  pid_t mute = vmq_test::spawn({PROBE_PATH, "hold", b.endpoint("vma"), "mute", "300"});
  ASSERT_EQ(vmq_test::wait_exit(mute, 30s), 0);
  const auto start = std::chrono::steady_clock::now();
  Result<Domain> again = make_error(Errc::kInvalid);
  for (;;) {
    again = Domain::connect(b.endpoint("vma"), "mute");
    if (again.ok() || again.code() != Errc::kNameTaken || std::chrono::steady_clock::now() - start > 15s) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(again.ok()) << again.message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, device::kGuestTimeout / 2);
  again = make_error(Errc::kInvalid);
  a = make_error(Errc::kInvalid);
  const std::string report = b.stop_and_report();
  EXPECT_NE(report.find("1 VM domains silent"), std::string::npos) << report;
  EXPECT_NE(report.find(" 1028 pages free"), std::string::npos) << report;
}

TEST(VmQueueDevice, AnIdleVmDomainSleepsOnItsDoorbellUntilAMessageComes) {
  DeviceBroker b({"vma"});
  auto a = b.attach("sleeper", {}, "vma");
  auto c = b.attach("sender", {}, "vma");
  ASSERT_TRUE(a.ok()) << a.message();
  ASSERT_TRUE(c.ok()) << c.message();
  introduce(*a, *c);
  // Polling, the waiting thread would nap some 2,000 times in the 400 ms; on the doorbell it
  // wakes once per liveness slice (50 ms), and once for the message.
  uint64_t switches = 0;
  bool got = false;
  std::thread waiter([&] {
    const uint64_t before = bypass::transport::testing::thread_switches();
    auto m = a->recv(10s);
    switches = bypass::transport::testing::thread_switches() - before;
    got = m.ok() && looks_filled(m->pages.bytes(), 7);
  });
  std::this_thread::sleep_for(400ms);
  ASSERT_EQ(c->send(a->self().id, filled(*c, 1, 7), 10), Errc::kOk);
  waiter.join();
  EXPECT_TRUE(got);
  EXPECT_LT(switches, 100u);
}

TEST(VmQueueDevice, PeerOfAStoppedVmDomainGetsPeerDead) {
  DeviceBroker b;
  auto a = b.attach("waiter");
  ASSERT_TRUE(a.ok()) << a.message();
  // A domain whose process stops (SIGSTOP, as a paused or killed VM looks to the broker): its
  // heartbeat stands still.
  pid_t frozen_pid = vmq_test::spawn({PROBE_PATH, "freeze", b.endpoint(), "frozen", "waiter"});
  auto frozen = a->introduce("frozen", 10s);
  ASSERT_TRUE(frozen.ok()) << frozen.message();
  const auto start = std::chrono::steady_clock::now();
  auto r = a->recv(15s);
  EXPECT_EQ(r.code(), Errc::kPeerDead) << r.message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, device::kGuestTimeout + 3s);
  ::kill(frozen_pid, SIGKILL);
  vmq_test::wait_exit(frozen_pid);
}

TEST(VmQueueDevice, BrokerGoneIsBrokerLost) {
  DeviceBroker b;
  auto a = b.attach("orphan");
  ASSERT_TRUE(a.ok());
  b.broker.kill_hard();
  const auto start = std::chrono::steady_clock::now();
  auto r = a->recv(15s);
  EXPECT_EQ(r.code(), Errc::kBrokerLost);
  EXPECT_LT(std::chrono::steady_clock::now() - start, device::kHostTimeout + 2s);
}

TEST(VmQueueDevice, NotADeviceIsOneClearError) {
  const std::string path = unique_device();
  {
    std::ofstream f(path);
    f << std::string(1 << 20, 'x');
  }
  auto d = Domain::connect("ivshmem:" + path, "lost");
  EXPECT_EQ(d.code(), Errc::kBrokerLost);
  EXPECT_NE(d.message().find("is not a VM-queue device"), std::string::npos) << d.message();
  // A queue larger than a slot holds.
  auto big = Domain::connect("ivshmem:" + path, "big", QueueOptions{.capacity = 1000});
  EXPECT_EQ(big.code(), Errc::kInvalid);
  ::unlink(path.c_str());
}

TEST(VmQueueDevice, AllSlotsTakenIsOneClearError) {
  DeviceBroker b;
  std::vector<Domain> held;
  for (int i = 0; i < 4; ++i) {
    auto d = b.attach("slot-" + std::to_string(i));
    ASSERT_TRUE(d.ok()) << d.message();
    held.push_back(std::move(*d));
  }
  auto fifth = Domain::connect(b.endpoint(), "fifth");
  EXPECT_EQ(fifth.code(), Errc::kNoPages);
  EXPECT_NE(fifth.message().find("slots"), std::string::npos) << fifth.message();
  // One leaves: its slot is free again.
  held.pop_back();
  Result<Domain> sixth = make_error(Errc::kInvalid);
  for (int i = 0; i < 100 && !sixth.ok(); ++i) {
    sixth = Domain::connect(b.endpoint(), "sixth");
    if (!sixth.ok()) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(sixth.ok()) << sixth.message();
}

TEST(VmQueueDevice, GarbageHelloIsRefusedAndAbandonedClaimsAreFreed) {
  DeviceBroker b;
  // A live domain first: vmqd is up, and must stay unharmed.
  auto a = b.attach("bystander");
  ASSERT_TRUE(a.ok()) << a.message();
  auto dev = bypass::transport::map_vm_device(b.endpoint(), device::kHeaderBytes);
  ASSERT_TRUE(dev.ok()) << dev.error().message;
  auto* h = reinterpret_cast<device::Header*>(dev->data());
  auto claim = [&]() -> device::Slot* {
    for (uint32_t i = 0; i < h->slot_count; ++i) {
      uint32_t expected = device::kSlotFree;
      if (h->slots[i].state.compare_exchange_strong(expected, device::kSlotClaimed)) {
        h->slots[i].generation.fetch_add(1);
        return &h->slots[i];
      }
    }
    return nullptr;
  };
  // A hello that is garbage: bytes everywhere, the version and magic right, a bad name.
  device::Slot* bad = claim();
  ASSERT_NE(bad, nullptr);
  std::memset(static_cast<void*>(&bad->hello), 0xff, sizeof bad->hello);
  bad->hello.magic = wire::kMagic;
  bad->hello.version = wire::kVersion;
  bad->state.store(device::kSlotRequested, std::memory_order_release);
  const auto start = std::chrono::steady_clock::now();
  while (bad->state.load(std::memory_order_acquire) == device::kSlotRequested &&
         std::chrono::steady_clock::now() - start < 5s)
    std::this_thread::sleep_for(1ms);
  EXPECT_EQ(bad->state.load(), device::kSlotRejected);
  EXPECT_EQ(bad->status, static_cast<uint32_t>(Errc::kInvalid));
  // A claim its guest never finished, and the refused slot never given back: both are freed
  // after the guest timeout.
  device::Slot* abandoned = claim();
  ASSERT_NE(abandoned, nullptr);
  const auto claimed_at = std::chrono::steady_clock::now();
  while ((abandoned->state.load() != device::kSlotFree || bad->state.load() != device::kSlotFree) &&
         std::chrono::steady_clock::now() - claimed_at < 10s)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(abandoned->state.load(), device::kSlotFree);
  EXPECT_EQ(bad->state.load(), device::kSlotFree);
  EXPECT_GE(std::chrono::steady_clock::now() - claimed_at, device::kGuestTimeout - 1s);
  // The bystander never noticed.
  auto self = b.attach("self-check");
  ASSERT_TRUE(self.ok()) << self.message();
  introduce(*a, *self);
  ASSERT_EQ(a->send(self->self().id, filled(*a, 1, 5), 100), Errc::kOk);
  auto m = self->recv(5s);
  ASSERT_TRUE(m.ok()) << m.message();
  EXPECT_TRUE(looks_filled(m->data(), 5));
}

// Each VM with a control device of its own (vmqd --vm): a guest that writes garbage over every
// slot and ring it can map, and over the shared device's header, ends only its own VM's domain;
// another VM's domains go on moving pages, with each other and with a process domain. On a
// device whose slots every VM shares, the same vandal ends the other VM's domains too (the
// second half: what the control devices take away).
TEST(VmQueueDevice, AVmsOwnControlDeviceKeepsOtherVmsOutOfItsSlots) {
  DeviceBroker b({"a", "b"});
  auto victim_a = b.attach("a1", {}, "a");
  auto b1 = b.attach("b1", {}, "b");
  auto b2 = b.attach("b2", {}, "b");
  ASSERT_TRUE(victim_a.ok()) << victim_a.message();
  ASSERT_TRUE(b1.ok()) << b1.message();
  ASSERT_TRUE(b2.ok()) << b2.message();
  auto host = b.broker.connect("host");
  ASSERT_TRUE(host.ok()) << host.message();
  introduce(*b1, *b2);
  introduce(*b2, *host);
  introduce(*host, *b1);
  {
    // The shared device holds no slots; a control device holds its VM's two, and no pools.
    auto shared = bypass::transport::map_vm_device(b.endpoint(), device::kHeaderBytes);
    ASSERT_TRUE(shared.ok());
    EXPECT_EQ(reinterpret_cast<device::Header*>(shared->data())->slot_count, 0u);
    auto own = bypass::transport::map_vm_device("ivshmem:" + b.control("a"), device::kHeaderBytes);
    ASSERT_TRUE(own.ok());
    const auto* h = reinterpret_cast<device::Header*>(own->data());
    EXPECT_EQ(h->slot_count, 2u);
    EXPECT_EQ(h->flags, device::kFlagSeparatePools);
    EXPECT_LT(own->size(), shared->size());
  }
  // VM a's vandal: every slot and ring of its control device, and the shared device's header,
  // overwritten every 10 ms for 3 s, while VM b's domains move pages.
  pid_t vandal = vmq_test::spawn({PROBE_PATH, "vandal", b.endpoint("a"), "3"}, b.device + ".vandal");
  const auto until = std::chrono::steady_clock::now() + 3s;
  int rounds = 0;
  for (; std::chrono::steady_clock::now() < until; ++rounds) {
    const uint8_t seed = static_cast<uint8_t>(rounds);
    ASSERT_EQ(b1->send(b2->self().id, filled(*b1, 3, seed), 3 * 4096), Errc::kOk) << "round " << rounds;
    auto m = b2->recv(5s);
    ASSERT_TRUE(m.ok()) << m.message();
    EXPECT_TRUE(looks_filled(m->data(), seed));
    ASSERT_EQ(b2->send(host->self().id, std::move(m->pages), 3 * 4096), Errc::kOk);
    auto back = host->recv(5s);
    ASSERT_TRUE(back.ok()) << back.message();
    EXPECT_TRUE(looks_filled(back->data(), seed));
    // And home to b1, whose next round takes them from its cache: the pages go round.
    ASSERT_EQ(host->send(b1->self().id, std::move(back->pages), 3 * 4096), Errc::kOk);
    auto home = b1->recv(5s);
    ASSERT_TRUE(home.ok()) << home.message();
    EXPECT_TRUE(looks_filled(home->data(), seed));
    std::this_thread::sleep_for(2ms);
  }
  EXPECT_EQ(vmq_test::wait_exit(vandal, 30s), 0);
  std::ifstream said(b.device + ".vandal");
  std::string line;
  std::getline(said, line);
  ::unlink((b.device + ".vandal").c_str());
  // It reached its own VM's two slots and the shared device, nothing else.
  EXPECT_NE(line.find("vandal: 2 devices, 2 slots overwritten"), std::string::npos) << line;
  EXPECT_GT(rounds, 5);
  // Its own VM's domain lost its slot (vmqd ended it); VM b's are still attached.
  auto gone = victim_a->recv(6s);
  EXPECT_EQ(gone.code(), Errc::kBrokerLost);
  ASSERT_EQ(b1->send(b2->self().id, filled(*b1, 1, 5), 4096), Errc::kOk);
  auto last = b2->recv(5s);
  ASSERT_TRUE(last.ok()) << last.message();
  EXPECT_TRUE(looks_filled(last->data(), 5));
}

TEST(VmQueueDevice, OnASharedDeviceAVandalReachesEveryVmsSlots) {
  DeviceBroker b;
  auto c1 = b.attach("c1");
  ASSERT_TRUE(c1.ok()) << c1.message();
  pid_t vandal = vmq_test::spawn({PROBE_PATH, "vandal", b.endpoint(), "1"}, b.device + ".vandal");
  EXPECT_EQ(vmq_test::wait_exit(vandal, 30s), 0);
  ::unlink((b.device + ".vandal").c_str());
  auto gone = c1->recv(6s);
  EXPECT_EQ(gone.code(), Errc::kBrokerLost);
}
