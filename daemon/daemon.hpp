// The daemon: its control channels, the sockets it owns on their behalf,
// and the commands of docs/protocol.md.
#pragma once

#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/signal_set.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/connection.hpp"
#include "daemon/connector.hpp"
#include "daemon/listener.hpp"
#include "daemon/options.hpp"
#include "daemon/tls_config.hpp"

namespace tlsport::daemon {

class ControlClient;

/// Owns every client, listener and connection; runs on one thread.
class Daemon {
 public:
  Daemon(asio::io_context& io, Options options);
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  ~Daemon();

  /// Opens the control channels; false (with a message logged) on failure.
  bool start();
  /// Closes everything (best-effort close_notify) and stops the loop.
  void shutdown();

  asio::io_context& io() { return io_; }
  const Options& options() const { return options_; }
  /// One read buffer shared by every socket and client of this thread.
  std::vector<char>& read_buffer() { return read_buffer_; }

  // Called by control clients.
  /// Carries out one command from `client`.
  void handle_command(ControlClient& client, nlohmann::json& command);
  /// Queues data for a socket (a DATA frame, or deliver with data).
  void handle_deliver(ControlClient& client, std::uint32_t id, std::string_view data,
                      const nlohmann::json* ref);
  /// A client went away: close what it owns.
  void on_client_closed(std::uint32_t number);
  /// The port channel (stdio) ended: the daemon ends too.
  void on_port_closed();
  /// Sockets that waited for a client's output to drain read again.
  void resume_sockets(const std::vector<std::uint32_t>& ids);

  // Called by sockets.
  /// The client with this number, or null.
  ControlClient* client(std::uint32_t number);
  /// Gives a handshaken connection a socket id (its owner comes with open()).
  std::uint32_t register_connection(const std::shared_ptr<Connection>& conn);
  /// The socket's id is gone (peer closed); it finishes closing in the background.
  void forget_socket(std::uint32_t id);
  /// A connection is completely closed.
  void connection_finished(Connection& conn);
  /// A client's input paused on a full send buffer may go on.
  void resume_client_input(std::uint32_t client);
  /// Keeps a connection in its handshake known (to abort it at exit).
  void track_handshake(const std::shared_ptr<Connection>& conn) { handshaking_[conn.get()] = conn; }
  void untrack_handshake(const std::shared_ptr<Connection>& conn) {
    handshaking_.erase(conn.get());
  }
  /// A connect finished (replied or abandoned).
  void connector_finished(Connector* connector) { connectors_.erase(connector); }
  /// False when the socket cap is reached.
  bool has_room_for_socket() const;

 private:
  using Json = nlohmann::json;
  using Handler = void (Daemon::*)(ControlClient&, Json&, const Json&);

  /// Handles the next signal: SIGINT/SIGTERM end the daemon, SIGHUP forgets cached contexts.
  void wait_for_signal();
  bool open_unix_socket();
  void accept_unix_client();
  std::uint32_t add_client(int in_fd, int out_fd, bool is_port,
                           std::optional<protocol::ControlEncoding> encoding, unsigned header);
  std::uint32_t next_socket_id();
  /// The connection `id` if `client` owns it; else replies the error and returns null.
  Connection* owned_connection(ControlClient& client, const Json& cmd, const Json& ref);

  void cmd_hello(ControlClient& c, Json& cmd, const Json& ref);
  void cmd_listen(ControlClient& c, Json& cmd, const Json& ref);
  void cmd_accept(ControlClient& c, Json& cmd, const Json& ref);
  void cmd_cancel(ControlClient& c, Json& cmd, const Json& ref);
  void cmd_connect(ControlClient& c, Json& cmd, const Json& ref);
  void cmd_deliver(ControlClient& c, Json& cmd, const Json& ref);
  void cmd_close(ControlClient& c, Json& cmd, const Json& ref);
  void cmd_controlling_process(ControlClient& c, Json& cmd, const Json& ref);
  void cmd_setopts(ControlClient& c, Json& cmd, const Json& ref);
  void cmd_recv(ControlClient& c, Json& cmd, const Json& ref);
  void cmd_peername(ControlClient& c, Json& cmd, const Json& ref);
  void cmd_sockname(ControlClient& c, Json& cmd, const Json& ref);
  void cmd_resolve(ControlClient& c, Json& cmd, const Json& ref);
  void cmd_info(ControlClient& c, Json& cmd, const Json& ref);
  void cmd_stop(ControlClient& c, Json& cmd, const Json& ref);

  static const std::map<std::string, Handler>& handlers();

  asio::io_context& io_;           ///< the one event loop
  Options options_;                ///< settings from flags and config
  std::vector<char> read_buffer_;  ///< shared by every read on this thread
  asio::signal_set signals_;       ///< SIGINT/SIGTERM end the daemon; SIGHUP
  std::unique_ptr<asio::local::stream_protocol::acceptor> unix_acceptor_;  ///< --unix
  std::map<std::uint32_t, std::shared_ptr<ControlClient>> clients_;        ///< by number
  std::map<std::string, std::uint32_t> client_names_;                      ///< names given in hello
  std::unordered_map<std::uint32_t, std::shared_ptr<Connection>> sockets_;  ///< open, by id
  std::unordered_map<std::uint32_t, std::shared_ptr<Listener>> listeners_;  ///< by id
  std::unordered_map<Connection*, std::shared_ptr<Connection>> closing_;    ///< ids gone
  std::unordered_map<Connection*, std::shared_ptr<Connection>>
      handshaking_;                                                        ///< accepted, not ready
  std::unordered_map<Connector*, std::shared_ptr<Connector>> connectors_;  ///< connects under way
  ContextCache client_contexts_{TlsRole::client};  ///< shared client TLS contexts
  ContextCache server_contexts_{TlsRole::server};  ///< contexts of accepts with their own tls
  std::uint32_t next_client_ = 1;                  ///< number of the next client
  std::uint32_t next_socket_ = 1;                  ///< id of the next socket
  bool shutting_down_ = false;                     ///< shutdown() has begun
};

}  // namespace tlsport::daemon
