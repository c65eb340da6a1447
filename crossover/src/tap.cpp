#include "bypass/crossover/tap.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace bypass::crossover {

namespace {

using base::Errc;
using base::UniqueFd;

// create_tap checks the name once; every later ifreq is for that name (or "lo").
ifreq make_ifreq(const std::string& name) {
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), std::min<size_t>(name.size(), IFNAMSIZ - 1));
  return ifr;
}

base::Result<void> check_ifname(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ)
    return base::make_error(Errc::kInvalidArgument, "bad interface name '" + name + "'");
  return {};
}

base::Result<void> ioctl_checked(int fd, unsigned long req, void* arg, const std::string& what) {
  if (::ioctl(fd, req, arg) != 0) return base::errno_error(Errc::kIo, what, errno);
  return {};
}

}  // namespace

base::Result<UniqueFd> create_tap(const TapConfig& config) {
  if (auto ok = check_ifname(config.name); !ok) return ok.error();
  UniqueFd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!fd) return base::errno_error(Errc::kIo, "open /dev/net/tun", errno);
  ifreq ifr = make_ifreq(config.name);
  // Every frame carries a virtio-net header, with or without offloads: a buffer's layout is
  // one (the switch finds the MACs at kVnetHdrLen), and a peer's GSO frame is taken either way.
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (auto ok = ioctl_checked(fd.get(), TUNSETIFF, &ifr, "TUNSETIFF " + config.name); !ok) return ok.error();
  int hdr = static_cast<int>(kVnetHdrLen);
  if (auto ok = ioctl_checked(fd.get(), TUNSETVNETHDRSZ, &hdr, "TUNSETVNETHDRSZ"); !ok) return ok.error();
  // With offloads the stack may hand us frames with partial checksums and TSO super-frames up
  // to 64 KiB; the peer TAP takes them back as they are, so no one computes a checksum or
  // segments. Without, the stack does both and the header stays zero.
  const unsigned long offloads = config.offload ? TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN : 0;
  if (::ioctl(fd.get(), TUNSETOFFLOAD, offloads) != 0) return base::errno_error(Errc::kIo, "TUNSETOFFLOAD", errno);
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return base::errno_error(Errc::kIo, "socket", errno);
  bool set_mac = false;
  for (auto b : config.mac) set_mac |= b != 0;
  if (set_mac) {
    ifreq r = make_ifreq(config.name);
    r.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    std::memcpy(r.ifr_hwaddr.sa_data, config.mac.data(), 6);
    if (auto ok = ioctl_checked(sock.get(), SIOCSIFHWADDR, &r, "SIOCSIFHWADDR"); !ok) return ok.error();
  }
  if (config.mtu > 0) {
    ifreq r = make_ifreq(config.name);
    r.ifr_mtu = config.mtu;
    if (auto ok = ioctl_checked(sock.get(), SIOCSIFMTU, &r, "SIOCSIFMTU"); !ok) return ok.error();
  }
  if (config.txqueuelen > 0) {
    ifreq r = make_ifreq(config.name);
    r.ifr_qlen = config.txqueuelen;
    if (auto ok = ioctl_checked(sock.get(), SIOCSIFTXQLEN, &r, "SIOCSIFTXQLEN"); !ok) return ok.error();
  }
  if (!config.address.empty()) {
    auto slash = config.address.find('/');
    std::string ip = config.address.substr(0, slash);
    int prefix = 24;
    if (slash != std::string::npos) {
      const std::string digits = config.address.substr(slash + 1);
      char* end = nullptr;
      const long parsed = std::strtol(digits.c_str(), &end, 10);
      prefix = digits.empty() || *end != '\0' ? -1 : static_cast<int>(std::clamp<long>(parsed, -1, 33));
    }
    if (prefix < 0 || prefix > 32) return base::make_error(Errc::kInvalidArgument, "bad prefix in " + config.address);
    ifreq r = make_ifreq(config.name);
    auto* sin = reinterpret_cast<sockaddr_in*>(&r.ifr_addr);
    sin->sin_family = AF_INET;
    if (::inet_pton(AF_INET, ip.c_str(), &sin->sin_addr) != 1) {
      return base::make_error(Errc::kInvalidArgument, "bad IPv4 address " + ip);
    }
    if (auto ok = ioctl_checked(sock.get(), SIOCSIFADDR, &r, "SIOCSIFADDR"); !ok) return ok.error();
    ifreq m = make_ifreq(config.name);
    auto* mask = reinterpret_cast<sockaddr_in*>(&m.ifr_netmask);
    mask->sin_family = AF_INET;
    mask->sin_addr.s_addr = htonl(prefix == 0 ? 0 : ~0u << (32 - prefix));
    if (auto ok = ioctl_checked(sock.get(), SIOCSIFNETMASK, &m, "SIOCSIFNETMASK"); !ok) return ok.error();
  }
  ifreq up = make_ifreq(config.name);
  if (auto ok = ioctl_checked(sock.get(), SIOCGIFFLAGS, &up, "SIOCGIFFLAGS"); !ok) return ok.error();
  up.ifr_flags |= IFF_UP;
  if (auto ok = ioctl_checked(sock.get(), SIOCSIFFLAGS, &up, "SIOCSIFFLAGS"); !ok) return ok.error();
  // Loopback of a fresh namespace is down; ordinary tools expect it up.
  ifreq lo = make_ifreq("lo");
  if (::ioctl(sock.get(), SIOCGIFFLAGS, &lo) == 0 && !(lo.ifr_flags & IFF_UP)) {
    lo.ifr_flags |= IFF_UP;
    ::ioctl(sock.get(), SIOCSIFFLAGS, &lo);
  }
  return fd;
}

base::Result<Mac> tap_mac(const std::string& name) {
  if (auto ok = check_ifname(name); !ok) return ok.error();
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return base::errno_error(Errc::kIo, "socket", errno);
  ifreq r = make_ifreq(name);
  if (auto ok = ioctl_checked(sock.get(), SIOCGIFHWADDR, &r, "SIOCGIFHWADDR " + name); !ok) return ok.error();
  Mac m;
  std::memcpy(m.data(), r.ifr_hwaddr.sa_data, 6);
  return m;
}

base::Result<UniqueFd> open_netns(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos) {
    return base::make_error(Errc::kInvalidArgument, "bad namespace name '" + name + "'");
  }
  UniqueFd fd(::open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    return base::errno_error(Errc::kIo, "network namespace '" + name + "' (create it with: ip netns add " + name + ")",
                             errno);
  }
  return fd;
}

bool netns_exists(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && ::access(("/run/netns/" + name).c_str(), F_OK) == 0;
}

base::Result<NetnsScope> NetnsScope::enter(const std::string& name) {
  UniqueFd original(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!original) return base::errno_error(Errc::kIo, "open own network namespace", errno);
  auto target = open_netns(name);
  if (!target) return target.error();
  if (::setns(target->get(), CLONE_NEWNET) != 0) return base::errno_error(Errc::kIo, "setns " + name, errno);
  return NetnsScope(std::move(original));
}

NetnsScope::~NetnsScope() {
  if (original_) ::setns(original_.get(), CLONE_NEWNET);
}

}  // namespace bypass::crossover
