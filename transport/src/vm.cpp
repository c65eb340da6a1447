#include "bypass/transport/vm.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <thread>

#include "bypass/base/text.h"
#include "bypass/transport/doorbell.h"
#include "bypass/transport/layout.h"
#include "bypass/transport/link.h"
#include "channel_impl.h"
#include "handshake.h"
#include "region.h"

namespace bypass::transport {

using base::str_printf;
using layout::VmDeviceHeader;
using layout::VmSlot;

namespace {

VmDeviceHeader* header_of(const base::Mapping& m) { return reinterpret_cast<VmDeviceHeader*>(m.data()); }

layout::VmHello to_vm_hello(const Hello& hello) {
  layout::VmHello h{};
  h.transport_version = kTransportVersion;
  h.protocol_version = hello.protocol_version;
  h.schema_hash = hello.schema_hash;
  const std::string name = base::printable(hello.peer_name, sizeof h.name);
  h.name_bytes = static_cast<uint32_t>(name.size());
  std::memcpy(h.name, name.data(), name.size());
  return h;
}

// From a copy the peer can no longer change.
Hello from_vm_hello(const layout::VmHello& h, uint32_t* transport_version) {
  Hello out;
  out.protocol_version = h.protocol_version;
  out.schema_hash = h.schema_hash;
  out.peer_name =
      base::printable(std::string_view(h.name, std::min<size_t>(h.name_bytes, sizeof h.name)), kMaxNameBytes);
  *transport_version = h.transport_version;
  return out;
}

// The geometry of a device, from the header's private copy, checked against the mapping's size.
struct Geometry {
  uint32_t slots = 0;
  uint64_t slot_bytes = 0, region_bytes = 0, heap_offset = 0;
  std::string doorbell_name;  // empty: bypassd does not listen for doorbells
};

Result<Geometry> check_geometry(const VmDeviceHeader& h, uint64_t size) {
  if (h.magic != layout::kVmMagic || h.layout_version != layout::kVmLayoutVersion) {
    return make_error(
        Status::kProtocolError,
        str_printf("the device has magic 0x%08x layout version %u, expected 0x%08x version %u (is bypassd "
                   "serving it with --vm?)",
                   h.magic, h.layout_version, layout::kVmMagic, layout::kVmLayoutVersion));
  }
  const uint64_t slots_bytes = size - layout::kVmHeaderBytes;
  if (h.device_size != size || h.slot_count == 0 || h.slot_count > layout::kVmMaxSlots || h.slot_bytes == 0 ||
      h.slot_bytes % layout::kVmHeapAlign != 0 || h.slot_bytes > slots_bytes / h.slot_count ||
      h.region_bytes < layout::kDataOffset || h.heap_offset % layout::kVmHeapAlign != 0 ||
      h.heap_offset < h.region_bytes || h.heap_offset > h.slot_bytes) {
    return make_error(Status::kProtocolError,
                      str_printf("the device header is inconsistent (size %" PRIu64 " of %" PRIu64
                                 ", %u slots of %" PRIu64 " bytes, region %" PRIu64 ", heap at %" PRIu64 ")",
                                 h.device_size, size, h.slot_count, h.slot_bytes, h.region_bytes, h.heap_offset));
  }
  return Geometry{h.slot_count, h.slot_bytes, h.region_bytes, h.heap_offset, doorbell_name(h.doorbells)};
}

// One end of a session in a device slot. The device mapping is shared by every link of the
// process (a guest with two sessions maps its BAR twice otherwise; bypassd's workers inherit it).
// With a doorbell, a sleeper blocks until the peer rings it, and the doorbell's end is the
// peer's death (QEMU closed its chardev: the VM is gone; bypassd's sockets closed: bypassd is
// gone), noticed at once instead of after a heartbeat timeout. Without one it polls the word.
class VmLink final : public Link {
 public:
  VmLink(std::shared_ptr<base::Mapping> device, const Geometry& g, uint32_t slot, uint32_t generation, bool is_host,
         std::unique_ptr<Doorbell> bell)
      : device_(std::move(device)), generation_(generation), is_host_(is_host), bell_(std::move(bell)) {
    header_ = header_of(*device_);
    slot_ = &header_->slots[slot];
    std::byte* base = device_->data() + layout::kVmHeaderBytes + slot * g.slot_bytes;
    region_ = {base, g.region_bytes};
    heap_ = {base + g.heap_offset, g.slot_bytes - g.heap_offset};
    last_beat_ = peer_beat().load(std::memory_order_relaxed);
    last_change_ = Clock::now();
    if (!is_host_) heartbeat_ = std::thread([this] { beat(); });
  }
  ~VmLink() override {
    if (heartbeat_.joinable()) {
      {
        std::lock_guard lock(beat_mu_);
        stop_ = true;
      }
      beat_cv_.notify_all();
      heartbeat_.join();
    }
  }

