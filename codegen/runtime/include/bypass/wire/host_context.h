// The host's side of the generated wire code: the interface a session implements for the
// generated run functions (HostContext), and the generated tables and functions that do not
// depend on any one command. The per-command types (Args_vkX, the Handlers table, Dispatch)
// are generated from vk.xml into bypass/wire/gen/host_commands.h; docs/codegen.md maps every
// generated symbol to its generator.
#pragma once

#include <vulkan/vulkan.h>

#include <cstddef>
#include <cstdint>
#include <functional>

#include "bypass/wire/gen/host_commands.h"
#include "bypass/wire/runtime.h"

namespace bypass::wire {

// What the generated host code needs from a session.
class HostContext {
 public:
  virtual ~HostContext() = default;
  DecodeContext decode;
  Handlers handlers;
  uint64_t reply_seq = 0;  // set by the session for records that want a reply
  // Whether the record asks for a reply (kRecordWantsReply); consulted by the commands of
  // codegen/data/async_unasked.txt, which the guest may send without asking.
  bool wants_reply = true;
  virtual const Dispatch& dispatch_of(uint64_t dispatchable) = 0;
  // A guest-chosen id for a new object: nullptr when it may be used (non-zero, unused in this
  // session, within the session's object limit), else why not (valid until the next call).
  virtual const char* refuse_new_id(VkObjectType type, uint64_t id) = 0;
  virtual void add_object(VkObjectType type, uint64_t id, uint64_t handle, uint64_t owner) = 0;
  virtual void remove_object(VkObjectType type, uint64_t handle) = 0;
  // Sends the reply built in `b` (finished) for `seq`.
  virtual void send_reply(uint64_t seq, uint16_t command, int32_t result, Builder& b) = 0;
  // Runs `job` where it may block without stalling the session (a waiter thread); false, with
  // decode.error set, when the session takes no more pending calls.
  [[nodiscard]] virtual bool run_blocking(std::function<void()> job) = 0;
  // Called before the driver destroys `handle`, the parameter `what` of `command`: false, with
  // decode.error set, when a pending blocking call still uses it or anything it owns.
  [[nodiscard]] virtual bool destroy_ok(const char* command, const char* what, uint64_t handle) = 0;
  // Called by the generated vkDestroyX / vkFreeX of a device's child (command_may_defer_destroy)
  // instead of the driver's call: true when the session destroys `handle` itself later (work
  // in flight may still use it), false to have it destroyed now. Either way the object leaves
  // the table at once (remove_object).
  virtual bool defer_destroy(uint64_t device, VkObjectType type, uint64_t handle) {
    (void)device, (void)type, (void)handle;
    return false;
  }
  // Thread-safe builder for replies produced off the session thread.
  virtual Builder& reply_builder() = 0;
  bool fail(const char* where, const char* what) { return decode.fail(where, what); }
};

// ---------------------------------------------------------------- generated (host_tables.cpp)
using RunFn = bool (*)(HostContext& c, const uint8_t* data, size_t size);
// Verifies, decodes and handles one record; false ends the session (c.decode.error says why).
// Indexed by command id; null for ids no command has.
extern const RunFn kRunTable[kCommandIdLimit];

// Every entry default_vkX: the driver's command, with the session's object tracking.
Handlers default_handlers();
// The entry of `h` for command `id` as an untyped function pointer, nullptr for an id without
// a command: which handler runs a command (tests, diagnostics).
using AnyFn = void (*)();
AnyFn handler_of(const Handlers& h, uint16_t id);

// Loads every command the driver exposes (canonical name first, then aliases).
void load_instance_dispatch(Dispatch& d, PFN_vkGetInstanceProcAddr gipa, VkInstance instance);
void load_device_dispatch(Dispatch& d, PFN_vkGetDeviceProcAddr gdpa, VkDevice device);

const char* command_name(uint16_t id);
// Whether the command is in blocking.txt (may be handed to a waiter thread).
bool command_blocks(uint16_t id);

// ---------------------------------------------------------------- generated (host_lifetime.cpp)
// Whether the command destroys or frees objects (vkDestroy*, vkFree*).
bool command_destroys(uint16_t id);
// Whether it destroys one child of a device and may leave that to the session (defer_destroy).
bool command_may_defer_destroy(uint16_t id);
// The object types of a device's children in the order a teardown destroys them, users
// before what they use (derived from vk.xml by gen_lifetime.py).
extern const VkObjectType kTeardownOrder[];
extern const size_t kTeardownOrderCount;
// Destroys one child of `device` with the driver's vkDestroyX / vkFreeX; false for an object
// type that is not in kTeardownOrder.
bool destroy_device_child(const Dispatch& d, VkDevice device, VkObjectType type, uint64_t handle);

}  // namespace bypass::wire
