// A per-thread object that stays usable after the thread's thread_local objects are destroyed.
//
// Applications call Vulkan from exit handlers (GL through zink tears its context down in an
// atexit handler: waffle, piglit), and glibc destroys the calling thread's thread_local objects
// before those handlers run. A plain thread_local buffer used there is a use after free inside
// the application (a double free, a corrupted heap). So the object lives behind a trivially
// destructible pointer, always valid to read; an owner frees it at thread exit and clears the
// pointer, and a call after that makes a fresh one, which the ending process takes back.
#pragma once

namespace bypass::base {

template <class T>
T& thread_scratch() {
  static thread_local T* object = nullptr;
  struct Owner {
    ~Owner() {
      delete object;
      object = nullptr;
    }
  };
  static thread_local Owner owner;
  if (object == nullptr) {
    object = new T();
    (void)&owner;  // constructs the owner in this thread (once), so thread exit frees the object
  }
  return *object;
}

}  // namespace bypass::base
