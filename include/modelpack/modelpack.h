/*
 * modelpack.h - the stable C ABI of libmodelpack.
 *
 * Conventions (docs/DESIGN.md explains the design behind them):
 *  - Every function that can fail returns an mpk_status; MPK_OK (0) is success. Status values never
 *    change meaning once released. On failure, out-parameters are left untouched and a thread-local
 *    message says what and where: mpk_last_error_message().
 *  - Objects are opaque handles made by *_open / *_create and released by the matching *_free, which
 *    accepts NULL. Strings and pointers handed out by getters are *lent*: they stay valid until the
 *    handle they came from is freed.
 *  - Option structs begin with their own size. Initialise them with the *_INIT macro or the *_init()
 *    function; fields are only ever appended. NULL options mean defaults.
 *  - No C++ exception crosses this boundary; no global initialisation is needed.
 *  - Threads: an mpk_model may be used from many threads at once (all model functions are
 *    read-only); an mpk_writer must be used from one thread at a time.
 */
#ifndef MODELPACK_H
#define MODELPACK_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  define MPK_API __declspec(dllimport)
#elif defined(__GNUC__)
#  define MPK_API __attribute__((visibility("default")))
#else
#  define MPK_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- versions ---------------------------------------------------------------------------- */

#define MPK_VERSION_MAJOR 0
#define MPK_VERSION_MINOR 1
#define MPK_VERSION_PATCH 0
#define MPK_VERSION_NUMBER (MPK_VERSION_MAJOR * 10000 + MPK_VERSION_MINOR * 100 + MPK_VERSION_PATCH)
#define MPK_VERSION_STRING "0.1.0"
/* The shared library's SOVERSION; moves only when the ABI breaks. */
#define MPK_ABI_VERSION 0
/* The container format this library writes (and the newest it reads). */
#define MPK_FORMAT_MAJOR 1
#define MPK_FORMAT_MINOR 0

MPK_API unsigned mpk_version_number(void);  /* MPK_VERSION_NUMBER of the library actually linked */
MPK_API const char *mpk_version_string(void);
MPK_API unsigned mpk_abi_version(void);
MPK_API void mpk_format_version(unsigned *out_major, unsigned *out_minor);

/* ---- status ------------------------------------------------------------------------------ */

/* Values are part of the ABI: never renumbered, never reused. */
typedef enum mpk_status {
  MPK_OK = 0,
  MPK_ERR_INVALID_ARGUMENT = 1,   /* a caller error: NULL handle, bad option, bad name ... */
  MPK_ERR_IO = 2,                 /* the operating system refused (open, read, write, rename ...) */
  MPK_ERR_NOT_FOUND = 3,          /* no tensor / metadata key / component by that name */
  MPK_ERR_BAD_MAGIC = 4,          /* not a .mpk file, or damaged in transfer (text mode, 7-bit) */
  MPK_ERR_UNSUPPORTED_VERSION = 5,/* format major version newer than this reader */
  MPK_ERR_UNSUPPORTED_FEATURE = 6,/* the file needs an incompatible feature this reader lacks */
  MPK_ERR_TRUNCATED = 7,          /* the file ends before a structure it declares */
  MPK_ERR_CHECKSUM = 8,           /* a checksum (preamble, header, tensor, content id) mismatches */
  MPK_ERR_CORRUPT_HEADER = 9,     /* the header is not a valid FlatBuffer / violates the schema */
  MPK_ERR_OUT_OF_BOUNDS = 10,     /* an offset/size points outside its section */
  MPK_ERR_OVERLAP = 11,           /* two tensors (or sections) share bytes */
  MPK_ERR_MISALIGNED = 12,        /* an offset breaks the declared alignment */
  MPK_ERR_OVERFLOW = 13,          /* a size computation overflows 64 bits */
  MPK_ERR_DUPLICATE = 14,         /* a name appears twice */
  MPK_ERR_UNSORTED = 15,          /* tensors or metadata are not in the required order */
  MPK_ERR_BAD_SHAPE = 16,         /* rank over the limit or byte size inconsistent with shape */
  MPK_ERR_BAD_DTYPE = 17,         /* unknown or unsupported element type */
  MPK_ERR_LIMIT = 18,             /* a documented cap is exceeded (raise it in the options) */
  MPK_ERR_TYPE_MISMATCH = 19,     /* a value was asked for as another type than it has */
  MPK_ERR_STATE = 20,             /* the call is not valid in the object's current state */
  MPK_ERR_NO_MEMORY = 21,
  MPK_ERR_INTERNAL = 22,          /* a bug in libmodelpack: please report it */
  MPK_ERR_SIZE_MISMATCH = 23,     /* data size differs from what the shape and dtype require */
  MPK_ERR_BAD_FORMAT = 24,        /* a malformed input file of another format (e.g. .npy) */
  MPK_ERR_BAD_NAME = 25           /* empty name, invalid UTF-8, embedded NUL, or too long */
} mpk_status;

