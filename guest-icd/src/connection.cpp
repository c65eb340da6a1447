#include "bypass/icd/connection.h"

#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bypass/transport/session.h"
#include "bypass/transport/vm.h"

#include <cstdio>
#include <cstring>
#include <string>

#include "bypass/base/log.h"
#include "bypass/base/socket_path.h"
#include "bypass/base/thread_scratch.h"
#include "bypass/memshare/client.h"
#include "bypass/wire/gen/commands.h"
#include "bypass/wire/gen/enums.h"  // wire::is_dispatchable
#include "config.h"

namespace bypass::icd {

namespace {

// Records collect in the batch until a synchronous call, a submission, or this size.
constexpr size_t kBatchBytes = 256 * 1024;

std::string default_endpoint() {
  if (!config().endpoint.empty()) return config().endpoint;
  // The user's own server when there is one, else the system service's.
  const std::string own = base::default_socket_path(transport::kSocketName);
  if (access(own.c_str(), F_OK) == 0) return "unix:" + own;
  return std::string("unix:") + base::kSystemSocketDir + "/" + transport::kSocketName;
}

// A guest trusts a server run by root, by its own user, or by the uid BYPASS_SERVER_UID names:
// whoever else listens where we look (a socket directory another user made first, an abstract
// socket anyone can bind) is refused before anything is sent to it. Empty when trusted.
std::string check_server_identity(const transport::Channel& ch, const std::string& endpoint) {
  const uid_t server = ch.peer_uid();
  if (server == 0 || server == geteuid()) return {};
  if (config().server_uid == server) return {};
  return "refusing the bypass server at " + endpoint + ": it runs as uid " + std::to_string(server) +
         ", not root or this user (uid " + std::to_string(geteuid()) +
         "); set BYPASS_SERVER_UID=" + std::to_string(server) + " to trust it";
}

// The ring: a UNIX socket's session region or a VM's device slot.
class ChannelLink final : public HostLink {
 public:
  explicit ChannelLink(transport::Channel ch) : ch_(std::move(ch)) {}
  transport::Status send(uint32_t kind, std::span<const std::byte> payload) override { return ch_.send(kind, payload); }
  transport::Status recv(transport::Message& out) override { return ch_.recv(out); }
  transport::Status send_fds(uint64_t tag, std::span<const int> fds, transport::Deadline deadline) override {
    return ch_.send_fds(tag, fds, deadline);
  }
  transport::Status recv_fds(uint64_t& tag, std::vector<int>& fds, transport::Deadline deadline) override {
    return ch_.recv_fds(tag, fds, deadline);
  }
  bool carries_fds() const override { return ch_.carries_fds(); }
  std::span<std::byte> shared_heap() const override { return ch_.shared_heap(); }
  std::string error_text() const override { return ch_.error_text(); }
  transport::layout::Feedback* feedback() const override { return ch_.feedback(); }
  void sleep_feedback(uint32_t expected, std::chrono::nanoseconds timeout) const override {
    ch_.sleep_feedback(expected, timeout);
  }
  std::chrono::nanoseconds liveness_slice() const override { return ch_.liveness_slice(); }
  bool peer_alive() const override { return ch_.peer_alive(); }

 private:
  transport::Channel ch_;
};

// The network plugin beside this library, loaded on first use and never unloaded (gRPC keeps
// threads); null with `why` when it cannot be loaded.
NetworkConnectFn network_plugin(std::string& why) {
  static std::string error;
  static const NetworkConnectFn fn = []() -> NetworkConnectFn {
    Dl_info info{};
    if (!dladdr(reinterpret_cast<void*>(&network_plugin), &info) || !info.dli_fname) {
      error = "cannot locate the ICD's own library";
      return nullptr;
    }
    std::string path = info.dli_fname;
    path = path.substr(0, path.rfind('/') + 1) + kNetworkPlugin;
    void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* e = dlerror();
      error = "cannot load the network plugin " + path + ": " + (e ? e : "unknown error");
      return nullptr;
    }
    auto f = reinterpret_cast<NetworkConnectFn>(dlsym(lib, kNetworkConnectSymbol));
    if (!f) error = path + " has no " + kNetworkConnectSymbol;
    return f;
  }();
  why = error;
  return fn;
}

}  // namespace

