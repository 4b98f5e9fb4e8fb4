// Connection: TLS started (STARTTLS) and stopped (stoptls) on a live
// connection, which keeps its id, owner, framing mode and active mode.
#include <sys/socket.h>

#include <asio/post.hpp>
#include <cerrno>

#include "daemon/connection.hpp"
#include "daemon/shared.hpp"

namespace tlsport::daemon {

bool Connection::starting_tls() const { return tls_change_ && !tls_change_->stopping; }

bool Connection::stopping_tls() const { return tls_change_ && tls_change_->stopping; }

std::optional<ErrorInfo> Connection::start_tls(SslPtr ssl, std::chrono::milliseconds timeout,
                                               HandshakeDone done, AskVerdict ask_verdict) {
  if (state_ != State::open || id_ == 0) return wire_error(ErrorKind::closed, "socket is closed");
  if (transport_.ssl() != nullptr)
    return wire_error(ErrorKind::bad_request,
                      "socket " + std::to_string(id_) + " speaks TLS already");
  if (tls_change_)
    return wire_error(std::errc::connection_already_in_progress, "a TLS change is under way");
  if (recv_client_ != 0)
    return wire_error(std::errc::connection_already_in_progress,
                      "a recv is waiting on this socket: starttls after its answer");
  tls_change_ = std::make_unique<TlsChange>(shared_.io);
  tls_change_->ssl = std::move(ssl);
  // Bytes read from the peer and not delivered belong to the handshake (a
  // ClientHello that came with the STARTTLS line): none is lost, none is
  // delivered as plaintext.
  tls_change_->early = deframer_.take_buffered();
  account_held();
  tls_change_->timeout = timeout;
  tls_change_->done = std::move(done);
  tls_change_->ask_verdict = std::move(ask_verdict);
  state_ = State::handshaking;
  if (idle_) idle_->timer.cancel();
  // What was queued before starttls leaves as plaintext first.
  if (wstart_ < wbuf_.size())
    write_some();
  else
    begin_upgrade();
  return std::nullopt;
}

void Connection::begin_upgrade() {
  auto change = std::move(tls_change_);
  transport_.start_tls(std::move(change->ssl), std::move(change->early));
  start_handshake(change->timeout, std::move(change->done), std::move(change->ask_verdict));
}

std::optional<ErrorInfo> Connection::stop_tls(std::chrono::milliseconds timeout,
                                              HandshakeDone done) {
  if (state_ != State::open || id_ == 0) return wire_error(ErrorKind::closed, "socket is closed");
  if (transport_.ssl() == nullptr)
    return wire_error(ErrorKind::bad_request, "socket " + std::to_string(id_) + " speaks no TLS");
  if (tls_change_)
    return wire_error(std::errc::connection_already_in_progress, "a TLS change is under way");
  tls_change_ = std::make_unique<TlsChange>(shared_.io);
  tls_change_->stopping = true;
  tls_change_->done = std::move(done);
  tls_change_->timer.expires_after(timeout);
  tls_change_->timer.async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (ec || !self->stopping_tls()) return;
    self->fail(wire_error(ErrorKind::timeout, "no close_notify from the peer in time"));
  });
  // From here TLS reads record by record, never past the peer's close_notify.
  transport_.read_exactly();
  write_some();  // what was queued goes first, then our close_notify
  post_read();   // reading goes on whatever the active mode, to find the peer's
  return std::nullopt;
}

void Connection::send_stop_notify() {
  Io io = transport_.send_close_notify();
  if (io != Io::done) {
    await_outbound(io);
    return;
  }
  tls_change_->notify_sent = true;
}

void Connection::finish_stop_tls() {
  // A peer that closed TCP instead (or right after) is a socket that closed.
  char byte;
  ssize_t peeked = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (peeked == 0) {
    settle_tls_change(wire_error(ErrorKind::closed, "the peer closed TCP with its close_notify"));
    peer_eof_ = true;
    peer_closed();
    return;
  }
  transport_.drop_tls();
  settle_tls_change(std::nullopt);
  post_read();
}

void Connection::settle_tls_change(const std::optional<ErrorInfo>& outcome) {
  if (!tls_change_) return;
  auto change = std::move(tls_change_);
  if (change->done) change->done(outcome);
}

}  // namespace tlsport::daemon
