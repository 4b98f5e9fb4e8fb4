#include "daemon/connection.hpp"

#include <openssl/err.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/post.hpp>
#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <fstream>

#include "daemon/control_client.hpp"
#include "daemon/daemon.hpp"
#include "daemon/log.hpp"

namespace tlsport::daemon {

using nlohmann::json;

namespace {
/// Most rounds of reading one connection does before letting others run.
constexpr int kReadRounds = 4;
/// Past this many times the socket buffer's mark, a client's input is paused.
constexpr std::size_t kHardLimitFactor = 4;
/// How long an orderly close may take before the connection is cut.
constexpr std::chrono::seconds kCloseTimeout{5};

ErrorInfo framing_error(const std::error_code& ec) {
  if (ec == protocol::FramingError::packet_too_large) return {"emsgsize", ec.message()};
  return {"bad_packet", ec.message()};
}
}  // namespace

Connection::Connection(Daemon& daemon, TcpSocket socket, const SslCtxPtr& ctx, TlsRole role,
                       protocol::Framing framing, std::size_t packet_size)
    : daemon_(daemon),
      socket_(std::move(socket)),
      role_(role),
      framing_(framing),
      packet_size_(packet_size),
      deframer_(framing, packet_size) {
  std::error_code ignored;
  socket_.non_blocking(true, ignored);
  socket_.set_option(asio::ip::tcp::no_delay(true), ignored);
  if (ctx) {
    ssl_ = SSL_new(ctx.get());
    if (ssl_ != nullptr) {
      SSL_set_fd(ssl_, socket_.native_handle());
      if (role == TlsRole::client)
        SSL_set_connect_state(ssl_);
      else
        SSL_set_accept_state(ssl_);
    }
  }
}

Connection::~Connection() {
  if (ssl_ != nullptr) SSL_free(ssl_);
}

asio::steady_timer& Connection::timer() {
  if (!timer_) timer_ = std::make_unique<asio::steady_timer>(daemon_.io());
  return *timer_;
}

void Connection::start_handshake(std::chrono::milliseconds timeout, HandshakeDone done) {
  handshake_done_ = std::make_unique<HandshakeDone>(std::move(done));
  if (ssl_ == nullptr && role_ == TlsRole::client && !socket_.is_open()) {
    fail_handshake({"error", "no socket"});
    return;
  }
  timer().expires_after(timeout);
  timer().async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (ec || self->state_ != State::handshaking) return;
    self->fail_handshake({"timeout", "TLS handshake timed out"});
  });
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->step_handshake(); });
}

void Connection::step_handshake() {
  if (state_ != State::handshaking) return;
  if (ssl_ == nullptr) {
    // Plain TCP: nothing to negotiate.
    auto done = handshake_over();
    if (done && *done) (*done)(std::nullopt);
    return;
  }
  ERR_clear_error();
  int ret = SSL_do_handshake(ssl_);
  if (ret == 1) {
    auto done = handshake_over();
    if (done && *done) (*done)(std::nullopt);
    return;
  }
  int err = SSL_get_error(ssl_, ret);
  if (err == SSL_ERROR_WANT_READ) {
    arm_read(&Connection::step_handshake);
  } else if (err == SSL_ERROR_WANT_WRITE) {
    arm_write(&Connection::step_handshake);
  } else {
    fail_handshake(ssl_error(ret, "handshake"));
  }
}

void Connection::fail_handshake(ErrorInfo error) {
  if (state_ != State::handshaking) return;
  state_ = State::closed;
  cancel_timer();
  std::error_code ignored;
  socket_.close(ignored);
  auto done = std::move(handshake_done_);
  if (done && *done) (*done)(error);
}

std::unique_ptr<Connection::HandshakeDone> Connection::handshake_over() {
  state_ = State::ready;
  // An idle connection keeps no timer: the cancelled wait holds only `self`.
  timer_.reset();
  return std::move(handshake_done_);
}

