#include "bypass/host/guest_view.h"

#include <algorithm>

namespace bypass::host {

namespace {

using memshare::kPageSize;
using memshare::page_ceil;
using memshare::page_floor;
using memshare::PageRange;

// [offset, end) split into the whole pages inside it and the partly covered pages at its
// edges (a page the memory's end cuts short counts as whole).
struct Split {
  PageRange whole{0, 0};
  PageRange head{0, 0};  // the covered piece of the first page, if partial
  PageRange tail{0, 0};  // the covered piece of the last page, if partial
};

Split split(uint64_t offset, uint64_t end, uint64_t memory_size) {
  Split s;
  uint64_t first = page_ceil(offset);
  uint64_t last = end == memory_size ? end : page_floor(end);
  if (first >= last) {  // inside one page, or across one page boundary with no whole page
    if (page_floor(offset) == page_floor(end - 1)) {
      s.head = PageRange{offset, end - offset};
      return s;
    }
    first = last = page_ceil(offset);
  }
  if (offset < first) s.head = PageRange{offset, first - offset};
  if (last < end) s.tail = PageRange{last, end - last};
  s.whole = PageRange{first, last - first};
  return s;
}

void add(std::vector<wire::MemoryRun>& runs, PageRange r) {
  if (r.size == 0) return;
  if (!runs.empty() && runs.back().offset + runs.back().size == r.offset) {
    runs.back().size += r.size;
  } else {
    runs.push_back(wire::MemoryRun{r.offset, r.size});
  }
}

}  // namespace

void GuestView::wrote(const std::byte* memory, uint64_t offset, uint64_t size) {
  if (size == 0) return;
  const Split s = split(offset, offset + size, hashes_.size());
  hashes_.forget(s.head);
  hashes_.forget(s.tail);
  hashes_.seen(memory, s.whole);
}

void GuestView::changed(const std::byte* memory, uint64_t offset, uint64_t size, std::vector<wire::MemoryRun>& runs) {
  if (size == 0) return;
  const Split s = split(offset, offset + size, hashes_.size());
  // Edge pieces go as they are; the rest of their pages stays the guest's own.
  add(runs, s.head);
  hashes_.forget(s.head);
  scratch_.clear();
  hashes_.changed(memory, s.whole, scratch_);
  for (const PageRange& r : scratch_) add(runs, r);
  add(runs, s.tail);
  hashes_.forget(s.tail);
}

}  // namespace bypass::host
