// The daemon's counters (things that happened) and the snapshot the stats
// command and the Prometheus endpoint report, with the gauges (how things
// are now) read from the rooms at that moment.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace tlsport::daemon {

struct Shared;

/// Counters kept as events happen: plain adds, nothing on the data path
/// but an addition per read, write and packet.
struct Counters {
  std::uint64_t bytes_in = 0;            ///< from peers (after TLS)
  std::uint64_t bytes_out = 0;           ///< to peers (before TLS)
  std::uint64_t packets_in = 0;          ///< fromsocket events and recv replies
  std::uint64_t packets_out = 0;         ///< delivers
  std::uint64_t connections_opened = 0;  ///< handed to a client (accepted or connected)
  std::uint64_t connections_closed = 0;  ///< ended after being handed over
  std::uint64_t handshakes_done = 0;     ///< TLS handshakes completed
  std::uint64_t handshakes_resumed = 0;  ///< of which resumed a session
  std::uint64_t handshakes_evicted = 0;  ///< given up to make room (a listener's cap)
  std::map<std::string, std::uint64_t> handshakes_failed;  ///< by error kind
  std::uint64_t clients_attached = 0;                      ///< control clients ever attached
};

/// Everything the stats command reports.
nlohmann::json stats_snapshot(const Shared& shared);

/// The same as Prometheus text exposition (format 0.0.4).
std::string prometheus_text(const nlohmann::json& snapshot);

}  // namespace tlsport::daemon
