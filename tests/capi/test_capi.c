/*
 * test_capi.c - exercises the whole C ABI of libmodelpack from plain C.
 *
 * Usage: test_capi SCRATCH_DIR [SECTION]
 *   Creates a private temporary directory inside SCRATCH_DIR, writes models there with the writer
 *   API, reads them back with both access modes, and removes the directory at the end. SECTION
 *   runs one group only (see main); by default all groups run.
 *
 * Every failed check prints file:line, the expression, what was expected and the library's last
 * error message; the exit status is non-zero if any check failed. REQUIRE stops the program when
 * continuing would only produce noise (e.g. a model that could not be opened).
 */
#define _POSIX_C_SOURCE 200809L

#include <modelpack/modelpack.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a tiny check framework ----------------------------------------------------------------- */

static int g_checks;
static int g_failures;

#define CHECK(cond, ...)                                                      \
  do {                                                                        \
    ++g_checks;                                                               \
    if (!(cond)) {                                                            \
      ++g_failures;                                                           \
      fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                           \
      fprintf(stderr, "\n");                                                  \
    }                                                                         \
  } while (0)

#define REQUIRE(cond, ...)                                                      \
  do {                                                                          \
    ++g_checks;                                                                 \
    if (!(cond)) {                                                              \
      fprintf(stderr, "%s:%d: REQUIRE(%s) failed: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                             \
      fprintf(stderr, "\n(last error: %s)\nstopping.\n", mpk_last_error_message()); \
      exit(2);                                                                  \
    }                                                                           \
  } while (0)

/* Checks that `expr` returns the status `want`; on mismatch prints both names and the message. */
#define CHECK_STATUS(expr, want)                                                           \
  do {                                                                                     \
    mpk_status got_ = (expr);                                                              \
    mpk_status want_ = (want);                                                             \
    ++g_checks;                                                                            \
    if (got_ != want_) {                                                                   \
      ++g_failures;                                                                        \
      fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: \"%s\")\n", __FILE__, \
              __LINE__, #expr, mpk_status_name(got_), mpk_status_name(want_),              \
              mpk_last_error_message());                                                   \
    }                                                                                      \
  } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, MPK_OK)

#define REQUIRE_OK(expr)                                                                    \
  do {                                                                                      \
    mpk_status got_ = (expr);                                                               \
    REQUIRE(got_ == MPK_OK, "%s returned %s", #expr, mpk_status_name(got_));                \
  } while (0)

/* The last error message contains `needle`. */
#define CHECK_MESSAGE(needle)                                                              \
  CHECK(strstr(mpk_last_error_message(), (needle)) != NULL,                                \
        "last error message \"%s\" does not contain \"%s\"", mpk_last_error_message(), (needle))

/* ---- scratch files -------------------------------------------------------------------------- */

static char g_dir[4096];

static const char *path_in(char *buf, size_t size, const char *name) {
  int n = snprintf(buf, size, "%s/%s", g_dir, name);
  REQUIRE(n > 0 && (size_t)n < size, "path too long");
  return buf;
}

/* Number of entries in `dir` other than . and .. (dotfiles included: temporary files are). */
static int count_entries(const char *dir, char *first, size_t first_size) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;
  REQUIRE(d != NULL, "opendir(%s): %s", dir, strerror(errno));
  if (first && first_size) first[0] = '\0';
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (n == 0 && first && first_size) snprintf(first, first_size, "%s", e->d_name);
    ++n;
  }
  closedir(d);
  return n;
}

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static long file_size_of(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static unsigned char *read_whole(const char *path, long *size) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf;
  long n;
  REQUIRE(f != NULL, "fopen(%s): %s", path, strerror(errno));
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = (unsigned char *)malloc(n > 0 ? (size_t)n : 1);
  REQUIRE(buf != NULL, "out of memory");
  REQUIRE(fread(buf, 1, (size_t)n, f) == (size_t)n, "short read of %s", path);
  fclose(f);
  *size = n;
  return buf;
}

static void write_whole(const char *path, const unsigned char *data, long size) {
  FILE *f = fopen(path, "wb");
  REQUIRE(f != NULL, "fopen(%s): %s", path, strerror(errno));
  REQUIRE(fwrite(data, 1, (size_t)size, f) == (size_t)size, "short write of %s", path);
  REQUIRE(fclose(f) == 0, "fclose(%s)", path);
}

static void remove_dir_contents(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  char p[8192];
  if (!d) return;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    unlink(p);
  }
  closedir(d);
}

/* ---- the model every reading test uses ------------------------------------------------------ */

typedef struct expected_tensor {
  char name[32];
  mpk_dtype dtype;
  uint32_t ndim;
  uint64_t shape[4];
  const char *component; /* NULL = "weights" */
  unsigned char *data;
  uint64_t nbytes;
  int streamed;
} expected_tensor;

#define MAX_TENSORS 32
static expected_tensor g_tensors[MAX_TENSORS];
static size_t g_ntensors;

static const char *const kDTypeNames[] = {NULL,  "f64", "f32", "f16", "bf16", "i64", "i32",
                                          "i16", "i8",  "u64", "u32", "u16",  "u8",  "bool"};
static const size_t kDTypeSizes[] = {0, 8, 4, 2, 2, 8, 4, 2, 1, 8, 4, 2, 1, 1};

static expected_tensor *add_expected(const char *name, mpk_dtype dtype, uint32_t ndim,
                                     const uint64_t *shape, const char *component) {
  expected_tensor *t;
  uint64_t numel = 1, i;
  uint32_t d;
  REQUIRE(g_ntensors < MAX_TENSORS, "too many tensors");
  t = &g_tensors[g_ntensors++];
  memset(t, 0, sizeof *t);
  snprintf(t->name, sizeof t->name, "%s", name);
  t->dtype = dtype;
  t->ndim = ndim;
  for (d = 0; d < ndim; ++d) {
    t->shape[d] = shape[d];
    numel *= shape[d];
  }
  t->component = component;
  t->nbytes = numel * kDTypeSizes[dtype];
  t->data = (unsigned char *)malloc(t->nbytes ? (size_t)t->nbytes : 1);
  REQUIRE(t->data != NULL, "out of memory");
  for (i = 0; i < t->nbytes; ++i)
    t->data[i] = dtype == MPK_DTYPE_BOOL ? (unsigned char)(i & 1)
                                         : (unsigned char)(i * 7u + (unsigned)dtype * 13u + 1u);
  return t;
}

static void free_expected(void) {
  size_t i;
  for (i = 0; i < g_ntensors; ++i) free(g_tensors[i].data);
  g_ntensors = 0;
}

/* ---- versions, status names, dtypes, options ------------------------------------------------ */

static void test_versions(void) {
  char expect[32];
  unsigned major = 999, minor = 999;
  CHECK(mpk_version_number() == MPK_VERSION_NUMBER, "library %u, header %u", mpk_version_number(),
        (unsigned)MPK_VERSION_NUMBER);
  CHECK(MPK_VERSION_NUMBER ==
            MPK_VERSION_MAJOR * 10000 + MPK_VERSION_MINOR * 100 + MPK_VERSION_PATCH,
        "MPK_VERSION_NUMBER inconsistent");
  snprintf(expect, sizeof expect, "%d.%d.%d", MPK_VERSION_MAJOR, MPK_VERSION_MINOR,
           MPK_VERSION_PATCH);
  CHECK(strcmp(MPK_VERSION_STRING, expect) == 0, "MPK_VERSION_STRING %s vs %s",
        MPK_VERSION_STRING, expect);
  CHECK(mpk_version_string() != NULL && strcmp(mpk_version_string(), expect) == 0,
        "mpk_version_string() = %s, expected %s", mpk_version_string(), expect);
  CHECK(mpk_abi_version() == MPK_ABI_VERSION, "abi %u", mpk_abi_version());
  mpk_format_version(&major, &minor);
  CHECK(major == MPK_FORMAT_MAJOR && minor == MPK_FORMAT_MINOR, "format %u.%u", major, minor);
  /* NULL outputs are allowed. */
  mpk_format_version(NULL, &minor);
  mpk_format_version(&major, NULL);
  mpk_format_version(NULL, NULL);
  CHECK(major == MPK_FORMAT_MAJOR && minor == MPK_FORMAT_MINOR, "format %u.%u", major, minor);
}

static void test_status_names(void) {
  static const char *const names[] = {
      "MPK_OK",
      "MPK_ERR_INVALID_ARGUMENT",
      "MPK_ERR_IO",
      "MPK_ERR_NOT_FOUND",
      "MPK_ERR_BAD_MAGIC",
      "MPK_ERR_UNSUPPORTED_VERSION",
      "MPK_ERR_UNSUPPORTED_FEATURE",
      "MPK_ERR_TRUNCATED",
      "MPK_ERR_CHECKSUM",
      "MPK_ERR_CORRUPT_HEADER",
      "MPK_ERR_OUT_OF_BOUNDS",
      "MPK_ERR_OVERLAP",
      "MPK_ERR_MISALIGNED",
      "MPK_ERR_OVERFLOW",
      "MPK_ERR_DUPLICATE",
      "MPK_ERR_UNSORTED",
      "MPK_ERR_BAD_SHAPE",
      "MPK_ERR_BAD_DTYPE",
      "MPK_ERR_LIMIT",
      "MPK_ERR_TYPE_MISMATCH",
      "MPK_ERR_STATE",
      "MPK_ERR_NO_MEMORY",
      "MPK_ERR_INTERNAL",
      "MPK_ERR_SIZE_MISMATCH",
      "MPK_ERR_BAD_FORMAT",
      "MPK_ERR_BAD_NAME",
      "MPK_ERR_CORRUPT_DATA",
      "MPK_ERR_WRONG_BASE",
      "MPK_ERR_BAD_VALUE",
      "MPK_ERR_SIGNATURE",
  };
  /* The enum values are ABI: pin them. */
  static const mpk_status values[] = {
      MPK_OK, MPK_ERR_INVALID_ARGUMENT, MPK_ERR_IO, MPK_ERR_NOT_FOUND, MPK_ERR_BAD_MAGIC,
      MPK_ERR_UNSUPPORTED_VERSION, MPK_ERR_UNSUPPORTED_FEATURE, MPK_ERR_TRUNCATED,
      MPK_ERR_CHECKSUM, MPK_ERR_CORRUPT_HEADER, MPK_ERR_OUT_OF_BOUNDS, MPK_ERR_OVERLAP,
      MPK_ERR_MISALIGNED, MPK_ERR_OVERFLOW, MPK_ERR_DUPLICATE, MPK_ERR_UNSORTED,
      MPK_ERR_BAD_SHAPE, MPK_ERR_BAD_DTYPE, MPK_ERR_LIMIT, MPK_ERR_TYPE_MISMATCH, MPK_ERR_STATE,
      MPK_ERR_NO_MEMORY, MPK_ERR_INTERNAL, MPK_ERR_SIZE_MISMATCH, MPK_ERR_BAD_FORMAT,
      MPK_ERR_BAD_NAME, MPK_ERR_CORRUPT_DATA, MPK_ERR_WRONG_BASE, MPK_ERR_BAD_VALUE, MPK_ERR_SIGNATURE};
  size_t i, j;
  const char *unknown;
  for (i = 0; i < sizeof names / sizeof names[0]; ++i) {
    const char *got = mpk_status_name((mpk_status)i);
    CHECK((size_t)values[i] == i, "%s has value %d, expected %u", names[i], (int)values[i],
          (unsigned)i);
    CHECK(got != NULL && strcmp(got, names[i]) == 0, "mpk_status_name(%u) = %s, expected %s",
          (unsigned)i, got ? got : "(null)", names[i]);
  }
  unknown = mpk_status_name((mpk_status)999);
  CHECK(unknown != NULL && unknown[0] != '\0', "mpk_status_name(999) must not be NULL/empty");
  for (j = 0; unknown && j < sizeof names / sizeof names[0]; ++j)
    CHECK(strcmp(unknown, names[j]) != 0, "mpk_status_name(999) = %s, a real status name",
          unknown);
  unknown = mpk_status_name((mpk_status)-1);
  CHECK(unknown != NULL, "mpk_status_name(-1) must not be NULL");
  /* Any int may arrive from C (a status of a newer libmodelpack, garbage): inside the enum's range
   * (30..31) or outside it (32 and up, negative; UB if loaded as the enum), all get the same name,
   * and none touches the last-error message. */
  {
    static const long out_of_range[] = {30, 31, 32, 255, 256, 999, 65536, 0x7fffffffL, -1, -27};
    mpk_clear_error();
    for (j = 0; j < sizeof out_of_range / sizeof out_of_range[0]; ++j) {
      unknown = mpk_status_name((mpk_status)out_of_range[j]);
      CHECK(unknown != NULL && strcmp(unknown, "MPK_ERR_UNKNOWN") == 0,
            "mpk_status_name(%ld) = %s, expected MPK_ERR_UNKNOWN", out_of_range[j],
            unknown ? unknown : "(null)");
    }
    CHECK(strcmp(mpk_last_error_message(), "") == 0, "mpk_status_name set a message: \"%s\"",
          mpk_last_error_message());
  }
}

static void test_meta_type_names(void) {
  static const char *const want[] = {"unknown", "string", "int64", "float64", "bool", "bytes",
                                     "string[]", "int64[]", "float64[]", "bool[]", "bytes[]",
                                     "typed", "typed[]", "list"};
  int i;
  for (i = 0; i <= 13; i++)
    CHECK(strcmp(mpk_meta_type_name((mpk_meta_type)i), want[i]) == 0, "type %d is named %s", i,
          mpk_meta_type_name((mpk_meta_type)i));
  CHECK(strcmp(mpk_meta_type_name((mpk_meta_type)14), "unknown") == 0, "14");
  CHECK(strcmp(mpk_meta_type_name((mpk_meta_type)-1), "unknown") == 0, "-1");
  CHECK(strcmp(mpk_meta_type_name((mpk_meta_type)100000), "unknown") == 0, "100000");
}

