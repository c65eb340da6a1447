// An allocator whose value-initialisation is default-initialisation: a std::vector<uint8_t,
// DefaultInitAllocator<uint8_t>> grows by resize() without zeroing the new bytes, for buffers
// that are written right after they grow (a batch of records, a frame being assembled).
#pragma once

#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace bypass::base {

template <class T, class A = std::allocator<T>>
class DefaultInitAllocator : public A {
  using Traits = std::allocator_traits<A>;

 public:
  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U, typename Traits::template rebind_alloc<U>>;
  };

  using A::A;

  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    Traits::construct(static_cast<A&>(*this), p, std::forward<Args>(args)...);
  }
};

}  // namespace bypass::base
