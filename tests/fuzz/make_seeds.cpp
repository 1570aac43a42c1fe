// make_seeds - writes the seed corpora of the fuzz targets: small valid inputs of every kind each
// target reads (a fuzzer mutates what it has; a valid file of each feature gets it past the first
// checks). Deterministic: running it again rewrites the same files, so the committed corpora can
// be regenerated after a format change. Usage: make_seeds DIR   (writes DIR/<target>/<name>)
#include "fixed_models.hpp"

#include "codec/chunk.hpp"

#include <modelpack/gguf.hpp>
#include <modelpack/graph.hpp>
#include <modelpack/npy.hpp>
#include <modelpack/npz.hpp>
#include <modelpack/patch.hpp>
#include <modelpack/quant.hpp>
#include <modelpack/safetensors.hpp>

#include <fstream>
#include <iostream>

namespace fs = std::filesystem;
using fuzz::must;

static fs::path g_root;

static std::string seed(const std::string &target, const std::string &name) {
  fs::create_directories(g_root / target);
  return (g_root / target / name).string();
}

static void put(const std::string &target, const std::string &name, std::span<const std::byte> b) {
  std::ofstream out(seed(target, name), std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char *>(b.data()), std::streamsize(b.size()));
  if (!out) {
    std::cerr << "cannot write " << name << "\n";
    std::exit(1);
  }
}

static void put_text(const std::string &target, const std::string &name, std::string_view text) {
  put(target, name, std::as_bytes(std::span(text.data(), text.size())));
}

static void copy_to(const std::string &from, const std::string &target, const std::string &name) {
  fs::copy_file(from, seed(target, name), fs::copy_options::overwrite_existing);
}

static mpk::rt::GraphNode node(std::string op, std::vector<std::string> in, std::vector<std::string> out,
                               std::map<std::string, mpk::rt::AttrValue> attrs = {}) {
  mpk::rt::GraphNode n;
  n.op = std::move(op);
  n.name = n.op;
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  n.attrs = std::move(attrs);
  return n;
}

