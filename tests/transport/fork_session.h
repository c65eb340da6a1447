// A real two-process session for tests: the child runs `child_body` with its Channel (guest or
// host role), the parent gets the other end. The handshake runs over a socketpair.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "bypass/base/unix_socket.h"
#include "bypass/transport/session.h"
#include "test_util.h"

namespace bypass::transport::testing {

enum class Role { kGuest, kHost };

struct ForkedSession {
  std::unique_ptr<ChildProcess> child;
  std::optional<Channel> channel;  // the parent's end
};

// `child_role` is the role the child plays; the parent plays the other one.
inline ForkedSession fork_session(Role child_role, const SessionOptions& options,
                                  const std::function<int(Channel&)>& child_body) {
  ForkedSession result;
  auto pair = base::socket_pair(SOCK_SEQPACKET | SOCK_NONBLOCK);
  if (!pair) {
    ADD_FAILURE() << pair.error().message;
    return result;
  }
  base::UniqueFd child_end = std::move(pair->first), parent_end = std::move(pair->second);
  const Hello hello{1, 42, child_role == Role::kGuest ? "test-guest" : "test-host"};
  const Deadline deadline = deadline_after(std::chrono::seconds(10));
  result.child = std::make_unique<ChildProcess>([&]() -> int {
    parent_end.reset();  // only the parent may hold that end, or its death would go unnoticed
    Result<Channel> ch = child_role == Role::kGuest ? connect_socket(std::move(child_end), hello, deadline)
                                                    : accept_socket(std::move(child_end), hello, options, deadline);
    if (!ch) {
      fprintf(stderr, "child handshake failed: %s\n", ch.error().message.c_str());
      return 90;
    }
    return child_body(*ch);
  });
  child_end.reset();
  Result<Channel> ch = child_role == Role::kGuest ? accept_socket(std::move(parent_end), hello, options, deadline)
                                                  : connect_socket(std::move(parent_end), hello, deadline);
  if (ch) {
    result.channel.emplace(std::move(ch).value());
  } else {
    ADD_FAILURE() << "parent handshake failed: " << ch.error().message;
  }
  return result;
}

}  // namespace bypass::transport::testing