  std::span<std::byte> region() const override { return region_; }
  std::span<std::byte> heap() const override { return heap_; }
  // The ring bumped the word: a polling sleeper sees it; one asleep on the doorbell needs the ring.
  void wake(std::atomic<uint32_t>*) override {
    if (bell_) bell_->ring();
  }
  bool sleep(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::nanoseconds timeout) override {
    // Acquire: pairs with the waker's release bump of the word (ring.cpp).
    auto changed = [&] { return word->load(std::memory_order_acquire) != expected; };
    if (!bell_) return !vm_poll_until(changed, timeout);
    const Clock::time_point end = Clock::now() + timeout;
    if (vm_yield_phase(changed)) return false;
    // Ended: the caller asks peer_gone(), which says yes.
    return bell_->sleep_until(changed, end) != Doorbell::Woke::kReady;
  }
  const char* wakeups() const override { return bell_ ? "doorbell" : "polling"; }
  bool peer_gone() override {
    if (bell_ && !bell_->alive()) return true;
    // The slot is no longer this session's: bypassd ended it (guest's view), or a new guest
    // claimed it after ours was freed. Acquire pairs with the release stores of the state.
    if (slot_->state.load(std::memory_order_acquire) != layout::kSlotActive ||
        slot_->generation.load(std::memory_order_relaxed) != generation_)
      return true;
    const uint64_t beat = peer_beat().load(std::memory_order_relaxed);
    std::lock_guard lock(watch_mu_);
    const Clock::time_point now = Clock::now();
    if (beat != last_beat_) {
      last_beat_ = beat;
      last_change_ = now;
      return false;
    }
    return now - last_change_ > (is_host_ ? kVmGuestTimeout : kVmHostTimeout);
  }
  std::chrono::nanoseconds liveness_slice() const override { return std::chrono::milliseconds(50); }

 private:
  std::atomic<uint64_t>& peer_beat() const { return is_host_ ? slot_->guest_heartbeat : header_->host_heartbeat; }

  // The guest's heartbeat: bypassd ends a session whose guest stopped beating (its process or
  // its whole VM killed, the VM reset).
  void beat() {
    std::unique_lock lock(beat_mu_);
    while (!stop_) {
      // Relaxed: only its change matters, read by the host's peer_gone().
      slot_->guest_heartbeat.fetch_add(1, std::memory_order_relaxed);
      beat_cv_.wait_for(lock, kVmHeartbeatPeriod, [this] { return stop_; });
    }
  }

