// common.cpp - exit codes, error reporting, progress and formatting for the mpk tool.
#include "common.hpp"

#include <algorithm>

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <mutex>

namespace mpk::cli {

int exit_code_for(mpk_status status) {
  switch (status) {
    case MPK_OK:
      return kExitOk;
    case MPK_ERR_INVALID_ARGUMENT:
      return kExitUsage;
    case MPK_ERR_IO:
    case MPK_ERR_NO_MEMORY:
    case MPK_ERR_INTERNAL:
    case MPK_ERR_STATE:
    case MPK_ERR_TYPE_MISMATCH:
      return kExitOther;
    default:  // everything that says "this input is not valid" or "not there"
      return kExitInvalid;
  }
}

int report(const Status &status) {
  std::fprintf(stderr, "mpk: error: %s: %s\n", mpk_status_name(status.code()),
               status.message().c_str());
  return exit_code_for(status.code());
}

Status with_file(const Status &status, const std::string &path) {
  if (status.ok() || status.message().find(path) != std::string::npos) return status;
  return Status(status.code(), path + ": " + status.message());
}

void warn(std::string_view message) {
  std::fprintf(stderr, "mpk: warning: %.*s\n", int(message.size()), message.data());
}

Result<Model> open_model(const std::string &path, Verify verify, const std::vector<PublicKey> &trusted_keys,
                         unsigned threads) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 && errno == ENOENT)
    return Status(MPK_ERR_NOT_FOUND, path + ": no such file");
  OpenOptions options;
  options.verify = verify;
  options.trusted_keys = trusted_keys;
  options.threads = std::max(1u, threads);
  auto model = Model::open(path, options);
  if (!model) return with_file(model.status(), path);
  return model;
}

// ---- progress -----------------------------------------------------------------------------------

struct Progress::State {
  std::mutex mu;
  uint64_t done = 0;
  std::chrono::steady_clock::time_point last{};
};

Progress::Progress(std::string label, uint64_t total)
    : label_(std::move(label)), total_(total), enabled_(::isatty(STDERR_FILENO) == 1),
      state_(new State) {}

Progress::~Progress() {
  finish();
  delete state_;
}

void Progress::add(uint64_t bytes, std::string_view item) {
  if (!enabled_) return;
  std::lock_guard lock(state_->mu);
  state_->done += bytes;
  auto now = std::chrono::steady_clock::now();
  if (drawn_ && now - state_->last < std::chrono::milliseconds(100) && state_->done < total_) return;
  state_->last = now;
  draw(state_->done, item);
}

void Progress::draw(uint64_t done, std::string_view item) {
  // An unknown total (0) shows the bytes only; an estimate that falls short stops at 99%.
  std::string text = label_ + " " + human_bytes(done);
  if (total_) {
    double pct = std::min(100.0 * double(done) / double(total_), done >= total_ ? 99.0 : 100.0);
    text = label_ + " " + std::to_string(int(pct)) + "% " + human_bytes(done) + " / " + human_bytes(total_);
  }
  if (!item.empty()) {
    // Keep the line short enough for a narrow terminal.
    std::string it(item.size() > 40 ? "..." + std::string(item.substr(item.size() - 37)) : item);
    text += "  " + it;
  }
  std::fprintf(stderr, "\r\033[K%s", text.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::finish() {
  if (!enabled_ || !drawn_) return;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  drawn_ = false;
}

// ---- formatting ---------------------------------------------------------------------------------

std::string human_bytes(uint64_t bytes) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  return buf;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

std::string shape_string(std::span<const uint64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string seconds_string(double seconds) {
  char buf[32];
  if (seconds < 1.0) std::snprintf(buf, sizeof buf, "%.2f ms", seconds * 1e3);
  else std::snprintf(buf, sizeof buf, "%.3f s", seconds);
  return buf;
}

std::string format_double(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  std::string s(buf, r.ptr);
  // "1" -> "1.0": keep a float visibly a float (not for "1e+300", "inf", "nan").
  if (s.find_first_of(".eEin") == std::string::npos) s += ".0";
  return s;
}

std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out;
}

uint64_t offset_alignment(uint64_t offset) {
  if (offset == 0) return MPK_MAX_ALIGNMENT;
  uint64_t a = offset & (~offset + 1);  // lowest set bit
  return a > MPK_MAX_ALIGNMENT ? uint64_t(MPK_MAX_ALIGNMENT) : a;
}

}  // namespace mpk::cli
