// TlsTransport: SSL_read/SSL_write/SSL_do_handshake/SSL_shutdown, or
// read/send for plain TCP, each mapped to an Io outcome.
#include "daemon/tls_transport.hpp"

#include <openssl/err.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <string>

namespace tlsport::daemon {
namespace {

/// Largest amount handed to one SSL call (its length is an int).
constexpr std::size_t kMaxSslChunk = std::size_t{1} << 30;

/// The errno of a failed plain read or send, classified.
Io system_failure(ErrorInfo& error) {
  error = classify(std::error_code(errno, std::system_category()));
  return Io::failed;
}

using SocketIo = TlsTransport::SocketIo;

// The int-returning BIO calls, as OpenSSL's own socket BIO has: an error
// must reach SSL_read as -1 (with errno), not as the 0 of an EOF.
int bio_read(BIO* bio, char* out, int size) {
  auto* socket = static_cast<SocketIo*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  long n = socket->read(out, static_cast<std::size_t>(size));
  if (n < 0 && errno == EAGAIN) BIO_set_retry_read(bio);
  return static_cast<int>(n);
}

int bio_write(BIO* bio, const char* data, int size) {
  auto* socket = static_cast<SocketIo*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  long n = socket->send(data, static_cast<std::size_t>(size));
  if (n < 0 && errno == EAGAIN) BIO_set_retry_write(bio);
  return static_cast<int>(n);
}

long bio_ctrl(BIO* bio, int command, long, void*) {
  switch (command) {
    case BIO_CTRL_FLUSH:
      return 1;
    case BIO_CTRL_EOF:  // how OpenSSL tells a TCP EOF from other failures
      return static_cast<SocketIo*>(BIO_get_data(bio))->eof ? 1 : 0;
    default:
      return 0;
  }
}

BIO_METHOD* socket_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tlsport socket");
    BIO_meth_set_read(m, bio_read);
    BIO_meth_set_write(m, bio_write);
    BIO_meth_set_ctrl(m, bio_ctrl);
    return m;
  }();
  return method;
}

}  // namespace

long SocketIo::read(char* out, std::size_t size) {
  if (early) {
    std::size_t n = std::min(size, early->size() - early_taken);
    std::memcpy(out, early->data() + early_taken, n);
    early_taken += n;
    if (early_taken == early->size()) {
      early.reset();
      early_taken = 0;
    }
    return static_cast<long>(n);
  }
  if (!readable) {
    errno = EAGAIN;
    return -1;
  }
  for (;;) {
    ssize_t n = ::read(fd, out, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EWOULDBLOCK) errno = EAGAIN;
    // A short read emptied the socket: what comes next brings an edge.
    if ((n > 0 && static_cast<std::size_t>(n) < size && !hangup) || (n < 0 && errno == EAGAIN))
      readable = false;
    if (n == 0) eof = true;
    return static_cast<long>(n);
  }
}

long SocketIo::send(const char* data, std::size_t size) {
  if (!writable) {
    errno = EAGAIN;
    return -1;
  }
  for (;;) {
    ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EWOULDBLOCK) errno = EAGAIN;
    // A short send filled the socket: room brings an edge.
    if ((n >= 0 && static_cast<std::size_t>(n) < size) || (n < 0 && errno == EAGAIN))
      writable = false;
    return static_cast<long>(n);
  }
}

TlsTransport::TlsTransport(int fd, SslPtr ssl) : socket_(fd), ssl_(std::move(ssl)) {
  if (ssl_) attach_bio();
}

TlsTransport::~TlsTransport() = default;

void TlsTransport::attach_bio() {
  BIO* bio = BIO_new(socket_method());
  BIO_set_data(bio, &socket_);
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl_.get(), bio, bio);
}

void TlsTransport::start_tls(SslPtr ssl, std::string early) {
  ssl_ = std::move(ssl);
  close_notify_sent_ = false;
  if (!early.empty()) {
    socket_.early = std::make_unique<std::string>(std::move(early));
    socket_.early_taken = 0;
  }
  attach_bio();
}

void TlsTransport::read_exactly() {
  if (ssl_) SSL_set_read_ahead(ssl_.get(), 0);
}

void TlsTransport::drop_tls() {
  ssl_.reset();
  close_notify_sent_ = false;
}

