// The in-process server (asio + OpenSSL in one thread, the daemon's own
// technique: TLS on the non-blocking socket, readiness waits, one shared
// read buffer, record buffers released when idle) and the plain-TCP server
// that stunnel forwards to. Both speak the protocol of common.hpp.
#include <sys/socket.h>

#include <cerrno>
#include <memory>

#include "common.hpp"

namespace bench {
namespace {

enum class Io { ok, want_read, want_write, eof, error };

/// Plain TCP.
struct PlainIo {
  int fd = -1;
  Io handshake() { return Io::ok; }
  Io read(unsigned char* p, std::size_t n, std::size_t& got) {
    for (;;) {
      ssize_t r = ::recv(fd, p, n, 0);
      if (r > 0) {
        got = static_cast<std::size_t>(r);
        return Io::ok;
      }
      if (r == 0) return Io::eof;
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? Io::want_read : Io::error;
    }
  }
  Io write(const unsigned char* p, std::size_t n, std::size_t& put) {
    for (;;) {
      ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
      if (r >= 0) {
        put = static_cast<std::size_t>(r);
        return Io::ok;
      }
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? Io::want_write : Io::error;
    }
  }
  void shutdown() { ::shutdown(fd, SHUT_WR); }
  void release() {}
};

/// TLS on the socket itself.
struct TlsIo {
  SSL* ssl = nullptr;
  static Io kind(SSL* s, int r) {
    switch (SSL_get_error(s, r)) {
      case SSL_ERROR_WANT_READ:
        return Io::want_read;
      case SSL_ERROR_WANT_WRITE:
        return Io::want_write;
      case SSL_ERROR_ZERO_RETURN:
        return Io::eof;
      default:
        ERR_clear_error();
        return Io::error;
    }
  }
  Io handshake() {
    int r = SSL_do_handshake(ssl);
    return r == 1 ? Io::ok : kind(ssl, r);
  }
  Io read(unsigned char* p, std::size_t n, std::size_t& got) {
    int r = SSL_read(ssl, p, static_cast<int>(n));
    if (r > 0) {
      got = static_cast<std::size_t>(r);
      return Io::ok;
    }
    return kind(ssl, r);
  }
  Io write(const unsigned char* p, std::size_t n, std::size_t& put) {
    int r = SSL_write(ssl, p, static_cast<int>(n));
    if (r > 0) {
      put = static_cast<std::size_t>(r);
      return Io::ok;
    }
    return kind(ssl, r);
  }
  void shutdown() {
    SSL_shutdown(ssl);
    ERR_clear_error();
  }
  void release() {
    SSL_free(ssl);
    ssl = nullptr;
  }
};

enum class Port { echo, bulk };
constexpr std::size_t kMaxOut = 1 << 20;  // stop reading while this much waits

template <class Transport>
class Session : public std::enable_shared_from_this<Session<Transport>> {
 public:
  Session(tcp::socket sock, Transport io, Port port)
      : sock_(std::move(sock)), io_(io), port_(port) {}
  ~Session() { io_.release(); }

  void start() { handshake(); }

 private:
  using Self = Session<Transport>;

  template <class F>
  void wait(Io want, F f) {
    auto type = want == Io::want_write ? tcp::socket::wait_write : tcp::socket::wait_read;
    sock_.async_wait(type, [self = this->shared_from_this(), f](std::error_code ec) {
      if (!ec) (self.get()->*f)();
    });
  }

  void handshake() {
    Io r = io_.handshake();
    if (r == Io::ok) return resume();
    if (r == Io::want_read || r == Io::want_write) return wait(r, &Self::handshake);
    finish();
  }

  /// Makes sure readable() runs soon, once.
  void resume() {
    if (reading_ || in_readable_ || done_) return;
    reading_ = true;
    asio::post(sock_.get_executor(), [self = this->shared_from_this()] { self->readable(); });
  }

  enum class Step { more, wait_read, wait_write, paused, end };

  void readable() {
    reading_ = false;
    if (done_) return;
    in_readable_ = true;
    Step step = read_rounds();
    in_readable_ = false;
    if (done_) return;
    if (step == Step::end) return finish();
    flush();
    if (done_) return;
    switch (step) {
      case Step::wait_read:
      case Step::wait_write:
        reading_ = true;
        return wait(step == Step::wait_write ? Io::want_write : Io::want_read, &Self::readable);
      case Step::more:
        return resume();  // other connections first
      default:
        return;  // paused: flush or the download resumes reading
    }
  }

  Step read_rounds() {
    for (int round = 0; round < 8; ++round) {
      if (pumping_) return Step::paused;
      if (out_.size() > kMaxOut) {
        flush();
        if (!out_.empty()) return Step::paused;
      }
      std::size_t got = 0;
      Io r = io_.read(g_read_buffer, sizeof g_read_buffer, got);
      if (r == Io::want_read) return Step::wait_read;
      if (r == Io::want_write) return Step::wait_write;
      if (r != Io::ok) return Step::end;
      consume(g_read_buffer, got);
    }
    return Step::more;
  }

