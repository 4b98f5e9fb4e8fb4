#include "daemon/log.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace tlsport::daemon {
namespace {

LogLevel g_level = LogLevel::warning;
const char* const kNames[] = {"debug", "info", "warning", "error", "none"};
/// syslog severities of the levels (RFC 5424: 7 debug, 6 info, 4 warning, 3 error).
const int kSeverity[] = {7, 6, 4, 3, 3};
constexpr int kFacilityDaemon = 3 << 3;

/// Where lines go now; stderr until open_log() succeeds.
struct Sink {
  LogDestination destination = LogDestination::standard_error;
  int fd = 2;               ///< stderr, the log file, or the syslog socket
  std::string syslog_path;  ///< to reconnect after syslog restarts
  bool tty = false;         ///< stderr is a terminal: "\r\n"
  bool journal = false;     ///< stderr is systemd's journal: "<N>" prefixes, no time
  bool checked = false;     ///< tty/journal worked out
};
Sink g_sink;

void check_stderr() {
  if (g_sink.checked) return;
  g_sink.checked = true;
  g_sink.tty = isatty(2);
  // systemd sets JOURNAL_STREAM=<dev>:<inode> of the stream it connected.
  if (const char* js = std::getenv("JOURNAL_STREAM")) {
    struct stat st;
    unsigned long long dev = 0, ino = 0;
    if (std::sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
        static_cast<unsigned long long>(st.st_dev) == dev &&
        static_cast<unsigned long long>(st.st_ino) == ino)
      g_sink.journal = true;
  }
}

/// "2024-05-01T12:00:00.123+02:00"
std::size_t iso_time(char* out, std::size_t size) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  localtime_r(&ts.tv_sec, &tm);
  std::size_t n = std::strftime(out, size, "%Y-%m-%dT%H:%M:%S", &tm);
  long off = tm.tm_gmtoff / 60;
  char sign = off < 0 ? '-' : '+';
  off = off < 0 ? -off : off;
  int m = std::snprintf(out + n, size - n, ".%03ld%c%02ld:%02ld", ts.tv_nsec / 1000000, sign,
                        off / 60, off % 60);
  return n + (m > 0 ? static_cast<std::size_t>(m) : 0);
}

/// "May  1 12:00:00", as syslog(3) writes it.
std::size_t syslog_time(char* out, std::size_t size) {
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::time_t now = std::time(nullptr);
  struct tm tm;
  localtime_r(&now, &tm);
  int n = std::snprintf(out, size, "%s %2d %02d:%02d:%02d", kMonths[tm.tm_mon % 12], tm.tm_mday,
                        tm.tm_hour, tm.tm_min, tm.tm_sec);
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

int connect_syslog(const std::string& path, std::string& error) {
  struct sockaddr_un addr {};
  if (path.size() >= sizeof addr.sun_path) {
    error = "syslog socket path too long: " + path;
    return -1;
  }
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("cannot create a syslog socket: ") + std::strerror(errno);
    return -1;
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(fd, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) != 0) {
    error = "cannot reach syslog at " + path + ": " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

void send_syslog(const char* line, std::size_t len) {
  if (g_sink.fd >= 0 && ::send(g_sink.fd, line, len, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) return;
  // syslog restarted (the socket file is new): connect again, once per line.
  if (g_sink.fd >= 0 && errno != ECONNREFUSED && errno != ENOTCONN) return;  // full: dropped
  std::string ignored;
  int fd = connect_syslog(g_sink.syslog_path, ignored);
  if (fd < 0) return;
  if (g_sink.fd >= 0) ::close(g_sink.fd);
  g_sink.fd = fd;
  ssize_t sent = ::send(fd, line, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  (void)sent;
}

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

bool parse_log_destination(const std::string& name, LogDestination& out) {
  if (name == "stderr")
    out = LogDestination::standard_error;
  else if (name == "file")
    out = LogDestination::file;
  else if (name == "syslog")
    out = LogDestination::syslog;
  else
    return false;
  return true;
}

bool log_enabled(LogLevel level) { return level >= g_level && level != LogLevel::none; }

bool open_log(LogDestination destination, const std::string& path, std::string& error) {
  int fd = 2;
  if (destination == LogDestination::file) {
    fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    if (fd < 0) {
      error = "cannot open log file " + path + ": " + std::strerror(errno);
      return false;
    }
  } else if (destination == LogDestination::syslog) {
    fd = connect_syslog(path, error);
    if (fd < 0) return false;
    g_sink.syslog_path = path;
  }
  if (g_sink.fd != 2 && g_sink.fd >= 0) ::close(g_sink.fd);
  g_sink.destination = destination;
  g_sink.fd = fd;
  return true;
}

void log(LogLevel level, const char* format, ...) {
  if (!log_enabled(level)) return;
  check_stderr();
  const int lvl = static_cast<int>(level);
  char line[1024];
  std::size_t n = 0;
  switch (g_sink.destination) {
    case LogDestination::syslog: {
      n = std::snprintf(line, sizeof line, "<%d>", kFacilityDaemon + kSeverity[lvl]);
      n += syslog_time(line + n, sizeof line - n);
      n += std::snprintf(line + n, sizeof line - n,
                         " tlsportd[%d]: %s: ", static_cast<int>(getpid()), kNames[lvl]);
      break;
    }
    case LogDestination::standard_error:
      if (g_sink.journal) {
        n = std::snprintf(line, sizeof line, "<%d>%s: ", kSeverity[lvl], kNames[lvl]);
        break;
      }
      [[fallthrough]];
    case LogDestination::file:
      n = iso_time(line, sizeof line);
      n += std::snprintf(line + n, sizeof line - n,
                         " tlsportd[%d] %s: ", static_cast<int>(getpid()), kNames[lvl]);
      break;
  }
  n = std::min(n, sizeof line - 3);
  va_list args;
  va_start(args, format);
  int m = std::vsnprintf(line + n, sizeof line - n, format, args);
  va_end(args);
  std::size_t len = n + (m < 0 ? 0 : std::min<std::size_t>(m, sizeof line - n - 3));
  if (g_sink.destination == LogDestination::syslog) {
    send_syslog(line, len);
    return;
  }
  if (g_sink.destination == LogDestination::standard_error && g_sink.tty && !g_sink.journal)
    line[len++] = '\r';
  line[len++] = '\n';
  // One write per line so that lines from a busy daemon do not interleave.
  ssize_t ignored = ::write(g_sink.fd, line, len);
  (void)ignored;
}

}  // namespace tlsport::daemon
