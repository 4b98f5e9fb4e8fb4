// A listening socket: accepts connections, runs their handshakes, and hands
// each finished one to the oldest outstanding accept.
#pragma once

#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "daemon/connection.hpp"
#include "daemon/tls_context.hpp"
#include "protocol/framing.hpp"

namespace tlsport::daemon {

struct Shared;

/// TLS settings given with one accept (seed 004 puts SSLFlags on accept).
struct AcceptTls {
  bool given = false;                                ///< the accept carried its own `tls`
  SslCtxPtr ctx;                                     ///< its context (null with given = plain TCP)
  std::string log_file;                              ///< its -log file
  std::chrono::milliseconds verdict_timeout{30000};  ///< tls.callback_timeout_ms
  protocol::SocketTimeouts timeouts;                 ///< override the listener's
};

/// Settings shared by every connection a listener accepts.
struct ListenSettings {
  SslCtxPtr ctx;                ///< one TLS context per listener (null = TCP)
  bool tls_per_accept = false;  ///< no listener context: each accept brings one
  ActiveMode active;            ///< initial active mode of accepted sockets
  protocol::Framing framing;    ///< mode of accepted sockets
  std::size_t packet_size = protocol::kDefaultPacketSize;  ///< packet cap of accepted sockets
  std::chrono::milliseconds handshake_timeout{30000};      ///< per accepted connection
  std::chrono::milliseconds idle_timeout{0};               ///< of accepted sockets (0: none)
  std::chrono::milliseconds close_timeout{5000};           ///< of their orderly close
  std::chrono::milliseconds verdict_timeout{30000};        ///< tls.callback_timeout_ms
  std::size_t backlog = 128;  ///< bound on finished connections waiting
  std::string log_file;       ///< the seed's -log file
  /// What ctx was built from, to build it again on reload: its own
  /// settings, or the name of a tls_context (neither for plain TCP).
  std::optional<protocol::TlsSettings> tls;
  std::string context_name;
};

/// Connections in their handshake, oldest first. At the cap the oldest
/// gives its place to a new one: a crowd that connects and says nothing (or
/// crawls) cannot keep a real client waiting, since a real client finishes
/// its handshake in a few round trips while the crowd's places are recycled.
class HandshakeQueue {
 public:
  /// One connection and the accept that claimed it, if any.
  struct Entry {
    std::shared_ptr<Connection> conn;     ///< the connection
    std::optional<std::uint64_t> serial;  ///< the claiming accept's serial
  };
  void add(std::shared_ptr<Connection> conn, std::optional<std::uint64_t> serial);
  /// False when `conn` is not there any more (it was evicted).
  bool remove(const std::shared_ptr<Connection>& conn);
  /// Takes the oldest out.
  Entry take_oldest();
  /// Takes every one out.
  std::list<Entry> take_all();
  std::size_t size() const { return order_.size(); }

 private:
  std::list<Entry> order_;                                             ///< oldest first
  std::unordered_map<Connection*, std::list<Entry>::iterator> where_;  ///< by connection
};

/// A listener owned by one client; accepts may come from its owner only.
class Listener : public std::enable_shared_from_this<Listener> {
 public:
  Listener(Shared& shared, asio::ip::tcp::acceptor acceptor, ListenSettings settings);
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  /// Queues an accept for `client`; answered with `ref` later. `tls`: the
  /// accept's own TLS settings, if any; `active`: its initial active mode.
  void add_accept(std::uint32_t client, nlohmann::json ref, AcceptTls tls,
                  std::optional<ActiveMode> active);
  /// True when accepts must bring their own TLS settings.
  bool tls_per_accept() const { return settings_.tls_per_accept; }
  /// Accepts waiting for a connection.
  std::size_t pending_accepts() const { return pending_.size(); }
  /// Connections held: handshaking, or handshaken and waiting for an accept.
  std::size_t handshaking_count() const { return handshaking_.size() + judging_.size(); }
  std::size_t ready_count() const { return ready_.size() + spares_.size(); }
  std::size_t connections_held() const {
    return handshaking_.size() + judging_.size() + ready_.size() + spares_.size();
  }
  /// Cancels the accept with this ref; false when there is none.
  bool cancel(std::uint32_t client, const nlohmann::json& ref);
  /// Answers `client`'s outstanding accepts with `error` and forgets them.
  void drop_accepts(std::uint32_t client, const ErrorInfo& error);
  /// Closes the listening socket and the connections it holds; outstanding
  /// accepts fail with `closed`.
  void close();
  /// What its context is made of (for reload).
  const ListenSettings& settings() const { return settings_; }
  /// New connections use `ctx` from now on; live ones keep theirs.
  void set_context(SslCtxPtr ctx) { settings_.ctx = std::move(ctx); }
  /// Starts taking connections (a listener with settings of its own does at once).
  void start() { accept_next(); }
  /// Accepts again if it stopped at the socket cap and there is room now.
  void resume_accepting() { accept_next(); }