  std::shared_ptr<base::Mapping> device_;
  VmDeviceHeader* header_ = nullptr;
  VmSlot* slot_ = nullptr;
  const uint32_t generation_;
  const bool is_host_;
  std::unique_ptr<Doorbell> bell_;  // null: wake-ups poll
  std::span<std::byte> region_, heap_;
  // peer_gone() may be asked by the send and the receive thread at once.
  std::mutex watch_mu_;
  uint64_t last_beat_ = 0;         // guarded by watch_mu_
  Clock::time_point last_change_;  // guarded by watch_mu_
  std::mutex beat_mu_;
  std::condition_variable beat_cv_;
  bool stop_ = false;  // guarded by beat_mu_
  std::thread heartbeat_;
};

bool is_power_of_two(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// The PCI addresses of the ivshmem devices, in order.
std::vector<std::string> ivshmem_addresses() {
  std::vector<std::string> found;
  DIR* dir = ::opendir("/sys/bus/pci/devices");
  if (dir == nullptr) return found;
  while (dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const std::string base = std::string("/sys/bus/pci/devices/") + e->d_name;
    // Red Hat's vendor id, the ivshmem device id.
    if (read_line(base + "/vendor") == "0x1af4" && read_line(base + "/device") == "0x1110") found.push_back(e->d_name);
  }
  ::closedir(dir);
  std::sort(found.begin(), found.end());
  return found;
}

// The file behind an "ivshmem:..." endpoint: a PCI device's BAR 2 (enabled first: no kernel
// driver binds an ivshmem device, so nobody else turns its memory decoding on) or a path.
Result<std::string> resolve_device(const std::string& endpoint) {
  std::string rest = endpoint.substr(std::strlen("ivshmem:"));
  if (!rest.empty() && rest[0] == '/') return rest;
  if (rest.empty()) {
    std::vector<std::string> all = ivshmem_addresses();
    if (all.empty()) {
      return make_error(Status::kIo, "no ivshmem PCI device (vendor 0x1af4, device 0x1110) in /sys/bus/pci/devices");
    }
    rest = all.front();
  }
  const std::string base = "/sys/bus/pci/devices/" + rest;
  if (std::ofstream enable(base + "/enable"); enable) enable << "1";
  return base + "/resource2";
}

}  // namespace

void vm_nap(std::chrono::nanoseconds d) {
  // A polling sleeper's naps are its wake-up latency: without this, the kernel's default timer
  // slack (50 us) rounds every 2 us nap up to some 60 us. Per thread, set once.
  thread_local const bool slack_set = ::prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0) == 0;
  (void)slack_set;
  timespec ts{static_cast<time_t>(d.count() / 1'000'000'000), static_cast<long>(d.count() % 1'000'000'000)};
  ::nanosleep(&ts, nullptr);
}

void vm_yield() { ::sched_yield(); }

Result<base::UniqueFd> create_vm_device_file(const std::string& path, uint64_t size) {
  base::UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return make_error(Status::kIo, str_printf("cannot open %s: %s", path.c_str(), std::strerror(errno)));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return make_error(Status::kInvalidArgument, str_printf("%s is not a regular file", path.c_str()));
  }
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return make_error(Status::kIo,
                      str_printf("cannot size %s to %" PRIu64 " bytes: %s", path.c_str(), size, std::strerror(errno)));
  }
  return fd;
}

// ---------------------------------------------------------------------------------------------
// Host

struct VmDevice::Impl {
  std::shared_ptr<base::Mapping> mapping;
  Geometry geometry;
  VmDeviceOptions options;
  detail::RegionLayout plan;
  // When the main process first saw a slot Claimed or Rejected (generation, time): for the sweep.
  struct Seen {
    uint32_t state = layout::kSlotFree, generation = 0;
    Clock::time_point since;
  };
  Seen seen[layout::kVmMaxSlots];
  DoorbellListener doorbells;  // options.doorbells
};

