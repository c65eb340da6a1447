#version 450
// One level of an inclusive prefix sum (scan) over 32-bit unsigned integers. Each workgroup
// scans one block of 1024 elements: every invocation scans 4 consecutive elements serially,
// the 256 invocation totals are scanned in shared memory (Hillis-Steele), and the block total
// goes to dst[sums_offset + block] for the next level. src and dst may be the same buffer
// (levels above the first scan in place): every invocation reads its own elements before the
// first barrier and writes only them after it.
layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer Source { uint src[]; };
layout(std430, set = 0, binding = 1) buffer Destination { uint dst[]; };

layout(push_constant) uniform Params {
  uint count;        // elements in this level
  uint src_offset;   // index of the level's first element in src
  uint dst_offset;   // index of the level's first element in dst
  uint sums_offset;  // index in dst for the block totals, or 0xFFFFFFFF for none
} p;

const uint kPerInvocation = 4;
const uint kBlock = 256 * kPerInvocation;
shared uint totals[256];

void main() {
  uint lid = gl_LocalInvocationID.x;
  uint first = gl_WorkGroupID.x * kBlock + lid * kPerInvocation;
  uint running[kPerInvocation];
  uint sum = 0;
  for (uint i = 0; i < kPerInvocation; ++i) {
    uint index = first + i;
    sum += index < p.count ? src[p.src_offset + index] : 0u;
    running[i] = sum;
  }
  totals[lid] = sum;
  barrier();
  for (uint stride = 1; stride < 256; stride <<= 1) {
    uint add = lid >= stride ? totals[lid - stride] : 0u;
    barrier();
    totals[lid] += add;
    barrier();
  }
  uint before = lid > 0 ? totals[lid - 1] : 0u;
  for (uint i = 0; i < kPerInvocation; ++i) {
    uint index = first + i;
    if (index < p.count) dst[p.dst_offset + index] = running[i] + before;
  }
  if (lid == 255 && p.sums_offset != 0xFFFFFFFFu) {
    dst[p.sums_offset + gl_WorkGroupID.x] = totals[255];
  }
}