ErrorInfo Connection::ssl_error(int ret, const char* during) {
  int err = SSL_get_error(ssl_, ret);
  if (err == SSL_ERROR_SYSCALL) {
    int saved = errno;
    std::string text = take_openssl_error("");
    if (!text.empty()) return {"tls", text};
    if (saved != 0 && ret < 0) return classify(std::error_code(saved, std::system_category()));
    return {"closed", std::string("connection closed by peer during ") + during};
  }
  if (err == SSL_ERROR_ZERO_RETURN) return {"closed", "peer sent close_notify"};
  std::string text = take_openssl_error("TLS error");
  long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK) text += ": " + std::string(X509_verify_cert_error_string(verify));
  return {"tls", text};
}

void Connection::arm_read(void (Connection::*next)()) {
  if (read_armed_) return;
  read_armed_ = true;
  socket_.async_wait(asio::ip::tcp::socket::wait_read,
                     [self = shared_from_this(), next](const std::error_code& ec) {
                       self->read_armed_ = false;
                       if (ec || self->state_ == State::closed) return;
                       ((*self).*next)();
                     });
}

void Connection::arm_write(void (Connection::*next)()) {
  if (write_armed_) return;
  write_armed_ = true;
  socket_.async_wait(asio::ip::tcp::socket::wait_write,
                     [self = shared_from_this(), next](const std::error_code& ec) {
                       self->write_armed_ = false;
                       if (ec || self->state_ == State::closed) return;
                       ((*self).*next)();
                     });
}

void Connection::open(std::uint32_t id, std::uint32_t owner) {
  id_ = id;
  owner_ = owner;
  state_ = State::open;
  if (log_file_) {
    json i = info();
    log_line("connected " + endpoint(true).dump() + " " + i.dump());
  }
  // Posted: open() may run while a client's command is being carried out,
  // and reading must not happen in the middle of that.
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->read_some(); });
}

bool Connection::can_read() const {
  return state_ == State::open && !owner_paused_ && (active_ != 0 || recv_client_ != 0);
}

void Connection::read_some() {
  if (!can_read()) return;
  auto self = shared_from_this();
  // Packets held back by an earlier stop go first.
  if (deframer_.has_packet() && !feed(std::string_view())) return;
  if (peer_eof_) {
    if (!deframer_.has_packet()) peer_closed();
    return;
  }
  auto& buffer = daemon_.read_buffer();
  for (int round = 0; round < kReadRounds; ++round) {
    if (!can_read()) return;
    std::size_t filled = 0;
    ErrorInfo error;
    ReadResult result = fill(buffer.data(), buffer.size(), filled, error);
    if (filled > 0 && !feed(std::string_view(buffer.data(), filled))) {
      if (result == ReadResult::eof) peer_eof_ = true;
      return;
    }
    switch (result) {
      case ReadResult::want_read:
        arm_read(&Connection::read_some);
        return;
      case ReadResult::want_write:
        arm_write(&Connection::read_some);
        return;
      case ReadResult::eof:
        peer_eof_ = true;
        peer_closed();
        return;
      case ReadResult::error:
        fail(error);
        return;
      case ReadResult::full:
        break;
    }
  }
  // Let other connections have their turn.
  asio::post(socket_.get_executor(), [self] { self->read_some(); });
}

Connection::ReadResult Connection::fill(char* buffer, std::size_t size, std::size_t& filled,
                                        ErrorInfo& error) {
  while (filled < size) {
    std::size_t room = std::min<std::size_t>(size - filled, INT_MAX);
    if (ssl_ != nullptr) {
      ERR_clear_error();
      int ret = SSL_read(ssl_, buffer + filled, static_cast<int>(room));
      if (ret > 0) {
        filled += static_cast<std::size_t>(ret);
        continue;
      }
      int err = SSL_get_error(ssl_, ret);
      if (err == SSL_ERROR_WANT_READ) return ReadResult::want_read;
      if (err == SSL_ERROR_WANT_WRITE) return ReadResult::want_write;
      if (err == SSL_ERROR_ZERO_RETURN) return ReadResult::eof;
      error = ssl_error(ret, "read");
      if (error.kind == "closed") return ReadResult::eof;
      return ReadResult::error;
    }
    ssize_t ret = ::read(socket_.native_handle(), buffer + filled, room);
    if (ret > 0) {
      filled += static_cast<std::size_t>(ret);
      continue;
    }
    if (ret == 0) return ReadResult::eof;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return ReadResult::want_read;
    error = classify(std::error_code(errno, std::system_category()));
    return ReadResult::error;
  }
  return ReadResult::full;
}

