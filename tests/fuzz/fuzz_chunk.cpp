// fuzz_chunk - the compressed-chunk decoder on its own (FORMAT.md §7.9: zstd frames, plane
// chunks with their transform, width, per-plane methods and sizes, rANS-Nx16 streams), without
// the container's checksums in the way. Input: codec (1 byte), decoded size (2 bytes LE, scaled),
// then the stored chunk. Decoding never writes outside `out`; what decodes must decode the same
// again (the codecs are deterministic).
#include "fuzz_common.hpp"

#include "codec/chunk.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  const auto codec = mpk::codec::ChunkCodec(data[0] % (mpk::codec::kMaxChunkCodec + 2));
  const size_t out_size = (size_t(data[1]) | size_t(data[2]) << 8) * 4 % (1u << 18);
  const auto stored = std::span(reinterpret_cast<const std::byte *>(data + 3), size - 3);
  // Guard bytes around the output: a write outside it shows even without a sanitizer.
  std::vector<std::byte> buf(out_size + 128, std::byte{0xA5});
  const auto out = std::span(buf).subspan(64, out_size);
  mpk::codec::Scratch scratch;
  const mpk::Status s = mpk::codec::decode_chunk(codec, stored, out, scratch);
  for (size_t i = 0; i < 64; ++i)
    if (buf[i] != std::byte{0xA5} || buf[buf.size() - 1 - i] != std::byte{0xA5}) std::abort();
  (void)mpk::codec::describe_chunk(codec, stored);
  if (s.ok()) {
    std::vector<std::byte> again(out_size);
    if (!mpk::codec::decode_chunk(codec, stored, again, scratch, mpk::codec::OutputUse::Streaming).ok() ||
        !std::equal(again.begin(), again.end(), out.begin()))
      std::abort();
  }
  return 0;
}
