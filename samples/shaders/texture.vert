#version 450
// Places the unit quad (positions and texture coordinates in [0,1]) at `offset` with size
// `scale` in clip space and scales its texture coordinates (above 1 the texture repeats).
layout(location = 0) in vec2 in_position;
layout(location = 1) in vec2 in_uv;
layout(location = 0) out vec2 out_uv;

layout(push_constant) uniform Quad {
  vec2 offset;
  vec2 scale;
  float uv_scale;
  float lod;  // read by the fragment shader
} quad;

void main() {
  gl_Position = vec4(quad.offset + in_position * quad.scale, 0.0, 1.0);
  out_uv = in_uv * quad.uv_scale;
}