  void consume(const unsigned char* p, std::size_t n) {
    if (port_ == Port::echo) {
      if (!in_.empty()) {
        in_.append(reinterpret_cast<const char*>(p), n);
        std::string held;
        held.swap(in_);
        deframe(reinterpret_cast<const unsigned char*>(held.data()), held.size());
      } else {
        deframe(p, n);
      }
      return;
    }
    if (kind_ == 0) {
      std::size_t take = std::min(n, kRequestSize - in_.size());
      in_.append(reinterpret_cast<const char*>(p), take);
      p += take;
      n -= take;
      if (in_.size() < kRequestSize) return;
      auto* req = reinterpret_cast<const unsigned char*>(in_.data());
      kind_ = static_cast<char>(req[0]);
      remaining_ = get_u64(req + 1);
      std::string().swap(in_);
      if (kind_ == 'D') {
        pumping_ = true;
        return pump();
      }
    }
    if (kind_ == 'U' && remaining_ > 0) {
      remaining_ -= std::min<std::uint64_t>(remaining_, n);
      if (remaining_ == 0) out_.push_back('K');
    }
  }

  void deframe(const unsigned char* p, std::size_t n) {
    while (n >= 2) {
      std::size_t len = (std::size_t(p[0]) << 8) | p[1];
      if (n < 2 + len) break;
      out_.append(reinterpret_cast<const char*>(p), 2 + len);
      p += 2 + len;
      n -= 2 + len;
    }
    if (n > 0) in_.assign(reinterpret_cast<const char*>(p), n);
  }

  void flush() {
    if (writing_ || done_) return;
    while (!out_.empty()) {
      std::size_t put = 0;
      Io r = io_.write(reinterpret_cast<const unsigned char*>(out_.data()), out_.size(), put);
      if (r == Io::ok) {
        out_.erase(0, put);
        continue;
      }
      if (r == Io::want_read || r == Io::want_write) {
        writing_ = true;
        return wait(r, &Self::writable);
      }
      return finish();
    }
  }

  void writable() {
    writing_ = false;
    flush();
    if (out_.empty()) resume();
  }

  /// Sends the download, then close_notify; reading goes on until the
  /// client closes.
  void pump() {
    if (done_) return;
    while (remaining_ > 0) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, kChunk));
      std::size_t put = 0;
      Io r = io_.write(g_zeros, n, put);
      if (r == Io::ok) {
        remaining_ -= put;
        continue;
      }
      if (r == Io::want_read || r == Io::want_write) {
        return wait(r, &Self::pump);
      }
      return finish();
    }
    pumping_ = false;
    io_.shutdown();
    resume();
  }

  void finish() {
    if (done_) return;
    done_ = true;
    io_.shutdown();
    std::error_code ignored;
    sock_.close(ignored);
  }

  tcp::socket sock_;
  Transport io_;
  Port port_;
  std::string in_, out_;
  char kind_ = 0;
  std::uint64_t remaining_ = 0;
  bool reading_ = false;      // a wait or a post for readable() is pending
  bool in_readable_ = false;  // readable() is running
  bool writing_ = false, pumping_ = false, done_ = false;
};

/// Accepts on one port for ever; make(socket) starts a session.
template <class Make>
void accept_loop(std::shared_ptr<tcp::acceptor> acceptor, Make make) {
  acceptor->async_accept([acceptor, make](std::error_code ec, tcp::socket sock) {
    if (!ec) {
      std::error_code ignored;
      sock.set_option(tcp::no_delay(true), ignored);
      sock.non_blocking(true, ignored);
      make(std::move(sock));
    }
    accept_loop(acceptor, make);
  });
}

std::shared_ptr<tcp::acceptor> open_acceptor(asio::io_context& io, const std::string& host,
                                             unsigned short port) {
  auto a = std::make_shared<tcp::acceptor>(io);
  tcp::endpoint ep(asio::ip::make_address(host), port);
  a->open(ep.protocol());
  a->set_option(tcp::acceptor::reuse_address(true));
  a->bind(ep);
  a->listen(4096);
  return a;
}

template <class Start>
int serve(const Flags& flags, Start start) {
  raise_fd_limit();
  asio::io_context io(1);
  std::string host = flags.str("host", "127.0.0.1");
  auto echo = open_acceptor(io, host, static_cast<unsigned short>(flags.num("echo-port", 0)));
  auto bulk = open_acceptor(io, host, static_cast<unsigned short>(flags.num("bulk-port", 0)));
  accept_loop(echo, [&start](tcp::socket s) { start(std::move(s), Port::echo); });
  accept_loop(bulk, [&start](tcp::socket s) { start(std::move(s), Port::bulk); });
  std::printf("PORTS echo=%u bulk=%u\n", echo->local_endpoint().port(),
              bulk->local_endpoint().port());
  std::fflush(stdout);
  io.run();
  return 0;
}

}  // namespace

int serve_tls(const Flags& flags) {
  SSL_CTX* ctx = server_context(flags.str("cert"), flags.str("key"));
  return serve(flags, [ctx](tcp::socket sock, Port port) {
    SSL* ssl = SSL_new(ctx);
    if (ssl == nullptr) return;
    SSL_set_fd(ssl, sock.native_handle());
    SSL_set_accept_state(ssl);
    std::make_shared<Session<TlsIo>>(std::move(sock), TlsIo{ssl}, port)->start();
  });
}

int serve_plain(const Flags& flags) {
  return serve(flags, [](tcp::socket sock, Port port) {
    int fd = sock.native_handle();
    std::make_shared<Session<PlainIo>>(std::move(sock), PlainIo{fd}, port)->start();
  });
}

}  // namespace bench
