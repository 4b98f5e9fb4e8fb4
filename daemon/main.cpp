#include <malloc.h>
// tlsportd: owns TLS sockets on behalf of the programs that control it.
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <asio/io_context.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>

#include "daemon/daemon.hpp"
#include "daemon/log.hpp"
#include "daemon/options.hpp"
#include "daemon/unix_server.hpp"
#include "daemon/version.hpp"

namespace {

using namespace tlsport::daemon;

/// Exit statuses (tlsportd(8)).
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;  ///< could not start, or a fatal error
constexpr int kExitUsage = 2;    ///< bad flags or configuration

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

/// Switches to the configured user and group for good, once everything that
/// needs root (binding the socket, opening the log) is done. "" or the error.
std::string drop_privileges(const Options& o) {
  if (!o.user && !o.group) return "";
  uid_t uid = o.user ? *o.user : ::getuid();
  gid_t gid = o.group ? *o.group : ::getgid();
  if (::geteuid() != 0) {
    // Not root: fine if that is who we are already (under systemd's User=).
    if (uid == ::getuid() && uid == ::geteuid() && gid == ::getgid()) return "";
    return "cannot switch to uid " + std::to_string(uid) + " gid " + std::to_string(gid) +
           ": not started as root";
  }
  // Supplementary groups first (only root may set them): the user's, or the group alone.
  if (o.user && !o.user_name.empty()) {
    if (::initgroups(o.user_name.c_str(), gid) != 0) return errno_text("initgroups");
  } else if (::setgroups(1, &gid) != 0) {
    return errno_text("setgroups");
  }
  if (::setresgid(gid, gid, gid) != 0) return errno_text("setresgid");
  if (::setresuid(uid, uid, uid) != 0) return errno_text("setresuid");
  // For good: root cannot be had back.
  if (uid != 0 && (::setuid(0) == 0 || ::seteuid(0) == 0)) return "root could be regained";
  log(LogLevel::info, "running as uid %d gid %d", static_cast<int>(uid), static_cast<int>(gid));
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  // Buffers of a few hundred KiB (a port's input, data queued for a socket)
  // come and go with bulk transfers: with glibc's defaults each one moved the
  // heap's end up and down (brk twice per buffer, 31 us each). Memory freed at
  // the end of the heap is kept up to 4 MiB; the daemon trims after
  // connections close (Daemon::trim_memory_later).
  ::mallopt(M_MMAP_THRESHOLD, 1 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 4 << 20);
  Options options;
  ParseResult parsed = parse_options(argc, argv, options, socket_activation_offered());
  switch (parsed.action) {
    case ParseResult::Action::help:
      std::fputs(usage_text().c_str(), stdout);
      return kExitOk;
    case ParseResult::Action::version:
      std::printf("tlsportd %s (protocol %d)\n", kVersion, kProtocolVersion);
      return kExitOk;
    case ParseResult::Action::error:
      std::fprintf(stderr, "tlsportd: %s\nTry 'tlsportd --help'.\n", parsed.error.c_str());
      return kExitUsage;
    case ParseResult::Action::check:
      raise_fd_limit();
      for (const std::string& w : option_warnings(options))
        std::fprintf(stderr, "tlsportd: warning: %s\n", w.c_str());
      std::printf("%s: ok\n", parsed.config_path.empty() ? "settings" : parsed.config_path.c_str());
      return kExitOk;
    case ParseResult::Action::run:
      break;
  }
  set_log_level(options.log_level);
  if (options.log_destination != LogDestination::standard_error) {
    std::string error;
    const std::string& where =
        options.log_destination == LogDestination::file ? options.log_file : options.syslog_socket;
    if (!open_log(options.log_destination, where, error)) {
      log(LogLevel::error, "%s", error.c_str());
      return kExitFailure;
    }
  }
  raise_fd_limit();
  for (const std::string& w : option_warnings(options)) log(LogLevel::warning, "%s", w.c_str());
  {
    std::string error;
    options.activated_fd = take_activated_socket(error);
    if (options.activated_fd == -2) {
      log(LogLevel::error, "%s", error.c_str());
      return kExitFailure;
    }
  }
  // A closed pipe is seen as EPIPE where it happens, never as a signal.
  ::signal(SIGPIPE, SIG_IGN);
  // Keys and passphrases live in this process: no core dump (and no
  // ptrace by other processes of the user) unless asked for.
  if (!options.core_dumps) ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  try {
    asio::io_context io(1);
    Daemon daemon(io, options);
    if (!daemon.start()) return kExitFailure;
    if (std::string error = drop_privileges(options); !error.empty()) {
      log(LogLevel::error, "cannot drop privileges: %s", error.c_str());
      return kExitFailure;
    }
    // Changing uid resets the flag to fs.suid_dumpable: set it again, either way.
    ::prctl(PR_SET_DUMPABLE, options.core_dumps ? 1 : 0, 0, 0, 0);
    io.run();
  } catch (const std::exception& e) {
    log(LogLevel::error, "fatal: %s", e.what());
    return kExitFailure;
  }
  return kExitOk;
}
