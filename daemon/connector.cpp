// Connector: resolve, connect, handshake within one timeout; then the reply.
#include "daemon/connector.hpp"

#include <asio/connect.hpp>

#include "daemon/control_client.hpp"
#include "daemon/shared.hpp"
#include "protocol/messages.hpp"

namespace tlsport::daemon {

using nlohmann::json;

Connector::Connector(Shared& shared, ConnectRequest request)
    : shared_(shared),
      request_(std::move(request)),
      resolver_(shared.io),
      socket_(shared.io),
      timer_(shared.io) {}

void Connector::start() {
  const protocol::ConnectCommand& cmd = request_.command;
  timer_.expires_after(cmd.timeout);
  timer_.async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (ec || self->done_) return;
    self->fail(wire_error(ErrorKind::timeout, "connect timed out"));
  });
  resolver_.async_resolve(cmd.host, std::to_string(cmd.port),
                          asio::ip::tcp::resolver::numeric_service,
                          [self = shared_from_this()](const std::error_code& ec,
                                                      asio::ip::tcp::resolver::results_type r) {
                            self->on_resolved(ec, std::move(r));
                          });
}

void Connector::on_resolved(const std::error_code& ec,
                            asio::ip::tcp::resolver::results_type results) {
  if (done_) return;
  if (ec) {
    // An unknown name may be a lookup that could not open a file.
    fail(out_of_descriptors().value_or(classify(ec)));
    return;
  }
  asio::async_connect(
      socket_, results,
      [self = shared_from_this()](const std::error_code& e, const asio::ip::tcp::endpoint&) {
        self->on_connected(e);
      });
}

void Connector::on_connected(const std::error_code& ec) {
  if (done_) return;
  if (ec) {
    // asio reports a socket it could not open as a cancelled connect.
    fail(out_of_descriptors().value_or(classify(ec)));
    return;
  }
  const protocol::ConnectCommand& cmd = request_.command;
  const protocol::TlsSettings& settings = request_.settings;
  SslPtr ssl;
  if (request_.ctx) {
    ErrorInfo error;
    ssl = new_ssl(request_.ctx, TlsRole::client, error);
    if (!ssl) {
      fail(error);
      return;
    }
    configure_client_ssl(ssl.get(), settings, cmd.host, cmd.port, &shared_.client_sessions);
  }
  connection_ = std::make_shared<Connection>(shared_, std::move(socket_), std::move(ssl),
                                             cmd.framing, cmd.packet_size);
  if (!settings.logfile.empty()) connection_->set_log_file(settings.logfile);
  // A plain connection may start TLS later: it remembers the name it was made with.
  if (!request_.ctx) connection_->set_peer_name(cmd.host);
  auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(
      timer_.expiry() - std::chrono::steady_clock::now());
  remaining =
      std::max(std::chrono::milliseconds(1), std::min(remaining, request_.handshake_timeout));
  connection_->start_handshake(
      remaining,
      [self = shared_from_this()](const std::optional<ErrorInfo>& error) {
        self->on_handshake(error);
      },
      request_.ask_verdict);
}

void Connector::on_handshake(const std::optional<ErrorInfo>& error) {
  if (done_) return;
  if (error) {
    fail(*error);
    return;
  }
  ControlClient* client = shared_.registry.client(request_.client);
  if (client == nullptr) {
    abandon();
    return;
  }
  std::uint32_t id = shared_.registry.add_connection(connection_);
  client->send(
      protocol::ok_reply(request_.ref, {{"id", id}, {"peer", connection_->endpoint(true)}}));
  connection_->set_timeouts(request_.idle_timeout, request_.close_timeout);
  connection_->open(id, request_.client, request_.command.active.value_or(ActiveMode{}));
  finish();
}

void Connector::fail(const ErrorInfo& error) {
  if (done_) return;
  if (ControlClient* client = shared_.registry.client(request_.client))
    client->send(protocol::error_reply(request_.ref, error));
  abandon();
}

void Connector::abandon() {
  if (done_) return;
  if (connection_) connection_->abort();
  finish();
}

void Connector::finish() {
  if (done_) return;
  auto self = shared_from_this();
  done_ = true;
  timer_.cancel();
  resolver_.cancel();
  std::error_code ignored;
  socket_.close(ignored);
  // The connection is the registry's now, or gone: never ours to keep.
  connection_.reset();
  shared_.registry.remove_connector(this);
}

}  // namespace tlsport::daemon
