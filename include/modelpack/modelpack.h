/*
 * modelpack.h - the stable C ABI of libmodelpack.
 *
 * The comments in this header are the API reference (docs/DESIGN.md explains the design behind
 * them). The rules below hold for every function unless its own comment says otherwise.
 *
 * ERRORS
 *  - A function that can fail returns an mpk_status; MPK_OK (0) is success. Status values never
 *    change meaning once released.
 *  - On failure, out-parameters are left untouched, no partial file is left behind, and a
 *    thread-local message says what and where: mpk_last_error_message().
 *  - On success the message is left as it was (libgit2's rule): it always describes the last call
 *    that *failed* on this thread, so look at the returned status to learn whether a call failed,
 *    and at the message only after a failure. mpk_clear_error() resets it to "".
 *  - A NULL handle or a NULL required out-pointer is MPK_ERR_INVALID_ARGUMENT; the message names
 *    the function and the parameter. Out-pointers documented as optional may be NULL.
 *  - Getters that return a value instead of a status (mpk_model_tensor_count,
 *    mpk_model_component_count, mpk_model_metadata_count, mpk_model_file_size,
 *    mpk_model_alignment, mpk_model_content_id, mpk_model_metadata_type) return 0, "" or
 *    MPK_META_UNKNOWN when given a NULL model or an index out of range, and set the message. The
 *    void getters (mpk_model_format_version, mpk_model_features) then leave their outputs untouched
 *    and set the message.
 *  - No C++ exception crosses this boundary; running out of memory is MPK_ERR_NO_MEMORY.
 *
 * OBJECTS AND LENT POINTERS
 *  - Objects are opaque handles made by *_open / *_create and released by the matching *_free,
 *    which accepts NULL. No global initialisation or cleanup is needed.
 *  - Pointers returned by mpk_model_* functions (names, keys, kinds, metadata values and items,
 *    shapes, tensor bytes, the content id) are *lent*: they point into memory the model owns, do
 *    not change, and stay valid until mpk_model_free of that model, across any number of other
 *    calls. Do not free them or write through them. Lent strings are NUL-terminated; where a length
 *    comes with one (out_len, name_len), that length is authoritative.
 *  - mpk_version_string, mpk_status_name and mpk_dtype_name return static strings, valid forever.
 *    mpk_last_error_message's string is valid until the next libmodelpack call on the same thread.
 *  - What the caller passes in (paths, names, keys, shapes, tensor bytes, metadata values, option
 *    structs) is only read during the call and may be freed as soon as it returns.
 *
 * VERSIONED STRUCTS (struct_size)
 *  - Every option or info struct begins with `uint32_t struct_size`, the size of the struct as the
 *    caller compiled it; fields are only ever appended, never reordered or removed.
 *  - Structs passed IN (mpk_open_options, mpk_writer_options; NULL means all defaults): initialise
 *    them with the *_INIT macro, or from other languages with *_init(&opts, sizeof opts). On entry:
 *      smaller than the struct's size in its first release -> MPK_ERR_INVALID_ARGUMENT;
 *      up to this library's size (a program built against an older header) -> fields past
 *        struct_size take their defaults;
 *      larger than this library's size (a newer header) -> accepted only if every byte this
 *        library does not know is zero (the newer fields were left at their defaults); a non-zero
 *        one is an option this library cannot honour: MPK_ERR_INVALID_ARGUMENT, never ignored;
 *      over 4096 -> MPK_ERR_INVALID_ARGUMENT.
 *    The first released sizes are those of version 0.1.0: sizeof(mpk_open_options) == 24,
 *    sizeof(mpk_writer_options) == 12 and sizeof(mpk_convert_options) == 20.
 *  - Structs passed OUT (mpk_tensor_info): the caller sets struct_size (MPK_TENSOR_INFO_INIT). The
 *    library fills only the fields that lie entirely within struct_size, never writes a byte past
 *    it and never changes struct_size. The same bounds apply (smaller than the first release, 72
 *    bytes on LP64, or over 4096: MPK_ERR_INVALID_ARGUMENT, nothing written).
 *
 * ENUMS
 *  - Every enum is 32 bits wide and ends with a *_MAX_ENUM_ = 0x7fffffff member that is not a
 *    value: it makes any value from 0 to 2^31-1 a valid object of the enum in C++, so a caller that
 *    passes a number this library does not know (a newer header, a binding, garbage) gets
 *    an error (from the *_name functions, a placeholder string) instead of undefined behaviour.
 *    Never pass *_MAX_ENUM_ itself.
 *
 * THREADS
 *  - The last-error message is per thread.
 *  - An mpk_model may be used from any number of threads at once: every mpk_model_* function other
 *    than mpk_model_free only reads the model (MPK_ACCESS_READ loads tensor bytes under a lock), so
 *    they may run concurrently on the same model. mpk_model_free must not overlap any other call
 *    on that model.
 *  - An mpk_writer must be used from one thread at a time (calls on one writer must not overlap);
 *    different writers are independent.
 *  - Functions without a handle (versions, mpk_status_name, mpk_dtype_*, mpk_*_options_init, the
 *    error functions) may be called from any thread at any time.
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
#define MPK_FORMAT_MINOR 5

/* Feature bits (docs/FORMAT.md 4.2, 15.4). Incompatible: a reader without the feature refuses the
 * file. Set by the writer itself. */