/* The constant name of a status, e.g. "MPK_ERR_OVERLAP"; never NULL. */
MPK_API const char *mpk_status_name(mpk_status status);
/* The message of the last failed call on this thread ("" if none). Valid until the next
 * libmodelpack call on the same thread. */
MPK_API const char *mpk_last_error_message(void);
MPK_API void mpk_clear_error(void);

/* ---- element types ------------------------------------------------------------------------- */

/* Values are part of the format and the ABI: never renumbered, never reused. */
typedef enum mpk_dtype {
  MPK_DTYPE_INVALID = 0,
  MPK_DTYPE_F64 = 1,
  MPK_DTYPE_F32 = 2,
  MPK_DTYPE_F16 = 3,
  MPK_DTYPE_BF16 = 4,
  MPK_DTYPE_I64 = 5,
  MPK_DTYPE_I32 = 6,
  MPK_DTYPE_I16 = 7,
  MPK_DTYPE_I8 = 8,
  MPK_DTYPE_U64 = 9,
  MPK_DTYPE_U32 = 10,
  MPK_DTYPE_U16 = 11,
  MPK_DTYPE_U8 = 12,
  MPK_DTYPE_BOOL = 13
} mpk_dtype;

/* "f32", "bf16", ... or NULL for an unknown value. */
MPK_API const char *mpk_dtype_name(mpk_dtype dtype);
/* Bytes per element, 0 for an unknown value. */
MPK_API size_t mpk_dtype_size(mpk_dtype dtype);
/* Parses a name as printed by mpk_dtype_name; MPK_ERR_BAD_DTYPE if unknown. */
MPK_API mpk_status mpk_dtype_from_name(mpk_dtype *out, const char *name);

/* ---- limits ------------------------------------------------------------------------------ */

#define MPK_MAX_RANK 32                    /* dimensions per tensor */
#define MPK_MAX_NAME_BYTES 65535           /* tensor, metadata key and component names */
#define MPK_DEFAULT_ALIGNMENT 64
#define MPK_MAX_ALIGNMENT 65536
#define MPK_DEFAULT_MAX_HEADER_BYTES (256u * 1024u * 1024u)
#define MPK_CONTENT_ID_LENGTH 37           /* "mpk1-" + 32 hex digits, without the NUL */

/* ---- opening a model --------------------------------------------------------------------- */

typedef struct mpk_model mpk_model;

typedef enum mpk_access {
  MPK_ACCESS_MAP = 0,   /* memory-map the file: zero-copy views, pages loaded on first touch */
  MPK_ACCESS_READ = 1   /* read with pread(): header at open, each tensor when first asked for */
} mpk_access;

