// Every command codegen/data/handwritten.txt lists is really there on its side. The build
// already fails when a declared icd_vkX or handle_vkX has no definition (the generated tables
// name each one); this checks what the loader and a session see: the ICD hands out a function
// for each guest-side command through the GetProcAddr function of its level, and bypassd's
// Handlers table holds a hand-written handler, not default_vkX, for each host-side command.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <vulkan/vulkan.h>

#include <string>

#include "bypass/host/gen/handwritten.h"
#include "bypass/wire/host_context.h"
#include "bypass/wire/ownership.h"

namespace bypass::wire {
namespace {

class Icd {
 public:
  Icd() : lib_(dlopen(BYPASS_ICD_PATH, RTLD_NOW | RTLD_LOCAL)) {
    if (!lib_) return;
    gipa_ = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib_, "vk_icdGetInstanceProcAddr"));
    gpdpa_ = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib_, "vk_icdGetPhysicalDeviceProcAddr"));
    if (gipa_) gdpa_ = reinterpret_cast<PFN_vkGetDeviceProcAddr>(gipa_(instance(), "vkGetDeviceProcAddr"));
  }
  ~Icd() {
    if (lib_) dlclose(lib_);
  }
  bool loaded() const { return gipa_ && gpdpa_ && gdpa_; }

  // GetProcAddr never dereferences an instance: any non-null one stands for "some instance".
  // vkGetDeviceProcAddr looks at a device's enabled extensions (an extension's command is NULL
  // without them, tested end to end by icd_proc-addr); with no device it answers every command
  // of the device level.
  static VkInstance instance() { return reinterpret_cast<VkInstance>(&kDummy); }
  static VkDevice device() { return VK_NULL_HANDLE; }

  // The ICD's function for `name` through the loader interface of `level` (0 global,
  // 1 instance, 2 physical device, 3 device); empty when all agree it is there, else which
  // lookup came back null.
  std::string missing(const char* name, uint8_t level) const {
    std::string out;
    if (!gipa_(instance(), name)) out += " vk_icdGetInstanceProcAddr(instance)";
    if (level == 0 && !gipa_(nullptr, name)) out += " vk_icdGetInstanceProcAddr(NULL)";
    if (level == 2 && !gpdpa_(instance(), name)) out += " vk_icdGetPhysicalDeviceProcAddr";
    if (level == 3 && !gdpa_(device(), name)) out += " vkGetDeviceProcAddr";
    return out;
  }

 private:
  static inline int kDummy = 0;
  void* lib_;
  PFN_vkGetInstanceProcAddr gipa_ = nullptr;
  PFN_vkGetInstanceProcAddr gpdpa_ = nullptr;
  PFN_vkGetDeviceProcAddr gdpa_ = nullptr;
};

TEST(HandwrittenTest, TheListIsNotEmptyAndNamesBothSides) {
  size_t guest = 0, host = 0;
  for (size_t i = 0; i < kHandwrittenCount; ++i) {
    guest += kHandwritten[i].guest;
    host += kHandwritten[i].host;
    EXPECT_TRUE(kHandwritten[i].guest || kHandwritten[i].host) << kHandwritten[i].name;
  }
  EXPECT_GT(guest, 0u);
  EXPECT_GT(host, 0u);
}

TEST(HandwrittenTest, EveryGuestSideCommandResolvesThroughTheIcd) {
  Icd icd;
  ASSERT_TRUE(icd.loaded()) << BYPASS_ICD_PATH << ": " << dlerror();
  // The lookups can fail: a name the ICD does not have comes back null.
  EXPECT_FALSE(icd.missing("vkNotACommandBYPASS", 3).empty());
  for (size_t i = 0; i < kHandwrittenCount; ++i) {
    const HandwrittenCommand& c = kHandwritten[i];
    if (c.guest) {
      EXPECT_EQ(icd.missing(c.name, c.level), "") << c.name << " is not exposed by the ICD";
    }
  }
}

TEST(HandwrittenTest, EveryHostSideCommandHasItsHandlerRegistered) {
  const Handlers defaults = default_handlers();
  Handlers h = defaults;
  host::register_handwritten_handlers(h);
  size_t checked = 0;
  for (size_t i = 0; i < kHandwrittenCount; ++i) {
    const HandwrittenCommand& c = kHandwritten[i];
    if (!c.host) continue;
    ASSERT_NE(c.id, kNoCommandId) << c.name << " is hand-written on the host but has no wire message";
    EXPECT_STREQ(command_name(c.id), c.name);
    const AnyFn fn = handler_of(h, c.id);
    EXPECT_NE(fn, nullptr) << c.name;
    EXPECT_NE(fn, handler_of(defaults, c.id)) << c.name << " still runs default_" << c.name;
    ++checked;
  }
  EXPECT_GT(checked, 0u);
}

TEST(HandwrittenTest, CommandsNotListedForTheHostKeepTheirDefaultHandler) {
  const Handlers defaults = default_handlers();
  Handlers h = defaults;
  host::register_handwritten_handlers(h);
  for (uint16_t id = 0; id < kCommandIdLimit; ++id) {
    bool listed = false;
    for (size_t i = 0; i < kHandwrittenCount; ++i) listed |= kHandwritten[i].host && kHandwritten[i].id == id;
    if (!listed) {
      EXPECT_EQ(handler_of(h, id), handler_of(defaults, id)) << command_name(id);
    }
  }
}

}  // namespace
}  // namespace bypass::wire
