#include "bypass/crossover/detector.h"

#include <cstdio>

namespace bypass::crossover {

std::string mac_to_string(const Mac& m) {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return buf;
}

bool parse_mac(const std::string& text, Mac* out) {
  unsigned v[6];
  char tail;
  if (std::sscanf(text.c_str(), "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
    return false;
  for (int i = 0; i < 6; ++i) {
    if (v[i] > 255) return false;
    (*out)[i] = static_cast<uint8_t>(v[i]);
  }
  return true;
}

void Detector::learn_locked(const Mac& mac, uint32_t port, Clock::time_point now) {
  if (is_multicast(mac)) return;
  auto [it, inserted] = table_.try_emplace(key(mac), Slot{port, now});
  if (!inserted) {
    if (it->second.port != port) ++moves_;  // the MAC moved: re-learn
    it->second = Slot{port, now};
  }
}

void Detector::learn(const Mac& mac, uint32_t port) {
  std::lock_guard lock(mu_);
  learn_locked(mac, port, Clock::now());
}

Decision Detector::decide(uint32_t from, const Mac& dst, const Mac& src, uint32_t live) {
  auto now = Clock::now();
  std::lock_guard lock(mu_);
  learn_locked(src, from, now);
  uint32_t others = live & ~(1u << from);
  Decision d;
  if (!is_multicast(dst)) {
    auto it = table_.find(key(dst));
    if (it != table_.end() && now - it->second.seen < kAging) {
      uint32_t to = it->second.port;
      if (to == from || (others & (1u << to)) == 0) return d;  // behind the sender, or down: drop
      d.kind = Decision::kForward;
      d.port = to;
      return d;
    }
  }
  // Broadcast, multicast, or a MAC not learnt yet: every other live port.
  if (others == 0) return d;
  d.kind = Decision::kFlood;
  d.mask = others;
  return d;
}

void Detector::forget_port(uint32_t port) {
  std::lock_guard lock(mu_);
  std::erase_if(table_, [&](const auto& kv) { return kv.second.port == port; });
}

std::vector<Detector::Entry> Detector::table() const {
  std::lock_guard lock(mu_);
  std::vector<Entry> out;
  auto now = Clock::now();
  for (const auto& [k, slot] : table_) {
    Mac m;
    for (int i = 5, j = 0; i >= 0; --i, ++j) m[j] = static_cast<uint8_t>(k >> (8 * i));
    out.push_back(Entry{m, slot.port, std::chrono::duration<double>(now - slot.seen).count()});
  }
  return out;
}

uint64_t Detector::moves() const {
  std::lock_guard lock(mu_);
  return moves_;
}

}  // namespace bypass::crossover
