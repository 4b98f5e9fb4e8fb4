// TlsTransport: SSL_read/SSL_write/SSL_do_handshake/SSL_shutdown, or
// read/send for plain TCP, each mapped to an Io outcome.
#include "daemon/tls_transport.hpp"

#include <openssl/err.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

namespace tlsport::daemon {
namespace {

/// Largest amount handed to one SSL call (its length is an int).
constexpr std::size_t kMaxSslChunk = std::size_t{1} << 30;

/// The errno of a failed plain read or send, classified.
Io system_failure(ErrorInfo& error) {
  error = classify(std::error_code(errno, std::system_category()));
  return Io::failed;
}

}  // namespace

TlsTransport::TlsTransport(int fd, SslPtr ssl) : fd_(fd), ssl_(std::move(ssl)) {
  if (ssl_) SSL_set_fd(ssl_.get(), fd_);
}

Io TlsTransport::classify_ssl(int ret, const char* during, ErrorInfo& error) {
  int saved_errno = errno;
  switch (SSL_get_error(ssl_.get(), ret)) {
    case SSL_ERROR_WANT_READ:
      return Io::want_read;
    case SSL_ERROR_WANT_WRITE:
      return Io::want_write;
    case SSL_ERROR_ZERO_RETURN:
      // close_notify, or (SSL_OP_IGNORE_UNEXPECTED_EOF) a TCP EOF without it.
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
