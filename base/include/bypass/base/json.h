// JSON text for the small status documents the tools print (bypassctl, bypass-xover status).
#pragma once

#include <string>
#include <string_view>

namespace bypass::base {

// The contents of a JSON string literal for `text` (without the quotes): '"' and '\' escaped,
// every byte below 0x20 written as \u00XX, so that any input gives valid JSON. Bytes >= 0x80
// pass through (our names are ASCII; a non-UTF-8 byte is the caller's to reject).
std::string json_escape(std::string_view text);

}  // namespace bypass::base
