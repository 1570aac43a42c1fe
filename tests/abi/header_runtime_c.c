/* Header test: runtime.h (the C ABI of libmodelpack_runtime) must compile on its own, first, as C99
 * and as C++ with -Wall -Wextra -pedantic -Werror; the *_INIT macros are expanded so that
 * -Wmissing-field-initializers catches a field added to a struct but not to its macro. */
#include <modelpack/runtime.h>
#include <modelpack/runtime.h> /* include guard */

int header_runtime_test_use(void);

int header_runtime_test_use(void) {
  mpk_runtime_options options = MPK_RUNTIME_OPTIONS_INIT;
  mpk_run_options run = MPK_RUN_OPTIONS_INIT;
  mpk_runtime_stats stats = MPK_RUNTIME_STATS_INIT;
  mpk_session_options session = MPK_SESSION_OPTIONS_INIT;
  mpk_tensor_arg arg = {0, MPK_DTYPE_F32, 0, 0, 0};
  mpk_graph *graph = NULL;
  mpk_session *s = NULL;
  mpk_runtime *rt = NULL;
  const mpk_model *model = NULL;
  (void)model;
  (void)rt;
  (void)graph;
  (void)s;
  (void)arg;
  return (int)(options.struct_size + run.struct_size + stats.struct_size + session.struct_size);
}
