// Readiness of the connections' sockets through one edge-triggered epoll
// set of its own, in which each socket is registered once; the io_context
// waits on that set as on any descriptor. A connection that waits costs no
// system call here, where asio's per-socket async_wait re-arms epoll
// (epoll_ctl) on every wait: one call per message on a busy connection.
#pragma once

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <cstdint>
#include <system_error>
#include <vector>

namespace tlsport::daemon {

/// Told when its socket may be read or written (edge-triggered: told once
/// per change, so it must read or write until the socket says EAGAIN, or
/// know that it has; see TlsTransport).
class ReadinessWatcher {
 public:
  /// `hangup`: the peer ended its side or the socket failed; reading
  /// then shows it (EOF, error) even after a short read.
  virtual void on_readiness(bool readable, bool writable, bool hangup) = 0;

 protected:
  ~ReadinessWatcher() = default;
};

/// The epoll set of the connections, run by the io_context.
class Poller {
 public:
  explicit Poller(asio::io_context& io);
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

  /// Watches `fd` until remove(fd). The watcher must outlive that.
  std::error_code add(int fd, ReadinessWatcher& watcher);
  /// Stops watching `fd` (before it is closed); events already fetched for
  /// it are dropped.
  void remove(int fd);

 private:
  /// Events fetched per wake-up; more wait for the next.
  static constexpr int kBatch = 256;
  struct Entry {
    ReadinessWatcher* watcher = nullptr;
    std::uint32_t serial = 0;  ///< tells a reused descriptor from the one an event is for
  };
  void wait();
  void dispatch();

  asio::posix::stream_descriptor epoll_;
  std::vector<Entry> entries_;  ///< by descriptor number
  std::uint32_t next_serial_ = 0;
};

}  // namespace tlsport::daemon
