#include "driver_preload.h"

#include <dirent.h>
#include <dlfcn.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace bypass::host {

namespace {

std::vector<std::string> split(const char* list, char sep) {
  std::vector<std::string> out;
  if (!list) return out;
  std::string item;
  for (const char* p = list;; ++p) {
    if (*p == sep || *p == '\0') {
      if (!item.empty()) out.push_back(item);
      item.clear();
      if (*p == '\0') break;
    } else {
      item += *p;
    }
  }
  return out;
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// A folder's *.json files, sorted (the loader's order within a folder is unspecified).
void add_folder(const std::string& dir, std::vector<std::string>* out) {
  DIR* d = opendir(dir.c_str());
  if (!d) return;
  std::vector<std::string> found;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() > 5 && name.compare(name.size() - 5, 5, ".json") == 0) found.push_back(dir + "/" + name);
  }
  closedir(d);
  std::sort(found.begin(), found.end());
  out->insert(out->end(), found.begin(), found.end());
}

// Files and folders as VK_DRIVER_FILES lists them.
void add_paths(const char* list, std::vector<std::string>* out) {
  for (const std::string& p : split(list, ':')) {
    if (is_dir(p))
      add_folder(p, out);
    else
      out->push_back(p);
  }
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

}  // namespace

std::vector<std::string> driver_manifests() {
  std::vector<std::string> out;
  const char* only = std::getenv("VK_DRIVER_FILES");
  if (!only || !*only) only = std::getenv("VK_ICD_FILENAMES");
  if (only && *only) {
    add_paths(only, &out);
    return out;
  }
  add_paths(std::getenv("VK_ADD_DRIVER_FILES"), &out);
  // The loader's search path on Linux: configuration folders first, then data folders.
  std::vector<std::string> roots;
  if (const char* home = std::getenv("HOME"))
    roots.push_back(env_or("XDG_CONFIG_HOME", (std::string(home) + "/.config").c_str()));
  for (const std::string& d : split(env_or("XDG_CONFIG_DIRS", "/etc/xdg").c_str(), ':')) roots.push_back(d);
  roots.push_back("/etc");
  if (const char* home = std::getenv("HOME"))
    roots.push_back(env_or("XDG_DATA_HOME", (std::string(home) + "/.local/share").c_str()));
  for (const std::string& d : split(env_or("XDG_DATA_DIRS", "/usr/local/share:/usr/share").c_str(), ':'))
    roots.push_back(d);
  for (const std::string& root : roots) add_folder(root + "/vulkan/icd.d", &out);
  std::vector<std::string> unique;
  for (const std::string& m : out)
    if (std::find(unique.begin(), unique.end(), m) == unique.end()) unique.push_back(m);
  return unique;
}

std::string manifest_library(const std::string& manifest_path, const std::string& text) {
  // Enough JSON for one string member: "library_path" : "value", with \" \\ \/ escapes.
  const size_t key = text.find("\"library_path\"");
  if (key == std::string::npos) return "";
  size_t i = text.find(':', key + 14);
  if (i == std::string::npos) return "";
  i = text.find('"', i + 1);
  if (i == std::string::npos) return "";
  std::string value;
  for (++i; i < text.size() && text[i] != '"'; ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) ++i;
    value += text[i];
  }
  if (i >= text.size() || value.empty()) return "";
  if (value.front() == '/' || value.find('/') == std::string::npos) return value;
  const size_t slash = manifest_path.rfind('/');
  return (slash == std::string::npos ? std::string(".") : manifest_path.substr(0, slash)) + "/" + value;
}

std::vector<PreloadedDriver> preload_drivers() {
  std::vector<PreloadedDriver> out;
  for (const std::string& manifest : driver_manifests()) {
    std::ifstream in(manifest);
    if (!in) continue;
    std::stringstream text;
    text << in.rdbuf();
    PreloadedDriver d{manifest, manifest_library(manifest, text.str())};
    if (d.library.empty()) {
      d.error = "names no library_path";
    } else if (dlopen(d.library.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      d.loaded = true;  // never closed: the workers inherit it
    } else {
      const char* err = dlerror();
      d.error = err ? err : "dlopen failed";
    }
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace bypass::host
