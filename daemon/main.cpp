// tlsportd: owns TLS sockets on behalf of the programs that control it.
#include <signal.h>
#include <sys/prctl.h>

#include <asio/io_context.hpp>
#include <cstdio>
#include <exception>

#include "daemon/daemon.hpp"
#include "daemon/log.hpp"
#include "daemon/options.hpp"
#include "daemon/version.hpp"

int main(int argc, char** argv) {
  using namespace tlsport::daemon;
  Options options;
  ParseResult parsed = parse_options(argc, argv, options);
  switch (parsed.action) {
    case ParseResult::Action::help:
      std::fputs(usage_text().c_str(), stdout);
      return 0;
    case ParseResult::Action::version:
      std::printf("tlsportd %s (protocol %d)\n", kVersion, kProtocolVersion);
      return 0;
    case ParseResult::Action::error:
      std::fprintf(stderr, "tlsportd: %s\nTry 'tlsportd --help'.\n", parsed.error.c_str());
      return 2;
    case ParseResult::Action::run:
      break;
  }
  set_log_level(options.log_level);
  // A closed pipe is seen as EPIPE where it happens, never as a signal.
  ::signal(SIGPIPE, SIG_IGN);
  // Keys and passphrases live in this process: no core dump (and no
  // ptrace by other processes of the user) unless asked for.
  if (!options.core_dumps) ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  try {
    asio::io_context io(1);
    Daemon daemon(io, options);
    if (!daemon.start()) return 1;
    io.run();
  } catch (const std::exception& e) {
    log(LogLevel::error, "fatal: %s", e.what());
    return 1;
  }
  return 0;
}
