// The session's control commands: bypass's own records (wire::ControlCommand, ids 0xF000 and
// up), one function each. They run on the session thread like any record; their payloads are
// plain structs from a hostile guest, so each checks its size before reading it and every id
// and range against the session's own objects before touching memory.
#include <spdlog/spdlog.h>

#include <cstring>
#include <vector>

#include "bypass/host/config.h"
#include "bypass/host/session.h"
#include "presentation.h"

namespace bypass::host {

bool Session::run_control(uint16_t command, const uint8_t* data, size_t size) {
  switch (command) {
    case wire::kCtlEnumeratePhysicalDevices:
      return control_enumerate_physical_devices(data, size);
    case wire::kCtlSessionStats:
      return control_session_stats(data, size);
    case wire::kCtlMemoryWrite:
      return control_memory_write(data, size);
    case wire::kCtlMemoryRead:
      return control_memory_read(data, size);
    case wire::kCtlMemoryReadAfter:
      return control_memory_read_after(data, size);
    case wire::kCtlExternalMemory:
      return control_external_memory(data, size);
    case wire::kCtlMemoryPlacement:
      return control_memory_placement(data, size);
    case wire::kCtlPresentJoin:
      return control_present_join(data, size);
    case wire::kCtlPresentName:
      return control_present_name(data, size);
    default:
      return decode.fail("control", "unknown control command");
  }
}

// Registers the instance's physical devices under the ids the guest chose (first_id on); a
// device enumerated before keeps its id.
bool Session::control_enumerate_physical_devices(const uint8_t* data, size_t size) {
  wire::EnumeratePhysicalDevicesRequest req;
  if (size != sizeof(req)) return fail("EnumeratePhysicalDevices", "bad request size");
  std::memcpy(&req, data, sizeof(req));
  uint64_t inst_bits = 0;
  if (!objects_.lookup(VK_OBJECT_TYPE_INSTANCE, req.instance_id, &inst_bits))
    return decode.fail("EnumeratePhysicalDevices", "unknown instance id", wire::Fault::kInvalidUsage);
  if (req.max_devices > 64) return fail("EnumeratePhysicalDevices", "too many devices requested");
  auto inst = wire::handle_from_bits<VkInstance>(inst_bits);
  auto d = dispatch_ptr(inst_bits);
  uint32_t n = 0;
  d->vkEnumeratePhysicalDevices(inst, &n, nullptr);
  std::vector<VkPhysicalDevice> devs(n);
  d->vkEnumeratePhysicalDevices(inst, &n, devs.data());
  devs.resize(n);
  uint32_t count = 0;
  for (VkPhysicalDevice pd : devs) {
    if (count >= req.max_devices) break;
    VkPhysicalDeviceProperties props;
    d->vkGetPhysicalDeviceProperties(pd, &props);
    if (!config_.device_name.empty() && !std::strstr(props.deviceName, config_.device_name.c_str())) continue;
    const uint64_t id = req.first_id + count;
    const uint64_t bits = wire::handle_bits(pd);
    if (objects_.id_of(bits) == 0) {
      if (const char* why = refuse_new_id(VK_OBJECT_TYPE_PHYSICAL_DEVICE, id))
        return fail("EnumeratePhysicalDevices", why);
      add_object(VK_OBJECT_TYPE_PHYSICAL_DEVICE, id, bits, inst_bits);
    }
    ++count;
  }
  // Reply: the count, then the id of each device (a device enumerated before keeps its id).
  std::vector<uint64_t> reply{count};
  for (VkPhysicalDevice pd : devs) {
    const uint64_t id = objects_.id_of(wire::handle_bits(pd));
    if (id && reply.size() <= req.max_devices) reply.push_back(id);
  }
  reply[0] = reply.size() - 1;
  send_raw_reply(reply_seq, wire::kCtlEnumeratePhysicalDevices, VK_SUCCESS, reply.data(), reply.size() * 8);
  return true;
}

bool Session::control_session_stats(const uint8_t*, size_t) {
  const wire::StatsReply r{object_count(), stats_.records.load(), stats_.bytes.load(), stats_.memory_bytes.load()};
  send_raw_reply(reply_seq, wire::kCtlSessionStats, 0, &r, sizeof(r));
  return true;
}

SharedMemory* Session::shadow_range_of(const uint8_t* data, size_t size, wire::MemoryRange& r, bool* gone) {
  *gone = false;
  if (size < sizeof(r)) {
    decode.fail("memory", "short request");
    return nullptr;
  }
  std::memcpy(&r, data, sizeof(r));
  // A barrier of one guest thread may name memory another thread freed meanwhile (its barriers
  // read every mapped allocation): not the guest's fault, nothing to do.
  if (r.memory_id != 0 && r.memory_id <= highest_id_ && !objects_.contains(r.memory_id)) {
    *gone = true;
    return nullptr;
  }
  SharedMemory* found = nullptr;
  if (!memory_of_id(r.memory_id, "memory", &found)) return nullptr;
  if (!found) {
    decode.fail("memory", "memory is not host-visible");
    return nullptr;
  }
  if (r.offset > found->size || r.size > found->size - r.offset) {
    decode.fail("memory", "range out of bounds");
    return nullptr;
  }
  if (!found->guest_view) found->guest_view = std::make_unique<GuestView>(found->size);
  return found;
}

// Shadow memory, guest to host: the guest's dirty bytes of a range, no reply.
bool Session::control_memory_write(const uint8_t* data, size_t size) {
  wire::MemoryRange r;
  bool gone;
  SharedMemory* found = shadow_range_of(data, size, r, &gone);
  if (!found) return gone;
  SharedMemory& m = *found;
  if (size - sizeof(r) < r.size) return decode.fail("memory", "short write");
  auto* base = static_cast<std::byte*>(m.ptr);
  std::memcpy(base + r.offset, data + sizeof(r), r.size);
  m.guest_view->wrote(base, r.offset, r.size);
  return true;
}

// Shadow memory, host to guest: only what differs from the guest's copy goes back.
bool Session::control_memory_read(const uint8_t* data, size_t size) {
  wire::MemoryRange r;
  bool gone;
  SharedMemory* found = shadow_range_of(data, size, r, &gone);
  if (!found) return gone && send_read_flags(wire::kCtlMemoryRead, wire::kMemoryReadGone);
  send_shadow_read(*found, wire::kCtlMemoryRead, r.offset, r.size);
  return true;
}

// A read barrier's reply without runs: skipped or gone.
bool Session::send_read_flags(uint16_t command, uint32_t flags) {
  const wire::MemoryReadReply reply{0, flags};
  send_raw_reply(reply_seq, command, 0, &reply, sizeof(reply));
  return true;
}

// The same, riding behind a waiting call: read only if that call was the last one answered and
// it succeeded (its work is done: the reply was sent, under reply_mu_, after the driver said
// so). A call still with a waiter thread, one that failed or timed out, or a later call
// answered in between: skipped, and the guest reads after the call's reply instead.
bool Session::control_memory_read_after(const uint8_t* data, size_t size) {
  wire::MemoryReadAfter a;
  if (size != sizeof(a)) return decode.fail("memory read after", "bad request size");
  std::memcpy(&a, data, sizeof(a));
  if (!wants_reply) return decode.fail("memory read after", "asks for no reply");
  if (a.calls_back == 0 || a.calls_back >= reply_seq)
    return decode.fail("memory read after", "does not follow an earlier call");
  const uint64_t after_seq = reply_seq - a.calls_back;
  wire::MemoryRange r;
  bool gone;
  SharedMemory* found = shadow_range_of(data, sizeof(r), r, &gone);
  if (!found) return gone && send_read_flags(wire::kCtlMemoryReadAfter, wire::kMemoryReadGone);
  bool answered;
  {
    std::lock_guard lock(reply_mu_);
    answered = last_call_seq_ == after_seq && last_call_result_ == VK_SUCCESS;
  }
  if (answered) {
    ++reads_after_;
    send_shadow_read(*found, wire::kCtlMemoryReadAfter, r.offset, r.size);
  } else {
    ++reads_after_skipped_;
    send_read_flags(wire::kCtlMemoryReadAfter, wire::kMemoryReadSkipped);
  }
  return true;
}

void Session::send_shadow_read(SharedMemory& m, uint16_t command, uint64_t offset, uint64_t size) {
  auto* base = static_cast<std::byte*>(m.ptr);
  std::vector<wire::MemoryRun> runs;
  m.guest_view->changed(base, offset, size, runs);
  uint64_t bytes = 0;
  for (const auto& run : runs) bytes += run.size;
  shadow_read_asked_ += size;
  shadow_read_sent_ += bytes;
  const wire::MemoryReadReply header{static_cast<uint32_t>(runs.size()), 0};
  read_reply_.resize(sizeof(header) + runs.size() * sizeof(wire::MemoryRun) + bytes);
  std::byte* out = read_reply_.data();
  std::memcpy(out, &header, sizeof(header));
  out += sizeof(header);
  if (!runs.empty()) std::memcpy(out, runs.data(), runs.size() * sizeof(wire::MemoryRun));
  out += runs.size() * sizeof(wire::MemoryRun);
  for (const auto& run : runs) {
    std::memcpy(out, base + run.offset, run.size);
    out += run.size;
  }
  send_raw_reply(reply_seq, command, 0, read_reply_.data(), read_reply_.size());
}

// Host-visible memory imported or exported as an fd: its pages' fd when they are a file the
// guest can map, else shadowed.
bool Session::control_external_memory(const uint8_t* data, size_t size) {
  uint64_t id = 0;
  if (size < sizeof(id)) return decode.fail("external memory", "short request");
  std::memcpy(&id, data, sizeof(id));
  SharedMemory* m = nullptr;
  if (!memory_of_id(id, "external memory", &m)) return false;
  if (!m || !m->driver_mapped) return decode.fail("external memory", "not external host-visible memory");
  wire::ExternalMemoryReply r{m->file_offset, m->fd >= 0, 0};
  if (r.shared) {
    const int fds[1] = {m->fd};
    if (send_fds(wire::kFdTagMemoryBase + id, fds) != transport::Status::kOk) r.shared = 0;
  }
  send_raw_reply(reply_seq, wire::kCtlExternalMemory, 0, &r, sizeof(r));
  return true;
}

// Host-visible memory in a heap (a VM slot's, or the small-memory heap): where it lies in it.
bool Session::control_memory_placement(const uint8_t* data, size_t size) {
  uint64_t id = 0;
  if (size < sizeof(id)) return decode.fail("memory placement", "short request");
  std::memcpy(&id, data, sizeof(id));
  SharedMemory* m = nullptr;
  if (!memory_of_id(id, "memory placement", &m)) return false;
  if (!m || !m->in_heap) return decode.fail("memory placement", "not host-visible memory in a heap");
  const wire::MemoryPlacement r{m->file_offset, m->size};
  send_raw_reply(reply_seq, wire::kCtlMemoryPlacement, 0, &r, sizeof(r));
  return true;
}

// Joins the presentation service: the guest gets its end of a memshare socket, once.
bool Session::control_present_join(const uint8_t*, size_t) {
  if (present_domain_ != memshare::kNoDomain) return decode.fail("present", "joined twice");
  auto joined = Presentation::get().join();
  uint64_t domain = 0;
  if (joined) {
    const int fds[1] = {joined->guest_socket.get()};
    if (send_fds(wire::kFdTagPresent, fds) == transport::Status::kOk)
      domain = joined->domain;
    else
      Presentation::get().end(joined->domain);
  } else {
    spdlog::warn("session {}: presentation service: {}", id_, joined.error().message);
  }
  present_domain_ = domain;
  send_raw_reply(reply_seq, wire::kCtlPresentJoin, domain ? 0 : VK_ERROR_INITIALIZATION_FAILED, &domain,
                 sizeof(domain));
  return true;
}

// Names a range of host-visible memory in memshare for the guest's presentation domain.
bool Session::control_present_name(const uint8_t* data, size_t size) {
  wire::PresentNameRequest r;
  if (size < sizeof(r)) return decode.fail("present", "short request");
  std::memcpy(&r, data, sizeof(r));
  if (present_domain_ == memshare::kNoDomain) return decode.fail("present", "name before join");
  SharedMemory* found = nullptr;
  if (!memory_of_id(r.memory_id, "present", &found)) return false;
  if (!found || !found->mapping) {  // not host-visible, or the driver's mapping
    const memshare::Name none{};
    send_raw_reply(reply_seq, wire::kCtlPresentName, VK_ERROR_FEATURE_NOT_PRESENT, &none, sizeof(none));
    return true;
  }
  SharedMemory& m = *found;
  if (r.size == 0 || r.offset > m.size || r.size > m.size - r.offset)
    return decode.fail("present", "range out of bounds");
  auto name = Presentation::get().name(m.mapping, static_cast<std::byte*>(m.ptr) + r.offset, r.size, present_domain_);
  memshare::Name out{};
  if (name) {
    out = name.value();
    m.present_names.push_back(out);
  } else {
    spdlog::warn("session {}: naming memory for presentation: {}", id_, name.error().message);
  }
  send_raw_reply(reply_seq, wire::kCtlPresentName, name ? 0 : VK_ERROR_OUT_OF_HOST_MEMORY, &out, sizeof(out));
  return true;
}

bool Session::memory_of_id(uint64_t id, const char* where, SharedMemory** out) {
  uint64_t handle = 0;
  if (!objects_.lookup(VK_OBJECT_TYPE_DEVICE_MEMORY, id, &handle))
    return decode.fail(where, "unknown memory id", wire::Fault::kInvalidUsage);
  auto it = memory_.find(handle);
  *out = it == memory_.end() ? nullptr : &it->second;
  return true;
}

}  // namespace bypass::host
