// main.cpp - the `mpk` command-line tool: command-line parsing (CLI11) and dispatch.
//
// CLI11 reports parse errors and --help with exceptions; they are all caught here. The subcommands
// themselves (cmd_*.cpp) use the exception-free mpk::Status API and return an exit code.
#include "common.hpp"

#include <CLI/CLI.hpp>

#include <modelpack/safetensors.hpp>

#include <cstdio>
#include <exception>
#include <new>

namespace {

constexpr const char *kExitCodes =
    "Exit codes:\n"
    "  0  success\n"
    "  1  the file is invalid, verification failed, or a file/tensor was not found\n"
    "  2  usage error (bad command line or option value)\n"
    "  3  I/O or any other error\n"
    "Errors are printed to stderr as 'mpk: error: <MPK_STATUS_NAME>: message'. Progress is shown\n"
    "on stderr only when it is a terminal.\n";

int run(int argc, char **argv) {
  using namespace mpk::cli;
  CLI::App app("mpk - inspect, verify, pack and extract .mpk model files (libmodelpack " +
                   std::string(mpk_version_string()) + ")",
               "mpk");
  app.footer(kExitCodes);
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(mpk_version_string()));

  InspectArgs inspect;
  CLI::App *c_inspect = app.add_subcommand(
      "inspect", "Show the header of a .mpk file: format, features, sizes, content id, components, "
                 "metadata and the tensor table");
  c_inspect->add_option("FILE", inspect.files, "the .mpk files (each in turn)")->required();
  c_inspect->add_flag("--json", inspect.json,
                      "print one JSON document with everything (metadata values complete); with "
                      "several files one compact document per line");

  VerifyArgs verify;
  CLI::App *c_verify = app.add_subcommand(
      "verify", "Check .mpk files: header checksums and content id, and with --mode full (the "
                "default) every tensor's XXH3 checksum. Several files are checked one after the "
                "other, each reported; the exit code is the worst of theirs");
  c_verify->add_option("FILE", verify.files, "the .mpk files")->required();
  c_verify->add_option("--pubkey", verify.pubkeys,
                       "require a signature by this public key (repeatable: any of them); --mode full "
                       "checks every byte against it, header the preamble and header")
      ->allow_extra_args(false);
  c_verify->add_flag("--json", verify.json,
                     "one JSON object per file on stdout: {\"file\", \"status\", \"message\"} "
                     "(status MPK_OK or the error's name); nothing on stderr");
  c_verify->add_option("--threads,-j", verify.threads, "threads hashing tensors")
      ->check(CLI::Range(1u, 1024u))
      ->capture_default_str();
  c_verify->add_option("--mode", verify.mode, "header: header only; full: also every tensor")
      ->check(CLI::IsMember({"header", "full"}))
      ->capture_default_str();

  // --alignment of pack and convert: a usage error (exit 2) before anything is opened.
  const CLI::Validator kAlignment(
      [](std::string &v) -> std::string {
        unsigned long long a = 0;
        try {
          a = std::stoull(v);
        } catch (...) {
          return "not a number: " + v;
        }
        if (a == 0 || a > MPK_MAX_ALIGNMENT || (a & (a - 1)) != 0)
          return "alignment must be a power of two in [1, 65536], got " + v;
        return {};
      },
      "POW2");
  // Byte sizes (--max-shard-size, --chunk-size): "5GB", "2GiB", "1.5MB" or bytes; a usage error otherwise.
  const CLI::Validator kSize(
      [](std::string &v) -> std::string {
        auto size = mpk::safetensors::parse_size(v);
        return size ? std::string() : size.status().message();
      },
      "SIZE");

