// UNIX socket paths: the sun_path limit, abstract names, listen/connect, peer credentials, the
// socket directory check and the default socket paths.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "bypass/base/socket_path.h"
#include "bypass/base/unix_socket.h"

namespace bypass::base {
namespace {

std::string temp_dir() {
  char tmpl[] = "/tmp/bypass-base-test-XXXXXX";
  const char* dir = ::mkdtemp(tmpl);
  EXPECT_NE(dir, nullptr);
  return dir;
}

TEST(UnixSocketTest, APathTooLongForSunPathIsRefusedNotTruncated) {
  const std::string longest = "/" + std::string(kMaxUnixPathBytes - 1, 'a');
  EXPECT_TRUE(unix_address(longest).ok());
  const std::string too_long = longest + "b";
  auto addr = unix_address(too_long);
  ASSERT_FALSE(addr.ok());
  EXPECT_EQ(addr.code(), Errc::kInvalidArgument);
  EXPECT_NE(addr.message().find("1 to " + std::to_string(kMaxUnixPathBytes) + " bytes"), std::string::npos)
      << addr.message();
  EXPECT_EQ(listen_unix(too_long, SOCK_STREAM).code(), Errc::kInvalidArgument);
  EXPECT_EQ(connect_unix(too_long, SOCK_SEQPACKET).code(), Errc::kInvalidArgument);
  EXPECT_EQ(unix_address("").code(), Errc::kInvalidArgument);
}

TEST(UnixSocketTest, AnAtNamesTheAbstractNamespace) {
  auto addr = unix_address("@bypass-test");
  ASSERT_TRUE(addr.ok());
  EXPECT_TRUE(addr->path.empty());
  EXPECT_EQ(addr->addr.sun_path[0], '\0');
  EXPECT_EQ(std::string(addr->addr.sun_path + 1, 11), "bypass-test");
}

TEST(UnixSocketTest, ListenConnectAndPeerCredentialsNameUs) {
  const std::string dir = temp_dir();
  const std::string path = dir + "/s.sock";
  auto server = listen_unix(path, SOCK_SEQPACKET);
  ASSERT_TRUE(server.ok()) << server.message();
  auto client = connect_unix(path, SOCK_SEQPACKET);
  ASSERT_TRUE(client.ok()) << client.message();
  UniqueFd accepted(::accept4(server->get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted.valid());
  auto cred = peer_credentials(accepted.get());
  ASSERT_TRUE(cred.ok()) << cred.message();
  EXPECT_EQ(cred->pid, ::getpid());
  EXPECT_EQ(cred->uid, ::geteuid());
  // A second listen replaces the file.
  server->reset();
  EXPECT_TRUE(listen_unix(path, SOCK_SEQPACKET).ok());
  std::filesystem::remove_all(dir);
}

TEST(UnixSocketTest, NoServerIsAnErrorNamingThePath) {
  auto client = connect_unix("/nonexistent-dir/x.sock", SOCK_STREAM);
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.code(), Errc::kIo);
  EXPECT_NE(client.message().find("/nonexistent-dir/x.sock"), std::string::npos);
}

TEST(UnixSocketTest, SecureSocketDirMakesAPrivateDirectoryAndRefusesAWritableOne) {
  const std::string dir = temp_dir();
  ASSERT_TRUE(secure_socket_dir(dir + "/a/b/s.sock", 0700).ok());
  struct stat st {};
  ASSERT_EQ(::stat((dir + "/a/b").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  ASSERT_EQ(::chmod((dir + "/a/b").c_str(), 0777), 0);
  auto r = secure_socket_dir(dir + "/a/b/s.sock", 0700);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.message().find("writable by others"), std::string::npos) << r.message();
  ASSERT_EQ(::chmod((dir + "/a/b").c_str(), 01777), 0);  // sticky, like /tmp: fine
  EXPECT_TRUE(secure_socket_dir(dir + "/a/b/s.sock", 0700).ok());
  std::filesystem::remove_all(dir);
}

TEST(SocketPathTest, DefaultPathsFollowTheOneRule) {
  if (::geteuid() == 0) {
    EXPECT_EQ(default_socket_path("bypassd.sock"), "/run/bypass/bypassd.sock");
    return;
  }
  ::setenv("XDG_RUNTIME_DIR", "/run/user/1234", 1);
  EXPECT_EQ(default_socket_path("vmq.sock"), "/run/user/1234/bypass/vmq.sock");
  ::unsetenv("XDG_RUNTIME_DIR");
  EXPECT_EQ(default_socket_path("vmq.sock"), "/tmp/bypass-" + std::to_string(::geteuid()) + "/vmq.sock");
}

}  // namespace
}  // namespace bypass::base
