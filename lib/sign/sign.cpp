// sign.cpp - Ed25519 signatures of .mpk files: the trailer (FORMAT.md 7.13), signing, checking, keys.
#include "sign/sign_internal.hpp"

#include <modelpack/sign.hpp>

#include "io/file.hpp"

#include <sodium.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

namespace mpk {
namespace detail {
namespace {

constexpr uint8_t kMagic[8] = {0x89, 'M', 'P', 'K', 'S', 'I', 'G', '\n'};
constexpr uint8_t kEndMark[8] = {'M', 'P', 'K', 'S', 'I', 'G', 'v', '1'};
constexpr char kDomain[] = "modelpack signature v1";  // with its NUL: 23 bytes
constexpr uint16_t kVersion = 1, kAlgorithm = 1;     // Ed25519 over BLAKE2b-256 digests
constexpr size_t kDigest = 32;

Status sodium_ready() {
  static const int rc = sodium_init();  // thread-safe: once, and sodium_init itself is idempotent
  if (rc < 0) return fail(MPK_ERR_INTERNAL, "libsodium cannot initialize");
  return {};
}

uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | p[i];
  return v;
}
void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
void put16(uint8_t *p, uint16_t v) { p[0] = uint8_t(v), p[1] = uint8_t(v >> 8); }
void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}

// The trailer's fields (FORMAT.md 7.13).
struct Trailer {
  uint64_t signed_length = 0;
  PublicKey key{};
  uint8_t file_digest[kDigest]{};
  uint8_t signature[crypto_sign_BYTES]{};
};

// Parses the 192 bytes at the end of a file of `file_size` bytes. nullopt: no end mark (unsigned).
Result<std::optional<Trailer>> parse_trailer(const uint8_t *b, uint64_t file_size, uint64_t min_length) {
  if (std::memcmp(b + 184, kEndMark, 8) != 0) return std::optional<Trailer>();
  auto bad = [](const char *what) { return fail(MPK_ERR_SIGNATURE, "malformed signature trailer: ", what); };
  if (std::memcmp(b, kMagic, 8) != 0) return bad("no start mark");
  const unsigned version = b[8] | b[9] << 8, algorithm = b[10] | b[11] << 8;
  const uint32_t size = uint32_t(get64(b + 12) & 0xffffffffu);
  if (version != kVersion) return fail(MPK_ERR_SIGNATURE, "signature trailer version ", version, " (this library knows 1)");
  if (algorithm != kAlgorithm) return fail(MPK_ERR_SIGNATURE, "signature algorithm ", algorithm, " (this library knows 1, Ed25519)");
  if (size != sign::kTrailerSize) return bad("its size field is not 192");
  Trailer t;
  t.signed_length = get64(b + 16);
  if (t.signed_length != file_size - sign::kTrailerSize) return bad("it does not cover exactly the bytes before it");
  if (t.signed_length < min_length) return bad("it covers less than the file's sections");
  for (size_t i = 152; i < 184; ++i)
    if (b[i]) return bad("reserved bytes are not zero");
  std::memcpy(t.key.data(), b + 24, 32);
  std::memcpy(t.file_digest, b + 56, kDigest);
  std::memcpy(t.signature, b + 88, crypto_sign_BYTES);
  return std::optional<Trailer>(t);
}

// The signed message: domain, the trailer's fields before the key, the key, the content id, the
// digest of preamble + header, and the digest of every byte before the trailer.
std::vector<uint8_t> message(const uint8_t *trailer_head /* 24 bytes */, const PublicKey &key,
                             std::string_view content_id, const uint8_t *header_digest, const uint8_t *file_digest) {
  std::vector<uint8_t> m(kDomain, kDomain + sizeof kDomain);
  m.insert(m.end(), trailer_head + 8, trailer_head + 24);
  m.insert(m.end(), key.begin(), key.end());
  uint8_t n[4];
  put32(n, uint32_t(content_id.size()));
  m.insert(m.end(), n, n + 4);
  m.insert(m.end(), content_id.begin(), content_id.end());
  m.insert(m.end(), header_digest, header_digest + kDigest);
  m.insert(m.end(), file_digest, file_digest + kDigest);
  return m;
}

void header_digest(const uint8_t *preamble, const uint8_t *header, uint64_t header_size, uint8_t *out) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, kDigest);
  crypto_generichash_update(&st, preamble, 96);
  crypto_generichash_update(&st, header, header_size);
  crypto_generichash_final(&st, out, kDigest);
}

