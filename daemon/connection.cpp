// Connection: readiness, handshake, opening and closing. Reading, writing
// and flow control are in connection_io.cpp.
#include "daemon/connection.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/post.hpp>

#include "daemon/control_client.hpp"
#include "daemon/log.hpp"
#include "daemon/shared.hpp"
#include "daemon/tls_callbacks.hpp"
#include "daemon/tls_inspect.hpp"
#include "protocol/messages.hpp"

namespace tlsport::daemon {

using nlohmann::json;

namespace {
/// Reads of discarded input a draining connection does per turn of the loop.
constexpr int kDrainRounds = 16;
}  // namespace

namespace {
/// Takes the descriptor out of asio (and its reactor), non-blocking.
int release(TcpSocket& socket) {
  std::error_code ec;
  socket.non_blocking(true, ec);
  int fd = socket.release(ec);
  return ec ? -1 : fd;
}
}  // namespace

Connection::Connection(Shared& shared, TcpSocket socket, SslPtr ssl, protocol::Framing framing,
                       std::size_t packet_size)
    : shared_(shared),
      fd_(release(socket)),
      transport_(fd_, std::move(ssl)),
      deframer_(framing, packet_size) {
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // A socket the poller cannot watch reads as an error at the first step.
  if (shared_.poller.add(fd_, *this)) transport_.mark_ready(true, true, true);
}

Connection::~Connection() { close_socket(); }

void Connection::close_socket() {
  if (fd_ < 0) return;
  shared_.poller.remove(fd_);
  ::close(fd_);
  fd_ = -1;
}

asio::steady_timer& Connection::timer() {
  if (!timer_) timer_ = std::make_unique<asio::steady_timer>(shared_.io);
  return *timer_;
}

void Connection::set_log_file(const std::string& path) {
  log_ = path.empty() ? nullptr : std::make_unique<const SocketLog>(path);
}

// ---------------------------------------------------------------- readiness

void Connection::await_inbound(Io want) {
  inbound_wait_ = want;
  arm(want);
}

void Connection::await_outbound(Io want) {
  outbound_wait_ = want;
  arm(want);
}

void Connection::arm(Io want) {
  bool readable = want == Io::want_read;
  bool& armed = readable ? read_armed_ : write_armed_;
  if (armed) return;  // the outstanding wait serves this activity too
  armed = true;
  if (readable ? transport_.readable() : transport_.writable()) {
    // Nothing says the socket is empty (or full): try again at once, after
    // what is running now. Retries come back here only after the socket
    // said EAGAIN or a short read or write, which clears the flag.
    asio::post(shared_.io, [self = shared_from_this(), want] {
      (want == Io::want_read ? self->read_armed_ : self->write_armed_) = false;
      if (self->state_ == State::closed) return;
      self->on_ready(want);
    });
  }
  // Otherwise the poller's next edge (on_readiness) ends the wait.
}

void Connection::on_readiness(bool readable, bool writable, bool hangup) {
  auto self = shared_from_this();  // on_ready may end the connection
  transport_.mark_ready(readable, writable, hangup);
  if (readable && read_armed_ && transport_.readable()) {
    read_armed_ = false;
    on_ready(Io::want_read);
  }
  if (writable && write_armed_ && transport_.writable() && state_ != State::closed) {
    write_armed_ = false;
    on_ready(Io::want_write);
  }
}

void Connection::on_ready(Io ready) {
  if (inbound_wait_ == ready) {
    inbound_wait_ = Io::done;
    run_inbound();
  }
  if (outbound_wait_ == ready && state_ != State::closed) {
    outbound_wait_ = Io::done;
    write_some();
  }
}

void Connection::run_inbound() {
  switch (state_) {
    case State::handshaking:
      step_handshake();
      break;
    case State::open:
      read_some();
      break;
    case State::draining:
      drain();
      break;
    case State::closing:  // reading waits until our side is closed: see continue_close
    case State::closed:
      break;
  }
}

// ---------------------------------------------------------------- handshake

void Connection::start_handshake(std::chrono::milliseconds timeout, HandshakeDone done,
                                 AskVerdict ask_verdict) {
  handshake_ = std::make_unique<Handshake>(Handshake{std::move(done), std::move(ask_verdict)});
  timer().expires_after(timeout);
  timer().async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (ec || self->state_ != State::handshaking || !self->handshake_) return;
    self->fail_handshake(wire_error(ErrorKind::timeout, "TLS handshake timed out"));
  });
  asio::post(shared_.io, [self = shared_from_this()] { self->step_handshake(); });
}

