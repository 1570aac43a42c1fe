// safetensors.hpp - importing and exporting Hugging Face .safetensors files, single or sharded
// (libmodelpack C++ API).
//
// The format (huggingface/safetensors, `safetensors/src/tensor.rs`): an 8-byte little-endian
// header length N, N bytes of UTF-8 JSON, then the data section. The JSON is one object:
//   {"__metadata__": {"key": "value", ...},                     (optional, string values only)
//    "NAME": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]}, ...}
// with offsets relative to the first data byte. Tensors must tile the data section exactly: sorted
// by offset, each starts where the previous one ended, the last one ends at the end of the file.
//
// SHARDED CHECKPOINTS. Hugging Face's save_pretrained splits big models into shards
// `model-00001-of-00003.safetensors`, ... (each an ordinary .safetensors file with its own
// `__metadata__`, usually {"format":"pt"}) and writes an index beside them,
// `model.safetensors.index.json`:
//   {"metadata": {"total_size": N, ...}, "weight_map": {"tensor.name": "model-00001-of-00003.safetensors", ...}}
// import_index() joins every shard into one .mpk; export_index() writes shards + index again.
// What the .mpk records to reproduce the split (keys under kIndexPrefix, all written by
// import_index):
//   safetensors.index.metadata.<key>          each entry of the index's "metadata": a string, an
//                                             int64, a float64 or a bool, as in the index
//   safetensors.index.shards                  string[]: the shard file names, sorted
//   safetensors.index.shard.NNNNN.tensors     string[]: the tensors of shard NNNNN (0-based, 5
//                                             digits, the position in .shards), sorted
//   safetensors.index.shard.NNNNN.metadata.<key>  that shard's own `__metadata__` entries
//   safetensors.index.shard.NNNNN.xxh3        XXH3-64 of that shard file (16 hex digits)
//   safetensors.metadata.<key>                the `__metadata__` entries every shard has with the
//                                             same value (what a single-file export writes)
//   convert.source_xxh3                       XXH3-64 of the index file
//
// Files are untrusted input. Every problem is an mpk::Status naming the file, the tensor and the
// offsets; nothing in a file can crash the process, and memory is bounded by the headers (each
// capped at kMaxHeaderBytes; the index at kMaxIndexBytes) plus one 1 MiB copy buffer.
// Status codes of import_file (and of each shard in import_index, message prefixed by the shard):
//   MPK_ERR_NOT_FOUND      no such input file
//   MPK_ERR_IO             the operating system refused; not a regular file
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
//   MPK_ERR_BAD_DTYPE      an unknown dtype string (named in the message; names are case-sensitive)
//   MPK_ERR_BAD_SHAPE      rank over MPK_MAX_RANK; an F4 / F6_* tensor whose elements do not fill
//                          whole bytes (numel * bits % 8 != 0: the reference's MisalignedSlice;
//                          F4 needs an even element count, F6 a multiple of 4)
//   MPK_ERR_OVERFLOW       numel or the byte size does not fit in 64 bits
//   MPK_ERR_OUT_OF_BOUNDS  begin > end, or end past the data section
//   MPK_ERR_SIZE_MISMATCH  end - begin differs from the byte size of shape and dtype
//   MPK_ERR_OVERLAP        two tensors share bytes (or a tensor starts inside another)
// plus whatever the mpk::Writer refuses (its status is passed through unchanged).
// Further status codes of import_index (messages name the shard and the tensor):
//   MPK_ERR_NOT_FOUND      no index file; a shard named by weight_map does not exist; weight_map
//                          maps a tensor to a shard that does not hold it (and no shard does)
//   MPK_ERR_IO             a shard is not a regular file (a FIFO or a directory is never opened);
//                          a shard changed between validation and copying
//   MPK_ERR_LIMIT          the index is over kMaxIndexBytes; more than 99,999 shards; an integer
//                          in "metadata" outside int64
//   MPK_ERR_BAD_FORMAT     the index is not JSON / not an object; an unknown top-level key (refused:
//                          it would be lost); "weight_map" missing or not an object; a weight_map
//                          value that is not a string; "metadata" not an object, or a value that is
//                          null, an array or an object (kept: strings, numbers, booleans); a tensor
//                          in a shard that weight_map does not list, or maps to another shard
//   MPK_ERR_DUPLICATE      a key twice in the index (top level, metadata or weight_map); the same
//                          tensor in two shards
//   MPK_ERR_BAD_NAME       a weight_map tensor name that is empty / NUL / invalid UTF-8; a shard
//                          name that is not a plain file name in the index's directory: empty,
//                          ".", "..", containing '/' or '\' (so no absolute path) or NUL, over 255
//                          bytes
// Every shard's header is read and validated, and every cross-check done, before the first tensor
// reaches the writer.
//
// dtypes (safetensors <-> mpk): F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL <-> the mpk
// dtype of the same name; F8_E4M3 F8_E5M2 F8_E8M0 F6_E2M3 F6_E3M2 <-> f8_e4m3 f8_e5m2 f8_e8m0
// f6_e2m3 f6_e3m2; F4 <-> f4_e2m1; C64 <-> c64. Bytes are copied as they are (F6 packs 4 elements
// in 3 bytes, F4 2 per byte; modelpack does not reinterpret them). The block-quantized mpk dtypes
// (q4_0 ...) have no safetensors name: exporting them is MPK_ERR_BAD_DTYPE.
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
// Cap on the size of a sharded checkpoint's index file (about a million tensors).
inline constexpr uint64_t kMaxIndexBytes = 100'000'000;
// The default shard size limit of export_index: transformers' max_shard_size "5GB" (10^9 units).
inline constexpr uint64_t kDefaultMaxShardBytes = 5'000'000'000;

