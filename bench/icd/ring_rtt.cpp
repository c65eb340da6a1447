// ring_rtt: the floor under every synchronous Vulkan call through the bypass. Two threads of
// one process hold the two ends of a transport session (the same shared-memory rings, spin
// budget and futex wake-ups bypassd and the guest ICD use) and bounce a 32-byte message back
// and forth: no Vulkan, no FlatBuffers, no driver. bench/run compares it with sync_rtt's
// vkGetFenceStatus: the difference is what encoding, decoding and the host's handling add.
//
// Measured like sync_rtt: back to back (the echo thread is still spinning) and after a 1 ms
// pause (it has gone to sleep on the futex). Prints one JSON object.
//
// --process: the echo runs in a forked process instead of a thread, as bypassd's worker does
// (a wake-up then switches address spaces too).
//
// --link vm: the same over a VM session's link (transport/vm.h) with both ends in this process:
// the device is a file in /dev/shm, wake-ups poll instead of using a futex. The floor under a VM
// guest's round trip, without the hypervisor. --link vm-doorbell: the same with the slot's
// doorbell (a UNIX socket here, where a VM has a virtio-serial port): sleepers block on it.
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <optional>

#include "bypass/transport/session.h"
#include "bypass/transport/vm.h"
#include "report.h"

namespace {

using bypass::bench::Clock;
using bypass::bench::seconds_between;
namespace transport = bypass::transport;

constexpr uint32_t kPing = 1;
constexpr uint32_t kStop = 2;

int run(int argc, char** argv) {
  std::string scale = "full";
  std::string link = "socket";
  bool process = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--scale" && i + 1 < argc) {
      scale = argv[++i];
    } else if (arg == "--link" && i + 1 < argc) {
      link = argv[++i];
    } else if (arg == "--process") {
      process = true;
    } else if (arg == "--help" || arg == "-h") {
      std::printf(
          "usage: ring_rtt [--scale smoke|quick|full] [--link socket|vm|vm-doorbell] [--process]\n"
          "Round trip of a 32-byte message between two threads (--process: two processes) over a\n"
          "bypass transport session.\n");
      return 0;
    } else {
      std::fprintf(stderr, "ring_rtt: unknown argument '%s' (see --help)\n", arg.c_str());
      return 2;
    }
  }
  if (scale != "smoke" && scale != "quick" && scale != "full") {
    std::fprintf(stderr, "ring_rtt: --scale expects smoke, quick or full, got '%s'\n", scale.c_str());
    return 2;
  }
  const uint32_t hot_calls = scale == "smoke" ? 500 : scale == "quick" ? 20'000 : 50'000;
  const uint32_t idle_calls = scale == "smoke" ? 20 : scale == "quick" ? 200 : 500;

  if (link != "socket" && link != "vm" && link != "vm-doorbell") {
    std::fprintf(stderr, "ring_rtt: --link expects socket, vm or vm-doorbell, got '%s'\n", link.c_str());
    return 2;
  }
  std::string error;
  std::optional<transport::ChannelPair> pair;
  // --link vm: a device file and bypassd's main loop (heartbeat, accept) on a thread.
  std::optional<transport::VmDevice> device;
  std::atomic<bool> serving{true};
  std::thread server;
  const std::string device_path = "/dev/shm/bypass-ring-rtt-" + std::to_string(getpid());
  if (link == "socket") {
    if (auto made = transport::make_channel_pair({})) {
      pair.emplace(std::move(made).value());
    } else {
      error = made.error().message;
    }
  } else if (auto made = transport::VmDevice::create(device_path, [&] {
               transport::VmDeviceOptions options;
               options.doorbells = link == "vm-doorbell";
               return options;
             }())) {
    device.emplace(std::move(*made));
    std::optional<transport::Result<transport::Channel>> host;
    std::atomic<bool> accepted{false};
    server = std::thread([&] {
      while (serving) {
        device->heartbeat();
        if (!accepted && device->slot_requested(0)) {
          host.emplace(device->accept(0, transport::Hello{0, 0, "ring_rtt host"}, device->doorbell(0)));
          accepted = true;  // release: `host` is written before the guest's thread reads it
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
    auto guest = transport::connect_vm("ivshmem:" + device_path, transport::Hello{0, 0, "ring_rtt guest"},
                                       transport::deadline_after(std::chrono::seconds(5)));
    while (guest && !accepted) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (!guest) {
      error = guest.error().message;
    } else if (!*host) {
      error = (*host).error().message;
    } else {
      pair.emplace(transport::ChannelPair{std::move(guest).value(), std::move(*host).value()});
    }
  } else {
    error = made.error().message;
  }
  ::unlink(device_path.c_str());
  auto stop_server = [&] {
    serving = false;
    if (server.joinable()) server.join();
  };
  if (!pair) {
    stop_server();
    std::fprintf(stderr, "ring_rtt: cannot make a transport session: %s\n", error.c_str());
    return 1;
  }
  auto echo_loop = [&] {
    transport::Message msg;
    while (pair->host.recv(msg) == transport::Status::kOk && msg.kind == kPing) {
      if (pair->host.send(kPing, msg.payload) != transport::Status::kOk) break;
    }
  };
  std::thread echo;
  pid_t child = -1;
  if (process) {
    child = fork();
    if (child == 0) {
      echo_loop();
      _exit(0);
    }
    if (child < 0) {
      std::perror("ring_rtt: fork");
      stop_server();
      return 1;
    }
  } else {
    echo = std::thread(echo_loop);
  }

  std::array<std::byte, 32> payload{};
  transport::Message reply;
  bool ok = true;
  auto call = [&](uint32_t i) {
    std::memcpy(payload.data(), &i, sizeof i);
    if (pair->guest.send(kPing, payload) != transport::Status::kOk ||
        pair->guest.recv(reply) != transport::Status::kOk || reply.payload.size() != payload.size() ||
        std::memcmp(reply.payload.data(), payload.data(), payload.size()) != 0) {
      ok = false;
    }
  };

  for (uint32_t i = 0; i < hot_calls / 10 + 10 && ok; ++i) call(i);
  // How often either side gave up spinning and slept on the futex during the back-to-back
  // calls: the transport's own account of why a round trip took longer than a spin.
  const auto guest_before = pair->guest.stats();
  const auto host_before = pair->host.stats();
  const auto start = Clock::now();
  for (uint32_t i = 0; i < hot_calls && ok; ++i) call(i);
  const double hot_mean_us = seconds_between(start, Clock::now()) * 1e6 / hot_calls;
  const auto guest_after = pair->guest.stats();
  const auto host_after = pair->host.stats();
  std::vector<double> hot, idle;
  for (uint32_t i = 0; i < hot_calls && ok; ++i) {
    const auto t0 = Clock::now();
    call(i);
    hot.push_back(seconds_between(t0, Clock::now()) * 1e6);
  }
  for (uint32_t i = 0; i < idle_calls && ok; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    const auto t0 = Clock::now();
    call(i);
    idle.push_back(seconds_between(t0, Clock::now()) * 1e6);
  }
  (void)pair->guest.send(kStop, {});
  if (echo.joinable()) echo.join();
  if (child > 0) waitpid(child, nullptr, 0);
  stop_server();
  if (!ok) {
    std::fprintf(stderr, "ring_rtt: a round trip failed or came back with the wrong bytes\n");
    return 1;
  }

  bypass::bench::Report out;
  out.set("workload", std::string(link == "vm"            ? "ring_rtt_vm"
                                  : link == "vm-doorbell" ? "ring_rtt_vm_doorbell"
                                                          : "ring_rtt") +
                          (process ? "_process" : ""));
  out.set("scale", scale);
  out.set("hot_calls", hot_calls);
  out.set("idle_calls", idle_calls);
  out.set("hot_mean_us", hot_mean_us);
  out.set("hot_median_us", bypass::bench::median(hot));
  out.set("hot_p99_us", bypass::bench::percentile(hot, 99));
  out.set("hot_guest_sleeps_per_call", static_cast<double>(guest_after.sleeps - guest_before.sleeps) / hot_calls);
  out.set("hot_host_sleeps_per_call", static_cast<double>(host_after.sleeps - host_before.sleeps) / hot_calls);
  out.set("hot_wakes_per_call", static_cast<double>(guest_after.wakes_issued - guest_before.wakes_issued +
                                                    host_after.wakes_issued - host_before.wakes_issued) /
                                    hot_calls);
  out.set("idle_median_us", bypass::bench::median(idle));
  out.set("idle_p99_us", bypass::bench::percentile(idle, 99));
  std::printf("%s\n", out.json().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
