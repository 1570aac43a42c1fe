// convert.hpp - converting between .mpk and other model formats (libmodelpack C++ API).
//
// Formats: .mpk, .safetensors, GGUF (.gguf), NumPy .npz and .npy. Conversions are
// streaming (memory bounded by one tensor piece plus the header) and atomic: the output path holds
// either nothing new or a complete file. Imports record provenance in the .mpk metadata:
// convert.source_format, convert.source_xxh3 (XXH3-64 of the whole source file, 16 hex digits) and
// convert.tool ("libmodelpack X.Y.Z").
#pragma once

#include <modelpack/modelpack.hpp>

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace mpk {

// Values are the C ABI's mpk_file_format values.
enum class FileFormat { Mpk = 1, Safetensors = 2, Gguf = 3, Npy = 4, Npz = 5 };

// By extension (".mpk", ".safetensors", ".safetensors.index.json" (a sharded safetensors
// checkpoint), ".gguf", ".npy", ".npz"), case-sensitive; nullopt if unknown. A safetensors input
// or output whose path ends in ".json" is a sharded checkpoint's index
// (safetensors::import_index / export_index).
MPK_API std::optional<FileFormat> file_format_from_path(std::string_view path);
// By name ("mpk", "safetensors", "gguf", "npy", "npz"); nullopt if unknown.
MPK_API std::optional<FileFormat> file_format_from_name(std::string_view name);
MPK_API std::string_view file_format_name(FileFormat format);

struct ConvertOptions {
  std::optional<FileFormat> from;  // default: from the input's extension
  std::optional<FileFormat> to;    // default: from the output's extension
  WriterOptions writer;            // when the output is .mpk
  bool npz_deflate = false;        // .npz output: deflate the members (np.savez_compressed), not store
                                   // them (np.savez)
  std::string npy_tensor_name;     // .npy input: the tensor's name; empty = the file's stem
  uint64_t max_shard_bytes = 0;    // sharded safetensors output (OUT ends in .json): split anew into
                                   // shards of at most this many bytes; 0 = the shards recorded by a
                                   // sharded import, else 5 GB (safetensors::export_index). Must be 0
                                   // for other outputs.
  unsigned threads = 0;             // safetensors input: as safetensors::ImportOptions::threads (0 =
                                   // automatic, 1 = the calling thread only); other inputs ignore it
  // Called on the converting thread as the output grows (every few MiB), with the bytes written so
  // far and an estimate of the total (the input's size; 0 when unknown, e.g. a sharded input).
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// Converts `in` to `out`. MPK_ERR_INVALID_ARGUMENT when a format cannot be told from the extension
// (name it in the options) or the pair is not supported; otherwise the status of the importer,
// exporter, reader or writer involved (see safetensors.hpp, gguf.hpp and npz.hpp for the import statuses).
MPK_API Status convert(const std::string &in, const std::string &out, const ConvertOptions &options = {});

}  // namespace mpk