  PackArgs pack;
  CLI::App *c_pack = app.add_subcommand(
      "pack",
      "Pack every .npy file under DIR (recursively) into a .mpk file. Tensor names are the paths "
      "relative to DIR without '.npy' ('/' separated), in sorted order. Other files are ignored "
      "(listed with --verbose). Data is streamed in 8 MiB pieces: memory use does not grow with "
      "the file sizes.");
  c_pack->add_option("DIR", pack.dir, "directory of .npy files")->required();
  c_pack->add_option("-o,--output", pack.output, "the .mpk file to write")->required();
  c_pack->add_option("--alignment", pack.alignment,
                     "alignment of each tensor's file offset (power of two, 1..65536)")
      ->capture_default_str()
      ->check(kAlignment);
  c_pack->add_option("--meta", pack.meta, "string metadata KEY=VALUE (repeatable)")
      ->allow_extra_args(false);
  c_pack->add_option("--meta-int", pack.meta_int, "int64 metadata KEY=N (repeatable)")
      ->allow_extra_args(false);
  c_pack->add_option("--meta-float", pack.meta_float, "float64 metadata KEY=X (repeatable)")
      ->allow_extra_args(false);
  c_pack->add_option("--meta-bool", pack.meta_bool, "bool metadata KEY=true|false (repeatable)")
      ->allow_extra_args(false);
  c_pack->add_flag("-v,--verbose", pack.verbose, "list the files packed and ignored");
  c_pack->add_flag("--no-fsync", pack.no_fsync,
                   "do not sync before the final rename (faster, less durable)");

  ExtractArgs extract;
  CLI::App *c_extract = app.add_subcommand(
      "extract",
      "Write one tensor of a .mpk file as a .npy file (atomically). The tensor's checksum is "
      "verified first.");
  c_extract->add_option("FILE", extract.file, "the .mpk file")->required();
  c_extract->add_option("NAME", extract.name, "the tensor's name")->required();
  c_extract->add_option("-o,--output", extract.output, "the .npy file to write")->required();
  c_extract->add_flag("--bf16-as-u16", extract.bf16_as_u16,
                      "write a bf16 tensor's raw bits as '<u2' (NumPy has no bf16); without it, "
                      "bf16 tensors are refused");
  c_extract->add_flag("--no-verify", extract.no_verify, "skip the tensor checksum check");

  ConvertArgs convert;
  CLI::App *c_convert = app.add_subcommand(
      "convert", "Convert a model file to another format: safetensors, GGUF, NumPy .npz or .npy -> mpk "
                 "and mpk -> safetensors, GGUF, .npz or .npy. Formats come from the extensions "
                 "unless named. Streaming and atomic: on error nothing new appears at OUT. Imports record "
                 "the source format, the source file's XXH3 and the tool version in the metadata. An .npz "
                 "member <name>.npy becomes tensor <name> and back; a .npy file is one tensor named after "
                 "the file (--name to choose), and a .npy output needs a model of exactly one tensor. A "
                 "sharded safetensors checkpoint is named by its index, model.safetensors.index.json: as IN "
                 "its shards are joined into one .mpk, as OUT the shards and the index are written "
                 "(--max-shard-size). A split GGUF model (NAME-00001-of-00003.gguf ...) is given by any "
                 "of its parts and joined; GGUF -> mpk -> GGUF keeps key and tensor order, the version "
                 "and the layout.");
  c_convert->add_option("IN", convert.input, "the input file")->required();
  c_convert->add_option("--arch", convert.arch,
                        "attach a graph built by this architecture template to the .mpk output (mlp, gpt2), as "
                        "mpk run / generate use it");
  c_convert->add_option("--config", convert.config, "the template's config (JSON; gpt2: Hugging Face config.json)");
  c_convert->add_option("OUT", convert.output, "the output file")->required();
  c_convert->add_option("--from", convert.from, "input format")
      ->check(CLI::IsMember({"mpk", "safetensors", "gguf", "npz", "npy"}));
  c_convert->add_option("--to", convert.to, "output format")
      ->check(CLI::IsMember({"mpk", "safetensors", "gguf", "npz", "npy"}));
  c_convert->add_option("--alignment", convert.alignment, "tensor alignment of an .mpk output (power of two)")
      ->capture_default_str()
      ->check(kAlignment);
  c_convert->add_flag("--no-fsync", convert.no_fsync, "do not sync before the final rename");
  c_convert->add_flag("--deflate", convert.deflate,
                      ".npz output: deflate the members, as np.savez_compressed (default: store them, as "
                      "np.savez)");
  c_convert->add_option("--name", convert.name,
                        ".npy input: the tensor's name (default: the file name without .npy)");
  c_convert->add_option("--compress", convert.compress,
                        ".mpk output: compress the tensors as `mpk compress --codec` does (auto, zstd, float; "
                        "default none)")
      ->check(CLI::IsMember({"none", "raw", "auto", "zstd", "float"}));
  c_convert->add_option("--level", convert.level, "with --compress: effort 1..19 (default 3)")
      ->check(CLI::Range(1, 19));
  c_convert->add_option("--threads", convert.threads,
                        "safetensors input: 1 = convert on one thread; 0 (default) = a reader thread as "
                        "well for 8 MiB of tensor data or more on 2+ CPUs")
      ->check(CLI::Range(0u, 64u));
  c_convert->add_option("--max-shard-size", convert.max_shard_size,
                        "sharded safetensors output (OUT ends in .safetensors.index.json): split into shards "
                        "of at most SIZE (5GB, 500MB, 2GiB, 1.5GB or bytes; GB = 10^9, GiB = 2^30; a bigger "
                        "tensor gets a shard of its own), greedily in the model's tensor order as transformers "
                        "does. Default: the shards of a sharded import (same names and tensors), else 5GB")
      ->check(kSize);

