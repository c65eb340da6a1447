// Owning file descriptor: the transport's, so both libraries hand fds to each other as is.
#pragma once

#include "bypass/transport/unique_fd.h"

namespace bypass::memshare {
using transport::UniqueFd;
}  // namespace bypass::memshare
