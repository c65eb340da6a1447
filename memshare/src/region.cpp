#include "bypass/memshare/region.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "bypass/memshare/types.h"

namespace bypass::memshare {

MappedMemory& MappedMemory::operator=(MappedMemory&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void MappedMemory::reset() {
  if (data_ != nullptr) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

Result<MappedMemory> MappedMemory::map(int fd, uint64_t offset, uint64_t size, bool writable, bool populate) {
  if (size == 0) return make_error(Errc::kInvalidArgument, "cannot map zero bytes");
  if (offset % kPageSize != 0) return make_error(Errc::kInvalidArgument, "mapping offset not page aligned");
  const int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  const int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
  void* p = ::mmap(nullptr, size, prot, flags, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) return io_error("mmap", errno);
  return MappedMemory(static_cast<std::byte*>(p), size);
}

Result<UniqueFd> create_memfd(uint64_t size, std::string_view debug_name) {
  if (size == 0) return make_error(Errc::kInvalidArgument, "region size is zero");
  const std::string name(debug_name);
  UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) return io_error("memfd_create", errno);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return io_error("ftruncate", errno);
  return fd;
}

Result<Region> Region::create(uint64_t size, std::string_view debug_name) {
  auto fd = create_memfd(size, debug_name);
  if (!fd) return fd.error();
  auto memory = MappedMemory::map(fd->get(), 0, size, true);
  if (!memory) return memory.error();
  return Region(std::move(*fd), std::move(*memory));
}

}  // namespace bypass::memshare
