/* Header test: modelpack.h must compile on its own, first, as C99 and as C++ (it is compiled with
 * -Wall -Wextra -pedantic -Werror, see CMakeLists.txt). The *_INIT macros are expanded so that
 * -Wmissing-field-initializers catches a field added to a struct but not to its macro. */
#include <modelpack/modelpack.h>
#include <modelpack/modelpack.h> /* include guard */

#ifndef MPK_API
#error "MPK_API must stay defined for users' declarations"
#endif

int header_test_use(void);

int header_test_use(void) {
  mpk_open_options open_options = MPK_OPEN_OPTIONS_INIT;
  mpk_writer_options writer_options = MPK_WRITER_OPTIONS_INIT;
  mpk_tensor_info info = MPK_TENSOR_INFO_INIT;
  mpk_model *model = NULL;
  mpk_writer *writer = NULL;
  mpk_status status = MPK_OK;
  mpk_dtype dtype = MPK_DTYPE_F32;
  mpk_meta_type type = MPK_META_STRING;
  mpk_access access = MPK_ACCESS_READ;
  mpk_verify_mode verify = MPK_VERIFY_FULL;
  /* Signatures that changed before 1.0, pinned: a mismatch is a compile error. */
  mpk_status (*open_init)(mpk_open_options *, size_t) = mpk_open_options_init;
  mpk_status (*writer_init)(mpk_writer_options *, size_t) = mpk_writer_options_init;
  mpk_status (*set_bytes_array)(mpk_writer *, const char *, const void *const *, const size_t *,
                                size_t) = mpk_writer_set_bytes_array;
  (void)model;
  (void)writer;
  (void)open_init;
  (void)writer_init;
  (void)set_bytes_array;
  return (int)open_options.struct_size + (int)writer_options.struct_size + (int)info.struct_size +
         (int)status + (int)dtype + (int)type + (int)access + (int)verify + MPK_VERSION_NUMBER +
         MPK_ABI_VERSION + MPK_FORMAT_MAJOR + MPK_CONTENT_ID_LENGTH + MPK_MAX_RANK;
}
