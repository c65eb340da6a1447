#include "bypass/transport/doorbell.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "bypass/base/text.h"
#include "bypass/base/unix_socket.h"
#include "futex.h"

namespace bypass::transport {

using detail::futex_wait;
using detail::futex_wake_all;

std::string doorbell_path(const std::string& device_path, uint32_t slot) {
  return device_path + "." + std::to_string(slot) + ".sock";
}

bool valid_doorbell_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxDoorbellName) return false;
  for (const char c : name)
    if (c <= ' ' || c > '~' || c == '/' || c == ',') return false;  // ',' would split QEMU's options
  return true;
}

std::string doorbell_name(const layout::DoorbellTag& tag) {
  layout::DoorbellTag copy;
  std::memcpy(&copy, &tag, sizeof copy);  // once: the same bytes for the check and the use
  if (copy.present == 0) return {};
  std::string name(copy.name, std::min<size_t>(copy.name_bytes, sizeof copy.name));
  return valid_doorbell_name(name) ? name : std::string();
}

base::UniqueFd doorbell_if_guest_holds(base::UniqueFd offered, const uint32_t& guest_word) {
  uint32_t holds = 0;
  std::memcpy(&holds, &guest_word, sizeof holds);
  if (holds != 1) offered.reset();
  return offered;
}

// ---------------------------------------------------------------------------------------------
// Host side

Result<DoorbellListener> DoorbellListener::listen(const std::string& device_path, uint32_t slots) {
  DoorbellListener out;
  const size_t slash = device_path.rfind('/');
  out.name_ = slash == std::string::npos ? device_path : device_path.substr(slash + 1);
  if (!valid_doorbell_name(out.name_)) {
    return make_error(Status::kInvalidArgument,
                      base::str_printf("doorbells need a device file name of 1 to %zu printable characters without "
                                       "spaces or commas (%s)",
                                       kMaxDoorbellName, device_path.c_str()));
  }
  out.path_ = device_path;
  out.owner_ = ::getpid();
  for (uint32_t i = 0; i < slots; ++i) {
    const std::string path = doorbell_path(device_path, i);
    auto listener = base::listen_unix(path, SOCK_STREAM | SOCK_NONBLOCK, 4);
    if (!listener) return base::rebrand(Status::kIo, listener.error());
    out.listeners_.push_back(std::move(listener).value());
    out.connections_.emplace_back();
    if (::chmod(path.c_str(), 0600) != 0) return base::errno_error(Status::kIo, "chmod " + path, errno);
  }
  return out;
}

void DoorbellListener::tag(layout::DoorbellTag* out) const {
  *out = layout::DoorbellTag{};
  if (listeners_.empty()) return;
  out->present = 1;
  out->name_bytes = static_cast<uint32_t>(name_.size());
  std::memcpy(out->name, name_.data(), name_.size());
}

DoorbellListener& DoorbellListener::operator=(DoorbellListener&& other) noexcept {
  if (this != &other) {
    remove();
    path_ = std::move(other.path_);
    name_ = std::move(other.name_);
    owner_ = other.owner_;
    listeners_ = std::move(other.listeners_);
    connections_ = std::move(other.connections_);
    other.listeners_.clear();
  }
  return *this;
}

DoorbellListener::~DoorbellListener() { remove(); }

void DoorbellListener::remove() {
  // A forked worker's copy: the sockets are its parent's.
  if (owner_ != ::getpid()) return;
  for (size_t i = 0; i < listeners_.size(); ++i)
    if (listeners_[i]) ::unlink(doorbell_path(path_, static_cast<uint32_t>(i)).c_str());
  listeners_.clear();
}

