// convert.cpp - format dispatch for mpk::convert (include/modelpack/convert.hpp).
#include <modelpack/convert.hpp>
#include <modelpack/safetensors.hpp>

#include "common.hpp"

namespace mpk {

using detail::fail;
using detail::quote;

namespace {
bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}
}  // namespace

std::optional<FileFormat> file_format_from_path(std::string_view path) {
  if (ends_with(path, ".mpk")) return FileFormat::Mpk;
  if (ends_with(path, ".safetensors")) return FileFormat::Safetensors;
  return std::nullopt;
}

std::optional<FileFormat> file_format_from_name(std::string_view name) {
  if (name == "mpk") return FileFormat::Mpk;
  if (name == "safetensors") return FileFormat::Safetensors;
  return std::nullopt;
}

std::string_view file_format_name(FileFormat format) {
  switch (format) {
    case FileFormat::Mpk: return "mpk";
    case FileFormat::Safetensors: return "safetensors";
  }
  return "unknown";
}

Status convert(const std::string &in, const std::string &out, const ConvertOptions &options) {
  auto from = options.from ? options.from : file_format_from_path(in);
  auto to = options.to ? options.to : file_format_from_path(out);
  if (!from)
    return fail(MPK_ERR_INVALID_ARGUMENT, "cannot tell the format of ", quote(in),
                " from its extension (.mpk, .safetensors): name it (--from)");
  if (!to)
    return fail(MPK_ERR_INVALID_ARGUMENT, "cannot tell the format of ", quote(out),
                " from its extension (.mpk, .safetensors): name it (--to)");
  if (*from == FileFormat::Safetensors && *to == FileFormat::Mpk) {
    auto w = Writer::create(out, options.writer);
    if (!w) return w.status();
    Status s = safetensors::import_file(in, *w);
    if (!s) {
      w->abort();  // nothing appears at `out`
      return s;
    }
    return w->commit();
  }
  if (*from == FileFormat::Mpk && *to == FileFormat::Safetensors) {
    auto m = Model::open(in);
    if (!m) return m.status();
    return safetensors::export_file(*m, out);
  }
  return fail(MPK_ERR_INVALID_ARGUMENT, "converting ", file_format_name(*from), " to ", file_format_name(*to),
              " is not supported (supported: safetensors <-> mpk)");
}

}  // namespace mpk
