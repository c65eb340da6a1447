// Who implements what: the commands written by hand on each side, and who owns each extension
// bypass knows. The one home of both lists is codegen/data/ (handwritten.txt, extensions.txt);
// gen_ownership.py turns them into these tables, which the ICD, bypassd and the tests read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace bypass::wire {

inline constexpr uint16_t kNoCommandId = 0xFFFF;

struct HandwrittenCommand {
  const char* name;
  uint16_t id;    // kCmd_vkX, or kNoCommandId for a command without a wire message
  uint8_t level;  // 0 global, 1 instance, 2 physical device, 3 device
  bool guest;     // the ICD defines icd::icd_vkX
  bool host;      // bypassd defines host::handle_vkX
};
extern const HandwrittenCommand kHandwritten[];
extern const size_t kHandwrittenCount;

enum class ExtensionOwner : uint8_t {
  kHost,     // the host driver: listed to the guest when the host lists it, enabled on the driver
  kGuest,    // the ICD itself: always listed to the guest, never enabled on the host's driver
  kLoader,   // a loader-level flag: accepted by vkCreateInstance, never listed or enabled
  kBypassd,  // bypassd's own use of the driver: never listed to the guest
};

struct ExtensionInfo {
  const char* name;
  bool instance;  // an instance extension, else a device extension
  ExtensionOwner owner;
  uint32_t spec_version;  // vk.xml's
  bool needs_fds;         // passes file descriptors: not offered where fds cannot cross
};
extern const ExtensionInfo kExtensions[];
extern const size_t kExtensionCount;

inline const ExtensionInfo* find_extension(std::string_view name) {
  for (size_t i = 0; i < kExtensionCount; ++i)
    if (name == kExtensions[i].name) return &kExtensions[i];
  return nullptr;
}

// Whether the host must keep `name` from its driver: the guest ICD implements it (or the loader
// does), so the host driver never sees it enabled.
inline bool guest_side_extension(std::string_view name) {
  const ExtensionInfo* x = find_extension(name);
  return x && (x->owner == ExtensionOwner::kGuest || x->owner == ExtensionOwner::kLoader);
}

}  // namespace bypass::wire
