// cmd_pack.cpp - `mpk pack DIR -o FILE [--alignment N] [--meta*  KEY=VALUE]...`.
//
// Every regular file under DIR whose name ends in ".npy" (case-sensitive; symlinks to files
// followed, symlinked directories not descended) becomes a tensor named by its path relative to
// DIR without the extension, '/'-separated. Other files are ignored, listed with --verbose and
// counted in the summary. Files are packed in byte-wise name order (the order of the .mpk tensor
// table), so the output does not depend on directory listing order.
//
// Memory stays bounded: each .npy is opened with npy::Reader (header parsed and its size checked
// against the file), then copied in 8 MiB pieces through Writer::begin_tensor/write/end_tensor.
// Any error leaves no output: the Writer removes its temporary file when destroyed uncommitted.
#include "common.hpp"

#include <modelpack/npy.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <system_error>

namespace mpk::cli {
namespace {

namespace fs = std::filesystem;
constexpr size_t kChunk = 8u << 20;

struct Input {
  std::string name;  // tensor name
  std::string path;
};

Status usage(const std::string &what) { return Status(MPK_ERR_INVALID_ARGUMENT, what); }

// Splits "KEY=VALUE" at the first '='.
Result<std::pair<std::string, std::string>> split_kv(const std::string &arg, const char *option) {
  size_t eq = arg.find('=');
  if (eq == std::string::npos || eq == 0)
    return usage(std::string(option) + " expects KEY=VALUE, got '" + arg + "'");
  return std::pair{arg.substr(0, eq), arg.substr(eq + 1)};
}

// Parses all --meta* options into (key, value) pairs, in command-line group order.
Result<std::vector<std::pair<std::string, MetaInput>>> parse_metadata(const PackArgs &a) {
  std::vector<std::pair<std::string, MetaInput>> out;
  for (const auto &s : a.meta) {
    auto kv = split_kv(s, "--meta");
    if (!kv) return kv.status();
    out.emplace_back(kv->first, MetaInput(kv->second));
  }
  for (const auto &s : a.meta_int) {
    auto kv = split_kv(s, "--meta-int");
    if (!kv) return kv.status();
    const std::string &v = kv->second;
    int64_t x = 0;
    auto r = std::from_chars(v.data(), v.data() + v.size(), x);
    if (v.empty() || r.ec != std::errc() || r.ptr != v.data() + v.size())
      return usage("--meta-int " + kv->first + ": '" + v + "' is not a 64-bit integer");
    out.emplace_back(kv->first, MetaInput(x));
  }
  for (const auto &s : a.meta_float) {
    auto kv = split_kv(s, "--meta-float");
    if (!kv) return kv.status();
    const std::string &v = kv->second;
    double x = 0;
    auto r = std::from_chars(v.data(), v.data() + v.size(), x);
    if (v.empty() || r.ec != std::errc() || r.ptr != v.data() + v.size())
      return usage("--meta-float " + kv->first + ": '" + v + "' is not a number");
    out.emplace_back(kv->first, MetaInput(x));
  }
  for (const auto &s : a.meta_bool) {
    auto kv = split_kv(s, "--meta-bool");
    if (!kv) return kv.status();
    if (kv->second != "true" && kv->second != "false")
      return usage("--meta-bool " + kv->first + ": '" + kv->second + "' is not true or false");
    out.emplace_back(kv->first, MetaInput(kv->second == "true"));
  }
  return out;
}

// Collects the .npy files under dir, sorted by tensor name.
Result<std::vector<Input>> collect(const PackArgs &a, size_t &ignored) {
  std::error_code ec;
  if (!fs::is_directory(a.dir, ec))
    return Status(MPK_ERR_NOT_FOUND, a.dir + ": not a directory");
  std::vector<Input> inputs;
  fs::recursive_directory_iterator it(a.dir, ec), end;
  if (ec) return Status(MPK_ERR_IO, a.dir + ": cannot list: " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) return Status(MPK_ERR_IO, a.dir + ": cannot list: " + ec.message());
    const fs::directory_entry &e = *it;
    if (e.is_directory(ec)) continue;
    fs::path rel = e.path().lexically_relative(a.dir);
    std::string rels = rel.generic_string();
    bool npy = rels.size() > 4 && rels.compare(rels.size() - 4, 4, ".npy") == 0;
    if (!npy || !e.is_regular_file(ec)) {
      ++ignored;
      if (a.verbose) std::fprintf(stderr, "mpk: ignoring %s (not a .npy file)\n", e.path().c_str());
      continue;
    }
    inputs.push_back({rels.substr(0, rels.size() - 4), e.path().string()});
  }
  std::sort(inputs.begin(), inputs.end(),
            [](const Input &x, const Input &y) { return x.name < y.name; });
  return inputs;
}

}  // namespace

