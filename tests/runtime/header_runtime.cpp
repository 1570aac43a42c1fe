// runtime.hpp compiles on its own under strict warnings (see CMakeLists.txt).
#include <modelpack/runtime.hpp>

int main() {
  mpk::rt::WeightView w;
  mpk::rt::RunOptions o;
  return int(w.rows) + int(o.threads);
}
