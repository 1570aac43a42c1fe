// The committed fixtures (tests/fixtures/, written by make_fixtures.py from a real trained model, and
// by numpy's own np.savez / np.savez_compressed / np.save) imported and exported again: every tensor
// matches the independent manifest (fixtures.json: names, shapes, XXH3-64 of the bytes), and
// safetensors files laid out as the reference writer lays them out come back byte for byte.
#include <modelpack/convert.hpp>

#include "testutil.hpp"

#include <nlohmann/json.hpp>

#include <cinttypes>
#include <fstream>

using namespace testutil;

namespace {
const std::string kDir = MPK_TEST_FIXTURES;

nlohmann::json manifest() {
  std::ifstream f(kDir + "/fixtures.json");
  REQUIRE(f.good());
  return nlohmann::json::parse(f);
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

// Every tensor the manifest lists for `files` is in `m`, with its shape and checksum (a sharded
// checkpoint lists its tensors per shard file).
void check_against(const mpk::Model &m, const nlohmann::json &man, std::initializer_list<std::string> files) {
  size_t listed = 0;
  for (const auto &file : files) {
    for (const auto &t : man["files"][file]["tensors"]) {
      const std::string name = t["name"];
      INFO(file << ": " << name);
      auto i = m.find(name);
      REQUIRE(i);
      auto info = m.info(*i);
      CHECK(std::vector<uint64_t>(info.shape.begin(), info.shape.end()) == t["shape"].get<std::vector<uint64_t>>());
      CHECK(info.nbytes == t["nbytes"].get<uint64_t>());
      CHECK(hex64(info.xxh3) == t["xxh3_64"].get<std::string>());
      ++listed;
    }
  }
  CHECK(listed == m.tensor_count());
  REQUIRE_OK(m.verify(mpk::Verify::Full));
}

mpk::ConvertOptions fast() {
  mpk::ConvertOptions o;
  o.writer.fsync = false;
  return o;
}
}  // namespace

TEST_CASE("fixture: the trained model's safetensors file round-trips byte for byte", "[fixtures]") {
  TempDir dir;
  auto man = manifest();
  const std::string in = kDir + "/digits_mlp.safetensors";
  REQUIRE_OK(mpk::convert(in, dir / "m.mpk", fast()));
  auto m = mpk::Model::open(dir / "m.mpk");
  REQUIRE(m.ok());
  check_against(*m, man, {"digits_mlp.safetensors"});
  CHECK(m->metadata("safetensors.metadata.format")->as_string().value() == "pt");
  REQUIRE_OK(mpk::convert(dir / "m.mpk", dir / "back.safetensors", fast()));
  CHECK(read_file(dir / "back.safetensors") == read_file(in));
}

TEST_CASE("fixture: the sharded checkpoint joins and splits again byte for byte", "[fixtures]") {
  TempDir dir;
  auto man = manifest();
  const std::string shards = kDir + "/digits_mlp_sharded/";
  REQUIRE_OK(mpk::convert(shards + "model.safetensors.index.json", dir / "m.mpk", fast()));
  auto m = mpk::Model::open(dir / "m.mpk");
  REQUIRE(m.ok());
  check_against(*m, man, {"digits_mlp_sharded/model-00001-of-00002.safetensors",
                          "digits_mlp_sharded/model-00002-of-00002.safetensors"});
  // The same weights as the single file: the content id depends on tensors only.
  REQUIRE_OK(mpk::convert(kDir + "/digits_mlp.safetensors", dir / "single.mpk", fast()));
  CHECK(mpk::Model::open(dir / "single.mpk")->content_id() == m->content_id());
  std::filesystem::create_directory(dir / "out");
  REQUIRE_OK(mpk::convert(dir / "m.mpk", dir / "out/model.safetensors.index.json", fast()));
  for (const char *f : {"model.safetensors.index.json", "model-00001-of-00002.safetensors",
                        "model-00002-of-00002.safetensors"}) {
    INFO(f);
    CHECK(read_file(dir / (std::string("out/") + f)) == read_file(shards + f));
  }
}

TEST_CASE("fixture: numpy's own .npz (stored and deflated) and .npy files import exactly", "[fixtures]") {
  TempDir dir;
  auto man = manifest();
  std::string ids[2];
  int k = 0;
  for (const char *f : {"digits_mlp.npz", "digits_mlp_compressed.npz"}) {
    INFO(f);
    REQUIRE_OK(mpk::convert(kDir + "/" + f, dir / "m.mpk", fast()));
    auto m = mpk::Model::open(dir / "m.mpk");
    REQUIRE(m.ok());
    check_against(*m, man, {f});
    CHECK(m->metadata("convert.source_format")->as_string().value() == "npz");
    ids[k++] = std::string(m->content_id());
    // Out again and back in: the same tensors.
    REQUIRE_OK(mpk::convert(dir / "m.mpk", dir / "again.npz", fast()));
    REQUIRE_OK(mpk::convert(dir / "again.npz", dir / "again.mpk", fast()));
    CHECK(mpk::Model::open(dir / "again.mpk")->content_id() == ids[k - 1]);
  }
  CHECK(ids[0] == ids[1]);  // stored and deflated hold the same arrays
  REQUIRE_OK(mpk::convert(kDir + "/digits_mlp_fc1.weight.npy", dir / "one.mpk", fast()));
  auto one = mpk::Model::open(dir / "one.mpk");
  REQUIRE(one.ok());
  REQUIRE(one->tensor_count() == 1);
  CHECK(one->info(0).name == "digits_mlp_fc1.weight");  // the file's stem
  const auto &t = man["files"]["digits_mlp_fc1.weight.npy"]["tensors"][0];
  CHECK(hex64(one->info(0).xxh3) == t["xxh3_64"].get<std::string>());
  // np.save writes a 128-byte header then the data: the export is byte-identical.
  REQUIRE_OK(mpk::convert(dir / "one.mpk", dir / "back.npy", fast()));
  CHECK(read_file(dir / "back.npy") == read_file(kDir + "/digits_mlp_fc1.weight.npy"));
}
