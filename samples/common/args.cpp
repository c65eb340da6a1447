#include "args.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <sstream>

namespace bypass::samples {

ArgParser::ArgParser(std::string program, std::string summary, CommonArgs& common)
    : program_(std::move(program)), summary_(std::move(summary)) {
  add_string("--out", "FILE", "write the result to FILE", &common.out);
  add_uint("--frames", "N", "run the sample's loop N times (the output is the last one)", &common.frames, 1, 100000);
  add_flag("--timing", "print the mean time per frame to stderr", &common.timing);
}

void ArgParser::add_uint(std::string name, std::string value_name, std::string help, uint32_t* value, uint32_t min,
                         uint32_t max) {
  std::string option_name = name;
  help += " [" + std::to_string(min) + ".." + std::to_string(max) + ", default " + std::to_string(*value) + "]";
  options_.push_back({std::move(name), std::move(value_name), std::move(help),
                      [value, min, max, option_name](const std::string& text) {
                        uint64_t parsed = 0;
                        const char* end = text.data() + text.size();
                        auto [ptr, ec] = std::from_chars(text.data(), end, parsed);
                        if (text.empty() || ec != std::errc() || ptr != end || parsed < min || parsed > max) {
                          throw UsageError(option_name + " expects an integer in [" + std::to_string(min) + ", " +
                                           std::to_string(max) + "], got '" + text + "'");
                        }
                        *value = static_cast<uint32_t>(parsed);
                      }});
}

void ArgParser::add_string(std::string name, std::string value_name, std::string help, std::string* value) {
  std::string option_name = name;
  options_.push_back(
      {std::move(name), std::move(value_name), std::move(help), [value, option_name](const std::string& text) {
         if (text.empty()) throw UsageError(option_name + " expects a value");
         *value = text;
       }});
}

void ArgParser::add_choice(std::string name, std::string help, std::vector<std::string> choices, std::string* value) {
  std::string joined;
  for (const auto& c : choices) joined += (joined.empty() ? "" : "|") + c;
  std::string option_name = name;
  help += " [default " + *value + "]";
  options_.push_back(
      {std::move(name), joined, std::move(help), [value, option_name, choices, joined](const std::string& text) {
         if (std::find(choices.begin(), choices.end(), text) == choices.end()) {
           throw UsageError(option_name + " expects one of " + joined + ", got '" + text + "'");
         }
         *value = text;
       }});
}

void ArgParser::add_flag(std::string name, std::string help, bool* value) {
  options_.push_back({std::move(name), "", std::move(help), [value](const std::string&) { *value = true; }});
}

bool ArgParser::parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(usage().c_str(), stdout);
      return false;
    }
    // Accept both "--name value" and "--name=value".
    std::string value;
    bool has_inline_value = false;
    if (auto eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_inline_value = true;
    }
    auto it = std::find_if(options_.begin(), options_.end(), [&](const Option& o) { return o.name == arg; });
    if (it == options_.end()) {
      throw UsageError("unknown argument '" + arg + "' (see --help)");
    }
    if (it->value_name.empty()) {
      if (has_inline_value) throw UsageError(arg + " takes no value");
      it->set("");
      continue;
    }
    if (!has_inline_value) {
      if (i + 1 >= argc) throw UsageError(arg + " expects a value " + it->value_name);
      value = argv[++i];
    }
    it->set(value);
  }
  return true;
}

std::string ArgParser::usage() const {
  std::ostringstream s;
  s << "usage: " << program_ << " [options]\n" << summary_ << "\n\noptions:\n";
  for (const auto& o : options_) {
    std::string left = "  " + o.name + (o.value_name.empty() ? "" : " " + o.value_name);
    s << left;
    if (left.size() < 26) {
      s << std::string(26 - left.size(), ' ');
    } else {
      s << "\n" << std::string(26, ' ');
    }
    s << o.help << "\n";
  }
  s << "  --help                  print this help\n";
  s << "\nenvironment:\n"
       "  BYPASS_SAMPLE_VALIDATION=1     enable VK_LAYER_KHRONOS_validation; any validation\n"
       "                                 error makes the sample exit non-zero\n"
       "  BYPASS_SAMPLE_VALIDATION=sync  the same plus synchronization validation\n"
       "\nexit status: 0 result verified, 1 wrong result or Vulkan error, 2 bad arguments\n";
  return s.str();
}

}  // namespace bypass::samples
