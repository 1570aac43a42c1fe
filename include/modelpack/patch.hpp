// Delta patches between two versions of a model (docs/FORMAT.md 7.10, docs/PATCH.md).
//
//   mpk::diff("v1.mpk", "v2.mpk", "v1-v2.mpkd");             // make
//   mpk::apply_patch("v1.mpk", {"v1-v2.mpkd"}, "v2.mpk");      // apply
//   mpk::apply_patch("v2.mpk", {"v1-v2.mpkd"}, "v1.mpk", {.reverse = true});  // roll back
//
// A patch is a modelpack container (incompatible feature bit 3) whose header describes both sides
// (content ids, components, metadata, every tensor with its checksum and how to build it from the
// other side) and whose tensors are the payloads. Memory is bounded by a few pieces of a few MiB
// whatever the model size, plus at levels >= 6 one f32 matrix's difference and fit while diff tries a
// low-rank source, and while applying one, its factors (at most that tensor's size); outputs appear
// atomically; every output tensor is checked against its
// checksum while it is written, and a patch for another base is refused (MPK_ERR_WRONG_BASE).
#pragma once

#include <modelpack/modelpack.hpp>

#include <functional>
#include <string>
#include <vector>

namespace mpk {

struct DiffOptions {
  // Effort for the payloads (chunk codecs, docs/COMPRESSION.md): 1-5 fast, 6+ also tries order-1
  // rANS and zstd per plane.
  int level = 3;
  uint32_t chunk_size = kDefaultChunkBytes;  // payload chunks (decoded bytes)
  // Also store the bytes of base tensors the result removes or replaces, and use only deltas that
  // reverse, so that the patch can be applied in reverse. Without it, copies, XOR and SUB deltas
  // still reverse, except those against a low-rank prediction (low_rank, below); a float tensor whose
  // delta is smaller in the order of the base's exponents (SUB_SORTED, tried at levels >= 6, chosen
  // where it saves >= 1%) and the rest are MISSING.
  bool two_way = false;
  // How the result is written when the patch is applied: by default what the new file looks like
  // (its alignment; compression as `mpk compress` at this level if any tensor is compressed).
  int result_level = 3;
  unsigned threads = 0;  // payload encoding threads (0: one per core)
  bool fsync = true;
  // At levels >= 6 on one-way patches, an f32 tensor of 2+ dimensions may take its delta against the
  // base plus a low-rank product fitted to the difference (FORMAT.md 7.10 "Low-rank sources": a
  // fine-tune's change is largely of low rank), where that saves >= 1% with the factors counted. It
  // does not reverse (the base tensor is MISSING), and the fit holds one tensor's f32 difference in
  // memory. False: never.
  bool low_rank = true;
};

// What a patch holds, per operation on the result side.
struct PatchSummary {
  std::string base_id, result_id;
  bool two_way = false;
  uint64_t copies = 0, literals = 0, xors = 0, subs = 0;  // result tensors built by each op
  uint64_t removed = 0;                                    // base tensors no result tensor comes from
  uint64_t missing = 0;                                    // base tensors the patch cannot rebuild
  uint64_t result_bytes = 0;                               // decoded bytes of the result's tensors
  uint64_t payload_bytes = 0;                              // stored bytes of the payloads
  // Result tensors built by SUB_SORTED (one-way: their base tensors are among `missing` unless a
  // result tensor is a copy of them).
  uint64_t sorted_subs = 0;
  // Result tensors (counted above among the deltas) built from a base tensor of another size: rows
  // added or removed at the end, e.g. a resized vocabulary (FORMAT.md 7.10, Patch.incompatible bit 1).
  uint64_t resized = 0;
  // Result tensors (counted above among the SUB / SUB_SORTED) whose source is predicted by a
  // low-rank product (FORMAT.md 7.10, Patch.incompatible bit 2; one-way).
  uint64_t low_rank = 0;
  // Result tensors (counted above among the deltas) built from a base tensor of another name: renamed
  // and changed (paired by dtype, shape and place when neither name is on the other side).
  uint64_t renamed = 0;
};

// Writes a patch that turns `base` into `target` at `patch` (atomically). Both inputs are checked
// against their tensor checksums while they are read (MPK_ERR_CHECKSUM: nothing is written).
MPK_API Status diff(const std::string &base, const std::string &target, const std::string &patch,
                    const DiffOptions &options = {}, PatchSummary *summary = nullptr);

struct ApplyOptions {
  bool reverse = false;  // `base` is the patch's result; rebuild its base (one patch only)
  // Threads that read, decode and combine pieces (0: one per core); a further thread writes, and
  // encodes when the output is compressed.
  unsigned threads = 0;
  bool fsync = true;
  // Called with decoded output bytes done and their total, per patch of a chain, from the
  // library's writing thread (one call at a time).
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// Applies `patches` in order (a chain v1 -> v2 -> v3 ...) to `base` and writes the last result at
// `out`. Intermediate results go to temporary files next to `out`, removed afterwards. Errors:
// MPK_ERR_WRONG_BASE (a patch does not start from the model it is given), MPK_ERR_CHECKSUM (an
// input or payload does not match its checksum), MPK_ERR_UNSUPPORTED_FEATURE (--reverse of a
// one-way patch that removed, replaced or one-way-delta'd tensors; the message names one), and the container errors
// of a damaged patch. On any error nothing appears at `out` and `base` is untouched.
MPK_API Status apply_patch(const std::string &base, const std::vector<std::string> &patches, const std::string &out,
                           const ApplyOptions &options = {});

// Reads a patch's header (validated as apply would) without applying it.
MPK_API Result<PatchSummary> inspect_patch(const std::string &patch);

}  // namespace mpk
