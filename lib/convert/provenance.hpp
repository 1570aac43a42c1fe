// provenance.hpp - the provenance metadata every importer records (not installed).
//
// Keys (docs/DESIGN.md, "Converters"):
//   convert.source_format  the source format's name ("safetensors", "npz", "npy", ...)
//   convert.source_xxh3    XXH3-64 (seed 0) of the whole source file, 16 lowercase hex digits
//   convert.tool           "libmodelpack X.Y.Z"
#pragma once

#include <modelpack/modelpack.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace mpk::detail {

// "%016llx" of an XXH3-64 digest.
std::string xxh3_hex(uint64_t digest);

// Sets the three keys above on `w`.
Status set_provenance(Writer &w, std::string_view source_format, uint64_t source_xxh3);

}  // namespace mpk::detail