#define MPK_FEATURE_COMPRESSED_TENSORS (UINT64_C(1) << 0) /* chunked, compressed tensors (format 1.2) */
#define MPK_FEATURE_EXTENDED_DTYPES (UINT64_C(1) << 1) /* dtypes 14.. (f8, f6, f4, c64, q4_0, ...) */
#define MPK_FEATURE_PATCH (UINT64_C(1) << 3) /* a delta patch: the tensors are payloads (format 1.3) */
#define MPK_FEATURE_QUANTIZED (UINT64_C(1) << 4) /* int8 tensors with scale tensors (format 1.4) */
/* Compatible feature bits: a reader without the feature may ignore it. */
#define MPK_COMPAT_FEATURE_GRAPH (UINT64_C(1) << 0) /* a component of kind "graph" holds a graph (format 1.5) */
/* Largest decoded chunk of a compressed tensor (FORMAT.md 7.9, rule K2). */
#define MPK_MAX_CHUNK_BYTES (UINT64_C(1) << 26)

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
  MPK_ERR_BAD_NAME = 25,          /* empty name, invalid UTF-8, embedded NUL, or too long */
  MPK_ERR_CORRUPT_DATA = 26,      /* a compressed tensor chunk does not decode (names tensor, chunk) */
  MPK_ERR_WRONG_BASE = 27,        /* a patch applied to another model than the one it starts from */
  MPK_ERR_BAD_VALUE = 28,         /* a value the operation cannot take (NaN/inf to quantize, out of range) */
  MPK_ERR_SIGNATURE = 29,         /* unsigned, signed by an untrusted key, or the signature does not match */
  MPK_STATUS_MAX_ENUM_ = 0x7fffffff /* not a value; see ENUMS above */
} mpk_status;

/* The constant name of a status, e.g. "MPK_ERR_OVERLAP"; a static string, never NULL. Any int is
 * accepted: a value this library does not know (e.g. from a newer libmodelpack) is
 * "MPK_ERR_UNKNOWN". Does not touch the last-error message. */
MPK_API const char *mpk_status_name(mpk_status status);
/* The message of the last call that failed on this thread ("" if none since the thread started or
 * since mpk_clear_error). Successful calls do not change it. Never NULL; the string is valid until
 * the next libmodelpack call on the same thread (copy it to keep it). */
MPK_API const char *mpk_last_error_message(void);
/* Resets this thread's message to "". */
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
  MPK_DTYPE_BOOL = 13,
  /* Format 1.1: narrow floats and complex (safetensors' F8/F6/F4/C64). Their bytes are stored as
   * given; modelpack does not convert them. f6 packs 4 elements in 3 bytes, f4 2 in a byte, so an
   * f6/f4 tensor's element count is a multiple of 4/2 (docs/FORMAT.md 7.2). */
  MPK_DTYPE_F8_E4M3 = 14,
  MPK_DTYPE_F8_E5M2 = 15,
  MPK_DTYPE_F8_E8M0 = 16,
  MPK_DTYPE_F6_E2M3 = 17,
  MPK_DTYPE_F6_E3M2 = 18,
  MPK_DTYPE_F4_E2M1 = 19,
  MPK_DTYPE_C64 = 20, /* complex: two f32 (real, imaginary) */
  /* Format 1.1: ggml's block-quantized types, bit for bit. Each row (innermost dimension) is cut
   * into blocks of mpk_dtype_block_elems elements stored in mpk_dtype_block_bytes bytes; the
   * innermost dimension is a multiple of the block (docs/FORMAT.md 7.3 gives every layout). */
  MPK_DTYPE_Q4_0 = 32,
  MPK_DTYPE_Q4_1 = 33,
  MPK_DTYPE_Q5_0 = 34,
  MPK_DTYPE_Q5_1 = 35,
  MPK_DTYPE_Q8_0 = 36,
  MPK_DTYPE_Q8_1 = 37,
  MPK_DTYPE_Q2_K = 38,
  MPK_DTYPE_Q3_K = 39,
  MPK_DTYPE_Q4_K = 40,
  MPK_DTYPE_Q5_K = 41,
  MPK_DTYPE_Q6_K = 42,
  MPK_DTYPE_Q8_K = 43,
  MPK_DTYPE_MAX_ENUM_ = 0x7fffffff /* not a value; see ENUMS above */
} mpk_dtype;

/* "f32", "bf16", ... (static strings) or NULL for MPK_DTYPE_INVALID and any value this library does
 * not know; any int is accepted. Does not touch the last-error message. */
MPK_API const char *mpk_dtype_name(mpk_dtype dtype);
/* Bytes per element, 0 for MPK_DTYPE_INVALID, any unknown value and the dtypes whose elements are
 * not whole bytes (f6, f4, block-quantized: use the block functions). Does not touch the message. */
MPK_API size_t mpk_dtype_size(mpk_dtype dtype);
/* The storage block of a dtype: mpk_dtype_block_elems elements take mpk_dtype_block_bytes bytes
 * (1 and the element size for ordinary dtypes; 2 and 1 for f4_e2m1; 32 and 34 for q8_0). 0 for
 * unknown values. Does not touch the message. */
MPK_API size_t mpk_dtype_block_elems(mpk_dtype dtype);
MPK_API size_t mpk_dtype_block_bytes(mpk_dtype dtype);
/* The byte size of a tensor of this dtype and shape (rank <= MPK_MAX_RANK; shape may be NULL when
 * rank is 0). MPK_ERR_BAD_DTYPE (unknown dtype), MPK_ERR_BAD_SHAPE (rank too large; an element count
 * that is not a whole number of blocks: for block-quantized dtypes the innermost dimension must be a
 * multiple of the block, for f6/f4 the element count), MPK_ERR_OVERFLOW, MPK_ERR_INVALID_ARGUMENT
 * (out NULL, or shape NULL with rank > 0). */
