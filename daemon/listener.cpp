// Listener: accepting, handshaking, and matching connections to accepts.
#include "daemon/listener.hpp"

#include <algorithm>

#include "daemon/control_client.hpp"
#include "daemon/log.hpp"
#include "daemon/shared.hpp"
#include "daemon/verdicts.hpp"
#include "protocol/messages.hpp"

namespace tlsport::daemon {

using nlohmann::json;

void HandshakeQueue::add(std::shared_ptr<Connection> conn, std::optional<std::uint64_t> serial) {
  Connection* key = conn.get();
  order_.push_back({std::move(conn), serial});
  where_[key] = std::prev(order_.end());
}

bool HandshakeQueue::remove(const std::shared_ptr<Connection>& conn) {
  auto it = where_.find(conn.get());
  if (it == where_.end()) return false;
  order_.erase(it->second);
  where_.erase(it);
  return true;
}

HandshakeQueue::Entry HandshakeQueue::take_oldest() {
  Entry oldest = std::move(order_.front());
  order_.pop_front();
  where_.erase(oldest.conn.get());
  return oldest;
}

std::list<HandshakeQueue::Entry> HandshakeQueue::take_all() {
  where_.clear();
  return std::move(order_);
}

Listener::Listener(Shared& shared, asio::ip::tcp::acceptor acceptor, ListenSettings settings)
    : shared_(shared),
      acceptor_(std::move(acceptor)),
      settings_(std::move(settings)),
      retry_timer_(shared.io) {}

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
  PendingAccept accept{next_serial_++, client, std::move(ref), std::move(tls), active, 0};
  if (!take_spare(accept)) pending_.push_back(std::move(accept));
  serve_ready();
  accept_next();
}

bool Listener::take_spare(PendingAccept& accept) {
  trim_spares();
  if (!accept.tls.given) return false;
  // The newest first: the likeliest to have its peer still there.
  for (auto it = spares_.rbegin(); it != spares_.rend(); ++it) {
    if (!it->origin.suits(accept.tls)) continue;
    auto conn = std::move(it->conn);
    spares_.erase(std::next(it).base());
    hand_over(accept, conn);
    return true;
  }
  return false;
}

void Listener::keep_spare(const Origin& origin, const std::shared_ptr<Connection>& conn) {
  spares_.push_back({origin, conn, std::chrono::steady_clock::now() + settings_.handshake_timeout});
  trim_spares();
}

void Listener::trim_spares() {
  auto now = std::chrono::steady_clock::now();
  while (!spares_.empty() &&
         (spares_.size() > settings_.backlog || spares_.front().expires <= now)) {
    auto oldest = std::move(spares_.front().conn);
    spares_.pop_front();
    oldest->abort();
  }
}

bool Listener::wants_connection() const {
  // With settings of its own, a listener takes connections as they come and
  // handshakes them ahead of the accepts (up to its backlog), so that the
  // kernel's queue never fills behind peers that say nothing.
  // With TLS per accept, one accept takes every connection that comes while
  // it waits (claimant()), up to the handshake cap.
  return !settings_.tls_per_accept || !pending_.empty();
}

bool Listener::cancel(std::uint32_t client, const json& ref) {
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    if (it->client == client && it->ref == ref) {
      json ref_copy = it->ref;
      pending_.erase(it);
      if (ControlClient* c = shared_.registry.client(client))
        c->send(
            protocol::error_reply(ref_copy, wire_error(ErrorKind::cancelled, "accept cancelled")));
      return true;
    }
  }
  return false;
}

void Listener::drop_accepts(std::uint32_t client, const ErrorInfo& error) {
  std::deque<PendingAccept> keep;
  for (auto& p : pending_) {
    if (p.client != client) {
      keep.push_back(std::move(p));
      continue;
    }
    if (ControlClient* c = shared_.registry.client(client))
      c->send(protocol::error_reply(p.ref, error));
  }
  pending_.swap(keep);
}

void Listener::close() {
  if (closed_) return;
  closed_ = true;
  std::error_code ignored;
  acceptor_.close(ignored);
  if (unclaimed_) unclaimed_->close(ignored);
  unclaimed_.reset();
  retry_timer_.cancel();
  auto pending = std::move(pending_);
  pending_.clear();
  ErrorInfo closed = wire_error(ErrorKind::closed, "listener closed");
  for (auto& p : pending) {
    if (ControlClient* c = shared_.registry.client(p.client))
      c->send(protocol::error_reply(p.ref, closed));
  }
  auto held = std::move(ready_);
  ready_.clear();
  for (auto& spare : spares_) held.push_back(spare.conn);
  spares_.clear();
  for (auto& entry : handshaking_.take_all()) held.push_back(entry.conn);
  for (auto& conn : judging_) held.push_back(conn);
  judging_.clear();
  for (auto& conn : held) conn->abort();
}

