// triangle: headless render of a colour-interpolated triangle into a 256x256 RGBA8 image.
//
// Each frame rewrites the host-visible vertex buffer with the triangle turned a further 20
// degrees, renders it with a classic render pass, copies the image into a host-visible buffer
// and checks every pixel against a CPU rasterization: pixels clearly inside must carry the
// barycentric blend of the vertex colours, pixels clearly outside the clear colour. A frame
// that shows stale vertex data (a missed host write) therefore fails the check.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <numbers>

#include "args.h"
#include "check.h"
#include "commands.h"
#include "context.h"
#include "pipeline.h"
#include "resources.h"
#include "sample_main.h"
#include "vk_check.h"

namespace bypass::samples {
namespace {

constexpr uint32_t kWidth = 256;
constexpr uint32_t kHeight = 256;
constexpr VkFormat kFormat = VK_FORMAT_R8G8B8A8_UNORM;
// Multiples of 1/255 convert to UNORM8 exactly, so the background is checked exactly.
constexpr Rgba kBackground = {32, 32, 48, 255};
constexpr double kDegreesPerFrame = 20.0;
// Interpolated colours may differ from the exact blend by rounding and by where the driver
// evaluates attributes; pixels this close to an edge are not checked at all.
constexpr int kColorTolerance = 2;
constexpr double kEdgeMarginPx = 1.0;

constexpr uint32_t kVertexSpirv[] = {
#include "triangle.vert.inc"
};
constexpr uint32_t kFragmentSpirv[] = {
#include "triangle.frag.inc"
};

struct Vertex {
  float x, y;     // clip space
  float r, g, b;  // linear colour
};

std::array<Vertex, 3> triangle_for_frame(uint32_t frame) {
  const double turn = frame * kDegreesPerFrame * std::numbers::pi / 180.0;
  std::array<Vertex, 3> v{};
  const float colors[3][3] = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}};
  for (int i = 0; i < 3; ++i) {
    const double a = turn + (90.0 + 120.0 * i) * std::numbers::pi / 180.0;
    v[i] = {static_cast<float>(0.8 * std::cos(a)), static_cast<float>(0.8 * std::sin(a)), colors[i][0], colors[i][1],
            colors[i][2]};
  }
  return v;
}

// Checks the whole image against the triangle that was drawn.
void check_image(const Rgba8Image& image, const std::array<Vertex, 3>& v, uint32_t frame) {
  ResultCheck check("triangle frame " + std::to_string(frame));
  // Vertices in pixel space (viewport maps clip x,y in [-1,1] to [0,width], [0,height]).
  double px[3], py[3];
  for (int i = 0; i < 3; ++i) {
    px[i] = (v[i].x + 1.0) * 0.5 * kWidth;
    py[i] = (v[i].y + 1.0) * 0.5 * kHeight;
  }
  const double area = (px[1] - px[0]) * (py[2] - py[0]) - (px[2] - px[0]) * (py[1] - py[0]);
  uint32_t inside = 0;
  for (uint32_t y = 0; y < kHeight; ++y) {
    for (uint32_t x = 0; x < kWidth; ++x) {
      const double cx = x + 0.5, cy = y + 0.5;
      double bary[3], min_dist = 1e9;
      for (int i = 0; i < 3; ++i) {
        const int a = (i + 1) % 3, b = (i + 2) % 3;
        // Edge function of the edge opposite vertex i, signed so that inside is positive.
        const double e = ((px[b] - px[a]) * (cy - py[a]) - (py[b] - py[a]) * (cx - px[a])) / area;
        bary[i] = e;
        const double len = std::hypot(px[b] - px[a], py[b] - py[a]);
        min_dist = std::min(min_dist, e * std::abs(area) / len);
      }
      if (min_dist > kEdgeMarginPx) {
        ++inside;
        Rgba expected{0, 0, 0, 255};
        const float* c[3] = {&v[0].r, &v[1].r, &v[2].r};
        for (int ch = 0; ch < 3; ++ch) {
          const double value = bary[0] * c[0][ch] + bary[1] * c[1][ch] + bary[2] * c[2][ch];
          expected[ch] = static_cast<uint8_t>(std::lround(std::clamp(value, 0.0, 1.0) * 255.0));
        }
        check.expect_pixel(image, x, y, expected, kColorTolerance);
      } else if (min_dist < -kEdgeMarginPx) {
        check.expect_pixel(image, x, y, kBackground);
      }
    }
  }
  // The triangle has circumradius 0.8 (102.4 px): area about 13600 px, minus the edge band.
  check.expect(inside > 12000, "only " + std::to_string(inside) + " pixels inside the triangle");
  check.finish();
}

