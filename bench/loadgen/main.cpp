// tlsport-loadgen: the benchmark's load generator and its C++ servers.
//   tlsport-loadgen bulk|upload|echo|handshake|resume|idle --port P [...]
//   tlsport-loadgen serve-tls --cert C --key K      the in-process server
//   tlsport-loadgen serve-plain                     stunnel's backend
//   tlsport-loadgen serve-tlsportd --daemon D --cert C --key K
// Servers print "PORTS echo=E bulk=B" once they listen. See client.cpp for
// the workloads' flags and docs/benchmarks.md for the whole benchmark.
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>

#include "common.hpp"

namespace bench {

void raise_fd_limit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

}  // namespace bench

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: %s bulk|upload|echo|handshake|resume|idle|serve-tls|serve-plain|"
                 "serve-tlsportd [--flag value ...]\n",
                 argv[0]);
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  std::string mode = argv[1];
  bench::Flags flags(argc, argv, 2);
  int rc;
  if (mode == "serve-tls")
    rc = bench::serve_tls(flags);
  else if (mode == "serve-plain")
    rc = bench::serve_plain(flags);
  else if (mode == "serve-tlsportd")
    rc = bench::serve_tlsportd(flags);
  else
    rc = bench::run_client(mode, flags);
  std::fflush(stdout);
  // Connections and their pending waits are simply dropped with the process.
  _exit(rc);
}