Status file_digest(const File &f, uint64_t length, uint8_t *out) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, kDigest);
  std::vector<uint8_t> buf(std::min<uint64_t>(length, uint64_t(1) << 20));
  for (uint64_t off = 0; off < length;) {
    const uint64_t n = std::min<uint64_t>(buf.size(), length - off);
    if (Status s = f.pread_full(off, buf.data(), n); !s) return s;
    crypto_generichash_update(&st, buf.data(), n);
    off += n;
  }
  crypto_generichash_final(&st, out, kDigest);
  return {};
}

std::string hex(const uint8_t *p, size_t n) {
  static const char *d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) s += d[p[i] >> 4], s += d[p[i] & 15];
  return s;
}

}  // namespace

Status check_signature(const File &file, const uint8_t *preamble, const uint8_t *header, uint64_t header_size,
                       uint64_t sections_end, std::string_view content_id, std::span<const PublicKey> trusted,
                       bool full) {
  if (Status s = sodium_ready(); !s) return s;
  const uint64_t size = file.size();
  if (size < 96 + sign::kTrailerSize) return fail(MPK_ERR_SIGNATURE, "the file is not signed (no signature trailer)");
  uint8_t b[sign::kTrailerSize];
  if (Status s = file.pread_full(size - sign::kTrailerSize, b, sign::kTrailerSize); !s) return s;
  auto parsed = parse_trailer(b, size, sections_end);
  if (!parsed) return parsed.status();
  if (!*parsed) return fail(MPK_ERR_SIGNATURE, "the file is not signed (no signature trailer)");
  const Trailer &t = **parsed;
  if (std::find(trusted.begin(), trusted.end(), t.key) == trusted.end())
    return fail(MPK_ERR_SIGNATURE, "signed by ", sign::fingerprint(t.key), ", which is not a trusted key");
  uint8_t hd[kDigest];
  header_digest(preamble, header, header_size, hd);
  const auto msg = message(b, t.key, content_id, hd, t.file_digest);
  if (crypto_sign_verify_detached(t.signature, msg.data(), msg.size(), t.key.data()) != 0)
    return fail(MPK_ERR_SIGNATURE, "the signature by ", sign::fingerprint(t.key),
                " does not match the file's preamble, header, content id or recorded digest");
  if (full) {
    uint8_t fd[kDigest];
    if (Status s = file_digest(file, t.signed_length, fd); !s) return s;
    if (sodium_memcmp(fd, t.file_digest, kDigest) != 0)
      return fail(MPK_ERR_SIGNATURE, "the file's bytes differ from what ", sign::fingerprint(t.key),
                  " signed (BLAKE2b-256 ", hex(fd, 8), "... vs signed ", hex(t.file_digest, 8), "...)");
  }
  return {};
}

}  // namespace detail

