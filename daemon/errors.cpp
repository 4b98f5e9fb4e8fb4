#include "daemon/errors.hpp"

#include <openssl/err.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/error.hpp>
#include <cerrno>
#include <cstring>

namespace tlsport::daemon {

ErrorInfo classify(const std::error_code& ec) {
  if (ec == asio::error::operation_aborted)
    return wire_error(ErrorKind::cancelled, "operation cancelled");
  if (ec == asio::error::eof) return wire_error(ErrorKind::closed, "connection closed by peer");
  if (ec == asio::error::host_not_found || ec == asio::error::host_not_found_try_again ||
      ec == asio::error::no_data)
    return wire_error(ErrorKind::nxdomain, ec.message());
  if (ec == asio::error::timed_out) return wire_error(ErrorKind::timeout, ec.message());
  // asio's system category is its own object, distinct from std's.
  if (ec.category() == std::system_category() || ec.category() == std::generic_category() ||
      ec.category() == asio::system_category())
    return {std::error_code(ec.value(), std::system_category()), ec.message()};
  return wire_error(ErrorKind::error, ec.message());
}

std::optional<ErrorInfo> out_of_descriptors() {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    ::close(fd);
    return std::nullopt;
  }
  if (errno != EMFILE && errno != ENFILE) return std::nullopt;
  int err = errno;
  struct rlimit limit {};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  return ErrorInfo{std::error_code(err, std::system_category()),
                   std::string(err == EMFILE ? "the daemon is out of file descriptors"
                                             : "the system is out of file descriptors") +
                       " (its limit is " + std::to_string(limit.rlim_cur) + ")"};
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
