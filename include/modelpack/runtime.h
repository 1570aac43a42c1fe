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
  /* Appended with packed-weights files (struct_size 72 before; mpk_runtime_load_packed): weights
   * offered, weights packed from them in place, offered ones not used (another layout, or bytes that
   * failed their checksum: packed as usual). */
  uint64_t file_weights, file_used, file_rejected;
  uint64_t packed;        /* entries holding packed weights (packed here or mapped from a file) */
} mpk_runtime_stats;

#define MPK_RUNTIME_STATS_INIT { sizeof(mpk_runtime_stats), 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0, 0, 0, 0 }
MPK_API mpk_status mpk_runtime_stats_get(const mpk_runtime *runtime, mpk_runtime_stats *out);
/* Drops every cached packed weight (calls in flight keep theirs until they end). */
MPK_API void mpk_runtime_clear_cache(mpk_runtime *runtime);

/* Packed-weights files: skip oneDNN's weight reorder on later starts (docs/QUANTIZATION.md "Packing",
 * docs/FORMAT.md 19). save writes the packed weights the runtime holds for model tensors to `path`
 * atomically, keyed by oneDNN's version and CPU ISA, each with its checksum and layout; load maps
 * such a file and offers its weights: a later packing of the same weight (same bytes, dtype, shape,
 * op, computation and oneDNN layout) uses the file's bytes in place, checked against their checksum
 * on first use. *count (may be NULL): weights written / offered.
 * load errors: the open errors of mpk_open, MPK_ERR_BAD_FORMAT (not a packed-weights file),
 * MPK_ERR_UNSUPPORTED_VERSION, MPK_ERR_UNSUPPORTED_FEATURE (another oneDNN or CPU ISA: save again).
 * Nothing is offered on error. */
MPK_API mpk_status mpk_runtime_save_packed(const mpk_runtime *runtime, const char *path, uint64_t *count);
MPK_API mpk_status mpk_runtime_load_packed(mpk_runtime *runtime, const char *path, uint64_t *count);
/* The same for a file that must be signed (mpk_sign) by one of key_count Ed25519 public keys at
 * trusted_keys (32 bytes each, back to back; mpk_public_key_load; key_count 1..4096): before anything
 * is offered, the signature is checked over the header and over every byte of the file, with
 * `threads` hashing threads (0 = 1). MPK_ERR_SIGNATURE: unsigned, signed by another key, or changed
 * since it was signed. Without it a file's checksums prove integrity, not origin. */
MPK_API mpk_status mpk_runtime_load_packed_signed(mpk_runtime *runtime, const char *path, const uint8_t *trusted_keys,
                                                  size_t key_count, uint32_t threads, uint64_t *count);

/* ---- graphs and sessions (docs/FORMAT.md 7.12, include/modelpack/graph.hpp) ------------------------ */

/* A graph bound to an open model and a runtime, validated (rules G1-G7). Immutable: any number of
 * sessions may run it at once, on any threads. Free it before the model and the runtime. */
typedef struct mpk_graph mpk_graph;
/* One user's state: value buffers and attention KV caches. One thread at a time. Free it before its
 * graph. */
typedef struct mpk_session mpk_session;

/* arch NULL or "": the model's own graph (MPK_ERR_NOT_FOUND without one); "mlp" or "gpt2": built by
 * that template from the model's tensors and config_json (the template's JSON config, NULL or "" for
 * none; gpt2 needs one: Hugging Face's config.json). */
MPK_API mpk_status mpk_graph_load(mpk_runtime *runtime, const mpk_model *model, const char *arch,
                                  const char *config_json, mpk_graph **out);
MPK_API void mpk_graph_free(mpk_graph *graph); /* NULL is a no-op */
/* The graph's inputs and outputs: names (lent until mpk_graph_free) and dtypes (MPK_DTYPE_F32 or
 * MPK_DTYPE_I64). An index out of range gives NULL / MPK_DTYPE_INVALID. */