bool Connection::feed(std::string_view bytes) {
  auto self = shared_from_this();
  std::error_code ec =
      deframer_.feed(bytes, [this](std::string_view packet) { return emit(packet); });
  if (ec) {
    fail(framing_error(ec));
    return false;
  }
  if (pending_failure_) {
    ErrorInfo error = std::move(*pending_failure_);
    pending_failure_.reset();
    fail(error);
    return false;
  }
  return can_read();
}

bool Connection::emit(std::string_view packet) {
  if (state_ != State::open) return false;
  if (recv_client_ != 0) {
    // A passive read: the packet is the reply.
    std::uint32_t client = recv_client_;
    recv_client_ = 0;
    timer_.reset();  // cancels the recv timeout; a passive socket waiting for its next recv keeps
                     // no timer
    if (ControlClient* c = daemon_.client(client))
      c->reply_ok(
          recv_ref_,
          {{"data", json::binary(std::vector<std::uint8_t>(packet.begin(), packet.end()))}});
    recv_ref_ = nullptr;
    return can_read();
  }
  ControlClient* owner = daemon_.client(owner_);
  if (owner == nullptr) return false;
  if (!owner->send_data(id_, packet, framing_.kind == protocol::FramingKind::raw)) {
    pending_failure_ = std::make_unique<ErrorInfo>(ErrorInfo{
        "emsgsize",
        "a packet of " + std::to_string(packet.size()) + " bytes does not fit a control frame"});
    return false;
  }
  if (active_ > 0 && --active_ == 0) {
    if (!active_once_) owner->send({{"event", "passive"}, {"id", id_}});
    return false;
  }
  if (owner->congested()) {
    owner_paused_ = true;
    owner->add_waiting_socket(id_);
    return false;
  }
  return true;
}

void Connection::resume_reading() {
  if (!owner_paused_) return;
  owner_paused_ = false;
  ControlClient* owner = daemon_.client(owner_);
  if (owner != nullptr && owner->congested()) {
    owner_paused_ = true;
    owner->add_waiting_socket(id_);
    return;
  }
  read_some();
}

void Connection::set_active(long long count, bool once) {
  if (count < 0) {
    active_ = -1;
    active_once_ = false;
  } else if (count == 0) {
    active_ = 0;
  } else if (once) {
    active_ = 1;
    active_once_ = true;
  } else {
    // Adds to the count, as inet:setopts does.
    long long base = active_ > 0 && !active_once_ ? active_ : 0;
    active_ = std::min<long long>(base + count, INT_MAX);
    active_once_ = false;
  }
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->read_some(); });
}

std::optional<ErrorInfo> Connection::recv(std::uint32_t client, json ref,
                                          std::chrono::milliseconds timeout) {
  if (active_ != 0) return ErrorInfo{"bad_request", "recv needs active false"};
  if (recv_client_ != 0) return ErrorInfo{"ealready", "a recv is already waiting"};
  recv_client_ = client;
  recv_ref_ = std::move(ref);
  timer().expires_after(timeout);
  timer().async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (!ec) self->fail_recv({"timeout", "recv timed out"});
  });
  asio::post(socket_.get_executor(), [self = shared_from_this()] { self->read_some(); });
  return std::nullopt;
}

void Connection::fail_recv(const ErrorInfo& error) {
  if (recv_client_ == 0) return;
  if (ControlClient* c = daemon_.client(recv_client_))
    c->reply_error(recv_ref_, error.kind, error.message);
  recv_client_ = 0;
  recv_ref_ = nullptr;
}

