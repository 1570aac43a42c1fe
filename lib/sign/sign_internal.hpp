// sign_internal.hpp - the reader's side of signatures (FORMAT.md 7.13): Model::open calls
// check_signature when OpenOptions::trusted_keys is not empty.
#pragma once

#include "common.hpp"

#include <span>
#include <string_view>

namespace mpk::detail {

class File;

// Checks the trailer at the end of `file` against `trusted`: its form, the key, the Ed25519
// signature over the preamble + header digest, the content id and the recorded file digest, and
// with `full` the digest of every byte before the trailer. MPK_ERR_SIGNATURE with what failed.
Status check_signature(const File &file, const uint8_t *preamble, const uint8_t *header, uint64_t header_size,
                       uint64_t sections_end, std::string_view content_id, std::span<const PublicKey> trusted,
                       bool full);

}  // namespace mpk::detail
