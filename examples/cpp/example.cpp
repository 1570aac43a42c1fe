// example.cpp - libmodelpack from C++ (modelpack.hpp).
//
//   example_cpp write FILE   writes a small model
//   example_cpp read FILE    prints it, verifies every checksum, prints the first f32 values
//
// Build against an installed library (CMake):
//   find_package(modelpack CONFIG REQUIRED)
//   target_link_libraries(app PRIVATE modelpack::modelpack)
//
// No exceptions: fallible calls return mpk::Status or mpk::Result<T>.
#include <modelpack/modelpack.hpp>

#include <array>
#include <cstdio>
#include <string>
#include <vector>

namespace {

// Status carries the C ABI's code and a message naming the tensor/key and offsets involved.
int fail(const mpk::Status &s) {
  std::fprintf(stderr, "%s: %s\n", mpk_status_name(s.code()), s.message().c_str());
  return 1;
}

int write_model(const std::string &path) {
  auto writer = mpk::Writer::create(path);
  if (!writer) return fail(writer.status());
  mpk::Writer &w = *writer;

  const std::array<float, 12> embed = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f,
                                       0.7f, 0.8f, 0.9f, 1.0f, 1.1f, 1.2f};
  const std::array<float, 3> bias = {-1.0f, 0.0f, 1.0f};
  const std::array<int32_t, 5> ids = {0, 1, 2, 3, 4};
  const std::array<uint64_t, 2> embed_shape = {4, 3};
  const std::array<uint64_t, 1> bias_shape = {3}, ids_shape = {5};

  // Each step returns a Status; stop at the first failure (the writer's destructor then removes
  // the temporary file, and nothing appears at `path`).
  using namespace std::string_literals;
  if (auto s = w.set_metadata("general.name", "example-cpp"s); !s) return fail(s);
  if (auto s = w.set_metadata("model.layers", int64_t{1}); !s) return fail(s);
  if (auto s = w.set_metadata("model.eps", 1e-5); !s) return fail(s);
  if (auto s = w.set_metadata("model.tied", true); !s) return fail(s);
  if (auto s = w.set_metadata("model.dims", std::vector<int64_t>{4, 3}); !s) return fail(s);
  if (auto s = w.set_metadata("tokenizer.vocab",
                              std::vector<std::string>{"<s>", "</s>", "hello", "world", "!"});
      !s)
    return fail(s);

  if (auto s = w.add<float>("embed.weight", embed_shape, embed); !s) return fail(s);

  // Streaming: begin, write any number of pieces, end.
  if (auto s = w.begin_tensor("layer0.bias", MPK_DTYPE_F32, bias_shape); !s) return fail(s);
  for (const float &b : bias)
    if (auto s = w.write(std::as_bytes(std::span(&b, 1))); !s) return fail(s);
  if (auto s = w.end_tensor(); !s) return fail(s);

  if (auto s = w.add_component("tokenizer", "tokenizer"); !s) return fail(s);
  if (auto s = w.add<int32_t>("tokenizer.ids", ids_shape, ids, "tokenizer"); !s) return fail(s);

  if (mpk::Status s = w.commit(); !s) return fail(s);
  std::printf("wrote %s\n", path.c_str());
  return 0;
}

