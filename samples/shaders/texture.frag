#version 450
// Samples the mipmapped texture at a fixed level of detail (lod >= 0), which shows exactly
// one mip level, or with the implicit level of detail from the screen-space derivatives.
layout(location = 0) in vec2 in_uv;
layout(location = 0) out vec4 out_color;
layout(set = 0, binding = 0) uniform sampler2D tex;

layout(push_constant) uniform Quad {
  vec2 offset;
  vec2 scale;
  float uv_scale;
  float lod;
} quad;

void main() {
  out_color = quad.lod >= 0.0 ? textureLod(tex, in_uv, quad.lod) : texture(tex, in_uv);
}