MPK_API mpk_status mpk_dtype_nbytes(mpk_dtype dtype, const uint64_t *shape, size_t rank, uint64_t *out);
/* Parses a name as printed by mpk_dtype_name (exact, case-sensitive: "f32", not "float32" or
 * "F32"). MPK_ERR_BAD_DTYPE if unknown (the message names it and lists the known names);
 * MPK_ERR_INVALID_ARGUMENT if out or name is NULL. */
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
  MPK_ACCESS_READ = 1,  /* read with pread(): header at open, each tensor when first asked for */
  MPK_ACCESS_MAX_ENUM_ = 0x7fffffff /* not a value; see ENUMS above */
} mpk_access;

typedef enum mpk_verify_mode {
  MPK_VERIFY_NONE = 0,   /* structure only: bounds, overlap, alignment (always checked) */
  MPK_VERIFY_HEADER = 1, /* + header checksum and content id (default at open; the preamble
                            checksum is checked at every level) */
  MPK_VERIFY_FULL = 2,   /* + every tensor's checksum over its bytes */
  MPK_VERIFY_MODE_MAX_ENUM_ = 0x7fffffff /* not a value; see ENUMS above */
} mpk_verify_mode;

typedef struct mpk_open_options {
  uint32_t struct_size;       /* sizeof(mpk_open_options) */
  uint32_t access;            /* mpk_access */
  uint32_t verify;            /* mpk_verify_mode applied at open */
  uint32_t threads;           /* for MPK_VERIFY_FULL; 0 = 1 thread */
  uint64_t max_header_bytes;  /* 0 = MPK_DEFAULT_MAX_HEADER_BYTES; at most 2^31 - 2 (a FlatBuffers limit) */
  /* Appended in 0.2 (compressed tensors, format 1.2): */
  uint64_t cache_bytes;       /* decoded compressed tensors kept for later calls, least recently used
                                 out first; MPK_DEFAULT_CACHE_BYTES by default, 0 = keep nothing */
  uint64_t max_decoded_tensor_bytes; /* largest compressed tensor mpk_model_tensor_data decodes
                                 whole (MPK_ERR_LIMIT above); 0 = MPK_DEFAULT_MAX_DECODED_TENSOR_BYTES */
  uint32_t decode_threads;    /* threads decoding one tensor's chunks; 0 = one per core */
  uint32_t reserved;          /* must be 0 */
  /* Appended in 0.6 (signatures, FORMAT.md 7.13): */
  const uint8_t *trusted_keys; /* trusted_key_count Ed25519 public keys, 32 bytes each, back to back
                                  (mpk_public_key_load). With any, the file must be signed by one of
                                  them, else MPK_ERR_SIGNATURE: checked over the preamble and header,
                                  and with MPK_VERIFY_FULL over every byte of the file. NULL: none */
  uint64_t trusted_key_count;
} mpk_open_options;

#define MPK_DEFAULT_CACHE_BYTES (UINT64_C(1) << 30)
#define MPK_DEFAULT_MAX_DECODED_TENSOR_BYTES (UINT64_C(1) << 36) /* 64 GiB */
#define MPK_OPEN_OPTIONS_INIT \
  { sizeof(mpk_open_options), MPK_ACCESS_MAP, MPK_VERIFY_HEADER, 0, 0, MPK_DEFAULT_CACHE_BYTES, 0, 0, 0, NULL, 0 }
/* The same defaults as MPK_OPEN_OPTIONS_INIT, for callers that cannot use the macro (FFI).
 * struct_size is sizeof(mpk_open_options) as the caller compiled it: exactly struct_size bytes are
 * written (the defaults this library knows, zeros for any newer fields beyond them) and
 * opts->struct_size is set to struct_size. MPK_ERR_INVALID_ARGUMENT, nothing written, if opts is
 * NULL or struct_size is below the first released size or over 4096. */
MPK_API mpk_status mpk_open_options_init(mpk_open_options *opts, size_t struct_size);

/* Opens and validates a model. Reads only the preamble and the header (plus every tensor with
 * MPK_VERIFY_FULL). opts may be NULL (defaults); see VERSIONED STRUCTS for opts->struct_size.
 * *out is set only on success; free it with mpk_model_free. */
MPK_API mpk_status mpk_model_open(mpk_model **out, const char *path, const mpk_open_options *opts);
/* Frees the model and everything it lent; NULL is a no-op. No other call on the model may run
 * concurrently with it or follow it. */
MPK_API void mpk_model_free(mpk_model *model);

/* Re-checks an open model. threads: 0 = 1. On a tensor checksum mismatch the message names the
 * tensor and its byte range. MPK_ERR_INVALID_ARGUMENT for an unknown mode. */
MPK_API mpk_status mpk_model_verify(const mpk_model *model, mpk_verify_mode mode, uint32_t threads);

/* Content id of the model (lent, NUL-terminated, MPK_CONTENT_ID_LENGTH characters); "" and the
 * message set for a NULL model. */
MPK_API const char *mpk_model_content_id(const mpk_model *model);
/* Size of the file in bytes; 0 and the message set for a NULL model. */
MPK_API uint64_t mpk_model_file_size(const mpk_model *model);
/* Alignment of the tensor data (a power of two); 0 and the message set for a NULL model. */
MPK_API uint32_t mpk_model_alignment(const mpk_model *model);
/* Format version of the file. Each out-pointer may be NULL; for a NULL model neither is written. */
MPK_API void mpk_model_format_version(const mpk_model *model, unsigned *out_major,
                                      unsigned *out_minor);