VmDevice::VmDevice(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
VmDevice::VmDevice(VmDevice&&) noexcept = default;
VmDevice& VmDevice::operator=(VmDevice&&) noexcept = default;
VmDevice::~VmDevice() = default;

Result<VmDevice> VmDevice::create(const std::string& path, const VmDeviceOptions& options) {
  if (!is_power_of_two(options.size) || options.size < (uint64_t{4} << 20) || options.slots == 0 ||
      options.slots > layout::kVmMaxSlots) {
    return make_error(
        Status::kInvalidArgument,
        str_printf("a VM device must be a power of two of at least 4 MiB with 1 to %u slots (asked: %" PRIu64
                   " bytes, %u slots)",
                   layout::kVmMaxSlots, options.size, options.slots));
  }
  SessionOptions session;
  session.ring_bytes = options.ring_bytes;
  session.max_message = options.max_message;
  auto planned = detail::plan_region(session);
  if (!planned) return planned.error();
  const detail::RegionLayout plan = *planned;
  Geometry g;
  g.slots = options.slots;
  g.slot_bytes = (options.size - layout::kVmHeaderBytes) / options.slots / layout::kVmHeapAlign * layout::kVmHeapAlign;
  g.region_bytes = plan.size;
  g.heap_offset = (plan.size + layout::kVmHeapAlign - 1) / layout::kVmHeapAlign * layout::kVmHeapAlign;
  if (g.heap_offset >= g.slot_bytes) {
    return make_error(
        Status::kInvalidArgument,
        str_printf("%" PRIu64 " bytes in %u slots leave no room for host-visible memory beside rings of %zu "
                   "bytes",
                   options.size, options.slots, options.ring_bytes));
  }
  auto file = create_vm_device_file(path, options.size);
  if (!file) return file.error();
  const base::UniqueFd fd = std::move(file).value();
  auto mapped = base::Mapping::map_shared(fd.get(), 0, options.size, /*writable=*/true);
  if (!mapped) {
    return make_error(Status::kIo, str_printf("cannot map %s: %s", path.c_str(), mapped.error().message.c_str()));
  }
  auto impl = std::make_unique<Impl>();
  impl->mapping = std::make_shared<base::Mapping>(std::move(mapped).value());
  impl->geometry = g;
  impl->options = options;
  impl->plan = plan;
  if (options.doorbells) {
    auto listening = DoorbellListener::listen(path, g.slots);
    if (!listening) return listening.error();
    impl->doorbells = std::move(listening).value();
  }
  // Every slot starts free: a guest of an earlier bypassd sees its session gone.
  std::byte* header_bytes = impl->mapping->data();
  std::memset(header_bytes, 0, layout::kVmHeaderBytes);
  auto* h = new (header_bytes) VmDeviceHeader{};
  h->device_size = options.size;
  h->slot_count = g.slots;
  h->slot_bytes = g.slot_bytes;
  h->region_bytes = g.region_bytes;
  h->heap_offset = g.heap_offset;
  h->layout_version = layout::kVmLayoutVersion;
  impl->doorbells.tag(&h->doorbells);
  // Release: a guest that sees the magic (acquire fence in connect_vm) sees the rest.
  std::atomic_thread_fence(std::memory_order_release);
  reinterpret_cast<std::atomic<uint32_t>*>(&h->magic)->store(layout::kVmMagic, std::memory_order_release);
  VmDevice device(std::move(impl));
  device.path_ = path;
  return device;
}

uint32_t VmDevice::slot_count() const { return impl_ ? impl_->geometry.slots : 0; }

void VmDevice::heartbeat() {
  // Relaxed: guests only look for a change (peer_gone()).
  header_of(*impl_->mapping)->host_heartbeat.fetch_add(1, std::memory_order_relaxed);
}

bool VmDevice::slot_requested(uint32_t slot) const {
  return slot < slot_count() &&
         header_of(*impl_->mapping)->slots[slot].state.load(std::memory_order_acquire) == layout::kSlotRequested;
}

void VmDevice::sweep_stale_slots(Clock::time_point now) {
  constexpr auto kStale = std::chrono::seconds(5);
  for (uint32_t i = 0; i < slot_count(); ++i) {
    VmSlot& slot = header_of(*impl_->mapping)->slots[i];
    const uint32_t state = slot.state.load(std::memory_order_acquire);
    const uint32_t generation = slot.generation.load(std::memory_order_relaxed);
    Impl::Seen& seen = impl_->seen[i];
    if (state != seen.state || generation != seen.generation) {
      seen = Impl::Seen{state, generation, now};
      continue;
    }
    if ((state == layout::kSlotClaimed || state == layout::kSlotRejected) && now - seen.since > kStale) {
      // CAS: only if the guest did not move on meanwhile.
      uint32_t expected = state;
      slot.state.compare_exchange_strong(expected, layout::kSlotFree, std::memory_order_acq_rel);
    }
  }
}

base::UniqueFd VmDevice::doorbell(uint32_t slot) { return impl_->doorbells.take(slot); }

void VmDevice::watch_doorbells(std::vector<pollfd>* fds, const std::vector<bool>& busy) const {
  impl_->doorbells.watch(fds, busy);
}

void VmDevice::serve_doorbells(const std::vector<bool>& busy) { impl_->doorbells.serve(busy); }

void VmDevice::free_slot(uint32_t slot) {
  if (slot >= slot_count()) return;
  // Release: pairs with the guest's acquire load in peer_gone() and in its claim.
  header_of(*impl_->mapping)->slots[slot].state.store(layout::kSlotFree, std::memory_order_release);
}

Result<Channel> VmDevice::accept(uint32_t slot_index, const Hello& mine, base::UniqueFd doorbell) {
  if (!slot_requested(slot_index)) {
    return make_error(Status::kInvalidArgument, str_printf("slot %u has no guest waiting", slot_index));
  }
  VmSlot& slot = header_of(*impl_->mapping)->slots[slot_index];
  const uint32_t generation = slot.generation.load(std::memory_order_relaxed);
  layout::VmHello copy;
  std::memcpy(&copy, &slot.guest_hello, sizeof copy);  // once: the guest may change it any time
  uint32_t guest_transport = 0;
  const Hello guest = from_vm_hello(copy, &guest_transport);
  Hello me = mine;
  me.peer_name = base::printable(mine.peer_name, kMaxNameBytes);
  const layout::VmHello reply = to_vm_hello(me);
  std::memcpy(&slot.host_hello, &reply, sizeof reply);
  if (std::string text = detail::compare_versions(guest, guest_transport, me, kTransportVersion); !text.empty()) {
    const std::string line = base::printable(detail::refused(text).message, sizeof slot.reject_text);
    std::memcpy(slot.reject_text, line.data(), line.size());
    slot.reject_bytes = static_cast<uint32_t>(line.size());
    slot.state.store(layout::kSlotRejected, std::memory_order_release);
    return make_error(Status::kRefused, str_printf("slot %u: ", slot_index) + text);
  }
  const Geometry& g = impl_->geometry;
  std::byte* base = impl_->mapping->data() + layout::kVmHeaderBytes + slot_index * g.slot_bytes;
  detail::write_region(impl_->plan, base);
  // The doorbell only if the guest holds its end too.
  std::unique_ptr<Doorbell> bell = Doorbell::start(doorbell_if_guest_holds(std::move(doorbell), slot.guest_doorbell));
  slot.host_doorbell = bell ? 1 : 0;
  auto link = std::make_unique<VmLink>(impl_->mapping, g, slot_index, generation, true, std::move(bell));
  // Release: the region and our hello are written before the guest sees Active.
  slot.state.store(layout::kSlotActive, std::memory_order_release);
  ucred cred{-1, static_cast<uid_t>(-1), static_cast<gid_t>(-1)};
  return detail::ChannelFactory::make(std::move(link), impl_->plan, true, false, cred, guest);
}

// ---------------------------------------------------------------------------------------------
// Guest

Result<VmDeviceFile> open_vm_device(const std::string& endpoint, uint64_t min_bytes) {
  auto resolved = resolve_device(endpoint);
  if (!resolved) return resolved.error();
  VmDeviceFile dev;
  dev.path = *resolved;
  dev.fd = base::UniqueFd(::open(dev.path.c_str(), O_RDWR | O_CLOEXEC));
  if (!dev.fd) {
    return make_error(Status::kIo, str_printf("cannot open the device %s: %s", dev.path.c_str(), std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(dev.fd.get(), &st) != 0 || st.st_size < static_cast<off_t>(min_bytes)) {
    return make_error(Status::kIo, str_printf("the device %s is too small or unreadable", dev.path.c_str()));
  }
  dev.size = static_cast<uint64_t>(st.st_size);
  return dev;
}

std::vector<std::string> list_vm_devices() {
  std::vector<std::string> endpoints;
  for (const std::string& address : ivshmem_addresses()) endpoints.push_back("ivshmem:" + address);
  return endpoints;
}

Result<base::Mapping> map_vm_device(const std::string& endpoint, uint64_t min_bytes) {
  auto opened = open_vm_device(endpoint, min_bytes);
  if (!opened) return opened.error();
  auto mapped = base::Mapping::map_shared(opened->fd.get(), 0, opened->size, /*writable=*/true);
  if (!mapped) {
    return make_error(Status::kIo,
                      str_printf("cannot map the device %s: %s", opened->path.c_str(), mapped.error().message.c_str()));
  }
  return std::move(mapped).value();
}

Result<Channel> connect_vm(const std::string& endpoint, const Hello& mine, Deadline deadline) {
  auto mapped = map_vm_device(endpoint, layout::kVmHeaderBytes);
  if (!mapped) return mapped.error();
  const uint64_t size = mapped->size();
  auto mapping = std::make_shared<base::Mapping>(std::move(mapped).value());
  const std::string path = endpoint;  // for the messages below
  auto* h = header_of(*mapping);
  VmDeviceHeader copy;
  // Acquire: pairs with bypassd's release store of the magic.
  (void)reinterpret_cast<std::atomic<uint32_t>*>(&h->magic)->load(std::memory_order_acquire);
  std::memcpy(static_cast<void*>(&copy), h, offsetof(VmDeviceHeader, host_heartbeat));
  auto geometry = check_geometry(copy, size);
  if (!geometry) return geometry.error();
  const Geometry g = *geometry;
  Hello me = mine;
  me.peer_name = base::printable(mine.peer_name, kMaxNameBytes);
  const layout::VmHello hello = to_vm_hello(me);

  // bypassd is alive if its heartbeat moves; noticed while we wait for a slot or an answer.
  uint64_t beat = h->host_heartbeat.load(std::memory_order_relaxed);
  Clock::time_point beat_seen = Clock::now();
  auto host_alive = [&] {
    const uint64_t now_beat = h->host_heartbeat.load(std::memory_order_relaxed);
    if (now_beat != beat) {
      beat = now_beat;
      beat_seen = Clock::now();
    }
    return Clock::now() - beat_seen <= kVmHostTimeout;
  };
  for (;;) {
    for (uint32_t i = 0; i < g.slots; ++i) {
      VmSlot& slot = h->slots[i];
      uint32_t expected = layout::kSlotFree;
      // acq_rel: a claim excludes the VM's other processes; pairs with bypassd's free_slot().
      if (!slot.state.compare_exchange_strong(expected, layout::kSlotClaimed, std::memory_order_acq_rel)) continue;
      const uint32_t generation = slot.generation.fetch_add(1, std::memory_order_relaxed) + 1;
      std::memcpy(&slot.guest_hello, &hello, sizeof hello);
      base::UniqueFd bell_fd = open_doorbell(endpoint, g.doorbell_name, i);
      slot.guest_doorbell = bell_fd ? 1 : 0;
      slot.guest_heartbeat.fetch_add(1, std::memory_order_relaxed);
      // Release: the hello is written before bypassd sees the request; then ring, so that it
      // sees the request now rather than at its next look.
      slot.state.store(layout::kSlotRequested, std::memory_order_release);
      if (bell_fd) ring_doorbell(bell_fd.get());
      std::chrono::nanoseconds step = kVmPollMin;
      uint32_t state;
      // Acquire: pairs with bypassd's release store of Active / Rejected.
      while ((state = slot.state.load(std::memory_order_acquire)) == layout::kSlotRequested) {
        if (Clock::now() >= deadline || !host_alive()) {
          // Take the request back if bypassd has not answered; if it just did, it will see our
          // heartbeat stop and end the session.
          expected = layout::kSlotRequested;
          slot.state.compare_exchange_strong(expected, layout::kSlotFree, std::memory_order_acq_rel);
          if (host_alive()) {
            return make_error(Status::kTimeout, str_printf("bypassd did not answer on %s in time", path.c_str()));
          }
          return make_error(Status::kPeerGone,
                            str_printf("no bypassd serves %s (its heartbeat stands still)", path.c_str()));
        }
        vm_nap(step);
        step = std::min<std::chrono::nanoseconds>(step * 2, std::chrono::milliseconds(1));
      }
      if (state == layout::kSlotRejected) {
        char text[sizeof slot.reject_text];
        const uint32_t n = std::min<uint32_t>(slot.reject_bytes, sizeof text);
        std::memcpy(text, slot.reject_text, n);
        slot.state.store(layout::kSlotFree, std::memory_order_release);
        return detail::refused(base::printable(std::string_view(text, n), sizeof text));
      }
      if (state != layout::kSlotActive || slot.generation.load(std::memory_order_relaxed) != generation) {
        return make_error(Status::kPeerGone, str_printf("bypassd ended the session in slot %u before it began", i));
      }
      layout::VmHello host_copy;
      std::memcpy(&host_copy, &slot.host_hello, sizeof host_copy);
      uint32_t host_transport = 0;
      Hello host = from_vm_hello(host_copy, &host_transport);
      std::unique_ptr<Doorbell> bell = slot.host_doorbell == 1 ? Doorbell::start(std::move(bell_fd)) : nullptr;
      auto link = std::make_unique<VmLink>(mapping, g, i, generation, false, std::move(bell));
      if (std::string text = detail::compare_versions(me, kTransportVersion, host, host_transport); !text.empty()) {
        return detail::refused(text);  // the link's end stops our heartbeat: bypassd ends the session
      }
      auto region = detail::validate_region(link->region());
      if (!region) return detail::refused("guest refused the session region: " + region.error().message);
      ucred cred{-1, static_cast<uid_t>(-1), static_cast<gid_t>(-1)};
      return detail::ChannelFactory::make(std::move(link), *region, false, false, cred, std::move(host));
    }
    if (Clock::now() >= deadline || !host_alive()) {
      if (host_alive()) {
        return make_error(Status::kTimeout, str_printf("all %u session slots of %s are busy", g.slots, path.c_str()));
      }
      return make_error(Status::kPeerGone,
                        str_printf("no bypassd serves %s (its heartbeat stands still)", path.c_str()));
    }
    vm_nap(std::chrono::milliseconds(1));
  }
}

}  // namespace bypass::transport
