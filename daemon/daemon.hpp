// The daemon: starts its control channels, owns the rooms (registry,
// executor, Unix server), handles signals, and shuts everything down.
#pragma once

#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "daemon/control_client.hpp"
#include "daemon/executor.hpp"
#include "daemon/options.hpp"
#include "daemon/shared.hpp"
#include "daemon/stats_server.hpp"
#include "daemon/unix_server.hpp"

namespace tlsport::daemon {

/// Owns every client, listener and connection; runs on one thread.
class Daemon final : public ClientHost {
 public:
  Daemon(asio::io_context& io, Options options);
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  ~Daemon() override;

  /// Opens the control channels; false (with a message logged) on failure.
  bool start();
  /// Closes everything (best-effort close_notify) and stops the loop.
  void shutdown();

  // ClientHost: what control clients hand over.
  void on_command(ControlClient& client, const nlohmann::json& message) override;
  void on_data(ControlClient& client, std::uint32_t socket_id, std::string_view data) override;
  void on_client_closed(std::uint32_t number) override;
  void on_port_closed() override;

 private:
  /// Handles the next signal: SIGINT/SIGTERM end the daemon, SIGHUP reloads.
  void wait_for_signal();
  /// Reads every TLS file again for listeners and named contexts: all are
  /// rebuilt first and swapped only if every one succeeded (else nothing
  /// changes and the error says which failed). Live connections keep theirs.
  std::optional<ErrorInfo> reload_tls();
  /// Every few seconds: gives memory back to the system after many
  /// connections have closed (glibc keeps freed memory otherwise).
  void trim_memory_later();
  /// A named client with a grace period died: its sockets wait for a successor.
  void keep_for_successor(ControlClient& client);
  /// The grace period of `name` ran out: its kept sockets close.
  void close_orphans(const std::string& name);
  /// Attaches a control client on these descriptors.
  void add_client(int in_fd, int out_fd, bool is_port,
                  std::optional<protocol::ControlEncoding> encoding, unsigned header);

  /// Connections that must have been open before a drop is worth a trim.
  static constexpr std::size_t kTrimAfter = 64;
  static constexpr int kPortPipeSize = 256 << 10;

  Options options_;                   ///< settings from flags and config
  Shared shared_;                     ///< loop, registry, read buffer, contexts
  Executor executor_;                 ///< carries out commands
  asio::signal_set signals_;          ///< SIGINT/SIGTERM end the daemon; SIGHUP
  asio::steady_timer stop_timer_;     ///< bounds the last flush at shutdown
  asio::steady_timer trim_timer_;     ///< see trim_memory_later()
  std::size_t connections_peak_ = 0;  ///< most connections since the last trim
  std::unique_ptr<UnixServer> unix_server_;
  std::unique_ptr<StatsServer> stats_server_;  ///< --stats-listen  ///< --unix
  bool shutting_down_ = false;                 ///< shutdown() has begun
};

}  // namespace tlsport::daemon
