#version 450
// One axis-aligned rectangle in pixels, drawn as a 4-vertex strip with no vertex buffer
// (pixel-aligned edges make coverage exact, so the frame loop can check its image).
layout(push_constant) uniform Draw {
  vec4 rect;         // x0, y0, x1, y1 in pixels
  vec2 target_size;  // pixels
  float shade;       // per-draw brightness
  float pad;
} draw;

layout(set = 0, binding = 0) uniform Material {
  vec4 color;
  vec4 params;
} material;

layout(location = 0) out vec4 v_color;
layout(location = 1) out vec2 v_uv;

void main() {
  vec2 corner = vec2(gl_VertexIndex & 1, gl_VertexIndex >> 1);
  vec2 pixel = mix(draw.rect.xy, draw.rect.zw, corner);
  gl_Position = vec4(pixel / draw.target_size * 2.0 - 1.0, 0.0, 1.0);
  v_color = vec4(material.color.rgb * draw.shade, 1.0);
  v_uv = corner;
}
