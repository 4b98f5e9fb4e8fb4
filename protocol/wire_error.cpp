// Error kinds of the wire: names and their category.
#include "protocol/wire_error.hpp"

#include <cctype>
#include <cstring>

namespace tlsport::protocol {
namespace {

/// The word each kind has on the wire (docs/protocol.md §2.3).
const char* kind_word(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::bad_request:
      return "bad_request";
    case ErrorKind::no_such_socket:
      return "no_such_socket";
    case ErrorKind::not_owner:
      return "not_owner";
    case ErrorKind::no_such_client:
      return "no_such_client";
    case ErrorKind::closed:
      return "closed";
    case ErrorKind::cancelled:
      return "cancelled";
    case ErrorKind::timeout:
      return "timeout";
    case ErrorKind::tls:
      return "tls";
    case ErrorKind::unsupported_protocol:
      return "unsupported_protocol";
    case ErrorKind::bad_tls_config:
      return "bad_tls_config";
    case ErrorKind::nxdomain:
      return "nxdomain";
    case ErrorKind::overloaded:
      return "overloaded";
    case ErrorKind::bad_packet:
      return "bad_packet";
    case ErrorKind::error:
      return "error";
  }
  return "error";
}

/// Error category of ErrorKind; message() is the wire word itself.
class ErrorKindCategory final : public std::error_category {
 public:
  /// Shown with the code in logs.
  const char* name() const noexcept override { return "tlsport.wire"; }
  /// The kind's wire word.
  std::string message(int value) const override { return kind_word(static_cast<ErrorKind>(value)); }
};

}  // namespace

const std::error_category& error_kind_category() {
  static const ErrorKindCategory category;
  return category;
}

std::error_code make_error_code(ErrorKind kind) {
  return {static_cast<int>(kind), error_kind_category()};
}

std::string WireError::kind() const {
  if (!code) return "error";  // never "0": an error without a code is unclassified
  if (code.category() == error_kind_category())
    return kind_word(static_cast<ErrorKind>(code.value()));
  if (code.category() == std::system_category() || code.category() == std::generic_category()) {
    // glibc names errno values; the protocol uses them in lower case.
    if (const char* name = strerrorname_np(code.value())) {
      std::string word(name);
      for (char& c : word) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return word;
    }
  }
  return "error";
}

}  // namespace tlsport::protocol