void run(int argc, char** argv) {
  CommonArgs args;
  args.frames = 3;
  ArgParser parser("triangle", "Renders a turning RGB triangle offscreen (256x256) and checks every pixel.", args);
  if (!parser.parse(argc, argv)) return;

  Context ctx({.app_name = "bypass-triangle"});
  VkDevice device = ctx.device();
  ctx.require_format_features(kFormat, VK_FORMAT_FEATURE_COLOR_ATTACHMENT_BIT | VK_FORMAT_FEATURE_TRANSFER_SRC_BIT);

  Image target(ctx, {.width = kWidth,
                     .height = kHeight,
                     .format = kFormat,
                     .usage = VK_IMAGE_USAGE_COLOR_ATTACHMENT_BIT | VK_IMAGE_USAGE_TRANSFER_SRC_BIT});
  Buffer vertices(ctx, sizeof(Vertex) * 3, VK_BUFFER_USAGE_VERTEX_BUFFER_BIT, MemoryUse::kUpload);
  Buffer readback(ctx, kWidth * kHeight * 4, VK_BUFFER_USAGE_TRANSFER_DST_BIT, MemoryUse::kReadback);

  UniqueRenderPass pass = create_color_render_pass(device, {.format = kFormat});
  UniqueFramebuffer framebuffer = create_framebuffer(device, pass.get(), target.view(), kWidth, kHeight);
  UniqueShaderModule vs = create_shader_module(device, kVertexSpirv);
  UniqueShaderModule fs = create_shader_module(device, kFragmentSpirv);
  UniquePipelineLayout layout = create_pipeline_layout(device, {}, {});
  UniquePipeline pipeline =
      create_graphics_pipeline(device, {.vertex = vs.get(),
                                        .fragment = fs.get(),
                                        .layout = layout.get(),
                                        .render_pass = pass.get(),
                                        .bindings = {{0, sizeof(Vertex), VK_VERTEX_INPUT_RATE_VERTEX}},
                                        .attributes = {{0, 0, VK_FORMAT_R32G32_SFLOAT, offsetof(Vertex, x)},
                                                       {1, 0, VK_FORMAT_R32G32B32_SFLOAT, offsetof(Vertex, r)}}});

  UniqueCommandPool pool =
      create_command_pool(device, ctx.queue_family(), VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT);
  VkCommandBuffer cmd = allocate_command_buffers(device, pool.get(), VK_COMMAND_BUFFER_LEVEL_PRIMARY, 1)[0];
  UniqueFence fence = create_fence(device);

  FrameTimer timer;
  Rgba8Image image;
  for (uint32_t frame = 0; frame < args.frames; ++frame) {
    timer.start();
    // The previous frame's fence has been waited on, so the device no longer reads these.
    const auto tri = triangle_for_frame(frame);
    std::copy(tri.begin(), tri.end(), vertices.mapped<Vertex>().begin());
    vertices.flush();

    begin_command_buffer(cmd, VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT);
    VkClearValue clear{};
    for (int c = 0; c < 4; ++c) clear.color.float32[c] = kBackground[c] / 255.0f;
    VkRenderPassBeginInfo begin{VK_STRUCTURE_TYPE_RENDER_PASS_BEGIN_INFO};
    begin.renderPass = pass.get();
    begin.framebuffer = framebuffer.get();
    begin.renderArea = {{0, 0}, {kWidth, kHeight}};
    begin.clearValueCount = 1;
    begin.pClearValues = &clear;
    vkCmdBeginRenderPass(cmd, &begin, VK_SUBPASS_CONTENTS_INLINE);
    vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_GRAPHICS, pipeline.get());
    record_full_viewport(cmd, kWidth, kHeight);
    const VkBuffer vb = vertices.get();
    const VkDeviceSize offset = 0;
    vkCmdBindVertexBuffers(cmd, 0, 1, &vb, &offset);
    vkCmdDraw(cmd, 3, 1, 0, 0);
    vkCmdEndRenderPass(cmd);  // leaves the image in TRANSFER_SRC_OPTIMAL
    record_copy_image_to_buffer(cmd, target.get(), kWidth, kHeight, readback.get());
    record_memory_barrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT, VK_PIPELINE_STAGE_HOST_BIT,
                          VK_ACCESS_HOST_READ_BIT);
    end_command_buffer(cmd);

    VkSubmitInfo submit{VK_STRUCTURE_TYPE_SUBMIT_INFO};
    submit.commandBufferCount = 1;
    submit.pCommandBuffers = &cmd;
    ctx.submit_and_wait(submit, fence.get());
    timer.stop();

    image = read_rgba8(readback, kWidth, kHeight);
    const bool last = frame + 1 == args.frames;
    if (last && !args.out.empty()) write_png(args.out, image);
    try {
      check_image(image, tri, frame);
    } catch (const CheckError&) {
      // Keep the wrong image for whoever debugs it.
      if (!last && !args.out.empty()) write_png(args.out, image);
      throw;
    }
  }
  if (args.timing) timer.report("triangle");
  const uint8_t* centre = image.at(kWidth / 2, kHeight / 2);
  std::printf("triangle: OK, %u frame(s) on %s, centre pixel %s%s%s\n", args.frames, ctx.properties().deviceName,
              rgba_string({centre[0], centre[1], centre[2], centre[3]}).c_str(), args.out.empty() ? "" : ", wrote ",
              args.out.c_str());
}

}  // namespace
}  // namespace bypass::samples

int main(int argc, char** argv) {
  return bypass::samples::sample_main("triangle", [&] { bypass::samples::run(argc, argv); });
}
