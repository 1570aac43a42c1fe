// Helpers shared by graph.cpp and graph_format.cpp (not installed). The core library's own helpers
// (mpk::detail) are not exported from libmodelpack.so, so the runtime keeps these small copies.
#pragma once

#include <modelpack/modelpack.hpp>

#include <cstdio>
#include <string>
#include <string_view>

namespace mpk::rt::detail {

// A name for a message: 'name', printable ASCII as is, other bytes as \xNN, long names cut.
inline std::string quote(std::string_view s) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 96; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += char(c);
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    }
  }
  if (s.size() > 96) out += "...";
  return out + "'";
}

// Graph names: 1 to MPK_MAX_NAME_BYTES bytes, no NUL (they are compared with tensor names, whose
// stricter rules the model's reader has checked already).
inline bool graph_name_ok(std::string_view s) {
  return !s.empty() && s.size() <= MPK_MAX_NAME_BYTES && s.find('\0') == std::string_view::npos;
}

}  // namespace mpk::rt::detail
