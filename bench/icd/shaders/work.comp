#version 450
// The compute loop's job: `rounds` steps of a linear congruential generator on every element.
// The CPU repeats the same arithmetic to check the result.
layout(local_size_x = 64) in;

layout(set = 0, binding = 0) buffer Data {
  uint values[];
} data;

layout(push_constant) uniform Params {
  uint count;
  uint rounds;
  uint seed;
} params;

void main() {
  uint i = gl_GlobalInvocationID.x;
  if (i >= params.count) return;
  uint x = data.values[i];
  for (uint r = 0; r < params.rounds; ++r) {
    x = x * 1664525u + 1013904223u + params.seed;
  }
  data.values[i] = x;
}
