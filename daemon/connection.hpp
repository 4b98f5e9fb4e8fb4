// One TCP connection with or without TLS, as its owner sees it: its life
// (handshake, open, closing, closed), the packets it reads for its owner, the
// data it writes for it, and the flow control between the two.
#pragma once

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
#include "daemon/poller.hpp"
#include "daemon/socket_log.hpp"
#include "daemon/tls_transport.hpp"
#include "protocol/commands.hpp"
#include "protocol/framing.hpp"

namespace tlsport::daemon {

struct Shared;
using protocol::ActiveMode;

/// A TCP socket bound to the io_context's own executor: 40 bytes instead of
/// 88 for the type-erased any_io_executor, and smaller pending wait ops.
using TcpSocket = asio::basic_stream_socket<asio::ip::tcp, asio::io_context::executor_type>;

/// A connected socket owned by one client. Reads only while its owner keeps
/// up and its active mode allows; its send buffer is bounded by pausing the
/// owner's input (see docs/protocol.md §5).
///
/// Waits: one readiness wait per direction at most, and a wait carries no
/// continuation. Two activities may be blocked at once, the inbound one
/// (handshake, read, drain) and the outbound one (write, close_notify), each
/// on readable or writable; a wake-up serves whichever waits for it, so no
/// wait is ever lost when both want the same direction.
class Connection : public std::enable_shared_from_this<Connection>, private ReadinessWatcher {
 public:
  /// Called once the handshake (or a TLS change) is over: nullopt on success.
  using HandshakeDone = std::function<void(const std::optional<ErrorInfo>&)>;
  /// Called when a client-side handshake waits for the owner's verdict on
  /// the server's chain (tls.verify_callback); answered with give_verdict().
  using AskVerdict = std::function<void(Connection&)>;

  /// `ssl` null means plain TCP. The socket leaves asio's reactor for the
  /// daemon's poller (see poller.hpp).
  Connection(Shared& shared, TcpSocket socket, SslPtr ssl, protocol::Framing framing,
             std::size_t packet_size);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  /// The TLS object (null for plain TCP), for per-connection client settings.
  SSL* ssl() const { return transport_.ssl(); }
  /// Runs the TLS handshake (at once done for plain TCP), bounded by `timeout`.
  void start_handshake(std::chrono::milliseconds timeout, HandshakeDone done,
                       AskVerdict ask_verdict = {});
  /// The owner's verdict on the peer's chain: the handshake goes on.
  void give_verdict(bool accept);
  /// Sets the idle timeout (0: none) and the orderly close's wait.
  void set_timeouts(std::chrono::milliseconds idle, std::chrono::milliseconds close);
  /// Makes the connection live under `id` for `owner` and starts reading.
  void open(std::uint32_t id, std::uint32_t owner, ActiveMode active);

  /// STARTTLS: flushes what was queued as plaintext, then a TLS handshake
  /// (bytes already read from the peer but not delivered belong to it);
  /// `done` says how it ended (on failure the socket is closed).
  std::optional<ErrorInfo> start_tls(SslPtr ssl, std::chrono::milliseconds timeout,
                                     HandshakeDone done, AskVerdict ask_verdict);
  /// stoptls: flushes, sends close_notify, reads until the peer's, then
  /// plaintext again on the same socket; `done` says how it ended.
  std::optional<ErrorInfo> stop_tls(std::chrono::milliseconds timeout, HandshakeDone done);

  /// Queues data with its framing header. Sets `over` when the send buffer
  /// is so far above its mark that the caller must pause its input.
  std::optional<ErrorInfo> deliver(std::string_view data, bool& over);
  /// Remembers a client whose input waits for this send buffer to drain.
  void block_client(std::uint32_t client) { blocked_client_ = client; }
  /// Sets the active mode (a count adds to what is left, as inet:setopts does).
  void set_active(ActiveMode mode);
  /// Changes the packet cap from the next packet on.
  void set_packet_size(std::size_t size) { deframer_.set_max_packet(size); }
  /// Starts a passive-mode read answered to `client` with `ref`.
  std::optional<ErrorInfo> recv(std::uint32_t client, nlohmann::json ref,
                                std::chrono::milliseconds timeout);
  /// Hands the connection to another client.
  void set_owner(std::uint32_t owner);
  /// Its owner died with a grace period: it belongs to nobody, reads
  /// nothing more from its peer and keeps what it holds for a successor.
  void orphan();
  /// Reads again after the owner drained its output.
  void resume_reading();
  /// A server-side starttls whose handshake is done waits for its owner's
  /// verdict: nothing is read from the peer nor delivered to it until then.
  void hold_for_verdict(bool hold);
  /// Orderly close: no more events; queued data, close_notify, TCP close.
  void close_orderly();
  /// Immediate close with a best-effort close_notify (daemon exit, refused connection).
  void abort();

