// An outgoing connection in the making: resolve, connect, handshake, all
// within one timeout, then the reply to the client's connect.
#pragma once

#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "daemon/connection.hpp"
#include "daemon/tls_context.hpp"
#include "protocol/commands.hpp"

namespace tlsport::daemon {

struct Shared;

/// What a connect command asked for, with its context.
struct ConnectRequest {
  std::uint32_t client = 0;          ///< who asked
  nlohmann::json ref;                ///< its ref
  protocol::ConnectCommand command;  ///< host, port, mode, timeout, tls...
  SslCtxPtr ctx;                     ///< shared client context (null = TCP)
  protocol::TlsSettings settings;    ///< behind ctx (SNI, host check, session, log)
  std::chrono::milliseconds handshake_timeout{30000};  ///< within the connect's timeout
  std::chrono::milliseconds idle_timeout{0};           ///< of the socket (0: none)
  std::chrono::milliseconds close_timeout{5000};       ///< of the socket's orderly close
  Connection::AskVerdict ask_verdict;                  ///< tls.verify_callback: asks the client
};

/// One connect in progress.
class Connector : public std::enable_shared_from_this<Connector> {
 public:
  Connector(Shared& shared, ConnectRequest request);
  Connector(const Connector&) = delete;
  Connector& operator=(const Connector&) = delete;

  /// Starts resolving.
  void start();
  /// Gives up (the client left): no reply.
  void abandon();
  /// Answers the connect with `error` and gives up (the daemon stops).
  void fail(const ErrorInfo& error);
  std::uint32_t client() const { return request_.client; }

 private:
  void on_resolved(const std::error_code& ec, asio::ip::tcp::resolver::results_type results);
  void on_connected(const std::error_code& ec);
  void on_handshake(const std::optional<ErrorInfo>& error);
  void finish();

  Shared& shared_;                          ///< registry, clients, loop
  ConnectRequest request_;                  ///< what to do
  asio::ip::tcp::resolver resolver_;        ///< asynchronous name lookup
  TcpSocket socket_;                        ///< the socket being connected
  asio::steady_timer timer_;                ///< the whole-connect timeout
  std::shared_ptr<Connection> connection_;  ///< once TCP is up
  bool done_ = false;                       ///< replied or abandoned
};

}  // namespace tlsport::daemon