/* Feature bits of the file (docs/FORMAT.md). Each out-pointer may be NULL; for a NULL model
 * neither is written. */
MPK_API void mpk_model_features(const mpk_model *model, uint64_t *out_incompatible,
                                uint64_t *out_compatible);

/* ---- tensors ------------------------------------------------------------------------------- */

/* Filled by mpk_model_tensor_info; see VERSIONED STRUCTS (passed OUT). Pointers are lent. */
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
  uint64_t xxh3;          /* XXH3-64 of the (decoded) bytes */
  /* Appended in 0.2 (format 1.2); filled only when struct_size covers them: */
  uint64_t stored_bytes;  /* bytes in the file: nbytes when raw, the chunks' total when compressed */
  uint32_t encoding;      /* mpk_encoding */
  uint32_t chunk_size;    /* compressed: decoded bytes per chunk */
  uint32_t chunk_count;   /* compressed: number of chunks */
  uint32_t reserved;
} mpk_tensor_info;

/* How a tensor is stored (FORMAT.md 7.8). */
typedef enum mpk_encoding { MPK_ENCODING_RAW = 0, MPK_ENCODING_CHUNKED = 1, MPK_ENCODING_MAX_ENUM_ = 0x7fffffff } mpk_encoding;

#define MPK_TENSOR_INFO_INIT \
  { sizeof(mpk_tensor_info), 0, NULL, 0, MPK_DTYPE_INVALID, 0, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0 }

/* Tensors are indexed 0..count-1 in name order (byte-wise). 0 and the message set for a NULL
 * model. An index >= count is MPK_ERR_INVALID_ARGUMENT in every function that takes one. */
MPK_API size_t mpk_model_tensor_count(const mpk_model *model);
/* Binary search by name; MPK_ERR_NOT_FOUND if absent. */
MPK_API mpk_status mpk_model_find_tensor(const mpk_model *model, const char *name, size_t *out_index);
/* Fills *out up to out->struct_size (set it first: MPK_TENSOR_INFO_INIT). Its name and shape are
 * lent. */
MPK_API mpk_status mpk_model_tensor_info(const mpk_model *model, size_t index, mpk_tensor_info *out);
/* Pointer to the tensor's bytes, valid until mpk_model_free. With MPK_ACCESS_MAP it points into the
 * mapping (zero-copy); with MPK_ACCESS_READ the bytes are read on the first call and kept. A
 * compressed tensor (format 1.2) is decoded on the first call (its chunk checksums checked) and the
 * decoded bytes are kept until mpk_model_free, outside the decode cache's budget: for bounded memory
 * use mpk_model_tensor_read. The bytes are not checksummed as a whole here: use mpk_model_verify or
 * mpk_model_verify_tensor. For an empty tensor *out_data may be any non-NULL pointer. */
MPK_API mpk_status mpk_model_tensor_data(const mpk_model *model, size_t index, const void **out_data,
                                         uint64_t *out_nbytes);
/* Copies the tensor's nbytes bytes into dst and never keeps them (with MPK_ACCESS_READ they are
 * read straight into dst). dst_size may exceed nbytes: only nbytes bytes are written. dst_size <
 * nbytes is MPK_ERR_SIZE_MISMATCH and dst is untouched. dst may not be NULL, even for an empty
 * tensor. Not checksummed: see mpk_model_verify_tensor. */
MPK_API mpk_status mpk_model_tensor_read(const mpk_model *model, size_t index, void *dst,
                                         uint64_t dst_size);
/* Hashes the tensor's bytes; MPK_ERR_CHECKSUM (the message names the tensor) on a mismatch. */
MPK_API mpk_status mpk_model_verify_tensor(const mpk_model *model, size_t index);

/* ---- components ---------------------------------------------------------------------------- */

/* Components are indexed 0..count-1. 0 and the message set for a NULL model. */
MPK_API size_t mpk_model_component_count(const mpk_model *model);
/* MPK_ERR_NOT_FOUND if no component has that name. */
MPK_API mpk_status mpk_model_find_component(const mpk_model *model, const char *name,
                                            size_t *out_index);
/* out_name and out_kind are required (NULL: MPK_ERR_INVALID_ARGUMENT): the lent name and kind
 * ("" when the file has no kind). out_tensors (number of tensors) and out_nbytes (their total
 * bytes) are optional: NULL skips them. On failure none of the four is written. */
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
  MPK_META_BYTES_ARRAY = 10,
  /* Format 1.1 (docs/FORMAT.md 9.1): numbers that keep their exact type (e.g. GGUF's u32 or f32). */
  MPK_META_TYPED = 11,       /* one number of a stated dtype */
  MPK_META_TYPED_ARRAY = 12, /* a little-endian array of a stated dtype */
  MPK_META_LIST = 13,        /* a list of values of any types, lists included (C++ API: items) */
  MPK_META_TYPE_MAX_ENUM_ = 0x7fffffff /* not a value; see ENUMS above */
} mpk_meta_type;

/* "string", "int64", "float64", "bool", "bytes", "string[]", "int64[]", "float64[]", "bool[]",
 * "bytes[]", "typed", "typed[]", "list", or "unknown" for any other value; never NULL. */
MPK_API const char *mpk_meta_type_name(mpk_meta_type type);

/* Entries are indexed 0..count-1 in key order (byte-wise). 0 and the message set for a NULL model.
 * In the getters below every out-pointer is required, values are lent, and an entry of another
 * type is MPK_ERR_TYPE_MISMATCH (the message names the key). */
