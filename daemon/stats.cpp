// The stats snapshot and its Prometheus form.
#include "daemon/stats.hpp"

#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "daemon/connection.hpp"
#include "daemon/control_client.hpp"
#include "daemon/listener.hpp"
#include "daemon/shared.hpp"

namespace tlsport::daemon {

using nlohmann::json;

namespace {

/// Resident memory, from /proc/self/statm (pages).
std::uint64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::uint64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

/// One Prometheus sample line.
void sample(std::string& out, const std::string& name, const std::string& labels,
            std::uint64_t value) {
  out += name;
  if (!labels.empty()) out += "{" + labels + "}";
  out += " " + std::to_string(value) + "\n";
}

/// A metric with its HELP and TYPE lines, then one unlabelled sample.
void metric(std::string& out, const std::string& name, const char* type, const char* help,
            std::uint64_t value) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  sample(out, name, "", value);
}

}  // namespace

json stats_snapshot(const Shared& shared) {
  const Registry& registry = shared.registry;
  const Counters& c = shared.counters;
  std::uint64_t handshaking = 0, ready = 0, client_output = 0, send_buffers = 0;
  for (const auto& listener : registry.listeners()) {
    handshaking += listener->handshaking_count();
    ready += listener->ready_count();
  }
  for (const auto& client : registry.clients()) client_output += client->pending_output();
  for (const auto& conn : registry.connections()) send_buffers += conn->pending_write();
  json failed = json::object();
  for (const auto& [kind, count] : c.handshakes_failed) failed[kind] = count;
  return {
      {"connections",
       {{"open", registry.open_count()},
        {"handshaking", handshaking},
        {"ready", ready},
        {"closing", registry.closing_count()},
        {"connecting", registry.connectors().size()}}},
      {"listeners", registry.listeners().size()},
      {"clients", registry.client_count()},
      {"bytes", {{"in", c.bytes_in}, {"out", c.bytes_out}}},
      {"packets", {{"in", c.packets_in}, {"out", c.packets_out}}},
      {"connections_opened", c.connections_opened},
      {"connections_closed", c.connections_closed},
      {"clients_attached", c.clients_attached},
      {"handshakes",
       {{"done", c.handshakes_done},
        {"resumed", c.handshakes_resumed},
        {"evicted", c.handshakes_evicted},
        {"failed", failed}}},
      {"queues",
       {{"client_output_bytes", client_output},
        {"socket_send_bytes", send_buffers},
        {"peer_held_bytes", shared.held_by_peers},
        {"peer_memory_budget", shared.options.peer_memory_budget},
        {"budget_waiters", shared.budget_waiters.size()}}},
      {"tls",
       {{"named_contexts", shared.named_contexts.size()},
        {"sessions_cached", shared.client_sessions.size()},
        {"questions_open", shared.questions.open_count()}}},
      {"memory", {{"rss_bytes", resident_bytes()}}},
  };
}

std::string prometheus_text(const json& s) {
  std::string out;
  out +=
      "# HELP tlsport_connections Connections now, by state.\n"
      "# TYPE tlsport_connections gauge\n";
  for (const char* state : {"open", "handshaking", "ready", "closing", "connecting"})
    sample(out, "tlsport_connections", std::string("state=\"") + state + "\"",
           s["connections"][state].get<std::uint64_t>());
  metric(out, "tlsport_listeners", "gauge", "Listening sockets.", s["listeners"]);
  metric(out, "tlsport_clients", "gauge", "Control clients attached.", s["clients"]);
  metric(out, "tlsport_received_bytes_total", "counter", "Bytes from peers (after TLS).",
         s["bytes"]["in"]);
  metric(out, "tlsport_sent_bytes_total", "counter", "Bytes to peers (before TLS).",
         s["bytes"]["out"]);
  metric(out, "tlsport_received_packets_total", "counter", "Packets handed to clients.",
         s["packets"]["in"]);
  metric(out, "tlsport_sent_packets_total", "counter", "Packets delivered by clients.",
         s["packets"]["out"]);
  metric(out, "tlsport_connections_opened_total", "counter", "Connections handed to a client.",
         s["connections_opened"]);
  metric(out, "tlsport_connections_closed_total", "counter",
         "Connections that ended after being handed to a client.", s["connections_closed"]);
  metric(out, "tlsport_handshakes_total", "counter", "TLS handshakes completed.",
         s["handshakes"]["done"]);
  metric(out, "tlsport_handshakes_resumed_total", "counter",
         "TLS handshakes that resumed a session.", s["handshakes"]["resumed"]);
  metric(out, "tlsport_handshakes_evicted_total", "counter",
         "Handshakes given up to make room for newer ones.", s["handshakes"]["evicted"]);
  out +=
      "# HELP tlsport_handshake_failures_total TLS handshakes that failed, by kind.\n"
      "# TYPE tlsport_handshake_failures_total counter\n";
  for (const auto& [kind, count] : s["handshakes"]["failed"].items())
    sample(out, "tlsport_handshake_failures_total", "kind=\"" + kind + "\"", count);
  metric(out, "tlsport_client_output_bytes", "gauge", "Bytes queued for control clients.",
         s["queues"]["client_output_bytes"]);
  metric(out, "tlsport_socket_send_bytes", "gauge", "Bytes queued for peers.",
         s["queues"]["socket_send_bytes"]);
  metric(out, "tlsport_peer_held_bytes", "gauge", "Partial packets held for peers.",
         s["queues"]["peer_held_bytes"]);
  metric(out, "tlsport_resident_memory_bytes", "gauge", "Resident memory of the daemon.",
         s["memory"]["rss_bytes"]);
  return out;
}

}  // namespace tlsport::daemon
