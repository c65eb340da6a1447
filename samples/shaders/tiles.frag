#version 450
layout(location = 0) out vec4 out_color;

layout(push_constant) uniform Tile {
  vec4 rect;
  vec4 color;
  vec2 target_size;
} tile;

void main() {
  out_color = tile.color;
}
