#include "daemon/unix_server.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/log.hpp"

namespace tlsport::daemon {

using asio::local::stream_protocol;

UnixServer::UnixServer(asio::io_context& io, std::string path, std::size_t max_clients,
                       ClientCount client_count, OnClient on_client)
    : io_(io),
      path_(std::move(path)),
      max_clients_(max_clients),
      client_count_(std::move(client_count)),
      on_client_(std::move(on_client)),
      acceptor_(io),
      retry_timer_(io) {}

bool UnixServer::clear_path() {
  // A socket file left by a daemon that died is removed; a live one is not.
  struct stat st;
  if (lstat(path_.c_str(), &st) != 0) return true;
  if (!S_ISSOCK(st.st_mode)) {
    log(LogLevel::error, "%s exists and is not a socket", path_.c_str());
    return false;
  }
  stream_protocol::socket probe(io_);
  std::error_code ec;
  probe.connect(stream_protocol::endpoint(path_), ec);
  if (!ec) {
    log(LogLevel::error, "another daemon is serving %s", path_.c_str());
    return false;
  }
  ::unlink(path_.c_str());
  return true;
}

bool UnixServer::open() {
  if (!clear_path()) return false;
  std::error_code ec;
  acceptor_.open(stream_protocol(), ec);
  mode_t old_mask = ::umask(0177);  // created 0600, never wider even for a moment
  if (!ec) acceptor_.bind(stream_protocol::endpoint(path_), ec);
  ::umask(old_mask);
  if (!ec) ::chmod(path_.c_str(), 0600);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    log(LogLevel::error, "cannot serve %s: %s", path_.c_str(), ec.message().c_str());
    return false;
  }
  log(LogLevel::info, "serving clients on %s", path_.c_str());
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
    ::unlink(path_.c_str());
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

void UnixServer::admit(stream_protocol::socket socket) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
      cred.uid != ::getuid()) {
    log(LogLevel::warning, "refused a Unix-socket client of another user (uid %d)",
        static_cast<int>(cred.uid));
    return;
  }
  if (client_count_() >= max_clients_) {
    log(LogLevel::warning, "refused a Unix-socket client: %zu clients already", client_count_());
    return;
  }
  on_client_(socket.release());
}

}  // namespace tlsport::daemon