  std::uint32_t id() const { return id_; }
  std::uint32_t owner() const { return owner_; }
  /// True between a "busy" event and its "ready".
  bool busy() const { return busy_; }
  /// Bytes queued for the peer.
  std::size_t pending_write() const { return wbuf_.size() - wstart_; }
  const protocol::Framing& framing() const { return deframer_.framing(); }
  /// {"host":…,"port":…} of the peer or the local end.
  nlohmann::json endpoint(bool peer) const;
  /// The peer's or the local address (nullopt once closed).
  std::optional<asio::ip::tcp::endpoint> address(bool peer) const;
  /// The name the peer was connected to by (set for plain connects, for a
  /// later starttls), else its address; and its port.
  std::string peer_host() const;
  unsigned short peer_port() const;
  void set_peer_name(std::string host) {
    peer_name_ = std::make_unique<const std::string>(std::move(host));
  }
  /// Protocol, cipher and certificate details (docs/protocol.md, info).
  nlohmann::json info() const;
  /// Logs this socket's story to a file (the seed's -log).
  void set_log_file(const std::string& path);

 private:
  /// closing: queued data, then close_notify, then our FIN; draining: all
  /// of that is out and we read until the peer's FIN (or the close timeout).
  enum class State : std::uint8_t { handshaking, open, closing, draining, closed };

  // Readiness: what each activity waits for (Io::done = nothing).
  void await_inbound(Io want);
  void await_outbound(Io want);
  void arm(Io want);
  void on_readiness(bool readable, bool writable, bool hangup) override;
  void on_ready(Io ready);
  /// Leaves the poller and closes the socket (once).
  void close_socket();
  void run_inbound();

  // Handshake.
  void step_handshake();
  /// False while a resumed client handshake waits for the verify callback's
  /// verdict, or when it was refused (the handshake failed).
  bool judged_if_resumed();
  void fail_handshake(ErrorInfo error);

  // TLS changes on a live connection (connection_tls.cpp).
  /// A starttls (its TLS waits for the plaintext queued before it to go out)
  /// or a stoptls (waiting for close_notify both ways).
  struct TlsChange {
    explicit TlsChange(asio::io_context& io) : timer(io) {}
    bool stopping = false;                ///< stoptls rather than starttls
    bool notify_sent = false;             ///< stoptls: our close_notify is out
    SslPtr ssl;                           ///< starttls: the TLS to install
    std::string early;                    ///< starttls: peer bytes read before it
    std::chrono::milliseconds timeout{};  ///< starttls: for the handshake
    HandshakeDone done;                   ///< the reply
    AskVerdict ask_verdict;               ///< starttls: the owner judges the chain
    asio::steady_timer timer;             ///< stoptls: the wait for the peer
  };
  bool starting_tls() const;
  bool stopping_tls() const;
  void begin_upgrade();
  void send_stop_notify();
  void finish_stop_tls();
  void settle_tls_change(const std::optional<ErrorInfo>& outcome);

  // Idle timeout.
  struct IdleWatch {
    explicit IdleWatch(asio::io_context& io) : timer(io) {}
    asio::steady_timer timer;                    ///< fires at last + timeout
    std::chrono::milliseconds timeout{};         ///< idle_timeout_ms
    std::chrono::steady_clock::time_point last;  ///< the last byte either way
  };
  void watch_idle();
  void touch();

  // Reading.
  bool can_read() const;
  void post_read();
  /// Counts what the deframer holds into the daemon-wide budget.
  void account_held();
  /// True when this socket, a large holder, must wait for the budget.
  bool over_budget() const;
  void read_some();
  bool feed(std::string_view bytes);
  bool emit(std::string_view packet);
  void fail_recv(const ErrorInfo& error);

