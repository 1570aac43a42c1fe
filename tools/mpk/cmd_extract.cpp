// cmd_extract.cpp - `mpk extract FILE NAME -o OUT.npy [--bf16-as-u16] [--no-verify]`.
//
// The tensor's checksum is verified first (unless --no-verify), then its bytes are copied in 8 MiB
// pieces through npy::Writer, which writes a temporary file and renames it into place: OUT.npy is
// either the complete array or untouched. bf16 has no NumPy dtype: it is refused unless
// --bf16-as-u16, which writes the raw bits as '<u2' with a warning (view them in NumPy with e.g.
// (a.astype(np.uint32) << 16).view(np.float32)).
#include "common.hpp"

#include <modelpack/npy.hpp>

#include <algorithm>
#include <cstdio>

namespace mpk::cli {

int run_extract(const ExtractArgs &args) {
  Stopwatch clock;
  auto opened = open_model(args.file, Verify::Header);
  if (!opened) return report(opened.status());
  const Model &m = *opened;

  auto index = m.find(args.name);
  if (!index)
    return report(Status(MPK_ERR_NOT_FOUND,
                         args.file + ": no tensor named '" + args.name + "' (see mpk inspect)"));
  TensorInfo t = m.info(*index);

  DType dtype = t.dtype;
  if (dtype == MPK_DTYPE_BF16) {
    if (!args.bf16_as_u16)
      return report(Status(MPK_ERR_BAD_DTYPE,
                           "tensor '" + args.name +
                               "' is bf16, which NumPy has no dtype for; pass --bf16-as-u16 to "
                               "write its raw bits as '<u2'"));
    warn("tensor '" + args.name + "' is bf16: writing its raw bits as '<u2' (uint16)");
    dtype = MPK_DTYPE_U16;
  }

  if (!args.no_verify) {
    if (Status st = m.verify_tensor(*index); !st)
      return report(with_file(st, args.file));
  }

  auto created = npy::Writer::create(args.output, dtype, t.shape);
  if (!created) return report(created.status());
  npy::Writer &w = *created;

  // Copy through a bounded buffer with Model::read (works for mapped and read access alike).
  constexpr uint64_t kChunk = 8u << 20;
  std::vector<std::byte> buf(size_t(std::min<uint64_t>(kChunk, std::max<uint64_t>(t.nbytes, 1))));
  Progress progress("extracting", t.nbytes);
  for (uint64_t off = 0; off < t.nbytes;) {
    size_t n = size_t(std::min<uint64_t>(buf.size(), t.nbytes - off));
    std::span<std::byte> piece(buf.data(), n);
    if (Status st = m.read(*index, piece, off); !st)
      return report(with_file(st, args.file));
    if (Status st = w.write(piece); !st) return report(st);
    off += n;
    progress.add(n, args.name);
  }
  if (Status st = w.commit(); !st) return report(st);
  progress.finish();

  std::printf("extracted '%s' (%s %s, %s) to %s in %s\n", args.name.c_str(),
              std::string(dtype_name(t.dtype)).c_str(), shape_string(t.shape).c_str(),
              human_bytes(t.nbytes).c_str(), args.output.c_str(),
              seconds_string(clock.seconds()).c_str());
  return kExitOk;
}

}  // namespace mpk::cli
