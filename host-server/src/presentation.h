// memshare for presentation: bypassd is the authority of its own memshare service. A guest
// that presents joins it as a domain over a socket pair bypassd hands it; bypassd names the
// host-visible memory its swapchain images are copied into (as image endpoints) and grants the
// guest read access; the guest's presenter then moves each finished frame into its own
// memory with a memshare transfer, on the service's worker pool.
#pragma once

#include <cstdint>
#include <memory>

#include "bypass/base/unique_fd.h"
#include "bypass/memshare/error.h"
#include "bypass/memshare/types.h"

namespace bypass::host {

class Presentation {
 public:
  // The process's service, started on first use.
  static Presentation& get();

  struct Joined {
    memshare::DomainId domain = memshare::kNoDomain;
    base::UniqueFd guest_socket;  // the guest's end, to be sent to it
  };
  memshare::Result<Joined> join();

  // Names `size` bytes at `base` (kept mapped by `keep` for as long as a transfer may read
  // them) and lets `reader` read them.
  memshare::Result<memshare::Name> name(std::shared_ptr<void> keep, std::byte* base, uint64_t size,
                                        memshare::DomainId reader);
  void release(const memshare::Name& name);
  // The session ended: its domain goes, and with it its names and mappings.
  void end(memshare::DomainId domain);

  ~Presentation();

 private:
  Presentation();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace bypass::host
