#include "daemon/listener.hpp"

#include "daemon/control_client.hpp"
#include "daemon/daemon.hpp"
#include "daemon/log.hpp"

namespace tlsport::daemon {

using nlohmann::json;

Listener::Listener(Daemon& daemon, asio::ip::tcp::acceptor acceptor, ListenSettings settings)
    : daemon_(daemon),
      acceptor_(std::move(acceptor)),
      settings_(std::move(settings)),
      retry_timer_(daemon.io()) {}

unsigned short Listener::port() const {
  std::error_code ec;
  return acceptor_.local_endpoint(ec).port();
}

json Listener::endpoint() const {
  std::error_code ec;
  auto ep = acceptor_.local_endpoint(ec);
  if (ec) return nullptr;
  return {{"host", ep.address().to_string()}, {"port", ep.port()}};
}

void Listener::add_accept(std::uint32_t client, json ref, AcceptTls tls,
                          std::optional<ActiveMode> active) {
  pending_.push_back({next_serial_++, client, std::move(ref), std::move(tls), active, false});
  serve_ready();
  accept_next();
}

bool Listener::wants_connection() const {
  for (const auto& p : pending_)
    if (!p.tls.given || !p.claimed) return true;
  return false;
}

bool Listener::cancel(std::uint32_t client, const json& ref) {
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    if (it->client == client && it->ref == ref) {
      json ref_copy = it->ref;
      pending_.erase(it);
      if (ControlClient* c = daemon_.client(client))
        c->reply_error(ref_copy, "cancelled", "accept cancelled");
      return true;
    }
  }
  return false;
}

void Listener::drop_accepts(std::uint32_t client, const char* kind, const char* message) {
  std::deque<PendingAccept> keep;
  for (auto& p : pending_) {
    if (p.client != client) {
      keep.push_back(std::move(p));
      continue;
    }
    if (ControlClient* c = daemon_.client(client)) c->reply_error(p.ref, kind, message);
  }
  pending_.swap(keep);
}

void Listener::close() {
  if (closed_) return;
  closed_ = true;
  std::error_code ignored;
  acceptor_.close(ignored);
  retry_timer_.cancel();
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& p : pending) {
    if (ControlClient* c = daemon_.client(p.client))
      c->reply_error(p.ref, "closed", "listener closed");
  }
  for (auto& conn : ready_) conn->abort();
  ready_.clear();
}

void Listener::accept_next() {
  if (closed_ || accepting_ || !wants_connection()) return;
  if (handshaking_ >= kMaxHandshaking || ready_.size() >= settings_.backlog) return;
  if (!daemon_.has_room_for_socket()) return;
  accepting_ = true;
  // Accepted straight into a socket on the io_context's executor (see TcpSocket).
  acceptor_.async_accept(daemon_.io(),
                         [self = shared_from_this()](const std::error_code& ec, TcpSocket socket) {
                           self->accepting_ = false;
                           self->on_accepted(ec, std::move(socket));
                         });
}

void Listener::on_accepted(const std::error_code& ec, TcpSocket socket) {
  if (closed_) return;
  if (ec) {
    if (ec == asio::error::operation_aborted) return;
    // EMFILE and the like: back off instead of spinning.
    log(LogLevel::warning, "listener %u: accept failed: %s", id_, ec.message().c_str());
    retry_timer_.expires_after(std::chrono::milliseconds(100));
    retry_timer_.async_wait([self = shared_from_this()](const std::error_code& e) {
      if (!e) self->accept_next();
    });
    return;
  }
  // The oldest accept still waiting decides: one with TLS settings of its own
  // claims this connection and its handshake; otherwise the listener's
  // settings apply and the connection goes to whichever accept is oldest
  // when its handshake is done.
  PendingAccept* claimant = nullptr;
  for (auto& p : pending_) {
    if (!p.tls.given) break;
    if (!p.claimed) {
      claimant = &p;
      break;
    }
  }
  const SslCtxPtr& ctx = claimant != nullptr ? claimant->tls.ctx : settings_.ctx;
  auto conn = std::make_shared<Connection>(daemon_, std::move(socket), ctx, TlsRole::server,
                                           settings_.framing, settings_.packet_size);
  const std::string& log_file = claimant != nullptr ? claimant->tls.log_file : settings_.log_file;
  if (!log_file.empty()) conn->set_log_file(log_file);
  ++handshaking_;
  daemon_.track_handshake(conn);
  if (claimant != nullptr) {
    claimant->claimed = true;
    conn->start_handshake(settings_.handshake_timeout,
                          [self = shared_from_this(), conn,
                           serial = claimant->serial](const std::optional<ErrorInfo>& error) {
                            self->on_claimed_handshake(serial, conn, error);
                          });
    accept_next();
    return;
  }
  conn->start_handshake(settings_.handshake_timeout,
                        [self = shared_from_this(), conn](const std::optional<ErrorInfo>& error) {
                          --self->handshaking_;
                          self->daemon_.untrack_handshake(conn);
                          if (error) {
                            log(LogLevel::info, "listener %u: handshake failed: %s: %s", self->id_,
                                error->kind.c_str(), error->message.c_str());
                          } else if (self->closed_) {
                            conn->abort();
                          } else {
                            self->ready_.push_back(conn);
                            self->serve_ready();
                          }
                          self->accept_next();
                        });
  accept_next();
}

void Listener::on_claimed_handshake(std::uint64_t serial, const std::shared_ptr<Connection>& conn,
                                    const std::optional<ErrorInfo>& error) {
  --handshaking_;
  daemon_.untrack_handshake(conn);
  auto it = pending_.begin();
  while (it != pending_.end() && it->serial != serial) ++it;
  if (error) {
    log(LogLevel::info, "listener %u: handshake failed: %s: %s", id_, error->kind.c_str(),
        error->message.c_str());
    if (it != pending_.end()) it->claimed = false;  // the accept waits for the next one
  } else if (closed_ || it == pending_.end()) {
    conn->abort();  // the accept was cancelled meanwhile
  } else {
    PendingAccept accept = std::move(*it);
    pending_.erase(it);
    hand_over(accept, conn);
  }
  accept_next();
}

void Listener::serve_ready() {
  while (!ready_.empty()) {
    // The oldest accept that takes the listener's own settings.
    auto it = pending_.begin();
    while (it != pending_.end() && it->tls.given) ++it;
    if (it == pending_.end()) return;
    PendingAccept accept = std::move(*it);
    pending_.erase(it);
    if (daemon_.client(accept.client) == nullptr) continue;
    auto conn = std::move(ready_.front());
    ready_.pop_front();
    hand_over(accept, conn);
  }
}

void Listener::hand_over(PendingAccept& accept, const std::shared_ptr<Connection>& conn) {
  ControlClient* client = daemon_.client(accept.client);
  if (client == nullptr) {
    conn->abort();
    return;
  }
  std::uint32_t id = daemon_.register_connection(conn);
  client->reply_ok(accept.ref, {{"id", id}, {"peer", conn->endpoint(true)}});
  ActiveMode active = accept.active.value_or(settings_.active);
  conn->init_active(active.count, active.once);
  conn->open(id, accept.client);
}

}  // namespace tlsport::daemon
