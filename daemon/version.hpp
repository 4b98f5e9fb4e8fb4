// The daemon's version and the protocol version hello reports.
#pragma once

namespace tlsport::daemon {
/// The daemon's release.
inline constexpr const char* kVersion = "0.1.0";
/// docs/protocol.md's version.
inline constexpr int kProtocolVersion = 1;
}  // namespace tlsport::daemon
