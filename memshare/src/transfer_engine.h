// The worker pool that performs transfers: the software stand-in for a DMA engine. A job is
// cut into chunks that workers copy in parallel; the last chunk to finish reports the job.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bypass/memshare/error.h"
#include "bypass/memshare/image_endpoint.h"
#include "bypass/memshare/region.h"
#include "bypass/memshare/types.h"

namespace bypass::memshare {

// Memory the service can address: a mapped memfd range, or a device image.
struct Buffer {
  base::UniqueFd fd;  // read-write file description (empty for images)
  uint64_t fd_offset = 0;
  uint64_t size = 0;
  base::Mapping view;  // the service's read-write view
  std::shared_ptr<ImageEndpoint> image;
  // Set (release) when the owner is gone or the name released; workers check it (acquire)
  // before each chunk so a dead domain's transfer ends with kDomainGone.
  std::atomic<bool> revoked{false};
};

struct TransferJob {
  std::shared_ptr<Buffer> src;
  std::shared_ptr<Buffer> dst;
  std::vector<CopyRange> ranges;
  // Called once, from a worker, when the last chunk is done (or the first error stopped it).
  std::function<void(const Error& error, uint64_t bytes)> done;

  // Chunks not yet finished; the worker that takes it to zero reports (acq_rel so it sees
  // every other chunk's bytes and error).
  std::atomic<uint64_t> remaining{0};
  std::atomic<uint64_t> bytes{0};
  std::mutex error_mutex;  // guards error (rare path)
  Error error;
};

class TransferEngine {
 public:
  TransferEngine(unsigned workers, uint64_t chunk_bytes);
  ~TransferEngine();  // finishes queued chunks, then joins
  TransferEngine(const TransferEngine&) = delete;
  TransferEngine& operator=(const TransferEngine&) = delete;

  // Ranges must already be validated against both buffers.
  void submit(std::shared_ptr<TransferJob> job);

  unsigned workers() const { return static_cast<unsigned>(threads_.size()); }
  uint64_t chunk_bytes() const { return chunk_bytes_; }

 private:
  struct Chunk {
    std::shared_ptr<TransferJob> job;
    uint64_t src_offset;
    uint64_t dst_offset;
    uint64_t size;
  };
  void run();
  static void copy(const Chunk& chunk);
  static void finish(const std::shared_ptr<TransferJob>& job);

  uint64_t chunk_bytes_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Chunk> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace bypass::memshare
