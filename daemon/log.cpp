#include "daemon/log.hpp"

#include <unistd.h>

#include <cstdarg>
#include <ctime>

namespace tlsport::daemon {
namespace {
LogLevel g_level = LogLevel::warning;
const char* const kNames[] = {"debug", "info", "warning", "error", "none"};
}  // namespace

void set_log_level(LogLevel level) { g_level = level; }

bool parse_log_level(const std::string& name, LogLevel& out) {
  for (int i = 0; i <= static_cast<int>(LogLevel::none); ++i) {
    if (name == kNames[i]) {
      out = static_cast<LogLevel>(i);
      return true;
    }
  }
  return false;
}

bool log_enabled(LogLevel level) { return level >= g_level && level != LogLevel::none; }

void log(LogLevel level, const char* format, ...) {
  if (!log_enabled(level)) return;
  char line[1024];
  int n = std::snprintf(line, sizeof line, "tlsportd[%d] %s: ", static_cast<int>(getpid()),
                        kNames[static_cast<int>(level)]);
  va_list args;
  va_start(args, format);
  int m = std::vsnprintf(line + n, sizeof line - n, format, args);
  va_end(args);
  std::size_t len = n + (m < 0 ? 0 : std::min<std::size_t>(m, sizeof line - n - 3));
  static const bool tty = isatty(2);
  if (tty) line[len++] = '\r';
  line[len++] = '\n';
  // One write per line so that lines from a busy daemon do not interleave.
  ssize_t ignored = ::write(2, line, len);
  (void)ignored;
}

}  // namespace tlsport::daemon
