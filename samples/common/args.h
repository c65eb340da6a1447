// Command-line parsing shared by the samples: every sample takes --out, --frames, --timing and
// --help, and may register a few options of its own. Bad input throws UsageError with a message
// naming the option, so main() can print it and exit 2 instead of running with a guess.
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace bypass::samples {

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What every sample understands.
struct CommonArgs {
  std::string out;      // --out FILE: where the result goes; empty: not written
  uint32_t frames = 1;  // --frames N: how many times the sample's loop runs
  bool timing = false;  // --timing: print the mean time per frame to stderr
};

class ArgParser {
 public:
  // `summary` is the one-line description printed by --help.
  ArgParser(std::string program, std::string summary, CommonArgs& common);

  void add_uint(std::string name, std::string value_name, std::string help, uint32_t* value, uint32_t min,
                uint32_t max);
  void add_string(std::string name, std::string value_name, std::string help, std::string* value);
  void add_choice(std::string name, std::string help, std::vector<std::string> choices, std::string* value);
  void add_flag(std::string name, std::string help, bool* value);

  // Returns false when --help was given (usage already printed; the caller exits 0).
  bool parse(int argc, char** argv);

  std::string usage() const;

 private:
  struct Option {
    std::string name;
    std::string value_name;  // empty for flags
    std::string help;
    std::function<void(const std::string&)> set;
  };

  std::string program_;
  std::string summary_;
  std::vector<Option> options_;
};

}  // namespace bypass::samples