bool Connection::endpoint_is_vm() {
  static const bool vm = default_endpoint().starts_with("ivshmem:");
  return vm;
}

bool Connection::endpoint_is_network() {
  static const bool network = default_endpoint().starts_with("grpc://");
  return network;
}

bool Connection::endpoint_carries_fds() { return !endpoint_is_vm() && !endpoint_is_network(); }

transport::Result<std::unique_ptr<Connection>> Connection::open() {
  const std::string endpoint = default_endpoint();
  char name[64];
  std::snprintf(name, sizeof(name), "bypass-icd pid %d", static_cast<int>(getpid()));
  const transport::Hello hello{wire::kProtocolVersion, wire::kSchemaHash, name};
  // A hung server is given up on after this (3 s unless BYPASS_CONNECT_TIMEOUT_MS says otherwise).
  // No server at all fails at once (connect is refused); the deadline is for a server that
  // accepted and must start the session's worker, which a loaded host was seen to take over 1 s.
  // A VM's request is seen by bypassd's polling loop and a worker it forks: at least 5 s.
  if (endpoint.starts_with("grpc://")) {
    std::string why;
    const NetworkConnectFn connect_network = network_plugin(why);
    if (!connect_network)
      return transport::make_error(transport::Status::kIo, "cannot reach bypassd at " + endpoint + ": " + why);
    NetworkOptions o;
    o.endpoint = endpoint;
    o.insecure = config().insecure;
    o.ca_file = config().tls_ca;
    o.cert_file = config().tls_cert;
    o.key_file = config().tls_key;
    o.token = config().token;
    o.timeout = config().connect_timeout;
    o.stats = config().net_stats;
    auto link = connect_network(o, hello);
    if (!link)
      return transport::make_error(link.code(), "cannot reach bypassd at " + endpoint + ": " + link.error().message);
    auto c = std::unique_ptr<Connection>(new Connection(std::move(*link)));
    c->batch_.reserve(kBatchBytes + 4096);
    return c;
  }
  const bool vm = endpoint.starts_with("ivshmem:");
  auto ch = vm ? transport::connect_vm(endpoint, hello,
                                       transport::deadline_after(std::max<std::chrono::milliseconds>(
                                           config().connect_timeout, std::chrono::seconds(5))))
               : transport::connect(endpoint, hello, transport::deadline_after(config().connect_timeout));
  if (!ch) return transport::make_error(ch.code(), "cannot reach bypassd at " + endpoint + ": " + ch.error().message);
  // Across a VM boundary there is no peer uid to check: whoever may map the device is trusted.
  if (std::string why = vm ? std::string() : check_server_identity(*ch, endpoint); !why.empty()) {
    return transport::make_error(transport::Status::kRefused, why);
  }
  auto c = std::unique_ptr<Connection>(new Connection(std::make_unique<ChannelLink>(std::move(*ch))));
  c->batch_.reserve(kBatchBytes + 4096);
  return c;
}

Connection::~Connection() {
  flush();
  for (auto& [tag, fd] : fds_) close(fd);
  if (!small_heap_.empty()) munmap(small_heap_.data(), small_heap_.size());
}

void Connection::mark_dead(const std::string& why) {
  if (!dead_.exchange(true, std::memory_order_acq_rel))
    base::log(base::LogLevel::kError, "lost the host: %s", why.c_str());
}

std::string Connection::lost_text(transport::Status st) const {
  std::string why = st == transport::Status::kPeerGone ? "bypassd went away" : transport::to_string(st);
  if (std::string more = link_->error_text(); !more.empty()) why += " (" + more + ")";
  return why;
}

void Connection::protocol_error(const std::string& what) { mark_dead("protocol error: " + what); }