MPK_API size_t mpk_model_metadata_count(const mpk_model *model);
/* MPK_ERR_NOT_FOUND if the key is absent. */
MPK_API mpk_status mpk_model_metadata_find(const mpk_model *model, const char *key, size_t *out_index);
MPK_API mpk_status mpk_model_metadata_key(const mpk_model *model, size_t index, const char **out_key);
/* The type of an entry; MPK_META_UNKNOWN for a type written by a newer libmodelpack (skip it), and
 * MPK_META_UNKNOWN with the message set for a NULL model or an index out of range. */
MPK_API mpk_meta_type mpk_model_metadata_type(const mpk_model *model, size_t index);
/* Scalars. A string is NUL-terminated at *out_len. An empty bytes value gives a non-NULL *out. */
MPK_API mpk_status mpk_model_metadata_string(const mpk_model *model, size_t index,
                                             const char **out, size_t *out_len);
/* int64 also reads a typed integer or bool whose value fits (a u64 over INT64_MAX is
 * MPK_ERR_TYPE_MISMATCH); float64 also reads a typed f64, f32, f16 or bf16 (widened exactly). */
MPK_API mpk_status mpk_model_metadata_int64(const mpk_model *model, size_t index, int64_t *out);
MPK_API mpk_status mpk_model_metadata_float64(const mpk_model *model, size_t index, double *out);
MPK_API mpk_status mpk_model_metadata_bool(const mpk_model *model, size_t index, int *out);
MPK_API mpk_status mpk_model_metadata_bytes(const mpk_model *model, size_t index,
                                            const void **out, size_t *out_len);
/* Arrays: the number of items of an array entry (of any array type, typed arrays and lists too). */
MPK_API mpk_status mpk_model_metadata_array_length(const mpk_model *model, size_t index,
                                                   size_t *out_len);
/* Lent, contiguous little-endian arrays. */
MPK_API mpk_status mpk_model_metadata_int64_array(const mpk_model *model, size_t index,
                                                  const int64_t **out, size_t *out_len);
MPK_API mpk_status mpk_model_metadata_float64_array(const mpk_model *model, size_t index,
                                                    const double **out, size_t *out_len);
/* One byte per item, nonzero = true (files from other writers may hold any byte). */
MPK_API mpk_status mpk_model_metadata_bool_array(const mpk_model *model, size_t index,
                                                 const uint8_t **out, size_t *out_len);
/* A typed number (MPK_META_TYPED: *out_count is 1) or typed array (MPK_META_TYPED_ARRAY): its
 * dtype (u8..u64, i8..i64, f16, bf16, f32, f64 or bool) and its little-endian elements, lent and
 * not necessarily aligned for the dtype (copy with memcpy). */
MPK_API mpk_status mpk_model_metadata_typed(const mpk_model *model, size_t index, mpk_dtype *out_dtype,
                                            const void **out, size_t *out_count);
/* Item `item` of a string or bytes array. */
MPK_API mpk_status mpk_model_metadata_string_item(const mpk_model *model, size_t index, size_t item,
                                                  const char **out, size_t *out_len);
MPK_API mpk_status mpk_model_metadata_bytes_item(const mpk_model *model, size_t index, size_t item,
                                                 const void **out, size_t *out_len);

/* ---- writing a model ----------------------------------------------------------------------- */

typedef struct mpk_writer mpk_writer;

/* See VERSIONED STRUCTS (passed IN). */
typedef struct mpk_writer_options {
  uint32_t struct_size;  /* sizeof(mpk_writer_options) */
  uint32_t alignment;    /* power of two in [1, 65536]; 0 = MPK_DEFAULT_ALIGNMENT (64) */
  uint32_t flags;        /* MPK_WRITER_* */
  /* Appended in 0.2 (compressed tensors, format 1.2): */
  uint32_t codec;        /* mpk_codec; MPK_CODEC_NONE (default) stores tensors raw */
  int32_t level;         /* effort 1..19; 0 = 3 */
  uint32_t chunk_size;   /* decoded bytes per chunk, up to MPK_MAX_CHUNK_BYTES; 0 = 1 MiB */
  uint32_t threads;      /* encoding threads; 0 = one per core */
  uint32_t reserved;     /* must be 0 */
  double min_decode_gbps;  /* modelled decode-speed floor, GB/s per core; 0 = none */
} mpk_writer_options;

/* Tensor compression of a writer (FORMAT.md 7.9): each tensor of 4 KiB or more is cut into chunks,
 * each stored with the smallest allowed codec (AUTO), as zstd frames (ZSTD) or as float-aware byte
 * planes (FLOAT); a chunk that would not shrink is stored raw. */
typedef enum mpk_codec { MPK_CODEC_NONE = 0, MPK_CODEC_AUTO = 1, MPK_CODEC_ZSTD = 2, MPK_CODEC_FLOAT = 3, MPK_CODEC_MAX_ENUM_ = 0x7fffffff } mpk_codec;

/* Skip fsync before the rename (faster, but a power loss may leave an empty target). */
#define MPK_WRITER_NO_FSYNC 0x1u

#define MPK_WRITER_OPTIONS_INIT { sizeof(mpk_writer_options), 0, 0, MPK_CODEC_NONE, 0, 0, 0, 0, 0.0 }
/* The same defaults as MPK_WRITER_OPTIONS_INIT, for callers that cannot use the macro (FFI);
 * struct_size and errors as for mpk_open_options_init. */
MPK_API mpk_status mpk_writer_options_init(mpk_writer_options *opts, size_t struct_size);

/* Writes the model at `in` again to `out` with `opts` (NULL: defaults, i.e. raw): to compress it
 * (opts->codec), decompress it (MPK_CODEC_NONE) or re-align it. Components, metadata and tensors are
 * kept (the content id does not change); every tensor is checked against its checksum while it is
 * copied (MPK_ERR_CHECKSUM); on any error nothing new appears at `out`. */