MPK_API size_t mpk_graph_input_count(const mpk_graph *graph);
MPK_API const char *mpk_graph_input_name(const mpk_graph *graph, size_t index);
MPK_API mpk_dtype mpk_graph_input_dtype(const mpk_graph *graph, size_t index);
MPK_API size_t mpk_graph_output_count(const mpk_graph *graph);
MPK_API const char *mpk_graph_output_name(const mpk_graph *graph, size_t index);

typedef struct mpk_session_options {
  uint32_t struct_size;   /* sizeof(mpk_session_options) */
  uint32_t threads;       /* kernel threads per call; 0 = the OpenMP default */
  uint32_t profile;       /* nonzero: time every node (mpk_session_profile) */
  uint32_t reserved;      /* must be 0 */
} mpk_session_options;

#define MPK_SESSION_OPTIONS_INIT { sizeof(mpk_session_options), 0, 0, 0 }

MPK_API mpk_status mpk_session_create(const mpk_graph *graph, const mpk_session_options *opts, mpk_session **out);
MPK_API void mpk_session_free(mpk_session *session); /* NULL is a no-op */

/* A tensor handed to a session: row-major, dtype MPK_DTYPE_F32 or MPK_DTYPE_I64, data aligned to
 * its element size, ndim <= 32. */
typedef struct mpk_tensor_arg {
  const char *name;       /* the graph input it feeds */
  mpk_dtype dtype;
  uint32_t ndim;
  const int64_t *shape;
  const void *data;
} mpk_tensor_arg;

/* Runs the graph on every input (by name; each graph input exactly once). On success the outputs
 * are readable with mpk_session_output until the next run, reset or free; on error there are none.
 * Errors: MPK_ERR_NOT_FOUND (an input missing or unknown), MPK_ERR_BAD_DTYPE, MPK_ERR_BAD_SHAPE,
 * MPK_ERR_OUT_OF_BOUNDS (a token id outside an embedding table), MPK_ERR_LIMIT, MPK_ERR_NO_MEMORY,
 * and the kernels' errors; the message names the node. A failed run leaves the KV caches as they were. */
MPK_API mpk_status mpk_session_run(mpk_session *session, const mpk_tensor_arg *inputs, size_t n_inputs);
/* Output `index` of the last successful run: dtype, rank, shape and data lent until the next run,
 * reset or free. MPK_ERR_STATE before a successful run; MPK_ERR_INVALID_ARGUMENT out of range. */
MPK_API mpk_status mpk_session_output(const mpk_session *session, size_t index, mpk_dtype *dtype, uint32_t *ndim,
                                      const int64_t **shape, const void **data);
/* Which graph outputs later runs compute, in this order (mpk_session_output's index follows it);
 * n == 0: all of them, the default. Nodes none of them depends on are skipped (attention nodes always
 * run, to keep their KV caches in step): e.g. gpt2's "next_logits" alone projects only the last
 * position. Errors: MPK_ERR_NOT_FOUND (not an output of the graph), MPK_ERR_DUPLICATE (a name twice);
 * the choice is then unchanged. Forgets the outputs of the last run. */
MPK_API mpk_status mpk_session_select_outputs(mpk_session *session, const char *const *names, size_t n);
/* Forgets the KV caches (a new sequence) and the outputs. */
MPK_API void mpk_session_reset(mpk_session *session);
/* Tokens held by the KV caches (0 for graphs without attention). */
MPK_API uint64_t mpk_session_cached_tokens(const mpk_session *session);
/* Node `index` of the graph (in order): its name, op (lent until the session is freed), calls and
 * seconds so far (zero unless the session profiles). MPK_ERR_INVALID_ARGUMENT out of range. */
MPK_API mpk_status mpk_session_profile(const mpk_session *session, size_t index, const char **name, const char **op,
                                       uint64_t *calls, double *seconds);

#ifdef __cplusplus
}
#endif

#endif /* MODELPACK_RUNTIME_H */
