// One TCP connection with or without TLS: handshake, reading into packets
// for its owner, writing delivered data, orderly close.
#pragma once

#include <openssl/ssl.h>

#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "daemon/errors.hpp"
#include "daemon/tls_config.hpp"
#include "protocol/framing.hpp"

namespace tlsport::daemon {

class Daemon;

/// A TCP socket bound to the io_context's own executor: 40 bytes instead of
/// 88 for the type-erased any_io_executor, and smaller pending wait ops.
using TcpSocket = asio::basic_stream_socket<asio::ip::tcp, asio::io_context::executor_type>;

/// A connected socket owned by one client. Reads only while its owner keeps
/// up and its active mode allows; its send buffer is bounded by pausing the
/// owner's input (see docs/protocol.md §5).
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  /// Called once the handshake is over: nullopt on success.
  using HandshakeDone = std::function<void(const std::optional<ErrorInfo>&)>;

  /// `ctx` null means plain TCP.
  Connection(Daemon& daemon, TcpSocket socket, const SslCtxPtr& ctx, TlsRole role,
             protocol::Framing framing, std::size_t packet_size);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// The TLS object (null for plain TCP), for per-connection client settings.
  SSL* ssl() const { return ssl_; }
  /// Runs the TLS handshake (at once done for plain TCP), bounded by `timeout`.
  void start_handshake(std::chrono::milliseconds timeout, HandshakeDone done);
  /// Makes the connection live under `id` for `owner` and starts reading.
  void open(std::uint32_t id, std::uint32_t owner);

  /// Queues data with its framing header. Sets `over` when the send buffer
  /// is above its high-water mark (the caller pauses its input).
  std::optional<ErrorInfo> deliver(std::string_view data, bool& over);
  /// Remembers a client whose input waits for this send buffer to drain.
  void block_client(std::uint32_t client) { blocked_client_ = client; }
  /// Sets the active mode: count < 0 = true, 0 = false, N > 0 = N packets.
  void set_active(long long count, bool once);
  /// Sets the active mode before open() (no read is started).
  void init_active(long long count, bool once) {
    active_ = count;
    active_once_ = once && count == 1;
  }
  /// Starts a passive-mode read answered to `client` with `ref`.
  std::optional<ErrorInfo> recv(std::uint32_t client, nlohmann::json ref,
                                std::chrono::milliseconds timeout);
  /// Hands the connection to another client.
  void set_owner(std::uint32_t owner);
  /// Reads again after the owner drained its output.
  void resume_reading();
  /// Orderly close: no more events; queued data, close_notify, TCP close.
  void close_orderly();
  /// Immediate close with a best-effort close_notify (daemon exit).
  void abort();

  std::uint32_t id() const { return id_; }
  std::uint32_t owner() const { return owner_; }
  /// True between a "busy" event and its "ready".
  bool busy() const { return busy_; }
  const protocol::Framing& framing() const { return framing_; }
  std::size_t packet_size() const { return packet_size_; }
  void set_packet_size(std::size_t n) {
    packet_size_ = n;
    deframer_.set_max_packet(n);
  }
  /// {"host":…,"port":…} of the peer or the local end.
  nlohmann::json endpoint(bool peer) const;
  /// Protocol, cipher and certificate details (docs/protocol.md, info).
  nlohmann::json info() const;
  void set_log_file(std::string path) {
    log_file_ = path.empty() ? nullptr : std::make_unique<const std::string>(std::move(path));
  }

 private:
  enum class State { handshaking, ready, open, closing, closed };
  enum class ReadResult { want_read, want_write, full, eof, error };

  void step_handshake();
  void fail_handshake(ErrorInfo error);
  /// Marks the handshake done, drops its timer and hands out its callback.
  std::unique_ptr<HandshakeDone> handshake_over();
  void arm_read(void (Connection::*next)());
  void arm_write(void (Connection::*next)());
  bool can_read() const;
  void read_some();
  ReadResult fill(char* buffer, std::size_t size, std::size_t& filled, ErrorInfo& error);
  bool feed(std::string_view bytes);
  bool emit(std::string_view packet);
  void schedule_write();
  void write_some();
  void continue_close();
  void drain();
  void peer_closed();
  void fail(ErrorInfo error);
  /// Answers a waiting recv with an error, if one waits.
  void fail_recv(const ErrorInfo& error);
  void finish();
  ErrorInfo ssl_error(int ret, const char* during);
  /// The timer, created when first needed.
  asio::steady_timer& timer();
  void cancel_timer() {
    if (timer_) timer_->cancel();
  }
  void log_line(const std::string& line) const;

  // Idle connections are many: what only some connections or some moments
  // need is allocated on demand, to keep an idle connection small.
  Daemon& daemon_;               ///< registry, clients, shared read buffer
  TcpSocket socket_;             ///< the TCP connection
  SSL* ssl_ = nullptr;           ///< TLS state; null for plain TCP
  TlsRole role_;                 ///< client or server end
  protocol::Framing framing_;    ///< how bytes become packets
  std::size_t packet_size_;      ///< cap on one packet
  protocol::Deframer deframer_;  ///< incoming bytes to packets
  /// Handshake, recv and close timeouts; on demand, and dropped after the
  /// handshake, since an idle connection needs none (120 bytes).
  std::unique_ptr<asio::steady_timer> timer_;
  /// Pending handshake callback; only while the handshake runs.
  std::unique_ptr<HandshakeDone> handshake_done_;
  State state_ = State::handshaking;  ///< where in its life the connection is
  std::uint32_t id_ = 0;              ///< socket id once open
  std::uint32_t owner_ = 0;           ///< owning client number
  std::uint32_t blocked_client_ = 0;  ///< client whose input waits for wbuf_ to drain
  bool busy_ = false;                 ///< the owner was told "busy" and not yet "ready"
  long long active_ = -1;             ///< <0 active, 0 passive, N packets left
  bool active_once_ = false;          ///< the count came from active once (no passive event)
  bool owner_paused_ = false;         ///< waiting for the owner to drain its output
  bool read_armed_ = false;           ///< a read wait is outstanding
  bool write_armed_ = false;          ///< a write wait is outstanding
  bool write_posted_ = false;         ///< a batched write is posted
  bool peer_eof_ = false;             ///< the peer finished sending
  bool shutdown_sent_ = false;        ///< close_notify sent
  std::uint32_t recv_client_ = 0;     ///< client waiting in recv (0 = none)
  /// An error found inside a deframer callback (rare: a pointer, not 64 bytes inline).
  std::unique_ptr<ErrorInfo> pending_failure_;
  nlohmann::json recv_ref_;  ///< its ref
  std::string wbuf_;         ///< framed data waiting to be written
  std::size_t wstart_ = 0;   ///< first unwritten byte of wbuf_
  /// The seed's -log file, if any (rare: a pointer, not a 32-byte string inline).
  std::unique_ptr<const std::string> log_file_;
};

}  // namespace tlsport::daemon
