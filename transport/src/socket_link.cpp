#include "socket_link.h"

#include "futex.h"
#include "socket_io.h"

namespace bypass::transport::detail {

void SocketLink::wake(std::atomic<uint32_t>* word) { futex_wake(word); }
void SocketLink::wake_all(std::atomic<uint32_t>* word) { futex_wake_all(word); }

bool SocketLink::sleep(std::atomic<uint32_t>* word, uint32_t expected, std::chrono::nanoseconds timeout) {
  return futex_wait(word, expected, timeout);
}

bool SocketLink::peer_gone() { return peer_hung_up(socket_.get()); }

}  // namespace bypass::transport::detail
