#include "bypass/base/memfd.h"

#include <fcntl.h>
#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace bypass::base {

Result<UniqueFd> make_memfd(const char* name, size_t size, bool hugetlb) {
  unsigned flags = MFD_CLOEXEC;
  if (hugetlb) flags |= MFD_HUGETLB | MFD_HUGE_2MB;
  UniqueFd fd(::memfd_create(name, flags));
  if (!fd) return errno_error(Errc::kIo, std::string("memfd_create ") + name, errno);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return errno_error(Errc::kIo, std::string("ftruncate ") + name, errno);
  }
  return fd;
}

Result<UniqueFd> reopen_read_only(int fd) {
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  UniqueFd ro(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ro) return errno_error(Errc::kIo, "reopen read-only " + path, errno);
  return ro;
}

}  // namespace bypass::base
