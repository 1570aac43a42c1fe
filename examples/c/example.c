/*
 * example.c - libmodelpack from C.
 *
 *   example_c write FILE   writes a small model with the writer API
 *   example_c read FILE    prints version, content id, metadata, components and tensors, verifies
 *                          every checksum and prints the first values of the first f32 tensor
 *   example_c FILE         same as read
 *
 * Build against an installed library:  cc -std=c99 example.c -lmodelpack
 * (or: cc example.c $(pkg-config --cflags --libs modelpack)).
 *
 * Every call returns an mpk_status; on failure mpk_last_error_message() says what went wrong.
 */
#include <modelpack/modelpack.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Prints the failed call and the library's message; evaluates to 1 on failure. */
static int failed(mpk_status status, const char *what) {
  if (status == MPK_OK) return 0;
  fprintf(stderr, "%s: %s: %s\n", what, mpk_status_name(status), mpk_last_error_message());
  return 1;
}

/* ---- writing ------------------------------------------------------------------------------- */

static int write_model(const char *path) {
  static const float embed[4][3] = {{0.1f, 0.2f, 0.3f},
                                    {0.4f, 0.5f, 0.6f},
                                    {0.7f, 0.8f, 0.9f},
                                    {1.0f, 1.1f, 1.2f}};
  static const uint64_t embed_shape[2] = {4, 3};
  static const float bias[3] = {-1.0f, 0.0f, 1.0f};
  static const uint64_t bias_shape[1] = {3};
  static const int32_t ids[5] = {0, 1, 2, 3, 4};
  static const uint64_t ids_shape[1] = {5};
  static const char *const vocab[5] = {"<s>", "</s>", "hello", "world", "!"};
  static const int64_t dims[2] = {4, 3};
  static const char merge0[] = "he llo", merge1[] = "wor ld";
  static const void *const merges[2] = {merge0, merge1};
  static const size_t merge_lens[2] = {sizeof merge0 - 1, sizeof merge1 - 1};
  mpk_writer *w = NULL;
  mpk_writer_options opts;
  int rc = 1;
  size_t i;

  /* Options: MPK_WRITER_OPTIONS_INIT, or (as here, and from other languages) the init function,
   * told the size of the struct this program was compiled with. */
  if (failed(mpk_writer_options_init(&opts, sizeof opts), "mpk_writer_options_init")) return 1;
  opts.alignment = 64; /* the default; shown for completeness */
  if (failed(mpk_writer_create(&w, path, &opts), "mpk_writer_create")) return 1;

  /* Metadata: typed key/value pairs. */
  if (failed(mpk_writer_set_string(w, "general.name", "example-c"), "set_string") ||
      failed(mpk_writer_set_int64(w, "model.layers", 1), "set_int64") ||
      failed(mpk_writer_set_float64(w, "model.eps", 1e-5), "set_float64") ||
      failed(mpk_writer_set_bool(w, "model.tied", 1), "set_bool") ||
      failed(mpk_writer_set_int64_array(w, "model.dims", dims, 2), "set_int64_array") ||
      failed(mpk_writer_set_string_array(w, "tokenizer.vocab", vocab, 5), "set_string_array") ||
      failed(mpk_writer_set_bytes_array(w, "tokenizer.merges", merges, merge_lens, 2),
             "set_bytes_array"))
    goto done;

  /* A whole tensor at once (component NULL = "weights"). */
  if (failed(mpk_writer_add_tensor(w, "embed.weight", MPK_DTYPE_F32, 2, embed_shape, embed,
                                   sizeof embed, NULL),
             "add_tensor embed.weight"))
    goto done;

  /* A tensor streamed in pieces, as a converter reading from another file would do. */
  if (failed(mpk_writer_begin_tensor(w, "layer0.bias", MPK_DTYPE_F32, 1, bias_shape, NULL),
             "begin_tensor"))
    goto done;
  for (i = 0; i < 3; ++i)
    if (failed(mpk_writer_write(w, &bias[i], sizeof bias[i]), "write")) goto done;
  if (failed(mpk_writer_end_tensor(w), "end_tensor")) goto done;

  /* A tensor in a component of its own. */
  if (failed(mpk_writer_add_component(w, "tokenizer", "tokenizer"), "add_component") ||
      failed(mpk_writer_add_tensor(w, "tokenizer.ids", MPK_DTYPE_I32, 1, ids_shape, ids,
                                   sizeof ids, "tokenizer"),
             "add_tensor tokenizer.ids"))
    goto done;

  /* Nothing exists at `path` until this succeeds. */
  if (failed(mpk_writer_commit(w), "mpk_writer_commit")) goto done;
  printf("wrote %s\n", path);
  rc = 0;
done:
  mpk_writer_free(w); /* without a successful commit, this removes the temporary file */
  return rc;
}