static std::vector<mpk::rt::GraphDef> graphs() {
  using mpk::rt::GraphDef;
  std::vector<GraphDef> gs;
  GraphDef mlp;  // linear / relu / linear
  mlp.inputs = {{"x", MPK_DTYPE_F32, {-1, 8}}};
  mlp.nodes = {node("linear", {"x", "fc1.weight", "fc1.bias"}, {"h"}), node("relu", {"h"}, {"r"}),
               node("linear", {"r", "fc2.weight", "fc2.bias"}, {"logits"})};
  mlp.outputs = {{"logits", MPK_DTYPE_F32, {-1, 4}}};
  gs.push_back(mlp);
  GraphDef norms;  // layer_norm, gelu (tanh), rms_norm, silu, tanh, add, mul, softmax
  norms.inputs = {{"x", MPK_DTYPE_F32, {2, 8}}};
  norms.nodes = {node("layer_norm", {"x", "ln.weight", "ln.bias"}, {"n"}, {{"epsilon", 1e-5}}),
                 node("gelu", {"n"}, {"g"}, {{"approximate", std::string("tanh")}}),
                 node("rms_norm", {"g", "ln.weight"}, {"r"}, {{"epsilon", 1e-6}}), node("silu", {"r"}, {"s"}),
                 node("tanh", {"s"}, {"t"}), node("add", {"t", "x"}, {"a"}), node("mul", {"a", "ln.bias"}, {"m"}),
                 node("softmax", {"m"}, {"y"}, {{"axis", int64_t(-1)}})};
  norms.outputs = {{"y", MPK_DTYPE_F32, {2, 8}}};
  gs.push_back(norms);
  GraphDef attn;  // embedding, positions, attention with a KV cache
  attn.inputs = {{"ids", MPK_DTYPE_I64, {-1}}};
  attn.nodes = {node("embedding", {"emb", "ids"}, {"e"}), node("positions", {"ids"}, {"p"}),
                node("embedding", {"pos", "p"}, {"pe"}), node("add", {"e", "pe"}, {"x"}),
                node("linear", {"x", "wq"}, {"q"}), node("linear", {"x", "wk"}, {"k"}),
                node("linear", {"x", "wv"}, {"v"}),
                node("attention", {"q", "k", "v"}, {"y"}, {{"n_head", int64_t(2)}, {"causal", int64_t(1)}}),
                node("matmul", {"y", "wt"}, {"logits"})};
  attn.outputs = {{"logits", MPK_DTYPE_F32, {-1, 16}}};
  gs.push_back(attn);
  GraphDef shapes;  // reshape, transpose, concat, split
  shapes.inputs = {{"x", MPK_DTYPE_F32, {4, 8}}};
  shapes.nodes = {node("reshape", {"x"}, {"r"}, {{"shape", std::vector<int64_t>{0, 2, -1}}}),
                  node("transpose", {"r"}, {"t"}, {{"perm", std::vector<int64_t>{1, 0, 2}}}),
                  node("concat", {"t", "t"}, {"c"}, {{"axis", int64_t(-1)}}),
                  node("split", {"c"}, {"a", "b"}, {{"axis", int64_t(-1)}, {"sizes", std::vector<int64_t>{3, 5}}})};
  shapes.outputs = {{"a", MPK_DTYPE_F32, {2, 4, 3}}, {"b", MPK_DTYPE_F32, {}}};
  gs.push_back(shapes);
  return gs;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    std::cerr << "usage: make_seeds DIR\n";
    return 2;
  }
  g_root = argv[1];
  const std::string tmp = fuzz::scratch_dir();
  auto open = [](const std::string &p) { return must(mpk::Model::open(p), "open"); };

  // ---- mpk: raw, compressed, quantized, with a graph, alignment 1, empty --------------------------
  const std::string base = tmp + "/base.mpk", comp = tmp + "/comp.mpk";
  fuzz::write_patch_model(base, 0);
  fuzz::write_patch_model(comp, 0, true);
  copy_to(base, "mpk", "raw.mpk");
  copy_to(comp, "mpk", "compressed.mpk");
  {
    mpk::QuantizeOptions qo;
    qo.include = "layer";
    must(mpk::quantize(base, tmp + "/q.mpk", qo), "quantize");
    copy_to(tmp + "/q.mpk", "mpk", "int8.mpk");
  }
  const std::string weights = tmp + "/weights.mpk";
  fuzz::write_graph_model(weights);
  must(mpk::rt::attach_graph(weights, tmp + "/graph.mpk", graphs()[0]), "attach");
  copy_to(tmp + "/graph.mpk", "mpk", "graph.mpk");
  {
    mpk::WriterOptions wo;
    wo.alignment = 1;
    wo.fsync = false;
    auto w = must(mpk::Writer::create(tmp + "/a1.mpk", wo), "a1");
    const std::vector<uint8_t> b{1, 2, 3};
    const std::vector<uint64_t> s{3};
    must(w.add_component("flags", "tokenizer"), "component");
    must(w.add_tensor("b", MPK_DTYPE_BOOL, s, fuzz::bytes_of(b), "flags"), "b");
    must(w.set_metadata("s", std::string("text")), "s");
    must(w.set_metadata("l", std::vector<std::string>{"x", "y"}), "l");
    must(w.commit(), "commit");
    copy_to(tmp + "/a1.mpk", "mpk", "align1.mpk");
    auto e = must(mpk::Writer::create(tmp + "/empty.mpk", wo), "empty");
    must(e.commit(), "commit");
    copy_to(tmp + "/empty.mpk", "mpk", "empty.mpk");
  }

  // ---- importers: safetensors, gguf, npy, npz -------------------------------------------------------
  {
    auto m = open(base);
    must(mpk::safetensors::export_file(m, seed("safetensors", "model.safetensors")), "st");
    must(mpk::gguf::export_file(m, seed("gguf", "model.gguf")), "gguf");
    must(mpk::npz::export_npz(m, seed("npz", "stored.npz")), "npz");
    mpk::npz::ExportOptions eo;
    eo.deflate = true;
    must(mpk::npz::export_npz(m, seed("npz", "deflated.npz"), eo), "npz2");
    auto q = open(tmp + "/q.mpk");
    must(mpk::gguf::export_file(q, seed("gguf", "int8.gguf")), "gguf q");
  }
  {
    const std::string json =
        R"({"__metadata__":{"k":"v"},"t":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}   )";
    const uint64_t n = json.size();
    put_text("safetensors", "meta.safetensors",
             std::string(reinterpret_cast<const char *>(&n), 8) + json + std::string(8, '\x3f'));
  }
  {
    const std::vector<float> f = fuzz::ramp(12, 1.0f, 4);
    const std::vector<uint64_t> s{3, 4};
    must(mpk::npy::write_file(seed("npy", "f32.npy"), MPK_DTYPE_F32, s, fuzz::bytes_of(f)), "npy");
    const std::vector<int64_t> i{1, -2, 3};
    const std::vector<uint64_t> si{3};
    must(mpk::npy::write_file(seed("npy", "i64.npy"), MPK_DTYPE_I64, si, fuzz::bytes_of(i)), "npy");
    std::string v2("\x93NUMPY\x02\x00", 8);
    std::string dict = "{'descr': '>f4', 'fortran_order': True, 'shape': (2, 1), }";
    dict.resize(115, ' ');  // magic, version and length (12 bytes) + 116: data at 128
    dict += '\n';
    const uint32_t len = uint32_t(dict.size());
    v2 += std::string(reinterpret_cast<const char *>(&len), 4) + dict + std::string(8, '\x01');
    put_text("npy", "v2_big_endian_fortran.npy", v2);
  }

  // ---- patches against the fixed base ----------------------------------------------------------------
  for (int k = 1; k <= 4; ++k) {
    const std::string v = tmp + "/v" + std::to_string(k) + ".mpk";
    fuzz::write_patch_model(v, k);
    mpk::DiffOptions d;
    d.two_way = k % 2 == 0;
    d.fsync = false;
    must(mpk::diff(base, v, seed("patch", "v" + std::to_string(k) + ".mpkd"), d), "diff");
  }
  {
    const std::string v = tmp + "/vc.mpk";
    fuzz::write_patch_model(v, 2, true);
    mpk::DiffOptions d;
    d.fsync = false;
    must(mpk::diff(base, v, seed("patch", "to_compressed.mpkd"), d), "diff");
    must(mpk::diff(base, tmp + "/q.mpk", seed("patch", "to_int8.mpkd"), d), "diff q");
  }
  {  // a one-way patch with SUB_SORTED deltas (order-1 coding: level 9)
    const std::string v = tmp + "/v5.mpk";
    fuzz::write_patch_model(v, 5);
    mpk::DiffOptions d;
    d.fsync = false;
    d.level = 9;
    mpk::PatchSummary s;
    must(mpk::diff(base, v, seed("patch", "sorted_sub.mpkd"), d, &s), "diff sorted");
    if (s.sorted_subs == 0) {
      std::cerr << "make_seeds: the sorted_sub seed holds no SUB_SORTED operation\n";
      return 1;
    }
  }
  {  // two-way, with deltas across sizes (Patch.incompatible bit 1)
    const std::string v = tmp + "/v6.mpk";
    fuzz::write_patch_model(v, 6);
    mpk::DiffOptions d;
    d.fsync = false;
    d.two_way = true;
    mpk::PatchSummary s;
    must(mpk::diff(base, v, seed("patch", "resized.mpkd"), d, &s), "diff resized");
    if (s.resized == 0) {
      std::cerr << "make_seeds: the resized seed holds no delta across sizes\n";
      return 1;
    }
  }

  {  // one-way, layer.a against a low-rank prediction (Patch.incompatible bit 2)
    const std::string v = tmp + "/v7.mpk";
    fuzz::write_patch_model(v, 7);
    mpk::DiffOptions d;
    d.fsync = false;
    d.level = 9;
    mpk::PatchSummary s;
    must(mpk::diff(base, v, seed("patch", "low_rank.mpkd"), d, &s), "diff low-rank");
    if (s.low_rank == 0) {
      std::cerr << "make_seeds: the low_rank seed holds no low-rank source\n";
      return 1;
    }
  }

  // ---- chunks: [codec][decoded size / 4, u16 LE][stored] -------------------------------------------
  {
    mpk::codec::Scratch scratch;
    auto chunk = [&](const char *name, mpk::DType dtype, mpk::codec::EncodeParams p, std::span<const std::byte> in) {
      mpk::codec::EncodedChunk e;
      must(mpk::codec::encode_chunk(dtype, in, p, scratch, e), "encode");
      std::vector<std::byte> out{std::byte(e.codec), std::byte((in.size() / 4) & 0xff), std::byte((in.size() / 4) >> 8)};
      if (e.codec == mpk::codec::ChunkCodec::Raw) out.insert(out.end(), in.begin(), in.end());
      else out.insert(out.end(), e.bytes.begin(), e.bytes.end());
      put("chunk", name, out);
    };
    std::vector<float> f = fuzz::ramp(1024, 0.05f, 5);
    std::vector<uint16_t> bf(2048);
    for (size_t i = 0; i < bf.size(); ++i) bf[i] = uint16_t(0x3c00 + (i * 37) % 300);
    mpk::codec::EncodeParams p;
    p.codec = mpk::codec::Codec::Float;
    chunk("planes_f32", MPK_DTYPE_F32, p, fuzz::bytes_of(f));
    chunk("planes_bf16", MPK_DTYPE_BF16, p, fuzz::bytes_of(bf));
    p.level = 9;
    chunk("planes_f32_l9", MPK_DTYPE_F32, p, fuzz::bytes_of(f));
    p.codec = mpk::codec::Codec::Zstd;
    p.level = 3;
    chunk("zstd", MPK_DTYPE_F32, p, fuzz::bytes_of(f));
  }

  // ---- graphs bound to the fixed weights ---------------------------------------------------------
  int k = 0;
  for (const auto &g : graphs()) {
    auto b = must(mpk::rt::serialize_graph(g), "serialize");
    put("graph", "graph" + std::to_string(k++) + ".mpkg", b);
  }
  std::cout << "seeds written under " << g_root << "\n";
  return 0;
}
