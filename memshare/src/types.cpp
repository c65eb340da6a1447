#include "bypass/memshare/types.h"

#include <cstdio>

namespace bypass::memshare {

std::string Name::to_string() const {
  char text[33];
  std::snprintf(text, sizeof text, "%016llx%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return std::string(text, 32);
}

std::optional<Name> Name::parse(std::string_view text) {
  if (text.size() != 32) return std::nullopt;
  uint64_t parts[2] = {0, 0};
  for (size_t i = 0; i < 32; ++i) {
    const char c = text[i];
    uint64_t digit;
    if (c >= '0' && c <= '9') {
      digit = static_cast<uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<uint64_t>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      digit = static_cast<uint64_t>(c - 'A' + 10);
    } else {
      return std::nullopt;
    }
    parts[i / 16] = (parts[i / 16] << 4) | digit;
  }
  return Name{parts[0], parts[1]};
}

}  // namespace bypass::memshare
