// cmd_convert.cpp - `mpk convert IN OUT [--from F] [--to F] [--alignment N] [--no-fsync] [--deflate]
//                    [--name NAME] [--max-shard-size SIZE]`.
#include "common.hpp"

#include <modelpack/convert.hpp>
#include <modelpack/graph.hpp>
#include <modelpack/safetensors.hpp>

#include <cstdio>
#include <sys/stat.h>
#include <unistd.h>

namespace mpk::cli {

int run_convert(const ConvertArgs &args) {
  Stopwatch clock;
  ConvertOptions o;
  if (!args.from.empty()) o.from = file_format_from_name(args.from);
  if (!args.to.empty()) o.to = file_format_from_name(args.to);
  o.writer.alignment = args.alignment;
  o.writer.fsync = !args.no_fsync;
  o.npz_deflate = args.deflate;
  o.npy_tensor_name = args.name;
  o.threads = args.threads;
  o.writer.compression.codec = *codec_from_name(args.compress);  // checked by the option's validator
  o.writer.compression.level = args.level;
  if (!args.max_shard_size.empty()) {
    auto size = safetensors::parse_size(args.max_shard_size);  // checked by the option's validator
    if (!size) return report(size.status());
    o.max_shard_bytes = *size;
  }
  struct stat in_st, out_st;
  uint64_t in_size = ::stat(args.input.c_str(), &in_st) == 0 ? uint64_t(in_st.st_size) : 0;
  {
    // On a terminal: bytes written so far against the input's size (an estimate of the output's).
    Progress progress("converting", 0);
    uint64_t shown = 0;
    o.progress = [&](uint64_t done, uint64_t total) {
      if (shown == 0 && total) progress.set_total(total);
      if (done > shown) progress.add(done - shown);
      shown = done;
    };
    if (args.arch.empty()) {
      Status s = convert(args.input, args.output, o);
      progress.finish();
      if (!s) return report(s);
    } else {
      // Convert next to OUT under a temporary name the library's stale-file cleanup knows
      // (".<OUT>.tmp-<pid>-<tag>"), build the template's graph from it, then copy it to OUT with
      // the graph (each tensor checked again): OUT appears complete or not at all.
      const auto f = o.to ? o.to : file_format_from_path(args.output);
      if (f != FileFormat::Mpk) {
        progress.finish();
        return report(Status(MPK_ERR_INVALID_ARGUMENT, "--arch attaches a graph to an .mpk output only"));
      }
      const size_t slash = args.output.rfind('/');
      const std::string tmp = (slash == std::string::npos ? std::string() : args.output.substr(0, slash + 1)) + "." +
                              args.output.substr(slash == std::string::npos ? 0 : slash + 1) + ".tmp-" +
                              std::to_string(::getpid()) + "-arch";
      ConvertOptions first = o;
      first.to = FileFormat::Mpk;
      first.writer.fsync = false;
      Status s = convert(args.input, tmp, first);
      progress.finish();
      if (s) {
        auto m = open_model(tmp, Verify::Header);
        if (!m) s = m.status();
        if (s) {
          auto def = graph_of(*m, args.input, args.arch, args.config);
          if (!def) s = def.status();
          else s = rt::attach_graph(tmp, args.output, *def, o.writer);
        }
      }
      std::remove(tmp.c_str());
      if (!s) return report(s);
    }
  }
  uint64_t out_size = ::stat(args.output.c_str(), &out_st) == 0 ? uint64_t(out_st.st_size) : 0;
  // A sharded safetensors index's own size says nothing about the checkpoint: name it instead.
  auto size_of = [](const std::string &path, const std::optional<FileFormat> &named, uint64_t size) {
    auto f = named ? named : file_format_from_path(path);
    return f == FileFormat::Safetensors && safetensors::is_index_path(path) ? std::string("index + shards")
                                                                          : human_bytes(size);
  };
  std::printf("converted %s (%s) to %s (%s) in %s\n", args.input.c_str(), size_of(args.input, o.from, in_size).c_str(),
              args.output.c_str(), size_of(args.output, o.to, out_size).c_str(), seconds_string(clock.seconds()).c_str());
  return kExitOk;
}

}  // namespace mpk::cli