  CompressArgs compress;
  CLI::App *c_compress = app.add_subcommand(
      "compress", "Compress a .mpk model: each tensor of 4 KiB or more is cut into independent chunks, each "
                  "stored with the codec that makes it smallest (auto), as a zstd frame (zstd), in float-aware "
                  "byte planes with rANS/zstd (float), or raw. Tensor checksums and the content id do not "
                  "change; any tensor, or any slice of one, still reads without decoding the rest.");
  c_compress->add_option("IN", compress.input, "the .mpk model")->required();
  c_compress->add_option("OUT", compress.output, "the compressed .mpk to write")->required();
  c_compress->add_option("--codec", compress.codec, "auto, zstd, float or raw (= decompress)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "zstd", "float", "raw", "none"}));
  c_compress->add_option("--level", compress.level,
                         "effort 1..19: up to 5 order-0 rANS on byte planes; 6+ also order-1 rANS and zstd at "
                         "this level on each plane; 9+ also whole-chunk zstd")
      ->capture_default_str()
      ->check(CLI::Range(1, 19));
  c_compress->add_option("--threads", compress.threads, "encoding threads (0 = one per core)")
      ->capture_default_str()
      ->check(CLI::Range(0u, 1024u));
  c_compress->add_option("--chunk-size", compress.chunk_size,
                         "decoded bytes per chunk (e.g. 1MiB, 256KiB; at most 64MiB). Default 1MiB")
      ->check(kSize);
  c_compress->add_option("--min-decode-speed", compress.min_decode_gbps,
                         "GB/s per core that decoding must reach (modelled); slower plane codings are stored raw")
      ->check(CLI::Range(0.0, 1000.0));
  c_compress->add_option("--alignment", compress.alignment, "tensor alignment of the output (power of two)")
      ->capture_default_str()
      ->check(kAlignment);
  c_compress->add_flag("--no-fsync", compress.no_fsync, "do not sync before the final rename");
  CompressArgs decompress;
  decompress.decompress = true;
  CLI::App *c_decompress = app.add_subcommand(
      "decompress", "Write a .mpk model with every tensor stored raw again (mappable, zero-copy); the content id "
                    "does not change.");
  c_decompress->add_option("IN", decompress.input, "the .mpk model")->required();
  c_decompress->add_option("OUT", decompress.output, "the .mpk to write")->required();
  c_decompress->add_option("--alignment", decompress.alignment, "tensor alignment of the output (power of two)")
      ->capture_default_str()
      ->check(kAlignment);
  c_decompress->add_flag("--no-fsync", decompress.no_fsync, "do not sync before the final rename");

  DiffArgs diff;
  CLI::App *c_diff = app.add_subcommand(
      "diff", "Make a delta patch from BASE to NEW: tensors kept, renamed or moved cost a few bytes, changed ones "
              "the smaller of their new data and their XOR or integer difference from the base, compressed (also "
              "when rows were added or removed at a tensor's end, as in a resized vocabulary). The patch names "
              "both models by content id.");
  c_diff->add_option("BASE", diff.base, "the model the patch starts from (.mpk)")->required();
  c_diff->add_option("NEW", diff.target, "the model it makes (.mpk)")->required();
  c_diff->add_option("-o,--output", diff.output, "the patch to write")->required();
  c_diff->add_flag("--two-way", diff.two_way,
                   "also store the base tensors NEW removes or replaces, and use only deltas that reverse, so that "
                   "`mpk patch --reverse` always works");
  c_diff->add_option("--level", diff.level,
                     "effort for the payloads, 1..19 (as mpk compress); from 6 a one-way patch may store a float "
                     "tensor's differences in the order of the base's exponents, and an f32 matrix's against the "
                     "base plus a fitted low-rank product (smaller, not reversible)")
      ->capture_default_str()
      ->check(CLI::Range(1, 19));
  c_diff->add_flag("--no-low-rank", diff.no_low_rank,
                   "never predict a tensor's change by a low-rank product (levels >= 6; it costs a fit per f32 "
                   "matrix and one tensor's difference in memory)");
  c_diff->add_option("--result-level", diff.result_level,
                     "the effort the patched model is compressed with, if NEW is compressed (1..19)")
      ->capture_default_str()
      ->check(CLI::Range(1, 19));
  c_diff->add_option("--threads", diff.threads, "encoding threads (0 = one per core)")
      ->capture_default_str()
      ->check(CLI::Range(0u, 1024u));
  c_diff->add_flag("--no-fsync", diff.no_fsync, "do not sync before the final rename");

  QuantizeArgs quantize;
  CLI::App *c_quantize = app.add_subcommand(
      "quantize", "Write a copy of a .mpk model with its weights quantized: int8 per output channel or per group "
                  "of the last dimension (each with an f32 scale tensor), or rounded to fp16 / bf16. By default every "
                  "float tensor of rank >= 2 is quantized except embeddings; 1-D tensors (norms, biases) stay as "
                  "they are. Prints and stores (metadata quantize.*) each tensor's error: max abs, RMSE, SNR.");
  c_quantize->add_option("IN", quantize.input, "the .mpk model")->required();
  c_quantize->add_option("OUT", quantize.output, "the quantized .mpk to write")->required();
  c_quantize->add_option("--to", quantize.to, "int8, int8-g32, int8-g64, int8-g128, fp16 or bf16")
      ->required()
      ->check(CLI::IsMember({"int8", "int8-g32", "int8-g64", "int8-g128", "fp16", "f16", "bf16"}));
  c_quantize->add_option("--include", quantize.include,
                         "regular expression (ECMAScript, searched in the name): quantize exactly the float tensors "
                         "it matches, whatever their rank");
  c_quantize->add_option("--exclude", quantize.exclude, "regular expression: never quantize the tensors it matches");
  c_quantize->add_flag("--embeddings", quantize.embeddings,
                       "also quantize embeddings (names with a part containing 'embed', or wte / wpe)");
  c_quantize->add_option("--threads", quantize.threads, "threads (0 = one per core)")->check(CLI::Range(0u, 1024u));
  c_quantize->add_flag("-q,--quiet", quantize.quiet, "print the summary only, not the per-tensor report");
  c_quantize->add_flag("--no-fsync", quantize.no_fsync, "do not sync before the final rename");
  RunArgs runa;
  CLI::App *c_run = app.add_subcommand(
      "run", "Run a model on a NumPy array: its graph (a component of kind graph, FORMAT.md 7.12), or one built "
             "from its tensors by an architecture template (--arch mlp). Weights run in the dtype they are stored "
             "in (f32, bf16, f16, int8) through the runtime's kernels. Prints the output's first rows, or writes "
             "it with --output.");
  c_run->add_option("MODEL", runa.model, "the .mpk model")->required();
  c_run->add_option("--input", runa.input, "the input array (.npy: f32/f64, or i64/i32 for token ids)")->required();
  c_run->add_option("--input-name", runa.input_name, "the graph input it feeds (default: the only one)");
  c_run->add_option("--output-name", runa.output_name, "the graph output to write or show (default: the first)");
  c_run->add_option("-o,--output", runa.output, "write the output here (.npy; --output-name, else the first)");
  c_run->add_option("--arch", runa.arch, "build the graph with this template instead of the model's (mlp)");
  c_run->add_option("--config", runa.config, "the template's config (JSON; mlp: {\"layers\": [...], \"activation\": ...})");
  c_run->add_option("--threads", runa.threads, "kernel threads (0 = OpenMP's default)")->check(CLI::Range(0u, 4096u));
  c_run->add_option("--packed", runa.packed, "a packed-weights file: its weights are used as they are (no reorder into oneDNN's layouts); written (atomically) when missing, written by another oneDNN or CPU, or short of weights this run packed");
  c_run->add_flag("--profile", runa.profile, "print the time of every node");
  c_run->add_flag("-q,--quiet", runa.quiet, "print nothing but errors (and the profile)");
  c_run->add_flag("--no-fsync", runa.no_fsync, "do not sync the output before its rename");
  GenerateArgs gen;
  CLI::App *c_gen = app.add_subcommand(
      "generate", "Generate tokens with a language model's graph (or --arch gpt2 --config config.json): the prompt "
                  "runs once, then one token per step through the KV cache; greedy, or sampled with --temperature. "
                  "--prompt needs a vocabulary in the metadata (tokenizer.vocab: the text of each id).");
  c_gen->add_option("MODEL", gen.model, "the .mpk model")->required();
  auto *o_ids = c_gen->add_option("--prompt-ids", gen.prompt_ids, "token ids, comma-separated");
  auto *o_text = c_gen->add_option("--prompt", gen.prompt_text, "the prompt as text");
  o_ids->excludes(o_text);
  c_gen->add_option("-n", gen.n, "tokens to generate")->capture_default_str()->check(CLI::Range(1u, 1000000u));
  c_gen->add_option("--temperature", gen.temperature, "0 (default): greedy; > 0: sample from softmax(logits / T)")
      ->check(CLI::Range(0.0, 100.0));
  c_gen->add_option("--seed", gen.seed, "seed of the sampler")->capture_default_str();
  c_gen->add_option("--arch", gen.arch, "build the graph with this template instead of the model's (gpt2, mlp)");
  c_gen->add_option("--config", gen.config, "the template's config (JSON; gpt2: Hugging Face config.json)");
  c_gen->add_option("--threads", gen.threads, "kernel threads (0 = OpenMP's default)")->check(CLI::Range(0u, 4096u));
  c_gen->add_option("--packed", gen.packed, "a packed-weights file: its weights are used as they are (no reorder into oneDNN's layouts); written (atomically) when missing, written by another oneDNN or CPU, or short of weights this run packed");
  c_gen->add_flag("-q,--quiet", gen.quiet, "no timing line on stderr");
  PatchArgs patch;
  CLI::App *c_patch = app.add_subcommand(
      "patch", "Apply one patch, or a chain v1->v2->v3 in order, to BASE and write the result; every tensor is "
               "checked against its checksum as it is written, and nothing appears at OUT unless all of them match.");
  c_patch->add_option("BASE", patch.base, "the model to start from (.mpk)")->required();
  c_patch->add_option("PATCH", patch.patches, "the patch(es), oldest first")->required();
  c_patch->add_option("-o,--output", patch.output, "the model to write")->required();
  c_patch->add_flag("--reverse", patch.reverse,
                    "BASE is the patches' result: roll it back (a chain is undone newest first)");
  c_patch->add_option("--threads", patch.threads, "encoding threads when the result is compressed (0 = one per core)")
      ->capture_default_str()
      ->check(CLI::Range(0u, 1024u));
  c_patch->add_flag("--no-fsync", patch.no_fsync, "do not sync before the final rename");

  KeygenArgs keygen;
  CLI::App *c_keygen = app.add_subcommand(
      "keygen", "Make an Ed25519 key pair for signing: NAME (the secret key, mode 0600) and NAME.pub");
  c_keygen->add_option("-o,--output", keygen.output, "NAME: where the secret key goes")->required();
  c_keygen->add_flag("--force", keygen.force, "overwrite NAME and NAME.pub if they exist");

  SignArgs sign;
  CLI::App *c_sign = app.add_subcommand(
      "sign", "Sign a .mpk file with an Ed25519 key (FORMAT.md 7.13): a 192-byte trailer over every byte "
              "before it; the content id and all readers are unaffected. The file is checked completely "
              "first. In place unless -o (an existing signature is replaced).");
  c_sign->add_option("FILE", sign.file, "the .mpk file")->required();
  c_sign->add_option("--key", sign.key, "the secret key file (mpk keygen)")->required();
  c_sign->add_option("-o,--output", sign.output, "write the signed file here (atomically) instead");
  c_sign->add_flag("--no-fsync", sign.no_fsync, "do not sync the result");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "mpk: error: usage: %s\nRun 'mpk --help' or 'mpk <command> --help'.\n",
                 e.what());
    return kExitUsage;
  }

  if (*c_inspect) return run_inspect(inspect);
  if (*c_verify) return run_verify(verify);
  if (*c_pack) return run_pack(pack);
  if (*c_extract) return run_extract(extract);
  if (*c_convert) return run_convert(convert);
  if (*c_quantize) return run_quantize(quantize);
  if (*c_run) return run_run(runa);
  if (*c_gen) {
    if (gen.prompt_ids.empty() && gen.prompt_text.empty())
    {
      report(mpk::Status(MPK_ERR_INVALID_ARGUMENT, "generate: give --prompt-ids or --prompt"));
      return kExitUsage;
    }
    return run_generate(gen);
  }
  if (*c_compress) return run_compress(compress);
  if (*c_decompress) return run_compress(decompress);
  if (*c_diff) return run_diff(diff);
  if (*c_patch) return run_patch(patch);
  if (*c_keygen) return run_keygen(keygen);
  if (*c_sign) return run_sign(sign);
  return kExitUsage;  // unreachable: a subcommand is required
}

}  // namespace

int main(int argc, char **argv) {
  // The library never throws; this guard catches what the C++ runtime may (bad_alloc, CLI11).
  try {
    return run(argc, argv);
  } catch (const std::bad_alloc &) {
    std::fprintf(stderr, "mpk: error: MPK_ERR_NO_MEMORY: out of memory\n");
  } catch (const std::exception &e) {
    std::fprintf(stderr, "mpk: error: MPK_ERR_INTERNAL: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "mpk: error: MPK_ERR_INTERNAL: unknown exception\n");
  }
  return mpk::cli::kExitOther;
}