typedef enum mpk_verify_mode {
  MPK_VERIFY_NONE = 0,   /* structure only: bounds, overlap, alignment (always checked) */
  MPK_VERIFY_HEADER = 1, /* + preamble/header checksums and the content id (default at open) */
  MPK_VERIFY_FULL = 2    /* + every tensor's checksum over its bytes */
} mpk_verify_mode;

typedef struct mpk_open_options {
  uint32_t struct_size;       /* sizeof(mpk_open_options) */
  uint32_t access;            /* mpk_access */
  uint32_t verify;            /* mpk_verify_mode applied at open */
  uint32_t threads;           /* for MPK_VERIFY_FULL; 0 = 1 thread */
  uint64_t max_header_bytes;  /* 0 = MPK_DEFAULT_MAX_HEADER_BYTES; at most 2^31 - 1 */
} mpk_open_options;

#define MPK_OPEN_OPTIONS_INIT \
  { sizeof(mpk_open_options), MPK_ACCESS_MAP, MPK_VERIFY_HEADER, 0, 0 }
MPK_API void mpk_open_options_init(mpk_open_options *opts);

/* Opens and validates a model. Reads only the preamble and the header (plus every tensor with
 * MPK_VERIFY_FULL). *out is set only on success. */
MPK_API mpk_status mpk_model_open(mpk_model **out, const char *path, const mpk_open_options *opts);
MPK_API void mpk_model_free(mpk_model *model);

/* Re-checks an open model. threads: 0 = 1. On a tensor checksum mismatch the message names the
 * tensor and its byte range. */
MPK_API mpk_status mpk_model_verify(const mpk_model *model, mpk_verify_mode mode, uint32_t threads);

/* Content id of the model (lent, NUL-terminated, MPK_CONTENT_ID_LENGTH characters). */
MPK_API const char *mpk_model_content_id(const mpk_model *model);
MPK_API uint64_t mpk_model_file_size(const mpk_model *model);
MPK_API uint32_t mpk_model_alignment(const mpk_model *model);
MPK_API void mpk_model_format_version(const mpk_model *model, unsigned *out_major,
                                      unsigned *out_minor);
MPK_API void mpk_model_features(const mpk_model *model, uint64_t *out_incompatible,
                                uint64_t *out_compatible);

/* ---- tensors ------------------------------------------------------------------------------- */

typedef struct mpk_tensor_info {
  uint32_t struct_size;   /* set by the caller: sizeof(mpk_tensor_info) */
  uint32_t ndim;
  const char *name;       /* lent, NUL-terminated */
  size_t name_len;
  mpk_dtype dtype;
  uint32_t component;     /* index of its component */
  const uint64_t *shape;  /* lent, ndim entries (NULL when ndim == 0) */
  uint64_t numel;         /* product of shape (1 for a scalar) */
  uint64_t offset;        /* absolute offset of the first byte in the file */
  uint64_t nbytes;
  uint64_t xxh3;          /* XXH3-64 of the bytes */
} mpk_tensor_info;

#define MPK_TENSOR_INFO_INIT { sizeof(mpk_tensor_info), 0, NULL, 0, MPK_DTYPE_INVALID, 0, NULL, 0, 0, 0, 0 }

/* Tensors are indexed 0..count-1 in name order (byte-wise). */
MPK_API size_t mpk_model_tensor_count(const mpk_model *model);
/* Binary search by name; MPK_ERR_NOT_FOUND if absent. */
MPK_API mpk_status mpk_model_find_tensor(const mpk_model *model, const char *name, size_t *out_index);
MPK_API mpk_status mpk_model_tensor_info(const mpk_model *model, size_t index, mpk_tensor_info *out);
/* Pointer to the tensor's bytes, valid until mpk_model_free. With MPK_ACCESS_MAP it points into the
 * mapping (zero-copy); with MPK_ACCESS_READ the bytes are read on the first call and kept. The bytes
 * are not checksummed here: use mpk_model_verify or mpk_model_verify_tensor. For an empty tensor
 * *out_data may be any non-NULL pointer. */