// Metadata key prefix under which `__metadata__` entries are stored in the .mpk file.
inline constexpr std::string_view kMetadataPrefix = "safetensors.metadata.";
// Metadata key prefix of what a sharded import records (see SHARDED CHECKPOINTS above).
inline constexpr std::string_view kIndexPrefix = "safetensors.index.";

struct ImportOptions {
  // 0 (automatic): with 8 MiB of tensor data or more and 2 or more CPUs, a second thread reads the
  // input (pread) and hashes it for the provenance checksum while the calling thread hands the
  // pieces to the Writer (a ring of 4 x 1 MiB); otherwise, and with 1, everything runs on the
  // calling thread. Other values act as 2 (the most used today). The output is the same either way.
  unsigned threads = 0;
};

// Reads and validates a .safetensors file, then streams its tensors into `w` in file (offset)
// order, in pieces of at most 1 MiB. `__metadata__` entries become string metadata
// "safetensors.metadata.<key>"; "convert.source_format" is set to "safetensors".
// The header is validated completely before anything is added to `w`. The writer is not committed:
// the caller commits on success and aborts (or destroys the writer) on failure, so no output file
// is ever left behind.
MPK_API Status import_file(const std::string &in, Writer &w, const ImportOptions &options = {});

// Reads a sharded checkpoint's index (`in`, e.g. "dir/model.safetensors.index.json"), validates it
// and every shard it names (shards are looked up in the index's directory), then streams the
// shards' tensors into `w`: shard by shard in name order, each in file order. Records the split as
// described above. Same contract as import_file: nothing reaches `w` before everything is
// validated; the caller commits or aborts.
MPK_API Status import_index(const std::string &in, Writer &w, const ImportOptions &options = {});

// Writes `m` as a .safetensors file at `out`, atomically (temporary file + rename), laid out
// exactly as the reference writer (`serialize` in tensor.rs) does:
//   - tensors sorted by dtype descending in the reference's Dtype enum order (which derives Ord):
//     U64 I64 F64 C64 F32 U32 I32 BF16 F16 U16 I16 F8_E8M0 F8_E4M3 F8_E5M2 I8 U8 F6_E3M2 F6_E2M3
//     F4 BOOL, ties by name (bytewise);
//   - data packed back to back in that order, offsets relative to the data section;
//   - compact JSON (no spaces): `__metadata__` first if there is any, then the tensors in data
//     order, each as {"dtype":..,"shape":[..],"data_offsets":[b,e]}, strings escaped as serde_json
//     does (\" \\ \b \f \n \r \t, other control bytes \u00xx, everything else raw UTF-8);
//   - the JSON padded with spaces to a multiple of 8 bytes.
// "Byte-identical" below means: the same bytes as that writer produces for the same tensors and
// metadata. `__metadata__` is rebuilt from the "safetensors.metadata.*" string keys, in key order
// (the reference keeps metadata in a HashMap, so its order is unspecified; files whose keys are
// sorted, as make_safetensors.py writes them, round trip byte for byte). Other mpk metadata and the
// components are not expressible and are dropped. An empty "__metadata__": {} is not preserved.
// A model imported from shards exports into one file here.
// MPK_ERR_BAD_DTYPE (naming tensor and dtype) for a dtype safetensors cannot express;
// MPK_ERR_TYPE_MISMATCH if a "safetensors.metadata.*" value is not a string; MPK_ERR_IO.
MPK_API Status export_file(const Model &m, const std::string &out);