uint64_t Connection::append_locked(uint16_t command, uint16_t flags, const void* data, size_t size, const void* more,
                                   size_t more_size) {
  const size_t whole = size + more_size;
  const size_t padded = (whole + 7) & ~size_t{7};
  const size_t at = batch_.size();
  batch_.resize(at + sizeof(wire::RecordHeader) + padded);
  wire::RecordHeader h{static_cast<uint32_t>(sizeof(h) + padded), command, flags};
  uint8_t* out = batch_.data() + at;
  std::memcpy(out, &h, sizeof(h));
  if (size) std::memcpy(out + sizeof(h), data, size);  // data may be null then
  if (more_size) std::memcpy(out + sizeof(h) + size, more, more_size);
  std::memset(out + sizeof(h) + whole, 0, padded - whole);
  if (imports_.noting()) imports_.appended(command);
  // Numbered as bypassd numbers them: in ring order, whatever path appended the record.
  if (command == wire::kCmd_vkQueueSubmit || command == wire::kCmd_vkQueueSubmit2) return ++submit_serial_;
  return 0;
}

uint64_t Connection::send_submission(uint16_t command, const wire::Builder& b) {
  std::lock_guard lock(send_mu_);
  const uint64_t serial = append_locked(command, 0, b.GetBufferPointer(), b.GetSize());
  flush_locked();
  return serial;
}

bool Connection::check_peer() {
  if (alive() && !link_->peer_alive()) mark_dead("bypassd went away");
  return alive();
}

void Connection::flush_locked() {
  if (batch_.empty()) return;
  if (alive()) {
    auto st = link_->send(wire::kMsgBatch, std::as_bytes(std::span(batch_)));
    if (st != transport::Status::kOk) mark_dead(lost_text(st));
  }
  batch_.clear();
}

void Connection::flush() {
  std::lock_guard lock(send_mu_);
  flush_locked();
}

void Connection::send(uint16_t command, const wire::Builder& b, bool flush) {
  std::lock_guard lock(send_mu_);
  append_locked(command, 0, b.GetBufferPointer(), b.GetSize());
  if (flush || batch_.size() >= kBatchBytes) flush_locked();
}

void Connection::send_fixed(uint16_t command, const void* data, size_t size) {
  std::lock_guard lock(send_mu_);
  append_locked(command, wire::kRecordFixed, data, size);
  if (batch_.size() >= kBatchBytes) flush_locked();
}

void Connection::send_raw(uint16_t command, const void* data, size_t size) {
  send_raw(command, data, size, nullptr, 0);
}

void Connection::send_raw(uint16_t command, const void* head, size_t head_size, const void* body, size_t body_size) {
  std::lock_guard lock(send_mu_);
  append_locked(command, 0, head, head_size, body, body_size);
  if (batch_.size() >= kBatchBytes) flush_locked();
}

bool Connection::call(uint16_t command, const wire::Builder& b, Reply& reply) {
  if (!answer_never_changes(command)) return call_raw(command, b.GetBufferPointer(), b.GetSize(), reply);
  // The same arguments encode to the same bytes (handles as the session's ids, output chains as
  // their structure types, array capacities as counts): programs and the loader ask these many
  // times (ffmpeg with libplacebo: 44 extension enumerations before its first frame).
  std::string key(reinterpret_cast<const char*>(&command), sizeof command);
  key.append(reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize());
  {
    std::lock_guard lock(answers_mu_);
    if (auto it = answers_.find(key); it != answers_.end()) {
      reply.message().kind = wire::kMsgReply;
      reply.message().payload = it->second;
      return true;
    }
  }
  if (!call_raw(command, b.GetBufferPointer(), b.GetSize(), reply)) return false;
  // Errors (out of memory, a lost device) are not the query's answer.
  const int32_t result = reply.header().result;
  if (result != VK_SUCCESS && result != VK_INCOMPLETE) return true;
  std::lock_guard lock(answers_mu_);
  const size_t bytes = key.size() + reply.message().payload.size();
  if (answer_bytes_ + bytes <= kAnswerCacheBytes && answers_.emplace(std::move(key), reply.message().payload).second)
    answer_bytes_ += bytes;
  return true;
}

