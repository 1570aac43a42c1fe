// cmd_quantize.cpp - `mpk quantize IN OUT --to int8|int8-g32|int8-g64|int8-g128|fp16|bf16
//                    [--include RE] [--exclude RE] [--embeddings] [--threads N] [-q] [--no-fsync]`.
#include "common.hpp"

#include <modelpack/quant.hpp>

#include <cmath>
#include <cstdio>

namespace mpk::cli {

int run_quantize(const QuantizeArgs &args) {
  Stopwatch clock;
  QuantizeOptions o;
  o.target = *quant_target_from_name(args.to);  // checked by the option's validator
  o.include = args.include;
  o.exclude = args.exclude;
  o.embeddings = args.embeddings;
  o.threads = args.threads;
  o.writer.alignment = 0;  // the input's
  o.writer.fsync = !args.no_fsync;
  bool header = false;
  if (!args.quiet) {
    o.on_tensor = [&header](const QuantizeTensorReport &r) {
      if (!header)
        std::printf("%-40s %-6s %-22s %12s %12s %9s\n", "tensor", "from", "to", "max |err|", "rmse", "snr dB");
      header = true;
      std::string to(dtype_name(r.to));
      if (r.scheme == QuantScheme::Int8Channel) to += " per channel";
      else if (r.scheme == QuantScheme::Int8Group) to += " group " + std::to_string(r.group);
      char snr[32] = "exact";
      if (!std::isinf(r.snr_db)) std::snprintf(snr, sizeof snr, "%.1f", r.snr_db);
      std::printf("%-40s %-6s %-22s %12.4g %12.4g %9s\n", r.name.c_str(), std::string(dtype_name(r.from)).c_str(),
                  to.c_str(), r.max_abs_error, r.rmse, snr);
      std::fflush(stdout);
    };
  }
  auto r = quantize(args.input, args.output, o);
  if (!r) return report(r.status());
  double worst = INFINITY;
  for (const auto &t : r->tensors) worst = std::min(worst, t.snr_db);
  std::printf("quantized %zu tensor(s) to %s, kept %zu float tensor(s) as they were; %s (%s) -> %s (%s, %.1f%%) in %s",
              r->tensors.size(), std::string(quant_target_name(o.target)).c_str(), r->kept.size(), args.input.c_str(),
              human_bytes(r->in_bytes).c_str(), args.output.c_str(), human_bytes(r->out_bytes).c_str(),
              r->in_bytes ? 100.0 * double(r->out_bytes) / double(r->in_bytes) : 100.0,
              seconds_string(clock.seconds()).c_str());
  if (!r->tensors.empty() && !std::isinf(worst)) std::printf("; lowest SNR %.1f dB", worst);
  std::printf("\n");
  return kExitOk;
}

}  // namespace mpk::cli