// Writes `m` as a sharded checkpoint: shards beside the index file `out` (a path ending in
// ".json", normally "DIR/model.safetensors.index.json"), each shard laid out as export_file lays
// out a file, and the index as transformers writes it: json.dumps(index, indent=2, sort_keys=True)
// plus "\n" (keys sorted by code point, non-ASCII escaped as \uXXXX, integers as integers, floats
// as Python's repr, booleans as true/false).
// The split:
//   - max_shard_bytes == 0 and `m` came from import_index: the recorded shards, with the same file
//     names, tensor sets, per-shard `__metadata__` and index "metadata" (so a checkpoint written by
//     transformers comes back byte for byte: every shard and the index);
//   - otherwise tensors are split greedily in file order (Model::file_order(), the order they were
//     written: for an import, the source's order) as huggingface_hub's
//     split_state_dict_into_shards_factory does with max_shard_size = max_shard_bytes (0: 5 GB):
//     a tensor that would take the current shard over the limit starts a new one; a tensor larger
//     than the limit gets a shard of its own, numbered when it is met (so before the shard being
//     filled). Shards are named "<base>-%05d-of-%05d.safetensors", where <base> is the index's
//     file name without ".safetensors.index.json" (or ".index.json", or ".json"); each gets the
//     "safetensors.metadata.*" entries as `__metadata__`; the index "metadata" is the recorded
//     entries with "total_size" set to the sum of the tensor sizes in bytes. One shard is written
//     as "<base>-00001-of-00001.safetensors" (transformers would write a plain model.safetensors
//     and no index; an index path asks for an index). A model without tensors gets an index with
//     an empty weight_map and no shard. Recent transformers versions also write
//     "total_parameters" (a count of nn.Parameters, buffers excluded), which a converter cannot
//     know: it is written only when it was recorded.
//   An index without "metadata" comes back with "metadata": {}. A float -0.0 in the index's
//   metadata comes back as 0.0 (the .mpk writer currently drops a float64 value equal to 0.0).
// Atomicity across files: every shard and the index are written to temporary files in the target
// directory and (fsync'd) closed; only then are the shards renamed into place, in order, and the
// index last, then the directory is synced. Any failure before the renames removes every
// temporary file, so nothing new appears. A rename that fails part-way removes the shards renamed
// so far that did not exist before (one that replaced an older file cannot be restored) and every
// temporary file. A crash during the renames (a short window after all data is durable) can leave
// some new shards without the new index, or beside an older index; temporary files
// ".<name>.tmp-*" may be left by a crash at any point. Existing shard files that the new index
// does not name are left alone.
// Errors: those of export_file; MPK_ERR_INVALID_ARGUMENT for an output path not ending in ".json";
// for a recorded split that does not match `m` (a hand-made .mpk): MPK_ERR_TYPE_MISMATCH (a key
// of the wrong type), MPK_ERR_BAD_NAME (a shard name that is not a plain file name, or the index's
// own name), MPK_ERR_DUPLICATE (two shards of one name, a tensor in two shards), MPK_ERR_NOT_FOUND
// (a recorded tensor not in `m`, a tensor of `m` in no shard): pass max_shard_bytes to split anew.
MPK_API Status export_index(const Model &m, const std::string &out, uint64_t max_shard_bytes = 0);

// Whether a safetensors path names a sharded checkpoint's index: it ends in ".json".
MPK_API bool is_index_path(std::string_view path);

// Parses a shard size: a whole or decimal number with an optional unit, case-insensitive:
// B, KB MB GB TB (powers of 1000, as transformers), KiB MiB GiB TiB (powers of 1024), e.g. "5GB",
// "500MB", "2GiB", "1.5GB", "1048576". MPK_ERR_INVALID_ARGUMENT for anything else, for zero and for
// sizes over 2^64 - 1; a fractional byte count is rounded down.
MPK_API Result<uint64_t> parse_size(std::string_view text);

// The safetensors dtype name of an mpk dtype ("F32", "BF16", "F4", ...), "" if none.
MPK_API std::string_view dtype_name(DType dtype);

}  // namespace mpk::safetensors