bool Connection::answer_never_changes(uint16_t command) {
  switch (command) {
    // What the instance and its physical devices are, by the same arguments: fixed for the
    // driver bypassd runs. Not vkGetPhysicalDeviceMemoryProperties2 (a memory budget in its
    // chain changes), surfaces (their size does), tool properties or anything creating handles.
    case wire::kCmd_vkEnumerateInstanceExtensionProperties:
    case wire::kCmd_vkEnumerateInstanceLayerProperties:
    case wire::kCmd_vkEnumerateInstanceVersion:
    case wire::kCmd_vkEnumerateDeviceExtensionProperties:
    case wire::kCmd_vkEnumerateDeviceLayerProperties:
    case wire::kCmd_vkGetPhysicalDeviceProperties:
    case wire::kCmd_vkGetPhysicalDeviceProperties2:
    case wire::kCmd_vkGetPhysicalDeviceFeatures:
    case wire::kCmd_vkGetPhysicalDeviceFeatures2:
    case wire::kCmd_vkGetPhysicalDeviceFormatProperties:
    case wire::kCmd_vkGetPhysicalDeviceFormatProperties2:
    case wire::kCmd_vkGetPhysicalDeviceImageFormatProperties:
    case wire::kCmd_vkGetPhysicalDeviceImageFormatProperties2:
    case wire::kCmd_vkGetPhysicalDeviceSparseImageFormatProperties:
    case wire::kCmd_vkGetPhysicalDeviceSparseImageFormatProperties2:
    case wire::kCmd_vkGetPhysicalDeviceQueueFamilyProperties:
    case wire::kCmd_vkGetPhysicalDeviceQueueFamilyProperties2:
    case wire::kCmd_vkGetPhysicalDeviceMemoryProperties:
    case wire::kCmd_vkGetPhysicalDeviceExternalBufferProperties:
    case wire::kCmd_vkGetPhysicalDeviceExternalFenceProperties:
    case wire::kCmd_vkGetPhysicalDeviceExternalSemaphoreProperties:
    // A device's rules for a create info it is given (not for an object: each has its own id).
    case wire::kCmd_vkGetDeviceBufferMemoryRequirements:
    case wire::kCmd_vkGetDeviceImageMemoryRequirements:
    case wire::kCmd_vkGetDeviceImageSparseMemoryRequirements:
    case wire::kCmd_vkGetDescriptorSetLayoutSupport:
      return true;
    default:
      return false;
  }
}

bool Connection::call_raw(uint16_t command, const void* data, size_t size, Reply& reply) {
  return call_with(command, data, size, reply, {});
}

bool Connection::call(uint16_t command, const wire::Builder& b, Reply& reply, std::vector<Follower>& followers) {
  return call_with(command, b.GetBufferPointer(), b.GetSize(), reply, followers);
}

void Connection::append_calls_locked(std::span<Follower> calls) {
  for (Follower& f : calls) {
    append_locked(f.command, wire::kRecordWantsReply, f.payload.data(), f.payload.size());
    f.seq = ++sync_seq_;
  }
}

bool Connection::send_calls(std::span<Follower> calls) {
  std::lock_guard lock(send_mu_);
  if (!alive()) return false;
  append_calls_locked(calls);
  flush_locked();
  return true;
}

bool Connection::call_with(uint16_t command, const void* data, size_t size, Reply& reply,
                           std::span<Follower> followers) {
  uint64_t seq, sent_after;
  {
    std::lock_guard lock(send_mu_);
    if (!alive()) return false;
    append_locked(command, wire::kRecordWantsReply, data, size);
    seq = ++sync_seq_;
    append_calls_locked(followers);
    sent_after = submit_serial_;
    flush_locked();
  }
  if (!wait_reply(seq, reply)) return false;
  // bypassd ran every submission up to sent_after before this call: an answer that shows
  // signal operations may tell of them (may_know_done). Raised before the caller sees the
  // answer, so before it can pass it on.
  if (shows_signals(command, reply.header().result)) learned_done(sent_after);
  return true;
}

