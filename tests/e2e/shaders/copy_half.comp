#version 450
// The probe's host-pointer mode: the second half of a storage buffer becomes a copy of the first,
// so that the device reaches imported memory through a descriptor set.
layout(local_size_x = 64) in;
layout(std430, set = 0, binding = 0) buffer Words {
  uint w[];
};
layout(push_constant) uniform Push {
  uint half_words;
};
void main() {
  uint i = gl_GlobalInvocationID.x;
  if (i < half_words) w[half_words + i] = w[i];
}
