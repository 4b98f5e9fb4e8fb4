// The Unix-socket control server: the socket file (a stale one replaced, a
// live daemon's refused, mode 0600 from creation) or one handed over by
// systemd, the peer check (the daemon's own uid, or a configured uid or
// group), the cap on clients, and a back-off when accepting fails.
#pragma once

#include <sys/types.h>

#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/steady_timer.hpp>
#include <functional>
#include <string>
#include <vector>

namespace tlsport::daemon {

/// Serves control clients on a Unix socket.
class UnixServer {
 public:
  /// Hands over a connected client's descriptor (owned from then on).
  using OnClient = std::function<void(int fd)>;
  /// Tells how many clients are attached, to enforce `max_clients`.
  using ClientCount = std::function<std::size_t()>;

  /// How the socket is set up and who may use it.
  struct Settings {
    std::string path;                ///< the socket file
    unsigned mode = 0600;            ///< its mode, when the daemon creates it
    int owner_uid = -1;              ///< chown it to this user (-1: leave it)
    int owner_gid = -1;              ///< ... and group
    std::vector<uid_t> allow_uids;   ///< peers let in besides the daemon's own uid
    std::vector<gid_t> allow_gids;   ///< peers in any of these groups (primary or not)
    int activated_fd = -1;           ///< a listening socket from systemd instead of the file
    std::size_t max_clients = 1024;  ///< clients served at once
  };

  UnixServer(asio::io_context& io, Settings settings, ClientCount client_count, OnClient on_client);
  UnixServer(const UnixServer&) = delete;
  UnixServer& operator=(const UnixServer&) = delete;

  /// Creates the socket and starts accepting; false (logged) on failure.
  bool open();
  /// Stops accepting and removes the socket file.
  void close();

 private:
  /// Replaces a stale socket file; false when the path is taken.
  bool clear_path();
  void accept_next();
  /// Accepts or refuses one connected client.
  void admit(asio::local::stream_protocol::socket socket);
  /// True when the peer's uid or one of its groups is let in.
  bool allowed(int fd, uid_t& uid) const;

  asio::io_context& io_;                             ///< the loop
  Settings settings_;                                ///< path, mode, who may connect
  ClientCount client_count_;                         ///< clients attached now
  OnClient on_client_;                               ///< where admitted clients go
  asio::local::stream_protocol::acceptor acceptor_;  ///< the listening socket
  asio::steady_timer retry_timer_;                   ///< back-off after a failed accept
  bool closed_ = false;                              ///< close() was called
};

/// Takes the listening socket systemd passes (LISTEN_FDS/LISTEN_PID, fd 3)
/// and unsets those variables. -1 when none is passed; -2 (with `error`)
/// when what is passed is not one listening Unix stream socket.
int take_activated_socket(std::string& error);

/// True when systemd passes this process a socket (nothing is taken).
bool socket_activation_offered();

}  // namespace tlsport::daemon
