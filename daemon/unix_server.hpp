// The Unix-socket control server: the socket file (a stale one replaced, a
// live daemon's refused, mode 0600 from creation), the peer-uid check, the
// cap on clients, and a back-off when accepting fails.
#pragma once

#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/steady_timer.hpp>
#include <functional>
#include <string>

namespace tlsport::daemon {

/// Serves control clients on a Unix socket.
class UnixServer {
 public:
  /// Hands over a connected client's descriptor (owned from then on).
  using OnClient = std::function<void(int fd)>;
  /// Tells how many clients are attached, to enforce `max_clients`.
  using ClientCount = std::function<std::size_t()>;

  UnixServer(asio::io_context& io, std::string path, std::size_t max_clients,
             ClientCount client_count, OnClient on_client);
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

  asio::io_context& io_;                             ///< the loop
  std::string path_;                                 ///< the socket file
  std::size_t max_clients_;                          ///< clients served at once
  ClientCount client_count_;                         ///< clients attached now
  OnClient on_client_;                               ///< where admitted clients go
  asio::local::stream_protocol::acceptor acceptor_;  ///< the listening socket
  asio::steady_timer retry_timer_;                   ///< back-off after a failed accept
  bool closed_ = false;                              ///< close() was called
};

}  // namespace tlsport::daemon