void Listener::accept_next() {
  if (closed_ || accepting_ || !wants_connection()) return;
  if (unclaimed_) {
    TcpSocket socket = std::move(*unclaimed_);
    unclaimed_.reset();
    on_accepted({}, std::move(socket));
    return;
  }
  if (ready_.size() >= settings_.backlog) return;
  if (!shared_.registry.has_room_for_socket()) return;
  accepting_ = true;
  // Accepted straight into a socket on the io_context's executor (see TcpSocket).
  acceptor_.async_accept(shared_.io,
                         [self = shared_from_this()](const std::error_code& ec, TcpSocket socket) {
                           self->accepting_ = false;
                           self->on_accepted(ec, std::move(socket));
                         });
}

Listener::PendingAccept* Listener::claimant() {
  // The oldest accept still waiting decides: one with TLS settings of its own
  // claims this connection and its handshake; otherwise the listener's
  // settings apply and the connection goes to whichever accept is oldest
  // when its handshake is done.
  for (auto& p : pending_) {
    if (!p.tls.given) return nullptr;
    if (p.claims == 0) return &p;
  }
  // Every accept has a handshake under way, perhaps with a peer that says
  // nothing: with TLS per accept the oldest takes this one too, and the first
  // handshake done serves it (the others wait as spares for the next accept).
  if (settings_.tls_per_accept && !pending_.empty()) return &pending_.front();
  return nullptr;
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
  if (!wants_connection()) {
    // Its accept was cancelled while the kernel's accept was under way: with
    // TLS per accept there is nothing to handshake with (and a TLS listener's
    // connection is never served as plain TCP). It waits for the next accept.
    unclaimed_.emplace(std::move(socket));
    return;
  }
  PendingAccept* claim = claimant();
  const SslCtxPtr& ctx = claim != nullptr ? claim->tls.ctx : settings_.ctx;
  SslPtr ssl;
  if (ctx) {
    ErrorInfo error;
    ssl = new_ssl(ctx, TlsRole::server, error);
    if (!ssl) {
      // Never serve a TLS listener's connection as plain TCP.
      log(LogLevel::error, "listener %u: connection refused: %s", id_, error.message.c_str());
      std::error_code ignored;
      socket.close(ignored);
      accept_next();
      return;
    }
  }
  auto conn = std::make_shared<Connection>(shared_, std::move(socket), std::move(ssl),
                                           settings_.framing, settings_.packet_size);
  const std::string& log_file = claim != nullptr ? claim->tls.log_file : settings_.log_file;
  if (!log_file.empty()) conn->set_log_file(log_file);
  std::optional<std::uint64_t> serial;
  std::chrono::milliseconds timeout = settings_.handshake_timeout;
  if (claim != nullptr) {
    ++claim->claims;
    serial = claim->serial;
    timeout = claim->tls.timeouts.handshake.value_or(timeout);
  }
  if (handshaking_.size() >= kMaxHandshaking) evict_oldest();
  handshaking_.add(conn, serial);
  Origin origin{ctx.get(), log_file};
  conn->start_handshake(timeout,
                        [self = shared_from_this(), conn, serial,
                         origin = std::move(origin)](const std::optional<ErrorInfo>& error) {
                          self->on_handshake(conn, serial, origin, error);
                        });
  accept_next();
}

std::deque<Listener::PendingAccept>::iterator Listener::find_accept(std::uint64_t serial) {
  auto it = pending_.begin();
  while (it != pending_.end() && it->serial != serial) ++it;
  return it;
}

void Listener::evict_oldest() {
  HandshakeQueue::Entry oldest = handshaking_.take_oldest();
  ++shared_.counters.handshakes_evicted;
  log(LogLevel::debug, "listener %u: %zu handshakes under way: the oldest gives its place", id_,
      kMaxHandshaking);
  if (oldest.serial) unclaim(*oldest.serial);
  oldest.conn->abort();  // its handshake callback is dropped with it
}

void Listener::unclaim(std::uint64_t serial) {
  auto it = find_accept(serial);
  if (it != pending_.end() && it->claims > 0) --it->claims;  // it may wait for the next one
}