void Connection::set_owner(std::uint32_t owner) {
  owner_ = owner;
  fail_recv({"cancelled", "socket handed over"});
  if (owner_paused_) {
    // The old owner's waiting list may still name us; resuming twice is harmless.
    owner_paused_ = false;
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->read_some(); });
  }
}

std::optional<ErrorInfo> Connection::deliver(std::string_view data, bool& over) {
  over = false;
  if (state_ != State::open) return ErrorInfo{"closed", "socket is closed"};
  std::uint8_t header[4];
  auto header_size = protocol::encode_header(framing_, data.size(), header);
  if (!header_size)
    return ErrorInfo{"emsgsize", std::to_string(data.size()) + " bytes do not fit a " +
                                     std::to_string(framing_.header_bytes) + "-byte header"};
  wbuf_.append(reinterpret_cast<const char*>(header), *header_size);
  wbuf_.append(data);
  schedule_write();
  std::size_t pending = wbuf_.size() - wstart_;
  std::size_t mark = daemon_.options().socket_buffer;
  if (pending >= mark && !busy_) {
    // Tell the owner to hold further data for this socket (a port's "busy").
    busy_ = true;
    if (ControlClient* owner = daemon_.client(owner_))
      owner->send({{"event", "busy"}, {"id", id_}});
  }
  // A client that does not honour busy is stopped altogether, so that memory
  // stays bounded whatever it does.
  over = pending >= kHardLimitFactor * mark;
  return std::nullopt;
}

void Connection::schedule_write() {
  if (write_posted_ || write_armed_) return;
  write_posted_ = true;
  // Posted, so that several delivers in one turn of the loop become one write.
  asio::post(socket_.get_executor(), [self = shared_from_this()] {
    self->write_posted_ = false;
    self->write_some();
  });
}

void Connection::write_some() {
  if (state_ == State::closed) return;
  while (wstart_ < wbuf_.size()) {
    std::size_t len = std::min<std::size_t>(wbuf_.size() - wstart_, 1u << 30);
    if (ssl_ != nullptr) {
      ERR_clear_error();
      int ret = SSL_write(ssl_, wbuf_.data() + wstart_, static_cast<int>(len));
      if (ret > 0) {
        wstart_ += static_cast<std::size_t>(ret);
        continue;
      }
      int err = SSL_get_error(ssl_, ret);
      if (err == SSL_ERROR_WANT_WRITE) {
        arm_write(&Connection::write_some);
        break;
      }
      if (err == SSL_ERROR_WANT_READ) {
        arm_read(&Connection::write_some);
        break;
      }
      fail(ssl_error(ret, "write"));
      return;
    }
    ssize_t ret = ::send(socket_.native_handle(), wbuf_.data() + wstart_, len, MSG_NOSIGNAL);
    if (ret > 0) {
      wstart_ += static_cast<std::size_t>(ret);
      continue;
    }
    if (ret < 0 && errno == EINTR) continue;
    if (ret < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      arm_write(&Connection::write_some);
      break;
    }
    fail(classify(std::error_code(errno, std::system_category())));
    return;
  }
  std::size_t pending = wbuf_.size() - wstart_;
  if (pending == 0) {
    wbuf_.clear();
    wstart_ = 0;
    if (wbuf_.capacity() > (64u << 10)) wbuf_.shrink_to_fit();
  } else if (wstart_ >= (64u << 10) && wstart_ * 2 >= wbuf_.size()) {
    wbuf_.erase(0, wstart_);
    wstart_ = 0;
  }
  if (busy_ && pending <= daemon_.options().socket_buffer / 4) {
    busy_ = false;
    if (state_ == State::open) {
      if (ControlClient* owner = daemon_.client(owner_))
        owner->send({{"event", "ready"}, {"id", id_}});
    }
  }
  if (blocked_client_ != 0 && pending <= daemon_.options().socket_buffer / 4) {
    std::uint32_t client = blocked_client_;
    blocked_client_ = 0;
    daemon_.resume_client_input(client);
  }
  if (pending == 0 && state_ == State::closing) continue_close();
}

