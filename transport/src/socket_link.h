// The Link of a session between two processes of one machine: a sealed memfd both map, futex
// wake-ups on the rings' wait words, and the UNIX socket (SCM_RIGHTS, and its hang-up as the
// sign that the peer died).
#pragma once

#include "bypass/base/unique_fd.h"
#include "bypass/transport/link.h"
#include "region.h"

namespace bypass::transport::detail {

class SocketLink final : public Link {
 public:
  SocketLink(base::UniqueFd socket, base::Mapping mapping) : socket_(std::move(socket)), mapping_(std::move(mapping)) {}

  std::span<std::byte> region() const override { return {mapping_.data(), mapping_.size()}; }
  void wake(std::atomic<uint32_t>* word) override;
  void wake_all(std::atomic<uint32_t>* word) override;
  bool sleep(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::nanoseconds timeout) override;
  bool peer_gone() override;
  // A blocked wait looks at the socket this often.
  std::chrono::nanoseconds liveness_slice() const override { return std::chrono::milliseconds(20); }
  int socket() const override { return socket_.get(); }

 private:
  base::UniqueFd socket_;
  base::Mapping mapping_;
};

}  // namespace bypass::transport::detail
