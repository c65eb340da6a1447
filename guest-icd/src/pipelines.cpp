// Pipelines created without waiting (codegen/data/async_unasked.txt).
//
// Compiling a pipeline is the slowest thing a driver does on request: milliseconds on lavapipe
// (ffmpeg's libplacebo chain waited 56 ms for its 10 pipelines), and a game creates hundreds at
// load. Natively the program's thread compiles; through bypass it would wait a round trip for
// bypassd's worker to do it. When nothing in the call can make the driver answer anything but
// VK_SUCCESS or out-of-memory, the ICD chooses the pipelines' ids, sends the call without asking
// for the reply and returns VK_SUCCESS: the program goes on (to its next shader's SPIR-V, its
// next frame) while the worker compiles, and the commands that use the pipelines follow it in
// order. Should the driver fail after all, the session ends naming the call, as for the other
// creates the ICD does not wait for (docs/guest-icd.md, Calls).
//
// Waited for, as before: a create info that asks to fail rather than compile
// (VK_PIPELINE_CREATE_FAIL_ON_PIPELINE_COMPILE_REQUIRED_BIT: the answer may be
// VK_PIPELINE_COMPILE_REQUIRED, and null handles; EARLY_RETURN_ON_FAILURE_BIT) and one that
// chains VkPipelineCreationFeedbackCreateInfo.
//
// Creation feedback. The driver fills in bypassd's copy of the chain, which the reply does not
// carry; the application's structs kept whatever they held. The ICD writes them instead: the
// pipeline's feedback valid, with the time the call took as the program saw it (compile and
// round trip), and each stage's not valid (which the spec allows: "may write"). Found by the
// probe's pipelines mode, comparing with lavapipe.
#include <chrono>

#include "objects.h"

namespace bypass::icd {

namespace {

// The chain's VkPipelineCreationFeedbackCreateInfo (an output the driver fills in), or null.
template <class Info>
const VkPipelineCreationFeedbackCreateInfo* feedback_of(const Info& info) {
  return wire::find_in_chain<const VkPipelineCreationFeedbackCreateInfo>(
      info.pNext, VK_STRUCTURE_TYPE_PIPELINE_CREATION_FEEDBACK_CREATE_INFO);
}

template <class Info>
bool may_answer_more(uint32_t count, const Info* infos) {
  constexpr VkPipelineCreateFlags kMayFail =
      VK_PIPELINE_CREATE_FAIL_ON_PIPELINE_COMPILE_REQUIRED_BIT | VK_PIPELINE_CREATE_EARLY_RETURN_ON_FAILURE_BIT;
  for (uint32_t i = 0; i < count; ++i)
    if ((infos[i].flags & kMayFail) || feedback_of(infos[i])) return true;
  return false;
}

template <class Info>
void write_feedback(uint32_t count, const Info* infos, const VkPipeline* pipelines, VkResult result,
                    std::chrono::steady_clock::duration took) {
  for (uint32_t i = 0; i < count; ++i) {
    const VkPipelineCreationFeedbackCreateInfo* f = feedback_of(infos[i]);
    if (!f) continue;
    // A pipeline that was not made (an error, VK_PIPELINE_COMPILE_REQUIRED) has no feedback.
    const bool made = result >= 0 && pipelines[i] != VK_NULL_HANDLE;
    if (f->pPipelineCreationFeedback)
      *f->pPipelineCreationFeedback = {
          made ? VkPipelineCreationFeedbackFlags{VK_PIPELINE_CREATION_FEEDBACK_VALID_BIT} : 0,
          made ? static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(took).count()) : 0};
    for (uint32_t s = 0; s < f->pipelineStageCreationFeedbackCount && f->pPipelineStageCreationFeedbacks; ++s)
      f->pPipelineStageCreationFeedbacks[s] = {0, 0};
  }
}

template <class Info, class Forward, class Send>
VkResult create_pipelines(VkDevice device, uint32_t count, const Info* infos, VkPipeline* pipelines, Forward forward,
                          Send send) {
  auto* dev = as<Device>(device);
  for (uint32_t i = 0; i < count; ++i) pipelines[i] = wire::handle_from_bits<VkPipeline>(dev->conn->new_id());
  if (may_answer_more(count, infos)) {
    dev->pipelines_waited.fetch_add(count, std::memory_order_relaxed);
    const auto start = std::chrono::steady_clock::now();
    const VkResult r = forward();
    write_feedback(count, infos, pipelines, r, std::chrono::steady_clock::now() - start);
    return r;
  }
  dev->pipelines_unasked.fetch_add(count, std::memory_order_relaxed);
  return send();
}

}  // namespace

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateGraphicsPipelines(VkDevice device, VkPipelineCache pipelineCache,
                                                             uint32_t createInfoCount,
                                                             const VkGraphicsPipelineCreateInfo* pCreateInfos,
                                                             const VkAllocationCallbacks* pAllocator,
                                                             VkPipeline* pPipelines) {
  return create_pipelines(
      device, createInfoCount, pCreateInfos, pPipelines,
      [&] {
        return forward_vkCreateGraphicsPipelines(device, pipelineCache, createInfoCount, pCreateInfos, pAllocator,
                                                 pPipelines);
      },
      [&] {
        return send_vkCreateGraphicsPipelines(device, pipelineCache, createInfoCount, pCreateInfos, pAllocator,
                                              pPipelines);
      });
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateComputePipelines(VkDevice device, VkPipelineCache pipelineCache,
                                                            uint32_t createInfoCount,
                                                            const VkComputePipelineCreateInfo* pCreateInfos,
                                                            const VkAllocationCallbacks* pAllocator,
                                                            VkPipeline* pPipelines) {
  return create_pipelines(
      device, createInfoCount, pCreateInfos, pPipelines,
      [&] {
        return forward_vkCreateComputePipelines(device, pipelineCache, createInfoCount, pCreateInfos, pAllocator,
                                                pPipelines);
      },
      [&] {
        return send_vkCreateComputePipelines(device, pipelineCache, createInfoCount, pCreateInfos, pAllocator,
                                             pPipelines);
      });
}

}  // namespace bypass::icd
