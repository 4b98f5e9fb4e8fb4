// Command-line flags and the JSON configuration file (conf/).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "daemon/log.hpp"
#include "protocol/control_codec.hpp"

namespace tlsport::daemon {

/// Everything the daemon is told at start.
struct Options {
  bool use_stdio = true;     ///< stdin/stdout (or fds 3/4) is a control channel
  bool nouse_stdio = false;  ///< fds 3 and 4 instead of 0 and 1 (Erlang's nouse_stdio)
  protocol::ControlEncoding control = protocol::ControlEncoding::binary;  ///< stdio encoding
  unsigned packet = 4;                                      ///< stdio frame header bytes: 1, 2 or 4
  protocol::TermFormat terms = protocol::TermFormat::json;  ///< term format before detection
  std::string unix_path;                                    ///< Unix socket to serve ("" = none)
  unsigned handshake_timeout_ms = 30000;                    ///< default handshake timeout
  unsigned idle_timeout_ms = 0;                             ///< default idle timeout (0: none)
  unsigned close_timeout_ms = 5000;                         ///< default wait of an orderly close
  std::size_t client_buffer = 1 << 20;                      ///< a client's output high-water mark
  std::size_t socket_buffer = 1 << 20;                  ///< a socket's send-buffer high-water mark
  std::size_t max_message = (64u << 20) + (64u << 10);  ///< cap on one control message
  std::size_t max_sockets = 100000;                     ///< cap on open sockets and listeners
  std::size_t peer_memory_budget = std::size_t{256} << 20;  ///< bytes held for peers, all sockets
  std::string stats_listen;                ///< "ADDRESS:PORT" for /metrics ("" = off)
  unsigned max_grace_ms = 300000;          ///< longest grace period a client may ask for
  bool core_dumps = false;                 ///< leave the process dumpable (keys would be in a core)
  LogLevel log_level = LogLevel::warning;  ///< log lines below this are dropped
};

/// What parsing the command line decided.
struct ParseResult {
  enum class Action { run, help, version, error } action = Action::run;  ///< what to do
  std::string error;  ///< for Action::error: the message for the user
};

/// Parses argv (and the --config file it names) into `options`.
ParseResult parse_options(int argc, char** argv, Options& options);

/// The --help text.
std::string usage_text();

}  // namespace tlsport::daemon
