// Header test: modelpack.hpp must compile on its own, first, as C++20 with -Wall -Wextra -pedantic
// -Werror (see CMakeLists.txt); templates are instantiated so their bodies are checked too.
#include <modelpack/modelpack.hpp>
#include <modelpack/modelpack.hpp>  // #pragma once

#include <type_traits>

int header_test_use();

int header_test_use() {
  mpk::Result<int> r = 1;
  mpk::Result<int> e = mpk::Status(MPK_ERR_STATE, "x");
  mpk::TensorView view;
  std::optional<std::span<const float>> f = view.as<float>();
  std::optional<std::span<const int32_t>> i = view.as<int32_t>();
  static_assert(mpk::dtype_of<float>() == MPK_DTYPE_F32);
  static_assert(mpk::dtype_of<bool>() == MPK_DTYPE_BOOL);
  static_assert(!std::is_copy_constructible_v<mpk::Model>);
  static_assert(std::is_nothrow_move_constructible_v<mpk::Model>);
  static_assert(!std::is_copy_constructible_v<mpk::Writer>);
  static_assert(std::is_nothrow_move_constructible_v<mpk::Writer>);
  mpk::OpenOptions open_options;
  mpk::WriterOptions writer_options;
  return *r + (e.ok() ? 1 : 0) + int(view.numel()) + (f ? 1 : 0) + (i ? 1 : 0) +
         int(open_options.threads) + int(writer_options.alignment);
}
