// Maps the Vulkan drivers' libraries into bypassd's main process before it forks any worker.
//
// Each worker's first vkCreateInstance makes the loader open every installed driver; lavapipe
// alone pulls in LLVM, and opening it (mapping, relocating, running its static constructors)
// cost each session about 25 ms of its start-up and a few MiB of private, relocated pages.
// Opened once in the main process, the libraries are already there, relocated, in every forked
// worker: the loader's own dlopen of the same path finds them, and the pages stay shared.
//
// This calls no Vulkan function: the main process still never talks to a driver. It reads the
// driver manifests the loader would read (VK_DRIVER_FILES / VK_ICD_FILENAMES, else
// VK_ADD_DRIVER_FILES and the standard icd.d folders) and dlopens each "library_path".
#pragma once

#include <string>
#include <vector>

namespace bypass::host {

struct PreloadedDriver {
  std::string manifest;
  std::string library;  // as dlopen was given it
  bool loaded = false;
  std::string error;  // dlerror() when not loaded
};

// The manifests (files) the Vulkan loader would consider, in its order, from the environment.
std::vector<std::string> driver_manifests();

// The "library_path" of a manifest's text, resolved as the loader does: a path with a '/' is
// relative to the manifest's folder unless absolute; a bare name is left for the library
// search path. "" when the manifest names none.
std::string manifest_library(const std::string& manifest_path, const std::string& text);

// dlopens (RTLD_NOW | RTLD_LOCAL, never closed) the library of every manifest.
std::vector<PreloadedDriver> preload_drivers();

}  // namespace bypass::host
