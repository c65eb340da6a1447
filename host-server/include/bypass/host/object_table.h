// Per-session object table: guest-chosen ids -> the real driver's handles.
//
// Every id a guest sends is looked up here by type; an id of another session, of another
// type, or never created is refused (the session ends), never passed to the driver.
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <functional>
#include <unordered_map>
#include <vector>

namespace bypass::host {

struct ObjectEntry {
  VkObjectType type = VK_OBJECT_TYPE_UNKNOWN;
  uint64_t handle = 0;
  uint64_t owner = 0;  // real handle of the object whose lifetime bounds this one (0: none)
};

class ObjectTable {
 public:
  bool contains(uint64_t id) const { return by_id_.count(id) != 0; }
  // Resolves id to a handle of exactly `type`.
  bool lookup(VkObjectType type, uint64_t id, uint64_t* handle) const;
  // The id a handle was registered under (first registration wins), 0 if none.
  uint64_t id_of(uint64_t handle) const;
  const ObjectEntry* entry_of_handle(uint64_t handle) const;
  void add(VkObjectType type, uint64_t id, uint64_t handle, uint64_t owner);
  // Removes the object and, transitively, everything it owns. `on_removed` sees each entry.
  void remove(uint64_t handle, const std::function<void(const ObjectEntry&)>& on_removed = {});
  // Removes only what `owner` owns (a pool reset), not the owner itself.
  void remove_owned(uint64_t owner, const std::function<void(const ObjectEntry&)>& on_removed = {});
  size_t size() const { return by_id_.size(); }
  std::vector<ObjectEntry> entries() const;

 private:
  std::unordered_map<uint64_t, ObjectEntry> by_id_;
  std::unordered_map<uint64_t, std::vector<uint64_t>> ids_by_handle_;
  std::unordered_map<uint64_t, std::vector<uint64_t>> owned_;  // owner handle -> ids
  struct Last {
    uint64_t id = 0;
    VkObjectType type = VK_OBJECT_TYPE_UNKNOWN;
    uint64_t handle = 0;
  };
  mutable Last last_;  // lookup's last hit; the table has one user thread (the session's)
};

}  // namespace bypass::host
