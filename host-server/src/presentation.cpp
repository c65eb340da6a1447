#include "presentation.h"

#include <sys/socket.h>

#include <mutex>
#include <optional>
#include <utility>

#include "bypass/memshare/client.h"
#include "bypass/memshare/image_endpoint.h"
#include "bypass/memshare/service.h"

namespace bypass::host {

namespace {

// Host-visible memory of a session, as a transfer source.
class MemoryEndpoint final : public memshare::ImageEndpoint {
 public:
  MemoryEndpoint(std::shared_ptr<void> keep, std::byte* base, uint64_t size)
      : keep_(std::move(keep)), base_(base), size_(size) {}
  uint64_t size() const override { return size_; }
  std::byte* linear() override { return base_; }

 private:
  std::shared_ptr<void> keep_;  // the mapping outlives every transfer that reads it
  std::byte* base_;
  uint64_t size_;
};

}  // namespace

struct Presentation::Impl {
  memshare::Service service;
  std::mutex mu;                         // host_ is made once
  std::optional<memshare::Client> host;  // owns the names bypassd makes

  memshare::Result<memshare::Client*> host_client() {
    std::lock_guard lock(mu);
    if (!host) {
      auto c = service.connect_local("bypassd");
      if (!c) return c.error();
      host.emplace(std::move(c.value()));
    }
    return &*host;
  }
};

Presentation& Presentation::get() {
  static Presentation p;
  return p;
}

Presentation::Presentation() : impl_(std::make_unique<Impl>()) {}
Presentation::~Presentation() = default;

memshare::Result<Presentation::Joined> Presentation::join() {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0)
    return memshare::make_error(memshare::Errc::kIo, "socketpair failed");
  Joined j;
  j.guest_socket = base::UniqueFd(pair[1]);
  auto domain = impl_->service.adopt(base::UniqueFd(pair[0]));
  if (!domain) return domain.error();
  j.domain = domain.value();
  return j;
}

memshare::Result<memshare::Name> Presentation::name(std::shared_ptr<void> keep, std::byte* base, uint64_t size,
                                                    memshare::DomainId reader) {
  auto host = impl_->host_client();
  if (!host) return host.error();
  auto name =
      impl_->service.name_image((*host)->domain(), std::make_shared<MemoryEndpoint>(std::move(keep), base, size));
  if (!name) return name.error();
  if (auto g = impl_->service.grant(name.value(), reader, memshare::Access::kRead); !g) {
    release(name.value());
    return g.error();
  }
  return name;
}

void Presentation::release(const memshare::Name& name) {
  if (auto host = impl_->host_client()) (void)(*host)->release(name);
}

void Presentation::end(memshare::DomainId domain) {
  if (domain != memshare::kNoDomain) impl_->service.end_domain(domain);
}

}  // namespace bypass::host