MPK_API mpk_status mpk_model_tensor_data(const mpk_model *model, size_t index, const void **out_data,
                                         uint64_t *out_nbytes);
/* Copies the bytes into dst (dst_size must be at least nbytes); never keeps them. */
MPK_API mpk_status mpk_model_tensor_read(const mpk_model *model, size_t index, void *dst,
                                         uint64_t dst_size);
MPK_API mpk_status mpk_model_verify_tensor(const mpk_model *model, size_t index);

/* ---- components ---------------------------------------------------------------------------- */

MPK_API size_t mpk_model_component_count(const mpk_model *model);
MPK_API mpk_status mpk_model_find_component(const mpk_model *model, const char *name,
                                            size_t *out_index);
/* Lent name and kind ("" when absent); out_tensors/out_nbytes may be NULL. */
MPK_API mpk_status mpk_model_component_info(const mpk_model *model, size_t index,
                                            const char **out_name, const char **out_kind,
                                            uint64_t *out_tensors, uint64_t *out_nbytes);

/* ---- metadata ------------------------------------------------------------------------------ */

/* Values are part of the format and the ABI: never renumbered, never reused. */
typedef enum mpk_meta_type {
  MPK_META_UNKNOWN = 0, /* written by a newer writer; skip it */
  MPK_META_STRING = 1,
  MPK_META_INT64 = 2,
  MPK_META_FLOAT64 = 3,
  MPK_META_BOOL = 4,
  MPK_META_BYTES = 5,
  MPK_META_STRING_ARRAY = 6,
  MPK_META_INT64_ARRAY = 7,
  MPK_META_FLOAT64_ARRAY = 8,
  MPK_META_BOOL_ARRAY = 9,
  MPK_META_BYTES_ARRAY = 10
} mpk_meta_type;

/* Entries are indexed 0..count-1 in key order. */
MPK_API size_t mpk_model_metadata_count(const mpk_model *model);
MPK_API mpk_status mpk_model_metadata_find(const mpk_model *model, const char *key, size_t *out_index);
MPK_API mpk_status mpk_model_metadata_key(const mpk_model *model, size_t index, const char **out_key);
MPK_API mpk_meta_type mpk_model_metadata_type(const mpk_model *model, size_t index);
/* Scalars. MPK_ERR_TYPE_MISMATCH when the entry has another type. */
MPK_API mpk_status mpk_model_metadata_string(const mpk_model *model, size_t index,
                                             const char **out, size_t *out_len);
MPK_API mpk_status mpk_model_metadata_int64(const mpk_model *model, size_t index, int64_t *out);
MPK_API mpk_status mpk_model_metadata_float64(const mpk_model *model, size_t index, double *out);
MPK_API mpk_status mpk_model_metadata_bool(const mpk_model *model, size_t index, int *out);
MPK_API mpk_status mpk_model_metadata_bytes(const mpk_model *model, size_t index,
                                            const void **out, size_t *out_len);
/* Arrays: the number of items of an array entry (of any array type). */
MPK_API mpk_status mpk_model_metadata_array_length(const mpk_model *model, size_t index,
                                                   size_t *out_len);
/* Lent, contiguous little-endian arrays. */
MPK_API mpk_status mpk_model_metadata_int64_array(const mpk_model *model, size_t index,
                                                  const int64_t **out, size_t *out_len);
MPK_API mpk_status mpk_model_metadata_float64_array(const mpk_model *model, size_t index,
                                                    const double **out, size_t *out_len);
/* One byte (0 or 1) per item. */
MPK_API mpk_status mpk_model_metadata_bool_array(const mpk_model *model, size_t index,
                                                 const uint8_t **out, size_t *out_len);
/* Item `item` of a string or bytes array. */
MPK_API mpk_status mpk_model_metadata_string_item(const mpk_model *model, size_t index, size_t item,
                                                  const char **out, size_t *out_len);