/* ---- reading ------------------------------------------------------------------------------- */

static void print_metadata(const mpk_model *m, size_t i) {
  const char *key = "";
  const char *s;
  const void *p;
  const int64_t *ints;
  const double *dbls;
  const uint8_t *bools;
  size_t len = 0, k;
  int64_t i64;
  double f64;
  int b;

  if (mpk_model_metadata_key(m, i, &key) != MPK_OK) return;
  printf("  %s = ", key);
  switch (mpk_model_metadata_type(m, i)) {
    case MPK_META_STRING:
      if (mpk_model_metadata_string(m, i, &s, &len) == MPK_OK) printf("\"%s\"", s);
      break;
    case MPK_META_INT64:
      if (mpk_model_metadata_int64(m, i, &i64) == MPK_OK) printf("%" PRId64, i64);
      break;
    case MPK_META_FLOAT64:
      if (mpk_model_metadata_float64(m, i, &f64) == MPK_OK) printf("%g", f64);
      break;
    case MPK_META_BOOL:
      if (mpk_model_metadata_bool(m, i, &b) == MPK_OK) printf("%s", b ? "true" : "false");
      break;
    case MPK_META_BYTES:
      if (mpk_model_metadata_bytes(m, i, &p, &len) == MPK_OK) printf("<%zu bytes>", len);
      break;
    case MPK_META_STRING_ARRAY:
      if (mpk_model_metadata_array_length(m, i, &len) != MPK_OK) break;
      printf("[");
      for (k = 0; k < len && k < 8; ++k) {
        size_t n;
        if (mpk_model_metadata_string_item(m, i, k, &s, &n) == MPK_OK)
          printf("%s\"%s\"", k ? ", " : "", s);
      }
      printf("%s]", len > 8 ? ", ..." : "");
      break;
    case MPK_META_INT64_ARRAY:
      if (mpk_model_metadata_int64_array(m, i, &ints, &len) != MPK_OK) break;
      printf("[");
      for (k = 0; k < len && k < 8; ++k) printf("%s%" PRId64, k ? ", " : "", ints[k]);
      printf("%s]", len > 8 ? ", ..." : "");
      break;
    case MPK_META_FLOAT64_ARRAY:
      if (mpk_model_metadata_float64_array(m, i, &dbls, &len) != MPK_OK) break;
      printf("[");
      for (k = 0; k < len && k < 8; ++k) printf("%s%g", k ? ", " : "", dbls[k]);
      printf("%s]", len > 8 ? ", ..." : "");
      break;
    case MPK_META_BOOL_ARRAY:
      if (mpk_model_metadata_bool_array(m, i, &bools, &len) != MPK_OK) break;
      printf("[");
      for (k = 0; k < len && k < 8; ++k) printf("%s%s", k ? ", " : "", bools[k] ? "true" : "false");
      printf("%s]", len > 8 ? ", ..." : "");
      break;
    case MPK_META_BYTES_ARRAY:
      if (mpk_model_metadata_array_length(m, i, &len) == MPK_OK) printf("<%zu byte strings>", len);
      break;
    default:
      printf("<unknown type, written by a newer libmodelpack>");
      break;
  }
  printf("\n");
}

