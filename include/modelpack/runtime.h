/* runtime.h - the C ABI of libmodelpack_runtime: matrix kernels over a model's stored weights.
 *
 * Link -lmodelpack_runtime -lmodelpack (CMake: modelpack::runtime). Conventions as modelpack.h:
 * opaque handles, every call returns an mpk_status and sets the thread-local last-error message
 * (mpk_last_error_message) on failure, versioned option structs that begin with struct_size, no
 * exception crosses the ABI. What runs for each stored dtype, and how exact it is, is documented in
 * include/modelpack/runtime.hpp and docs/QUANTIZATION.md.
 */
#ifndef MODELPACK_RUNTIME_H
#define MODELPACK_RUNTIME_H

#include <modelpack/modelpack.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A kernel context: oneDNN's engine and a cache of pre-packed weights (LRU by bytes). Any number of
 * threads may use one context at once. Free it after the models whose weights it ran. */
typedef struct mpk_runtime mpk_runtime;

typedef struct mpk_runtime_options {
  uint32_t struct_size;          /* sizeof(mpk_runtime_options) */
  uint32_t reserved;             /* must be 0 */
  uint64_t cache_budget_bytes;   /* packed weights kept; 0 = pack nothing (every call runs unpacked) */
} mpk_runtime_options;

#define MPK_RUNTIME_OPTIONS_INIT { sizeof(mpk_runtime_options), 0, UINT64_C(1) << 30 }
/* As mpk_open_options_init: writes exactly struct_size bytes of defaults. */
MPK_API mpk_status mpk_runtime_options_init(mpk_runtime_options *opts, size_t struct_size);

/* NULL options: defaults. MPK_ERR_INTERNAL if oneDNN cannot start. */
MPK_API mpk_status mpk_runtime_create(mpk_runtime **out, const mpk_runtime_options *opts);
MPK_API void mpk_runtime_free(mpk_runtime *runtime); /* NULL is a no-op */

typedef struct mpk_run_options {
  uint32_t struct_size;   /* sizeof(mpk_run_options) */
  uint32_t threads;       /* 0 = the OpenMP default of the calling thread */
} mpk_run_options;

#define MPK_RUN_OPTIONS_INIT { sizeof(mpk_run_options), 0 }

/* y[m, n] = x[m, k] . W^T + bias, W = tensor `weight` of `model` stored [n, k] (PyTorch nn.Linear).
 * x: m rows of ldx >= k floats; y: m rows of ldy >= n floats; bias: n floats or NULL. W may be f32,
 * bf16, f16, or i8 with a quantization record (its scale tensor is found by the library).
 * Errors (nothing written to y): MPK_ERR_INVALID_ARGUMENT (NULL pointers, index, strides, overlap),
 * MPK_ERR_BAD_SHAPE (W not 2-D, k differs), MPK_ERR_BAD_DTYPE (W of another dtype), MPK_ERR_MISALIGNED,
 * MPK_ERR_NO_MEMORY, MPK_ERR_INTERNAL (oneDNN failed), and the model's read errors for compressed W. */
MPK_API mpk_status mpk_run_linear(mpk_runtime *runtime, const mpk_model *model, size_t weight, const float *x,
                                  uint64_t m, uint64_t k, uint64_t ldx, const float *bias, float *y, uint64_t ldy,
                                  const mpk_run_options *opts);
/* y[m, n] = x[m, k] . W + bias with W stored [k, n]; otherwise as mpk_run_linear. */
MPK_API mpk_status mpk_run_matmul(mpk_runtime *runtime, const mpk_model *model, size_t weight, const float *x,
                                  uint64_t m, uint64_t k, uint64_t ldx, const float *bias, float *y, uint64_t ldy,
                                  const mpk_run_options *opts);

/* Filled by mpk_runtime_stats; see VERSIONED STRUCTS (passed OUT) in modelpack.h. */
typedef struct mpk_runtime_stats {
  uint32_t struct_size;   /* set by the caller */
  uint32_t reserved;
  uint64_t bytes_used;    /* packed weights and their extras held by the cache */
  uint64_t budget;
  uint64_t entries;
  uint64_t primitives;
  uint64_t hits, misses, evictions;
  double pack_seconds;    /* total time spent packing (reordering / converting) weights */
} mpk_runtime_stats;

#define MPK_RUNTIME_STATS_INIT { sizeof(mpk_runtime_stats), 0, 0, 0, 0, 0, 0, 0, 0, 0.0 }
MPK_API mpk_status mpk_runtime_stats_get(const mpk_runtime *runtime, mpk_runtime_stats *out);
/* Drops every cached packed weight (calls in flight keep theirs until they end). */
MPK_API void mpk_runtime_clear_cache(mpk_runtime *runtime);

#ifdef __cplusplus
}
#endif

#endif /* MODELPACK_RUNTIME_H */