MPK_API mpk_status mpk_model_metadata_bytes_item(const mpk_model *model, size_t index, size_t item,
                                                 const void **out, size_t *out_len);

/* ---- writing a model ----------------------------------------------------------------------- */

typedef struct mpk_writer mpk_writer;

typedef struct mpk_writer_options {
  uint32_t struct_size;  /* sizeof(mpk_writer_options) */
  uint32_t alignment;    /* power of two in [1, 65536]; 0 = MPK_DEFAULT_ALIGNMENT (64) */
  uint32_t flags;        /* MPK_WRITER_* */
} mpk_writer_options;

/* Skip fsync before the rename (faster, but a power loss may leave an empty target). */
#define MPK_WRITER_NO_FSYNC 0x1u

#define MPK_WRITER_OPTIONS_INIT { sizeof(mpk_writer_options), 0, 0 }
MPK_API void mpk_writer_options_init(mpk_writer_options *opts);

/* Starts writing to a temporary file next to `path`; nothing appears at `path` until commit. */
MPK_API mpk_status mpk_writer_create(mpk_writer **out, const char *path, const mpk_writer_options *opts);
/* Frees the writer; if it was not committed, the temporary file is removed and `path` untouched. */
MPK_API void mpk_writer_free(mpk_writer *writer);

/* Declares a component; tensors added with component name NULL go to "weights". */
MPK_API mpk_status mpk_writer_add_component(mpk_writer *writer, const char *name, const char *kind);

/* Adds a whole tensor. nbytes must equal numel * dtype size. component: NULL = "weights" (created
 * on first use with kind "weights"); another name must have been declared. The bytes are written
 * and hashed at once; the caller may free them on return. */
MPK_API mpk_status mpk_writer_add_tensor(mpk_writer *writer, const char *name, mpk_dtype dtype,
                                         uint32_t ndim, const uint64_t *shape, const void *data,
                                         uint64_t nbytes, const char *component);
/* Streaming: begin, then write the bytes in any number of pieces, then end (which checks that
 * exactly numel * dtype size bytes were written). */
MPK_API mpk_status mpk_writer_begin_tensor(mpk_writer *writer, const char *name, mpk_dtype dtype,
                                           uint32_t ndim, const uint64_t *shape, const char *component);
MPK_API mpk_status mpk_writer_write(mpk_writer *writer, const void *data, uint64_t nbytes);
MPK_API mpk_status mpk_writer_end_tensor(mpk_writer *writer);

/* Metadata (a key set twice: the last value wins). */
MPK_API mpk_status mpk_writer_set_string(mpk_writer *writer, const char *key, const char *value);
MPK_API mpk_status mpk_writer_set_int64(mpk_writer *writer, const char *key, int64_t value);
MPK_API mpk_status mpk_writer_set_float64(mpk_writer *writer, const char *key, double value);
MPK_API mpk_status mpk_writer_set_bool(mpk_writer *writer, const char *key, int value);
MPK_API mpk_status mpk_writer_set_bytes(mpk_writer *writer, const char *key, const void *value,
                                        size_t len);
MPK_API mpk_status mpk_writer_set_string_array(mpk_writer *writer, const char *key,
                                               const char *const *values, size_t count);
MPK_API mpk_status mpk_writer_set_int64_array(mpk_writer *writer, const char *key,
                                              const int64_t *values, size_t count);
MPK_API mpk_status mpk_writer_set_float64_array(mpk_writer *writer, const char *key,
                                                const double *values, size_t count);
MPK_API mpk_status mpk_writer_set_bool_array(mpk_writer *writer, const char *key,
                                             const uint8_t *values, size_t count);

/* Writes the header, syncs and renames the file into place. After it (success or not) only
 * mpk_writer_free may be called. */
MPK_API mpk_status mpk_writer_commit(mpk_writer *writer);

#ifdef __cplusplus
}
#endif

#endif /* MODELPACK_H */
