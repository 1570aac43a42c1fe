/* Package consumer (C): write a model with the C ABI, read it back, check a value. Built by
 * tests/package/run.sh with CMake (find_package) and with pkg-config. Usage: main FILE */
#include <modelpack/modelpack.h>

#include <stdio.h>
#include <string.h>

#define TRY(call)                                                                     \
  do {                                                                                \
    mpk_status s_ = (call);                                                           \
    if (s_ != MPK_OK) {                                                               \
      fprintf(stderr, "%s: %s: %s\n", #call, mpk_status_name(s_), mpk_last_error_message()); \
      return 1;                                                                       \
    }                                                                                 \
  } while (0)

int main(int argc, char **argv) {
  static const float values[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  static const uint64_t shape[2] = {2, 2};
  mpk_writer *w = NULL;
  mpk_model *m = NULL;
  size_t index = 0;
  float back[4] = {0};
  int ok;

  if (argc != 2) {
    fprintf(stderr, "usage: %s FILE\n", argv[0]);
    return 2;
  }
  if (mpk_version_number() != MPK_VERSION_NUMBER) {
    fprintf(stderr, "header %d, library %u\n", MPK_VERSION_NUMBER, mpk_version_number());
    return 1;
  }
  TRY(mpk_writer_create(&w, argv[1], NULL));
  TRY(mpk_writer_set_string(w, "consumer", "c"));
  TRY(mpk_writer_add_tensor(w, "w", MPK_DTYPE_F32, 2, shape, values, sizeof values, NULL));
  TRY(mpk_writer_commit(w));
  mpk_writer_free(w);

  {
    mpk_open_options opts;
    TRY(mpk_open_options_init(&opts, sizeof opts));
    opts.verify = MPK_VERIFY_FULL;
    TRY(mpk_model_open(&m, argv[1], &opts));
  }
  TRY(mpk_model_verify(m, MPK_VERIFY_FULL, 0));
  TRY(mpk_model_find_tensor(m, "w", &index));
  TRY(mpk_model_tensor_read(m, index, back, sizeof back));
  ok = memcmp(back, values, sizeof values) == 0;
  printf("consumer (C): libmodelpack %s, %s, content id %s\n", mpk_version_string(),
         ok ? "round trip OK" : "round trip FAILED", mpk_model_content_id(m));
  mpk_model_free(m);
  return ok ? 0 : 1;
}
