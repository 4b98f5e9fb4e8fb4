// Classified errors (docs/protocol.md §2.3) from the system, asio and
// OpenSSL. The kinds themselves are protocol/wire_error.hpp's.
#pragma once

#include <optional>
#include <string>
#include <system_error>

#include "protocol/wire_error.hpp"

namespace tlsport::daemon {

using ErrorInfo = protocol::WireError;
using protocol::ErrorKind;
using protocol::wire_error;

/// Classifies a system or asio error: errno values keep their errno (the
/// wire shows its name), names that do not resolve are nxdomain, aborted
/// operations cancelled, asio's eof closed, timeouts timeout.
ErrorInfo classify(const std::error_code& ec);

/// When an operation failed in a way that running out of descriptors can
/// cause (asio reports a cancelled connect, getaddrinfo an unknown name):
/// EMFILE or ENFILE if that is the case now, else nothing.
std::optional<ErrorInfo> out_of_descriptors();

/// The reason text of the oldest error on OpenSSL's error queue (clearing
/// it), or `fallback` when the queue is empty.
std::string take_openssl_error(const std::string& fallback);

}  // namespace tlsport::daemon