void Connection::learned_done(uint64_t serial) {
  uint64_t h = reply_horizon_.load(std::memory_order_relaxed);
  while (h < serial && !reply_horizon_.compare_exchange_weak(h, serial, std::memory_order_release)) {
  }
}

bool Connection::shows_signals(uint16_t command, int32_t result) {
  switch (command) {
    // A semaphore's value, reached or read: the submission that signalled it, and every signal
    // operation before it on its queue. A wait that timed out tells nothing.
    case wire::kCmd_vkWaitSemaphores:
      return result != VK_TIMEOUT;
    case wire::kCmd_vkGetSemaphoreCounterValue:
    // Everything submitted is done; an image back from presentation: the semaphores its
    // presentation waited for were signalled.
    case wire::kCmd_vkQueueWaitIdle:
    case wire::kCmd_vkDeviceWaitIdle:
    case wire::kCmd_vkAcquireNextImageKHR:
    case wire::kCmd_vkAcquireNextImage2KHR:
      return true;
    default:
      // Fence waits and status tell of their own fences' submissions (sync.cpp counts those).
      // Query results and event status show commands that ran, not signal operations: a
      // submission can have written its queries while its fence is not yet signalled.
      // Creation, properties, requirements, memory: nothing of the queues.
      return false;
  }
}

// One waiting thread at a time reads the reply ring; replies for other threads are stashed
// and their owners woken. The host answers blocking calls out of order, so each thread waits
// for its own sequence number.
bool Connection::wait_reply(uint64_t seq, Reply& reply) {
  std::unique_lock lock(reply_mu_);
  while (true) {
    if (auto it = stash_.find(seq); it != stash_.end()) {
      reply.message() = std::move(it->second);
      stash_.erase(it);
      return true;
    }
    if (!alive()) return false;
    if (reading_) {
      reply_cv_.wait(lock);
      continue;
    }
    reading_ = true;
    lock.unlock();
    transport::Message& msg = read_buf_;
    auto st = link_->recv(msg);
    lock.lock();
    reading_ = false;
    if (st != transport::Status::kOk) {
      mark_dead(lost_text(st));
    } else if (msg.kind == wire::kMsgError) {
      mark_dead("bypassd ended the session: " +
                std::string(reinterpret_cast<const char*>(msg.payload.data()), msg.payload.size()));
    } else if (msg.kind != wire::kMsgReply || msg.payload.size() < sizeof(wire::ReplyHeader)) {
      mark_dead("malformed reply");
    } else {
      wire::ReplyHeader h;
      std::memcpy(&h, msg.payload.data(), sizeof(h));
      if (h.seq == seq) {
        std::swap(reply.message(), msg);
        if (msg.payload.capacity() > kKeptReadBytes) msg = transport::Message{};  // a large answer's buffer
        reply_cv_.notify_all();  // another waiting thread may read next
        return true;
      }
      stash_[h.seq] = std::move(msg);
      msg = transport::Message{};
    }
    reply_cv_.notify_all();
  }
}

bool Connection::try_take_pushed(uint64_t seq, Reply& reply) {
  std::lock_guard lock(reply_mu_);
  auto it = stash_.find(seq);
  if (it == stash_.end()) return false;
  reply.message() = std::move(it->second);
  stash_.erase(it);
  return true;
}

std::span<std::byte> Connection::small_memory_heap() {
  std::lock_guard lock(heap_mu_);
  if (!small_heap_.empty()) return small_heap_;
  const int fd = take_fd(wire::kFdTagSmallMemoryHeap);
  if (fd < 0) return {};
  struct stat st;
  void* base = MAP_FAILED;
  if (fstat(fd, &st) == 0 && st.st_size > 0)
    base = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (base == MAP_FAILED) {
    protocol_error("cannot map the small-memory heap bypassd sent");
    return {};
  }
  small_heap_ = {static_cast<std::byte*>(base), static_cast<size_t>(st.st_size)};
  return small_heap_;
}

