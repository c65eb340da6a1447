// Host-side bookkeeping of one page pool: who owns each page, and which runs are free.
// The host never maps the pool: it moves ownership, never bytes.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "wire.h"

namespace bypass::vmqueue {

class PagePool {
 public:
  static constexpr uint32_t kFree = 0;
  static constexpr uint32_t kMarked = 0xffffffffu;    // transient, inside transfer()
  static constexpr uint32_t kWithheld = 0xfffffffeu;  // out of circulation (withhold())

  explicit PagePool(uint32_t pages = 0) : owner_(pages, kFree) {
    if (pages > 0) free_runs_.emplace(0, pages);
  }

  uint32_t size() const { return static_cast<uint32_t>(owner_.size()); }
  uint32_t free_pages() const { return free_count_(); }

  // Hands `count` free pages to `owner` as at most `max_runs` runs (fewest runs it can find).
  Errc allocate(uint32_t count, uint32_t owner, uint32_t max_runs, std::vector<wire::PageRun>* out) {
    out->clear();
    if (count == 0 || count > size()) return Errc::kInvalid;
    // A single run that fits, lowest address first, keeps messages contiguous.
    for (auto it = free_runs_.begin(); it != free_runs_.end(); ++it) {
      if (it->second >= count) {
        take(it, count, out);
        set_owner(*out, owner);
        return Errc::kOk;
      }
    }
    uint32_t have = 0;
    uint32_t runs = 0;
    for (auto& [first, n] : free_runs_) {
      have += n;
      ++runs;
      if (have >= count) break;
    }
    if (have < count) return Errc::kNoPages;
    if (runs > max_runs) return Errc::kTooFragmented;
    uint32_t left = count;
    while (left > 0) {
      auto it = free_runs_.begin();
      uint32_t n = std::min(left, it->second);
      take(it, n, out);
      left -= n;
    }
    set_owner(*out, owner);
    return Errc::kOk;
  }

  // Moves every page of `runs` from `from` to `to`, or changes nothing and returns false when
  // any page is out of range, not owned by `from`, or listed twice.
  bool transfer(std::span<const wire::PageRun> runs, uint32_t from, uint32_t to) {
    size_t done_runs = 0;
    uint32_t done_pages = 0;
    bool ok = true;
    for (const auto& r : runs) {
      if (r.count == 0 || r.first >= size() || r.count > size() - r.first) {
        ok = false;
        break;
      }
      done_pages = 0;
      for (uint32_t i = 0; i < r.count; ++i) {
        if (owner_[r.first + i] != from) {
          ok = false;
          break;
        }
        owner_[r.first + i] = kMarked;
        ++done_pages;
      }
      if (!ok) break;
      ++done_runs;
    }
    if (!ok) {
      // Undo the marks of the runs completed and of the partial run.
      for (size_t k = 0; k < done_runs; ++k)
        for (uint32_t i = 0; i < runs[k].count; ++i) owner_[runs[k].first + i] = from;
      if (done_runs < runs.size())
        for (uint32_t i = 0; i < done_pages; ++i) owner_[runs[done_runs].first + i] = from;
      return false;
    }
    if (to == kFree) {
      for (const auto& r : runs) release(r);
    } else {
      set_owner(runs, to);
    }
    return true;
  }

  // Returns every page `owner` holds to the free list (its domain is gone); the runs freed are
  // appended to `runs` when given.
  uint32_t free_all_of(uint32_t owner, std::vector<wire::PageRun>* runs = nullptr) {
    uint32_t freed = 0;
    for (uint32_t i = 0; i < size();) {
      if (owner_[i] != owner) {
        ++i;
        continue;
      }
      uint32_t j = i;
      while (j < size() && owner_[j] == owner) ++j;
      release(wire::PageRun{i, j - i});
      if (runs) runs->push_back(wire::PageRun{i, j - i});
      freed += j - i;
      i = j;
    }
    return freed;
  }

  uint32_t owner_of(uint32_t page) const { return owner_[page]; }

  // Takes free run `r` (all of it free) out of circulation for good: its pages could not be
  // cleared after their last owner, so nobody may be given them.
  void withhold(wire::PageRun r) {
    auto it = free_runs_.upper_bound(r.first);
    if (it == free_runs_.begin()) return;
    --it;
    const uint32_t first = it->first, count = it->second;
    if (r.first + r.count > first + count) return;  // not one free run: nothing to withhold
    free_runs_.erase(it);
    if (r.first > first) free_runs_.emplace(first, r.first - first);
    if (first + count > r.first + r.count) free_runs_.emplace(r.first + r.count, first + count - r.first - r.count);
    for (uint32_t i = 0; i < r.count; ++i) owner_[r.first + i] = kWithheld;
  }

  // Takes up to `max_pages` free pages in at most `max_runs` runs, lowest first, for `owner`.
  uint32_t take_any(uint32_t max_pages, uint32_t owner, uint32_t max_runs, std::vector<wire::PageRun>* out) {
    out->clear();
    uint32_t got = 0;
    while (got < max_pages && out->size() < max_runs && !free_runs_.empty()) {
      auto it = free_runs_.begin();
      uint32_t n = std::min(max_pages - got, it->second);
      take(it, n, out);
      got += n;
    }
    set_owner(*out, owner);
    return got;
  }

 private:
  uint32_t free_count_() const {
    uint32_t n = 0;
    for (const auto& [first, count] : free_runs_) n += count;
    return n;
  }
  void take(std::map<uint32_t, uint32_t>::iterator it, uint32_t n, std::vector<wire::PageRun>* out) {
    uint32_t first = it->first;
    uint32_t count = it->second;
    free_runs_.erase(it);
    if (count > n) free_runs_.emplace(first + n, count - n);
    out->push_back(wire::PageRun{first, n});
  }
  void set_owner(std::span<const wire::PageRun> runs, uint32_t owner) {
    for (const auto& r : runs)
      for (uint32_t i = 0; i < r.count; ++i) owner_[r.first + i] = owner;
  }
  // Marks the run free and merges it with free neighbours.
  void release(wire::PageRun r) {
    for (uint32_t i = 0; i < r.count; ++i) owner_[r.first + i] = kFree;
    uint32_t first = r.first;
    uint32_t count = r.count;
    auto next = free_runs_.lower_bound(first);
    if (next != free_runs_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == first) {
        first = prev->first;
        count += prev->second;
        free_runs_.erase(prev);
      }
    }
    next = free_runs_.lower_bound(first);
    if (next != free_runs_.end() && first + count == next->first) {
      count += next->second;
      free_runs_.erase(next);
    }
    free_runs_.emplace(first, count);
  }

  std::vector<uint32_t> owner_;
  std::map<uint32_t, uint32_t> free_runs_;  // first page -> length
};

}  // namespace bypass::vmqueue