  // Writing and flow.
  void schedule_write();
  void write_some();
  void after_write(std::size_t pending);

  // Ending.
  void begin_closing();
  void continue_close();
  void drain();
  void peer_closed();
  void fail(ErrorInfo error);
  void finish();

  /// The timer, created when first needed.
  asio::steady_timer& timer();
  void log_line(const std::string& line) const {
    if (log_) log_->write(id_, line);
  }
  /// Remembers why the connection ends (the first reason given wins).
  void end_because(std::string reason);
  /// The daemon log's line for a connection handed over or ended.
  void log_connection(const char* what) const;

  // Idle connections are many: what only some connections or some moments
  // need is allocated on demand, to keep an idle connection small.
  Shared& shared_;               ///< registry, clients, shared read buffer
  int fd_;                       ///< the TCP connection (-1 once closed)
  TlsTransport transport_;       ///< TLS (or plain) bytes over fd_
  protocol::Deframer deframer_;  ///< incoming bytes to packets (holds framing and cap)
  /// Handshake, recv and close timeouts; on demand, and dropped after the
  /// handshake, since an idle connection needs none (120 bytes).
  std::unique_ptr<asio::steady_timer> timer_;
  /// What a running handshake reports to; only while it runs.
  struct Handshake {
    HandshakeDone done;      ///< the outcome
    AskVerdict ask_verdict;  ///< the owner judges the chain (may be empty)
    bool asked = false;      ///< the verdict was asked for
  };
  std::unique_ptr<Handshake> handshake_;
  /// A starttls or stoptls under way (rare: a pointer).
  std::unique_ptr<TlsChange> tls_change_;
  /// The idle timeout, for sockets that have one (rare: a pointer).
  std::unique_ptr<IdleWatch> idle_;
  std::uint32_t id_ = 0;                   ///< socket id once open (0 before)
  std::uint32_t owner_ = 0;                ///< owning client number
  std::uint32_t blocked_client_ = 0;       ///< client whose input waits for wbuf_ to drain
  std::uint32_t recv_client_ = 0;          ///< client waiting in recv (0 = none)
  std::uint32_t close_timeout_ms_ = 5000;  ///< longest wait of an orderly close
  std::uint32_t held_counted_ = 0;         ///< deframer bytes counted in shared_.held_by_peers
  long long active_ = -1;                  ///< <0 active, 0 passive, N packets left
  State state_ = State::handshaking;       ///< where in its life the connection is
  Io inbound_wait_ = Io::done;             ///< what handshake/read/drain waits for
  Io outbound_wait_ = Io::done;            ///< what write/close_notify waits for
  bool read_armed_ = false;                ///< waiting for readable (an edge, or a posted retry)
  bool write_armed_ = false;               ///< waiting for writable (an edge, or a posted retry)
  bool active_once_ = false;               ///< the count came from active once (no passive event)
  bool busy_ = false;                      ///< the owner was told "busy" and not yet "ready"
  bool owner_paused_ = false;              ///< waiting for the owner to drain its output
  bool budget_paused_ = false;             ///< waiting for the peer-memory budget
  bool judging_ = false;                   ///< waiting for the owner's verdict (hold_for_verdict)
  bool write_posted_ = false;              ///< a batched write is posted
  bool peer_eof_ = false;                  ///< the peer finished sending
  /// An error found inside a deframer callback (rare: a pointer, not 64 bytes inline).
  std::unique_ptr<ErrorInfo> pending_failure_;
  nlohmann::json recv_ref_;  ///< the waiting recv's ref
  std::string wbuf_;         ///< framed data waiting to be written
  std::size_t wstart_ = 0;   ///< first unwritten byte of wbuf_
  /// The seed's -log file, if any (rare: a pointer).
  std::unique_ptr<const SocketLog> log_;
  /// The host name a plain connect used (rare: a pointer).
  std::unique_ptr<const std::string> peer_name_;
  /// Why it ended, for the log line (set when the end is decided).
  std::unique_ptr<const std::string> end_reason_;
  std::uint64_t bytes_in_ = 0;   ///< from the peer, after TLS
  std::uint64_t bytes_out_ = 0;  ///< to the peer, before TLS
};

}  // namespace tlsport::daemon
