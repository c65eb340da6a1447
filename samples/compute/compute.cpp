// compute: inclusive prefix sum (scan) of millions of 32-bit integers in compute shaders,
// checked element by element against the CPU.
//
// The scan is hierarchical: scan_blocks.comp scans blocks of 1024 elements and writes each
// block's total to the next level, which is scanned the same way until one block remains;
// then scan_add.comp walks back down adding each block's preceding total. Input lives in a
// host-visible storage buffer rewritten every frame (new values per frame, so a stale upload
// is caught), the levels in a device-local storage buffer, and the result is copied into a
// host-visible readback buffer. Push constants carry each dispatch's count and offsets. The
// command buffer is recorded once and resubmitted every frame.
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <vector>

#include "args.h"
#include "check.h"
#include "commands.h"
#include "context.h"
#include "pipeline.h"
#include "resources.h"
#include "sample_main.h"
#include "vk_check.h"

namespace bypass::samples {
namespace {

constexpr uint32_t kBlock = 1024;  // elements per workgroup (256 invocations x 4)
constexpr uint32_t kNoSums = 0xFFFFFFFFu;
constexpr uint32_t kMaxElements = 1u << 24;  // 64 MiB per buffer; 16384 workgroups at most

constexpr uint32_t kScanBlocksSpirv[] = {
#include "scan_blocks.comp.inc"
};
constexpr uint32_t kScanAddSpirv[] = {
#include "scan_add.comp.inc"
};

struct PushConstants {
  uint32_t count;
  uint32_t src_offset;
  uint32_t dst_offset;
  uint32_t sums_offset;
};

struct Level {
  uint32_t count;   // elements in this level
  uint32_t offset;  // first element in the work buffer
};

uint32_t blocks_for(uint32_t count) { return (count + kBlock - 1) / kBlock; }

// Level 0 is the data itself; level k+1 holds the block totals of level k.
std::vector<Level> plan_levels(uint32_t elements) {
  std::vector<Level> levels{{elements, 0}};
  uint32_t next_offset = elements;
  while (levels.back().count > kBlock) {
    const uint32_t count = blocks_for(levels.back().count);
    levels.push_back({count, next_offset});
    next_offset += count;
  }
  return levels;
}

// splitmix64: a fixed, portable generator so every run and every driver sees the same input.
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

void fill_input(std::span<uint32_t> input, uint32_t frame) {
  uint64_t state = 0x5EED0000ull + frame;
  for (uint32_t& v : input) v = static_cast<uint32_t>(splitmix64(state) >> 54);  // 0..1023
}

void run(int argc, char** argv) {
  CommonArgs args;
  args.frames = 2;
  uint32_t elements = 1u << 22;
  ArgParser parser("compute",
                   "Inclusive prefix sum of N uint32 values on the GPU, checked against the CPU.\n"
                   "--out writes the N results of the last frame as raw little-endian uint32.",
                   args);
  parser.add_uint("--elements", "N", "number of values to scan", &elements, 1, kMaxElements);
  if (!parser.parse(argc, argv)) return;

  Context ctx({.app_name = "bypass-compute"});
  VkDevice device = ctx.device();
  const std::vector<Level> levels = plan_levels(elements);
  const uint32_t work_elements = levels.back().offset + levels.back().count;

  const VkDeviceSize data_bytes = VkDeviceSize{elements} * sizeof(uint32_t);
  Buffer input(ctx, data_bytes, VK_BUFFER_USAGE_STORAGE_BUFFER_BIT, MemoryUse::kUpload);
  Buffer work(ctx, VkDeviceSize{work_elements} * sizeof(uint32_t),
              VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT, MemoryUse::kDeviceLocal);
  Buffer result(ctx, data_bytes, VK_BUFFER_USAGE_TRANSFER_DST_BIT, MemoryUse::kReadback);

  // One set layout {0: source, 1: destination}; set A reads the input, set B scans in place.
  VkDescriptorSetLayoutBinding bindings[2]{};
  for (uint32_t i = 0; i < 2; ++i) {
    bindings[i].binding = i;
    bindings[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    bindings[i].descriptorCount = 1;
    bindings[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
  }
  VkDescriptorSetLayoutCreateInfo set_layout_info{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  set_layout_info.bindingCount = 2;
  set_layout_info.pBindings = bindings;
  UniqueDescriptorSetLayout set_layout;
  vk_check(vkCreateDescriptorSetLayout(device, &set_layout_info, nullptr, set_layout.put(device)),
           "vkCreateDescriptorSetLayout");

  VkDescriptorPoolSize pool_size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 4};
  VkDescriptorPoolCreateInfo pool_info{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
  pool_info.maxSets = 2;
  pool_info.poolSizeCount = 1;
  pool_info.pPoolSizes = &pool_size;
  UniqueDescriptorPool descriptor_pool;
  vk_check(vkCreateDescriptorPool(device, &pool_info, nullptr, descriptor_pool.put(device)), "vkCreateDescriptorPool");
  VkDescriptorSetLayout layouts[2] = {set_layout.get(), set_layout.get()};
  VkDescriptorSetAllocateInfo set_info{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
  set_info.descriptorPool = descriptor_pool.get();
  set_info.descriptorSetCount = 2;
  set_info.pSetLayouts = layouts;
  VkDescriptorSet sets[2];
  vk_check(vkAllocateDescriptorSets(device, &set_info, sets), "vkAllocateDescriptorSets");
  const VkDescriptorSet from_input = sets[0], in_place = sets[1];

  VkDescriptorBufferInfo input_info{input.get(), 0, VK_WHOLE_SIZE};
  VkDescriptorBufferInfo work_info{work.get(), 0, VK_WHOLE_SIZE};
  VkWriteDescriptorSet writes[4]{};
  const VkDescriptorBufferInfo* sources[4] = {&input_info, &work_info, &work_info, &work_info};
  for (uint32_t i = 0; i < 4; ++i) {
    writes[i].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
    writes[i].dstSet = sets[i / 2];
    writes[i].dstBinding = i % 2;
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = sources[i];
  }
  vkUpdateDescriptorSets(device, 4, writes, 0, nullptr);

  const VkDescriptorSetLayout set_layout_handle = set_layout.get();
  const VkPushConstantRange push_range{VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(PushConstants)};
  UniquePipelineLayout layout =
      create_pipeline_layout(device, std::span(&set_layout_handle, 1), std::span(&push_range, 1));
  UniqueShaderModule scan_module = create_shader_module(device, kScanBlocksSpirv);
  UniqueShaderModule add_module = create_shader_module(device, kScanAddSpirv);
  UniquePipeline scan_pipeline = create_compute_pipeline(device, scan_module.get(), layout.get());
  UniquePipeline add_pipeline = create_compute_pipeline(device, add_module.get(), layout.get());

  // Record once; every frame resubmits the same command buffer.
  UniqueCommandPool pool = create_command_pool(device, ctx.queue_family());
  VkCommandBuffer cmd = allocate_command_buffers(device, pool.get(), VK_COMMAND_BUFFER_LEVEL_PRIMARY, 1)[0];
  begin_command_buffer(cmd);
  auto compute_to_compute = [&] {
    record_memory_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                          VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
  };
  // Up: scan every level, each writing its block totals into the next.
  vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, scan_pipeline.get());
  for (size_t k = 0; k < levels.size(); ++k) {
    const bool top = k + 1 == levels.size();
    const PushConstants pc{levels[k].count, k == 0 ? 0 : levels[k].offset, levels[k].offset,
                           top ? kNoSums : levels[k + 1].offset};
    const VkDescriptorSet set = k == 0 ? from_input : in_place;
    vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout.get(), 0, 1, &set, 0, nullptr);
    vkCmdPushConstants(cmd, layout.get(), VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(pc), &pc);
    vkCmdDispatch(cmd, blocks_for(levels[k].count), 1, 1);
    compute_to_compute();
  }
  // Down: add the scanned totals of level k+1 into level k, top level first.
  vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, add_pipeline.get());
  vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout.get(), 0, 1, &in_place, 0, nullptr);
  for (size_t k = levels.size() - 1; k-- > 0;) {
    const PushConstants pc{levels[k].count, 0, levels[k].offset, levels[k + 1].offset};
    vkCmdPushConstants(cmd, layout.get(), VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(pc), &pc);
    vkCmdDispatch(cmd, blocks_for(levels[k].count), 1, 1);
    compute_to_compute();
  }
  record_memory_barrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
                        VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_READ_BIT);
  const VkBufferCopy copy{0, 0, data_bytes};
  vkCmdCopyBuffer(cmd, work.get(), result.get(), 1, &copy);
  record_memory_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                        VK_ACCESS_HOST_READ_BIT);
  end_command_buffer(cmd);

