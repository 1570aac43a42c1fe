// convert.cpp - format dispatch for mpk::convert (include/modelpack/convert.hpp).
#include <modelpack/convert.hpp>
#include <modelpack/gguf.hpp>
#include <modelpack/npz.hpp>
#include <modelpack/safetensors.hpp>

#include "common.hpp"
#include "io/file.hpp"

#include <sys/stat.h>

namespace mpk {

using detail::fail;
using detail::quote;

namespace {
// Exports read the model with pread, not a map: the exporters copy through one 1 MiB piece, so the
// process holds one piece rather than every page of a multi-GiB model it has touched.
// Exports check every tensor against its checksum first (Verify::Full reads the model once more; an
// export is not a hot path): damaged bytes are refused before any output exists (docs/SECURITY.md).
const OpenOptions kExportOpen{Access::Read, Verify::Full};

// Runs an importer into a new .mpk at `out`: committed on success, aborted (nothing appears at
// `out`) on failure.
template <class Import>
Status import_into(const std::string &out, const WriterOptions &options, Import &&import) {
  auto w = Writer::create(out, options);
  if (!w) return w.status();
  if (Status s = import(*w); !s) {
    w->abort();
    return s;
  }
  return w->commit();
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
}  // namespace

std::optional<FileFormat> file_format_from_path(std::string_view path) {
  if (ends_with(path, ".mpk")) return FileFormat::Mpk;
  if (ends_with(path, ".safetensors")) return FileFormat::Safetensors;
  if (ends_with(path, ".gguf")) return FileFormat::Gguf;
  if (ends_with(path, ".safetensors.index.json")) return FileFormat::Safetensors;  // sharded
  if (ends_with(path, ".npy")) return FileFormat::Npy;
  if (ends_with(path, ".npz")) return FileFormat::Npz;
  return std::nullopt;
}

std::optional<FileFormat> file_format_from_name(std::string_view name) {
  if (name == "mpk") return FileFormat::Mpk;
  if (name == "safetensors") return FileFormat::Safetensors;
  if (name == "gguf") return FileFormat::Gguf;
  if (name == "npy") return FileFormat::Npy;
  if (name == "npz") return FileFormat::Npz;
  return std::nullopt;
}

std::string_view file_format_name(FileFormat format) {
  switch (format) {
    case FileFormat::Mpk: return "mpk";
    case FileFormat::Safetensors: return "safetensors";
    case FileFormat::Gguf: return "gguf";
    case FileFormat::Npy: return "npy";
    case FileFormat::Npz: return "npz";
  }
  return "unknown";
}

Status convert(const std::string &in, const std::string &out, const ConvertOptions &options) {
  auto from = options.from ? options.from : file_format_from_path(in);
  auto to = options.to ? options.to : file_format_from_path(out);
  if (!from)
    return fail(MPK_ERR_INVALID_ARGUMENT, "cannot tell the format of ", quote(in),
                " from its extension (.mpk, .safetensors, .gguf, .npz, .npy): name it (--from)");
  if (!to)
    return fail(MPK_ERR_INVALID_ARGUMENT, "cannot tell the format of ", quote(out),
                " from its extension (.mpk, .safetensors, .gguf, .npz, .npy): name it (--to)");
  // Progress for every format: the bytes this thread writes through the library's output files.
  std::optional<detail::WriteProgress> progress;
  if (options.progress) {
    uint64_t total = 0;
    struct stat st;
    if (!(*from == FileFormat::Safetensors && safetensors::is_index_path(in)) && ::stat(in.c_str(), &st) == 0 &&
        S_ISREG(st.st_mode))
      total = uint64_t(st.st_size);
    progress.emplace([&options, total](uint64_t done) { options.progress(done, total); });
  }
  if (options.max_shard_bytes && !(*to == FileFormat::Safetensors && safetensors::is_index_path(out)))
    return fail(MPK_ERR_INVALID_ARGUMENT, "a maximum shard size applies only to a sharded safetensors output ",
                "(a path ending in .safetensors.index.json), not to ", quote(out));
  if (*from == FileFormat::Safetensors && *to == FileFormat::Mpk) {
    return import_into(out, options.writer, [&](Writer &w) {
      safetensors::ImportOptions io;
      io.threads = options.threads;
      return safetensors::is_index_path(in) ? safetensors::import_index(in, w, io)  // sharded
                                            : safetensors::import_file(in, w, io);
    });
  }
  if (*from == FileFormat::Mpk && *to == FileFormat::Safetensors) {
    auto m = Model::open(in, kExportOpen);
    if (!m) return m.status();
    if (safetensors::is_index_path(out)) return safetensors::export_index(*m, out, options.max_shard_bytes);
    return safetensors::export_file(*m, out);
  }
  if (*from == FileFormat::Gguf && *to == FileFormat::Mpk) {
    return import_into(out, options.writer, [&](Writer &w) { return gguf::import_file(in, w); });
  }
  if (*from == FileFormat::Mpk && *to == FileFormat::Gguf) {
    auto m = Model::open(in, kExportOpen);
    if (!m) return m.status();
    return gguf::export_file(*m, out);
  }
  if ((*from == FileFormat::Npz || *from == FileFormat::Npy) && *to == FileFormat::Mpk) {
    return import_into(out, options.writer, [&](Writer &w) {
      return *from == FileFormat::Npz ? npz::import_npz(in, w) : npz::import_npy(in, w, options.npy_tensor_name);
    });
  }
  if (*from == FileFormat::Mpk && (*to == FileFormat::Npz || *to == FileFormat::Npy)) {
    auto m = Model::open(in, kExportOpen);
    if (!m) return m.status();
    if (*to == FileFormat::Npy) return npz::export_npy(*m, out);
    npz::ExportOptions eo;
    eo.deflate = options.npz_deflate;
    return npz::export_npz(*m, out, eo);
  }
  return fail(MPK_ERR_INVALID_ARGUMENT, "converting ", file_format_name(*from), " to ", file_format_name(*to),
              " is not supported (supported: safetensors <-> mpk, gguf <-> mpk, npz <-> mpk, npy <-> mpk)");
}

}  // namespace mpk
