// convert.hpp - converting between .mpk and other model formats (libmodelpack C++ API).
//
// Formats: .mpk and .safetensors today; GGUF and NumPy .npz are planned (issue 3). Conversions are
// streaming (memory bounded by one tensor piece plus the header) and atomic: the output path holds
// either nothing new or a complete file. Imports record provenance in the .mpk metadata:
// convert.source_format, convert.source_xxh3 (XXH3-64 of the whole source file, 16 hex digits) and
// convert.tool ("libmodelpack X.Y.Z").
#pragma once

#include <modelpack/modelpack.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace mpk {

// Values are the C ABI's mpk_file_format values.
enum class FileFormat { Mpk = 1, Safetensors = 2 };

// By extension (".mpk", ".safetensors"), case-sensitive; nullopt if unknown.
MPK_API std::optional<FileFormat> file_format_from_path(std::string_view path);
// By name ("mpk", "safetensors"); nullopt if unknown.
MPK_API std::optional<FileFormat> file_format_from_name(std::string_view name);
MPK_API std::string_view file_format_name(FileFormat format);

struct ConvertOptions {
  std::optional<FileFormat> from;  // default: from the input's extension
  std::optional<FileFormat> to;    // default: from the output's extension
  WriterOptions writer;            // when the output is .mpk
};

// Converts `in` to `out`. MPK_ERR_INVALID_ARGUMENT when a format cannot be told from the extension
// (name it in the options) or the pair is not supported; otherwise the status of the importer,
// exporter, reader or writer involved (see safetensors.hpp for the import statuses).
MPK_API Status convert(const std::string &in, const std::string &out, const ConvertOptions &options = {});

}  // namespace mpk