MPK_API mpk_status mpk_rewrite(const char *in, const char *out, const mpk_writer_options *opts);

/* Starts writing to a temporary file next to `path`; nothing appears at `path` until commit. opts
 * may be NULL (defaults). *out is set only on success; free it with mpk_writer_free. */
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
/* Arrays: values may be NULL when count is 0 (an empty array). values[i] may not be NULL. */
MPK_API mpk_status mpk_writer_set_string_array(mpk_writer *writer, const char *key,
                                               const char *const *values, size_t count);
/* An array of byte strings: item i is lens[i] bytes at values[i]. values and lens may be NULL when
 * count is 0; values[i] may be NULL only when lens[i] is 0 (an empty item). */
MPK_API mpk_status mpk_writer_set_bytes_array(mpk_writer *writer, const char *key,
                                              const void *const *values, const size_t *lens,
                                              size_t count);
MPK_API mpk_status mpk_writer_set_int64_array(mpk_writer *writer, const char *key,
                                              const int64_t *values, size_t count);
MPK_API mpk_status mpk_writer_set_float64_array(mpk_writer *writer, const char *key,
                                                const double *values, size_t count);
/* One byte per item; any non-zero byte is true. */
MPK_API mpk_status mpk_writer_set_bool_array(mpk_writer *writer, const char *key,
                                             const uint8_t *values, size_t count);
/* Typed numbers (format 1.1): dtype is one of u8..u64, i8..i64, f16, bf16, f32, f64, bool (else
 * MPK_ERR_BAD_DTYPE); value / values hold mpk_dtype_size(dtype) little-endian bytes per element, in
 * any alignment (values may be NULL when count is 0). bool bytes are stored as given. */
MPK_API mpk_status mpk_writer_set_typed(mpk_writer *writer, const char *key, mpk_dtype dtype,
                                        const void *value);
MPK_API mpk_status mpk_writer_set_typed_array(mpk_writer *writer, const char *key, mpk_dtype dtype,
                                              const void *values, size_t count);

/* Writes the header, syncs and renames the file into place. After it (success or not) only
 * mpk_writer_free may be called. */
MPK_API mpk_status mpk_writer_commit(mpk_writer *writer);

/* ---- converting between formats ------------------------------------------------------------ */

/* Values are part of the ABI: never renumbered, never reused. */
typedef enum mpk_file_format {
  MPK_FILE_AUTO = 0,        /* from the path's extension (.mpk, .safetensors, .safetensors.index.json,
                               .gguf, .npy, .npz) */
  MPK_FILE_MPK = 1,
  MPK_FILE_SAFETENSORS = 2,
  MPK_FILE_GGUF = 3,        /* GGUF v2/v3 (llama.cpp); a split model is given by any of its parts */
  MPK_FILE_NPY = 4,         /* one NumPy array; its tensor is named after the file's stem */
  MPK_FILE_NPZ = 5,         /* NumPy's zip of <name>.npy members (np.savez, np.savez_compressed) */
  MPK_FILE_FORMAT_MAX_ENUM_ = 0x7fffffff /* not a value; see ENUMS above */
} mpk_file_format;

typedef struct mpk_convert_options {
  uint32_t struct_size;  /* sizeof(mpk_convert_options) */
  uint32_t from;         /* mpk_file_format of the input */
  uint32_t to;           /* mpk_file_format of the output */
  uint32_t alignment;    /* .mpk output: as mpk_writer_options.alignment (0 = 64) */
  uint32_t flags;        /* .mpk output: MPK_WRITER_* flags */
  uint32_t npz_deflate;  /* .npz output: 1 = deflate the members (as np.savez_compressed), 0 = store
                            them (as np.savez; the default); other values are refused */
  uint64_t max_shard_bytes; /* sharded .safetensors output (OUT ends in .json, e.g.
                            model.safetensors.index.json): split anew into shards of at most this
                            many bytes (a bigger tensor gets a shard of its own); 0 = keep the
                            shards recorded by a sharded import, else 5 GB (10^9-byte GB, as
                            transformers). Must be 0 for any other output. */
  uint32_t threads;      /* safetensors input: 0 = automatic (a reader thread for 8 MiB of tensor
                            data or more on 2+ CPUs), 1 = the calling thread only, more = 2 */
  uint32_t codec;        /* .mpk output: mpk_codec compression (MPK_CODEC_NONE = raw, the default) */
  int32_t level;         /* with a codec: effort 1..19; 0 = 3 */
  uint32_t reserved;     /* must be 0 */
} mpk_convert_options;

#define MPK_CONVERT_OPTIONS_INIT { sizeof(mpk_convert_options), MPK_FILE_AUTO, MPK_FILE_AUTO, 0, 0, 0, 0, 0, 0, 0, 0 }
/* As mpk_open_options_init: writes exactly struct_size bytes of defaults. */
MPK_API mpk_status mpk_convert_options_init(mpk_convert_options *opts, size_t struct_size);

/* Converts the file at `in` into a new file at `out` (safetensors, gguf, npz or npy <-> mpk),
 * streaming and atomically: on any error nothing new appears at `out`. Imports record provenance
 * metadata (convert.source_format, convert.source_xxh3, convert.tool). NULL options: formats from the
 * extensions, default writer options. A safetensors path ending in .json is a sharded checkpoint's
 * index (.safetensors.index.json is recognised as safetensors): importing it joins every shard it
 * names; exporting to it writes the shards and the index (max_shard_bytes). */
