#version 450
// Draws one axis-aligned rectangle, given in pixels, as a 4-vertex triangle strip with no
// vertex buffer. Pixel-aligned edges make coverage exact on every conformant rasterizer.
layout(push_constant) uniform Tile {
  vec4 rect;         // x0, y0, x1, y1 in pixels
  vec4 color;
  vec2 target_size;  // pixels
} tile;

void main() {
  vec2 corner = vec2(gl_VertexIndex & 1, gl_VertexIndex >> 1);
  vec2 pixel = mix(tile.rect.xy, tile.rect.zw, corner);
  gl_Position = vec4(pixel / tile.target_size * 2.0 - 1.0, 0.0, 1.0);
}
