// mpk::convert and mpk_convert: format dispatch, atomic output, provenance metadata.
#include <modelpack/convert.hpp>
#include <modelpack/modelpack.h>

#include "testutil.hpp"

#include <cstdio>

using namespace testutil;

namespace {
// A small .safetensors file laid out as the reference writer lays it out (F32 before U8; compact
// JSON padded with spaces to a multiple of 8).
std::vector<uint8_t> small_safetensors() {
  std::string json =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("ids":{"dtype":"U8","shape":[3],"data_offsets":[8,11]}})";
  while (json.size() % 8) json += ' ';
  std::vector<uint8_t> f(8);
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) f[size_t(i)] = uint8_t(n >> (8 * i));
  f.insert(f.end(), json.begin(), json.end());
  float w[2] = {1.5f, -2.0f};
  const auto *wb = reinterpret_cast<const uint8_t *>(w);
  f.insert(f.end(), wb, wb + 8);
  for (uint8_t b : {7, 8, 9}) f.push_back(b);
  return f;
}
}  // namespace

TEST_CASE("formats are told from extensions and names", "[convert]") {
  CHECK(mpk::file_format_from_path("a/b.mpk") == mpk::FileFormat::Mpk);
  CHECK(mpk::file_format_from_path("model.safetensors") == mpk::FileFormat::Safetensors);
  CHECK(mpk::file_format_from_path("model.gguf") == mpk::FileFormat::Gguf);
  CHECK(!mpk::file_format_from_path("model.onnx"));
  CHECK(!mpk::file_format_from_path("mpk"));
  CHECK(mpk::file_format_from_name("safetensors") == mpk::FileFormat::Safetensors);
  CHECK(!mpk::file_format_from_name("SAFETENSORS"));
  CHECK(mpk::file_format_name(mpk::FileFormat::Mpk) == "mpk");
}

TEST_CASE("safetensors -> mpk -> safetensors is byte-identical and records provenance", "[convert]") {
  TempDir dir;
  auto src = small_safetensors();
  write_file(dir / "in.safetensors", src);
  REQUIRE_OK(mpk::convert(dir / "in.safetensors", dir / "m.mpk"));
  auto m = mpk::Model::open(dir / "m.mpk", {mpk::Access::Map, mpk::Verify::Full});
  REQUIRE(m.ok());
  CHECK(m->tensor_count() == 2);
  CHECK((*m->tensor("w")->as<float>())[1] == -2.0f);
  CHECK(m->metadata("convert.source_format")->as_string().value() == "safetensors");
  CHECK(m->metadata("safetensors.metadata.format")->as_string().value() == "pt");
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(mpk::checksum(std::as_bytes(std::span(src)))));
  CHECK(m->metadata("convert.source_xxh3")->as_string().value() == hex);
  CHECK(m->metadata("convert.tool")->as_string().value() == "libmodelpack " MPK_VERSION_STRING);
  REQUIRE_OK(mpk::convert(dir / "m.mpk", dir / "out.safetensors"));
  CHECK(read_file(dir / "out.safetensors") == src);
  // Formats named explicitly override the extensions.
  mpk::ConvertOptions o;
  o.from = mpk::FileFormat::Safetensors;
  o.to = mpk::FileFormat::Mpk;
  write_file(dir / "in.bin", src);
  REQUIRE_OK(mpk::convert(dir / "in.bin", dir / "m2.data", o));
  CHECK(mpk::Model::open(dir / "m2.data")->content_id() == m->content_id());
}

TEST_CASE("a failed conversion leaves nothing at the output path", "[convert]") {
  TempDir dir;
  auto src = small_safetensors();
  src[20] = '{';  // breaks the JSON header
  write_file(dir / "bad.safetensors", src);
  auto st = mpk::convert(dir / "bad.safetensors", dir / "out.mpk");
  CHECK(st.code() == MPK_ERR_BAD_FORMAT);
  REQUIRE_CODE(mpk::convert(dir / "missing.safetensors", dir / "out.mpk"), MPK_ERR_NOT_FOUND);
  REQUIRE_CODE(mpk::convert(dir / "x.onnx", dir / "out.mpk"), MPK_ERR_INVALID_ARGUMENT);
  REQUIRE_CODE(mpk::convert(dir / "bad.safetensors", dir / "out.bin"), MPK_ERR_INVALID_ARGUMENT);
  REQUIRE_CODE(mpk::convert(dir / "bad.safetensors", dir / "out.safetensors"), MPK_ERR_INVALID_ARGUMENT);
  CHECK(dir.entries() == std::vector<std::string>{"bad.safetensors"});
}

