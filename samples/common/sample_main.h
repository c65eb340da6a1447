// The frame every sample's main() runs in: errors become one line on stderr and an exit
// status, and validation errors counted by the debug messenger fail the run even when the
// result itself was right.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

namespace bypass::samples {

// Runs `body` and returns the process exit status: 0 when it returned normally and no
// validation error was reported, 1 on a Vulkan error, a failed check or a validation error,
// 2 on a UsageError. `body` must destroy its Context before returning, so that the messages
// the layer emits at device and instance destruction (leaks) are counted.
int sample_main(const char* name, const std::function<void()>& body);

// Measures the mean wall time per frame for --timing.
class FrameTimer {
 public:
  void start() { start_ = std::chrono::steady_clock::now(); }
  void stop() {
    total_ += std::chrono::steady_clock::now() - start_;
    ++frames_;
  }
  // Prints "<name>: N frames, X ms/frame" to stderr.
  void report(const char* name) const;

 private:
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::duration total_{};
  uint64_t frames_ = 0;
};

}  // namespace bypass::samples
