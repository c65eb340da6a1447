// Text for error messages and log lines: printf-style formatting into std::string (GCC 12 has
// no <format>; the format attribute lets -Wformat check every call) and peer-supplied text made
// safe to print.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace bypass::base {

std::string str_printf(const char* format, ...) __attribute__((format(printf, 1, 2)));

// Keeps printable ASCII, replaces anything else by '?', caps the length: peer- or user-supplied
// text that goes into log lines and error messages.
std::string printable(std::string_view text, size_t max_bytes);

}  // namespace bypass::base
