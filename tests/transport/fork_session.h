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
  std::string error;
  const Hello hello{1, 42, child_role == Role::kGuest ? "test-guest" : "test-host"};
  const Deadline deadline = deadline_after(std::chrono::seconds(10));
  result.child = std::make_unique<ChildProcess>([&]() -> int {
    parent_end.reset();  // only the parent may hold that end, or its death would go unnoticed
    std::string child_error;
    std::optional<Channel> ch = child_role == Role::kGuest
                                    ? connect_socket(std::move(child_end), hello, &child_error, deadline)
                                    : accept_socket(std::move(child_end), hello, options, &child_error, deadline);
    if (!ch) {
      fprintf(stderr, "child handshake failed: %s\n", child_error.c_str());
      return 90;
    }
    return child_body(*ch);
  });
  child_end.reset();
  result.channel = child_role == Role::kGuest ? accept_socket(std::move(parent_end), hello, options, &error, deadline)
                                              : connect_socket(std::move(parent_end), hello, &error, deadline);
  if (!result.channel) ADD_FAILURE() << "parent handshake failed: " << error;
  return result;
}

}  // namespace bypass::transport::testing
