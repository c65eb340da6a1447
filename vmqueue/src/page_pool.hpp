// Host-side bookkeeping of one page pool: who owns each page, and which runs are free.
// The host never maps the pool: it moves ownership, never bytes.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "wire.hpp"

namespace bypass::vmqueue {

class PagePool {
 public:
  static constexpr std::uint32_t kFree = 0;
  static constexpr std::uint32_t kMarked = 0xffffffffu;  // transient, inside transfer()

  explicit PagePool(std::uint32_t pages = 0) : owner_(pages, kFree) {
    if (pages > 0) free_runs_.emplace(0, pages);
  }

  std::uint32_t size() const { return static_cast<std::uint32_t>(owner_.size()); }
  std::uint32_t free_pages() const { return free_count_(); }

  // Hands `count` free pages to `owner` as at most `max_runs` runs (fewest runs it can find).
  Errc allocate(std::uint32_t count, std::uint32_t owner, std::uint32_t max_runs, std::vector<wire::PageRun>* out) {
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
    std::uint32_t have = 0;
    std::uint32_t runs = 0;
    for (auto& [first, n] : free_runs_) {
      have += n;
      ++runs;
      if (have >= count) break;
    }
    if (have < count) return Errc::kNoPages;
    if (runs > max_runs) return Errc::kTooFragmented;
    std::uint32_t left = count;
    while (left > 0) {
      auto it = free_runs_.begin();
      std::uint32_t n = std::min(left, it->second);
      take(it, n, out);
      left -= n;
    }
    set_owner(*out, owner);
    return Errc::kOk;
  }

  // Moves every page of `runs` from `from` to `to`, or changes nothing and returns false when
  // any page is out of range, not owned by `from`, or listed twice.
  bool transfer(std::span<const wire::PageRun> runs, std::uint32_t from, std::uint32_t to) {
    std::size_t done_runs = 0;
    std::uint32_t done_pages = 0;
    bool ok = true;
    for (const auto& r : runs) {
      if (r.count == 0 || r.first >= size() || r.count > size() - r.first) {
        ok = false;
        break;
      }
      done_pages = 0;
      for (std::uint32_t i = 0; i < r.count; ++i) {
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
      for (std::size_t k = 0; k < done_runs; ++k)
        for (std::uint32_t i = 0; i < runs[k].count; ++i) owner_[runs[k].first + i] = from;
      if (done_runs < runs.size())
        for (std::uint32_t i = 0; i < done_pages; ++i) owner_[runs[done_runs].first + i] = from;
      return false;
    }
    if (to == kFree) {
      for (const auto& r : runs) release(r);
    } else {
      set_owner(runs, to);
    }
    return true;
  }

  // Returns every page `owner` holds to the free list (its domain is gone).
  std::uint32_t free_all_of(std::uint32_t owner) {
    std::uint32_t freed = 0;
    for (std::uint32_t i = 0; i < size();) {
      if (owner_[i] != owner) {
        ++i;
        continue;
      }
      std::uint32_t j = i;
      while (j < size() && owner_[j] == owner) ++j;
      release(wire::PageRun{i, j - i});
      freed += j - i;
      i = j;
    }
    return freed;
  }

  std::uint32_t owner_of(std::uint32_t page) const { return owner_[page]; }

  // Takes up to `max_pages` free pages in at most `max_runs` runs, lowest first, for `owner`.
  std::uint32_t take_any(std::uint32_t max_pages, std::uint32_t owner, std::uint32_t max_runs,
                         std::vector<wire::PageRun>* out) {
    out->clear();
    std::uint32_t got = 0;
    while (got < max_pages && out->size() < max_runs && !free_runs_.empty()) {
      auto it = free_runs_.begin();
      std::uint32_t n = std::min(max_pages - got, it->second);
      take(it, n, out);
      got += n;
    }
    set_owner(*out, owner);
    return got;
  }

 private:
  std::uint32_t free_count_() const {
    std::uint32_t n = 0;
    for (const auto& [first, count] : free_runs_) n += count;
    return n;
  }
  void take(std::map<std::uint32_t, std::uint32_t>::iterator it, std::uint32_t n, std::vector<wire::PageRun>* out) {
    std::uint32_t first = it->first;
    std::uint32_t count = it->second;
    free_runs_.erase(it);
    if (count > n) free_runs_.emplace(first + n, count - n);
    out->push_back(wire::PageRun{first, n});
  }
  void set_owner(std::span<const wire::PageRun> runs, std::uint32_t owner) {
    for (const auto& r : runs)
      for (std::uint32_t i = 0; i < r.count; ++i) owner_[r.first + i] = owner;
  }
  // Marks the run free and merges it with free neighbours.
  void release(wire::PageRun r) {
    for (std::uint32_t i = 0; i < r.count; ++i) owner_[r.first + i] = kFree;
    std::uint32_t first = r.first;
    std::uint32_t count = r.count;
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

  std::vector<std::uint32_t> owner_;
  std::map<std::uint32_t, std::uint32_t> free_runs_;  // first page -> length
};

}  // namespace bypass::vmqueue
