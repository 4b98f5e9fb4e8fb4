// What every room of the daemon uses: the event loop, the settings, the
// registry, the one read buffer of the thread and the shared TLS contexts.
#pragma once

#include <asio/io_context.hpp>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "daemon/options.hpp"
#include "daemon/poller.hpp"
#include "daemon/questions.hpp"
#include "daemon/registry.hpp"
#include "daemon/session_cache.hpp"
#include "daemon/stats.hpp"
#include "daemon/tls_context.hpp"

namespace tlsport::daemon {

class Connection;

/// A TLS context defined once with tls_context and used by name.
struct NamedContext {
  TlsSettings settings;  ///< what it was built from
  SslCtxPtr client;      ///< for connect and client-side starttls
  SslCtxPtr server;      ///< for listen, accept, server-side starttls (null: no certificate)
};

/// Owned by the Daemon; every client, listener, connect and connection
/// holds a reference.
struct Shared {
  Shared(asio::io_context& io_context, const Options& daemon_options)
      : io(io_context),
        options(daemon_options),
        poller(io_context),
        registry(daemon_options.max_sockets) {}
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;

  /// Size of the read buffer shared by every socket: a few TLS records.
  static constexpr std::size_t kReadBufferSize = 64u << 10;
  /// Size of the read buffer shared by the control clients: a port's pipe holds
  /// this much (Daemon::kPortPipeSize), and a read takes all of it.
  static constexpr std::size_t kControlInputSize = 256u << 10;

  asio::io_context& io;    ///< the one event loop
  const Options& options;  ///< settings from flags and config
  Poller poller;           ///< readiness of the connections (before registry: outlives them)
  Registry registry;       ///< who is there, who owns what
  std::vector<char> read_buffer = std::vector<char>(kReadBufferSize);  ///< every socket read
  /// Every control client's read: commands are carried out from it, and that
  /// may read sockets into read_buffer, so it is another. What the decoder does
  /// not reach before returning it keeps (a copy), so one buffer serves all.
  std::vector<char> control_input = std::vector<char>(kControlInputSize);
  SessionCache client_sessions;  ///< sessions of connects, for resumption
  ContextCache client_contexts{TlsRole::client, &client_sessions};  ///< contexts of connects
  ContextCache server_contexts{TlsRole::server};       ///< contexts of accepts with their own tls
  std::map<std::string, NamedContext> named_contexts;  ///< defined with tls_context
  Questions questions{io, registry};                   ///< passwords and verdicts asked of clients
  /// Bytes every connection's deframer holds (partial packets); capped by
  /// options.peer_memory_budget.
  std::size_t held_by_peers = 0;
  /// Connections that stopped reading because the budget was spent.
  std::vector<std::weak_ptr<Connection>> budget_waiters;
  Counters counters;  ///< what happened, for stats and metrics
};

}  // namespace tlsport::daemon
