// printf-style formatting into std::string (GCC 12 has no <format>); the format attribute lets
// -Wformat check every call.
#pragma once

#include <string>

namespace bypass::transport::detail {

std::string str_printf(const char* format, ...) __attribute__((format(printf, 1, 2)));

// Keeps printable ASCII, replaces anything else by '?', caps the length: peer-supplied text
// goes into log lines and error messages.
std::string printable(std::string_view text, size_t max_bytes);

}  // namespace bypass::transport::detail
