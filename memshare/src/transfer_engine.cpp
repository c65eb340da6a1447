#include "transfer_engine.h"

#include <algorithm>
#include <cstring>

namespace bypass::memshare {

TransferEngine::TransferEngine(unsigned workers, uint64_t chunk_bytes)
    : chunk_bytes_(std::max<uint64_t>(chunk_bytes, kPageSize)) {
  workers = std::max(1u, workers);
  threads_.reserve(workers);
  for (unsigned i = 0; i < workers; ++i) threads_.emplace_back([this] { run(); });
}

TransferEngine::~TransferEngine() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  ready_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void TransferEngine::submit(std::shared_ptr<TransferJob> job) {
  std::vector<Chunk> chunks;
  for (const CopyRange& r : job->ranges) {
    for (uint64_t done = 0; done < r.size; done += chunk_bytes_) {
      chunks.push_back(Chunk{job, r.src_offset + done, r.dst_offset + done, std::min(chunk_bytes_, r.size - done)});
    }
  }
  if (chunks.empty()) {
    job->done(Error{}, 0);
    return;
  }
  job->remaining.store(chunks.size(), std::memory_order_relaxed);
  {
    std::lock_guard lock(mutex_);
    for (Chunk& c : chunks) queue_.push_back(std::move(c));
  }
  if (chunks.size() == 1) {
    ready_.notify_one();
  } else {
    ready_.notify_all();
  }
}

void TransferEngine::run() {
  for (;;) {
    Chunk chunk;
    {
      std::unique_lock lock(mutex_);
      ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      chunk = std::move(queue_.front());
      queue_.pop_front();
    }
    copy(chunk);
    // Pairs with the other workers' decrements: the last one sees all bytes and errors.
    if (chunk.job->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) finish(chunk.job);
  }
}

namespace {
void record_error(TransferJob& job, Error error) {
  std::lock_guard lock(job.error_mutex);
  if (job.error.code == Errc::kOk) job.error = std::move(error);
}
bool has_error(TransferJob& job) {
  std::lock_guard lock(job.error_mutex);
  return job.error.code != Errc::kOk;
}
}  // namespace

void TransferEngine::copy(const Chunk& chunk) {
  TransferJob& job = *chunk.job;
  if (has_error(job)) return;
  if (job.src->revoked.load(std::memory_order_acquire) || job.dst->revoked.load(std::memory_order_acquire)) {
    record_error(job, make_error(Errc::kDomainGone, "a buffer of this transfer was revoked while it ran"));
    return;
  }
  std::byte* src = job.src->image ? job.src->image->linear() : job.src->view.data();
  std::byte* dst = job.dst->image ? job.dst->image->linear() : job.dst->view.data();
  if (src != nullptr && dst != nullptr) {
    std::memcpy(dst + chunk.dst_offset, src + chunk.src_offset, chunk.size);
  } else if (dst != nullptr) {  // image source without a linear mapping
    auto r = job.src->image->read(chunk.src_offset, std::span<std::byte>(dst + chunk.dst_offset, chunk.size));
    if (!r) return record_error(job, r.error());
  } else if (src != nullptr) {  // image sink without a linear mapping
    auto r = job.dst->image->write(chunk.dst_offset, std::span<const std::byte>(src + chunk.src_offset, chunk.size));
    if (!r) return record_error(job, r.error());
  } else {  // image to image, both opaque: bounce
    std::vector<std::byte> bounce(chunk.size);
    auto r = job.src->image->read(chunk.src_offset, bounce);
    if (r) r = job.dst->image->write(chunk.dst_offset, bounce);
    if (!r) return record_error(job, r.error());
  }
  job.bytes.fetch_add(chunk.size, std::memory_order_relaxed);
}

void TransferEngine::finish(const std::shared_ptr<TransferJob>& job) {
  Error error;
  {
    std::lock_guard lock(job->error_mutex);
    error = job->error;
  }
  job->done(error, job->bytes.load(std::memory_order_relaxed));
}

}  // namespace bypass::memshare