void Connection::step_handshake() {
  if (state_ != State::handshaking || !handshake_) return;
  ErrorInfo error;
  Io io = transport_.handshake(error);
  if (io == Io::want_read || io == Io::want_write) {
    await_inbound(io);
    return;
  }
  if (io == Io::want_verdict) {
    // Asked once; a handshake without anyone to ask refuses the chain.
    if (handshake_->asked) return;
    handshake_->asked = true;
    if (handshake_->ask_verdict)
      handshake_->ask_verdict(*this);
    else
      give_verdict(false);
    return;
  }
  if (io != Io::done) {
    fail_handshake(error);
    return;
  }
  if (!judged_if_resumed()) return;
  state_ = State::open;
  timer_.reset();  // an idle connection keeps no timer
  if (ssl() != nullptr) {
    ++shared_.counters.handshakes_done;
    if (SSL_session_reused(ssl()) == 1) ++shared_.counters.handshakes_resumed;
  }
  auto handshake = std::move(handshake_);
  if (handshake->done) handshake->done(std::nullopt);
  // After STARTTLS the socket is its owner's already: reading goes on.
  if (id_ != 0 && state_ == State::open) {
    post_read();
    if (idle_) watch_idle();
  }
}

bool Connection::judged_if_resumed() {
  // A resumed session skips OpenSSL's chain check, and with it a client's
  // verify callback: the judge is asked about the session's chain here, or
  // a session another judge (or another client) accepted would pass unseen.
  SSL* tls = ssl();
  if (tls == nullptr || SSL_is_server(tls) == 1 || SSL_session_reused(tls) != 1) return true;
  const ContextExtras* extras = context_extras(SSL_get_SSL_CTX(tls));
  if (extras == nullptr || !extras->verify_callback) return true;
  SslNotes& notes = ssl_notes(tls);
  switch (notes.verdict) {
    case SslNotes::Verdict::unknown:
      notes.verdict = SslNotes::Verdict::asked;
      notes.verify_code = SSL_get_verify_result(tls);
      handshake_->asked = true;
      if (handshake_->ask_verdict)
        handshake_->ask_verdict(*this);
      else
        give_verdict(false);
      return false;
    case SslNotes::Verdict::asked:
      return false;
    case SslNotes::Verdict::accepted:
      return true;
    case SslNotes::Verdict::rejected:
      break;
  }
  fail_handshake(
      wire_error(ErrorKind::tls,
                 "certificate verify failed: the verify callback refused the resumed session"));
  return false;
}

void Connection::give_verdict(bool accept) {
  if (state_ != State::handshaking || ssl() == nullptr) return;
  ssl_notes(ssl()).verdict = accept ? SslNotes::Verdict::accepted : SslNotes::Verdict::rejected;
  asio::post(shared_.io, [self = shared_from_this()] { self->step_handshake(); });
}

void Connection::fail_handshake(ErrorInfo error) {
  if (state_ != State::handshaking) return;
  ++shared_.counters.handshakes_failed[error.kind()];
  end_because("handshake failed: " + error.kind() + ": " + error.message);
  auto handshake = std::move(handshake_);
  finish();
  if (handshake && handshake->done) handshake->done(error);
}

void Connection::set_timeouts(std::chrono::milliseconds idle, std::chrono::milliseconds close) {
  close_timeout_ms_ = static_cast<std::uint32_t>(close.count());
  if (idle.count() <= 0) {
    idle_.reset();
    return;
  }
  if (!idle_) idle_ = std::make_unique<IdleWatch>(shared_.io);
  idle_->timeout = idle;
  touch();
  if (state_ == State::open && id_ != 0) watch_idle();
}

