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

/// A socket BIO that first hands out bytes read earlier (a STARTTLS
/// peer's ClientHello may have arrived with its last plaintext line).
struct EarlyBytes {
  int fd;                 ///< the socket (not owned)
  std::string bytes;      ///< read before TLS began
  std::size_t taken = 0;  ///< how many TLS has read
};

int early_read(BIO* bio, char* out, size_t size, size_t* got) {
  auto* early = static_cast<EarlyBytes*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  if (early->taken < early->bytes.size()) {
    *got = std::min(size, early->bytes.size() - early->taken);
    std::memcpy(out, early->bytes.data() + early->taken, *got);
    early->taken += *got;
    if (early->taken == early->bytes.size()) std::string().swap(early->bytes);
    return 1;
  }
  for (;;) {
    ssize_t n = ::read(early->fd, out, size);
    if (n > 0) {
      *got = static_cast<size_t>(n);
      return 1;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_read(bio);
    return 0;
  }
}

int early_write(BIO* bio, const char* data, size_t size, size_t* written) {
  auto* early = static_cast<EarlyBytes*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  for (;;) {
    ssize_t n = ::send(early->fd, data, size, MSG_NOSIGNAL);
    if (n > 0) {
      *written = static_cast<size_t>(n);
      return 1;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_write(bio);
    return 0;
  }
}

long early_ctrl(BIO*, int command, long, void*) { return command == BIO_CTRL_FLUSH ? 1 : 0; }

int early_destroy(BIO* bio) {
  delete static_cast<EarlyBytes*>(BIO_get_data(bio));
  BIO_set_data(bio, nullptr);
  return 1;
}

BIO_METHOD* early_bytes_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tlsport early bytes");
    BIO_meth_set_read_ex(m, early_read);
    BIO_meth_set_write_ex(m, early_write);
    BIO_meth_set_ctrl(m, early_ctrl);
    BIO_meth_set_destroy(m, early_destroy);
    return m;
  }();
  return method;
}

}  // namespace

TlsTransport::TlsTransport(int fd, SslPtr ssl) : fd_(fd), ssl_(std::move(ssl)) {
  if (ssl_) SSL_set_fd(ssl_.get(), fd_);
}

TlsTransport::~TlsTransport() = default;

void TlsTransport::start_tls(SslPtr ssl, std::string early) {
  ssl_ = std::move(ssl);
  close_notify_sent_ = false;
  if (early.empty()) {
    SSL_set_fd(ssl_.get(), fd_);
    return;
  }
  BIO* bio = BIO_new(early_bytes_method());
  BIO_set_data(bio, new EarlyBytes{fd_, std::move(early)});
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl_.get(), bio, bio);
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
    ssize_t ret = ::read(fd_, buffer + got, room);
    if (ret > 0) {
      got += static_cast<std::size_t>(ret);
      continue;
    }
    if (ret == 0) return Io::eof;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Io::want_read;
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
    ssize_t ret = ::send(fd_, data + written, len, MSG_NOSIGNAL);
    if (ret > 0) {
      written += static_cast<std::size_t>(ret);
      continue;
    }
    if (ret < 0 && errno == EINTR) continue;
    if (ret < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Io::want_write;
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