MPK_API mpk_status mpk_convert(const char *in, const char *out, const mpk_convert_options *opts);

/* ---- delta patches (FORMAT.md 7.10) --------------------------------------------------------- */

#define MPK_PATCH_TWO_WAY (1u << 0)   /* mpk_diff: also store the base tensors the result removes or
                                         replaces, and use only deltas that reverse, so that the
                                         patch always applies in reverse */
#define MPK_PATCH_NO_FSYNC (1u << 1)  /* do not sync the output before/after the final rename */
#define MPK_PATCH_REVERSE (1u << 2)   /* mpk_patch: `base` is the patches' result; rebuild their base */
#define MPK_PATCH_NO_LOW_RANK (1u << 3) /* mpk_diff: never predict an f32 tensor's change by a low-rank
                                           product (which levels >= 6 of one-way patches try) */

typedef struct mpk_patch_options {
  uint32_t struct_size;   /* sizeof(mpk_patch_options) */
  uint32_t flags;         /* MPK_PATCH_* */
  int32_t level;          /* mpk_diff: effort for the payloads, 1..19; 0 = 3 */
  int32_t result_level;   /* mpk_diff: effort the result is compressed with when applied, if the new
                             model is compressed, 1..19; 0 = 3 */
  uint32_t threads;       /* encoding threads; 0 = one per core */
  uint32_t reserved;      /* must be 0 */
} mpk_patch_options;

#define MPK_PATCH_OPTIONS_INIT { sizeof(mpk_patch_options), 0, 0, 0, 0, 0 }
/* As mpk_open_options_init: writes exactly struct_size bytes of defaults. */
MPK_API mpk_status mpk_patch_options_init(mpk_patch_options *opts, size_t struct_size);

/* Writes a patch that turns the model at `base` into the model at `target`, atomically at `patch`
 * (nothing appears there on error). Tensors kept, renamed or moved cost a few bytes; changed ones the
 * smallest of their new data and their XOR or integer difference from the base, compressed (at levels
 * >= 6 the difference of a float tensor may be stored in the order of the base's exponents, which a
 * one-way patch cannot undo: FORMAT.md 7.10 SUB_SORTED; and an f32 matrix's difference may be taken against
 * the base plus a fitted low-rank product, also one-way: "Low-rank sources"; MPK_PATCH_NO_LOW_RANK turns
 * that off). A tensor that gained or lost rows at its end
 * (a resized vocabulary) is a delta against the base tensor cut or zero-extended; one that shrank does not
 * reverse from a one-way patch. Memory is bounded by a few pieces of 4 MiB whatever the model size,
 * plus at levels >= 6 one f32 matrix's difference and fit (a low-rank source is tried per matrix).
 * NULL options: defaults. */
MPK_API mpk_status mpk_diff(const char *base, const char *target, const char *patch, const mpk_patch_options *opts);

/* Applies `count` patches in order (a chain v1 -> v2 -> ...; with MPK_PATCH_REVERSE `base` is the last
 * one's result and the chain is undone newest first) and writes the result at `out`, atomically. Every
 * output tensor is checked against its checksum as it is written. MPK_ERR_WRONG_BASE: a patch does not
 * start from the model it is given (or the chain is out of order); MPK_ERR_UNSUPPORTED_FEATURE: a
 * reverse that needs tensor bytes a one-way patch does not hold (the message names the tensor);
 * MPK_ERR_CHECKSUM: the base or a patch is damaged. On any error nothing appears at `out`. */
MPK_API mpk_status mpk_patch(const char *base, const char *const *patches, size_t count, const char *out,
                             const mpk_patch_options *opts);

/* ---- quantized storage (FORMAT.md 7.11) ----------------------------------------------------- */

/* How a tensor's stored values map to real values. Values are part of the format and the ABI. */
typedef enum mpk_quant_scheme {
  MPK_QUANT_NONE = 0,          /* the stored values are the values */
  MPK_QUANT_INT8_CHANNEL = 1,  /* i8, symmetric: value = q * scale[i], i the index along `axis` */
  MPK_QUANT_INT8_GROUP = 2,    /* i8, symmetric: one scale per `group` consecutive elements of the last
                                  dimension; scales shaped as the tensor with the last dim ceil(n/group) */
  MPK_QUANT_CAST = 3,          /* f16/bf16 rounded to nearest even from source_dtype (informative) */
  MPK_QUANT_BLOCK = 4,          /* a ggml block type (q4_0 ... q8_k): scales inline in each block of
                                  `group` elements (reported by mpk_model_tensor_quant, never stored) */
  MPK_QUANT_SCHEME_MAX_ENUM_ = 0x7fffffff /* not a value; see ENUMS above */
} mpk_quant_scheme;

/* Filled by mpk_model_tensor_quant; see VERSIONED STRUCTS (passed OUT). */
typedef struct mpk_quant_info {
  uint32_t struct_size;     /* set by the caller: sizeof(mpk_quant_info) */
  uint32_t scheme;          /* mpk_quant_scheme */
  uint32_t axis;            /* INT8_CHANNEL */
  uint32_t group;           /* INT8_GROUP: elements per scale; BLOCK: elements per block */
  size_t scale_index;       /* INT8_*: index of the f32 scale tensor; SIZE_MAX otherwise */
  mpk_dtype source_dtype;   /* what it was quantized from; MPK_DTYPE_INVALID when not recorded */
  uint32_t reserved;
} mpk_quant_info;

#define MPK_QUANT_INFO_INIT { sizeof(mpk_quant_info), 0, 0, 0, SIZE_MAX, MPK_DTYPE_INVALID, 0 }

