// common.hpp - shared pieces of the mpk command-line tool: arguments of each subcommand, exit
// codes, error reporting, progress display and formatting helpers.
#pragma once

#include <modelpack/modelpack.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mpk::cli {

// ---- exit codes (documented in `mpk --help`) ----------------------------------------------------
inline constexpr int kExitOk = 0;
inline constexpr int kExitInvalid = 1;  // invalid file, verification failed, not found
inline constexpr int kExitUsage = 2;    // bad command line
inline constexpr int kExitOther = 3;    // I/O or any other error

// The exit code for a failed status.
int exit_code_for(mpk_status status);

// Prints "mpk: error: <MPK_STATUS_NAME>: message" to stderr and returns exit_code_for(status).
int report(const Status &status);
// The status with "path: " in front of its message, unless the message already names the path
// (library messages often do, e.g. "cannot open 'x.mpk': ...").
Status with_file(const Status &status, const std::string &path);
// Prints "mpk: warning: message" to stderr.
void warn(std::string_view message);

// Opens a model for reading; a missing file is MPK_ERR_NOT_FOUND (exit 1) with a plain message.
Result<Model> open_model(const std::string &path, Verify verify, const std::vector<PublicKey> &trusted_keys = {},
                         unsigned threads = 1);

// ---- subcommand arguments (filled by CLI11 in main.cpp) -----------------------------------------
struct InspectArgs {
  std::vector<std::string> files;
  bool json = false;
};
struct VerifyArgs {
  std::vector<std::string> files;
  std::vector<std::string> pubkeys;
  bool json = false;
  unsigned threads = 1;
  std::string mode = "full";
};
struct PackArgs {
  std::string dir;
  std::string output;
  uint32_t alignment = MPK_DEFAULT_ALIGNMENT;
  std::vector<std::string> meta, meta_int, meta_float, meta_bool;  // "KEY=VALUE"
  bool verbose = false;
  bool no_fsync = false;
};
struct ExtractArgs {
  std::string file;
  std::string name;
  std::string output;
  bool bf16_as_u16 = false;
  bool no_verify = false;
};

}  // namespace mpk::cli
namespace mpk::rt {
struct GraphDef;
}
namespace mpk::cli {

struct ConvertArgs {
  std::string input;
  std::string output;
  std::string from, to;  // "" = from the extension
  uint32_t alignment = MPK_DEFAULT_ALIGNMENT;
  bool no_fsync = false;
  bool deflate = false;  // .npz output
  std::string name;      // .npy input: the tensor's name
  unsigned threads = 0;        // safetensors input: 0 = automatic, 1 = one thread
  std::string compress = "none";  // .mpk output: compression codec (mpk compress --codec)
  int level = 3;
  std::string max_shard_size;  // sharded safetensors output: "5GB", "2GiB", bytes; "" = default
  std::string arch, config;    // .mpk output: attach the graph of this template (mlp, gpt2)
};

struct CompressArgs {
  std::string input;
  std::string output;
  bool decompress = false;
  std::string codec = "auto";
  int level = 3;
  unsigned threads = 0;
  std::string chunk_size;  // "" = the library's default
  double min_decode_gbps = 0;
  uint32_t alignment = MPK_DEFAULT_ALIGNMENT;
  bool no_fsync = false;
};

struct DiffArgs {
  std::string base, target, output;
  bool two_way = false, no_low_rank = false;
  int level = 3, result_level = 3;
  unsigned threads = 0;
  bool no_fsync = false;
};

struct PatchArgs {
  std::string base;
  std::vector<std::string> patches;
  std::string output;
  bool reverse = false;
  unsigned threads = 0;
  bool no_fsync = false;
};

struct QuantizeArgs {
  std::string input, output;
  std::string to;
  std::string include, exclude;
  bool embeddings = false;
  unsigned threads = 0;
  bool quiet = false;
  bool no_fsync = false;
};

struct RunArgs {
  std::string model, input, input_name, output, output_name, arch, config, packed;
  unsigned threads = 0;
  bool profile = false, quiet = false, no_fsync = false;
};

int run_run(const RunArgs &args);

struct GenerateArgs {
  std::string model, prompt_ids, prompt_text, arch, config, packed;
  unsigned n = 16, threads = 0;
  double temperature = 0;
  uint64_t seed = 0;
  bool quiet = false;
};
int run_generate(const GenerateArgs &args);
// The graph `mpk run` / `generate` / `convert --arch` use: the model's own (arch empty) or the
// template's (mlp, gpt2) with the JSON config at `config` ("" = none).
Result<rt::GraphDef> graph_of(const Model &m, const std::string &model_path, const std::string &arch,
                              const std::string &config);
int run_quantize(const QuantizeArgs &args);
int run_compress(const CompressArgs &args);
int run_diff(const DiffArgs &args);
int run_patch(const PatchArgs &args);
int run_inspect(const InspectArgs &args);
int run_convert(const ConvertArgs &args);
int run_verify(const VerifyArgs &args);
struct KeygenArgs {
  std::string output;
  bool force = false;
};
struct SignArgs {
  std::string file, key, output;
  bool no_fsync = false;
};
int run_keygen(const KeygenArgs &args);
int run_sign(const SignArgs &args);
int run_pack(const PackArgs &args);
int run_extract(const ExtractArgs &args);

// ---- progress -----------------------------------------------------------------------------------
// A one-line byte counter on stderr, redrawn at most ~10 times a second, shown only when stderr is
// a terminal (never in pipes, logs or tests). Thread-safe for add().
class Progress {
 public:
  Progress(std::string label, uint64_t total);
  ~Progress();  // clears the line
  Progress(const Progress &) = delete;
  Progress &operator=(const Progress &) = delete;
  void add(uint64_t bytes, std::string_view item = {});
  void set_total(uint64_t total) { total_ = total; }
  void finish();

 private:
  void draw(uint64_t done, std::string_view item);
  std::string label_;
  uint64_t total_;
  bool enabled_;
  bool drawn_ = false;
  struct State;
  State *state_;
};

// ---- formatting ---------------------------------------------------------------------------------
std::string human_bytes(uint64_t bytes);      // "1.50 MiB"
std::string hex64(uint64_t v);                // 16 lowercase hex digits
std::string shape_string(std::span<const uint64_t> shape);  // "[3, 4]", "[]" for a scalar
std::string seconds_string(double seconds);   // "12.34 ms", "1.234 s"
std::string format_double(double v);          // shortest round-trip text, "1.0" not "1"
std::string printable(std::string_view s);    // control characters as \xHH, the rest as is
// Largest power of two dividing offset, capped at MPK_MAX_ALIGNMENT (offset 0 -> the cap).
uint64_t offset_alignment(uint64_t offset);

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace mpk::cli