static void test_dtypes(void) {
  int d;
  mpk_dtype out;
  CHECK(MPK_DTYPE_INVALID == 0 && MPK_DTYPE_F64 == 1 && MPK_DTYPE_F32 == 2 && MPK_DTYPE_F16 == 3 &&
            MPK_DTYPE_BF16 == 4 && MPK_DTYPE_I64 == 5 && MPK_DTYPE_I32 == 6 &&
            MPK_DTYPE_I16 == 7 && MPK_DTYPE_I8 == 8 && MPK_DTYPE_U64 == 9 && MPK_DTYPE_U32 == 10 &&
            MPK_DTYPE_U16 == 11 && MPK_DTYPE_U8 == 12 && MPK_DTYPE_BOOL == 13,
        "mpk_dtype values changed");
  for (d = 1; d <= 13; ++d) {
    const char *name = mpk_dtype_name((mpk_dtype)d);
    CHECK(name != NULL && strcmp(name, kDTypeNames[d]) == 0, "mpk_dtype_name(%d) = %s, expected %s",
          d, name ? name : "(null)", kDTypeNames[d]);
    CHECK(mpk_dtype_size((mpk_dtype)d) == kDTypeSizes[d], "mpk_dtype_size(%s) = %u", kDTypeNames[d],
          (unsigned)mpk_dtype_size((mpk_dtype)d));
    out = MPK_DTYPE_INVALID;
    CHECK_OK(mpk_dtype_from_name(&out, kDTypeNames[d]));
    CHECK(out == (mpk_dtype)d, "mpk_dtype_from_name(%s) = %d", kDTypeNames[d], (int)out);
  }
  CHECK(mpk_dtype_name(MPK_DTYPE_INVALID) == NULL, "name of MPK_DTYPE_INVALID should be NULL");
  CHECK(mpk_dtype_name((mpk_dtype)21) == NULL, "name of 21 should be NULL");
  CHECK(mpk_dtype_name((mpk_dtype)255) == NULL, "name of 255 should be NULL");
  CHECK(mpk_dtype_size(MPK_DTYPE_INVALID) == 0, "size of MPK_DTYPE_INVALID should be 0");
  CHECK(mpk_dtype_size((mpk_dtype)21) == 0, "size of 21 should be 0");
  /* Format 1.1 dtypes: values frozen; blocks as docs/FORMAT.md 7.3 says. */
  CHECK(MPK_DTYPE_F8_E4M3 == 14 && MPK_DTYPE_C64 == 20 && MPK_DTYPE_Q4_0 == 32 && MPK_DTYPE_Q8_0 == 36 &&
            MPK_DTYPE_Q8_K == 43,
        "format 1.1 mpk_dtype values changed");
  CHECK(strcmp(mpk_dtype_name(MPK_DTYPE_Q4_K), "q4_k") == 0, "q4_k name");
  CHECK(mpk_dtype_size(MPK_DTYPE_Q8_0) == 0 && mpk_dtype_size(MPK_DTYPE_F4_E2M1) == 0 &&
            mpk_dtype_size(MPK_DTYPE_F8_E5M2) == 1 && mpk_dtype_size(MPK_DTYPE_C64) == 8,
        "sizes of 1.1 dtypes");
  CHECK(mpk_dtype_block_elems(MPK_DTYPE_Q8_0) == 32 && mpk_dtype_block_bytes(MPK_DTYPE_Q8_0) == 34,
        "q8_0 block");
  CHECK(mpk_dtype_block_elems(MPK_DTYPE_Q6_K) == 256 && mpk_dtype_block_bytes(MPK_DTYPE_Q6_K) == 210,
        "q6_k block");
  CHECK(mpk_dtype_block_elems(MPK_DTYPE_F6_E3M2) == 4 && mpk_dtype_block_bytes(MPK_DTYPE_F6_E3M2) == 3,
        "f6 block");
  CHECK(mpk_dtype_block_elems(MPK_DTYPE_F32) == 1 && mpk_dtype_block_bytes(MPK_DTYPE_F32) == 4, "f32 block");
  CHECK(mpk_dtype_block_elems((mpk_dtype)21) == 0 && mpk_dtype_block_bytes((mpk_dtype)-1) == 0, "unknown block");
  {
    uint64_t shape[2] = {3, 64}, nb = 0;
    CHECK_OK(mpk_dtype_nbytes(MPK_DTYPE_Q4_0, shape, 2, &nb));
    CHECK(nb == 3 * 2 * 18, "q4_0 [3,64] = %llu bytes", (unsigned long long)nb);
    shape[1] = 33;
    CHECK_STATUS(mpk_dtype_nbytes(MPK_DTYPE_Q4_0, shape, 2, &nb), MPK_ERR_BAD_SHAPE);
    CHECK_MESSAGE("multiple");
    CHECK_STATUS(mpk_dtype_nbytes(MPK_DTYPE_F4_E2M1, shape, 2, &nb), MPK_ERR_BAD_SHAPE); /* 99 elements */
    shape[0] = 2;
    CHECK_OK(mpk_dtype_nbytes(MPK_DTYPE_F4_E2M1, shape, 2, &nb));
    CHECK(nb == 33, "f4 [2,33] = %llu bytes", (unsigned long long)nb);
    CHECK_OK(mpk_dtype_nbytes(MPK_DTYPE_F64, NULL, 0, &nb));
    CHECK(nb == 8, "f64 scalar = %llu bytes", (unsigned long long)nb);
    CHECK_STATUS(mpk_dtype_nbytes(MPK_DTYPE_Q8_0, NULL, 0, &nb), MPK_ERR_BAD_SHAPE);
    CHECK_STATUS(mpk_dtype_nbytes((mpk_dtype)21, shape, 2, &nb), MPK_ERR_BAD_DTYPE);
    CHECK_STATUS(mpk_dtype_nbytes(MPK_DTYPE_F32, NULL, 1, &nb), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_dtype_nbytes(MPK_DTYPE_F32, shape, 2, NULL), MPK_ERR_INVALID_ARGUMENT);
    shape[0] = UINT64_MAX / 2;
    shape[1] = 4;
    CHECK_STATUS(mpk_dtype_nbytes(MPK_DTYPE_F32, shape, 2, &nb), MPK_ERR_OVERFLOW);
  }
  /* Unassigned values (21..31, 44..): read as an int, never loaded as the enum. */
  {
    static const long out_of_range[] = {21, 31, 44, 99, 255, 256, 65536, 0x7fffffffL, -1};
    size_t j;
    for (j = 0; j < sizeof out_of_range / sizeof out_of_range[0]; ++j) {
      CHECK(mpk_dtype_name((mpk_dtype)out_of_range[j]) == NULL, "name of %ld should be NULL",
            out_of_range[j]);
      CHECK(mpk_dtype_size((mpk_dtype)out_of_range[j]) == 0, "size of %ld should be 0",
            out_of_range[j]);
    }
  }
  out = MPK_DTYPE_U16;
  mpk_clear_error();
  CHECK_STATUS(mpk_dtype_from_name(&out, "float32"), MPK_ERR_BAD_DTYPE);
  /* The message names the rejected name and says what would have been accepted. */
  CHECK_MESSAGE("mpk_dtype_from_name");
  CHECK_MESSAGE("'float32'");
  CHECK_MESSAGE("f32");
  CHECK_MESSAGE("bf16");
  CHECK_STATUS(mpk_dtype_from_name(&out, ""), MPK_ERR_BAD_DTYPE);
  CHECK_STATUS(mpk_dtype_from_name(&out, "F32"), MPK_ERR_BAD_DTYPE);
  CHECK(out == MPK_DTYPE_U16, "out changed on failure");
  CHECK_MESSAGE("'F32'");
  CHECK_STATUS(mpk_dtype_from_name(&out, NULL), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("name is NULL");
  CHECK_STATUS(mpk_dtype_from_name(NULL, "f32"), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("out is NULL");
  CHECK(out == MPK_DTYPE_U16, "out changed on failure");
  mpk_clear_error();
}

/* Bytes [from, to) of `p` all equal `v`. */
static int all_bytes(const void *p, size_t from, size_t to, unsigned char v) {
  const unsigned char *b = (const unsigned char *)p;
  size_t i;
  for (i = from; i < to; ++i)
    if (b[i] != v) return 0;
  return 1;
}

/* mpk_*_options_init(opts, struct_size) writes exactly struct_size bytes: defaults for the fields
 * this library knows, zeros beyond them (a newer caller's fields), never past struct_size. */
static void test_options_init(void) {
  mpk_open_options a = MPK_OPEN_OPTIONS_INIT, b;
  mpk_writer_options wa = MPK_WRITER_OPTIONS_INIT, wb;
  mpk_tensor_info ti = MPK_TENSOR_INFO_INIT;
  /* A caller's struct followed by newer fields (when struct_size covers them) and by bytes it does
   * not own (the canary, never covered). */
  struct {
    mpk_open_options o;
    uint64_t newer[2];
    unsigned char canary[16];
  } ob;
  struct {
    mpk_writer_options o;
    uint32_t newer[3];
    unsigned char canary[16];
  } wbig;
  static union {
    uint64_t align;
    unsigned char bytes[4096 + 16];
  } huge;
  const size_t too_small[] = {0, 1, 4, offsetof(mpk_writer_options, codec) - 1,
                              offsetof(mpk_open_options, cache_bytes) - 1};
  size_t i, covered;

  /* The first released sizes: struct_size checks compare against them, so they must not move. */
  /* Fields appended in 0.2 start exactly there; the current sizes are pinned too. */
  CHECK(offsetof(mpk_open_options, cache_bytes) == 24, "mpk_open_options released as 24 bytes");
  CHECK(offsetof(mpk_open_options, trusted_keys) == 48, "mpk_open_options 0.2 fields end at 48");
  if (sizeof(void *) == 8)
    CHECK(sizeof(mpk_open_options) == 64, "sizeof(mpk_open_options) = %u", (unsigned)sizeof(mpk_open_options));
  CHECK(offsetof(mpk_writer_options, codec) == 12, "mpk_writer_options released as 12 bytes");
  CHECK(sizeof(mpk_writer_options) == 40, "sizeof(mpk_writer_options) = %u", (unsigned)sizeof(mpk_writer_options));
  if (sizeof(void *) == 8) {
    CHECK(offsetof(mpk_tensor_info, stored_bytes) == 72, "mpk_tensor_info released as 72 bytes on LP64");
    CHECK(sizeof(mpk_tensor_info) == 96, "sizeof(mpk_tensor_info) = %u", (unsigned)sizeof(mpk_tensor_info));
  }
  CHECK(ti.struct_size == sizeof(mpk_tensor_info), "MPK_TENSOR_INFO_INIT struct_size %u",
        ti.struct_size);

  /* Same size as ours: the macro's values, and not one byte more. */
  memset(&b, 0xA5, sizeof b);
  CHECK_OK(mpk_open_options_init(&b, sizeof b));
  CHECK(memcmp(&a, &b, sizeof a) == 0, "mpk_open_options_init differs from MPK_OPEN_OPTIONS_INIT");
  CHECK(b.struct_size == sizeof(mpk_open_options), "struct_size %u", b.struct_size);
  CHECK(b.access == MPK_ACCESS_MAP && b.verify == MPK_VERIFY_HEADER && b.threads == 0 &&
            b.max_header_bytes == 0,
        "open defaults: access %u verify %u threads %u max_header %llu", b.access, b.verify,
        b.threads, (unsigned long long)b.max_header_bytes);
  memset(&ob, 0xA5, sizeof ob);
  CHECK_OK(mpk_open_options_init(&ob.o, sizeof ob.o));
  CHECK(memcmp(&ob.o, &a, sizeof a) == 0, "defaults differ");
  CHECK(all_bytes(&ob, sizeof ob.o, sizeof ob, 0xA5),
        "mpk_open_options_init wrote past struct_size %u", (unsigned)sizeof ob.o);

  memset(&wb, 0xA5, sizeof wb);
  CHECK_OK(mpk_writer_options_init(&wb, sizeof wb));
  CHECK(memcmp(&wa, &wb, sizeof wa) == 0,
        "mpk_writer_options_init differs from MPK_WRITER_OPTIONS_INIT");
  CHECK(wb.struct_size == sizeof(mpk_writer_options) && wb.alignment == 0 && wb.flags == 0,
        "writer defaults: size %u alignment %u flags %u", wb.struct_size, wb.alignment, wb.flags);
  memset(&wbig, 0xA5, sizeof wbig);
  CHECK_OK(mpk_writer_options_init(&wbig.o, sizeof wbig.o));
  CHECK(memcmp(&wbig.o, &wa, sizeof wa) == 0, "defaults differ");
  CHECK(all_bytes(&wbig, sizeof wbig.o, sizeof wbig, 0xA5),
        "mpk_writer_options_init wrote past struct_size %u", (unsigned)sizeof wbig.o);

  /* A caller built against a newer, larger header: its extra fields are zeroed, up to its
   * struct_size and not beyond. */
  memset(&ob, 0xA5, sizeof ob);
  covered = (size_t)(ob.canary - (unsigned char *)&ob);
  CHECK_OK(mpk_open_options_init(&ob.o, covered));
  CHECK(ob.o.struct_size == covered, "struct_size %u, expected %u", ob.o.struct_size,
        (unsigned)covered);
  CHECK(ob.o.access == a.access && ob.o.verify == a.verify && ob.o.threads == a.threads &&
            ob.o.max_header_bytes == a.max_header_bytes,
        "known fields of a larger struct are not the defaults");
  CHECK(ob.newer[0] == 0 && ob.newer[1] == 0, "newer fields not zeroed");
  CHECK(all_bytes(&ob, covered, sizeof ob, 0xA5), "wrote past struct_size %u", (unsigned)covered);
  memset(&wbig, 0xA5, sizeof wbig);
  covered = sizeof wbig.o + sizeof wbig.newer;
  CHECK_OK(mpk_writer_options_init(&wbig.o, covered));
  CHECK(wbig.o.struct_size == covered && wbig.o.alignment == 0 && wbig.o.flags == 0,
        "writer: size %u alignment %u flags %u", wbig.o.struct_size, wbig.o.alignment,
        wbig.o.flags);
  CHECK(wbig.newer[0] == 0 && wbig.newer[1] == 0 && wbig.newer[2] == 0, "newer fields not zeroed");
  CHECK(all_bytes(&wbig, covered, sizeof wbig, 0xA5), "wrote past struct_size %u",
        (unsigned)covered);
  /* The largest accepted size, 4096. */
  memset(huge.bytes, 0xA5, sizeof huge.bytes);
  CHECK_OK(mpk_open_options_init((mpk_open_options *)huge.bytes, 4096));
  CHECK(memcmp(huge.bytes + 4, (const unsigned char *)&a + 4, sizeof a - 4) == 0, "defaults");
  CHECK(all_bytes(huge.bytes, sizeof a, 4096, 0), "bytes up to 4096 not zeroed");
  CHECK(all_bytes(huge.bytes, 4096, sizeof huge.bytes, 0xA5), "wrote past 4096");

  /* Refused, nothing written: smaller than the first release, over 4096, NULL. */
  for (i = 0; i < sizeof too_small / sizeof too_small[0]; ++i) {
    memset(&ob, 0xA5, sizeof ob);
    mpk_clear_error();
    CHECK_STATUS(mpk_open_options_init(&ob.o, too_small[i]), MPK_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("struct_size");
    CHECK(all_bytes(&ob, 0, sizeof ob, 0xA5), "open options written with struct_size %u",
          (unsigned)too_small[i]);
    if (too_small[i] >= offsetof(mpk_writer_options, codec)) continue;
    memset(&wbig, 0xA5, sizeof wbig);
    CHECK_STATUS(mpk_writer_options_init(&wbig.o, too_small[i]), MPK_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("mpk_writer_options_init");
    CHECK(all_bytes(&wbig, 0, sizeof wbig, 0xA5), "writer options written with struct_size %u",
          (unsigned)too_small[i]);
  }
  memset(huge.bytes, 0xA5, sizeof huge.bytes);
  CHECK_STATUS(mpk_open_options_init((mpk_open_options *)huge.bytes, 4097),
               MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_writer_options_init((mpk_writer_options *)huge.bytes, 4097),
               MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_open_options_init((mpk_open_options *)huge.bytes, (size_t)-1),
               MPK_ERR_INVALID_ARGUMENT);
  CHECK(all_bytes(huge.bytes, 0, sizeof huge.bytes, 0xA5), "written with struct_size > 4096");
  mpk_clear_error();
  CHECK_STATUS(mpk_open_options_init(NULL, sizeof(mpk_open_options)), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("mpk_open_options_init: opts is NULL");
  CHECK_STATUS(mpk_writer_options_init(NULL, sizeof(mpk_writer_options)),
               MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("mpk_writer_options_init: opts is NULL");
  /* A success does not clear the message of the earlier failure. */
  CHECK_OK(mpk_open_options_init(&b, sizeof b));
  CHECK_MESSAGE("mpk_writer_options_init: opts is NULL");
  mpk_clear_error();
}

/* ---- last error --------------------------------------------------------------------------- */

static void *other_thread(void *arg) {
  mpk_model *m = (mpk_model *)0x1;
  /* A failure on this thread... */
  mpk_status s = mpk_model_open(&m, NULL, NULL);
  (void)arg;
  return (void *)(intptr_t)(s == MPK_ERR_INVALID_ARGUMENT &&
                            strstr(mpk_last_error_message(), "path") != NULL);
}

static void test_last_error(void) {
  mpk_model *m = (mpk_model *)0x1;
  char missing[4096];
  pthread_t th;
  void *ok = NULL;

  mpk_clear_error();
  REQUIRE(mpk_last_error_message() != NULL, "mpk_last_error_message() returned NULL");
  CHECK(strcmp(mpk_last_error_message(), "") == 0, "after clear: \"%s\"",
        mpk_last_error_message());

  CHECK_STATUS(mpk_model_open(&m, path_in(missing, sizeof missing, "no-such-file.mpk"), NULL),
               MPK_ERR_IO);
  CHECK(m == (mpk_model *)0x1, "out changed on failure");
  CHECK_MESSAGE("no-such-file.mpk");

  /* Policy: a successful call leaves the message of the last failure in place (libgit2). */
  CHECK(mpk_version_number() == MPK_VERSION_NUMBER, "version");
  CHECK_OK(mpk_dtype_from_name(&(mpk_dtype){MPK_DTYPE_INVALID}, "f32"));
  CHECK_MESSAGE("no-such-file.mpk");

  /* Thread-local: a failure on another thread does not change this thread's message. */
  REQUIRE(pthread_create(&th, NULL, other_thread, NULL) == 0, "pthread_create");
  REQUIRE(pthread_join(th, &ok) == 0, "pthread_join");
  CHECK(ok != NULL, "the other thread did not see its own error");
  CHECK_MESSAGE("no-such-file.mpk");

  mpk_clear_error();
  CHECK(strcmp(mpk_last_error_message(), "") == 0, "after clear: \"%s\"",
        mpk_last_error_message());

  /* NULL arguments name the function and the parameter. */
  CHECK_STATUS(mpk_model_open(NULL, missing, NULL), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("mpk_model_open");
  CHECK_MESSAGE("out");
  mpk_clear_error();
}

/* ---- writing -------------------------------------------------------------------------------- */

static const char *const kStrings[] = {"alpha", "", "\xc3\xa9t\xc3\xa9 \xe2\x82\xac"};
static const int64_t kInts[] = {INT64_MIN, -1, 0, 1, INT64_MAX};
static const double kDoubles[] = {-0.5, 0.0, 3.141592653589793, 1e300};
static const uint8_t kBoolsIn[] = {1, 0, 7, 0, 255};
static const uint8_t kBoolsOut[] = {1, 0, 1, 0, 1};
static const unsigned char kBlob[] = {0x00, 0xff, 0x00, 0x10, 0x80};
/* A bytes array: data, an empty item given as NULL, text, an empty item given as a pointer. */
static const void *const kBytesItems[] = {kBlob, NULL, "xyz", kBlob};
static const size_t kBytesLens[] = {sizeof kBlob, 0, 3, 0};

/* Writes the reference model to `path` (alignment 128, no fsync). */
static void write_reference_model(const char *path) {
  mpk_writer *w = NULL;
  mpk_writer_options wo = MPK_WRITER_OPTIONS_INIT;
  expected_tensor *t;
  uint64_t shape23[2] = {2, 3};
  uint64_t shape_empty[2] = {0, 4};
  uint64_t shape_empty2[2] = {3, 0};
  uint64_t shape_stream[1] = {1000};
  uint64_t shape_tok[1] = {5};
  uint64_t shape_big[MPK_MAX_RANK + 1];
  char name[32];
  int d;
  uint64_t off;
  size_t i;

  wo.alignment = 128;
  wo.flags = MPK_WRITER_NO_FSYNC;
  REQUIRE_OK(mpk_writer_create(&w, path, &wo));
  REQUIRE(w != NULL, "writer is NULL");

  /* Components. */
  CHECK_OK(mpk_writer_add_component(w, "tokenizer", "tokenizer"));
  CHECK_OK(mpk_writer_add_component(w, "adapter", NULL)); /* kind NULL = "" */
  CHECK_STATUS(mpk_writer_add_component(w, "tokenizer", "x"), MPK_ERR_DUPLICATE);
  CHECK_MESSAGE("tokenizer");
  CHECK_STATUS(mpk_writer_add_component(w, NULL, "x"), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_writer_add_component(w, "", "x"), MPK_ERR_BAD_NAME);
  CHECK_STATUS(mpk_writer_add_component(NULL, "c", "x"), MPK_ERR_INVALID_ARGUMENT);

  /* One tensor of every dtype, whole. */
  for (d = 1; d <= 13; ++d) {
    snprintf(name, sizeof name, "dtype.%s", kDTypeNames[d]);
    t = add_expected(name, (mpk_dtype)d, 2, shape23, NULL);
    CHECK_OK(mpk_writer_add_tensor(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes,
                                   NULL));
  }
  /* A scalar (ndim 0, shape NULL). */
  t = add_expected("scalar.f32", MPK_DTYPE_F32, 0, NULL, NULL);
  {
    float v = 3.5f;
    memcpy(t->data, &v, sizeof v);
  }
  CHECK_OK(mpk_writer_add_tensor(w, t->name, t->dtype, 0, NULL, t->data, t->nbytes, NULL));
  /* Zero-size tensors: data may be NULL. */
  t = add_expected("empty.f32", MPK_DTYPE_F32, 2, shape_empty, NULL);
  CHECK_OK(mpk_writer_add_tensor(w, t->name, t->dtype, t->ndim, t->shape, NULL, 0, NULL));
  t = add_expected("empty.stream", MPK_DTYPE_I16, 2, shape_empty2, NULL);
  t->streamed = 1;
  CHECK_OK(mpk_writer_begin_tensor(w, t->name, t->dtype, t->ndim, t->shape, NULL));
  CHECK_OK(mpk_writer_write(w, NULL, 0));
  CHECK_OK(mpk_writer_end_tensor(w));
  /* A tensor in a declared component. */
  t = add_expected("tok.ids", MPK_DTYPE_I32, 1, shape_tok, "tokenizer");
  CHECK_OK(mpk_writer_add_tensor(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes,
                                 "tokenizer"));

  /* Streaming in uneven pieces, with the error paths on the way. */
  t = add_expected("stream.f32", MPK_DTYPE_F32, 1, shape_stream, "weights");
  t->streamed = 1;
  CHECK_STATUS(mpk_writer_write(w, t->data, 4), MPK_ERR_STATE);      /* no tensor open */
  CHECK_STATUS(mpk_writer_end_tensor(w), MPK_ERR_STATE);             /* no tensor open */
  CHECK_OK(mpk_writer_begin_tensor(w, t->name, t->dtype, t->ndim, t->shape, "weights"));
  CHECK_STATUS(mpk_writer_begin_tensor(w, "other", MPK_DTYPE_F32, 1, shape_stream, NULL),
               MPK_ERR_STATE);
  CHECK_MESSAGE("stream.f32");
  CHECK_STATUS(mpk_writer_add_tensor(w, "other", MPK_DTYPE_U8, 0, NULL, t->data, 1, NULL),
               MPK_ERR_STATE);
  for (off = 0; off + 300 <= 3000; off += 300) CHECK_OK(mpk_writer_write(w, t->data + off, 300));
  CHECK_OK(mpk_writer_write(w, t->data + off, 0));
  CHECK_STATUS(mpk_writer_end_tensor(w), MPK_ERR_SIZE_MISMATCH); /* 3000 of 4000 bytes */
  CHECK_MESSAGE("stream.f32");
  CHECK_STATUS(mpk_writer_write(w, t->data + off, 1001), MPK_ERR_SIZE_MISMATCH); /* one too many */
  CHECK_STATUS(mpk_writer_write(w, NULL, 10), MPK_ERR_INVALID_ARGUMENT);
  CHECK_OK(mpk_writer_write(w, t->data + off, 999));
  CHECK_OK(mpk_writer_write(w, t->data + off + 999, 1));
  CHECK_OK(mpk_writer_end_tensor(w));
  CHECK_STATUS(mpk_writer_end_tensor(w), MPK_ERR_STATE);

  /* add_tensor errors. */
  t = &g_tensors[0];
  CHECK_STATUS(mpk_writer_add_tensor(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes,
                                     NULL),
               MPK_ERR_DUPLICATE);
  CHECK_MESSAGE(t->name);
  CHECK_STATUS(mpk_writer_add_tensor(w, "bad.size", MPK_DTYPE_F32, 2, shape23, t->data, 23, NULL),
               MPK_ERR_SIZE_MISMATCH);
  CHECK_MESSAGE("bad.size");
  CHECK_STATUS(mpk_writer_add_tensor(w, "bad.size", MPK_DTYPE_F32, 2, shape23, t->data, 25, NULL),
               MPK_ERR_SIZE_MISMATCH);
  CHECK_STATUS(mpk_writer_add_tensor(w, "bad.dtype", MPK_DTYPE_INVALID, 2, shape23, t->data, 24,
                                     NULL),
               MPK_ERR_BAD_DTYPE);
  /* Any int may arrive from C, also values outside the C++ enum's range (UB if loaded as such). */
  CHECK_STATUS(mpk_writer_add_tensor(w, "bad.dtype", (mpk_dtype)99, 2, shape23, t->data, 24, NULL),
               MPK_ERR_BAD_DTYPE);
  CHECK_MESSAGE("99");
  CHECK_STATUS(mpk_writer_begin_tensor(w, "bad.dtype", (mpk_dtype)-1, 2, shape23, NULL),
               MPK_ERR_BAD_DTYPE);
  CHECK_STATUS(mpk_writer_begin_tensor(w, "bad.dtype", (mpk_dtype)21, 2, shape23, NULL),
               MPK_ERR_BAD_DTYPE);
  CHECK_STATUS(mpk_writer_add_tensor(NULL, "x", MPK_DTYPE_U8, 0, NULL, t->data, 1, NULL),
               MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_writer_add_tensor(w, NULL, MPK_DTYPE_U8, 0, NULL, t->data, 1, NULL),
               MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_writer_add_tensor(w, "x", MPK_DTYPE_U8, 2, NULL, t->data, 6, NULL),
               MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("shape");
  CHECK_STATUS(mpk_writer_add_tensor(w, "x", MPK_DTYPE_U8, 2, shape23, NULL, 6, NULL),
               MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("data");
  for (i = 0; i < MPK_MAX_RANK + 1; ++i) shape_big[i] = 1;
  CHECK_STATUS(mpk_writer_add_tensor(w, "x", MPK_DTYPE_U8, MPK_MAX_RANK + 1, shape_big, t->data, 1,
                                     NULL),
               MPK_ERR_BAD_SHAPE);
  CHECK_STATUS(mpk_writer_begin_tensor(w, "x", MPK_DTYPE_U8, MPK_MAX_RANK + 1, shape_big, NULL),
               MPK_ERR_BAD_SHAPE);
  CHECK_STATUS(mpk_writer_add_tensor(w, "", MPK_DTYPE_U8, 0, NULL, t->data, 1, NULL),
               MPK_ERR_BAD_NAME);
  CHECK_STATUS(mpk_writer_add_tensor(w, "bad\xff", MPK_DTYPE_U8, 0, NULL, t->data, 1, NULL),
               MPK_ERR_BAD_NAME);
  CHECK_STATUS(mpk_writer_add_tensor(w, "x", MPK_DTYPE_U8, 0, NULL, t->data, 1, "no-such-comp"),
               MPK_ERR_NOT_FOUND);
  CHECK_MESSAGE("no-such-comp");
  CHECK_STATUS(mpk_writer_begin_tensor(w, NULL, MPK_DTYPE_U8, 0, NULL, NULL),
               MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_writer_begin_tensor(w, "x", MPK_DTYPE_U8, 1, NULL, NULL),
               MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_writer_write(NULL, t->data, 1), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_writer_end_tensor(NULL), MPK_ERR_INVALID_ARGUMENT);

  /* Metadata of every type. */
  CHECK_OK(mpk_writer_set_string(w, "general.name", "tiny"));
  CHECK_OK(mpk_writer_set_string(w, "general.empty", ""));
  CHECK_OK(mpk_writer_set_int64(w, "n.min", INT64_MIN));
  CHECK_OK(mpk_writer_set_int64(w, "n.max", INT64_MAX));
  CHECK_OK(mpk_writer_set_float64(w, "f.pi", 3.141592653589793));
  CHECK_OK(mpk_writer_set_bool(w, "b.true", 2)); /* any non-zero int is true */
  CHECK_OK(mpk_writer_set_bool(w, "b.false", 0));
  CHECK_OK(mpk_writer_set_bytes(w, "blob", kBlob, sizeof kBlob));
  CHECK_OK(mpk_writer_set_bytes(w, "blob.empty", NULL, 0));
  CHECK_OK(mpk_writer_set_string_array(w, "a.str", kStrings, 3));
  CHECK_OK(mpk_writer_set_string_array(w, "a.str.empty", NULL, 0));
  CHECK_OK(mpk_writer_set_int64_array(w, "a.int", kInts, 5));
  CHECK_OK(mpk_writer_set_int64_array(w, "a.int.empty", NULL, 0));
  CHECK_OK(mpk_writer_set_float64_array(w, "a.f64", kDoubles, 4));
  CHECK_OK(mpk_writer_set_bool_array(w, "a.bool", kBoolsIn, 5));
  CHECK_OK(mpk_writer_set_bytes_array(w, "a.bytes", kBytesItems, kBytesLens, 4));
  CHECK_OK(mpk_writer_set_bytes_array(w, "a.bytes.empty", NULL, NULL, 0));
  /* Typed numbers (format 1.1): exact dtypes, unaligned input accepted. */
  {
    static const unsigned char u32le[5] = {0xee, 0x20, 0x00, 0x00, 0x00}; /* 32 at offset 1 */
    static const unsigned char f16le[2] = {0x00, 0x3c};                   /* 1.0 */
    static const uint16_t u16s[3] = {1, 65535, 7};
    CHECK_OK(mpk_writer_set_typed(w, "t.u32", MPK_DTYPE_U32, u32le + 1));
    CHECK_OK(mpk_writer_set_typed(w, "t.f16", MPK_DTYPE_F16, f16le));
    CHECK_OK(mpk_writer_set_typed_array(w, "t.u16a", MPK_DTYPE_U16, u16s, 3));
    CHECK_OK(mpk_writer_set_typed_array(w, "t.u8a.empty", MPK_DTYPE_U8, NULL, 0));
    CHECK_STATUS(mpk_writer_set_typed(w, "t.bad", MPK_DTYPE_Q8_0, u32le), MPK_ERR_BAD_DTYPE);
    CHECK_STATUS(mpk_writer_set_typed(w, "t.bad", (mpk_dtype)21, u32le), MPK_ERR_BAD_DTYPE);
    CHECK_STATUS(mpk_writer_set_typed(w, "t.bad", MPK_DTYPE_U8, NULL), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_writer_set_typed_array(w, "t.bad", MPK_DTYPE_F4_E2M1, u16s, 2), MPK_ERR_BAD_DTYPE);
    CHECK_STATUS(mpk_writer_set_typed_array(w, "t.bad", MPK_DTYPE_U8, NULL, 2), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_writer_set_typed_array(w, "t.bad", MPK_DTYPE_U64, u16s, SIZE_MAX / 4), MPK_ERR_OVERFLOW);
  }
  /* The last value set for a key wins, whatever its type. */
  CHECK_OK(mpk_writer_set_int64(w, "dup", 1));
  CHECK_OK(mpk_writer_set_string(w, "dup", "second"));
  /* Metadata errors. */
  CHECK_STATUS(mpk_writer_set_string(w, NULL, "v"), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_writer_set_string(w, "k", NULL), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_writer_set_string(NULL, "k", "v"), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_writer_set_int64(w, "", 1), MPK_ERR_BAD_NAME);
  CHECK_STATUS(mpk_writer_set_int64(w, "\xc0\x80", 1), MPK_ERR_BAD_NAME); /* overlong NUL */
  CHECK_STATUS(mpk_writer_set_bytes(w, "k", NULL, 3), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_writer_set_int64_array(w, "k", NULL, 3), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_writer_set_float64_array(w, "k", NULL, 3), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_writer_set_bool_array(w, "k", NULL, 3), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_writer_set_string_array(w, "k", NULL, 3), MPK_ERR_INVALID_ARGUMENT);
  {
    const char *with_null[3] = {"a", NULL, "c"};
    CHECK_STATUS(mpk_writer_set_string_array(w, "k", with_null, 3), MPK_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("values[1]");
  }
  {
    const void *with_null[3] = {kBlob, NULL, kBlob};
    const size_t lens[3] = {1, 2, 3};
    CHECK_STATUS(mpk_writer_set_bytes_array(w, "k", NULL, kBytesLens, 2), MPK_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("values is NULL");
    CHECK_STATUS(mpk_writer_set_bytes_array(w, "k", kBytesItems, NULL, 2),
                 MPK_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("lens is NULL");
    CHECK_STATUS(mpk_writer_set_bytes_array(w, "k", with_null, lens, 3), MPK_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("values[1] is NULL but lens[1] is 2");
    CHECK_STATUS(mpk_writer_set_bytes_array(w, NULL, kBytesItems, kBytesLens, 4),
                 MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_writer_set_bytes_array(NULL, "k", kBytesItems, kBytesLens, 4),
                 MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_writer_set_bytes_array(w, "", kBytesItems, kBytesLens, 4), MPK_ERR_BAD_NAME);
  }

  CHECK_OK(mpk_writer_commit(w));

  /* After commit only mpk_writer_free is allowed. */
  CHECK_STATUS(mpk_writer_add_tensor(w, "late", MPK_DTYPE_U8, 0, NULL, t->data, 1, NULL),
               MPK_ERR_STATE);
  CHECK_MESSAGE("commit");
  CHECK_STATUS(mpk_writer_begin_tensor(w, "late", MPK_DTYPE_U8, 0, NULL, NULL), MPK_ERR_STATE);
  CHECK_STATUS(mpk_writer_write(w, t->data, 1), MPK_ERR_STATE);
  CHECK_STATUS(mpk_writer_end_tensor(w), MPK_ERR_STATE);
  CHECK_STATUS(mpk_writer_add_component(w, "late", "late"), MPK_ERR_STATE);
  CHECK_STATUS(mpk_writer_set_int64(w, "late", 1), MPK_ERR_STATE);
  CHECK_STATUS(mpk_writer_set_string_array(w, "late", kStrings, 1), MPK_ERR_STATE);
  CHECK_STATUS(mpk_writer_set_bytes_array(w, "late", kBytesItems, kBytesLens, 4), MPK_ERR_STATE);
  CHECK_STATUS(mpk_writer_commit(w), MPK_ERR_STATE);
  mpk_writer_free(w);
  mpk_writer_free(NULL);
}

static void test_writer_options(void) {
  char path[4096];
  mpk_writer *w = (mpk_writer *)0x1;
  mpk_writer_options o = MPK_WRITER_OPTIONS_INIT;
  struct {
    mpk_writer_options o;
    uint32_t newer_field;
  } big;

  path_in(path, sizeof path, "options.mpk");
  CHECK_STATUS(mpk_writer_create(NULL, path, NULL), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_writer_create(&w, NULL, NULL), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("path");

  o.struct_size = 4;
  CHECK_STATUS(mpk_writer_create(&w, path, &o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("struct_size");
  o.struct_size = 0;
  CHECK_STATUS(mpk_writer_create(&w, path, &o), MPK_ERR_INVALID_ARGUMENT);
  REQUIRE_OK(mpk_writer_options_init(&o, sizeof o));
  o.alignment = 3;
  CHECK_STATUS(mpk_writer_create(&w, path, &o), MPK_ERR_INVALID_ARGUMENT);
  o.alignment = 2 * MPK_MAX_ALIGNMENT;
  CHECK_STATUS(mpk_writer_create(&w, path, &o), MPK_ERR_INVALID_ARGUMENT);
  REQUIRE_OK(mpk_writer_options_init(&o, sizeof o));
  o.flags = 0x80;
  CHECK_STATUS(mpk_writer_create(&w, path, &o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("flags");
  CHECK(w == (mpk_writer *)0x1, "out changed on failure");
  CHECK(count_entries(g_dir, NULL, 0) == 0, "a failed create left a file behind");

  /* A caller built against a newer header: accepted when the unknown tail is zero. */
  memset(&big, 0xA5, sizeof big);
  REQUIRE_OK(mpk_writer_options_init(&big.o, sizeof big)); /* zeroes newer_field */
  CHECK(big.o.struct_size == sizeof big && big.newer_field == 0, "size %u, newer field %u",
        big.o.struct_size, big.newer_field);
  big.o.flags = MPK_WRITER_NO_FSYNC;
  big.newer_field = 1;
  CHECK_STATUS(mpk_writer_create(&w, path, &big.o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("non-zero");
  big.newer_field = 0;
  CHECK_OK(mpk_writer_create(&w, path, &big.o));
  CHECK(w != (mpk_writer *)0x1 && w != NULL, "no writer");
  if (w != (mpk_writer *)0x1) mpk_writer_free(w);

  /* A directory that does not exist: an I/O error naming the path. */
  {
    char bad[4096];
    w = (mpk_writer *)0x1;
    CHECK_STATUS(mpk_writer_create(&w, path_in(bad, sizeof bad, "no/such/dir/x.mpk"), NULL),
                 MPK_ERR_IO);
    CHECK_MESSAGE("no/such/dir");
    CHECK(w == (mpk_writer *)0x1, "out changed on failure");
  }
  CHECK(count_entries(g_dir, NULL, 0) == 0, "files left behind");
}

/* mpk_writer_free without commit removes the temporary file and leaves `path` untouched. */
static void test_writer_abort(void) {
  char path[4096], entry[256];
  mpk_writer *w = NULL;
  mpk_writer_options o = MPK_WRITER_OPTIONS_INIT;
  uint64_t shape[1] = {4};
  const float v[4] = {1, 2, 3, 4};
  const unsigned char old[3] = {'o', 'l', 'd'};
  unsigned char *back;
  long n;

  o.flags = MPK_WRITER_NO_FSYNC;
  path_in(path, sizeof path, "aborted.mpk");
  REQUIRE(count_entries(g_dir, NULL, 0) == 0, "scratch directory not empty");

  REQUIRE_OK(mpk_writer_create(&w, path, &o));
  CHECK_OK(mpk_writer_add_tensor(w, "t", MPK_DTYPE_F32, 1, shape, v, sizeof v, NULL));
  CHECK_OK(mpk_writer_set_string(w, "k", "v"));
  CHECK(!file_exists(path), "the target appeared before commit");
  CHECK(count_entries(g_dir, entry, sizeof entry) == 1,
        "expected one temporary file while writing");
  mpk_writer_free(w);
  CHECK(count_entries(g_dir, entry, sizeof entry) == 0,
        "mpk_writer_free without commit left '%s' behind", entry);

  /* Same while a streamed tensor is open. */
  REQUIRE_OK(mpk_writer_create(&w, path, &o));
  CHECK_OK(mpk_writer_begin_tensor(w, "t", MPK_DTYPE_F32, 1, shape, NULL));
  CHECK_OK(mpk_writer_write(w, v, 8));
  mpk_writer_free(w);
  CHECK(count_entries(g_dir, entry, sizeof entry) == 0, "left '%s' behind", entry);

  /* A failed commit (tensor still open) finishes the writer and leaves nothing behind. */
  REQUIRE_OK(mpk_writer_create(&w, path, &o));
  CHECK_OK(mpk_writer_begin_tensor(w, "t", MPK_DTYPE_F32, 1, shape, NULL));
  CHECK_STATUS(mpk_writer_commit(w), MPK_ERR_STATE);
  CHECK_STATUS(mpk_writer_write(w, v + 2, 8), MPK_ERR_STATE);
  CHECK_STATUS(mpk_writer_end_tensor(w), MPK_ERR_STATE);
  CHECK_STATUS(mpk_writer_commit(w), MPK_ERR_STATE);
  mpk_writer_free(w);
  CHECK(count_entries(g_dir, entry, sizeof entry) == 0, "left '%s' behind", entry);

  /* An existing file at `path` is untouched by an aborted writer. */
  write_whole(path, old, sizeof old);
  REQUIRE_OK(mpk_writer_create(&w, path, &o));
  CHECK_OK(mpk_writer_add_tensor(w, "t", MPK_DTYPE_F32, 1, shape, v, sizeof v, NULL));
  mpk_writer_free(w);
  CHECK(count_entries(g_dir, entry, sizeof entry) == 1, "expected only the old file");
  back = read_whole(path, &n);
  CHECK(n == 3 && memcmp(back, old, 3) == 0, "the existing file was changed");
  free(back);

  /* A committed writer replaces it, and leaves no temporary file. */
  REQUIRE_OK(mpk_writer_create(&w, path, &o));
  CHECK_OK(mpk_writer_add_tensor(w, "t", MPK_DTYPE_F32, 1, shape, v, sizeof v, NULL));
  CHECK_OK(mpk_writer_commit(w));
  mpk_writer_free(w);
  CHECK(count_entries(g_dir, entry, sizeof entry) == 1 && strcmp(entry, "aborted.mpk") == 0,
        "after commit: %d entries, first '%s'", count_entries(g_dir, NULL, 0), entry);
  CHECK(file_size_of(path) > 3, "commit did not replace the file");
  unlink(path);
}

/* ---- reading -------------------------------------------------------------------------------- */

static const expected_tensor *expected_by_name(const char *name) {
  size_t i;
  for (i = 0; i < g_ntensors; ++i)
    if (strcmp(g_tensors[i].name, name) == 0) return &g_tensors[i];
  return NULL;
}

static mpk_model *open_model(const char *path, mpk_access access, mpk_verify_mode verify) {
  mpk_model *m = NULL;
  mpk_open_options o = MPK_OPEN_OPTIONS_INIT;
  o.access = (uint32_t)access;
  o.verify = (uint32_t)verify;
  REQUIRE_OK(mpk_model_open(&m, path, &o));
  REQUIRE(m != NULL, "model is NULL");
  return m;
}

static void check_tensors(const mpk_model *m, mpk_access access) {
  size_t n = mpk_model_tensor_count(m), i, idx;
  const char *prev = NULL;
  uint32_t alignment = mpk_model_alignment(m);

  CHECK(n == g_ntensors, "tensor count %u, expected %u", (unsigned)n, (unsigned)g_ntensors);
  for (i = 0; i < n; ++i) {
    mpk_tensor_info info = MPK_TENSOR_INFO_INIT;
    const expected_tensor *e;
    const void *data = NULL, *data2 = NULL;
    uint64_t nbytes = 12345, numel = 1;
    uint32_t d;
    unsigned char *buf;

    CHECK_OK(mpk_model_tensor_info(m, i, &info));
    REQUIRE(info.name != NULL, "tensor %u has a NULL name", (unsigned)i);
    CHECK(strlen(info.name) == info.name_len, "name of tensor %u is not NUL-terminated at name_len",
          (unsigned)i);
    /* Name order, byte-wise (strcmp compares as unsigned char). */
    if (prev) CHECK(strcmp(prev, info.name) < 0, "'%s' before '%s'", prev, info.name);
    prev = info.name;
    e = expected_by_name(info.name);
    CHECK(e != NULL, "unexpected tensor '%s'", info.name);
    if (!e) continue;
    CHECK_OK(mpk_model_find_tensor(m, e->name, &idx));
    CHECK(idx == i, "find('%s') = %u, expected %u", e->name, (unsigned)idx, (unsigned)i);
    CHECK(info.dtype == e->dtype, "'%s' dtype %d, expected %d", e->name, (int)info.dtype,
          (int)e->dtype);
    CHECK(info.ndim == e->ndim, "'%s' ndim %u, expected %u", e->name, info.ndim, e->ndim);
    if (e->ndim == 0) {
      CHECK(info.shape == NULL, "scalar '%s' has a non-NULL shape", e->name);
    } else if (info.shape) {
      for (d = 0; d < e->ndim && d < info.ndim; ++d) {
        CHECK(info.shape[d] == e->shape[d], "'%s' dim %u = %llu", e->name, d,
              (unsigned long long)info.shape[d]);
        numel *= e->shape[d];
      }
    } else {
      CHECK(0, "'%s' has a NULL shape", e->name);
    }
    CHECK(info.numel == numel, "'%s' numel %llu, expected %llu", e->name,
          (unsigned long long)info.numel, (unsigned long long)numel);
    CHECK(info.nbytes == e->nbytes, "'%s' nbytes %llu, expected %llu", e->name,
          (unsigned long long)info.nbytes, (unsigned long long)e->nbytes);
    CHECK(info.offset % alignment == 0, "'%s' offset %llu not aligned to %u", e->name,
          (unsigned long long)info.offset, alignment);
    CHECK(info.offset + info.nbytes <= mpk_model_file_size(m), "'%s' past the end", e->name);
    {
      size_t comp = 99;
      CHECK_OK(mpk_model_find_component(m, e->component ? e->component : "weights", &comp));
      CHECK(info.component == comp, "'%s' component %u, expected %u", e->name, info.component,
            (unsigned)comp);
    }

    /* Bytes: zero-copy pointer, stable across calls. */
    CHECK_OK(mpk_model_tensor_data(m, i, &data, &nbytes));
    CHECK(data != NULL, "'%s' data is NULL", e->name);
    CHECK(nbytes == e->nbytes, "'%s' data nbytes %llu", e->name, (unsigned long long)nbytes);
    if (data && nbytes == e->nbytes && nbytes > 0)
      CHECK(memcmp(data, e->data, (size_t)nbytes) == 0, "'%s' bytes differ", e->name);
    if (access == MPK_ACCESS_MAP && nbytes > 0)
      CHECK((uintptr_t)data % alignment == 0, "'%s' mapped data %p not aligned to %u", e->name,
            data, alignment);
    CHECK_OK(mpk_model_tensor_data(m, i, &data2, &nbytes));
    CHECK(data2 == data, "'%s' data pointer changed between calls", e->name);

    /* Copy out; too small a buffer is refused without touching it. */
    buf = (unsigned char *)malloc((size_t)e->nbytes + 1);
    REQUIRE(buf != NULL, "out of memory");
    memset(buf, 0xEE, (size_t)e->nbytes + 1);
    CHECK_OK(mpk_model_tensor_read(m, i, buf, e->nbytes + 1));
    CHECK(memcmp(buf, e->data, (size_t)e->nbytes) == 0, "'%s' read bytes differ", e->name);
    CHECK(buf[e->nbytes] == 0xEE, "'%s' read wrote past nbytes", e->name);
    if (e->nbytes > 0) {
      memset(buf, 0xEE, (size_t)e->nbytes + 1);
      CHECK_STATUS(mpk_model_tensor_read(m, i, buf, e->nbytes - 1), MPK_ERR_SIZE_MISMATCH);
      CHECK_MESSAGE(e->name);
      CHECK(buf[0] == 0xEE, "'%s' buffer written on failure", e->name);
    }
    free(buf);
    CHECK_OK(mpk_model_verify_tensor(m, i));
  }

  /* Specific tensors. */
  {
    mpk_tensor_info info = MPK_TENSOR_INFO_INIT;
    const void *data = NULL;
    uint64_t nbytes = 99;
    float f = 0;
    REQUIRE_OK(mpk_model_find_tensor(m, "scalar.f32", &idx));
    CHECK_OK(mpk_model_tensor_info(m, idx, &info));
    CHECK(info.ndim == 0 && info.shape == NULL && info.numel == 1 && info.nbytes == 4,
          "scalar: ndim %u numel %llu nbytes %llu", info.ndim, (unsigned long long)info.numel,
          (unsigned long long)info.nbytes);
    CHECK_OK(mpk_model_tensor_read(m, idx, &f, sizeof f));
    CHECK(f == 3.5f, "scalar value %g", (double)f);

    REQUIRE_OK(mpk_model_find_tensor(m, "empty.f32", &idx));
    CHECK_OK(mpk_model_tensor_info(m, idx, &info));
    CHECK(info.ndim == 2 && info.numel == 0 && info.nbytes == 0, "empty: numel %llu nbytes %llu",
          (unsigned long long)info.numel, (unsigned long long)info.nbytes);
    CHECK_OK(mpk_model_tensor_data(m, idx, &data, &nbytes));
    CHECK(data != NULL && nbytes == 0, "empty tensor data %p nbytes %llu", data,
          (unsigned long long)nbytes);
    CHECK_OK(mpk_model_tensor_read(m, idx, &f, 0));
  }

  /* Errors; out-parameters untouched. */
  {
    mpk_tensor_info info = MPK_TENSOR_INFO_INIT, snapshot;
    const void *data = (const void *)0x1;
    uint64_t nbytes = 77;
    unsigned char byte = 0;
    struct {
      mpk_tensor_info info;
      unsigned char tail[16];
    } big;

    idx = 4242;
    CHECK_STATUS(mpk_model_find_tensor(m, "no.such.tensor", &idx), MPK_ERR_NOT_FOUND);
    CHECK_MESSAGE("no.such.tensor");
    CHECK(idx == 4242, "out_index changed on failure");
    CHECK_STATUS(mpk_model_find_tensor(m, NULL, &idx), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_model_find_tensor(m, "scalar.f32", NULL), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_model_find_tensor(NULL, "scalar.f32", &idx), MPK_ERR_INVALID_ARGUMENT);

    memset(&info, 0x5A, sizeof info);
    info.struct_size = sizeof info;
    snapshot = info;
    CHECK_STATUS(mpk_model_tensor_info(m, n, &info), MPK_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("out of range");
    CHECK(memcmp(&info, &snapshot, sizeof info) == 0, "info changed on failure");
    CHECK_STATUS(mpk_model_tensor_info(m, (size_t)-1, &info), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_model_tensor_info(m, 0, NULL), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_model_tensor_info(NULL, 0, &info), MPK_ERR_INVALID_ARGUMENT);
    info.struct_size = 0;
    snapshot = info;
    CHECK_STATUS(mpk_model_tensor_info(m, 0, &info), MPK_ERR_INVALID_ARGUMENT);
    CHECK_MESSAGE("struct_size");
    CHECK(memcmp(&info, &snapshot, sizeof info) == 0, "info changed on failure");
    info.struct_size = (uint32_t)offsetof(mpk_tensor_info, stored_bytes) - 8;
    CHECK_STATUS(mpk_model_tensor_info(m, 0, &info), MPK_ERR_INVALID_ARGUMENT);
    /* A caller built against 0.1.0 (72 bytes): the old fields, nothing past them. */
    memset(&info, 0x5A, sizeof info);
    info.struct_size = (uint32_t)offsetof(mpk_tensor_info, stored_bytes);
    CHECK_OK(mpk_model_tensor_info(m, 0, &info));
    CHECK(info.encoding == 0x5A5A5A5Au && info.stored_bytes == 0x5A5A5A5A5A5A5A5Aull, "wrote past an old struct");
    info.struct_size = sizeof info;
    CHECK_OK(mpk_model_tensor_info(m, 0, &info));
    CHECK(info.encoding == MPK_ENCODING_RAW && info.stored_bytes == info.nbytes, "new fields of a raw tensor");

    /* A newer caller's larger struct: known fields filled, the rest left alone. */
    memset(&big, 0xC3, sizeof big);
    big.info.struct_size = sizeof big;
    CHECK_OK(mpk_model_tensor_info(m, 0, &big.info));
    CHECK(big.info.struct_size == sizeof big, "struct_size was overwritten");
    info.struct_size = sizeof info;
    CHECK_OK(mpk_model_tensor_info(m, 0, &info));
    CHECK(big.info.name == info.name && big.info.name_len == info.name_len &&
              big.info.ndim == info.ndim && big.info.dtype == info.dtype &&
              big.info.shape == info.shape && big.info.numel == info.numel &&
              big.info.offset == info.offset && big.info.nbytes == info.nbytes &&
              big.info.xxh3 == info.xxh3 && big.info.component == info.component,
          "fields of the larger struct differ from the plain call");
    CHECK(big.tail[0] == 0xC3 && big.tail[15] == 0xC3, "bytes past sizeof(mpk_tensor_info) written");

    CHECK_STATUS(mpk_model_tensor_data(m, n, &data, &nbytes), MPK_ERR_INVALID_ARGUMENT);
    CHECK(data == (const void *)0x1 && nbytes == 77, "outs changed on failure");
    CHECK_STATUS(mpk_model_tensor_data(m, 0, NULL, &nbytes), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_model_tensor_data(m, 0, &data, NULL), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_model_tensor_data(NULL, 0, &data, &nbytes), MPK_ERR_INVALID_ARGUMENT);
    CHECK(data == (const void *)0x1 && nbytes == 77, "outs changed on failure");
    CHECK_STATUS(mpk_model_tensor_read(m, n, &byte, 1), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_model_tensor_read(m, 0, NULL, 100), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_model_tensor_read(NULL, 0, &byte, 1), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_model_verify_tensor(m, n), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_model_verify_tensor(NULL, 0), MPK_ERR_INVALID_ARGUMENT);
  }
}

static void check_components(const mpk_model *m) {
  size_t n = mpk_model_component_count(m), i, idx = 77;
  const char *name = (const char *)0x1, *kind = (const char *)0x1;
  uint64_t tensors = 1234, nbytes = 5678;
  int seen_weights = 0, seen_tok = 0, seen_adapter = 0;

  CHECK(n == 3, "component count %u, expected 3", (unsigned)n);
  for (i = 0; i < n; ++i) {
    CHECK_OK(mpk_model_component_info(m, i, &name, &kind, &tensors, &nbytes));
    REQUIRE(name != NULL && kind != NULL, "NULL name/kind");
    CHECK_OK(mpk_model_find_component(m, name, &idx));
    CHECK(idx == i, "find_component('%s') = %u", name, (unsigned)idx);
    if (strcmp(name, "weights") == 0) {
      seen_weights = 1;
      CHECK(strcmp(kind, "weights") == 0, "weights kind '%s'", kind);
      CHECK(tensors == g_ntensors - 1, "weights has %llu tensors", (unsigned long long)tensors);
    } else if (strcmp(name, "tokenizer") == 0) {
      seen_tok = 1;
      CHECK(strcmp(kind, "tokenizer") == 0, "tokenizer kind '%s'", kind);
      CHECK(tensors == 1 && nbytes == 20, "tokenizer: %llu tensors, %llu bytes",
            (unsigned long long)tensors, (unsigned long long)nbytes);
    } else if (strcmp(name, "adapter") == 0) {
      seen_adapter = 1;
      CHECK(strcmp(kind, "") == 0, "adapter kind '%s'", kind);
      CHECK(tensors == 0 && nbytes == 0, "adapter: %llu tensors", (unsigned long long)tensors);
    } else {
      CHECK(0, "unexpected component '%s'", name);
    }
  }
  CHECK(seen_weights && seen_tok && seen_adapter, "missing components");
  /* out_tensors / out_nbytes may be NULL. */
  CHECK_OK(mpk_model_component_info(m, 0, &name, &kind, NULL, NULL));

  name = kind = (const char *)0x1;
  tensors = nbytes = 42;
  idx = 77;
  CHECK_STATUS(mpk_model_find_component(m, "nope", &idx), MPK_ERR_NOT_FOUND);
  CHECK_MESSAGE("nope");
  CHECK(idx == 77, "out changed on failure");
  CHECK_STATUS(mpk_model_find_component(m, NULL, &idx), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_model_find_component(m, "weights", NULL), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_model_component_info(m, n, &name, &kind, &tensors, &nbytes),
               MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_model_component_info(m, 0, NULL, &kind, &tensors, &nbytes),
               MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_model_component_info(m, 0, &name, NULL, &tensors, &nbytes),
               MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_model_component_info(NULL, 0, &name, &kind, &tensors, &nbytes),
               MPK_ERR_INVALID_ARGUMENT);
  CHECK(name == (const char *)0x1 && kind == (const char *)0x1 && tensors == 42 && nbytes == 42,
        "outs changed on failure");
}

static size_t find_key(const mpk_model *m, const char *key) {
  size_t idx = (size_t)-1;
  mpk_status s = mpk_model_metadata_find(m, key, &idx);
  CHECK(s == MPK_OK, "metadata key '%s' not found: %s", key, mpk_status_name(s));
  return idx;
}

static void check_metadata(const mpk_model *m) {
  static const char *const keys[] = {"a.bool",  "a.bytes",     "a.bytes.empty", "a.f64",
                                     "a.int",   "a.int.empty", "a.str",         "a.str.empty",
                                     "b.false", "b.true",      "blob",          "blob.empty",
                                     "dup",     "f.pi",        "general.empty", "general.name",
                                     "n.max",   "n.min",       "t.f16",         "t.u16a",
                                     "t.u32",   "t.u8a.empty"};
  const size_t nkeys = sizeof keys / sizeof keys[0];
  size_t n = mpk_model_metadata_count(m), i, idx, len;
  const char *key, *s;
  const void *p;
  const int64_t *ints;
  const double *dbls;
  const uint8_t *bools;
  int64_t i64;
  double f64;
  int b;

  CHECK(n == nkeys, "metadata count %u, expected %u", (unsigned)n, (unsigned)nkeys);
  for (i = 0; i < n && i < nkeys; ++i) {
    key = NULL;
    CHECK_OK(mpk_model_metadata_key(m, i, &key));
    CHECK(key != NULL && strcmp(key, keys[i]) == 0, "key %u is '%s', expected '%s'", (unsigned)i,
          key ? key : "(null)", keys[i]);
  }

  /* Scalars. */
  idx = find_key(m, "general.name");
  CHECK(mpk_model_metadata_type(m, idx) == MPK_META_STRING, "type %d",
        (int)mpk_model_metadata_type(m, idx));
  s = NULL;
  len = 0;
  CHECK_OK(mpk_model_metadata_string(m, idx, &s, &len));
  CHECK(s && len == 4 && strcmp(s, "tiny") == 0, "general.name = '%s' (%u)", s ? s : "", (unsigned)len);
  idx = find_key(m, "general.empty");
  s = NULL;
  len = 9;
  CHECK_OK(mpk_model_metadata_string(m, idx, &s, &len));
  CHECK(s && len == 0 && s[0] == '\0', "general.empty not empty");
  idx = find_key(m, "dup");
  CHECK(mpk_model_metadata_type(m, idx) == MPK_META_STRING, "dup: the last value must win");
  CHECK_OK(mpk_model_metadata_string(m, idx, &s, &len));
  CHECK(strcmp(s, "second") == 0, "dup = '%s'", s);

  idx = find_key(m, "n.min");
  CHECK(mpk_model_metadata_type(m, idx) == MPK_META_INT64, "type");
  CHECK_OK(mpk_model_metadata_int64(m, idx, &i64));
  CHECK(i64 == INT64_MIN, "n.min = %lld", (long long)i64);
  idx = find_key(m, "n.max");
  CHECK_OK(mpk_model_metadata_int64(m, idx, &i64));
  CHECK(i64 == INT64_MAX, "n.max = %lld", (long long)i64);

  idx = find_key(m, "f.pi");
  CHECK(mpk_model_metadata_type(m, idx) == MPK_META_FLOAT64, "type");
  CHECK_OK(mpk_model_metadata_float64(m, idx, &f64));
  CHECK(f64 == 3.141592653589793, "f.pi = %.17g", f64);

  idx = find_key(m, "b.true");
  CHECK(mpk_model_metadata_type(m, idx) == MPK_META_BOOL, "type");
  b = 42;
  CHECK_OK(mpk_model_metadata_bool(m, idx, &b));
  CHECK(b == 1, "b.true = %d", b);
  idx = find_key(m, "b.false");
  b = 42;
  CHECK_OK(mpk_model_metadata_bool(m, idx, &b));
  CHECK(b == 0, "b.false = %d", b);

  idx = find_key(m, "blob");
  CHECK(mpk_model_metadata_type(m, idx) == MPK_META_BYTES, "type");
  p = NULL;
  CHECK_OK(mpk_model_metadata_bytes(m, idx, &p, &len));
  CHECK(p && len == sizeof kBlob && memcmp(p, kBlob, len) == 0, "blob differs (len %u)",
        (unsigned)len);
  idx = find_key(m, "blob.empty");
  p = NULL;
  len = 9;
  CHECK_OK(mpk_model_metadata_bytes(m, idx, &p, &len));
  CHECK(p != NULL && len == 0, "blob.empty: %p %u", p, (unsigned)len);

  /* Arrays. */
  idx = find_key(m, "a.str");
  CHECK(mpk_model_metadata_type(m, idx) == MPK_META_STRING_ARRAY, "type");
  CHECK_OK(mpk_model_metadata_array_length(m, idx, &len));
  CHECK(len == 3, "a.str length %u", (unsigned)len);
  for (i = 0; i < 3; ++i) {
    s = NULL;
    CHECK_OK(mpk_model_metadata_string_item(m, idx, i, &s, &len));
    CHECK(s && strcmp(s, kStrings[i]) == 0 && len == strlen(kStrings[i]), "a.str[%u] = '%s'",
          (unsigned)i, s ? s : "");
  }
  s = (const char *)0x1;
  len = 99;
  CHECK_STATUS(mpk_model_metadata_string_item(m, idx, 3, &s, &len), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("a.str");
  CHECK(s == (const char *)0x1 && len == 99, "outs changed on failure");
  idx = find_key(m, "a.str.empty");
  CHECK_OK(mpk_model_metadata_array_length(m, idx, &len));
  CHECK(len == 0, "a.str.empty length %u", (unsigned)len);
  CHECK_STATUS(mpk_model_metadata_string_item(m, idx, 0, &s, &len), MPK_ERR_INVALID_ARGUMENT);

  /* Bytes arrays (mpk_writer_set_bytes_array): every item back, empty ones non-NULL. */
  idx = find_key(m, "a.bytes");
  CHECK(mpk_model_metadata_type(m, idx) == MPK_META_BYTES_ARRAY, "a.bytes type %d",
        (int)mpk_model_metadata_type(m, idx));
  len = 0;
  CHECK_OK(mpk_model_metadata_array_length(m, idx, &len));
  CHECK(len == 4, "a.bytes length %u", (unsigned)len);
  for (i = 0; i < 4; ++i) {
    p = NULL;
    len = 99;
    CHECK_OK(mpk_model_metadata_bytes_item(m, idx, i, &p, &len));
    CHECK(p != NULL && len == kBytesLens[i] &&
              (len == 0 || memcmp(p, kBytesItems[i], len) == 0),
          "a.bytes[%u]: %u bytes at %p, expected %u", (unsigned)i, (unsigned)len, p,
          (unsigned)kBytesLens[i]);
  }
  p = (const void *)0x1;
  len = 99;
  CHECK_STATUS(mpk_model_metadata_bytes_item(m, idx, 4, &p, &len), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("a.bytes");
  CHECK(p == (const void *)0x1 && len == 99, "outs changed on failure");
  CHECK_STATUS(mpk_model_metadata_string_item(m, idx, 0, &s, &len), MPK_ERR_TYPE_MISMATCH);
  CHECK_STATUS(mpk_model_metadata_bytes(m, idx, &p, &len), MPK_ERR_TYPE_MISMATCH);
  idx = find_key(m, "a.bytes.empty");
  CHECK(mpk_model_metadata_type(m, idx) == MPK_META_BYTES_ARRAY, "a.bytes.empty type");
  len = 99;
  CHECK_OK(mpk_model_metadata_array_length(m, idx, &len));
  CHECK(len == 0, "a.bytes.empty length %u", (unsigned)len);
  CHECK_STATUS(mpk_model_metadata_bytes_item(m, idx, 0, &p, &len), MPK_ERR_INVALID_ARGUMENT);

  idx = find_key(m, "a.int");
  CHECK(mpk_model_metadata_type(m, idx) == MPK_META_INT64_ARRAY, "type");
  ints = NULL;
  CHECK_OK(mpk_model_metadata_int64_array(m, idx, &ints, &len));
  CHECK(ints && len == 5 && memcmp(ints, kInts, sizeof kInts) == 0, "a.int differs");
  CHECK_OK(mpk_model_metadata_array_length(m, idx, &len));
  CHECK(len == 5, "a.int length %u", (unsigned)len);
  idx = find_key(m, "a.int.empty");
  ints = NULL;
  len = 9;
  CHECK_OK(mpk_model_metadata_int64_array(m, idx, &ints, &len));
  CHECK(ints != NULL && len == 0, "a.int.empty: %p %u", (const void *)ints, (unsigned)len);

  idx = find_key(m, "a.f64");
  CHECK(mpk_model_metadata_type(m, idx) == MPK_META_FLOAT64_ARRAY, "type");
  dbls = NULL;
  CHECK_OK(mpk_model_metadata_float64_array(m, idx, &dbls, &len));
  CHECK(dbls && len == 4 && memcmp(dbls, kDoubles, sizeof kDoubles) == 0, "a.f64 differs");

  idx = find_key(m, "a.bool");
  CHECK(mpk_model_metadata_type(m, idx) == MPK_META_BOOL_ARRAY, "type");
  bools = NULL;
  CHECK_OK(mpk_model_metadata_bool_array(m, idx, &bools, &len));
  CHECK(bools && len == 5 && memcmp(bools, kBoolsOut, 5) == 0, "a.bool differs");

  /* Typed numbers. */
  {
    mpk_dtype dt = MPK_DTYPE_INVALID;
    const void *tp = NULL;
    size_t count = 0;
    uint32_t u32 = 0;
    uint16_t u16s[3];
    idx = find_key(m, "t.u32");
    CHECK(mpk_model_metadata_type(m, idx) == MPK_META_TYPED, "t.u32 type");
    CHECK_OK(mpk_model_metadata_typed(m, idx, &dt, &tp, &count));
    CHECK(dt == MPK_DTYPE_U32 && count == 1 && tp != NULL, "t.u32: dtype %d count %u", (int)dt, (unsigned)count);
    if (tp) memcpy(&u32, tp, 4);
    CHECK(u32 == 32, "t.u32 = %u", (unsigned)u32);
    i64 = 0;
    CHECK_OK(mpk_model_metadata_int64(m, idx, &i64)); /* a typed integer reads as int64 too */
    CHECK(i64 == 32, "t.u32 as int64 = %lld", (long long)i64);
    f64 = 0;
    CHECK_STATUS(mpk_model_metadata_float64(m, idx, &f64), MPK_ERR_TYPE_MISMATCH);
    CHECK_STATUS(mpk_model_metadata_array_length(m, idx, &len), MPK_ERR_TYPE_MISMATCH);
    idx = find_key(m, "t.f16");
    CHECK_OK(mpk_model_metadata_typed(m, idx, &dt, &tp, &count));
    CHECK(dt == MPK_DTYPE_F16 && count == 1 && memcmp(tp, "\x00\x3c", 2) == 0, "t.f16");
    CHECK_OK(mpk_model_metadata_float64(m, idx, &f64));
    CHECK(f64 == 1.0, "t.f16 as float64 = %g", f64);
    idx = find_key(m, "t.u16a");
    CHECK(mpk_model_metadata_type(m, idx) == MPK_META_TYPED_ARRAY, "t.u16a type");
    CHECK_OK(mpk_model_metadata_typed(m, idx, &dt, &tp, &count));
    CHECK(dt == MPK_DTYPE_U16 && count == 3, "t.u16a: dtype %d count %u", (int)dt, (unsigned)count);
    memcpy(u16s, tp, sizeof u16s);
    CHECK(u16s[0] == 1 && u16s[1] == 65535 && u16s[2] == 7, "t.u16a values");
    CHECK_OK(mpk_model_metadata_array_length(m, idx, &len));
    CHECK(len == 3, "t.u16a length %u", (unsigned)len);
    idx = find_key(m, "t.u8a.empty");
    tp = NULL;
    CHECK_OK(mpk_model_metadata_typed(m, idx, &dt, &tp, &count));
    CHECK(dt == MPK_DTYPE_U8 && count == 0 && tp != NULL, "t.u8a.empty");
    CHECK_STATUS(mpk_model_metadata_typed(m, idx, NULL, &tp, &count), MPK_ERR_INVALID_ARGUMENT);
    idx = find_key(m, "a.int");
    CHECK_STATUS(mpk_model_metadata_typed(m, idx, &dt, &tp, &count), MPK_ERR_TYPE_MISMATCH);
    CHECK_MESSAGE("a.int");
  }

  /* Type mismatches: every getter against an entry of another type; outs untouched. */
  idx = find_key(m, "n.min");
  s = (const char *)0x1;
  p = (const void *)0x1;
  ints = (const int64_t *)0x1;
  dbls = (const double *)0x1;
  bools = (const uint8_t *)0x1;
  len = 99;
  f64 = 1.5;
  b = 42;
  CHECK_STATUS(mpk_model_metadata_string(m, idx, &s, &len), MPK_ERR_TYPE_MISMATCH);
  CHECK_MESSAGE("n.min");
  CHECK_STATUS(mpk_model_metadata_float64(m, idx, &f64), MPK_ERR_TYPE_MISMATCH);
  CHECK_STATUS(mpk_model_metadata_bool(m, idx, &b), MPK_ERR_TYPE_MISMATCH);
  CHECK_STATUS(mpk_model_metadata_bytes(m, idx, &p, &len), MPK_ERR_TYPE_MISMATCH);
  CHECK_STATUS(mpk_model_metadata_array_length(m, idx, &len), MPK_ERR_TYPE_MISMATCH);
  CHECK_STATUS(mpk_model_metadata_int64_array(m, idx, &ints, &len), MPK_ERR_TYPE_MISMATCH);
  CHECK_STATUS(mpk_model_metadata_float64_array(m, idx, &dbls, &len), MPK_ERR_TYPE_MISMATCH);
  CHECK_STATUS(mpk_model_metadata_bool_array(m, idx, &bools, &len), MPK_ERR_TYPE_MISMATCH);
  CHECK_STATUS(mpk_model_metadata_string_item(m, idx, 0, &s, &len), MPK_ERR_TYPE_MISMATCH);
  CHECK_STATUS(mpk_model_metadata_bytes_item(m, idx, 0, &p, &len), MPK_ERR_TYPE_MISMATCH);
  idx = find_key(m, "general.name");
  i64 = 7;
  CHECK_STATUS(mpk_model_metadata_int64(m, idx, &i64), MPK_ERR_TYPE_MISMATCH);
  CHECK_MESSAGE("general.name");
  idx = find_key(m, "a.int");
  CHECK_STATUS(mpk_model_metadata_float64_array(m, idx, &dbls, &len), MPK_ERR_TYPE_MISMATCH);
  CHECK_STATUS(mpk_model_metadata_int64(m, idx, &i64), MPK_ERR_TYPE_MISMATCH);
  CHECK_STATUS(mpk_model_metadata_bytes_item(m, idx, 0, &p, &len), MPK_ERR_TYPE_MISMATCH);
  CHECK(s == (const char *)0x1 && p == (const void *)0x1 && ints == (const int64_t *)0x1 &&
            dbls == (const double *)0x1 && bools == (const uint8_t *)0x1 && len == 99 &&
            f64 == 1.5 && b == 42 && i64 == 7,
        "out-parameters changed on failure");

  /* Bad arguments. */
  idx = 1234;
  CHECK_STATUS(mpk_model_metadata_find(m, "no.such.key", &idx), MPK_ERR_NOT_FOUND);
  CHECK_MESSAGE("no.such.key");
  CHECK(idx == 1234, "out changed on failure");
  CHECK_STATUS(mpk_model_metadata_find(m, NULL, &idx), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_model_metadata_find(m, "n.min", NULL), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_model_metadata_find(NULL, "n.min", &idx), MPK_ERR_INVALID_ARGUMENT);
  key = (const char *)0x1;
  CHECK_STATUS(mpk_model_metadata_key(m, n, &key), MPK_ERR_INVALID_ARGUMENT);
  CHECK(key == (const char *)0x1, "out changed on failure");
  CHECK_STATUS(mpk_model_metadata_key(m, 0, NULL), MPK_ERR_INVALID_ARGUMENT);
  mpk_clear_error();
  CHECK(mpk_model_metadata_type(m, n) == MPK_META_UNKNOWN, "type of index n");
  CHECK_MESSAGE("out of range");
  CHECK(mpk_model_metadata_type(NULL, 0) == MPK_META_UNKNOWN, "type with NULL model");
  CHECK_STATUS(mpk_model_metadata_int64(m, n, &i64), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_model_metadata_int64(m, 0, NULL), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_model_metadata_string(m, 0, &s, NULL), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_model_metadata_string(m, 0, NULL, &len), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_model_metadata_int64_array(NULL, 0, &ints, &len), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_model_metadata_bytes_item(m, n, 0, &p, &len), MPK_ERR_INVALID_ARGUMENT);
}

static void check_model(const char *path, mpk_access access, const char *expected_cid) {
  mpk_model *m = open_model(path, access, MPK_VERIFY_HEADER);
  const char *cid = mpk_model_content_id(m);
  unsigned major = 0, minor = 0;
  uint64_t inc = 1, com = 1;
  size_t i;

  REQUIRE(cid != NULL, "content id is NULL");
  CHECK(strlen(cid) == MPK_CONTENT_ID_LENGTH, "content id '%s' has %u characters", cid,
        (unsigned)strlen(cid));
  CHECK(strncmp(cid, "mpk1-", 5) == 0, "content id '%s'", cid);
  for (i = 5; i < strlen(cid); ++i)
    CHECK((cid[i] >= '0' && cid[i] <= '9') || (cid[i] >= 'a' && cid[i] <= 'f'),
          "content id '%s' has a non-hex digit", cid);
  if (expected_cid)
    CHECK(strcmp(cid, expected_cid) == 0, "content id %s differs from %s", cid, expected_cid);
  CHECK(mpk_model_file_size(m) == (uint64_t)file_size_of(path), "file size %llu",
        (unsigned long long)mpk_model_file_size(m));
  CHECK(mpk_model_alignment(m) == 128, "alignment %u", mpk_model_alignment(m));
  mpk_model_format_version(m, &major, &minor);
  CHECK(major == MPK_FORMAT_MAJOR && minor == MPK_FORMAT_MINOR, "format %u.%u", major, minor);
  mpk_model_format_version(m, NULL, NULL);
  mpk_model_features(m, &inc, &com);
  CHECK(inc == 0, "incompatible features 0x%llx", (unsigned long long)inc);
  (void)com;
  mpk_model_features(m, NULL, NULL);

  check_tensors(m, access);
  check_components(m);
  check_metadata(m);

  CHECK_OK(mpk_model_verify(m, MPK_VERIFY_NONE, 0));
  CHECK_OK(mpk_model_verify(m, MPK_VERIFY_HEADER, 1));
  CHECK_OK(mpk_model_verify(m, MPK_VERIFY_FULL, 0));
  CHECK_OK(mpk_model_verify(m, MPK_VERIFY_FULL, 2));
  CHECK_OK(mpk_model_verify(m, MPK_VERIFY_FULL, 64));
  CHECK_STATUS(mpk_model_verify(m, (mpk_verify_mode)7, 1), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("verify mode");
  CHECK_STATUS(mpk_model_verify(NULL, MPK_VERIFY_FULL, 1), MPK_ERR_INVALID_ARGUMENT);
  mpk_model_free(m);
}

/* Getters without a status return a neutral value for a NULL model and say so in the message. */
static void test_null_model(void) {
  unsigned major = 7, minor = 8;
  uint64_t inc = 9, com = 10;
  mpk_clear_error();
  CHECK(mpk_model_tensor_count(NULL) == 0, "tensor_count(NULL)");
  CHECK_MESSAGE("mpk_model_tensor_count");
  CHECK(mpk_model_component_count(NULL) == 0, "component_count(NULL)");
  CHECK(mpk_model_metadata_count(NULL) == 0, "metadata_count(NULL)");
  CHECK(mpk_model_file_size(NULL) == 0, "file_size(NULL)");
  CHECK(mpk_model_alignment(NULL) == 0, "alignment(NULL)");
  CHECK(mpk_model_content_id(NULL) != NULL && mpk_model_content_id(NULL)[0] == '\0',
        "content_id(NULL) should be \"\"");
  CHECK_MESSAGE("mpk_model_content_id");
  mpk_model_format_version(NULL, &major, &minor);
  CHECK(major == 7 && minor == 8, "format_version(NULL) changed its outputs");
  mpk_model_features(NULL, &inc, &com);
  CHECK(inc == 9 && com == 10, "features(NULL) changed its outputs");
  mpk_model_free(NULL);
  mpk_clear_error();
}

static void test_read_modes(const char *path) {
  char cid[MPK_CONTENT_ID_LENGTH + 1];
  mpk_model *m = open_model(path, MPK_ACCESS_MAP, MPK_VERIFY_FULL);
  snprintf(cid, sizeof cid, "%s", mpk_model_content_id(m));
  mpk_model_free(m);
  check_model(path, MPK_ACCESS_MAP, cid);
  check_model(path, MPK_ACCESS_READ, cid);
}

/* ---- opening: options and bad files -------------------------------------------------------- */

static void test_open_errors(const char *good) {
  char path[4096];
  mpk_model *m = (mpk_model *)0x1;
  mpk_open_options o = MPK_OPEN_OPTIONS_INIT;
  struct {
    mpk_open_options o;
    uint64_t newer_field;
  } big;
  unsigned char *bytes;
  long size;

  CHECK_STATUS(mpk_model_open(&m, path_in(path, sizeof path, "missing.mpk"), NULL), MPK_ERR_IO);
  CHECK_MESSAGE("missing.mpk");
  CHECK(m == (mpk_model *)0x1, "out changed on failure");
  CHECK_STATUS(mpk_model_open(&m, g_dir, NULL), MPK_ERR_IO); /* a directory */
  CHECK_STATUS(mpk_model_open(NULL, good, NULL), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_model_open(&m, NULL, NULL), MPK_ERR_INVALID_ARGUMENT);

  /* Options. */
  o.struct_size = 0;
  CHECK_STATUS(mpk_model_open(&m, good, &o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("struct_size");
  o.struct_size = (uint32_t)offsetof(mpk_open_options, cache_bytes) - 1; /* below the first release */
  CHECK_STATUS(mpk_model_open(&m, good, &o), MPK_ERR_INVALID_ARGUMENT);
  REQUIRE_OK(mpk_open_options_init(&o, sizeof o));
  o.reserved = 1;
  CHECK_STATUS(mpk_model_open(&m, good, &o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("reserved");
  o.struct_size = 1u << 30;
  CHECK_STATUS(mpk_model_open(&m, good, &o), MPK_ERR_INVALID_ARGUMENT);
  REQUIRE_OK(mpk_open_options_init(&o, sizeof o));
  o.access = 2;
  CHECK_STATUS(mpk_model_open(&m, good, &o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("access");
  REQUIRE_OK(mpk_open_options_init(&o, sizeof o));
  o.verify = 3;
  CHECK_STATUS(mpk_model_open(&m, good, &o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("verify");
  REQUIRE_OK(mpk_open_options_init(&o, sizeof o));
  o.max_header_bytes = (uint64_t)1 << 31;
  CHECK_STATUS(mpk_model_open(&m, good, &o), MPK_ERR_INVALID_ARGUMENT);
  o.max_header_bytes = 16; /* smaller than this model's header */
  CHECK_STATUS(mpk_model_open(&m, good, &o), MPK_ERR_LIMIT);
  CHECK(m == (mpk_model *)0x1, "out changed on failure");

  memset(&big, 0xA5, sizeof big);
  REQUIRE_OK(mpk_open_options_init(&big.o, sizeof big)); /* zeroes newer_field */
  CHECK(big.o.struct_size == sizeof big && big.newer_field == 0, "size %u, newer field %llu",
        big.o.struct_size, (unsigned long long)big.newer_field);
  big.newer_field = 5;
  CHECK_STATUS(mpk_model_open(&m, good, &big.o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("non-zero");
  big.newer_field = 0;
  m = NULL;
  CHECK_OK(mpk_model_open(&m, good, &big.o));
  mpk_model_free(m);
  /* threads 0 and max_header_bytes 0 mean defaults; READ + FULL works. */
  REQUIRE_OK(mpk_open_options_init(&o, sizeof o));
  o.access = MPK_ACCESS_READ;
  o.verify = MPK_VERIFY_FULL;
  o.threads = 2;
  m = NULL;
  CHECK_OK(mpk_model_open(&m, good, &o));
  mpk_model_free(m);
  o.verify = MPK_VERIFY_NONE;
  m = NULL;
  CHECK_OK(mpk_model_open(&m, good, &o));
  mpk_model_free(m);
  m = (mpk_model *)0x1;

  /* Not a modelpack file. */
  bytes = (unsigned char *)malloc(4096);
  REQUIRE(bytes != NULL, "out of memory");
  memset(bytes, 'G', 4096);
  write_whole(path_in(path, sizeof path, "garbage.mpk"), bytes, 4096);
  CHECK_STATUS(mpk_model_open(&m, path, NULL), MPK_ERR_BAD_MAGIC);
  CHECK_MESSAGE("garbage.mpk");
  CHECK(m == (mpk_model *)0x1, "out changed on failure");
  free(bytes);
  write_whole(path, (const unsigned char *)"", 0);
  CHECK_STATUS(mpk_model_open(&m, path, NULL), MPK_ERR_TRUNCATED);
  unlink(path);

  /* Damaged copies of the good file. */
  bytes = read_whole(good, &size);
  /* Truncated by one byte. */
  write_whole(path_in(path, sizeof path, "truncated.mpk"), bytes, size - 1);
  CHECK_STATUS(mpk_model_open(&m, path, NULL), MPK_ERR_TRUNCATED);
  unlink(path);
  /* The last byte (inside the header, which is written last): header checksum. */
  bytes[size - 1] ^= 0x01;
  write_whole(path_in(path, sizeof path, "badheader.mpk"), bytes, size);
  CHECK_STATUS(mpk_model_open(&m, path, NULL), MPK_ERR_CHECKSUM);
  CHECK(m == (mpk_model *)0x1, "out changed on failure");
  unlink(path);
  bytes[size - 1] ^= 0x01;

  /* One bit of one tensor: the header is intact, only full verification notices. */
  {
    mpk_model *g = open_model(good, MPK_ACCESS_MAP, MPK_VERIFY_HEADER);
    mpk_tensor_info info = MPK_TENSOR_INFO_INIT;
    size_t idx = 0, other = 0;
    int access;
    REQUIRE_OK(mpk_model_find_tensor(g, "dtype.f32", &idx));
    REQUIRE_OK(mpk_model_tensor_info(g, idx, &info));
    REQUIRE_OK(mpk_model_find_tensor(g, "dtype.f64", &other));
    bytes[info.offset + 5] ^= 0x10;
    mpk_model_free(g);
    write_whole(path_in(path, sizeof path, "badtensor.mpk"), bytes, size);
    for (access = MPK_ACCESS_MAP; access <= MPK_ACCESS_READ; ++access) {
      mpk_model *c = open_model(path, (mpk_access)access, MPK_VERIFY_HEADER);
      CHECK_OK(mpk_model_verify(c, MPK_VERIFY_HEADER, 1));
      CHECK_STATUS(mpk_model_verify(c, MPK_VERIFY_FULL, 1), MPK_ERR_CHECKSUM);
      CHECK_MESSAGE("dtype.f32");
      CHECK_STATUS(mpk_model_verify(c, MPK_VERIFY_FULL, 2), MPK_ERR_CHECKSUM);
      CHECK_STATUS(mpk_model_verify_tensor(c, idx), MPK_ERR_CHECKSUM);
      CHECK_MESSAGE("dtype.f32");
      CHECK_OK(mpk_model_verify_tensor(c, other));
      mpk_model_free(c);

      REQUIRE_OK(mpk_open_options_init(&o, sizeof o));
      o.access = (uint32_t)access;
      o.verify = MPK_VERIFY_FULL;
      m = (mpk_model *)0x1;
      CHECK_STATUS(mpk_model_open(&m, path, &o), MPK_ERR_CHECKSUM);
      CHECK_MESSAGE("dtype.f32");
      CHECK(m == (mpk_model *)0x1, "out changed on failure");
    }
    unlink(path);
  }
  free(bytes);
}

/* The content id depends on the tensors only: not on alignment, metadata or write order. */
static void test_content_id(void) {
  char a[4096], b[4096], c[4096];
  char cid_a[64], cid_b[64], cid_c[64];
  mpk_writer *w;
  mpk_writer_options o = MPK_WRITER_OPTIONS_INIT;
  mpk_model *m;
  uint64_t shape[1] = {3};
  float x[3] = {1, 2, 3}, y[3] = {4, 5, 6};

  o.flags = MPK_WRITER_NO_FSYNC;
  o.alignment = 64;
  REQUIRE_OK(mpk_writer_create(&w, path_in(a, sizeof a, "cid_a.mpk"), &o));
  CHECK_OK(mpk_writer_add_tensor(w, "x", MPK_DTYPE_F32, 1, shape, x, sizeof x, NULL));
  CHECK_OK(mpk_writer_add_tensor(w, "y", MPK_DTYPE_F32, 1, shape, y, sizeof y, NULL));
  CHECK_OK(mpk_writer_commit(w));
  mpk_writer_free(w);

  o.alignment = 4096;
  REQUIRE_OK(mpk_writer_create(&w, path_in(b, sizeof b, "cid_b.mpk"), &o));
  CHECK_OK(mpk_writer_set_string(w, "note", "metadata does not change the id"));
  CHECK_OK(mpk_writer_add_tensor(w, "y", MPK_DTYPE_F32, 1, shape, y, sizeof y, NULL));
  CHECK_OK(mpk_writer_add_tensor(w, "x", MPK_DTYPE_F32, 1, shape, x, sizeof x, NULL));
  CHECK_OK(mpk_writer_commit(w));
  mpk_writer_free(w);

  REQUIRE_OK(mpk_writer_create(&w, path_in(c, sizeof c, "cid_c.mpk"), &o));
  CHECK_OK(mpk_writer_add_tensor(w, "x", MPK_DTYPE_F32, 1, shape, y, sizeof y, NULL));
  CHECK_OK(mpk_writer_add_tensor(w, "y", MPK_DTYPE_F32, 1, shape, x, sizeof x, NULL));
  CHECK_OK(mpk_writer_commit(w));
  mpk_writer_free(w);

  m = open_model(a, MPK_ACCESS_MAP, MPK_VERIFY_FULL);
  snprintf(cid_a, sizeof cid_a, "%s", mpk_model_content_id(m));
  mpk_model_free(m);
  m = open_model(b, MPK_ACCESS_READ, MPK_VERIFY_FULL);
  snprintf(cid_b, sizeof cid_b, "%s", mpk_model_content_id(m));
  CHECK(mpk_model_alignment(m) == 4096, "alignment %u", mpk_model_alignment(m));
  mpk_model_free(m);
  m = open_model(c, MPK_ACCESS_MAP, MPK_VERIFY_FULL);
  snprintf(cid_c, sizeof cid_c, "%s", mpk_model_content_id(m));
  mpk_model_free(m);
  CHECK(strcmp(cid_a, cid_b) == 0, "same tensors, different ids: %s vs %s", cid_a, cid_b);
  CHECK(strcmp(cid_a, cid_c) != 0, "different tensors, same id %s", cid_a);
  unlink(a);
  unlink(b);
  unlink(c);
}

/* ---- main ----------------------------------------------------------------------------------- */

/* Compressed tensors through the C ABI: a writer with a codec, mpk_rewrite both ways, the new
 * tensor_info fields, tensor_data of a compressed tensor (kept until mpk_model_free), slices, and
 * option checks. */
static void test_compress(void) {
  char raw[4096], z[4096], back[4096];
  mpk_writer *w = NULL;
  mpk_writer_options o = MPK_WRITER_OPTIONS_INIT;
  mpk_open_options oo = MPK_OPEN_OPTIONS_INIT;
  mpk_model *m = NULL, *mr = NULL;
  mpk_tensor_info info = MPK_TENSOR_INFO_INIT;
  uint64_t shape[1] = {100000}, nbytes = 0;
  const void *data = NULL, *again = NULL;
  unsigned char *v = (unsigned char *)malloc(100000);
  size_t i;
  uint64_t inc = 0, compat = 0;
  char cid[64];

  REQUIRE(v != NULL, "malloc");
  for (i = 0; i < 100000; ++i) v[i] = (unsigned char)((i * i) % 5); /* compressible u8 */
  o.flags = MPK_WRITER_NO_FSYNC;
  path_in(raw, sizeof raw, "raw.mpk");
  path_in(z, sizeof z, "z.mpk");
  path_in(back, sizeof back, "back.mpk");
  REQUIRE_OK(mpk_writer_create(&w, raw, &o));
  CHECK_OK(mpk_writer_add_tensor(w, "t", MPK_DTYPE_U8, 1, shape, v, 100000, NULL));
  CHECK_OK(mpk_writer_commit(w));
  mpk_writer_free(w);

  o.codec = MPK_CODEC_AUTO;
  o.chunk_size = 16384;
  CHECK_OK(mpk_rewrite(raw, z, &o));
  REQUIRE_OK(mpk_model_open(&m, z, &oo));
  mpk_model_features(m, &inc, &compat);
  CHECK((inc & MPK_FEATURE_COMPRESSED_TENSORS) != 0, "feature bit 0 not set");
  CHECK_OK(mpk_model_tensor_info(m, 0, &info));
  CHECK(info.encoding == MPK_ENCODING_CHUNKED && info.chunk_size == 16384 && info.chunk_count == 7 &&
            info.nbytes == 100000 && info.stored_bytes < 100000,
        "info: encoding %u chunk %u x %u stored %llu", info.encoding, info.chunk_size, info.chunk_count,
        (unsigned long long)info.stored_bytes);
  CHECK_OK(mpk_model_tensor_data(m, 0, &data, &nbytes));
  CHECK(nbytes == 100000 && memcmp(data, v, 100000) == 0, "decoded bytes differ");
  CHECK_OK(mpk_model_tensor_data(m, 0, &again, &nbytes));
  CHECK(again == data, "a second call moved the bytes");
  CHECK_OK(mpk_model_verify(m, MPK_VERIFY_FULL, 2));
  snprintf(cid, sizeof cid, "%s", mpk_model_content_id(m));
  REQUIRE_OK(mpk_model_open(&mr, raw, NULL));
  CHECK(strcmp(cid, mpk_model_content_id(mr)) == 0, "compression changed the content id");
  mpk_model_free(mr);
  mpk_model_free(m);
  /* No cache at all: tensor_data still hands out bytes that live until mpk_model_free. */
  oo.cache_bytes = 0;
  oo.access = MPK_ACCESS_READ;
  REQUIRE_OK(mpk_model_open(&m, z, &oo));
  CHECK_OK(mpk_model_tensor_data(m, 0, &data, &nbytes));
  CHECK_OK(mpk_model_tensor_read(m, 0, v, 100000)); /* decodes again, into v */
  CHECK(memcmp(data, v, 100000) == 0, "tensor_data bytes changed");
  mpk_model_free(m);
  /* Back to raw: the same file as the original, byte for byte. */
  o.codec = MPK_CODEC_NONE;
  CHECK_OK(mpk_rewrite(z, back, &o));
  {
    long n1 = 0, n2 = 0;
    unsigned char *a = read_whole(raw, &n1), *b = read_whole(back, &n2);
    CHECK(a && b && n1 == n2 && memcmp(a, b, (size_t)n1) == 0, "decompressed file differs from the original");
    free(a);
    free(b);
  }
  /* Option checks: unknown codec, reserved, level out of range. */
  o.codec = 9;
  CHECK_STATUS(mpk_rewrite(raw, z, &o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("codec");
  o.codec = MPK_CODEC_ZSTD;
  o.reserved = 1;
  CHECK_STATUS(mpk_rewrite(raw, z, &o), MPK_ERR_INVALID_ARGUMENT);
  o.reserved = 0;
  o.level = 20;
  CHECK_STATUS(mpk_rewrite(raw, z, &o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_rewrite(NULL, z, &o), MPK_ERR_INVALID_ARGUMENT);
  path_in(back, sizeof back, "missing.mpk");
  CHECK_STATUS(mpk_rewrite(back, z, NULL), MPK_ERR_IO);
  unlink(raw);
  unlink(z);
  path_in(back, sizeof back, "back.mpk");
  unlink(back);
  free(v);
}

/* Delta patches through the C ABI: mpk_diff and mpk_patch, forward, reverse (two-way), a chain,
 * a wrong base (MPK_ERR_WRONG_BASE, nothing written), a one-way reverse that cannot be done, and
 * option checks. */
static int same_bytes(const char *a, const char *b) {
  long n1 = 0, n2 = 0;
  unsigned char *x = read_whole(a, &n1), *y = read_whole(b, &n2);
  int same = x && y && n1 == n2 && memcmp(x, y, (size_t)n1) == 0;
  free(x);
  free(y);
  return same;
}

static void write_version(const char *path, int version) {
  mpk_writer *w = NULL;
  mpk_writer_options o = MPK_WRITER_OPTIONS_INIT;
  uint64_t shape[1] = {4096};
  float *v = (float *)malloc(4096 * sizeof(float));
  size_t i;
  REQUIRE(v != NULL, "malloc");
  o.flags = MPK_WRITER_NO_FSYNC;
  REQUIRE_OK(mpk_writer_create(&w, path, &o));
  for (i = 0; i < 4096; ++i) v[i] = (float)((double)((i * 2654435761u) % 1000) / 50000.0 + 1e-6 * version * (double)(i % 7));
  CHECK_OK(mpk_writer_add_tensor(w, "w", MPK_DTYPE_F32, 1, shape, v, sizeof(float) * 4096, NULL));
  if (version < 2) /* removed in version 2 */
    CHECK_OK(mpk_writer_add_tensor(w, "old", MPK_DTYPE_F32, 1, shape, v, sizeof(float) * 4096, NULL));
  if (version >= 2) { /* new data under a new name, of another shape: no delta pairs it with "old" */
    uint64_t half[1] = {2048};
    CHECK_OK(mpk_writer_add_tensor(w, "renamed", MPK_DTYPE_F32, 1, half, v, sizeof(float) * 2048, NULL));
  }
  CHECK_OK(mpk_writer_commit(w));
  mpk_writer_free(w);
  free(v);
}

/* Signatures: keygen, sign in place and to a copy, verify with trusted keys, the open option. */
static void test_sign(void) {
  char model[4096], key[4096], pub[4096], key2[4096], pub2[4096], copy[4096];
  uint8_t keys[64], k2[32];
  mpk_model *m = NULL;
  mpk_open_options oo = MPK_OPEN_OPTIONS_INIT;
  FILE *f;
  long size;
  path_in(model, sizeof model, "signed.mpk");
  path_in(key, sizeof key, "release");
  path_in(pub, sizeof pub, "release.pub");
  path_in(key2, sizeof key2, "other");
  path_in(pub2, sizeof pub2, "other.pub");
  path_in(copy, sizeof copy, "signed-copy.mpk");
  write_version(model, 1);
  CHECK_OK(mpk_keygen(key, 0));
  CHECK_STATUS(mpk_keygen(key, 0), MPK_ERR_INVALID_ARGUMENT); /* exists */
  CHECK_OK(mpk_keygen(key, MPK_KEYGEN_OVERWRITE));
  CHECK_OK(mpk_keygen(key2, 0));
  CHECK_STATUS(mpk_keygen(key, 8), MPK_ERR_INVALID_ARGUMENT);
  CHECK_OK(mpk_public_key_load(pub, keys));
  CHECK_OK(mpk_public_key_load(pub2, k2));
  memcpy(keys + 32, k2, 32);
  CHECK_STATUS(mpk_public_key_load(key, k2), MPK_ERR_BAD_FORMAT); /* a secret key file */
  CHECK_STATUS(mpk_verify_signature(model, keys, 1, MPK_VERIFY_FULL, 0), MPK_ERR_SIGNATURE);
  CHECK_MESSAGE("not signed");
  CHECK_OK(mpk_sign(model, key, NULL, MPK_SIGN_NO_FSYNC));
  CHECK_OK(mpk_verify_signature(model, keys, 1, MPK_VERIFY_FULL, 2));
  CHECK_OK(mpk_verify_signature(model, keys, 1, MPK_VERIFY_HEADER, 0));
  CHECK_STATUS(mpk_verify_signature(model, keys + 32, 1, MPK_VERIFY_FULL, 0), MPK_ERR_SIGNATURE);
  CHECK_MESSAGE("not a trusted key");
  CHECK_OK(mpk_verify_signature(model, keys, 2, MPK_VERIFY_FULL, 0));
  CHECK_STATUS(mpk_verify_signature(model, keys, 0, MPK_VERIFY_FULL, 0), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_verify_signature(model, keys, 1, MPK_VERIFY_NONE, 0), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_sign(model, pub, NULL, 0), MPK_ERR_BAD_FORMAT); /* a public key file */
  CHECK_STATUS(mpk_sign(model, key, NULL, 4), MPK_ERR_INVALID_ARGUMENT);
  /* The open option: trusted keys make an unsigned or other-signed file fail to open. */
  oo.trusted_keys = keys + 32;
  oo.trusted_key_count = 1;
  CHECK_STATUS(mpk_model_open(&m, model, &oo), MPK_ERR_SIGNATURE);
  CHECK(m == NULL, "a refused open set *out");
  oo.trusted_keys = keys;
  oo.trusted_key_count = 2;
  oo.verify = MPK_VERIFY_FULL;
  CHECK_OK(mpk_model_open(&m, model, &oo));
  mpk_model_free(m);
  m = NULL;
  oo.trusted_keys = NULL;
  CHECK_STATUS(mpk_model_open(&m, model, &oo), MPK_ERR_INVALID_ARGUMENT); /* a count without keys */
  /* A signed copy; then one flipped data byte is refused by full verification only. */
  CHECK_OK(mpk_sign(model, key2, copy, MPK_SIGN_NO_FSYNC));
  CHECK_OK(mpk_verify_signature(copy, keys + 32, 1, MPK_VERIFY_FULL, 0));
  f = fopen(copy, "r+b");
  REQUIRE(f != NULL, "open the copy");
  fseek(f, 0, SEEK_END);
  size = ftell(f);
  fseek(f, 100, SEEK_SET); /* between the preamble and the first tensor: padding no checksum covers */
  fputc(0x5a, f);
  fclose(f);
  CHECK(size > 400, "signed copy size %ld", size);
  CHECK_OK(mpk_verify_signature(copy, keys + 32, 1, MPK_VERIFY_HEADER, 0));
  CHECK_STATUS(mpk_verify_signature(copy, keys + 32, 1, MPK_VERIFY_FULL, 0), MPK_ERR_SIGNATURE);
  CHECK_MESSAGE("differ");
  CHECK(strcmp(mpk_status_name(MPK_ERR_SIGNATURE), "MPK_ERR_SIGNATURE") == 0, "status name");
  unlink(model);
  unlink(copy);
  unlink(key);
  unlink(pub);
  unlink(key2);
  unlink(pub2);
}

static void test_patch(void) {
  char v1[4096], v2[4096], v3[4096], p12[4096], p23[4096], out[4096];
  const char *chain[2];
  mpk_patch_options o = MPK_PATCH_OPTIONS_INIT;
  path_in(v1, sizeof v1, "v1.mpk");
  path_in(v2, sizeof v2, "v2.mpk");
  path_in(v3, sizeof v3, "v3.mpk");
  path_in(p12, sizeof p12, "p12");
  path_in(p23, sizeof p23, "p23");
  path_in(out, sizeof out, "out.mpk");
  write_version(v1, 1);
  write_version(v2, 2);
  write_version(v3, 3);
  o.flags = MPK_PATCH_NO_FSYNC;
  CHECK_OK(mpk_diff(v1, v2, p12, &o));
  CHECK_OK(mpk_diff(v2, v3, p23, NULL));
  chain[0] = p12;
  CHECK_OK(mpk_patch(v1, chain, 1, out, &o));
  CHECK(same_bytes(out, v2), "v1 + p12 differs from v2");
  unlink(out);
  chain[0] = p12;
  chain[1] = p23;
  CHECK_OK(mpk_patch(v1, chain, 2, out, NULL));
  CHECK(same_bytes(out, v3), "v1 + p12 + p23 differs from v3");
  unlink(out);
  /* Wrong base: refused, named, nothing written. */
  chain[0] = p23;
  CHECK_STATUS(mpk_patch(v1, chain, 1, out, &o), MPK_ERR_WRONG_BASE);
  CHECK_MESSAGE("applies to");
  CHECK(!file_exists(out), "a refused patch wrote its output");
  /* One-way p12 removed "old": its reverse cannot be done; a two-way patch can. */
  o.flags = MPK_PATCH_NO_FSYNC | MPK_PATCH_REVERSE;
  chain[0] = p12;
  CHECK_STATUS(mpk_patch(v2, chain, 1, out, &o), MPK_ERR_UNSUPPORTED_FEATURE);
  CHECK_MESSAGE("old");
  o.flags = MPK_PATCH_NO_FSYNC | MPK_PATCH_TWO_WAY;
  CHECK_OK(mpk_diff(v1, v2, p12, &o));
  o.flags = MPK_PATCH_NO_FSYNC | MPK_PATCH_REVERSE;
  CHECK_OK(mpk_patch(v2, chain, 1, out, &o));
  CHECK(same_bytes(out, v1), "v2 - p12 differs from v1");
  unlink(out);
  /* Option and argument checks. */
  {
    mpk_patch_options d;
    memset(&d, 0xab, sizeof d);
    CHECK_OK(mpk_patch_options_init(&d, sizeof d));
    CHECK(d.struct_size == sizeof d && d.flags == 0 && d.level == 0 && d.threads == 0 && d.reserved == 0,
          "mpk_patch_options_init defaults");
    CHECK_STATUS(mpk_patch_options_init(&d, 8), MPK_ERR_INVALID_ARGUMENT);
  }
  o.flags = MPK_PATCH_NO_FSYNC | MPK_PATCH_NO_LOW_RANK; /* a flag of mpk_diff (levels >= 6) */
  o.level = 9;
  CHECK_OK(mpk_diff(v1, v2, p12, &o));
  o.level = 0;
  o.flags = MPK_PATCH_NO_LOW_RANK;
  CHECK_STATUS(mpk_patch(v1, chain, 1, out, &o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("MPK_PATCH_NO_LOW_RANK");
  o.flags = MPK_PATCH_REVERSE;
  CHECK_STATUS(mpk_diff(v1, v2, p12, &o), MPK_ERR_INVALID_ARGUMENT);
  o.flags = MPK_PATCH_TWO_WAY;
  CHECK_STATUS(mpk_patch(v1, chain, 1, out, &o), MPK_ERR_INVALID_ARGUMENT);
  o.flags = 1u << 20;
  CHECK_STATUS(mpk_diff(v1, v2, p12, &o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("flags");
  o.flags = 0;
  o.level = 20;
  CHECK_STATUS(mpk_diff(v1, v2, p12, &o), MPK_ERR_INVALID_ARGUMENT);
  o.level = 0;
  o.reserved = 1;
  CHECK_STATUS(mpk_diff(v1, v2, p12, &o), MPK_ERR_INVALID_ARGUMENT);
  o.reserved = 0;
  CHECK_STATUS(mpk_patch(v1, chain, 0, out, &o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_patch(v1, NULL, 1, out, &o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_diff(NULL, v2, p12, &o), MPK_ERR_INVALID_ARGUMENT);
  chain[0] = NULL;
  CHECK_STATUS(mpk_patch(v1, chain, 1, out, &o), MPK_ERR_INVALID_ARGUMENT);
  CHECK(!file_exists(out), "an error wrote the output");
  unlink(v1);
  unlink(v2);
  unlink(v3);
  unlink(p12);
  unlink(p23);
}

static int wanted(const char *section, const char *name) {
  return section == NULL || strcmp(section, name) == 0;
}

/* mpk_quantize through the C ABI: the callback sees every quantized tensor, the int8 record and its
 * scale tensor are visible through mpk_model_tensor_quant, bad options and NaN input are refused
 * (nothing written). */
struct quant_seen {
  int calls;
  char first[64];
  double snr;
};
static void on_quant_tensor(void *user, const mpk_quantize_tensor *t) {
  struct quant_seen *seen = (struct quant_seen *)user;
  if (seen->calls++ == 0) {
    snprintf(seen->first, sizeof seen->first, "%s", t->name);
    seen->snr = t->snr_db;
  }
}
static void test_quantize(void) {
  char in[4096], out[4096];
  mpk_quantize_options o = MPK_QUANTIZE_OPTIONS_INIT;
  struct quant_seen seen = {0, "", 0};
  mpk_model *m = NULL;
  mpk_quant_info qi = MPK_QUANT_INFO_INIT;
  mpk_tensor_info ti = MPK_TENSOR_INFO_INIT;
  size_t idx = 0, scale_idx = 0;
  path_in(in, sizeof in, "q_in.mpk");
  path_in(out, sizeof out, "q_out.mpk");
  {
    mpk_writer *w = NULL;
    mpk_writer_options wo = MPK_WRITER_OPTIONS_INIT;
    uint64_t shape[2] = {8, 16}, bshape[1] = {8};
    float v[128], b[8];
    size_t i;
    for (i = 0; i < 128; ++i) v[i] = (float)((int)((i * 37) % 29) - 14) / 50.0f;
    for (i = 0; i < 8; ++i) b[i] = (float)i;
    wo.flags = MPK_WRITER_NO_FSYNC;
    REQUIRE_OK(mpk_writer_create(&w, in, &wo));
    CHECK_OK(mpk_writer_add_tensor(w, "fc.weight", MPK_DTYPE_F32, 2, shape, v, sizeof v, NULL));
    CHECK_OK(mpk_writer_add_tensor(w, "fc.bias", MPK_DTYPE_F32, 1, bshape, b, sizeof b, NULL));
    CHECK_OK(mpk_writer_commit(w));
    mpk_writer_free(w);
  }
  CHECK_STATUS(mpk_quantize(in, out, NULL), MPK_ERR_INVALID_ARGUMENT); /* the target is required */
  CHECK_STATUS(mpk_quantize(in, out, &o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("target");
  o.target = MPK_QUANTIZE_INT8;
  o.flags = 1u << 9;
  CHECK_STATUS(mpk_quantize(in, out, &o), MPK_ERR_INVALID_ARGUMENT);
  o.flags = MPK_QUANTIZE_NO_FSYNC;
  o.include = "(";
  CHECK_STATUS(mpk_quantize(in, out, &o), MPK_ERR_INVALID_ARGUMENT);
  CHECK_MESSAGE("regular expression");
  CHECK(!file_exists(out), "a refused quantize wrote its output");
  o.include = NULL;
  o.on_tensor = on_quant_tensor;
  o.user = &seen;
  CHECK_OK(mpk_quantize(in, out, &o));
  CHECK(seen.calls == 1 && strcmp(seen.first, "fc.weight") == 0, "callback: %d calls, first %s", seen.calls, seen.first);
  CHECK(seen.snr > 20 && seen.snr < 100, "snr %f", seen.snr);
  REQUIRE_OK(mpk_model_open(&m, out, NULL));
  CHECK_OK(mpk_model_find_tensor(m, "fc.weight", &idx));
  CHECK_OK(mpk_model_tensor_quant(m, idx, &qi));
  CHECK(qi.scheme == MPK_QUANT_INT8_CHANNEL && qi.axis == 0 && qi.source_dtype == MPK_DTYPE_F32,
        "quant info: scheme %u axis %u source %d", qi.scheme, qi.axis, (int)qi.source_dtype);
  CHECK_OK(mpk_model_find_tensor(m, "fc.weight.scale", &scale_idx));
  CHECK(qi.scale_index == scale_idx, "scale index %zu, want %zu", qi.scale_index, scale_idx);
  CHECK_OK(mpk_model_tensor_info(m, idx, &ti));
  CHECK(ti.dtype == MPK_DTYPE_I8, "fc.weight dtype %d", (int)ti.dtype);
  CHECK_OK(mpk_model_find_tensor(m, "fc.bias", &idx));
  CHECK_OK(mpk_model_tensor_quant(m, idx, &qi));
  CHECK(qi.scheme == MPK_QUANT_NONE && qi.scale_index == SIZE_MAX, "fc.bias is not quantized");
  qi.struct_size = 4;
  CHECK_STATUS(mpk_model_tensor_quant(m, idx, &qi), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_model_tensor_quant(m, 99, &qi), MPK_ERR_INVALID_ARGUMENT);
  mpk_model_free(m);
  unlink(out);
  {
    mpk_quantize_options d;
    memset(&d, 0xab, sizeof d);
    CHECK_OK(mpk_quantize_options_init(&d, sizeof d));
    CHECK(d.struct_size == sizeof d && d.target == 0 && d.flags == 0 && d.include == NULL && d.on_tensor == NULL,
          "mpk_quantize_options_init defaults");
    CHECK_STATUS(mpk_quantize_options_init(&d, 8), MPK_ERR_INVALID_ARGUMENT);
  }
  unlink(in);
}

int main(int argc, char **argv) {
  const char *section = argc > 2 ? argv[2] : NULL;
  char model[4096];
  int n;

  if (argc < 2) {
    fprintf(stderr, "usage: %s SCRATCH_DIR [SECTION]\n", argv[0]);
    return 2;
  }
  n = snprintf(g_dir, sizeof g_dir, "%s/capi-XXXXXX", argv[1]);
  REQUIRE(n > 0 && (size_t)n < sizeof g_dir, "scratch path too long");
  REQUIRE(mkdtemp(g_dir) != NULL, "mkdtemp(%s): %s", g_dir, strerror(errno));

  if (wanted(section, "basics")) {
    test_versions();
    test_status_names();
    test_dtypes();
    test_meta_type_names();
    test_options_init();
    test_last_error();
    test_null_model();
  }
  if (wanted(section, "writer")) {
    test_writer_options();
    test_writer_abort();
    test_compress();
    test_patch();
    test_sign();
    test_quantize();
  }
  if (wanted(section, "model")) {
    path_in(model, sizeof model, "reference.mpk");
    write_reference_model(model);
    test_read_modes(model);
    test_open_errors(model);
    test_content_id();
    unlink(model);
    free_expected();
  }

  remove_dir_contents(g_dir);
  if (rmdir(g_dir) != 0) {
    fprintf(stderr, "cannot remove %s: %s\n", g_dir, strerror(errno));
    ++g_failures;
  }
  if (section && !wanted(section, "basics") && !wanted(section, "writer") &&
      !wanted(section, "model")) {
    fprintf(stderr, "unknown section '%s' (basics, writer, model)\n", section);
    return 2;
  }
  printf("%d checks, %d failed\n", g_checks, g_failures);
  return g_failures ? 1 : 0;
}
