// capi_bridge.hpp - what other libmodelpack libraries (libmodelpack_runtime) need from the core's C
// ABI: the C++ model behind an mpk_model handle, and this thread's last-error message. Exported from
// libmodelpack.so (namespace mpk::bridge, matched by the version script and allowed by tests/abi/check_symbols.sh) but not installed: the ABI
// between the project's own libraries, not for applications.
#pragma once

#include <modelpack/modelpack.h>
#include <modelpack/modelpack.hpp>

#include <string_view>

namespace mpk::bridge {
// The model of an open handle (null for a null handle).
MPK_API const Model *capi_model(const mpk_model *model) noexcept;
// Sets this thread's last-error message (what mpk_last_error_message() returns).
MPK_API void capi_set_error(mpk_status code, std::string_view message) noexcept;
}  // namespace mpk::bridge
