// safetensors.hpp - importing and exporting Hugging Face .safetensors files (libmodelpack C++ API).
//
// The format (huggingface/safetensors, `safetensors/src/tensor.rs`): an 8-byte little-endian
// header length N, N bytes of UTF-8 JSON, then the data section. The JSON is one object:
//   {"__metadata__": {"key": "value", ...},                     (optional, string values only)
//    "NAME": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]}, ...}
// with offsets relative to the first data byte. Tensors must tile the data section exactly: sorted
// by offset, each starts where the previous one ended, the last one ends at the end of the file.
//
// Files are untrusted input. Every problem is an mpk::Status naming the tensor and the offsets;
// nothing in a file can crash the process, and memory is bounded by the header (capped at
// kMaxHeaderBytes) plus one 8 MiB copy buffer. Status codes of import_file:
//   MPK_ERR_NOT_FOUND      no such input file
//   MPK_ERR_IO             the operating system refused
//   MPK_ERR_TRUNCATED      file shorter than 8 bytes; header length past the end of the file;
//                          the file shrank while being read
//   MPK_ERR_LIMIT          header length over kMaxHeaderBytes (the reference's 100,000,000)
//   MPK_ERR_BAD_FORMAT     header not JSON (or not UTF-8), not an object, a tensor entry that is
//                          not an object or lacks/mistypes dtype, shape or data_offsets, an unknown
//                          field in a tensor entry (refused: it would be lost), __metadata__ not an
//                          object of strings, JSON nested deeper than the format allows, a hole
//                          between tensors or unused bytes after the last one
//   MPK_ERR_DUPLICATE      a tensor name, a field of a tensor entry or a metadata key appears twice
//                          (JSON parsers usually keep the last; we refuse)
//   MPK_ERR_BAD_NAME       an empty tensor name, or one with NUL / invalid UTF-8
//   MPK_ERR_BAD_DTYPE      a dtype modelpack 0.1 does not store (F8_E4M3, F8_E5M2, F8_E8M0,
//                          F6_E2M3, F6_E3M2, F4, C64, ...: named in the message) or an unknown one
//   MPK_ERR_BAD_SHAPE      rank over MPK_MAX_RANK
//   MPK_ERR_OVERFLOW       numel or numel * item size does not fit in 64 bits
//   MPK_ERR_OUT_OF_BOUNDS  begin > end, or end past the data section
//   MPK_ERR_SIZE_MISMATCH  end - begin differs from numel * item size
//   MPK_ERR_OVERLAP        two tensors share bytes (or a tensor starts inside another)
// plus whatever the mpk::Writer refuses (its status is passed through unchanged).
//
// dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL <-> the mpk dtype of the same name.
//
// Threads: the functions hold no global state; distinct calls are independent.
#pragma once

#include <modelpack/modelpack.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace mpk::safetensors {

// The reference implementation's cap on the header length (MAX_HEADER_SIZE in tensor.rs).
inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Metadata key prefix under which `__metadata__` entries are stored in the .mpk file.
inline constexpr std::string_view kMetadataPrefix = "safetensors.metadata.";

// Reads and validates a .safetensors file, then streams its tensors into `w` in file (offset)
// order, in pieces of at most 8 MiB. `__metadata__` entries become string metadata
// "safetensors.metadata.<key>"; "convert.source_format" is set to "safetensors".
// The header is validated completely before anything is added to `w`. The writer is not committed:
// the caller commits on success and aborts (or destroys the writer) on failure, so no output file
// is ever left behind.
MPK_API Status import_file(const std::string &in, Writer &w);

// Writes `m` as a .safetensors file at `out`, atomically (temporary file + rename), laid out
// exactly as the reference writer (`serialize` in tensor.rs) does:
//   - tensors sorted by dtype descending in the reference's Dtype enum order
//     (U64 I64 F64 F32 U32 I32 BF16 F16 U16 I16 I8 U8 BOOL), ties by name (bytewise);
//   - data packed back to back in that order, offsets relative to the data section;
//   - compact JSON (no spaces): `__metadata__` first if there is any, then the tensors in data
//     order, each as {"dtype":..,"shape":[..],"data_offsets":[b,e]}, strings escaped as serde_json
//     does (\" \\ \b \f \n \r \t, other control bytes \u00xx, everything else raw UTF-8);
//   - the JSON padded with spaces to a multiple of 8 bytes.
// `__metadata__` is rebuilt from the "safetensors.metadata.*" string keys, in key order (the
// reference keeps metadata in a HashMap, so its order is unspecified; files whose keys are sorted,
// as make_safetensors.py writes them, round trip byte for byte). Other mpk metadata and the
// components are not expressible and are dropped. An empty "__metadata__": {} is not preserved.
// MPK_ERR_BAD_DTYPE (naming tensor and dtype) for a dtype safetensors cannot express;
// MPK_ERR_TYPE_MISMATCH if a "safetensors.metadata.*" value is not a string; MPK_ERR_IO.
MPK_API Status export_file(const Model &m, const std::string &out);

// The safetensors dtype name of an mpk dtype ("F32", "BF16", "BOOL", ...), "" if none.
MPK_API std::string_view dtype_name(DType dtype);

}  // namespace mpk::safetensors
