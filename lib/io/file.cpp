#include "io/file.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <random>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace mpk::detail {

std::string errno_text(int err) { return std::strerror(err); }

// ---- File ----

File &File::operator=(File &&o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    size_ = o.size_;
    path_ = std::move(o.path_);
    o.fd_ = -1;
  }
  return *this;
}

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

Result<File> File::open_read(const std::string &path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(MPK_ERR_IO, "cannot open ", quote(path), ": ", errno_text(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return fail(MPK_ERR_IO, "cannot stat ", quote(path), ": ", errno_text(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail(MPK_ERR_IO, quote(path), " is not a regular file");
  }
  File f;
  f.fd_ = fd;
  f.size_ = uint64_t(st.st_size);
  f.path_ = path;
  return f;
}

Status File::pread_full(uint64_t off, void *buf, uint64_t n) const {
  auto *p = static_cast<uint8_t *>(buf);
  while (n > 0) {
    size_t chunk = n > (1u << 30) ? (1u << 30) : size_t(n);
    ssize_t r = ::pread(fd_, p, chunk, off_t(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      return fail(MPK_ERR_IO, "read of ", quote(path_), " at ", Hex{off}, " failed: ", errno_text(errno));
    }
    if (r == 0)
      return fail(MPK_ERR_TRUNCATED, quote(path_), " ends at ", Hex{off}, ", before the ", n,
                  " more bytes expected there (was the file truncated while open?)");
    p += r;
    off += uint64_t(r);
    n -= uint64_t(r);
  }
  return {};
}

// ---- Mapping ----

Mapping &Mapping::operator=(Mapping &&o) noexcept {
  if (this != &o) {
    if (p_) ::munmap(p_, n_);
    p_ = o.p_;
    n_ = o.n_;
    o.p_ = nullptr;
    o.n_ = 0;
  }
  return *this;
}

Mapping::~Mapping() {
  if (p_) ::munmap(p_, n_);
}

Result<Mapping> Mapping::map(const File &f) {
  Mapping m;
  if (f.size() == 0) return m;
  void *p = ::mmap(nullptr, f.size(), PROT_READ, MAP_PRIVATE, f.fd(), 0);
  if (p == MAP_FAILED) return fail(MPK_ERR_IO, "cannot map ", quote(f.path()), ": ", errno_text(errno));
  m.p_ = p;
  m.n_ = f.size();
  return m;
}

void Mapping::will_need(uint64_t off, uint64_t n) const {
  if (!p_ || n == 0 || off >= n_) return;
  static const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  uint64_t start = off & ~(page - 1);
  uint64_t end = std::min(n_, off + n);
  ::madvise(static_cast<uint8_t *>(p_) + start, end - start, MADV_WILLNEED);
}

// ---- AtomicFile ----

AtomicFile::AtomicFile(AtomicFile &&o) noexcept
    : fd_(o.fd_), pos_(o.pos_), target_(std::move(o.target_)), tmp_(std::move(o.tmp_)) {
  o.fd_ = -1;
  o.tmp_.clear();
}

AtomicFile &AtomicFile::operator=(AtomicFile &&o) noexcept {
  if (this != &o) {
    abort();
    fd_ = o.fd_;
    pos_ = o.pos_;
    target_ = std::move(o.target_);
    tmp_ = std::move(o.tmp_);
    o.fd_ = -1;
    o.tmp_.clear();
  }
  return *this;
}

AtomicFile::~AtomicFile() { abort(); }

// Temporary files are named ".<target name>.tmp-<pid>-<tag>" next to the target (a patch chain's
// intermediate models ".<target name>.tmp-<pid>-chain<k>", whose own temporaries get one more
// leading dot). A process killed before it renames one leaves it behind; the next write of the
// same target removes those whose process no longer exists (kill(pid, 0): ESRCH). A pid now used
// by another process keeps its file until a later run: never removed while it may be in use.
void AtomicFile::remove_stale_temps(const std::string &target) {
  const size_t slash = target.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : target.substr(0, slash));
  const std::string prefix = "." + (slash == std::string::npos ? target : target.substr(slash + 1)) + ".tmp-";
  DIR *d = ::opendir(dir.c_str());
  if (!d) return;
  const int dfd = ::dirfd(d);
  while (const dirent *e = ::readdir(d)) {
    std::string_view name = e->d_name;
    if (name.size() > prefix.size() + 1 && name[0] == '.' && name.substr(1, prefix.size()) == prefix)
      name.remove_prefix(1);  // a temporary of a chain's intermediate model
    if (name.substr(0, prefix.size()) != prefix) continue;
    std::string_view rest = name.substr(prefix.size());
    long long pid = 0;
    size_t k = 0;
    while (k < rest.size() && k < 10 && rest[k] >= '0' && rest[k] <= '9') pid = pid * 10 + (rest[k++] - '0');
    if (k == 0 || k >= rest.size() || rest[k] != '-' || pid <= 0 || pid > INT32_MAX) continue;
    if (pid == ::getpid() || ::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to know)
    ::unlinkat(dfd, e->d_name, 0);
  }
  ::closedir(d);
}

std::string AtomicFile::temp_name(const std::string &target, const std::string &tag) {
  const size_t slash = target.rfind('/');
  const std::string dir = slash == std::string::npos ? std::string() : target.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? target : target.substr(slash + 1);
  return dir + "." + base + ".tmp-" + std::to_string(::getpid()) + "-" + tag;
}

Result<AtomicFile> AtomicFile::create(const std::string &target) {
  if (target.empty()) return fail(MPK_ERR_INVALID_ARGUMENT, "empty output path");
  size_t slash = target.rfind('/');
  std::string dir = slash == std::string::npos ? "." : target.substr(0, slash + 1);
  std::string base = slash == std::string::npos ? target : target.substr(slash + 1);
  if (base.empty()) return fail(MPK_ERR_INVALID_ARGUMENT, "output path ", quote(target), " names a directory");
  struct stat st;
  if (::stat(target.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    return fail(MPK_ERR_IO, "output path ", quote(target), " is a directory");
  remove_stale_temps(target);
  std::random_device rd;
  std::mt19937_64 rng((uint64_t(rd()) << 32) ^ rd() ^ uint64_t(::getpid()));
  for (int attempt = 0; attempt < 100; ++attempt) {
    char tag[16];
    std::snprintf(tag, sizeof tag, "%012llx", static_cast<unsigned long long>(rng() & 0xffffffffffffULL));
    std::string tmp = temp_name(target, tag);
    // 0666 & ~umask, like any file the user creates.
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
      if (errno == EEXIST) continue;
      return fail(MPK_ERR_IO, "cannot create a temporary file in ", quote(dir), " for ", quote(target), ": ",
                  errno_text(errno));
    }
    AtomicFile a;
    a.fd_ = fd;
    a.target_ = target;
    a.tmp_ = std::move(tmp);
    return a;
  }
  return fail(MPK_ERR_IO, "cannot create a unique temporary file in ", quote(dir));
}

namespace {
struct ProgressState {
  std::function<void(uint64_t)> *fn = nullptr;
  uint64_t written = 0, reported = 0;
};
thread_local ProgressState *tl_progress = nullptr;
void note_written(uint64_t n) noexcept {
  ProgressState *p = tl_progress;
  if (!p) return;
  p->written += n;
  if (p->written - p->reported >= (4u << 20)) {
    p->reported = p->written;
    try {
      (*p->fn)(p->written);
    } catch (...) {  // a display must not break the write
    }
  }
}
}  // namespace

WriteProgress::WriteProgress(std::function<void(uint64_t)> fn) : fn_(std::move(fn)) {
  auto *state = new ProgressState{&fn_, 0, 0};
  saved_ = tl_progress;
  tl_progress = state;
}

WriteProgress::~WriteProgress() {
  ProgressState *state = tl_progress;
  tl_progress = static_cast<ProgressState *>(saved_);
  if (state && state->written != state->reported) {
    try {
      fn_(state->written);
    } catch (...) {
    }
  }
  delete state;
}

Status AtomicFile::pwrite_all(uint64_t off, const void *data, uint64_t n) {
  if (fd_ < 0) return fail(MPK_ERR_STATE, "file is closed");
  const auto *p = static_cast<const uint8_t *>(data);
  const uint64_t written = n;
  while (n > 0) {
    size_t chunk = n > (1u << 30) ? (1u << 30) : size_t(n);
    ssize_t r = ::pwrite(fd_, p, chunk, off_t(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      return fail(MPK_ERR_IO, "write to ", quote(tmp_), " at ", Hex{off}, " failed: ", errno_text(errno));
    }
    p += r;
    off += uint64_t(r);
    n -= uint64_t(r);
  }
  note_written(written);
  return {};
}

Status AtomicFile::write_all(const void *data, uint64_t n) {
  Status s = pwrite_all(pos_, data, n);
  if (s) pos_ += n;
  return s;
}

Status AtomicFile::commit(bool sync) {
  if (fd_ < 0) return fail(MPK_ERR_STATE, "file is closed");
  if (sync && ::fsync(fd_) != 0) return fail(MPK_ERR_IO, "fsync of ", quote(tmp_), " failed: ", errno_text(errno));
  if (::close(fd_) != 0) {
    fd_ = -1;
    return fail(MPK_ERR_IO, "close of ", quote(tmp_), " failed: ", errno_text(errno));
  }
  fd_ = -1;
  if (::rename(tmp_.c_str(), target_.c_str()) != 0)
    return fail(MPK_ERR_IO, "cannot rename ", quote(tmp_), " to ", quote(target_), ": ", errno_text(errno));
  tmp_.clear();
  if (sync) {
    size_t slash = target_.rfind('/');
    std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : target_.substr(0, slash));
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);  // best effort: makes the rename durable
      ::close(dfd);
    }
  }
  return {};
}

Status AtomicFile::close_temp(bool sync) {
  if (fd_ < 0) return fail(MPK_ERR_STATE, "file is closed");
  if (sync && ::fsync(fd_) != 0) return fail(MPK_ERR_IO, "fsync of ", quote(tmp_), " failed: ", errno_text(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) return fail(MPK_ERR_IO, "close of ", quote(tmp_), " failed: ", errno_text(errno));
  return {};
}

Status AtomicFile::publish() {
  if (fd_ >= 0 || tmp_.empty()) return fail(MPK_ERR_STATE, "publish() needs a closed temporary file (close_temp)");
  if (::rename(tmp_.c_str(), target_.c_str()) != 0)
    return fail(MPK_ERR_IO, "cannot rename ", quote(tmp_), " to ", quote(target_), ": ", errno_text(errno));
  tmp_.clear();
  return {};
}

void AtomicFile::abort() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!tmp_.empty()) {
    ::unlink(tmp_.c_str());
    tmp_.clear();
  }
}

}  // namespace mpk::detail
