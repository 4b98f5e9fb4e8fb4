// What every room of the daemon uses: the event loop, the settings, the
// registry, the one read buffer of the thread and the shared TLS contexts.
#pragma once

#include <asio/io_context.hpp>
#include <vector>

#include "daemon/options.hpp"
#include "daemon/registry.hpp"
#include "daemon/tls_context.hpp"

namespace tlsport::daemon {

/// Owned by the Daemon; every client, listener, connect and connection
/// holds a reference.
struct Shared {
  Shared(asio::io_context& io_context, const Options& daemon_options)
      : io(io_context), options(daemon_options), registry(daemon_options.max_sockets) {}
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;

  /// Size of the read buffer shared by every socket: a few TLS records.
  static constexpr std::size_t kReadBufferSize = 64u << 10;

  asio::io_context& io;    ///< the one event loop
  const Options& options;  ///< settings from flags and config
  Registry registry;       ///< who is there, who owns what
  std::vector<char> read_buffer = std::vector<char>(kReadBufferSize);  ///< every socket read
  ContextCache client_contexts{TlsRole::client};                       ///< contexts of connects
  ContextCache server_contexts{TlsRole::server};  ///< contexts of accepts with their own tls
};

}  // namespace tlsport::daemon
