#version 450
// Four pipelines share this shader with a different specialization constant, so switching
// pipelines switches real fragment programs.
layout(constant_id = 0) const int kVariant = 0;

layout(set = 0, binding = 0) uniform Material {
  vec4 color;
  vec4 params;
} material;

layout(location = 0) in vec4 v_color;
layout(location = 1) in vec2 v_uv;
layout(location = 0) out vec4 out_color;

void main() {
  vec3 c = v_color.rgb;
  if (kVariant == 1) {
    c *= 0.5 + 0.5 * v_uv.x;
  } else if (kVariant == 2) {
    c = mix(c, material.params.rgb, v_uv.y);
  } else if (kVariant == 3) {
    c *= 0.75 + 0.25 * sin(v_uv.x * 6.2831853 * material.params.w);
  }
  // Never the clear colour's black, so a drawn pixel is always told from the background.
  out_color = vec4(max(c, vec3(0.05)), 1.0);
}