int Connection::take_fd(uint64_t tag) {
  std::lock_guard lock(fds_mu_);
  while (true) {
    if (auto it = fds_.find(tag); it != fds_.end()) {
      int fd = it->second;
      fds_.erase(it);
      return fd;
    }
    uint64_t got = 0;
    std::vector<int> fds;
    auto st = link_->recv_fds(got, fds, transport::deadline_after(std::chrono::seconds(5)));
    if (st != transport::Status::kOk || fds.empty()) {
      for (int fd : fds) close(fd);
      mark_dead("expected an fd from bypassd");
      return -1;
    }
    fds_.emplace(got, fds[0]);
    for (size_t i = 1; i < fds.size(); ++i) close(fds[i]);
  }
}

memshare::Client* Connection::present_client() {
  std::lock_guard lock(present_mu_);
  if (present_tried_) return present_.get();
  present_tried_ = true;
  if (!link_->carries_fds()) return nullptr;
  Reply& reply = thread_reply();
  if (!call_raw(wire::kCtlPresentJoin, nullptr, 0, reply) || reply.header().result != 0) return nullptr;
  const int fd = take_fd(wire::kFdTagPresent);
  if (fd < 0) return nullptr;
  auto client = memshare::Client::adopt(base::UniqueFd(fd), "bypass-icd pid " + std::to_string(getpid()));
  if (!client) {
    base::log(base::LogLevel::kWarn, "presentation through memshare unavailable: %s", client.error().message.c_str());
    return nullptr;
  }
  present_ = std::make_unique<memshare::Client>(std::move(client.value()));
  return present_.get();
}

bool Connection::present_name(uint64_t memory_id, uint64_t offset, uint64_t size, memshare::Name* out) {
  const wire::PresentNameRequest r{memory_id, offset, size};
  Reply& reply = thread_reply();
  if (!call_raw(wire::kCtlPresentName, &r, sizeof(r), reply) || reply.header().result != 0 ||
      reply.size() != sizeof(memshare::Name))
    return false;
  std::memcpy(out, reply.data(), sizeof(*out));
  return !out->empty();
}

bool Connection::send_fd(uint64_t tag, int fd) {
  const int fds[1] = {fd};
  if (link_->send_fds(tag, fds, transport::deadline_after(std::chrono::seconds(5))) == transport::Status::kOk)
    return true;
  mark_dead("could not send an fd to bypassd");
  return false;
}

void Connection::register_object(Object* o) {
  std::lock_guard lock(objects_mu_);
  objects_[o->id] = o;
}

void Connection::unregister_object(Object* o) {
  std::lock_guard lock(objects_mu_);
  objects_.erase(o->id);
}

uint64_t Connection::to_wire(VkObjectType type, uint64_t handle) {
  if (!handle) return 0;
  const uint64_t id = wire::is_dispatchable(type) ? reinterpret_cast<Object*>(handle)->id : handle;
  if (imports_.noting()) ImportTracker::note(type, id);
  return id;
}

bool Connection::from_wire(VkObjectType type, uint64_t id, uint64_t* handle) {
  if (!wire::is_dispatchable(type)) {
    *handle = id;
    return true;
  }
  std::lock_guard lock(objects_mu_);
  auto it = objects_.find(id);
  if (it == objects_.end() || it->second->type != type) return false;
  *handle = reinterpret_cast<uint64_t>(it->second);
  return true;
}

namespace {

// Each thread's encoder and reply buffer, usable from exit handlers too (base/thread_scratch.h:
// a plain thread_local Reply was once freed twice, inside the application).
struct ThreadScratch {
  wire::Builder builder{1024};
  Reply reply;
  std::vector<Follower> followers;
};
ThreadScratch& thread_scratch() { return base::thread_scratch<ThreadScratch>(); }

}  // namespace

wire::Builder& thread_builder() { return thread_scratch().builder; }

Reply& thread_reply() { return thread_scratch().reply; }

std::vector<Follower>& thread_followers() { return thread_scratch().followers; }

}  // namespace bypass::icd
