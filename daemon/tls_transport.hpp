// The bytes of one connection: TLS on a non-blocking socket (through a BIO
// of our own), or plain TCP. Each step says what it needs to go on
// (readable, writable) instead of waiting; the connection above owns the
// waits. The transport also knows whether the socket can have more to read
// or room to write: a short read means the socket had no more at that
// moment, so the next read waits for the poller's next edge instead of
// asking the kernel for an EAGAIN.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "daemon/errors.hpp"

namespace tlsport::daemon {

/// Owning pointer to an SSL object.
struct SslDeleter {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};
using SslPtr = std::unique_ptr<SSL, SslDeleter>;

/// How one step of a transport ended.
enum class Io : std::uint8_t {
  done,          ///< finished: handshake over, buffer full, all written, close_notify sent
  want_read,     ///< call again once the socket is readable
  want_write,    ///< call again once the socket is writable
  eof,           ///< the peer finished sending (close_notify, or TCP EOF)
  failed,        ///< fatal; the error says why
  want_verdict,  ///< the handshake waits for the client's verdict on the peer's chain
};

/// TLS or plain TCP over one socket descriptor (owned by the connection).
class TlsTransport {
 public:
  /// `ssl` null means plain TCP; otherwise it is bound to `fd` here.
  TlsTransport(int fd, SslPtr ssl);
  ~TlsTransport();
  TlsTransport(const TlsTransport&) = delete;
  TlsTransport& operator=(const TlsTransport&) = delete;

  /// The TLS object, null for plain TCP.
  SSL* ssl() const { return ssl_.get(); }

  /// One handshake step: done, want_read/want_write or failed.
  Io handshake(ErrorInfo& error);
  /// Reads into `buffer` until it is full (done) or the socket has no more
  /// (want_read/want_write), the peer finished (eof) or an error (failed).
  /// `got` counts the bytes read, whatever the outcome.
  Io read(char* buffer, std::size_t size, std::size_t& got, ErrorInfo& error);
  /// Writes `size` bytes: done when all are written; else how far it got in
  /// `written` and what it waits for.
  Io write(const char* data, std::size_t size, std::size_t& written, ErrorInfo& error);
  /// Sends close_notify once (TLS only): done, or want_write/want_read.
  Io send_close_notify();
  /// After a fatal TLS error: no close_notify may be sent any more.
  void forbid_close_notify();
  /// At exit: close_notify if it can go at once, never waiting.
  void close_notify_now();
  /// True when the peer ended with close_notify (not a bare TCP EOF).
  bool peer_sent_close_notify() const;

  /// What the socket may do now, as far as the last read, write or poller
  /// edge tells: false means wait for the next edge.
  bool readable() const { return socket_.readable; }
  bool writable() const { return socket_.writable; }
  /// The poller saw an edge (`hangup`: the peer's FIN or an error).
  void mark_ready(bool readable, bool writable, bool hangup) {
    socket_.readable = socket_.readable || readable;
    socket_.writable = socket_.writable || writable;
    socket_.hangup = socket_.hangup || hangup;
  }
  /// A read of the socket outside the transport found it empty.
  void mark_drained() { socket_.readable = false; }

  /// The socket as the BIO sees it (public for the BIO's functions).
  struct SocketIo {
    explicit SocketIo(int socket) : fd(socket) {}
    int fd;                ///< the socket (not owned)
    bool readable = true;  ///< no short read or EAGAIN since the last edge
    bool writable = true;  ///< no short write or EAGAIN since the last edge
    /// The peer's FIN (or an error) is there: it follows the data without
    /// an edge of its own, so a short read no longer means empty.
    bool hangup = false;
    bool eof = false;  ///< a read returned 0 (the peer's FIN)
    /// STARTTLS: bytes read before TLS began, handed out first (rare).
    std::unique_ptr<std::string> early;
    std::size_t early_taken = 0;
    /// One read or send of the socket, updating the flags.
    long read(char* out, std::size_t size);
    long send(const char* data, std::size_t size);
  };

  /// STARTTLS: TLS from now on over the same socket. `early` holds bytes
  /// already read from the peer that belong to the handshake: TLS reads
  /// them first, then the socket.
  void start_tls(SslPtr ssl, std::string early);
  /// stoptls, first step: from now on TLS reads no record beyond the one it
  /// needs, so nothing the peer sends in plaintext after its close_notify
  /// is swallowed.
  void read_exactly();
  /// stoptls, last step: plain TCP again (close_notify went both ways).
  void drop_tls();

 private:
  /// Classifies a failed SSL call; the one place that reads SSL_get_error
  /// for failures and tells truncation from other errors.
  Io classify_ssl(int ret, const char* during, ErrorInfo& error);

  /// Binds ssl_ to the socket through the BIO.
  void attach_bio();

  SocketIo socket_;                 ///< the socket and what it can do
  bool close_notify_sent_ = false;  ///< send_close_notify() finished
  SslPtr ssl_;                      ///< TLS state; null for plain TCP
};

}  // namespace tlsport::daemon
