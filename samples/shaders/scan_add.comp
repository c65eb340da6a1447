#version 450
// Second half of a scan level: adds to every element of block b (b > 0) the inclusive scan of
// the block totals up to block b-1, which the level above has finished by now.
layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 1) buffer Destination { uint dst[]; };

layout(push_constant) uniform Params {
  uint count;
  uint src_offset;  // unused; the layout is shared with scan_blocks.comp
  uint dst_offset;
  uint sums_offset;
} p;

const uint kPerInvocation = 4;
const uint kBlock = 256 * kPerInvocation;

void main() {
  uint block = gl_WorkGroupID.x;
  if (block == 0) return;
  uint add = dst[p.sums_offset + block - 1];
  for (uint i = 0; i < kPerInvocation; ++i) {
    // Strided so that neighbouring invocations touch neighbouring elements.
    uint index = block * kBlock + i * 256 + gl_LocalInvocationID.x;
    if (index < p.count) dst[p.dst_offset + index] += add;
  }
}