static int read_model(const char *path) {
  mpk_model *m = NULL;
  mpk_open_options opts = MPK_OPEN_OPTIONS_INIT;
  unsigned major = 0, minor = 0;
  size_t i, n, first_f32 = (size_t)-1;
  mpk_status st;

  opts.access = MPK_ACCESS_MAP;     /* zero-copy: tensor bytes come from the mapping */
  opts.verify = MPK_VERIFY_HEADER;  /* header checksums at open; tensors below */
  if (failed(mpk_model_open(&m, path, &opts), "mpk_model_open")) return 1;

  mpk_model_format_version(m, &major, &minor);
  printf("libmodelpack %s (header %s), format %u.%u\n", mpk_version_string(), MPK_VERSION_STRING,
         major, minor);
  printf("file: %s, %" PRIu64 " bytes, alignment %" PRIu32 "\n", path, mpk_model_file_size(m),
         mpk_model_alignment(m));
  printf("content id: %s\n", mpk_model_content_id(m));

  n = mpk_model_metadata_count(m);
  printf("metadata (%zu):\n", n);
  for (i = 0; i < n; ++i) print_metadata(m, i);

  n = mpk_model_component_count(m);
  printf("components (%zu):\n", n);
  for (i = 0; i < n; ++i) {
    const char *name, *kind;
    uint64_t tensors, nbytes;
    if (mpk_model_component_info(m, i, &name, &kind, &tensors, &nbytes) == MPK_OK)
      printf("  %-12s kind %-10s %" PRIu64 " tensors, %" PRIu64 " bytes\n", name, kind, tensors,
             nbytes);
  }

  n = mpk_model_tensor_count(m);
  printf("tensors (%zu):\n", n);
  for (i = 0; i < n; ++i) {
    mpk_tensor_info info = MPK_TENSOR_INFO_INIT; /* struct_size must be set */
    char shape[256] = "[";
    uint32_t d;
    if (failed(mpk_model_tensor_info(m, i, &info), "mpk_model_tensor_info")) break;
    for (d = 0; d < info.ndim; ++d) {
      size_t used = strlen(shape);
      snprintf(shape + used, sizeof shape - used, "%s%" PRIu64, d ? ", " : "", info.shape[d]);
    }
    strncat(shape, "]", sizeof shape - strlen(shape) - 1);
    printf("  %-20s %-5s %-12s %8" PRIu64 " bytes at 0x%" PRIx64 "\n", info.name,
           mpk_dtype_name(info.dtype), shape, info.nbytes, info.offset);
    if (info.dtype == MPK_DTYPE_F32 && first_f32 == (size_t)-1) first_f32 = i;
  }

  /* Full verification hashes every tensor's bytes. */
  st = mpk_model_verify(m, MPK_VERIFY_FULL, 0);
  printf("verify: %s%s%s\n", mpk_status_name(st), st ? " - " : "",
         st ? mpk_last_error_message() : "");

  if (first_f32 != (size_t)-1) {
    const void *data;
    uint64_t nbytes, k;
    mpk_tensor_info info = MPK_TENSOR_INFO_INIT;
    if (!failed(mpk_model_tensor_info(m, first_f32, &info), "mpk_model_tensor_info") &&
        !failed(mpk_model_tensor_data(m, first_f32, &data, &nbytes), "mpk_model_tensor_data")) {
      printf("%s:", info.name);
      for (k = 0; k < nbytes / sizeof(float) && k < 8; ++k) {
        float v;
        memcpy(&v, (const unsigned char *)data + k * sizeof v, sizeof v);
        printf(" %g", (double)v);
      }
      printf("%s\n", nbytes / sizeof(float) > 8 ? " ..." : "");
    }
  }

  mpk_model_free(m);
  return st == MPK_OK ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "write") == 0) return write_model(argv[2]);
  if (argc == 3 && strcmp(argv[1], "read") == 0) return read_model(argv[2]);
  if (argc == 2) return read_model(argv[1]);
  fprintf(stderr, "usage: %s write FILE | read FILE | FILE\n", argv[0]);
  return 2;
}