void Connection::touch() {
  if (idle_) idle_->last = std::chrono::steady_clock::now();
}

void Connection::watch_idle() {
  idle_->timer.expires_at(idle_->last + idle_->timeout);
  idle_->timer.async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (ec || !self->idle_ || self->state_ != State::open) return;
    auto quiet = std::chrono::steady_clock::now() - self->idle_->last;
    if (quiet < self->idle_->timeout) {
      self->watch_idle();
      return;
    }
    // A quiet connection is a healthy one: the peer is told with close_notify
    // (best effort), not left to take the closed socket for a truncation.
    self->transport_.close_notify_now();
    self->fail(wire_error(ErrorKind::timeout, "no byte either way for " +
                                                  std::to_string(self->idle_->timeout.count()) +
                                                  " ms (idle_timeout_ms)"));
  });
}

void Connection::open(std::uint32_t id, std::uint32_t owner, ActiveMode active) {
  id_ = id;
  owner_ = owner;
  active_ = active.count;
  active_once_ = active.once && active.count == 1;
  if (log_) log_line("connected " + endpoint(true).dump() + " " + info().dump());
  ++shared_.counters.connections_opened;
  log_connection("opened");
  post_read();
  if (idle_) watch_idle();
}

// ---------------------------------------------------------------- ending

void Connection::close_orderly() {
  if (state_ == State::closing || state_ == State::draining || state_ == State::closed) return;
  if (state_ == State::handshaking) {
    fail_handshake(wire_error(ErrorKind::closed, "closed"));
    return;
  }
  log_line("closed by owner");
  end_because("closed by its owner");
  recv_client_ = 0;
  begin_closing();
}

void Connection::peer_closed() {
  if (state_ != State::open) return;
  bool normal = framing().kind == protocol::FramingKind::raw || deframer_.buffered() == 0;
  const char* how = transport_.ssl() == nullptr ? "peer closed the connection"
                    : transport_.peer_sent_close_notify()
                        ? "peer sent close_notify"
                        : "peer closed the connection without close_notify";
  log_line(how);
  end_because(normal ? how : "peer closed inside a packet");
  ErrorInfo inside = wire_error(ErrorKind::closed, "peer closed inside a packet");
  // A waiting recv is answered first; the event follows (docs/protocol.md, recv).
  fail_recv(wire_error(ErrorKind::closed, "peer closed"));
  if (ControlClient* owner = shared_.registry.client(owner_))
    owner->send(protocol::socket_closed_event(id_, normal ? nullptr : &inside));
  shared_.registry.forget_connection(id_);
  begin_closing();
}

void Connection::begin_closing() {
  state_ = State::closing;
  timer().expires_after(std::chrono::milliseconds(close_timeout_ms_));
  timer().async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (!ec && (self->state_ == State::closing || self->state_ == State::draining)) self->finish();
  });
  continue_close();
}

void Connection::continue_close() {
  if (state_ != State::closing) return;
  if (wstart_ < wbuf_.size()) {
    write_some();  // comes back here once drained
    return;
  }
  Io io = transport_.send_close_notify();
  if (io != Io::done) {
    await_outbound(io);
    return;
  }
  ::shutdown(fd_, SHUT_WR);
  if (peer_eof_) {
    finish();
    return;
  }
  // Read until the peer closes too, so that unread input does not turn our
  // close into a reset that could destroy data the peer has not read yet.
  state_ = State::draining;
  drain();
}

void Connection::drain() {
  if (state_ != State::draining) return;
  auto& buffer = shared_.read_buffer;
  for (int round = 0; round < kDrainRounds; ++round) {
    ssize_t ret = ::read(fd_, buffer.data(), buffer.size());
    if (ret > 0 || (ret < 0 && errno == EINTR)) continue;
    if (ret < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      transport_.mark_drained();
      await_inbound(Io::want_read);
      return;
    }
    finish();
    return;
  }
  // A peer that keeps sending gets no more of the thread than a reader does.
  asio::post(shared_.io, [self = shared_from_this()] { self->drain(); });
}

