// Minimal levelled logging to stderr. In port mode stderr is often the
// Erlang shell's raw-mode terminal, so lines end in "\r\n" on a tty.
#pragma once

#include <cstdio>
#include <string>

namespace tlsport::daemon {

/// Severity of a log line; lines below the configured level are dropped.
enum class LogLevel { debug = 0, info = 1, warning = 2, error = 3, none = 4 };

/// Sets the level below which lines are dropped.
void set_log_level(LogLevel level);
/// Parses "debug", "info", "warning", "error", "none".
bool parse_log_level(const std::string& name, LogLevel& out);
/// True when a line of this level would be written (to skip formatting work).
bool log_enabled(LogLevel level);
/// Writes one line (printf-style) if the level is enabled.
void log(LogLevel level, const char* format, ...) __attribute__((format(printf, 2, 3)));

}  // namespace tlsport::daemon
