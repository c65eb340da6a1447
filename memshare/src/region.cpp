#include "bypass/memshare/region.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "bypass/memshare/types.h"

namespace bypass::memshare {

Result<base::Mapping> map_memory(int fd, uint64_t offset, uint64_t size, bool writable, bool populate) {
  if (size == 0) return make_error(Errc::kInvalidArgument, "cannot map zero bytes");
  if (offset % kPageSize != 0) return make_error(Errc::kInvalidArgument, "mapping offset not page aligned");
  auto mapping = base::Mapping::map_shared(fd, offset, size, writable, populate);
  if (!mapping) return from_base(mapping.error());
  return std::move(mapping).value();
}

Result<base::UniqueFd> create_memfd(uint64_t size, std::string_view debug_name) {
  if (size == 0) return make_error(Errc::kInvalidArgument, "region size is zero");
  const std::string name(debug_name);
  base::UniqueFd fd(::memfd_create(name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) return io_error("memfd_create", errno);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return io_error("ftruncate", errno);
  return fd;
}

Result<Region> Region::create(uint64_t size, std::string_view debug_name) {
  auto fd = create_memfd(size, debug_name);
  if (!fd) return fd.error();
  auto memory = map_memory(fd->get(), 0, size, true);
  if (!memory) return memory.error();
  return Region(std::move(*fd), std::move(*memory));
}

}  // namespace bypass::memshare
