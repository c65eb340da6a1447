#include "bypass/host/object_table.h"

#include <algorithm>

namespace bypass::host {

bool ObjectTable::lookup(VkObjectType type, uint64_t id, uint64_t* handle) const {
  // A command stream names the same command buffer record after record: one entry remembered,
  // forgotten by every change to the table.
  if (id != 0 && id == last_.id && type == last_.type) {
    *handle = last_.handle;
    return true;
  }
  auto it = by_id_.find(id);
  if (it == by_id_.end() || it->second.type != type) return false;
  *handle = it->second.handle;
  last_ = {id, type, it->second.handle};
  return true;
}

uint64_t ObjectTable::id_of(uint64_t handle) const {
  auto it = ids_by_handle_.find(handle);
  return it == ids_by_handle_.end() || it->second.empty() ? 0 : it->second.front();
}

const ObjectEntry* ObjectTable::entry_of_handle(uint64_t handle) const {
  uint64_t id = id_of(handle);
  if (!id) return nullptr;
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &it->second;
}

void ObjectTable::add(VkObjectType type, uint64_t id, uint64_t handle, uint64_t owner) {
  last_ = {};
  by_id_[id] = ObjectEntry{type, handle, owner};
  ids_by_handle_[handle].push_back(id);
  if (owner) owned_[owner].push_back(id);
}

void ObjectTable::remove_owned(uint64_t owner, const std::function<void(const ObjectEntry&)>& on_removed) {
  last_ = {};
  auto it = owned_.find(owner);
  if (it == owned_.end()) return;
  std::vector<uint64_t> ids = std::move(it->second);
  owned_.erase(it);
  for (uint64_t id : ids) {
    auto e = by_id_.find(id);
    if (e == by_id_.end()) continue;
    remove(e->second.handle, on_removed);
  }
}

void ObjectTable::remove(uint64_t handle, const std::function<void(const ObjectEntry&)>& on_removed) {
  last_ = {};
  remove_owned(handle, on_removed);
  // Queues fetched twice share a handle: every id that maps to it goes.
  auto h = ids_by_handle_.find(handle);
  if (h == ids_by_handle_.end()) return;
  std::vector<uint64_t> ids = std::move(h->second);
  ids_by_handle_.erase(h);
  for (uint64_t id : ids) {
    auto it = by_id_.find(id);
    if (it == by_id_.end()) continue;
    ObjectEntry e = it->second;
    if (e.owner) {
      auto o = owned_.find(e.owner);
      if (o != owned_.end()) std::erase(o->second, id);
    }
    by_id_.erase(it);
    if (on_removed) on_removed(e);
  }
}

std::vector<ObjectEntry> ObjectTable::entries() const {
  std::vector<ObjectEntry> out;
  out.reserve(by_id_.size());
  for (auto& [id, e] : by_id_) out.push_back(e);
  return out;
}

}  // namespace bypass::host
