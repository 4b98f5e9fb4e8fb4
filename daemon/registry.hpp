// Who is there and who owns what: control clients and their names, sockets
// and listeners by id, connects under way, connections finishing their
// close. Every ownership check of the protocol is made here.
#pragma once

#include <asio/steady_timer.hpp>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/errors.hpp"

namespace tlsport::daemon {

class ControlClient;
class Connection;
class Listener;
class Connector;

/// Ids, clients, names, sockets, listeners, connectors; one per daemon.
class Registry {
 public:
  /// `max_sockets`: the cap on sockets, listeners and connects in progress together.
  explicit Registry(std::size_t max_sockets) : max_sockets_(max_sockets) {}
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // ---- control clients
  /// The number the next client gets.
  std::uint32_t next_client_number() { return next_client_++; }
  void add_client(std::shared_ptr<ControlClient> client);
  /// Takes a client out (its name is free again); null when unknown.
  std::shared_ptr<ControlClient> remove_client(std::uint32_t number);
  /// The client with this number while it is attached and open, else null.
  ControlClient* client(std::uint32_t number) const;
  /// The client with this name, else null.
  ControlClient* client_named(const std::string& name) const;
  /// Names `client`: eaddrinuse when another client has the name.
  std::optional<ErrorInfo> name_client(ControlClient& client, const std::string& name);
  std::size_t client_count() const { return clients_.size(); }
  /// Every attached client.
  std::vector<std::shared_ptr<ControlClient>> clients() const;

  // ---- sockets and listeners
  /// Registers a live connection under a new id and returns it.
  std::uint32_t add_connection(const std::shared_ptr<Connection>& connection);
  /// Registers a listener under a new id and returns it.
  std::uint32_t add_listener(const std::shared_ptr<Listener>& listener);
  /// The listener `id` if `client` owns it; null with `error` otherwise.
  Listener* owned_listener(std::uint32_t client, std::uint32_t id, ErrorInfo& error) const;
  /// The connection `id` if `client` owns it; null with `error` otherwise.
  Connection* owned_connection(std::uint32_t client, std::uint32_t id, ErrorInfo& error) const;
  /// What `id` names, if `client` owns it: a listener or a connection.
  struct OwnedSocket {
    Listener* listener = nullptr;      ///< set when `id` is a listener
    Connection* connection = nullptr;  ///< set when `id` is a connection
  };
  /// Both null, with `error`, when `client` owns no socket `id`.
  OwnedSocket owned_socket(std::uint32_t client, std::uint32_t id, ErrorInfo& error) const;
  /// The connection `id` whoever owns it, or null.
  Connection* connection(std::uint32_t id) const;
  /// The listener `id` whoever owns it, or null.
  Listener* listener(std::uint32_t id) const;

  // ---- sockets kept for a client that died with a grace period
  struct Orphans {
    std::uint32_t from = 0;                      ///< the dead client's number
    std::vector<std::uint32_t> sockets;          ///< its connections and listeners
    std::shared_ptr<asio::steady_timer> expiry;  ///< when they close unclaimed
  };
  void keep_orphans(const std::string& name, Orphans orphans) {
    orphans_[name] = std::move(orphans);
  }
  /// The sockets kept under `name`, taken out; nothing when there are none.
  std::optional<Orphans> take_orphans(const std::string& name);
  /// Takes a listener out; null when unknown.
  std::shared_ptr<Listener> remove_listener(std::uint32_t id);
  /// The id is gone; the connection finishes closing in the background.
  void forget_connection(std::uint32_t id);
  /// A connection is completely closed: it is forgotten everywhere.
  void connection_finished(Connection& connection);

  // ---- connects under way
  void add_connector(const std::shared_ptr<Connector>& connector);
  void remove_connector(Connector* connector);

  /// Open and closing connections.
  std::size_t connection_count() const { return sockets_.size() + closing_.size(); }
  std::size_t open_count() const { return sockets_.size(); }
  std::size_t closing_count() const { return closing_.size(); }
  /// False when the socket cap is reached.
  bool has_room_for_socket() const;

  // ---- what one client owns, and everything (for shutdown)
  std::vector<std::shared_ptr<Connection>> connections_of(std::uint32_t client) const;
  std::vector<std::shared_ptr<Listener>> listeners_of(std::uint32_t client) const;
  std::vector<std::shared_ptr<Connector>> connectors_of(std::uint32_t client) const;
  std::vector<std::shared_ptr<Listener>> listeners() const;
  std::vector<std::shared_ptr<Connector>> connectors() const;
  /// Open and closing connections.
  std::vector<std::shared_ptr<Connection>> connections() const;

 private:
  /// Wakes listeners that stopped at the socket cap, if there is room now.
  void room_came_back();

  std::size_t max_sockets_;                                          ///< the socket cap
  std::map<std::uint32_t, std::shared_ptr<ControlClient>> clients_;  ///< by number
  std::map<std::string, std::uint32_t> client_names_;                ///< names given in hello
  std::unordered_map<std::uint32_t, std::shared_ptr<Connection>> sockets_;  ///< open, by id
  std::unordered_map<std::uint32_t, std::shared_ptr<Listener>> listeners_;  ///< by id
  std::unordered_map<Connection*, std::shared_ptr<Connection>> closing_;    ///< ids gone
  std::unordered_map<Connector*, std::shared_ptr<Connector>> connectors_;
  std::map<std::string, Orphans> orphans_;  ///< by the dead client's name   ///< connects under way
  std::uint32_t next_client_ = 1;           ///< number of the next client
  std::uint32_t next_socket_ = 1;           ///< id of the next socket
};

}  // namespace tlsport::daemon