Io TlsTransport::classify_ssl(int ret, const char* during, ErrorInfo& error) {
  int saved_errno = errno;
  switch (SSL_get_error(ssl_.get(), ret)) {
    case SSL_ERROR_WANT_READ:
      return Io::want_read;
    case SSL_ERROR_WANT_WRITE:
      return Io::want_write;
    case SSL_ERROR_WANT_RETRY_VERIFY:
      return Io::want_verdict;
    case SSL_ERROR_ZERO_RETURN:
      // close_notify, or (SSL_OP_IGNORE_UNEXPECTED_EOF) a TCP EOF without it.
      error =
          wire_error(ErrorKind::closed, std::string("connection closed by peer during ") + during);
      return Io::eof;
    case SSL_ERROR_SYSCALL: {
      std::string text = take_openssl_error("");
      if (!text.empty()) {
        error = wire_error(ErrorKind::tls, text);
        return Io::failed;
      }
      if (saved_errno != 0 && ret < 0) {
        error = classify(std::error_code(saved_errno, std::system_category()));
        return Io::failed;
      }
      // Truncation: the peer closed TCP without a word.
      error =
          wire_error(ErrorKind::closed, std::string("connection closed by peer during ") + during);
      return Io::eof;
    }
    default: {
      unsigned long first = ERR_peek_error();
      if (ERR_GET_LIB(first) == ERR_LIB_SSL &&
          ERR_GET_REASON(first) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        // Truncation: the peer closed TCP without close_notify.
        ERR_clear_error();
        error = wire_error(ErrorKind::closed,
                           std::string("peer closed without close_notify during ") + during);
        return Io::eof;
      }
      std::string text = take_openssl_error("TLS error");
      long verify = SSL_get_verify_result(ssl_.get());
      if (verify != X509_V_OK) text += ": " + std::string(X509_verify_cert_error_string(verify));
      error = wire_error(ErrorKind::tls, text);
      return Io::failed;
    }
  }
}

Io TlsTransport::handshake(ErrorInfo& error) {
  if (!ssl_) return Io::done;  // plain TCP: nothing to negotiate
  ERR_clear_error();
  int ret = SSL_do_handshake(ssl_.get());
  if (ret == 1) return Io::done;
  Io io = classify_ssl(ret, "handshake", error);
  // A peer that leaves during the handshake failed it.
  return io == Io::eof ? Io::failed : io;
}

Io TlsTransport::read(char* buffer, std::size_t size, std::size_t& got, ErrorInfo& error) {
  while (got < size) {
    std::size_t room = std::min(size - got, kMaxSslChunk);
    if (ssl_) {
      ERR_clear_error();
      int ret = SSL_read(ssl_.get(), buffer + got, static_cast<int>(room));
      if (ret > 0) {
        got += static_cast<std::size_t>(ret);
        continue;
      }
      return classify_ssl(ret, "read", error);
    }
    long ret = socket_.read(buffer + got, room);
    if (ret > 0) {
      got += static_cast<std::size_t>(ret);
      continue;
    }
    if (ret == 0) return Io::eof;
    if (errno == EAGAIN) return Io::want_read;
    return system_failure(error);
  }
  return Io::done;
}

Io TlsTransport::write(const char* data, std::size_t size, std::size_t& written, ErrorInfo& error) {
  while (written < size) {
    std::size_t len = std::min(size - written, kMaxSslChunk);
    if (ssl_) {
      ERR_clear_error();
      int ret = SSL_write(ssl_.get(), data + written, static_cast<int>(len));
      if (ret > 0) {
        written += static_cast<std::size_t>(ret);
        continue;
      }
      Io io = classify_ssl(ret, "write", error);
      return io == Io::eof ? Io::failed : io;
    }
    long ret = socket_.send(data + written, len);
    if (ret > 0) {
      written += static_cast<std::size_t>(ret);
      continue;
    }
    if (ret < 0 && errno == EAGAIN) return Io::want_write;
    return system_failure(error);
  }
  return Io::done;
}

Io TlsTransport::send_close_notify() {
  if (!ssl_ || close_notify_sent_) return Io::done;
  ERR_clear_error();
  // A first call that cannot write leaves the alert pending inside OpenSSL;
  // calling again sends it.
  int ret = SSL_shutdown(ssl_.get());
  if (ret < 0) {
    int err = SSL_get_error(ssl_.get(), ret);
    ERR_clear_error();
    if (err == SSL_ERROR_WANT_WRITE) return Io::want_write;
    if (err == SSL_ERROR_WANT_READ) return Io::want_read;
    // Any other failure: nothing more can be sent; the close goes on.
  }
  close_notify_sent_ = true;
  return Io::done;
}

void TlsTransport::forbid_close_notify() {
  if (ssl_) SSL_set_quiet_shutdown(ssl_.get(), 1);
}

void TlsTransport::close_notify_now() {
  if (!ssl_ || !SSL_is_init_finished(ssl_.get())) return;
  send_close_notify();  // the socket is non-blocking: best effort
}

bool TlsTransport::peer_sent_close_notify() const {
  return ssl_ && (SSL_get_shutdown(ssl_.get()) & SSL_RECEIVED_SHUTDOWN) != 0;
}

}  // namespace tlsport::daemon
