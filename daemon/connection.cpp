// Connection: readiness, handshake, opening and closing. Reading, writing
// and flow control are in connection_io.cpp.
#include "daemon/connection.hpp"

#include <asio/post.hpp>

#include "daemon/control_client.hpp"
#include "daemon/log.hpp"
#include "daemon/shared.hpp"
#include "daemon/tls_context.hpp"
#include "protocol/messages.hpp"

namespace tlsport::daemon {

using nlohmann::json;

namespace {
/// How long an orderly close may take before the connection is cut.
constexpr std::chrono::seconds kCloseTimeout{5};
}  // namespace

Connection::Connection(Shared& shared, TcpSocket socket, SslPtr ssl, protocol::Framing framing,
                       std::size_t packet_size)
    : shared_(shared),
      socket_(std::move(socket)),
      transport_(socket_.native_handle(), std::move(ssl)),
      deframer_(framing, packet_size) {
  std::error_code ignored;
  socket_.non_blocking(true, ignored);
  socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
}

Connection::~Connection() = default;

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
  socket_.async_wait(readable ? TcpSocket::wait_read : TcpSocket::wait_write,
                     [self = shared_from_this(), want](const std::error_code& ec) {
                       (want == Io::want_read ? self->read_armed_ : self->write_armed_) = false;
                       if (ec || self->state_ == State::closed) return;
                       self->on_ready(want);
                     });
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
    case State::closing:
      drain();
      break;
    case State::closed:
      break;
  }
}

// ---------------------------------------------------------------- handshake

void Connection::start_handshake(std::chrono::milliseconds timeout, HandshakeDone done) {
  handshake_done_ = std::make_unique<HandshakeDone>(std::move(done));
  timer().expires_after(timeout);
  timer().async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (ec || self->state_ != State::handshaking) return;
    self->fail_handshake(wire_error(ErrorKind::timeout, "TLS handshake timed out"));
  });
  asio::post(shared_.io, [self = shared_from_this()] { self->step_handshake(); });
}

void Connection::step_handshake() {
  if (state_ != State::handshaking) return;
  ErrorInfo error;
  Io io = transport_.handshake(error);
  if (io == Io::want_read || io == Io::want_write) {
    await_inbound(io);
    return;
  }
  if (io != Io::done) {
    fail_handshake(error);
    return;
  }
  // Open, but no one's until open() gives it an id and an owner.
  state_ = State::open;
  timer_.reset();  // an idle connection keeps no timer
  auto done = std::move(handshake_done_);
  if (done && *done) (*done)(std::nullopt);
}

void Connection::fail_handshake(ErrorInfo error) {
  if (state_ != State::handshaking) return;
  auto done = std::move(handshake_done_);
  finish();
  if (done && *done) (*done)(error);
}

void Connection::open(std::uint32_t id, std::uint32_t owner, ActiveMode active) {
  id_ = id;
  owner_ = owner;
  active_ = active.count;
  active_once_ = active.once && active.count == 1;
  if (log_) log_line("connected " + endpoint(true).dump() + " " + info().dump());
  post_read();
}

// ---------------------------------------------------------------- ending

void Connection::close_orderly() {
  if (state_ == State::closing || state_ == State::closed) return;
  if (state_ == State::handshaking) {
    fail_handshake(wire_error(ErrorKind::closed, "closed"));
    return;
  }
  log_line("closed by owner");
  recv_client_ = 0;
  begin_closing();
}

void Connection::peer_closed() {
  if (state_ != State::open) return;
  bool normal = framing().kind == protocol::FramingKind::raw || deframer_.buffered() == 0;
  log_line(transport_.peer_sent_close_notify() ? "peer sent close_notify" : "peer closed");
  ErrorInfo inside = wire_error(ErrorKind::closed, "peer closed inside a packet");
  if (ControlClient* owner = shared_.registry.client(owner_))
    owner->send(protocol::socket_closed_event(id_, normal ? nullptr : &inside));
  fail_recv(wire_error(ErrorKind::closed, "peer closed"));
  shared_.registry.forget_connection(id_);
  begin_closing();
}

void Connection::begin_closing() {
  state_ = State::closing;
  timer().expires_after(kCloseTimeout);
  timer().async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (!ec && self->state_ == State::closing) self->finish();
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
  std::error_code ignored;
  socket_.shutdown(TcpSocket::shutdown_send, ignored);
  if (peer_eof_) {
    finish();
    return;
  }
  // Read until the peer closes too, so that unread input does not turn our
  // close into a reset that could destroy data the peer has not read yet.
  drain();
}

void Connection::drain() {
  if (state_ != State::closing) return;
  auto& buffer = shared_.read_buffer;
  for (;;) {
    ssize_t ret = ::read(socket_.native_handle(), buffer.data(), buffer.size());
    if (ret > 0 || (ret < 0 && errno == EINTR)) continue;
    if (ret < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      await_inbound(Io::want_read);
      return;
    }
    finish();
    return;
  }
}

void Connection::fail(ErrorInfo error) {
  if (state_ == State::closed) return;
  bool was_open = state_ == State::open && id_ != 0;
  log_line("failed: " + error.kind() + ": " + error.message);
  log(LogLevel::debug, "socket %u: %s: %s", id_, error.kind().c_str(), error.message.c_str());
  if (was_open) {
    if (ControlClient* owner = shared_.registry.client(owner_))
      owner->send(protocol::socket_closed_event(id_, &error));
    fail_recv(error);
  }
  // After a fatal TLS error no close_notify may be sent.
  transport_.forbid_close_notify();
  finish();
}

void Connection::abort() {
  if (state_ == State::closed) return;
  if (state_ != State::handshaking) transport_.close_notify_now();
  finish();
}

void Connection::finish() {
  if (state_ == State::closed) return;
  auto self = shared_from_this();
  state_ = State::closed;
  // A handshake callback holds whoever waits for the handshake (a connect):
  // dropping it here breaks that cycle however the connection ends.
  handshake_done_.reset();
  timer_.reset();
  std::error_code ignored;
  socket_.close(ignored);
  if (blocked_client_ != 0) {
    if (ControlClient* c = shared_.registry.client(blocked_client_)) c->resume_input();
    blocked_client_ = 0;
  }
  shared_.registry.connection_finished(*this);
}

json Connection::endpoint(bool peer) const {
  std::error_code ec;
  auto ep = peer ? socket_.remote_endpoint(ec) : socket_.local_endpoint(ec);
  if (ec) return nullptr;
  return {{"host", ep.address().to_string()}, {"port", ep.port()}};
}

json Connection::info() const {
  json result = ssl() != nullptr ? describe_session(ssl()) : json{{"protocol", "tcp"}};
  result["mode"] = protocol::framing_name(framing());
  return result;
}

}  // namespace tlsport::daemon
