// npz.hpp - importing and exporting NumPy .npz archives and single .npy files (libmodelpack C++ API).
//
// A .npz file is a zip archive with one member "<name>.npy" per array (numpy's np.savez stores the
// members, np.savez_compressed deflates them; both write zip64 extra fields). Each member is a .npy
// file (see npy.hpp) and becomes the tensor "<name>" (".npy" stripped; names may contain '/').
// The zip structure is read and written with libzip (Debian's libzip 1.7.3): the archive is opened
// with ZIP_RDONLY | ZIP_CHECKCONS, so the central directory is checked against every local header,
// and every member's CRC-32 and size are checked when its stream ends.
//
// Files are untrusted input. Every member is checked (name, method, encryption, declared size, the
// whole .npy header) before the first tensor reaches the writer; then the data is streamed in 1 MiB
// pieces, so memory is bounded by one piece plus the headers, whatever sizes a file declares. A
// member's declared uncompressed size must equal its .npy header length plus the data size the
// header implies (no zip bomb can make the importer write more than the headers announce).
// Messages name the archive and the member. Status codes of import_npz:
//   MPK_ERR_NOT_FOUND      no such input file
//   MPK_ERR_IO             the operating system refused (open, read)
//   MPK_ERR_TRUNCATED      the file is empty, or starts like a zip archive but has no end of
//                          central directory (cut short); a member's .npy header or data is
//                          shorter than it declares; the file shrank while being read
//   MPK_ERR_BAD_MAGIC      not a zip archive; a member that does not start with "\x93NUMPY"
//   MPK_ERR_BAD_FORMAT     the zip structure is inconsistent (central directory vs local headers,
//                          bad offsets, a name flagged UTF-8 that is not: libzip refuses these at
//                          open, before any member can be named), a corrupt deflate stream, a
//                          directory member, a member whose name does not end in ".npy", a
//                          malformed .npy header dict, fortran_order True (as `mpk pack`)
//   MPK_ERR_UNSUPPORTED_FEATURE  an encrypted member; a compression method other than stored (0)
//                          or deflate (8); a multi-disk archive
//   MPK_ERR_UNSUPPORTED_VERSION  a member's .npy format version is not 1.0, 2.0 or 3.0
//   MPK_ERR_CHECKSUM       a member's data does not match its CRC-32; a member's .npy header
//                          changed between validation and copy (the file was modified meanwhile)
//   MPK_ERR_SIZE_MISMATCH  a member's declared uncompressed size differs from its .npy header
//                          length + data size, or its stream holds more bytes than declared
//   MPK_ERR_DUPLICATE      two members with the same name
//   MPK_ERR_BAD_NAME       a member name that is not valid UTF-8, holds NUL, is empty after
//                          stripping ".npy", or is longer than MPK_MAX_NAME_BYTES
//   MPK_ERR_BAD_DTYPE      a .npy descr with no mpk dtype (objects, strings, complex, ...)
//   MPK_ERR_BAD_SHAPE      rank over MPK_MAX_RANK
//   MPK_ERR_OVERFLOW       numel * item size does not fit in 64 bits
//   MPK_ERR_LIMIT          a .npy header dict over 1 MiB
//   MPK_ERR_NO_MEMORY      libzip ran out of memory
// plus whatever the mpk::Writer refuses (its status is passed through unchanged).
// import_npy returns the same statuses for its one file, except the zip ones.
//
// Names: a member name's bytes must be UTF-8, flagged as such (general purpose bit 11, which
// Python's zipfile sets for every non-ASCII name) or not. An unflagged name with bytes over 0x7f
// that are not UTF-8 (a CP437 name, which numpy would decode as CP437) is refused with
// MPK_ERR_BAD_NAME rather than guessed at.
//
// Byte order: big-endian members ('>f4', ...) are swapped to little-endian, as `mpk pack` does;
// fortran_order True is refused (MPK_ERR_BAD_FORMAT), as `mpk pack` does.
//
// dtypes: f64 f32 f16 i64 i32 i16 i8 u64 u32 u16 u8 bool <-> '<f8' '<f4' '<f2' '<i8' '<i4' '<i2'
// '|i1' '<u8' '<u4' '<u2' '|u1' '|b1'. bf16 and every other mpk dtype have no NumPy dtype: exports
// refuse them with MPK_ERR_BAD_DTYPE naming the tensor and the dtype.
//
// Threads: the functions hold no global state; distinct calls are independent.
#pragma once

#include <modelpack/modelpack.hpp>

#include <string>
#include <string_view>

namespace mpk::npz {

// Reads and validates a .npz archive, then streams its members into `w` in central-directory
// order. Metadata: convert.source_format "npz", convert.source_xxh3, convert.tool. The source
// XXH3 is computed from the bytes libzip reads while the data is streamed; the bytes it did not
// read in file order (in practice the central directory at the end) are hashed in one extra pass
// over just those ranges. The writer is not committed: the caller commits on success and aborts
// (or destroys the writer) on failure.
MPK_API Status import_npz(const std::string &in, Writer &w);

// Reads one .npy file as one tensor named `name`; an empty `name` means the file's stem (its
// basename without a trailing ".npy"). Metadata as import_npz, with convert.source_format "npy".
MPK_API Status import_npy(const std::string &in, Writer &w, std::string_view name = {});

struct ExportOptions {
  // Deflate the members (as np.savez_compressed) instead of storing them (as np.savez).
  bool deflate = false;
};

// Writes every tensor of `m` as the member "<name>.npy" of a zip archive at `out`, in name order,
// atomically (temporary file in the target's directory, fsync, rename; on any error nothing appears
// at `out` and the temporary file is removed). Each member is a .npy file with the header np.save
// writes (npy::make_header: version 1.0, 2.0 only if the header needs it); data are streamed from
// the model in pieces, never held whole. Members are stored (or deflated), zip64 where a size needs
// it, names flagged UTF-8, timestamps fixed (2000-01-01) so that equal models give equal files.
// Memory: one 1 MiB piece at a time. With an Access::Read model that is all the process holds; a
// mapped model's pages also count in its RSS as they are read (mpk::convert opens Access::Read).
// Metadata and components are not expressible in .npz and are dropped.
// MPK_ERR_BAD_DTYPE naming the tensor and dtype for a dtype NumPy cannot represent (bf16, narrow
// floats, quantized, unknown); MPK_ERR_LIMIT for a tensor name over 65531 bytes (a zip member name
// holds 65535); MPK_ERR_IO; MPK_ERR_NO_MEMORY; a failed read of the model's bytes (e.g.
// MPK_ERR_TRUNCATED for an Access::Read model whose file shrank) naming the tensor.
MPK_API Status export_npz(const Model &m, const std::string &out, const ExportOptions &options = {});

// Writes the only tensor of `m` as a .npy file at `out` (atomically, like npy::Writer).
// MPK_ERR_INVALID_ARGUMENT if the model does not hold exactly one tensor (use .npz, or
// `mpk extract FILE NAME -o OUT.npy` for one tensor); MPK_ERR_BAD_DTYPE as export_npz; MPK_ERR_IO.
MPK_API Status export_npy(const Model &m, const std::string &out);

}  // namespace mpk::npz
