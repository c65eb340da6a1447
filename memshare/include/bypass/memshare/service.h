// The memshare authority: owns the name table, the rights, the shadows and the transfer
// worker pool. Lives inside the host server (bypassd) or in the standalone `memshared`.
// Domains talk to it over UNIX SOCK_SEQPACKET sockets (see client.h); every connection is one
// domain, identified by SO_PEERCRED and the id assigned when the connection is accepted.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "bypass/base/unique_fd.h"
#include "bypass/memshare/error.h"
#include "bypass/memshare/image_endpoint.h"
#include "bypass/memshare/types.h"

namespace bypass::memshare {

class Client;

struct ServiceOptions {
  // Transfer workers. The copy is memory-bound: on a 2-core machine two workers already reach
  // memory bandwidth (see docs/memshare.md for the measurement).
  unsigned workers = 2;
  // Transfers are cut into chunks of this many bytes so workers share big copies.
  uint64_t chunk_bytes = 1 << 20;
  // One stderr line per domain connect/disconnect and per ended session.
  bool verbose = false;
  // Names owned by ended domains are remembered (up to this many) so later use of them says
  // kDomainGone instead of kUnknownName.
  size_t tombstones = 65536;
  // Domains connected at once (each has a thread and a control page here); one more is refused
  // at its registration (kBusy), so a client that opens connections in a loop cannot exhaust
  // the service's threads.
  size_t max_domains = 1024;
};

struct ServiceStats {
  uint64_t domains = 0;    // connected now
  uint64_t names = 0;      // live names
  uint64_t transfers = 0;  // completed
  uint64_t transfer_bytes = 0;
  uint64_t barrier_bytes = 0;
};

class Service {
 public:
  explicit Service(ServiceOptions options = {});
  ~Service();  // stop()
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Creates a listening socket at `path` and accepts domains on a thread.
  Result<void> listen(const std::string& path);
  // Accepts domains on an already listening SOCK_SEQPACKET socket.
  Result<void> serve(base::UniqueFd listening_socket);
  // Serves one domain on an already connected SOCK_SEQPACKET socket (e.g. a session socket
  // bypassd accepted). Returns the domain id the domain will be told at registration.
  Result<DomainId> adopt(base::UniqueFd connected_socket);
  // A Client for the calling process (the host) over a socket pair served by this service.
  Result<Client> connect_local(std::string label = "host");

  // Host authority. Names a device image owned by `owner` (typically the host's own domain
  // from connect_local()); transfers accept the name like any buffer name.
  Result<Name> name_image(DomainId owner, std::shared_ptr<ImageEndpoint> image);
  // Grants as the authority, whoever owns the name.
  Result<void> grant(const Name& name, DomainId domain, Access access);
  // Ends a domain as if its connection had closed (bypassd: the session ended).
  void end_domain(DomainId domain);

  ServiceStats stats() const;
  const ServiceOptions& options() const;

  // Stops accepting, closes every domain (revoking their names), finishes queued transfers.
  void stop();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace bypass::memshare
