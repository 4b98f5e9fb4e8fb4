// An optional HTTP endpoint (off by default; meant for loopback) that
// answers GET /metrics with the stats in Prometheus text form.
#pragma once

#include <asio/ip/tcp.hpp>
#include <cstddef>
#include <memory>
#include <string>

namespace tlsport::daemon {

struct Shared;

/// Serves /metrics; a few requests at a time, each bounded in size and time.
class StatsServer {
 public:
  explicit StatsServer(Shared& shared);
  StatsServer(const StatsServer&) = delete;
  StatsServer& operator=(const StatsServer&) = delete;

  /// Listens on "ADDRESS:PORT" ("[::1]:PORT" for IPv6); false (logged) on failure.
  bool open(const std::string& where);
  void close();

 private:
  class Exchange;
  void accept_next();

  static constexpr std::size_t kMaxExchanges = 16;  ///< requests served at once
  Shared& shared_;                                  ///< what to report
  asio::ip::tcp::acceptor acceptor_;                ///< the endpoint
  /// Requests being served, shared with them (they may outlive the server).
  std::shared_ptr<std::size_t> exchanges_ = std::make_shared<std::size_t>(0);
};

}  // namespace tlsport::daemon
