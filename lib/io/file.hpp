// Byte sources and sinks: read-only files, memory maps, and the atomic file writer.
#pragma once

#include "common.hpp"

#include <cstdint>
#include <functional>
#include <string>

namespace mpk::detail {

// A read-only file descriptor.
class File {
 public:
  File() = default;
  static Result<File> open_read(const std::string &path);
  File(File &&o) noexcept : fd_(o.fd_), size_(o.size_), path_(std::move(o.path_)) { o.fd_ = -1; }
  File &operator=(File &&o) noexcept;
  ~File();

  int fd() const { return fd_; }
  uint64_t size() const { return size_; }
  const std::string &path() const { return path_; }
  // Reads exactly n bytes at off; MPK_ERR_TRUNCATED if the file ends first.
  Status pread_full(uint64_t off, void *buf, uint64_t n) const;

 private:
  int fd_ = -1;
  uint64_t size_ = 0;
  std::string path_;
};

// A read-only private mapping of a whole file.
class Mapping {
 public:
  Mapping() = default;
  static Result<Mapping> map(const File &f);
  Mapping(Mapping &&o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
  Mapping &operator=(Mapping &&o) noexcept;
  ~Mapping();
  const uint8_t *data() const { return static_cast<const uint8_t *>(p_); }
  uint64_t size() const { return n_; }
  // madvise(MADV_WILLNEED) over [off, off+n) rounded out to pages; best effort.
  void will_need(uint64_t off, uint64_t n) const;

 private:
  void *p_ = nullptr;
  uint64_t n_ = 0;
};

// Reports the bytes this thread writes through AtomicFile while the object lives (at most every
// 4 MiB, and once more at destruction): how mpk::convert shows progress for every format without
// the importers and exporters knowing about it. Scopes do not nest (an inner one replaces the outer
// one until it ends).
class WriteProgress {
 public:
  explicit WriteProgress(std::function<void(uint64_t bytes_written)> fn);
  ~WriteProgress();
  WriteProgress(const WriteProgress &) = delete;
  WriteProgress &operator=(const WriteProgress &) = delete;

 private:
  std::function<void(uint64_t)> fn_;
  void *saved_ = nullptr;
};

// Writes a file under a temporary name in the target's directory; commit() syncs and renames it
// into place, so the target path only ever holds a complete file. Destruction without commit
// removes the temporary file.
class AtomicFile {
 public:
  AtomicFile() = default;
  static Result<AtomicFile> create(const std::string &target);
  AtomicFile(AtomicFile &&o) noexcept;
  AtomicFile &operator=(AtomicFile &&o) noexcept;
  ~AtomicFile();

  Status write_all(const void *data, uint64_t n);               // at the current end
  Status pwrite_all(uint64_t off, const void *data, uint64_t n);  // anywhere, no position change
  uint64_t position() const { return pos_; }
  Status commit(bool sync);
  // For writers that publish several files together (a sharded safetensors export): close_temp()
  // syncs (if asked) and closes the temporary file but keeps it; publish() then renames it into
  // place (no directory sync: the caller syncs the directory once after the last rename). Until
  // publish() succeeds, abort() and the destructor still remove the temporary file.
  Status close_temp(bool sync);
  Status publish();
  void abort();
  const std::string &temp_path() const { return tmp_; }
  // Removes the temporary files that killed processes left for `target` (create() calls it).
  static void remove_stale_temps(const std::string &target);
  // The name of an intermediate file for `target` that remove_stale_temps() knows: next to it,
  // ".<target name>.tmp-<pid>-<tag>".
  static std::string temp_name(const std::string &target, const std::string &tag);
  const std::string &target_path() const { return target_; }

 private:
  int fd_ = -1;
  uint64_t pos_ = 0;
  std::string target_, tmp_;
};

std::string errno_text(int err);

}  // namespace mpk::detail
