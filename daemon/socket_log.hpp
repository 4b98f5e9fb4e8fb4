// The seed's -log file: one socket's story, appended line by line.
#pragma once

#include <cstdint>
#include <string>

namespace tlsport::daemon {

/// Appends timestamped lines about one socket to a file (SSLFlags -log).
class SocketLog {
 public:
  explicit SocketLog(std::string path) : path_(std::move(path)) {}
  /// Appends "<UTC time> socket <id>: <line>".
  void write(std::uint32_t id, const std::string& line) const;

 private:
  std::string path_;  ///< the file, opened for each line
};

}  // namespace tlsport::daemon
