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

#include <cstring>
#include <stdexcept>

namespace bypass::crossover {

using vmqueue::os::throw_errno;

namespace {

ifreq make_ifreq(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ) throw std::runtime_error("bad interface name '" + name + "'");
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  return ifr;
}

void ioctl_or_throw(int fd, unsigned long req, void* arg, const std::string& what) {
  if (::ioctl(fd, req, arg) != 0) throw_errno(what);
}

}  // namespace

Fd create_tap(const TapConfig& config) {
  Fd fd(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!fd) throw_errno("open /dev/net/tun");
  ifreq ifr = make_ifreq(config.name);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (config.offload ? IFF_VNET_HDR : 0);
  ioctl_or_throw(fd.get(), TUNSETIFF, &ifr, "TUNSETIFF " + config.name);
  if (config.offload) {
    int hdr = static_cast<int>(kVnetHdrLen);
    ioctl_or_throw(fd.get(), TUNSETVNETHDRSZ, &hdr, "TUNSETVNETHDRSZ");
    // The stack may hand us frames with partial checksums and TSO super-frames up to 64 KiB;
    // the peer TAP takes them back as they are, so no one computes a checksum or segments.
    unsigned long offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
    if (::ioctl(fd.get(), TUNSETOFFLOAD, offloads) != 0) throw_errno("TUNSETOFFLOAD");
  }
  Fd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) throw_errno("socket");
  bool set_mac = false;
  for (auto b : config.mac) set_mac |= b != 0;
  if (set_mac) {
    ifreq r = make_ifreq(config.name);
    r.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    std::memcpy(r.ifr_hwaddr.sa_data, config.mac.data(), 6);
    ioctl_or_throw(sock.get(), SIOCSIFHWADDR, &r, "SIOCSIFHWADDR");
  }
  if (config.mtu > 0) {
    ifreq r = make_ifreq(config.name);
    r.ifr_mtu = config.mtu;
    ioctl_or_throw(sock.get(), SIOCSIFMTU, &r, "SIOCSIFMTU");
  }
  if (config.txqueuelen > 0) {
    ifreq r = make_ifreq(config.name);
    r.ifr_qlen = config.txqueuelen;
    ioctl_or_throw(sock.get(), SIOCSIFTXQLEN, &r, "SIOCSIFTXQLEN");
  }
  if (!config.address.empty()) {
    auto slash = config.address.find('/');
    std::string ip = config.address.substr(0, slash);
    int prefix = slash == std::string::npos ? 24 : std::stoi(config.address.substr(slash + 1));
    if (prefix < 0 || prefix > 32) throw std::runtime_error("bad prefix in " + config.address);
    ifreq r = make_ifreq(config.name);
    auto* sin = reinterpret_cast<sockaddr_in*>(&r.ifr_addr);
    sin->sin_family = AF_INET;
    if (::inet_pton(AF_INET, ip.c_str(), &sin->sin_addr) != 1) throw std::runtime_error("bad IPv4 address " + ip);
    ioctl_or_throw(sock.get(), SIOCSIFADDR, &r, "SIOCSIFADDR");
    ifreq m = make_ifreq(config.name);
    auto* mask = reinterpret_cast<sockaddr_in*>(&m.ifr_netmask);
    mask->sin_family = AF_INET;
    mask->sin_addr.s_addr = htonl(prefix == 0 ? 0 : ~0u << (32 - prefix));
    ioctl_or_throw(sock.get(), SIOCSIFNETMASK, &m, "SIOCSIFNETMASK");
  }
  ifreq up = make_ifreq(config.name);
  ioctl_or_throw(sock.get(), SIOCGIFFLAGS, &up, "SIOCGIFFLAGS");
  up.ifr_flags |= IFF_UP;
  ioctl_or_throw(sock.get(), SIOCSIFFLAGS, &up, "SIOCSIFFLAGS");
  // Loopback of a fresh namespace is down; ordinary tools expect it up.
  ifreq lo = make_ifreq("lo");
  if (::ioctl(sock.get(), SIOCGIFFLAGS, &lo) == 0 && !(lo.ifr_flags & IFF_UP)) {
    lo.ifr_flags |= IFF_UP;
    ::ioctl(sock.get(), SIOCSIFFLAGS, &lo);
  }
  return fd;
}

Mac tap_mac(const std::string& name) {
  Fd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) throw_errno("socket");
  ifreq r = make_ifreq(name);
  ioctl_or_throw(sock.get(), SIOCGIFHWADDR, &r, "SIOCGIFHWADDR " + name);
  Mac m;
  std::memcpy(m.data(), r.ifr_hwaddr.sa_data, 6);
  return m;
}

Fd open_netns(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos) throw std::runtime_error("bad namespace name '" + name + "'");
  Fd fd(::open(("/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("network namespace '" + name + "' (create it with: ip netns add " + name + ")");
  return fd;
}

bool netns_exists(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && ::access(("/run/netns/" + name).c_str(), F_OK) == 0;
}

NetnsScope::NetnsScope(const std::string& name) {
  original_ = Fd(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!original_) throw_errno("open own network namespace");
  Fd target = open_netns(name);
  if (::setns(target.get(), CLONE_NEWNET) != 0) throw_errno("setns " + name);
}

NetnsScope::~NetnsScope() {
  if (original_) ::setns(original_.get(), CLONE_NEWNET);
}

}  // namespace bypass::crossover
