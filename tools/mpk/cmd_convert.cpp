// cmd_convert.cpp - `mpk convert IN OUT [--from F] [--to F] [--alignment N] [--no-fsync]`.
#include "common.hpp"

#include <modelpack/convert.hpp>

#include <cstdio>
#include <sys/stat.h>

namespace mpk::cli {

int run_convert(const ConvertArgs &args) {
  Stopwatch clock;
  ConvertOptions o;
  if (!args.from.empty()) o.from = file_format_from_name(args.from);
  if (!args.to.empty()) o.to = file_format_from_name(args.to);
  o.writer.alignment = args.alignment;
  o.writer.fsync = !args.no_fsync;
  Status s = convert(args.input, args.output, o);
  if (!s) return report(s);
  struct stat in_st, out_st;
  uint64_t in_size = ::stat(args.input.c_str(), &in_st) == 0 ? uint64_t(in_st.st_size) : 0;
  uint64_t out_size = ::stat(args.output.c_str(), &out_st) == 0 ? uint64_t(out_st.st_size) : 0;
  std::printf("converted %s (%s) to %s (%s) in %s\n", args.input.c_str(), human_bytes(in_size).c_str(),
              args.output.c_str(), human_bytes(out_size).c_str(), seconds_string(clock.seconds()).c_str());
  return kExitOk;
}

}  // namespace mpk::cli
