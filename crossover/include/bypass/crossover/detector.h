// The cross-talk detector: decides per frame where it goes, by destination MAC, learning
// which port each source MAC lives behind. A frame for the peer takes the crossover path; one
// for anything else takes the uplink; a MAC seen on another port than before moves there.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "bypass/crossover/layout.h"

namespace bypass::crossover {

using Mac = std::array<uint8_t, 6>;

std::string mac_to_string(const Mac& mac);
bool parse_mac(const std::string& text, Mac* out);
inline bool is_multicast(const Mac& mac) { return (mac[0] & 1) != 0; }  // broadcast included

struct Decision {
  enum Kind { kForward, kFlood, kDrop } kind = kDrop;
  uint32_t port = 0;  // kForward: the one target
  uint32_t mask = 0;  // kFlood: bit per target port
};

class Detector {
 public:
  using Clock = std::chrono::steady_clock;
  // `live` says which ports can take frames (bit per port).
  Decision decide(uint32_t from, const Mac& dst, const Mac& src, uint32_t live);
  // Seeds a MAC known from configuration (an endpoint reports its TAP's address on attach).
  void learn(const Mac& mac, uint32_t port);
  // Forgets every MAC behind a port that went away.
  void forget_port(uint32_t port);

  struct Entry {
    Mac mac;
    uint32_t port;
    double age_s;
  };
  std::vector<Entry> table() const;
  uint64_t moves() const;

  static constexpr std::chrono::seconds kAging{300};

 private:
  static uint64_t key(const Mac& m) {
    uint64_t k = 0;
    for (auto b : m) k = (k << 8) | b;
    return k;
  }
  void learn_locked(const Mac& mac, uint32_t port, Clock::time_point now);

  struct Slot {
    uint32_t port;
    Clock::time_point seen;
  };
  mutable std::mutex mu_;  // the switch thread decides; status readers dump the table
  std::unordered_map<uint64_t, Slot> table_;
  uint64_t moves_ = 0;
};

}  // namespace bypass::crossover
