// cmd_compress.cpp - `mpk compress IN OUT [--codec auto|zstd|float|raw] [--level N] [--threads N]
//                     [--chunk-size SIZE] [--min-decode-speed GBPS] [--alignment N] [--no-fsync]`
//                    and `mpk decompress IN OUT [--alignment N] [--no-fsync]`.
#include "common.hpp"

#include <modelpack/safetensors.hpp>

#include <cstdio>

namespace mpk::cli {

int run_compress(const CompressArgs &args) {
  Stopwatch clock;
  WriterOptions o;
  o.alignment = args.alignment;
  o.fsync = !args.no_fsync;
  if (!args.decompress) {
    o.compression.codec = *codec_from_name(args.codec);  // checked by the option's validator
    o.compression.level = args.level;
    o.compression.threads = args.threads;
    o.compression.min_decode_gbps = args.min_decode_gbps;
    if (!args.chunk_size.empty()) {
      auto size = safetensors::parse_size(args.chunk_size);  // checked by the option's validator
      if (!size) return report(size.status());
      if (*size > MPK_MAX_CHUNK_BYTES) {
        std::fprintf(stderr, "mpk: error: usage: --chunk-size %s is over 64MiB\n", args.chunk_size.c_str());
        return kExitUsage;
      }
      o.compression.chunk_size = uint32_t(*size);
    }
  }
  {
    Progress progress(args.decompress ? "decompressing" : "compressing", 0);
    uint64_t shown = 0;
    Status s = rewrite(args.input, args.output, o, [&](uint64_t done, uint64_t total) {
      if (shown == 0 && total) progress.set_total(total);
      if (done > shown) progress.add(done - shown);
      shown = done;
    });
    progress.finish();
    if (!s) return report(s);
  }
  auto in = open_model(args.input, Verify::None);
  auto out = open_model(args.output, Verify::None);
  if (!in) return report(in.status());
  if (!out) return report(out.status());
  uint64_t decoded = 0;
  for (size_t i = 0; i < out->tensor_count(); ++i) decoded += out->info(i).nbytes;
  std::printf("%s %s (%s) to %s (%s, %.1f%% of the tensors' %s) in %s\n",
              args.decompress ? "decompressed" : "compressed", args.input.c_str(), human_bytes(in->file_size()).c_str(),
              args.output.c_str(), human_bytes(out->file_size()).c_str(),
              decoded ? 100.0 * double(out->data_size()) / double(decoded) : 100.0, human_bytes(decoded).c_str(),
              seconds_string(clock.seconds()).c_str());
  return kExitOk;
}

}  // namespace mpk::cli