namespace sign {
using detail::fail;
using detail::quote;

std::string fingerprint(const PublicKey &key) { return "ed25519:" + detail::hex(key.data(), 8); }

Result<KeyPair> generate_keypair() {
  if (Status s = detail::sodium_ready(); !s) return s;
  KeyPair k;
  crypto_sign_keypair(k.pub.data(), k.secret.data());
  return k;
}

namespace {

constexpr const char *kSecretTitle = "modelpack ed25519 secret key";
constexpr const char *kPublicTitle = "modelpack ed25519 public key";

std::string key_text(const char *title, const uint8_t *key, size_t n) {
  std::string b64(sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(b64.data(), b64.size(), key, n, sodium_base64_VARIANT_ORIGINAL);
  b64.resize(std::strlen(b64.c_str()));
  return std::string(title) + "\n" + b64 + "\n";
}

Status write_key(const std::string &path, const std::string &text, mode_t mode) {
  auto f = detail::AtomicFile::create(path);
  if (!f) return f.status();
  if (::chmod(f->temp_path().c_str(), mode) != 0) return fail(MPK_ERR_IO, "chmod ", path, ": ", std::strerror(errno));
  if (Status s = f->write_all(text.data(), text.size()); !s) return s;
  return f->commit(true);
}

Result<std::vector<uint8_t>> read_key(const std::string &path, const char *title, size_t n) {
  auto f = detail::File::open_read(path);
  if (!f) return f.status();
  if (f->size() > 4096) return fail(MPK_ERR_BAD_FORMAT, path, ": not a key file (over 4 KiB)");
  std::string text(size_t(f->size()), '\0');
  if (Status s = f->pread_full(0, text.data(), text.size()); !s) return s;
  const size_t nl = text.find('\n');
  if (nl == std::string::npos || text.compare(0, nl, title) != 0)
    return fail(MPK_ERR_BAD_FORMAT, path, ": not a ", title, " file (its first line must be '", title, "')");
  std::string b64 = text.substr(nl + 1);
  while (!b64.empty() && (b64.back() == '\n' || b64.back() == '\r' || b64.back() == ' ')) b64.pop_back();
  std::vector<uint8_t> key(n + 1);
  size_t got = 0;
  const char *end = nullptr;
  if (sodium_base642bin(key.data(), key.size(), b64.data(), b64.size(), nullptr, &got, &end,
                        sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != b64.data() + b64.size() || got != n)
    return fail(MPK_ERR_BAD_FORMAT, path, ": the key is not ", n, " bytes of base64");
  key.resize(n);
  return key;
}

}  // namespace

Status save_keypair(const KeyPair &keys, const std::string &path, bool overwrite) {
  if (Status s = detail::sodium_ready(); !s) return s;
  const std::string pub = path + ".pub";
  struct stat st {};
  if (!overwrite)
    for (const std::string &p : {path, pub})
      if (::stat(p.c_str(), &st) == 0)
        return fail(MPK_ERR_INVALID_ARGUMENT, p, " already exists (not overwritten)");
  if (Status s = write_key(pub, key_text(kPublicTitle, keys.pub.data(), keys.pub.size()), 0644); !s) return s;
  return write_key(path, key_text(kSecretTitle, keys.secret.data(), keys.secret.size()), 0600);
}

Result<SecretKey> load_secret_key(const std::string &path) {
  if (Status s = detail::sodium_ready(); !s) return s;
  auto k = read_key(path, kSecretTitle, 64);
  if (!k) return k.status();
  SecretKey sk;
  std::copy(k->begin(), k->end(), sk.begin());
  // The second half is the public key of the first: a damaged key file is refused here, not
  // discovered later as signatures nobody can verify.
  PublicKey pk;
  uint8_t again[64];
  crypto_sign_seed_keypair(pk.data(), again, sk.data());
  if (sodium_memcmp(pk.data(), sk.data() + 32, 32) != 0)
    return fail(MPK_ERR_BAD_FORMAT, path, ": the secret key is damaged (its public half does not match)");
  sodium_memzero(again, sizeof again);
  return sk;
}

Result<PublicKey> load_public_key(const std::string &path) {
  if (Status s = detail::sodium_ready(); !s) return s;
  auto k = read_key(path, kPublicTitle, 32);
  if (!k) return k.status();
  PublicKey pk;
  std::copy(k->begin(), k->end(), pk.begin());
  return pk;
}

Result<std::optional<SignatureInfo>> read_signature(const std::string &path) {
  auto f = detail::File::open_read(path);
  if (!f) return f.status();
  if (f->size() < 96 + kTrailerSize) return std::optional<SignatureInfo>();
  uint8_t b[kTrailerSize];
  if (Status s = f->pread_full(f->size() - kTrailerSize, b, kTrailerSize); !s) return s;
  auto t = detail::parse_trailer(b, f->size(), 96);
  if (!t) return t.status();
  if (!*t) return std::optional<SignatureInfo>();
  return std::optional<SignatureInfo>(SignatureInfo{(*t)->key, (*t)->signed_length});
}

Status sign_file(const std::string &path, const SecretKey &key, const std::string &out, bool fsync) {
  if (Status s = detail::sodium_ready(); !s) return s;
  OpenOptions o;
  o.verify = Verify::Full;
  o.access = Access::Read;
  auto m = Model::open(path, o);
  if (!m) return m.status();
  auto f = detail::File::open_read(path);
  if (!f) return f.status();
  // What the signature covers: everything but an existing trailer.
  uint64_t length = f->size();
  auto existing = read_signature(path);
  if (!existing) return existing.status();
  if (*existing) length = (*existing)->signed_bytes;
  const uint64_t sections_end = std::max(m->header_offset() + m->header_size(), m->data_offset() + m->data_size());
  if (length < sections_end) return fail(MPK_ERR_INTERNAL, "signing: the file is shorter than its sections");

  uint8_t preamble[96];
  if (Status s = f->pread_full(0, preamble, 96); !s) return s;
  std::vector<uint8_t> header(size_t(m->header_size()));
  if (Status s = f->pread_full(m->header_offset(), header.data(), header.size()); !s) return s;
  uint8_t hd[detail::kDigest], fd[detail::kDigest];
  detail::header_digest(preamble, header.data(), header.size(), hd);
  if (Status s = detail::file_digest(*f, length, fd); !s) return s;

  PublicKey pub;
  std::copy(key.begin() + 32, key.end(), pub.begin());
  uint8_t t[kTrailerSize] = {};
  std::memcpy(t, detail::kMagic, 8);
  detail::put16(t + 8, detail::kVersion);
  detail::put16(t + 10, detail::kAlgorithm);
  detail::put32(t + 12, uint32_t(kTrailerSize));
  detail::put64(t + 16, length);
  std::memcpy(t + 24, pub.data(), 32);
  std::memcpy(t + 56, fd, detail::kDigest);
  const auto msg = detail::message(t, pub, m->content_id(), hd, fd);
  crypto_sign_detached(t + 88, nullptr, msg.data(), msg.size(), key.data());
  std::memcpy(t + 184, detail::kEndMark, 8);

  if (out.empty()) {  // in place: drop an old trailer, append the new one
    const int fdw = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fdw < 0) return fail(MPK_ERR_IO, "open ", quote(path), " for writing: ", std::strerror(errno));
    Status st;
    if (::ftruncate(fdw, off_t(length)) != 0) st = fail(MPK_ERR_IO, "truncate ", quote(path), ": ", std::strerror(errno));
    for (uint64_t done = 0; st && done < kTrailerSize;) {
      const ssize_t n = ::pwrite(fdw, t + done, size_t(kTrailerSize - done), off_t(length + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) st = fail(MPK_ERR_IO, "write ", quote(path), ": ", std::strerror(errno));
      else done += uint64_t(n);
    }
    if (st && fsync && ::fsync(fdw) != 0) st = fail(MPK_ERR_IO, "fsync ", quote(path), ": ", std::strerror(errno));
    ::close(fdw);
    return st;
  }
  auto w = detail::AtomicFile::create(out);
  if (!w) return w.status();
  std::vector<uint8_t> buf(std::min<uint64_t>(length, uint64_t(1) << 20));
  for (uint64_t off = 0; off < length;) {
    const uint64_t n = std::min<uint64_t>(buf.size(), length - off);
    if (Status s = f->pread_full(off, buf.data(), n); !s) return s;
    if (Status s = w->write_all(buf.data(), n); !s) return s;
    off += n;
  }
  if (Status s = w->write_all(t, kTrailerSize); !s) return s;
  return w->commit(fsync);
}

Status verify_file(const std::string &path, std::span<const PublicKey> trusted, Verify mode, unsigned threads) {
  if (trusted.empty()) return fail(MPK_ERR_INVALID_ARGUMENT, "verify_file: no trusted key given");
  OpenOptions o;
  o.verify = mode;
  o.threads = threads;
  o.trusted_keys.assign(trusted.begin(), trusted.end());
  auto m = Model::open(path, o);
  return m ? Status() : m.status();
}

}  // namespace sign
}  // namespace mpk
