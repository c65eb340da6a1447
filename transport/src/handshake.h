// What every handshake checks, whatever carries it (a UNIX socket, a VM's device slot).
#pragma once

#include <cstdint>
#include <string>

#include "bypass/transport/session.h"

namespace bypass::transport::detail {

// Empty if the two sides can talk, else the one line both of them report under kRefused
// (naming both sides' transport version, protocol version and schema hash).
std::string compare_versions(const Hello& guest, uint32_t guest_transport, const Hello& host, uint32_t host_transport);

// A refused handshake under kRefused: `text` is ours or the peer's Reject text, which may
// already start with "handshake refused" (compare_versions, a peer running this code).
Error refused(const std::string& text);

}  // namespace bypass::transport::detail
