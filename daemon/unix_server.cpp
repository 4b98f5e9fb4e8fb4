#include "daemon/unix_server.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "daemon/log.hpp"

namespace tlsport::daemon {

using asio::local::stream_protocol;

namespace {
/// The first descriptor systemd passes (SD_LISTEN_FDS_START).
constexpr int kListenFdsStart = 3;

/// LISTEN_FDS, when LISTEN_PID names this process; 0 otherwise.
long offered_count() {
  const char* pid = std::getenv("LISTEN_PID");
  const char* fds = std::getenv("LISTEN_FDS");
  if (!pid || !fds) return 0;
  char* end = nullptr;
  long p = std::strtol(pid, &end, 10);
  if (*end || p != static_cast<long>(::getpid())) return 0;
  long n = std::strtol(fds, &end, 10);
  return *end || n < 0 ? 0 : n;
}
}  // namespace

bool socket_activation_offered() { return offered_count() > 0; }

int take_activated_socket(std::string& error) {
  // The protocol of sd_listen_fds(3), done here: it is three environment
  // variables, and the daemon then needs no libsystemd.
  long n = offered_count();
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  if (n == 0) return -1;
  if (n != 1) {
    error = "systemd passed " + std::to_string(n) + " sockets; tlsportd serves one (ListenStream=)";
    return -2;
  }
  int fd = kListenFdsStart;
  int domain = 0, type = 0, listening = 0;
  socklen_t len = sizeof(int);
  bool ok = getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX &&
            (len = sizeof(int), getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len)) == 0 &&
            type == SOCK_STREAM &&
            (len = sizeof(int), getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len)) == 0 &&
            listening;
  if (!ok) {
    error = "the socket systemd passed is not a listening Unix stream socket (ListenStream=PATH)";
    return -2;
  }
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}

UnixServer::UnixServer(asio::io_context& io, Settings settings, ClientCount client_count,
                       OnClient on_client)
    : io_(io),
      settings_(std::move(settings)),
      client_count_(std::move(client_count)),
      on_client_(std::move(on_client)),
      acceptor_(io),
      retry_timer_(io) {}

bool UnixServer::clear_path() {
  const std::string& path = settings_.path;
  // A socket file left by a daemon that died is removed; a live one is not.
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) return true;
  if (!S_ISSOCK(st.st_mode)) {
    log(LogLevel::error, "%s exists and is not a socket", path.c_str());
    return false;
  }
  stream_protocol::socket probe(io_);
  std::error_code ec;
  probe.connect(stream_protocol::endpoint(path), ec);
  if (!ec) {
    log(LogLevel::error, "another daemon is serving %s", path.c_str());
    return false;
  }
  ::unlink(path.c_str());
  return true;
}

bool UnixServer::open() {
  std::error_code ec;
  if (settings_.activated_fd >= 0) {
    // systemd made the file (SocketMode=, SocketUser=) and removes it.
    acceptor_.assign(stream_protocol(), settings_.activated_fd, ec);
    if (ec) {
      log(LogLevel::error, "cannot use the socket systemd passed: %s", ec.message().c_str());
      return false;
    }
    std::string where = acceptor_.local_endpoint(ec).path();
    log(LogLevel::info, "serving clients on %s (from systemd)", where.c_str());
    accept_next();
    return true;
  }
  const std::string& path = settings_.path;
  if (!clear_path()) return false;
  // The socket is made listening, with its mode and owner, under a name of
  // its own, then renamed into place: a client that sees the path appear can
  // connect at once (a path bound but not yet listening refuses connections).
  // A path too long for that suffix is bound in place.
  std::string made = path + ".new";
  if (made.size() >= sizeof(sockaddr_un{}.sun_path)) made = path;
  ::unlink(made.c_str());
  acceptor_.open(stream_protocol(), ec);
  // Created with the mode asked for (0600 by default), never wider even for a moment.
  mode_t old_mask = ::umask(~settings_.mode & 0777);
  if (!ec) acceptor_.bind(stream_protocol::endpoint(made), ec);
  ::umask(old_mask);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (!ec && ::chmod(made.c_str(), settings_.mode) != 0)
    ec = std::error_code(errno, std::generic_category());
  if (!ec && (settings_.owner_uid >= 0 || settings_.owner_gid >= 0) &&
      ::lchown(made.c_str(), settings_.owner_uid, settings_.owner_gid) != 0)
    ec = std::error_code(errno, std::generic_category());
  if (!ec && made != path && ::rename(made.c_str(), path.c_str()) != 0)
    ec = std::error_code(errno, std::generic_category());
  if (ec) {
    log(LogLevel::error, "cannot serve %s: %s", path.c_str(), ec.message().c_str());
    if (acceptor_.is_open()) {
      std::error_code ignored;
      acceptor_.close(ignored);
      ::unlink(made.c_str());
    }
    return false;
  }
  log(LogLevel::info, "serving clients on %s", path.c_str());
  accept_next();
  return true;
}

void UnixServer::close() {
  if (closed_) return;
  closed_ = true;
  std::error_code ignored;
  retry_timer_.cancel();
  if (acceptor_.is_open()) {
    acceptor_.close(ignored);
    if (settings_.activated_fd < 0) ::unlink(settings_.path.c_str());
  }
}

void UnixServer::accept_next() {
  acceptor_.async_accept([this](const std::error_code& ec, stream_protocol::socket socket) {
    if (ec == asio::error::operation_aborted || closed_) return;
    if (!ec) {
      admit(std::move(socket));
      accept_next();
      return;
    }
    // EMFILE and the like: back off instead of spinning.
    log(LogLevel::warning, "Unix-socket accept failed: %s", ec.message().c_str());
    retry_timer_.expires_after(std::chrono::milliseconds(100));
    retry_timer_.async_wait([this](const std::error_code& e) {
      if (!e && !closed_) accept_next();
    });
  });
}

bool UnixServer::allowed(int fd, uid_t& uid) const {
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  uid = cred.uid;
  if (cred.uid == ::getuid()) return true;
  const auto& uids = settings_.allow_uids;
  if (std::find(uids.begin(), uids.end(), cred.uid) != uids.end()) return true;
  const auto& gids = settings_.allow_gids;
  if (gids.empty()) return false;
  if (std::find(gids.begin(), gids.end(), cred.gid) != gids.end()) return true;
  // The peer's supplementary groups, as the kernel saw them at connect
  // (no user database lookup: that could block).
  std::vector<gid_t> groups(64);
  len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  int rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len);
  if (rc != 0 && errno == ERANGE) {
    groups.resize(len / sizeof(gid_t));
    rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len);
  }
  if (rc != 0) return false;
  groups.resize(len / sizeof(gid_t));
  for (gid_t g : groups)
    if (std::find(gids.begin(), gids.end(), g) != gids.end()) return true;
  return false;
}

void UnixServer::admit(stream_protocol::socket socket) {
  uid_t uid = static_cast<uid_t>(-1);
  if (!allowed(socket.native_handle(), uid)) {
    log(LogLevel::warning,
        "refused a Unix-socket client of uid %d (not allowed: allow_uids, "
        "allow_gids)",
        static_cast<int>(uid));
    return;
  }
  if (client_count_() >= settings_.max_clients) {
    log(LogLevel::warning, "refused a Unix-socket client: %zu clients already", client_count_());
    return;
  }
  on_client_(socket.release());
}

}  // namespace tlsport::daemon