void Connection::close_orderly() {
  if (state_ == State::closing || state_ == State::closed) return;
  if (state_ == State::handshaking) {
    fail_handshake({"closed", "closed"});
    return;
  }
  state_ = State::closing;
  if (log_file_) log_line("closed by owner");
  recv_client_ = 0;
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
  if (ssl_ != nullptr && !shutdown_sent_) {
    ERR_clear_error();
    int ret = SSL_shutdown(ssl_);
    if (ret < 0) {
      int err = SSL_get_error(ssl_, ret);
      if (err == SSL_ERROR_WANT_WRITE) {
        arm_write(&Connection::continue_close);
        return;
      }
      ERR_clear_error();
    }
    shutdown_sent_ = true;
  }
  std::error_code ignored;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
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
  auto& buffer = daemon_.read_buffer();
  for (;;) {
    ssize_t ret = ::read(socket_.native_handle(), buffer.data(), buffer.size());
    if (ret > 0) continue;
    if (ret < 0 && errno == EINTR) continue;
    if (ret < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      arm_read(&Connection::drain);
      return;
    }
    finish();
    return;
  }
}

void Connection::peer_closed() {
  if (state_ != State::open) return;
  ErrorInfo reason;
  bool normal = framing_.kind == protocol::FramingKind::raw || deframer_.buffered() == 0;
  if (log_file_) log_line("closed by peer");
  if (ControlClient* owner = daemon_.client(owner_)) {
    json event = {{"event", "socket_closed"}, {"id", id_}};
    if (normal)
      event["reason"] = "normal";
    else
      event["reason"] = {{"kind", "closed"}, {"message", "peer closed inside a packet"}};
    owner->send(event);
  }
  fail_recv({"closed", "peer closed"});
  daemon_.forget_socket(id_);
  state_ = State::closing;
  timer().expires_after(kCloseTimeout);
  timer().async_wait([self = shared_from_this()](const std::error_code& ec) {
    if (!ec && self->state_ == State::closing) self->finish();
  });
  continue_close();
}

void Connection::fail(ErrorInfo error) {
  if (state_ == State::closed) return;
  bool was_open = state_ == State::open;
  if (log_file_) log_line("failed: " + error.kind + ": " + error.message);
  log(LogLevel::debug, "socket %u: %s: %s", id_, error.kind.c_str(), error.message.c_str());
  if (was_open) {
    if (ControlClient* owner = daemon_.client(owner_))
      owner->send({{"event", "socket_closed"}, {"id", id_}, {"reason", error.to_json()}});
    fail_recv(error);
  }
  // After a fatal TLS error no close_notify may be sent.
  if (ssl_ != nullptr) SSL_set_quiet_shutdown(ssl_, 1);
  finish();
}

void Connection::abort() {
  if (state_ == State::closed) return;
  if (ssl_ != nullptr && (state_ == State::open || state_ == State::closing) && !shutdown_sent_) {
    ERR_clear_error();
    SSL_shutdown(ssl_);  // best effort: the socket is non-blocking
    ERR_clear_error();
  }
  finish();
}

void Connection::finish() {
  if (state_ == State::closed) return;
  auto self = shared_from_this();
  state_ = State::closed;
  cancel_timer();
  std::error_code ignored;
  socket_.close(ignored);
  if (blocked_client_ != 0) {
    daemon_.resume_client_input(blocked_client_);
    blocked_client_ = 0;
  }
  daemon_.connection_finished(*this);
}

json Connection::endpoint(bool peer) const {
  std::error_code ec;
  auto ep = peer ? socket_.remote_endpoint(ec) : socket_.local_endpoint(ec);
  if (ec) return nullptr;
  return {{"host", ep.address().to_string()}, {"port", ep.port()}};
}

json Connection::info() const {
  json result = ssl_ != nullptr ? describe_session(ssl_) : json{{"protocol", "tcp"}};
  result["mode"] = protocol::framing_name(framing_);
  return result;
}

void Connection::log_line(const std::string& line) const {
  std::ofstream out(*log_file_, std::ios::app);
  std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  out << stamp << " socket " << id_ << ": " << line << "\n";
}

}  // namespace tlsport::daemon
