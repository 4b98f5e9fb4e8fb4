#include "daemon/errors.hpp"

#include <openssl/err.h>

#include <asio/error.hpp>
#include <cctype>
#include <cstring>

namespace tlsport::daemon {

ErrorInfo classify(const std::error_code& ec) {
  if (ec == asio::error::operation_aborted) return {"cancelled", "operation cancelled"};
  if (ec == asio::error::eof) return {"closed", "connection closed by peer"};
  if (ec == asio::error::host_not_found || ec == asio::error::host_not_found_try_again ||
      ec == asio::error::no_data)
    return {"nxdomain", ec.message()};
  if (ec == asio::error::timed_out) return {"timeout", ec.message()};
  if (ec.category() == std::system_category() || ec.category() == asio::system_category()) {
    // glibc names errno values; the protocol uses them in lower case.
    const char* name = strerrorname_np(ec.value());
    if (name != nullptr) {
      std::string kind(name);
      for (char& c : kind) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return {kind, ec.message()};
    }
  }
  return {"error", ec.message()};
}

std::string take_openssl_error(const std::string& fallback) {
  unsigned long code = ERR_get_error();
  std::string text;
  if (code != 0 && ERR_SYSTEM_ERROR(code)) {
    // A system call inside OpenSSL failed (a missing file, say): its errno.
    text = std::strerror(ERR_GET_REASON(code));
  } else if (code != 0) {
    const char* reason = ERR_reason_error_string(code);
    text = reason != nullptr ? reason : "unknown TLS error";
    const char* lib = ERR_lib_error_string(code);
    if (lib != nullptr) text += std::string(" (") + lib + ")";
  }
  ERR_clear_error();
  return code != 0 ? text : fallback;
}

}  // namespace tlsport::daemon