int run_pack(const PackArgs &args) {
  Stopwatch clock;
  auto meta = parse_metadata(args);
  if (!meta) return report(meta.status());

  size_t ignored = 0;
  auto inputs = collect(args, ignored);
  if (!inputs) return report(inputs.status());
  if (inputs->empty())
    return report(Status(MPK_ERR_NOT_FOUND, args.dir + ": no .npy files found"));

  // Check every input's header and size first: a bad file fails the command before any output is
  // created, and the total size is known for the progress line. The files are closed again (a
  // directory may hold more files than the process may keep open) and reopened one at a time.
  uint64_t total = 0;
  for (const Input &in : *inputs) {
    auto r = npy::Reader::open(in.path);
    if (!r) return report(r.status());
    total += r->header().data_size;
  }

  WriterOptions wopts;
  wopts.alignment = args.alignment;
  wopts.fsync = !args.no_fsync;
  auto created = Writer::create(args.output, wopts);
  if (!created) {
    return report(with_file(created.status(), args.output));
  }
  Writer &w = *created;

  // A key the library refuses came from the command line: a usage error.
  for (const auto &[key, value] : *meta)
    if (Status st = w.set_metadata(key, value); !st) {
      report(st);
      return kExitUsage;
    }

  Progress progress("packing", total);
  std::vector<std::byte> buf(size_t(std::min<uint64_t>(kChunk, std::max<uint64_t>(total, 64))));
  for (const Input &in : *inputs) {
    auto opened = npy::Reader::open(in.path);  // again: the file may have changed since
    if (!opened) return report(opened.status());
    npy::Reader &r = *opened;
    const npy::Header &h = r.header();
    if (args.verbose)
      std::fprintf(stderr, "mpk: packing %s as '%s' (%s %s)\n", in.path.c_str(), in.name.c_str(),
                   h.descr.c_str(), shape_string(h.shape).c_str());
    auto where = [&](const Status &st) {
      return Status(st.code(), in.path + ": tensor '" + in.name + "': " + st.message());
    };
    if (Status st = w.begin_tensor(in.name, h.dtype, h.shape); !st) return report(where(st));
    while (r.remaining() > 0) {
      auto n = r.read(buf);
      if (!n) return report(n.status());
      if (Status st = w.write(std::span(buf.data(), *n)); !st) return report(where(st));
      progress.add(*n, in.name);
    }
    if (Status st = w.end_tensor(); !st) return report(where(st));
  }
  if (Status st = w.commit(); !st)
    return report(with_file(st, args.output));
  progress.finish();

  std::error_code ec;
  uint64_t out_size = fs::file_size(args.output, ec);
  std::printf("packed %zu tensors (%s of data) from %s into %s (%s) in %s", inputs->size(),
              human_bytes(total).c_str(), args.dir.c_str(), args.output.c_str(),
              ec ? "?" : human_bytes(out_size).c_str(), seconds_string(clock.seconds()).c_str());
  if (ignored) std::printf("; ignored %zu non-.npy files", ignored);
  std::printf("\n");
  return kExitOk;
}

}  // namespace mpk::cli