  std::uint32_t id() const { return id_; }
  void set_id(std::uint32_t id) { id_ = id; }
  std::uint32_t owner() const { return owner_; }
  void set_owner(std::uint32_t owner) { owner_ = owner; }
  unsigned short port() const;
  nlohmann::json endpoint() const;

 private:
  /// An accept waiting for a connection.
  struct PendingAccept {
    std::uint64_t serial;              ///< identifies it while handshakes run
    std::uint32_t client;              ///< who asked
    nlohmann::json ref;                ///< its ref
    AcceptTls tls;                     ///< its own TLS settings, if given
    std::optional<ActiveMode> active;  ///< its initial active mode, if given
    unsigned claims = 0;               ///< connections handshaking for it (own TLS only)
  };
  /// What an accept's handshake was made with: another accept may take the
  /// connection only if its own TLS settings are the same.
  struct Origin {
    const SSL_CTX* ctx = nullptr;  ///< the context (compared only)
    std::string log_file;          ///< the -log file the connection writes to
    bool suits(const AcceptTls& tls) const {
      return tls.given && tls.ctx.get() == ctx && tls.log_file == log_file;
    }
  };
  /// With TLS per accept: a connection handshaken for an accept that another
  /// handshake served first (or that was cancelled). The next accept with the
  /// same settings (Origin) takes it; it waits as long as a handshake may
  /// take, at most `backlog` of them wait (the oldest goes), and they never
  /// stop accepting.
  struct Spare {
    Origin origin;                                  ///< what its handshake was made with
    std::shared_ptr<Connection> conn;               ///< the connection
    std::chrono::steady_clock::time_point expires;  ///< aborted from then on
  };
  /// True when a new TCP connection is wanted: always for a listener with
  /// settings of its own, else while an accept waits for one.
  bool wants_connection() const;
  void accept_next();
  void on_accepted(const std::error_code& ec, TcpSocket socket);
  /// The accept whose TLS settings a new connection is handshaken with: the
  /// oldest with settings of its own that no handshake serves yet; with TLS per
  /// accept, else the oldest (a peer that says nothing must not hold the only place).
  PendingAccept* claimant();
  void on_handshake(const std::shared_ptr<Connection>& conn, std::optional<std::uint64_t> serial,
                    const Origin& origin, const std::optional<ErrorInfo>& error);
  /// With tls.verify_callback: asks who decides about this client's chain first.
  void judge_then(const std::shared_ptr<Connection>& conn, std::optional<std::uint64_t> serial,
                  std::function<void()> go_on);
  /// The accepted connection, judged or not needing it, goes where it belongs
  /// (`origin`: what its handshake was made with, for an accept's own settings).
  void place(const std::shared_ptr<Connection>& conn, std::optional<std::uint64_t> serial,
             const Origin& origin);
  /// Hands a spare made with the accept's settings to it; false when none is.
  bool take_spare(PendingAccept& accept);
  /// Keeps `conn` as a spare (see Spare).
  void keep_spare(const Origin& origin, const std::shared_ptr<Connection>& conn);
  /// Aborts the oldest spares while their time is up or they are more than the backlog.
  void trim_spares();
  /// Aborts the oldest handshake to make room (see HandshakeQueue).
  void evict_oldest();
  /// The accept with this serial waits for another connection.
  void unclaim(std::uint64_t serial);
  /// The pending accept with this serial.
  std::deque<PendingAccept>::iterator find_accept(std::uint64_t serial);
  void serve_ready();
  /// Gives a handshaken connection to an accept: the reply, then reading.
  void hand_over(PendingAccept& accept, const std::shared_ptr<Connection>& conn);

  static constexpr std::size_t kMaxHandshaking = 1024;  ///< concurrent handshakes per listener

  Shared& shared_;                                 ///< registry, clients, loop
  asio::ip::tcp::acceptor acceptor_;               ///< the listening socket
  ListenSettings settings_;                        ///< for accepted connections
  asio::steady_timer retry_timer_;                 ///< back-off after accept errors
  std::uint32_t id_ = 0;                           ///< socket id
  std::uint32_t owner_ = 0;                        ///< owning client
  std::deque<PendingAccept> pending_;              ///< accepts waiting, oldest first
  std::deque<std::shared_ptr<Connection>> ready_;  ///< handshaken, waiting for an accept
  std::deque<Spare> spares_;    ///< handshaken with an accept's settings, waiting for another
  HandshakeQueue handshaking_;  ///< handshakes in progress, oldest first
  std::unordered_set<std::shared_ptr<Connection>> judging_;  ///< handshaken, the client judging
  std::uint64_t next_serial_ = 1;                            ///< serial of the next accept
  bool accepting_ = false;                                   ///< an async_accept is outstanding
  /// A listener whose TLS comes with each accept: a connection accepted after
  /// its accept was cancelled waits here, raw, for the next accept.
  std::optional<TcpSocket> unclaimed_;
  bool closed_ = false;  ///< close() was called
};

}  // namespace tlsport::daemon