/* How tensor `index` is quantized (MPK_QUANT_NONE for plain tensors). Fills *out up to
 * out->struct_size (set it first: MPK_QUANT_INFO_INIT). */
MPK_API mpk_status mpk_model_tensor_quant(const mpk_model *model, size_t index, mpk_quant_info *out);

/* Targets of mpk_quantize. */
typedef enum mpk_quant_target {
  MPK_QUANTIZE_INT8 = 1,       /* int8 per output channel (one scale per index of dimension 0) */
  MPK_QUANTIZE_INT8_G32 = 2,   /* int8, one scale per 32 elements along the last dimension */
  MPK_QUANTIZE_INT8_G64 = 3,
  MPK_QUANTIZE_INT8_G128 = 4,
  MPK_QUANTIZE_F16 = 5,        /* round to nearest even */
  MPK_QUANTIZE_BF16 = 6,
  MPK_QUANT_TARGET_MAX_ENUM_ = 0x7fffffff /* not a value; see ENUMS above */
} mpk_quant_target;

/* One tensor of a quantize report (lent to the callback for the duration of the call). */
typedef struct mpk_quantize_tensor {
  uint32_t struct_size;     /* sizeof(mpk_quantize_tensor) as this library filled it */
  uint32_t reserved;
  const char *name;         /* NUL-terminated */
  mpk_dtype from, to;       /* dtypes before and after */
  uint64_t numel;
  double max_abs_error;     /* max |x - dequantized(x)| over the tensor */
  double rmse;              /* sqrt(mean((x - dequantized(x))^2)) */
  double snr_db;            /* 10 log10(sum x^2 / sum (x - dequantized(x))^2); +inf when exact */
} mpk_quantize_tensor;

#define MPK_QUANTIZE_NO_FSYNC (1u << 0)       /* do not sync the output before/after the rename */
#define MPK_QUANTIZE_EMBEDDINGS (1u << 1)     /* also quantize embeddings (skipped by default) */

typedef struct mpk_quantize_options {
  uint32_t struct_size;     /* sizeof(mpk_quantize_options) */
  uint32_t target;          /* mpk_quant_target (required) */
  uint32_t flags;           /* MPK_QUANTIZE_* */
  uint32_t threads;         /* 0 = one per core */
  const char *include;      /* ECMAScript regex: quantize only (and all) float tensors whose name it
                               matches anywhere (NULL: every float tensor of rank >= 2 but embeddings) */
  const char *exclude;      /* ECMAScript regex: never quantize tensors whose name it matches (NULL: none) */
  /* Called once per quantized tensor, in file order, from the calling thread. May be NULL. */
  void (*on_tensor)(void *user, const mpk_quantize_tensor *report);
  void *user;
} mpk_quantize_options;

#define MPK_QUANTIZE_OPTIONS_INIT { sizeof(mpk_quantize_options), 0, 0, 0, NULL, NULL, NULL, NULL }
/* As mpk_open_options_init: writes exactly struct_size bytes of defaults. */
MPK_API mpk_status mpk_quantize_options_init(mpk_quantize_options *opts, size_t struct_size);

/* Writes the model at `in` with its selected tensors quantized to opts->target, atomically at `out`
 * (nothing appears there on error). int8 tensors get an f32 scale tensor named "<name>.scale" (or
 * "<name>.scale.N" if taken). The output's metadata records the report and provenance (keys
 * "quantize.*", FORMAT.md 7.11). MPK_ERR_BAD_VALUE: a selected tensor holds NaN or inf, or a value
 * out of the target's range (the message names the tensor and the element). */
MPK_API mpk_status mpk_quantize(const char *in, const char *out, const mpk_quantize_options *opts);

/* ---- signatures (FORMAT.md 7.13, docs/SECURITY.md) -------------------------------------------- */

/* A new Ed25519 key pair: `path` (the secret key, mode 0600) and `path`.pub (the public key), both
 * text files, written atomically. MPK_ERR_INVALID_ARGUMENT if either exists, unless flags has
 * MPK_KEYGEN_OVERWRITE. */
#define MPK_KEYGEN_OVERWRITE 1u
MPK_API mpk_status mpk_keygen(const char *path, uint32_t flags);
/* Reads a public key file (mpk_keygen's `path`.pub) into key[32]. MPK_ERR_BAD_FORMAT if it is not one. */
MPK_API mpk_status mpk_public_key_load(const char *path, uint8_t key[32]);
/* Signs the model at `path` with the secret key file `secret_key_path`, after checking the model
 * completely (a damaged file is not signed). out NULL: in place (the trailer is appended; an
 * existing signature is replaced); else the signed copy is written to `out` atomically.
 * flags: MPK_SIGN_NO_FSYNC. */
#define MPK_SIGN_NO_FSYNC 1u
MPK_API mpk_status mpk_sign(const char *path, const char *secret_key_path, const char *out, uint32_t flags);
/* Opens the model requiring a signature by one of `count` public keys (32 bytes each, back to back)
 * and checks it at `verify` level (MPK_VERIFY_HEADER: preamble and header; MPK_VERIFY_FULL: every
 * byte and every tensor), with `threads` hashing threads (0 = 1). MPK_OK or MPK_ERR_SIGNATURE (the
 * message says why: unsigned, an untrusted key, no match) or the model's own errors. */
MPK_API mpk_status mpk_verify_signature(const char *path, const uint8_t *trusted_keys, size_t count,
                                        uint32_t verify, uint32_t threads);

#ifdef __cplusplus
}
#endif

#endif /* MODELPACK_H */
