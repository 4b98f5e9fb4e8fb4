// Registry: the daemon's tables and its ownership checks.
#include "daemon/registry.hpp"

#include "daemon/connection.hpp"
#include "daemon/connector.hpp"
#include "daemon/control_client.hpp"
#include "daemon/listener.hpp"

namespace tlsport::daemon {

void Registry::add_client(std::shared_ptr<ControlClient> client) {
  std::uint32_t number = client->number();
  clients_[number] = std::move(client);
}

std::shared_ptr<ControlClient> Registry::remove_client(std::uint32_t number) {
  auto it = clients_.find(number);
  if (it == clients_.end()) return nullptr;
  auto client = std::move(it->second);
  clients_.erase(it);
  if (!client->name().empty()) client_names_.erase(client->name());
  return client;
}

ControlClient* Registry::client(std::uint32_t number) const {
  auto it = clients_.find(number);
  if (it == clients_.end() || it->second->closed()) return nullptr;
  return it->second.get();
}

ControlClient* Registry::client_named(const std::string& name) const {
  auto it = client_names_.find(name);
  return it == client_names_.end() ? nullptr : client(it->second);
}

std::optional<ErrorInfo> Registry::name_client(ControlClient& client, const std::string& name) {
  auto it = client_names_.find(name);
  if (it != client_names_.end() && it->second != client.number())
    return wire_error(std::errc::address_in_use, "another client is named " + name);
  if (!client.name().empty()) client_names_.erase(client.name());
  client_names_[name] = client.number();
  client.set_name(name);
  return std::nullopt;
}

std::vector<std::shared_ptr<ControlClient>> Registry::clients() const {
  std::vector<std::shared_ptr<ControlClient>> all;
  for (const auto& [number, client] : clients_) all.push_back(client);
  return all;
}

namespace {
/// The next id that is neither a socket nor a listener: ids are not reused
/// while the daemon runs, unless 2^32 of them wrap.
template <class Sockets, class Listeners>
std::uint32_t next_free_id(std::uint32_t& next, const Sockets& sockets,
                           const Listeners& listeners) {
  for (;;) {
    std::uint32_t id = next++;
    if (next == 0) next = 1;
    if (id != 0 && !sockets.count(id) && !listeners.count(id)) return id;
  }
}
}  // namespace

std::uint32_t Registry::add_connection(const std::shared_ptr<Connection>& connection) {
  std::uint32_t id = next_free_id(next_socket_, sockets_, listeners_);
  sockets_[id] = connection;
  return id;
}

std::uint32_t Registry::add_listener(const std::shared_ptr<Listener>& listener) {
  std::uint32_t id = next_free_id(next_socket_, sockets_, listeners_);
  listeners_[id] = listener;
  return id;
}

Listener* Registry::owned_listener(std::uint32_t client, std::uint32_t id, ErrorInfo& error) const {
  auto it = listeners_.find(id);
  if (it == listeners_.end()) {
    error = wire_error(ErrorKind::no_such_socket, "no listener " + std::to_string(id));
    return nullptr;
  }
  if (it->second->owner() != client) {
    error = wire_error(ErrorKind::not_owner,
                       "listener " + std::to_string(id) + " belongs to another client");
    return nullptr;
  }
  return it->second.get();
}

Connection* Registry::owned_connection(std::uint32_t client, std::uint32_t id,
                                       ErrorInfo& error) const {
  auto it = sockets_.find(id);
  if (it == sockets_.end()) {
    error =
        listeners_.count(id)
            ? wire_error(ErrorKind::bad_request, "socket " + std::to_string(id) + " is a listener")
            : wire_error(ErrorKind::no_such_socket, "no socket " + std::to_string(id));
    return nullptr;
  }
  if (it->second->owner() != client) {
    error = wire_error(ErrorKind::not_owner,
                       "socket " + std::to_string(id) + " belongs to another client");
    return nullptr;
  }
  return it->second.get();
}

Registry::OwnedSocket Registry::owned_socket(std::uint32_t client, std::uint32_t id,
                                             ErrorInfo& error) const {
  if (listeners_.count(id)) return {owned_listener(client, id, error), nullptr};
  return {nullptr, owned_connection(client, id, error)};
}

Listener* Registry::listener(std::uint32_t id) const {
  auto it = listeners_.find(id);
  return it == listeners_.end() ? nullptr : it->second.get();
}

std::optional<Registry::Orphans> Registry::take_orphans(const std::string& name) {
  auto it = orphans_.find(name);
  if (it == orphans_.end()) return std::nullopt;
  Orphans orphans = std::move(it->second);
  orphans_.erase(it);
  return orphans;
}

Connection* Registry::connection(std::uint32_t id) const {
  auto it = sockets_.find(id);
  return it == sockets_.end() ? nullptr : it->second.get();
}

std::shared_ptr<Listener> Registry::remove_listener(std::uint32_t id) {
  auto it = listeners_.find(id);
  if (it == listeners_.end()) return nullptr;
  auto listener = std::move(it->second);
  listeners_.erase(it);
  return listener;
}

void Registry::forget_connection(std::uint32_t id) {
  auto it = sockets_.find(id);
  if (it == sockets_.end()) return;
  bool was_full = !has_room_for_socket();
  closing_[it->second.get()] = it->second;
  sockets_.erase(it);
  if (was_full) room_came_back();
}

void Registry::room_came_back() {
  // Listeners stop accepting at the cap: they go on once there is room.
  if (!has_room_for_socket()) return;
  for (auto& listener : listeners()) listener->resume_accepting();
}

void Registry::connection_finished(Connection& connection) {
  bool was_full = !has_room_for_socket();
  auto it = sockets_.find(connection.id());
  if (it != sockets_.end() && it->second.get() == &connection) sockets_.erase(it);
  closing_.erase(&connection);
  if (was_full) room_came_back();
}

void Registry::add_connector(const std::shared_ptr<Connector>& connector) {
  connectors_[connector.get()] = connector;
}

void Registry::remove_connector(Connector* connector) {
  bool was_full = !has_room_for_socket();
  connectors_.erase(connector);
  if (was_full) room_came_back();
}

bool Registry::has_room_for_socket() const {
  // Connections a listener holds (handshaking, or waiting for an accept) count
  // too; listeners are few, so they are summed rather than counted twice.
  std::size_t held = 0;
  for (const auto& [id, listener] : listeners_) held += listener->connections_held();
  return sockets_.size() + listeners_.size() + connectors_.size() + held < max_sockets_;
}

std::vector<std::shared_ptr<Connection>> Registry::connections_of(std::uint32_t client) const {
  std::vector<std::shared_ptr<Connection>> owned;
  for (const auto& [id, connection] : sockets_)
    if (connection->owner() == client) owned.push_back(connection);
  return owned;
}

std::vector<std::shared_ptr<Listener>> Registry::listeners_of(std::uint32_t client) const {
  std::vector<std::shared_ptr<Listener>> owned;
  for (const auto& [id, listener] : listeners_)
    if (listener->owner() == client) owned.push_back(listener);
  return owned;
}

std::vector<std::shared_ptr<Connector>> Registry::connectors_of(std::uint32_t client) const {
  std::vector<std::shared_ptr<Connector>> owned;
  for (const auto& [ptr, connector] : connectors_)
    if (connector->client() == client) owned.push_back(connector);
  return owned;
}

std::vector<std::shared_ptr<Listener>> Registry::listeners() const {
  std::vector<std::shared_ptr<Listener>> all;
  for (const auto& [id, listener] : listeners_) all.push_back(listener);
  return all;
}

std::vector<std::shared_ptr<Connector>> Registry::connectors() const {
  std::vector<std::shared_ptr<Connector>> all;
  for (const auto& [ptr, connector] : connectors_) all.push_back(connector);
  return all;
}

std::vector<std::shared_ptr<Connection>> Registry::connections() const {
  std::vector<std::shared_ptr<Connection>> all;
  for (const auto& [id, connection] : sockets_) all.push_back(connection);
  for (const auto& [ptr, connection] : closing_) all.push_back(connection);
  return all;
}

}  // namespace tlsport::daemon
