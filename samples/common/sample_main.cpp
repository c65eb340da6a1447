#include "sample_main.h"

#include <cstdio>
#include <exception>

#include "args.h"
#include "context.h"
#include "vk_check.h"

namespace bypass::samples {

int sample_main(const char* name, const std::function<void()>& body) {
  int status = 0;
  try {
    body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 2;
  } catch (const CheckError& e) {
    std::fprintf(stderr, "%s: WRONG RESULT: %s\n", name, e.what());
    status = 1;
  } catch (const VulkanError& e) {
    std::fprintf(stderr, "%s: Vulkan error: %s\n", name, e.what());
    status = 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", name, e.what());
    status = 1;
  }
  if (uint32_t errors = validation_error_count(); errors > 0) {
    std::fprintf(stderr, "%s: FAILED: %u validation error(s) reported\n", name, errors);
    status = 1;
  }
  return status;
}

void FrameTimer::report(const char* name) const {
  if (frames_ == 0) return;
  double ms = std::chrono::duration<double, std::milli>(total_).count() / static_cast<double>(frames_);
  std::fprintf(stderr, "%s: %llu frames, %.3f ms/frame\n", name, static_cast<unsigned long long>(frames_), ms);
}

}  // namespace bypass::samples