void DoorbellListener::accept_pending(uint32_t slot) {
  for (;;) {
    base::UniqueFd next(::accept4(listeners_[slot].get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!next) break;
    connections_[slot] = std::move(next);
  }
}

void DoorbellListener::watch(std::vector<pollfd>* fds, const std::vector<bool>& busy) const {
  for (size_t i = 0; i < listeners_.size(); ++i) {
    fds->push_back({listeners_[i].get(), POLLIN, 0});
    if (connections_[i] && !(i < busy.size() && busy[i])) fds->push_back({connections_[i].get(), POLLIN, 0});
  }
}

void DoorbellListener::serve(const std::vector<bool>& busy) {
  for (uint32_t i = 0; i < listeners_.size(); ++i) {
    accept_pending(i);
    if (i < busy.size() && busy[i]) continue;
    // What an idle slot's guest rang (its request is in the slot) or an earlier session left.
    if (connections_[i] && !drain_doorbell(connections_[i].get())) connections_[i].reset();
  }
}

base::UniqueFd DoorbellListener::take(uint32_t slot) {
  if (slot >= listeners_.size()) return {};
  accept_pending(slot);
  base::UniqueFd& kept = connections_[slot];
  if (kept && !doorbell_connected(kept.get())) kept.reset();
  if (!kept) return {};
  return base::UniqueFd(::fcntl(kept.get(), F_DUPFD_CLOEXEC, 0));
}

// ---------------------------------------------------------------------------------------------
// Guest side

namespace {

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

base::UniqueFd open_doorbell(const std::string& endpoint, const std::string& name, uint32_t slot) {
  if (!valid_doorbell_name(name) || endpoint.rfind("ivshmem:", 0) != 0) return {};
  const std::string rest = endpoint.substr(std::strlen("ivshmem:"));
  base::UniqueFd fd;
  if (!rest.empty() && rest[0] == '/') {
    auto connected = base::connect_unix(doorbell_path(rest, slot), SOCK_STREAM);
    if (!connected) return {};
    fd = std::move(connected).value();
  } else {
    const std::string want = name + "." + std::to_string(slot);
    DIR* dir = ::opendir("/sys/class/virtio-ports");
    if (dir == nullptr) return {};
    while (dirent* e = ::readdir(dir)) {
      if (e->d_name[0] == '.') continue;
      if (first_line(std::string("/sys/class/virtio-ports/") + e->d_name + "/name") != want) continue;
      fd.reset(::open((std::string("/dev/") + e->d_name).c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK));
      break;
    }
    ::closedir(dir);
  }
  if (!fd || !doorbell_connected(fd.get())) return {};
  // Non-blocking, as the host's end is: a ring never blocks, and a drain stops when it is empty.
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) return {};
  return fd;
}

// ---------------------------------------------------------------------------------------------
// Either side

namespace {

bool is_socket(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

// One byte; MSG_NOSIGNAL on a socket (a closed peer is EPIPE, not SIGPIPE). 1: written, 0: the
// stream is full (the peer has wake-ups to read), -1: dead.
int write_ring(int fd, bool socket) {
  const char byte = 1;
  const ssize_t n = socket ? ::send(fd, &byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT) : ::write(fd, &byte, 1);
  if (n == 1) return 1;
  return n < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
}

// Reads what the stream holds, at most kMaxDrain bytes a call: a peer that floods its doorbell
// must not keep a loop that serves others (vmqd's broker, the crossover switch) in here; what is
// left stays readable for its next look. `heard` counts the bytes. False once the stream ended.
constexpr size_t kMaxDrain = 64 * 1024;
bool read_all(int fd, std::atomic<uint64_t>* heard) {
  for (size_t total = 0; total < kMaxDrain;) {
    char bytes[4096];
    const ssize_t n = ::read(fd, bytes, sizeof bytes);
    if (n > 0) {
      if (heard) heard->fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      total += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && errno == EAGAIN;  // 0: end of stream; another error: broken
  }
  return true;
}

}  // namespace

bool ring_doorbell(int fd) { return write_ring(fd, is_socket(fd)) >= 0; }
bool drain_doorbell(int fd) { return read_all(fd, nullptr); }

bool doorbell_connected(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 0) < 0) return false;
  return (p.revents & (POLLHUP | POLLERR | POLLNVAL)) == 0;
}

std::unique_ptr<Doorbell> Doorbell::start(base::UniqueFd fd) {
  if (!fd) return nullptr;
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) return nullptr;
  const bool socket = is_socket(fd.get());
  std::unique_ptr<Doorbell> bell(new Doorbell(std::move(fd), socket));
  // An earlier session's rings are not ours; a stream that has ended serves nobody.
  if (!read_all(bell->fd_.get(), nullptr)) return nullptr;
  return bell;
}

void Doorbell::ring() {
  if (!alive()) return;
  const int r = write_ring(fd_.get(), is_socket_);
  if (r > 0) {
    rung_.fetch_add(1, std::memory_order_relaxed);
  } else if (r < 0) {
    // The peer is gone (EPIPE, ECONNRESET) or the port broke: wake our own sleepers to see it.
    alive_.store(false, std::memory_order_release);
    bump(2);  // the reading bit stays as it is; a reader learns of the end from its poll()
  }
}

void Doorbell::bump(uint32_t step) {
  // seq_cst, with the sleepers' increment of sleepers_ before their futex_wait: either we see
  // a sleeper and wake it, or its futex_wait sees the new epoch and returns at once.
  epoch_.fetch_add(step, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) != 0) futex_wake_all(&epoch_);
}

bool Doorbell::wait(uint32_t seen, std::chrono::nanoseconds timeout) {
  uint32_t now = epoch_.load(std::memory_order_seq_cst);
  if (now != seen || !alive()) return false;
  if ((now & 1) != 0) {
    // Another sleeper reads the stream; it moves the epoch when it stops.
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    const bool timed_out = futex_wait(&epoch_, seen, timeout);
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    return timed_out;
  }
  // Nobody reads: we do, if the epoch is still the one our caller saw before it re-checked its
  // word (else something moved: look again).
  if (!epoch_.compare_exchange_strong(now, now | 1, std::memory_order_seq_cst)) return false;
  pollfd p{fd_.get(), POLLIN, 0};
  const timespec ts{static_cast<time_t>(timeout.count() / 1'000'000'000),
                    static_cast<long>(timeout.count() % 1'000'000'000)};
  const int r = ::ppoll(&p, 1, &ts, nullptr);
  bool ended = false;
  if (r > 0) {
    if (p.revents & POLLIN) {
      ended = !read_all(fd_.get(), &heard_);
    } else if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) {
      ended = true;
    }
  }
  if (ended) alive_.store(false, std::memory_order_release);
  // Gives up the reading and moves the epoch (odd + 1): whether we read a ring meant for another
  // sleeper or only stop, the others look again, and one of them reads if it still waits.
  bump(1);
  return r == 0;
}

}  // namespace bypass::transport
