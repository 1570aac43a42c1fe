// cmd_patch.cpp - `mpk diff BASE NEW -o PATCH [--two-way] [--level N] [--no-low-rank] [--result-level N]
//                  [--threads N] [--no-fsync]` and `mpk patch BASE PATCH... -o OUT [--reverse] [--threads N] [--no-fsync]`.
#include "common.hpp"

#include <modelpack/patch.hpp>

#include <cstdio>

namespace mpk::cli {

namespace {
void print_summary(const PatchSummary &s) {
  std::printf("  %s -> %s%s\n", s.base_id.c_str(), s.result_id.c_str(), s.two_way ? " (two-way)" : "");
  std::printf("  result tensors: %llu kept or moved, %llu new data, %llu xor deltas, %llu sub deltas, "
              "%llu sorted sub deltas%s%s; %llu base tensors removed%s\n",
              (unsigned long long)s.copies, (unsigned long long)s.literals, (unsigned long long)s.xors,
              (unsigned long long)s.subs, (unsigned long long)s.sorted_subs,
              (std::string(s.resized ? " (" + std::to_string(s.resized) + " of them resized)" : "") +
               (s.renamed ? " (" + std::to_string(s.renamed) + " of them renamed)" : ""))
                  .c_str(),
              s.low_rank ? (", " + std::to_string(s.low_rank) + " of the deltas against a low-rank prediction").c_str() : "",
              (unsigned long long)s.removed, s.missing ? (", " + std::to_string(s.missing) + " not reversible").c_str() : "");
}
}  // namespace

int run_diff(const DiffArgs &args) {
  Stopwatch clock;
  DiffOptions o;
  o.level = args.level;
  o.result_level = args.result_level;
  o.two_way = args.two_way;
  o.low_rank = !args.no_low_rank;
  o.threads = args.threads;
  o.fsync = !args.no_fsync;
  PatchSummary s;
  if (Status st = diff(args.base, args.target, args.output, o, &s); !st) return report(st);
  auto p = open_model(args.output, Verify::None);
  if (!p) return report(p.status());
  const uint64_t size = p->file_size();
  std::printf("wrote %s: %s, %.2f%% of the new model's %s of tensors, in %s\n", args.output.c_str(),
              human_bytes(size).c_str(), s.result_bytes ? 100.0 * double(size) / double(s.result_bytes) : 0.0,
              human_bytes(s.result_bytes).c_str(), seconds_string(clock.seconds()).c_str());
  print_summary(s);
  return kExitOk;
}

int run_patch(const PatchArgs &args) {
  Stopwatch clock;
  ApplyOptions o;
  o.reverse = args.reverse;
  o.threads = args.threads;
  o.fsync = !args.no_fsync;
  Status st;
  {
    Progress progress(args.reverse ? "rolling back" : "patching", 0);
    uint64_t shown = 0, last_total = 0;
    o.progress = [&](uint64_t done, uint64_t total) {
      if (total != last_total) {  // the next patch of a chain
        progress.set_total(total);
        last_total = total;
        shown = 0;
      }
      if (done > shown) progress.add(done - shown);
      shown = done;
    };
    st = apply_patch(args.base, args.patches, args.output, o);
    progress.finish();
  }
  if (!st) return report(st);
  auto out = open_model(args.output, Verify::None);
  if (!out) return report(out.status());
  std::printf("wrote %s (%s, content id %s) from %s and %zu patch%s in %s; every tensor matched its checksum\n",
              args.output.c_str(), human_bytes(out->file_size()).c_str(), std::string(out->content_id()).c_str(),
              args.base.c_str(), args.patches.size(), args.patches.size() == 1 ? "" : "es",
              seconds_string(clock.seconds()).c_str());
  return kExitOk;
}

}  // namespace mpk::cli