void print_value(const mpk::MetaValue &v) {
  switch (v.type()) {
    case MPK_META_STRING: {
      std::string_view s = *v.as_string();
      std::printf("\"%.*s\"", int(s.size()), s.data());
      break;
    }
    case MPK_META_INT64: std::printf("%lld", static_cast<long long>(*v.as_int64())); break;
    case MPK_META_FLOAT64: std::printf("%g", *v.as_float64()); break;
    case MPK_META_BOOL: std::printf("%s", *v.as_bool() ? "true" : "false"); break;
    case MPK_META_BYTES: std::printf("<%zu bytes>", v.as_bytes()->size()); break;
    case MPK_META_INT64_ARRAY: {
      const char *sep = "";
      std::printf("[");
      auto items = v.as_int64_array();  // keep the Result alive while iterating its span
      for (int64_t x : *items) {
        std::printf("%s%lld", sep, static_cast<long long>(x));
        sep = ", ";
      }
      std::printf("]");
      break;
    }
    case MPK_META_STRING_ARRAY: {
      std::printf("[");
      for (size_t i = 0; i < v.array_length(); ++i) {
        auto s = v.string_item(i);
        std::printf("%s\"%.*s\"", i ? ", " : "", int(s->size()), s->data());
      }
      std::printf("]");
      break;
    }
    default: std::printf("<%zu items>", v.array_length()); break;
  }
}

int read_model(const std::string &path) {
  auto opened = mpk::Model::open(path, {.access = mpk::Access::Map, .verify = mpk::Verify::Header});
  if (!opened) return fail(opened.status());
  const mpk::Model &m = *opened;

  std::printf("libmodelpack %s, format %u.%u\n", MPK_VERSION_STRING, m.format_major(), m.format_minor());
  std::printf("file: %s, %llu bytes, alignment %u\n", path.c_str(),
              static_cast<unsigned long long>(m.file_size()), m.alignment());
  std::printf("content id: %.*s\n", int(m.content_id().size()), m.content_id().data());

  std::printf("metadata (%zu):\n", m.metadata_count());
  for (size_t i = 0; i < m.metadata_count(); ++i) {
    std::printf("  %.*s = ", int(m.metadata_key(i).size()), m.metadata_key(i).data());
    print_value(m.metadata_value(i));
    std::printf("\n");
  }

  std::printf("components (%zu):\n", m.component_count());
  for (size_t i = 0; i < m.component_count(); ++i) {
    mpk::ComponentInfo c = m.component(i);
    std::printf("  %-12.*s kind %-10.*s %llu tensors\n", int(c.name.size()), c.name.data(),
                int(c.kind.size()), c.kind.data(), static_cast<unsigned long long>(c.tensors));
  }

  std::printf("tensors (%zu):\n", m.tensor_count());
  for (size_t i = 0; i < m.tensor_count(); ++i) {
    mpk::TensorInfo t = m.info(i);
    std::string shape = "[";
    for (uint64_t d : t.shape) shape += (shape.size() > 1 ? ", " : "") + std::to_string(d);
    shape += "]";
    std::printf("  %-20.*s %-5s %-12s %8llu bytes at 0x%llx\n", int(t.name.size()), t.name.data(),
                std::string(mpk::dtype_name(t.dtype)).c_str(), shape.c_str(),
                static_cast<unsigned long long>(t.nbytes), static_cast<unsigned long long>(t.offset));
  }

  mpk::Status verified = m.verify(mpk::Verify::Full);
  std::printf("verify: %s%s%s\n", mpk_status_name(verified.code()), verified ? "" : " - ",
              verified.message().c_str());

  for (size_t i = 0; i < m.tensor_count(); ++i) {
    if (m.info(i).dtype != MPK_DTYPE_F32) continue;
    auto view = m.tensor(i);  // zero-copy view into the mapping
    if (!view) return fail(view.status());
    std::span<const float> values = *view->as<float>();
    std::printf("%.*s:", int(view->name.size()), view->name.data());
    for (size_t k = 0; k < values.size() && k < 8; ++k) std::printf(" %g", double(values[k]));
    std::printf("%s\n", values.size() > 8 ? " ..." : "");
    break;
  }
  return verified ? 0 : 1;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc == 3 && std::string(argv[1]) == "write") return write_model(argv[2]);
  if (argc == 3 && std::string(argv[1]) == "read") return read_model(argv[2]);
  if (argc == 2) return read_model(argv[1]);
  std::fprintf(stderr, "usage: %s write FILE | read FILE | FILE\n", argv[0]);
  return 2;
}
