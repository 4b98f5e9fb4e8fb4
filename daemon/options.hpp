// Command-line flags and the JSON configuration file (conf/). Every setting
// has a configuration key and a flag; a flag overrides the key.
#pragma once

#include <sys/types.h>

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
  bool max_sockets_given =
      false;  ///< set by flag or config (not the default): checked against the fd limit
  std::size_t peer_memory_budget = std::size_t{256} << 20;  ///< bytes held for peers, all sockets
  std::string stats_listen;                ///< "ADDRESS:PORT" for /metrics ("" = off)
  unsigned max_grace_ms = 300000;          ///< longest grace period a client may ask for
  bool core_dumps = false;                 ///< leave the process dumpable (keys would be in a core)
  LogLevel log_level = LogLevel::warning;  ///< log lines below this are dropped

  std::size_t max_clients = 1024;  ///< control clients attached at once
  unsigned socket_mode = 0600;     ///< mode of the Unix socket file the daemon creates
  std::vector<uid_t> allow_uids;   ///< Unix-socket peers let in besides the daemon's uid
  std::vector<gid_t> allow_gids;   ///< ... and peers in any of these groups
  std::optional<uid_t> user;       ///< switch to this user after binding (--user)
  std::optional<gid_t> group;      ///< ... and this group (default: the user's)
  std::string user_name;           ///< the user's name, for its supplementary groups
  LogDestination log_destination = LogDestination::standard_error;  ///< where log lines go
  std::string log_file;                    ///< the file for LogDestination::file
  std::string syslog_socket = "/dev/log";  ///< the socket for LogDestination::syslog
  int activated_fd = -1;                   ///< the listening Unix socket systemd passed, or -1
};

/// What parsing the command line decided.
struct ParseResult {
  enum class Action { run, check, help, version, error } action = Action::run;  ///< what to do
  std::string error;        ///< for Action::error: the message for the user
  std::string config_path;  ///< the --config file, if any
};

/// Parses argv (and the --config file it names) into `options`. With
/// `socket_activated`, a Unix socket is served even if none is named.
ParseResult parse_options(int argc, char** argv, Options& options, bool socket_activated = false);

/// Warnings about settings that are valid but will not work as asked
/// (today: a max_sockets given beyond what the descriptor limit allows).
std::vector<std::string> option_warnings(const Options& options);

/// Raises the soft descriptor limit to the hard one.
void raise_fd_limit();

/// "ADDRESS:PORT" as the metrics server binds it: an IP address (IPv6 in
/// brackets) and a port of 0..65535 in digits. False if `text` is not one.
bool split_address_and_port(const std::string& text, std::string& address, std::uint16_t& port);

/// The --help text.
std::string usage_text();

}  // namespace tlsport::daemon
