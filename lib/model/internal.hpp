// Internals shared by the reader, the writer and the metadata code.
#pragma once

#include "common.hpp"
#include "format/dtype.hpp"
#include "modelpack_generated.h"

#include <modelpack/modelpack.hpp>

#include <flatbuffers/flatbuffers.h>

#include <functional>

namespace mpk::detail {

flatbuffers::Offset<fb::MetaEntry> build_meta_entry(flatbuffers::FlatBufferBuilder &b, std::string_view key,
                                                    const MetaInput &value);

// Validates a metadata vector: keys valid, strictly increasing, values of known types well formed.
// `where` names the vector in messages ("metadata", "component 'x' metadata").
Status validate_metadata(const flatbuffers::Vector<flatbuffers::Offset<fb::MetaEntry>> *entries,
                         const uint8_t *header, std::string_view where);

mpk_meta_type meta_type_of(const fb::MetaEntry *e);
mpk_meta_type meta_type_of(fb::Value type, const void *value);

// Lists nest at most this deep (a top-level value is depth 1).
inline constexpr unsigned kMaxMetaDepth = 16;
// Checks what a writer is given beyond the key: typed dtypes, whole elements, list depth.
Status check_meta_input(const MetaInput &value, std::string_view key);


// Byte-wise comparison of names (as memcmp on unsigned bytes; std::string_view does this).
inline int compare_names(std::string_view a, std::string_view b) { return a.compare(b); }

// 8-byte alignment of p as a position in the header (a property of the file, not of where the
// header happens to sit in memory; the reader keeps the header 8-aligned in memory too).
inline bool aligned8(const void *p, const uint8_t *header) {
  return ((static_cast<const uint8_t *>(p) - header) & 7) == 0;
}

inline std::string_view sv(const flatbuffers::String *s) {
  return s ? std::string_view(s->c_str(), s->size()) : std::string_view();
}

// Hooks for the delta-patch code (lib/patch): a patch is a container with a Patch table.
struct ModelAccess {
  static const fb::Patch *patch(const Model &m);  // the header's patch table, or null
  static const uint8_t *header(const Model &m);    // the header bytes (validate_metadata needs them)
};
struct WriterAccess {
  // Builds the header's patch table at commit (in the header's builder) and sets feature bit 3,
  // and those of `features` that describe the sides' contents (MPK_FEATURE_QUANTIZED).
  static void set_patch(Writer &w, std::function<flatbuffers::Offset<fb::Patch>(flatbuffers::FlatBufferBuilder &)> build,
                        uint64_t features = 0);
  // How the next begin_tensor() stores the tensor, whatever the options say: 0 raw, otherwise
  // chunked with this chunk size (the codec and level of the options; Auto if they say None).
  static void set_next_chunk_size(Writer &w, uint32_t chunk_size);
  // XXH3-64 of the decoded bytes of the tensor the last end_tensor() completed.
  static uint64_t last_xxh3(const Writer &w);
};

}  // namespace mpk::detail