  UniqueFence fence = create_fence(device);
  FrameTimer timer;
  std::vector<uint32_t> expected(elements);
  uint32_t total = 0;
  for (uint32_t frame = 0; frame < args.frames; ++frame) {
    auto in = input.mapped<uint32_t>();
    fill_input(in, frame);
    uint32_t running = 0;  // wraps modulo 2^32 exactly like the shader
    for (uint32_t i = 0; i < elements; ++i) expected[i] = running += in[i];
    input.flush();

    timer.start();
    VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    submit.commandBufferCount = 1;
    submit.pCommandBuffers = &cmd;
    ctx.submit_and_wait(submit, fence.get());
    timer.stop();

    result.invalidate();
    auto out = result.mapped<const uint32_t>();
    const bool last = frame + 1 == args.frames;
    ResultCheck check("compute frame " + std::to_string(frame));
    for (uint32_t i = 0; i < elements; ++i) check.expect_equal("scan", i, out[i], expected[i]);
    if (!args.out.empty() && (last || check.failed() > 0)) {
      // x86-64 and every other little-endian host write the words little-endian as they are.
      write_file(args.out, std::span(reinterpret_cast<const uint8_t*>(out.data()), static_cast<size_t>(data_bytes)));
    }
    check.finish();
    total = out[elements - 1];
  }
  if (args.timing) timer.report("compute");
  std::printf("compute: OK, scanned %u values x %u frame(s) in %zu level(s) on %s, total %u%s%s\n", elements,
              args.frames, levels.size(), ctx.properties().deviceName, total, args.out.empty() ? "" : ", wrote ",
              args.out.c_str());
}

}  // namespace
}  // namespace bypass::samples

int main(int argc, char** argv) {
  return bypass::samples::sample_main("compute", [&] { bypass::samples::run(argc, argv); });
}
