// Levelled, timestamped logging to stderr, a file or syslog. On a terminal
// lines end in "\r\n" (in port mode stderr is often the Erlang shell's
// raw-mode terminal); under systemd's journal the level goes in a "<N>"
// prefix and the journal adds the time.
#pragma once

#include <cstdio>
#include <string>

namespace tlsport::daemon {

/// Severity of a log line; lines below the configured level are dropped.
enum class LogLevel { debug = 0, info = 1, warning = 2, error = 3, none = 4 };

/// Where log lines go.
enum class LogDestination { standard_error, file, syslog };

/// Sets the level below which lines are dropped.
void set_log_level(LogLevel level);
/// Parses "debug", "info", "warning", "error", "none".
bool parse_log_level(const std::string& name, LogLevel& out);
/// Parses "stderr", "file", "syslog".
bool parse_log_destination(const std::string& name, LogDestination& out);
/// True when a line of this level would be written (to skip formatting work).
bool log_enabled(LogLevel level);
/// Writes one line (printf-style) if the level is enabled.
void log(LogLevel level, const char* format, ...) __attribute__((format(printf, 2, 3)));

/// Sends lines from now on to `destination`: for `file`, `path` is the file
/// (appended to, created 0640); for `syslog`, `path` is the syslog socket
/// (datagrams, never blocking: a line that finds it full is dropped).
/// False with `error` set when it cannot be opened; lines then stay on stderr.
bool open_log(LogDestination destination, const std::string& path, std::string& error);

}  // namespace tlsport::daemon
