#include "bypass/base/mapping.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <string>

namespace bypass::base {

Result<Mapping> Mapping::map_shared(int fd, uint64_t offset, uint64_t size, bool writable, bool populate) {
  if (size == 0 || size > SIZE_MAX)
    return make_error(Errc::kInvalidArgument, "cannot map " + std::to_string(size) + " bytes");
  const int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void* p = ::mmap(nullptr, static_cast<size_t>(size), prot, MAP_SHARED | (populate ? MAP_POPULATE : 0), fd,
                   static_cast<off_t>(offset));
  if (p == MAP_FAILED) return errno_error(Errc::kIo, "mmap", errno);
  return Mapping(p, static_cast<size_t>(size));
}

void Mapping::reset() {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace bypass::base
