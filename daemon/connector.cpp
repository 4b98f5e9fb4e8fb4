#include "daemon/connector.hpp"

#include <asio/connect.hpp>

#include "daemon/control_client.hpp"
#include "daemon/daemon.hpp"
#include "daemon/log.hpp"

namespace tlsport::daemon {

using nlohmann::json;

Connector::Connector(Daemon& daemon, ConnectRequest request)
    : daemon_(daemon),
      request_(std::move(request)),
      resolver_(daemon.io()),
      socket_(daemon.io()),
      timer_(daemon.io()) {}

void Connector::start() {
  timer_.expires_after(request_.timeout);
  timer_.async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (ec || self->done_) return;
    self->fail({"timeout", "connect timed out"});
  });
  resolver_.async_resolve(request_.host, std::to_string(request_.port),
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
    fail(classify(ec));
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
    fail(classify(ec));
    return;
  }
  connection_ =
      std::make_shared<Connection>(daemon_, std::move(socket_), request_.ctx, TlsRole::client,
                                   request_.framing, request_.packet_size);
  if (request_.ctx && connection_->ssl() == nullptr) {
    fail({"tls", take_openssl_error("cannot create TLS state")});
    return;
  }
  if (connection_->ssl() != nullptr)
    configure_client_ssl(connection_->ssl(), request_.tls, request_.host);
  if (!request_.tls.logfile.empty()) connection_->set_log_file(request_.tls.logfile);
  auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(
      timer_.expiry() - std::chrono::steady_clock::now());
  if (remaining.count() < 1) remaining = std::chrono::milliseconds(1);
  connection_->start_handshake(remaining,
                               [self = shared_from_this()](const std::optional<ErrorInfo>& error) {
                                 self->on_handshake(error);
                               });
}

void Connector::on_handshake(const std::optional<ErrorInfo>& error) {
  if (done_) return;
  if (error) {
    fail(*error);
    return;
  }
  ControlClient* client = daemon_.client(request_.client);
  if (client == nullptr) {
    connection_->abort();
    finish();
    return;
  }
  std::uint32_t id = daemon_.register_connection(connection_);
  client->reply_ok(request_.ref, {{"id", id}, {"peer", connection_->endpoint(true)}});
  ActiveMode active = request_.active.value_or(ActiveMode{});
  connection_->init_active(active.count, active.once);
  connection_->open(id, request_.client);
  finish();
}

void Connector::fail(const ErrorInfo& error) {
  if (done_) return;
  if (ControlClient* client = daemon_.client(request_.client))
    client->reply_error(request_.ref, error.kind, error.message);
  if (connection_) connection_->abort();
  finish();
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
  daemon_.connector_finished(this);
}

}  // namespace tlsport::daemon