void Listener::on_handshake(const std::shared_ptr<Connection>& conn,
                            std::optional<std::uint64_t> serial, const Origin& origin,
                            const std::optional<ErrorInfo>& error) {
  handshaking_.remove(conn);
  if (error) {
    log(LogLevel::info, "listener %u: handshake failed: %s: %s", id_, error->kind().c_str(),
        error->message.c_str());
    if (serial) unclaim(*serial);
    accept_next();
    return;
  }
  if (serial && find_accept(*serial) == pending_.end() && wants_verdict(*conn)) {
    // Its accept is gone, and with it the judge of its peer: another accept's
    // callback must not be passed by (place() never hands such a one on).
    conn->abort();
    accept_next();
    return;
  }
  judge_then(conn, serial, [self = shared_from_this(), conn, serial, origin] {
    self->judging_.erase(conn);
    self->place(conn, serial, origin);
    self->accept_next();
  });
}

void Listener::judge_then(const std::shared_ptr<Connection>& conn,
                          std::optional<std::uint64_t> serial, std::function<void()> go_on) {
  judging_.insert(conn);
  if (!wants_verdict(*conn) || closed_) {
    go_on();
    return;
  }
  // The accept that claimed the connection decides; otherwise the listener's owner.
  auto it = serial ? find_accept(*serial) : pending_.end();
  std::uint32_t judge = it != pending_.end() ? it->client : owner_;
  nlohmann::json about = {{"listener", id_}};
  if (it != pending_.end()) about["ref"] = it->ref;
  std::chrono::milliseconds timeout =
      it != pending_.end() ? it->tls.verdict_timeout : settings_.verdict_timeout;
  ask_server_verdict(shared_, judge, about, *conn, timeout,
                     [self = shared_from_this(), conn, serial, go_on](bool accept) {
                       if (accept) {
                         go_on();
                         return;
                       }
                       log(LogLevel::info, "listener %u: peer certificate rejected by the client",
                           self->id_);
                       self->judging_.erase(conn);
                       conn->abort();
                       if (serial) self->unclaim(*serial);
                       self->accept_next();
                     });
}

void Listener::place(const std::shared_ptr<Connection>& conn, std::optional<std::uint64_t> serial,
                     const Origin& origin) {
  if (closed_) {
    conn->abort();
    return;
  }
  if (!serial) {
    ready_.push_back(conn);
    serve_ready();
    return;
  }
  auto it = find_accept(*serial);
  if (it != pending_.end()) {
    --it->claims;
  } else if (!settings_.tls_per_accept || wants_verdict(*conn)) {
    conn->abort();  // the accept (and the judge of this peer) is gone
    return;
  } else {
    // Its accept was served by another handshake, or cancelled: the oldest
    // accept with the same settings takes it, or the next one to come.
    it = std::find_if(pending_.begin(), pending_.end(),
                      [&origin](const PendingAccept& p) { return origin.suits(p.tls); });
    if (it == pending_.end()) {
      keep_spare(origin, conn);
      return;
    }
  }
  PendingAccept accept = std::move(*it);
  pending_.erase(it);
  hand_over(accept, conn);
}

void Listener::serve_ready() {
  while (!ready_.empty()) {
    // The oldest accept that takes the listener's own settings.
    auto it = pending_.begin();
    while (it != pending_.end() && it->tls.given) ++it;
    if (it == pending_.end()) return;
    PendingAccept accept = std::move(*it);
    pending_.erase(it);
    if (shared_.registry.client(accept.client) == nullptr) continue;
    auto conn = std::move(ready_.front());
    ready_.pop_front();
    hand_over(accept, conn);
  }
}

void Listener::hand_over(PendingAccept& accept, const std::shared_ptr<Connection>& conn) {
  ControlClient* client = shared_.registry.client(accept.client);
  if (client == nullptr) {
    conn->abort();
    return;
  }
  std::uint32_t id = shared_.registry.add_connection(conn);
  client->send(protocol::ok_reply(accept.ref, {{"id", id}, {"peer", conn->endpoint(true)}}));
  const protocol::SocketTimeouts& own = accept.tls.timeouts;
  conn->set_timeouts(own.idle.value_or(settings_.idle_timeout),
                     own.close.value_or(settings_.close_timeout));
  conn->open(id, accept.client, accept.active.value_or(settings_.active));
}

}  // namespace tlsport::daemon
