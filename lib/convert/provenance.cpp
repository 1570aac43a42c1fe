// provenance.cpp - see provenance.hpp.
#include "convert/provenance.hpp"

#include <cstdio>

namespace mpk::detail {

std::string xxh3_hex(uint64_t digest) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(digest));
  return hex;
}

Status set_provenance(Writer &w, std::string_view source_format, uint64_t source_xxh3) {
  if (Status s = w.set_metadata("convert.source_format", std::string(source_format)); !s.ok()) return s;
  if (Status s = w.set_metadata("convert.source_xxh3", xxh3_hex(source_xxh3)); !s.ok()) return s;
  return w.set_metadata("convert.tool", std::string("libmodelpack " MPK_VERSION_STRING));
}

}  // namespace mpk::detail