TEST_CASE("an export refuses a model whose tensor bytes do not match their checksums, writing nothing",
          "[convert][hostile]") {
  TempDir dir;
  write_file(dir / "m.safetensors", small_safetensors());
  REQUIRE_OK(mpk::convert(dir / "m.safetensors", dir / "m.mpk"));
  auto m = mpk::Model::open(dir / "m.mpk");
  REQUIRE(m.ok());
  const mpk::TensorInfo t = m->info(*m->find("w"));
  const uint64_t at = t.offset + 2;  // a byte inside tensor "w" (TensorInfo::offset is absolute)
  m = mpk::Result<mpk::Model>(mpk::Status(MPK_ERR_STATE, "closed"));
  auto bytes = read_file(dir / "m.mpk");
  bytes[size_t(at)] ^= 0x40;
  write_file(dir / "m.mpk", bytes);
  for (const char *out : {"o.safetensors", "o.npz", "o.gguf"}) {
    INFO(out);
    const mpk::Status s = mpk::convert(dir / "m.mpk", dir / out);
    CHECK(s.code() == MPK_ERR_CHECKSUM);
    INFO(s.to_string());
    CHECK(s.message().find("tensor 'w'") != std::string::npos);
    CHECK(!fs::exists(dir / out));
  }
  CHECK(dir.entries() == std::vector<std::string>{"m.mpk", "m.safetensors"});
}

TEST_CASE("the C ABI converts with and without options", "[convert]") {
  TempDir dir;
  write_file(dir / "in.safetensors", small_safetensors());
  std::string in = dir / "in.safetensors", mid = dir / "m.mpk", out = dir / "o.safetensors";
  CHECK(mpk_convert(in.c_str(), mid.c_str(), nullptr) == MPK_OK);
  mpk_convert_options o;
  REQUIRE(mpk_convert_options_init(&o, sizeof o) == MPK_OK);
  CHECK(o.struct_size == sizeof o);
  CHECK(o.from == MPK_FILE_AUTO);
  o.flags = MPK_WRITER_NO_FSYNC;
  o.alignment = 4096;
  std::string mid2 = dir / "m2.mpk";
  CHECK(mpk_convert(in.c_str(), mid2.c_str(), &o) == MPK_OK);
  CHECK(mpk::Model::open(mid2)->alignment() == 4096);
  CHECK(mpk_convert(mid.c_str(), out.c_str(), nullptr) == MPK_OK);
  CHECK(read_file(out) == small_safetensors());
  CHECK(mpk_convert(nullptr, out.c_str(), nullptr) == MPK_ERR_INVALID_ARGUMENT);
  CHECK(std::string(mpk_last_error_message()).find("in is NULL") != std::string::npos);
  o.from = 77;
  CHECK(mpk_convert(in.c_str(), mid.c_str(), &o) == MPK_ERR_INVALID_ARGUMENT);
  CHECK(std::string(mpk_last_error_message()).find("unknown file format 77") != std::string::npos);
  o.from = MPK_FILE_AUTO;
  o.flags = 0x80;
  CHECK(mpk_convert(in.c_str(), mid.c_str(), &o) == MPK_ERR_INVALID_ARGUMENT);
  CHECK(mpk_convert_options_init(&o, 3) == MPK_ERR_INVALID_ARGUMENT);
}

TEST_CASE("conversion progress reports the bytes written in both directions", "[convert]") {
  TempDir dir;
  // A 24 MiB model: several 4 MiB progress steps each way.
  {
    auto w = mpk::Writer::create(dir / "big.mpk", {64, false, {}});
    REQUIRE(w.ok());
    const uint64_t shape[] = {6, 1 << 20};
    REQUIRE_OK(w->add_tensor("w", MPK_DTYPE_F32, shape, random_bytes(24 << 20, 11)));
    REQUIRE_OK(w->commit());
  }
  for (auto [in, out] : {std::pair<std::string, std::string>{"big.mpk", "big.safetensors"},
                         {"big.safetensors", "back.mpk"}}) {
    INFO(in << " -> " << out);
    std::vector<std::pair<uint64_t, uint64_t>> seen;
    mpk::ConvertOptions o;
    o.writer.fsync = false;
    o.progress = [&](uint64_t done, uint64_t total) { seen.emplace_back(done, total); };
    REQUIRE_OK(mpk::convert(dir / in, dir / out, o));
    REQUIRE(seen.size() >= 5);
    for (size_t i = 1; i < seen.size(); ++i) CHECK(seen[i].first > seen[i - 1].first);
    const uint64_t in_size = std::filesystem::file_size(dir / in);
    const uint64_t out_size = std::filesystem::file_size(dir / out);
    CHECK(seen.front().second == in_size);  // the total is the input's size
    // The last report covers every byte of the output (the .mpk writer rewrites its 96-byte
    // preamble at the end, which counts again).
    CHECK(seen.back().first >= out_size);
    CHECK(seen.back().first <= out_size + 96);
  }
  // No callback, no reports: the default costs nothing.
  REQUIRE_OK(mpk::convert(dir / "big.mpk", dir / "again.safetensors"));
}
