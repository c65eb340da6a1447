// fd passing through a real socket pair: several fds with data, truncation of the data and of
// the control message (no fd may leak either way), a dead peer.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "bypass/base/fd_passing.h"
#include "bypass/base/unix_socket.h"

namespace bypass::base {
namespace {

// How many fds this process has open, to show that nothing leaked.
int open_fd_count() {
  int n = 0;
  for (int fd = 0; fd < 4096; ++fd) n += ::fcntl(fd, F_GETFD) >= 0 ? 1 : 0;
  return n;
}

SocketPair seqpacket_pair() {
  auto pair = socket_pair(SOCK_SEQPACKET);
  EXPECT_TRUE(pair.ok()) << pair.message();
  return std::move(pair).value();
}

std::vector<UniqueFd> make_pipes(int count) {
  std::vector<UniqueFd> fds;
  for (int i = 0; i < count / 2; ++i) {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    fds.emplace_back(p[0]);
    fds.emplace_back(p[1]);
  }
  return fds;
}

std::vector<int> raw(const std::vector<UniqueFd>& fds) {
  std::vector<int> out;
  for (const UniqueFd& fd : fds) out.push_back(fd.get());
  return out;
}

TEST(FdPassingTest, SeveralFdsArriveWithTheirDataAndStillWork) {
  SocketPair s = seqpacket_pair();
  std::vector<UniqueFd> pipes = make_pipes(4);
  const std::string text = "four fds";
  auto sent = send_fds(s.first.get(), std::as_bytes(std::span(text)), raw(pipes));
  ASSERT_TRUE(sent.ok()) << sent.message();
  EXPECT_EQ(*sent, text.size());

  std::byte buffer[64];
  std::vector<UniqueFd> got;
  auto n = recv_fds(s.second.get(), buffer, &got);
  ASSERT_TRUE(n.ok()) << n.message();
  ASSERT_EQ(*n, text.size());
  EXPECT_EQ(std::memcmp(buffer, text.data(), text.size()), 0);
  ASSERT_EQ(got.size(), 4u);
  for (size_t i = 0; i < got.size(); ++i) {
    // Each received fd is close-on-exec and names the same pipe as the one sent.
    EXPECT_EQ(::fcntl(got[i].get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    struct stat a {
    }, b{};
    ASSERT_EQ(::fstat(got[i].get(), &a), 0);
    ASSERT_EQ(::fstat(pipes[i].get(), &b), 0);
    EXPECT_EQ(a.st_ino, b.st_ino);
  }
  // Write through the received write end, read through the original read end.
  ASSERT_EQ(::write(got[1].get(), "x", 1), 1);
  char c = 0;
  ASSERT_EQ(::read(pipes[0].get(), &c, 1), 1);
  EXPECT_EQ(c, 'x');
}

TEST(FdPassingTest, MoreFdsThanRoomIsTooManyFdsAndLeaksNothing) {
  SocketPair s = seqpacket_pair();
  std::vector<UniqueFd> pipes = make_pipes(6);
  const char byte = 'm';
  ASSERT_TRUE(send_fds(s.first.get(), std::as_bytes(std::span(&byte, 1)), raw(pipes)).ok());
  pipes.clear();
  const int before = open_fd_count();
  std::byte buffer[8];
  std::vector<UniqueFd> got;
  auto n = recv_fds(s.second.get(), buffer, &got, 2);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.code(), Errc::kTooManyFds);
  // The kernel closed what did not fit; what did fit is owned by `got`.
  EXPECT_LE(got.size(), 2u);
  got.clear();
  EXPECT_EQ(open_fd_count(), before);
}

TEST(FdPassingTest, DataLargerThanTheBufferIsTruncatedAndItsFdsAreClosed) {
  SocketPair s = seqpacket_pair();
  std::vector<UniqueFd> pipes = make_pipes(2);
  const std::string text(100, 'd');
  ASSERT_TRUE(send_fds(s.first.get(), std::as_bytes(std::span(text)), raw(pipes)).ok());
  pipes.clear();
  const int before = open_fd_count();
  std::byte buffer[10];
  auto n = recv_fds(s.second.get(), buffer, nullptr);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.code(), Errc::kTruncated);
  EXPECT_EQ(open_fd_count(), before);
}

TEST(FdPassingTest, TooManyFdsToSendIsRefusedBeforeTheKernelSeesThem) {
  SocketPair s = seqpacket_pair();
  std::vector<int> fds(kMaxFdsPerMessage + 1, s.first.get());
  const char byte = 0;
  auto sent = send_fds(s.first.get(), std::as_bytes(std::span(&byte, 1)), fds);
  EXPECT_EQ(sent.code(), Errc::kInvalidArgument);
}

TEST(FdPassingTest, AClosedPeerIsPeerGoneNotSigpipe) {
  SocketPair s = seqpacket_pair();
  s.second.reset();
  const char byte = 0;
  auto sent = send_fds(s.first.get(), std::as_bytes(std::span(&byte, 1)), {});
  EXPECT_EQ(sent.code(), Errc::kPeerGone) << sent.message();
}

TEST(FdPassingTest, NothingToReadIsWouldBlockWithDontwait) {
  SocketPair s = seqpacket_pair();
  std::byte buffer[8];
  auto n = recv_fds(s.second.get(), buffer, nullptr, kMaxFdsPerMessage, MSG_DONTWAIT);
  EXPECT_EQ(n.code(), Errc::kWouldBlock);
}

TEST(FdPassingTest, StreamHelpersMoveExactBytesWithFdsOnTheFirst) {
  auto pair = socket_pair(SOCK_STREAM);
  ASSERT_TRUE(pair.ok());
  std::vector<UniqueFd> pipes = make_pipes(2);
  const std::string text = "stream of bytes";
  ASSERT_TRUE(send_all_fds(pair->first.get(), std::as_bytes(std::span(text)), raw(pipes)).ok());
  std::string got(text.size(), '\0');
  std::vector<UniqueFd> fds;
  auto r = recv_exact_fds(pair->second.get(), std::as_writable_bytes(std::span(got)), &fds);
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(got, text);
  EXPECT_EQ(fds.size(), 2u);
  pair->first.reset();
  char more;
  auto eof = recv_exact_fds(pair->second.get(), std::as_writable_bytes(std::span(&more, 1)), nullptr);
  EXPECT_EQ(eof.code(), Errc::kPeerGone);
}

}  // namespace
}  // namespace bypass::base
