// lowrank.hpp - low-rank sources of f32 deltas (FORMAT.md 7.10 "Low-rank sources", Patch.incompatible
// bit 2): a delta's source is the base tensor plus a product of two small int8 factor matrices, so that
// what a fine-tune changed along a few directions is not paid for element by element.
//
// The prediction is exact arithmetic (integer dot products, then IEEE binary64 steps and one rounding
// to binary32, with the rules below for the cases a flush-to-zero or odd rounding mode could change):
// every applier computes the same bits. This file is compiled with -ffp-contract=off.
#pragma once

#include <modelpack/modelpack.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace mpk::detail::lowrank {

constexpr unsigned kMaxRank = 64;  // FORMAT.md: 1 <= rank <= min(rows, cols, 64)

// A 2-D view of a tensor of n f32 elements: rows = shape[0], cols = n / rows.
struct Dims {
  uint64_t rows = 0, cols = 0;
};

// Decoded bytes of a factor payload: (4 + rank) * (rows + cols); UINT64_MAX if that overflows.
uint64_t blob_bytes(Dims d, unsigned rank);

// The factors, parsed from a payload: su[rows], sv[cols] (f32 LE), U[rows][rank], V[rank][cols] (i8).
// As many bytes as the payload (FORMAT.md: at most the tensor's).
struct Factors {
  Dims d;
  unsigned rank = 0;
  std::vector<float> su, sv;
  std::vector<int8_t> u, v;  // U row-major (rows x rank); V row-major (rank x cols)
};

// Parses and checks a factor payload (its size must be blob_bytes; every scale 0 or a finite normal
// f32, else MPK_ERR_CORRUPT_DATA naming `what`).
Status parse(std::span<const std::byte> blob, Dims d, unsigned rank, Factors &f, const char *what);

// Replaces the f32 elements [first, first + count) of the source (bits, little-endian, in io) by
// their predictions: p = s + (a * su[i]) * sv[j] with a = sum_t U[i,t] V[t,j] (FORMAT.md 7.10).
// `variant` picks a compiled variant (tests: every one must give the same bits); Auto = the best
// this CPU runs.
enum class Variant { Auto, Avx512, Avx2, Base };
bool variant_runs(Variant v);
void predict(const Factors &f, uint64_t first, std::byte *io, size_t count, Variant variant = Variant::Auto);

// Diff side: a fit of the difference D (rows x cols, f32, row-major) by a randomized range finder
// (one power iteration) and the eigenvectors of its small projection, up to rank `max_rank`.
// factors(k) quantizes its best rank-k part (k <= max_rank()) into a payload.
// Memory: D, plus about 1.2 KB per row and column (rows + cols is at most kMaxFitDims).
constexpr uint64_t kMaxFitDims = 1u << 16;
class Fit {
 public:
  Fit(const float *D, Dims d, unsigned max_rank, unsigned threads);
  unsigned max_rank() const { return rank_; }
  std::vector<std::byte> blob(unsigned k) const;

 private:
  Dims d_;
  unsigned rank_ = 0;
  std::vector<float> u_;  // rows x rank_, columns scaled by sqrt(sigma)
  std::vector<float> v_;  // rank_ x cols, rows scaled by sqrt(sigma)
};

}  // namespace mpk::detail::lowrank
