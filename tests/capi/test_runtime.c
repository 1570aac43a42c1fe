/*
 * test_runtime.c - the C ABI of libmodelpack_runtime (include/modelpack/runtime.h) from plain C:
 * linear and matmul on a model's f32, f16, bf16 and int8 tensors (quantized with mpk_quantize)
 * against a naive double-precision product, the cache statistics, and every argument error.
 *
 * Usage: test_runtime SCRATCH_DIR
 */
#define _POSIX_C_SOURCE 200809L

#include <modelpack/modelpack.h>
#include <modelpack/runtime.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_checks, g_failures;

#define CHECK(cond, ...)                                                      \
  do {                                                                        \
    ++g_checks;                                                               \
    if (!(cond)) {                                                            \
      ++g_failures;                                                           \
      fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                           \
      fprintf(stderr, " (last error: %s)\n", mpk_last_error_message());      \
    }                                                                         \
  } while (0)
#define CHECK_STATUS(expr, want)                                                                   \
  do {                                                                                             \
    mpk_status got_ = (expr);                                                                      \
    CHECK(got_ == (want), "%s returned %s, expected %s", #expr, mpk_status_name(got_), #want);      \
  } while (0)
#define CHECK_OK(expr) CHECK_STATUS(expr, MPK_OK)

enum { N = 24, K = 40, M = 3 };

/* W [N, K] (linear layout) and its transpose WT [K, N] (matmul layout). */
static float W[N * K], WT[K * N], X[M * K], BIAS[N];

static void write_model(const char *path, const char *in) {
  mpk_writer *w = NULL;
  mpk_writer_options o = MPK_WRITER_OPTIONS_INIT;
  uint64_t shape[2] = {N, K}, tshape[2] = {K, N}, vshape[1] = {K}, s3[3] = {2, 3, 4};
  float v3[24] = {0};
  o.flags = MPK_WRITER_NO_FSYNC;
  if (mpk_writer_create(&w, path, &o) != MPK_OK) {
    fprintf(stderr, "cannot write %s: %s\n", path, mpk_last_error_message());
    exit(2);
  }
  CHECK_OK(mpk_writer_add_tensor(w, "w", MPK_DTYPE_F32, 2, shape, W, sizeof W, NULL));
  CHECK_OK(mpk_writer_add_tensor(w, "wt", MPK_DTYPE_F32, 2, tshape, WT, sizeof WT, NULL));
  CHECK_OK(mpk_writer_add_tensor(w, "vec", MPK_DTYPE_F32, 1, vshape, W, sizeof(float) * K, NULL));
  CHECK_OK(mpk_writer_add_tensor(w, "cube", MPK_DTYPE_F32, 3, s3, v3, sizeof v3, NULL));
  CHECK_OK(mpk_writer_commit(w));
  mpk_writer_free(w);
  (void)in;
}

/* max |y - x.W^T - b| / max(1, |y|) over the output, W given as [N, K]. */
static double max_rel_err(const float *y, uint64_t ldy) {
  double worst = 0;
  int m, n, k;
  for (m = 0; m < M; ++m)
    for (n = 0; n < N; ++n) {
      double r = BIAS[n], e;
      for (k = 0; k < K; ++k) r += (double)X[m * K + k] * (double)W[n * K + k];
      e = fabs((double)y[m * ldy + n] - r) / (fabs(r) > 1 ? fabs(r) : 1);
      if (e > worst) worst = e;
    }
  return worst;
}

int main(int argc, char **argv) {
  char dir[4096], f32[4200], q8[4200], h16[4200], b16[4200];
  mpk_runtime *rt = NULL;
  mpk_model *mf = NULL, *mq = NULL, *mh = NULL, *mb = NULL;
  mpk_runtime_options ro = MPK_RUNTIME_OPTIONS_INIT;
  mpk_run_options run = MPK_RUN_OPTIONS_INIT;
  mpk_quantize_options qo = MPK_QUANTIZE_OPTIONS_INIT;
  mpk_runtime_stats st = MPK_RUNTIME_STATS_INIT;
  float y[M * (N + 5)];
  size_t iw = 0, iwt = 0, ivec = 0, icube = 0, iscale = 0;
  int i;
  if (argc != 2) {
    fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
    return 2;
  }
  snprintf(dir, sizeof dir, "%s/rt-XXXXXX", argv[1]);
  if (!mkdtemp(dir)) return 2;
  snprintf(f32, sizeof f32, "%s/f32.mpk", dir);
  snprintf(q8, sizeof q8, "%s/int8.mpk", dir);
  snprintf(h16, sizeof h16, "%s/f16.mpk", dir);
  snprintf(b16, sizeof b16, "%s/bf16.mpk", dir);
  for (i = 0; i < N * K; ++i) W[i] = (float)((i * 7919) % 97 - 48) / 200.0f;
  for (i = 0; i < N * K; ++i) WT[(i % K) * N + i / K] = W[i];
  for (i = 0; i < M * K; ++i) X[i] = (float)((i * 31) % 23 - 11) / 10.0f;
  for (i = 0; i < N; ++i) BIAS[i] = (float)i / 8.0f;
  write_model(f32, NULL);
  qo.flags = MPK_QUANTIZE_NO_FSYNC;
  qo.exclude = "cube";
  qo.target = MPK_QUANTIZE_INT8;
  CHECK_OK(mpk_quantize(f32, q8, &qo));
  qo.target = MPK_QUANTIZE_F16;
  CHECK_OK(mpk_quantize(f32, h16, &qo));
  qo.target = MPK_QUANTIZE_BF16;
  CHECK_OK(mpk_quantize(f32, b16, &qo));

  CHECK_STATUS(mpk_runtime_create(NULL, NULL), MPK_ERR_INVALID_ARGUMENT);
  ro.reserved = 1;
  CHECK_STATUS(mpk_runtime_create(&rt, &ro), MPK_ERR_INVALID_ARGUMENT);
  ro.reserved = 0;
  ro.struct_size = 4;
  CHECK_STATUS(mpk_runtime_create(&rt, &ro), MPK_ERR_INVALID_ARGUMENT);
  CHECK_OK(mpk_runtime_options_init(&ro, sizeof ro));
  CHECK(ro.cache_budget_bytes == (UINT64_C(1) << 30), "default budget");
  ro.cache_budget_bytes = UINT64_C(64) << 20;
  CHECK_OK(mpk_runtime_create(&rt, &ro));
  if (!rt) return 1;
  CHECK_OK(mpk_model_open(&mf, f32, NULL));
  CHECK_OK(mpk_model_open(&mq, q8, NULL));
  CHECK_OK(mpk_model_open(&mh, h16, NULL));
  CHECK_OK(mpk_model_open(&mb, b16, NULL));
  if (!mf || !mq || !mh || !mb) return 1;
  CHECK_OK(mpk_model_find_tensor(mf, "w", &iw));
  CHECK_OK(mpk_model_find_tensor(mf, "wt", &iwt));
  CHECK_OK(mpk_model_find_tensor(mf, "vec", &ivec));
  CHECK_OK(mpk_model_find_tensor(mf, "cube", &icube));

  /* f32: linear on [N, K] and matmul on its transpose, with an output stride. */
  CHECK_OK(mpk_run_linear(rt, mf, iw, X, M, K, K, BIAS, y, N + 5, &run));
  CHECK(max_rel_err(y, N + 5) < 1e-5, "f32 linear error %g", max_rel_err(y, N + 5));
  CHECK_OK(mpk_run_matmul(rt, mf, iwt, X, M, K, K, BIAS, y, N, NULL));
  CHECK(max_rel_err(y, N) < 1e-5, "f32 matmul error %g", max_rel_err(y, N));
  /* Reduced precision: the same product within the storage's error (int8 per channel ~1%, bf16
   * ~0.4%, f16 ~0.05% of the row's magnitude here). */
  {
    const mpk_model *models[3] = {mq, mh, mb};
    const double tol[3] = {0.05, 0.005, 0.02};
    int k;
    for (k = 0; k < 3; ++k) {
      size_t idx = 0;
      CHECK_OK(mpk_model_find_tensor(models[k], "w", &idx));
      CHECK_OK(mpk_run_linear(rt, models[k], idx, X, M, K, K, BIAS, y, N, &run));
      CHECK(max_rel_err(y, N) < tol[k], "model %d: error %g", k, max_rel_err(y, N));
      CHECK_OK(mpk_model_find_tensor(models[k], "wt", &idx));
      CHECK_OK(mpk_run_matmul(rt, models[k], idx, X, M, K, K, BIAS, y, N, &run));
      CHECK(max_rel_err(y, N) < tol[k], "model %d matmul: error %g", k, max_rel_err(y, N));
    }
  }
  /* A second call hits the cache. */
  CHECK_OK(mpk_runtime_stats_get(rt, &st));
  {
    uint64_t hits = st.hits;
    CHECK(st.entries >= 1 && st.bytes_used > 0 && st.budget == (UINT64_C(64) << 20), "stats: %llu entries, %llu bytes",
          (unsigned long long)st.entries, (unsigned long long)st.bytes_used);
    CHECK_OK(mpk_run_linear(rt, mf, iw, X, M, K, K, BIAS, y, N, &run));
    CHECK_OK(mpk_runtime_stats_get(rt, &st));
    CHECK(st.hits == hits + 1, "hits %llu -> %llu", (unsigned long long)hits, (unsigned long long)st.hits);
  }
  mpk_runtime_clear_cache(rt);
  CHECK_OK(mpk_runtime_stats_get(rt, &st));
  CHECK(st.entries == 0 && st.bytes_used == 0, "clear_cache left %llu entries", (unsigned long long)st.entries);
  st.struct_size = 8;
  CHECK_STATUS(mpk_runtime_stats_get(rt, &st), MPK_ERR_INVALID_ARGUMENT);

  /* Packed-weights files: a second runtime maps what the first packed, and computes the same bits. */
  {
    char side[4300];
    float y1[M * N], y2[M * N];
    uint64_t n = 99, offered = 0;
    mpk_runtime *rt2 = NULL;
    mpk_runtime_stats st2 = MPK_RUNTIME_STATS_INIT;
    snprintf(side, sizeof side, "%s/packed.mpk", dir);
    CHECK_OK(mpk_run_linear(rt, mf, iw, X, M, K, K, BIAS, y1, N, &run));
    CHECK_OK(mpk_runtime_save_packed(rt, side, &n));
    CHECK(n == 1, "save_packed wrote %llu weights", (unsigned long long)n);
    CHECK_OK(mpk_runtime_create(&rt2, NULL));
    if (rt2) {
      CHECK_STATUS(mpk_runtime_load_packed(rt2, f32, &offered), MPK_ERR_BAD_FORMAT); /* a model */
      CHECK(strstr(mpk_last_error_message(), "not a packed-weights file") != NULL, "message: %s", mpk_last_error_message());
      CHECK_STATUS(mpk_runtime_load_packed(rt2, NULL, &offered), MPK_ERR_INVALID_ARGUMENT);
      CHECK_STATUS(mpk_runtime_load_packed(NULL, side, &offered), MPK_ERR_INVALID_ARGUMENT);
      CHECK_OK(mpk_runtime_load_packed(rt2, side, &offered));
      CHECK(offered == 1, "offered %llu", (unsigned long long)offered);
      CHECK_OK(mpk_run_linear(rt2, mf, iw, X, M, K, K, BIAS, y2, N, &run));
      CHECK(memcmp(y1, y2, sizeof y1) == 0, "the packed file gives other bits");
      CHECK_OK(mpk_runtime_stats_get(rt2, &st2));
      CHECK(st2.file_weights == 1 && st2.file_used == 1 && st2.file_rejected == 0, "file stats %llu %llu %llu",
            (unsigned long long)st2.file_weights, (unsigned long long)st2.file_used, (unsigned long long)st2.file_rejected);
      /* A caller built against the older 72-byte struct gets those 72 bytes and nothing past them. */
      {
        unsigned char raw[sizeof(mpk_runtime_stats) + 8];
        uint32_t old_size = 72;
        memset(raw, 0xAB, sizeof raw);
        memcpy(raw, &old_size, 4);
        CHECK_OK(mpk_runtime_stats_get(rt2, (mpk_runtime_stats *)(void *)raw));
        CHECK(raw[72] == 0xAB && raw[sizeof raw - 1] == 0xAB, "wrote past struct_size");
        old_size = 76; /* not a field boundary: the field at 72 is not written in part */
        memset(raw, 0xAB, sizeof raw);
        memcpy(raw, &old_size, 4);
        CHECK_OK(mpk_runtime_stats_get(rt2, (mpk_runtime_stats *)(void *)raw));
        CHECK(raw[72] == 0xAB && raw[75] == 0xAB, "wrote half a field");
      }
      CHECK(st2.packed == 1, "packed entries %llu", (unsigned long long)st2.packed);
      mpk_runtime_free(rt2);
    }
    /* Signed: loads with the signer's key; unsigned or another key is MPK_ERR_SIGNATURE, nothing offered. */
    {
      char keyp[4300], pubp[4400], signedp[4400];
      uint8_t keys[64];
      mpk_runtime *rt3 = NULL;
      mpk_runtime_stats st3 = MPK_RUNTIME_STATS_INIT;
      snprintf(keyp, sizeof keyp, "%s/packer", dir);
      snprintf(pubp, sizeof pubp, "%s.pub", keyp);
      snprintf(signedp, sizeof signedp, "%s/packed.signed.mpk", dir);
      CHECK_OK(mpk_keygen(keyp, 0));
      CHECK_OK(mpk_public_key_load(pubp, keys + 32));
      memcpy(keys, keys + 32, 32);
      keys[0] ^= 1; /* keys[0..31]: some other key; keys[32..63]: the signer's */
      CHECK_OK(mpk_sign(side, keyp, signedp, MPK_SIGN_NO_FSYNC));
      CHECK_OK(mpk_runtime_create(&rt3, NULL));
      if (rt3) {
        offered = 7;
        CHECK_STATUS(mpk_runtime_load_packed_signed(rt3, side, keys, 2, 0, &offered), MPK_ERR_SIGNATURE);
        CHECK_STATUS(mpk_runtime_load_packed_signed(rt3, signedp, keys, 1, 0, &offered), MPK_ERR_SIGNATURE);
        CHECK_STATUS(mpk_runtime_load_packed_signed(rt3, signedp, NULL, 1, 0, &offered), MPK_ERR_INVALID_ARGUMENT);
        CHECK_STATUS(mpk_runtime_load_packed_signed(rt3, signedp, keys, 0, 0, &offered), MPK_ERR_INVALID_ARGUMENT);
        CHECK(offered == 7, "offered written on error: %llu", (unsigned long long)offered);
        CHECK_OK(mpk_runtime_stats_get(rt3, &st3));
        CHECK(st3.file_weights == 0, "weights offered after refusals: %llu", (unsigned long long)st3.file_weights);
        CHECK_OK(mpk_runtime_load_packed_signed(rt3, signedp, keys, 2, 2, &offered));
        CHECK(offered == 1, "offered %llu", (unsigned long long)offered);
        CHECK_OK(mpk_run_linear(rt3, mf, iw, X, M, K, K, BIAS, y2, N, &run));
        CHECK(memcmp(y1, y2, sizeof y1) == 0, "the signed packed file gives other bits");
        CHECK_OK(mpk_runtime_stats_get(rt3, &st3));
        CHECK(st3.file_used == 1, "file_used %llu", (unsigned long long)st3.file_used);
        mpk_runtime_free(rt3);
      }
    }
    CHECK_STATUS(mpk_runtime_save_packed(rt, NULL, &n), MPK_ERR_INVALID_ARGUMENT);
  }

  /* Errors: nothing written to y. */
  for (i = 0; i < M * N; ++i) y[i] = 12345.0f;
  CHECK_STATUS(mpk_run_linear(NULL, mf, iw, X, M, K, K, BIAS, y, N, NULL), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_run_linear(rt, NULL, iw, X, M, K, K, BIAS, y, N, NULL), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_run_linear(rt, mf, 99, X, M, K, K, BIAS, y, N, NULL), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_run_linear(rt, mf, iw, NULL, M, K, K, BIAS, y, N, NULL), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_run_linear(rt, mf, iw, X, M, K + 1, K + 1, BIAS, y, N, NULL), MPK_ERR_BAD_SHAPE);
  CHECK_STATUS(mpk_run_linear(rt, mf, iw, X, M, K, K - 1, BIAS, y, N, NULL), MPK_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(mpk_run_linear(rt, mf, ivec, X, M, K, K, NULL, y, N, NULL), MPK_ERR_BAD_SHAPE);
  CHECK(strstr(mpk_last_error_message(), "'vec'") != NULL, "message names the tensor: %s", mpk_last_error_message());
  CHECK_STATUS(mpk_run_linear(rt, mf, icube, X, M, K, K, NULL, y, N, NULL), MPK_ERR_BAD_SHAPE);
  CHECK_OK(mpk_model_find_tensor(mq, "w.scale", &iscale));
  CHECK_STATUS(mpk_run_linear(rt, mq, iscale, X, M, K, K, NULL, y, N, NULL), MPK_ERR_BAD_SHAPE); /* 1-D scales */
  run.struct_size = 2;
  CHECK_STATUS(mpk_run_linear(rt, mf, iw, X, M, K, K, BIAS, y, N, &run), MPK_ERR_INVALID_ARGUMENT);
  for (i = 0; i < M * N; ++i) CHECK(y[i] == 12345.0f, "y[%d] written by a failed call", i);
  /* M = 0 is a no-op. */
  CHECK_OK(mpk_run_linear(rt, mf, iw, NULL, 0, K, K, NULL, NULL, N, NULL));

  /* Graphs and sessions: a one-layer mlp ("fc.weight" = W, "fc.bias" = BIAS) through the template. */
  {
    char fc[4200];
    mpk_writer *w = NULL;
    mpk_writer_options o = MPK_WRITER_OPTIONS_INIT;
    mpk_model *mfc = NULL;
    mpk_graph *g = NULL;
    mpk_session *s = NULL;
    mpk_session_options so = MPK_SESSION_OPTIONS_INIT;
    uint64_t shape[2] = {N, K}, bshape[1] = {N};
    int64_t xshape[2] = {M, K}, bad_shape[2] = {M, K - 1};
    mpk_tensor_arg arg;
    mpk_dtype dt = MPK_DTYPE_INVALID;
    uint32_t ndim = 0;
    const int64_t *oshape = NULL;
    const void *odata = NULL;
    const char *pname = NULL, *pop = NULL;
    uint64_t calls = 0;
    double secs = 0;
    snprintf(fc, sizeof fc, "%s/fc.mpk", dir);
    o.flags = MPK_WRITER_NO_FSYNC;
    CHECK_OK(mpk_writer_create(&w, fc, &o));
    CHECK_OK(mpk_writer_add_tensor(w, "fc.weight", MPK_DTYPE_F32, 2, shape, W, sizeof W, NULL));
    CHECK_OK(mpk_writer_add_tensor(w, "fc.bias", MPK_DTYPE_F32, 1, bshape, BIAS, sizeof BIAS, NULL));
    CHECK_OK(mpk_writer_commit(w));
    mpk_writer_free(w);
    CHECK_OK(mpk_model_open(&mfc, fc, NULL));
    CHECK_STATUS(mpk_graph_load(rt, mfc, NULL, NULL, &g), MPK_ERR_NOT_FOUND); /* no stored graph */
    CHECK(g == NULL, "a failed load leaves no graph");
    CHECK_STATUS(mpk_graph_load(rt, mfc, "resnet", NULL, &g), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_graph_load(rt, mfc, "gpt2", NULL, &g), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_graph_load(rt, mfc, "mlp", "{\"layers\": 1}", &g), MPK_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(mpk_graph_load(NULL, mfc, "mlp", NULL, &g), MPK_ERR_INVALID_ARGUMENT);
    CHECK_OK(mpk_graph_load(rt, mfc, "mlp", NULL, &g));
    if (!g) return 1;
    CHECK(mpk_graph_input_count(g) == 1 && strcmp(mpk_graph_input_name(g, 0), "x") == 0, "graph input");
    CHECK(mpk_graph_input_dtype(g, 0) == MPK_DTYPE_F32 && mpk_graph_input_dtype(g, 1) == MPK_DTYPE_INVALID, "dtype");
    CHECK(mpk_graph_output_count(g) == 1 && strcmp(mpk_graph_output_name(g, 0), "logits") == 0, "graph output");
    CHECK(mpk_graph_input_name(g, 5) == NULL, "out of range name");
    so.reserved = 1;
    CHECK_STATUS(mpk_session_create(g, &so, &s), MPK_ERR_INVALID_ARGUMENT);
    so.reserved = 0;
    so.profile = 1;
    CHECK_OK(mpk_session_create(g, &so, &s));
    if (!s) return 1;
    CHECK_STATUS(mpk_session_output(s, 0, &dt, &ndim, &oshape, &odata), MPK_ERR_STATE); /* before a run */
    arg.name = "x";
    arg.dtype = MPK_DTYPE_F32;
    arg.ndim = 2;
    arg.shape = xshape;
    arg.data = X;
    CHECK_OK(mpk_session_run(s, &arg, 1));
    CHECK_OK(mpk_session_output(s, 0, &dt, &ndim, &oshape, &odata));
    CHECK(dt == MPK_DTYPE_F32 && ndim == 2 && oshape[0] == M && oshape[1] == N, "output shape");
    CHECK(max_rel_err((const float *)odata, N) < 1e-5, "session error %g", max_rel_err((const float *)odata, N));
    CHECK_OK(mpk_session_profile(s, 0, &pname, &pop, &calls, &secs));
    CHECK(strcmp(pop, "linear") == 0 && calls == 1 && secs >= 0, "profile of node 0: %s %llu", pop, (unsigned long long)calls);
    CHECK_STATUS(mpk_session_profile(s, 9, &pname, &pop, &calls, &secs), MPK_ERR_INVALID_ARGUMENT);
    CHECK(mpk_session_cached_tokens(s) == 0, "no attention, no cache");
    /* Bad inputs: named errors, and no outputs afterwards. */
    CHECK_STATUS(mpk_session_run(s, NULL, 0), MPK_ERR_NOT_FOUND);
    CHECK_STATUS(mpk_session_output(s, 0, &dt, &ndim, &oshape, &odata), MPK_ERR_STATE);
    arg.shape = bad_shape;
    CHECK_STATUS(mpk_session_run(s, &arg, 1), MPK_ERR_BAD_SHAPE);
    arg.shape = xshape;
    arg.dtype = MPK_DTYPE_I64;
    CHECK_STATUS(mpk_session_run(s, &arg, 1), MPK_ERR_BAD_DTYPE);
    arg.dtype = MPK_DTYPE_F16;
    CHECK_STATUS(mpk_session_run(s, &arg, 1), MPK_ERR_BAD_DTYPE);
    arg.dtype = MPK_DTYPE_F32;
    arg.name = "nope";
    CHECK_STATUS(mpk_session_run(s, &arg, 1), MPK_ERR_NOT_FOUND);
    arg.name = "x";
    arg.data = (const char *)X + 1;
    CHECK_STATUS(mpk_session_run(s, &arg, 1), MPK_ERR_MISALIGNED);
    arg.data = X;
    CHECK_OK(mpk_session_run(s, &arg, 1));
    mpk_session_reset(s);
    CHECK_STATUS(mpk_session_output(s, 0, &dt, &ndim, &oshape, &odata), MPK_ERR_STATE);
    { /* choosing outputs: names checked, the choice kept on error, outputs of the last run dropped */
      const char *good[] = {"logits"}, *nope[] = {"nope"}, *twice[] = {"logits", "logits"}, *null_name[] = {NULL};
      CHECK_OK(mpk_session_run(s, &arg, 1));
      CHECK_OK(mpk_session_select_outputs(s, good, 1));
      CHECK_STATUS(mpk_session_output(s, 0, &dt, &ndim, &oshape, &odata), MPK_ERR_STATE);
      CHECK_STATUS(mpk_session_select_outputs(s, nope, 1), MPK_ERR_NOT_FOUND);
      CHECK(strstr(mpk_last_error_message(), "nope") != NULL, "message names the output: %s", mpk_last_error_message());
      CHECK_STATUS(mpk_session_select_outputs(s, twice, 2), MPK_ERR_DUPLICATE);
      CHECK_STATUS(mpk_session_select_outputs(s, null_name, 1), MPK_ERR_INVALID_ARGUMENT);
      CHECK_STATUS(mpk_session_select_outputs(s, NULL, 1), MPK_ERR_INVALID_ARGUMENT);
      CHECK_STATUS(mpk_session_select_outputs(NULL, good, 1), MPK_ERR_INVALID_ARGUMENT);
      CHECK_OK(mpk_session_run(s, &arg, 1));
      CHECK_OK(mpk_session_output(s, 0, &dt, &ndim, &oshape, &odata));
      CHECK(max_rel_err((const float *)odata, N) < 1e-5, "selected output");
      CHECK_STATUS(mpk_session_output(s, 1, &dt, &ndim, &oshape, &odata), MPK_ERR_INVALID_ARGUMENT);
      CHECK_OK(mpk_session_select_outputs(s, NULL, 0)); /* all again */
      CHECK_OK(mpk_session_run(s, &arg, 1));
      CHECK_OK(mpk_session_output(s, 0, &dt, &ndim, &oshape, &odata));
    }
    mpk_session_free(s);
    mpk_session_free(NULL);
    mpk_graph_free(g);
    mpk_graph_free(NULL);
    mpk_model_free(mfc);
    unlink(fc);
  }

  mpk_model_free(mf);
  mpk_model_free(mq);
  mpk_model_free(mh);
  mpk_model_free(mb);
  mpk_runtime_free(rt);
  mpk_runtime_free(NULL);
  unlink(f32);
  unlink(q8);
  unlink(h16);
  unlink(b16);
  rmdir(dir);
  printf("%d checks, %d failed\n", g_checks, g_failures);
  return g_failures ? 1 : 0;
}