void Connection::fail(ErrorInfo error) {
  if (state_ == State::closed) return;
  bool was_open = state_ == State::open && id_ != 0;
  log_line("failed: " + error.kind() + ": " + error.message);
  end_because(error.kind() + ": " + error.message);
  log(LogLevel::debug, "socket %u: %s: %s", id_, error.kind().c_str(), error.message.c_str());
  settle_tls_change(error);
  if (was_open) {
    fail_recv(error);
    if (ControlClient* owner = shared_.registry.client(owner_))
      owner->send(protocol::socket_closed_event(id_, &error));
  }
  // After a fatal TLS error no close_notify may be sent.
  transport_.forbid_close_notify();
  finish();
}

void Connection::abort() {
  if (state_ == State::closed) return;
  end_because("cut off (daemon stopping, listener closed or refused)");
  if (state_ != State::handshaking) transport_.close_notify_now();
  finish();
}

void Connection::finish() {
  if (state_ == State::closed) return;
  auto self = shared_from_this();
  if (id_ != 0) {
    ++shared_.counters.connections_closed;
    log_connection("closed");
  }
  state_ = State::closed;
  // A handshake callback holds whoever waits for the handshake (a connect):
  // dropping it here breaks that cycle however the connection ends.
  handshake_.reset();
  settle_tls_change(wire_error(ErrorKind::closed, "the socket closed"));
  fail_recv(wire_error(ErrorKind::closed, "the socket closed"));  // cut off: the daemon stops
  // What it held for its peer leaves the budget (others may read again).
  deframer_.take_buffered();
  account_held();
  timer_.reset();
  idle_.reset();
  close_socket();
  if (blocked_client_ != 0) {
    if (ControlClient* c = shared_.registry.client(blocked_client_)) c->resume_input();
    blocked_client_ = 0;
  }
  shared_.registry.connection_finished(*this);
}

std::optional<asio::ip::tcp::endpoint> Connection::address(bool peer) const {
  asio::ip::tcp::endpoint ep;
  auto len = static_cast<socklen_t>(ep.capacity());
  int ret = peer ? ::getpeername(fd_, ep.data(), &len) : ::getsockname(fd_, ep.data(), &len);
  if (fd_ < 0 || ret != 0) return std::nullopt;
  ep.resize(len);
  return ep;
}

json Connection::endpoint(bool peer) const {
  auto ep = address(peer);
  if (!ep) return nullptr;
  return {{"host", ep->address().to_string()}, {"port", ep->port()}};
}

std::string Connection::peer_host() const {
  if (peer_name_) return *peer_name_;
  auto ep = address(true);
  return ep ? ep->address().to_string() : std::string();
}

unsigned short Connection::peer_port() const {
  auto ep = address(true);
  return ep ? ep->port() : 0;
}

json Connection::info() const {
  json result = ssl() != nullptr ? describe_session(ssl()) : json{{"protocol", "tcp"}};
  result["mode"] = protocol::framing_name(framing());
  return result;
}

void Connection::end_because(std::string reason) {
  if (!end_reason_) end_reason_ = std::make_unique<const std::string>(std::move(reason));
}

void Connection::log_connection(const char* what) const {
  if (id_ == 0 || !log_enabled(LogLevel::info)) return;
  json peer = endpoint(true);
  std::string where = peer.is_null() ? std::string("?")
                                     : peer["host"].get<std::string>() + ":" +
                                           std::to_string(peer["port"].get<int>());
  const char* protocol = ssl() != nullptr ? SSL_get_version(ssl()) : "tcp";
  const SSL_CIPHER* cipher = ssl() != nullptr ? SSL_get_current_cipher(ssl()) : nullptr;
  log(LogLevel::info, "socket %u %s: client %u, peer %s, %s%s%s, %llu bytes in, %llu out%s%s", id_,
      what, owner_, where.c_str(), protocol, cipher != nullptr ? " " : "",
      cipher != nullptr ? SSL_CIPHER_get_name(cipher) : "",
      static_cast<unsigned long long>(bytes_in_), static_cast<unsigned long long>(bytes_out_),
      end_reason_ ? ": " : "", end_reason_ ? end_reason_->c_str() : "");
}

}  // namespace tlsport::daemon
