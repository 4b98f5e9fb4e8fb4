// Executor: dispatch, and the commands on existing sockets and on the
// client itself. Opening sockets (listen, accept, connect) is in
// executor_open.cpp.
#include "daemon/executor.hpp"

#include <unistd.h>

#include <asio/ip/tcp.hpp>
#include <asio/post.hpp>

#include "daemon/connection.hpp"
#include "daemon/control_client.hpp"
#include "daemon/listener.hpp"
#include "daemon/shared.hpp"
#include "daemon/version.hpp"
#include "protocol/messages.hpp"

namespace tlsport::daemon {

using nlohmann::json;

/// What a client can test in hello before relying on it.
static const char* const kCapabilities[] = {"lines",
                                            "binary",
                                            "etf",
                                            "json",
                                            "tls",
                                            "asn1",
                                            "line",
                                            "active",
                                            "recv",
                                            "unix",
                                            "ipv6",
                                            "strict_fields",
                                            "verify_hostname_false",
                                            "starttls",
                                            "inspect",
                                            "inline_keys",
                                            "ask_password",
                                            "verify_callback",
                                            "sni",
                                            "alpn",
                                            "session_reuse",
                                            "ticket_keys",
                                            "tls_context",
                                            "crl",
                                            "ocsp",
                                            "keylog",
                                            "stats",
                                            "reload",
                                            "grace",
                                            "dhe",
                                            "timeouts"};

void Executor::execute(ControlClient& client, const json& ref, protocol::Command& command) {
  Call call{client, ref};
  std::visit([this, call](auto& cmd) { run(call, cmd); }, command);
}

void Executor::ok(Call call, json body) {
  call.client.send(protocol::ok_reply(call.ref, std::move(body)));
}

void Executor::fail(Call call, const ErrorInfo& error) {
  call.client.send(protocol::error_reply(call.ref, error));
}

Connection* Executor::owned_connection(Call call, std::uint32_t id) {
  ErrorInfo error;
  Connection* conn = shared_.registry.owned_connection(call.client.number(), id, error);
  if (conn == nullptr) fail(call, error);
  return conn;
}

Registry::OwnedSocket Executor::owned_socket(Call call, std::uint32_t id) {
  ErrorInfo error;
  Registry::OwnedSocket owned = shared_.registry.owned_socket(call.client.number(), id, error);
  if (owned.listener == nullptr && owned.connection == nullptr) fail(call, error);
  return owned;
}

void Executor::deliver(ControlClient& client, std::uint32_t id, std::string_view data,
                       const json& ref) {
  // Only connections take data: any other id is no_such_socket here.
  ErrorInfo error = wire_error(ErrorKind::no_such_socket,
                               "deliver to socket " + std::to_string(id) + ": no such socket");
  Connection* conn = shared_.registry.connection(id);
  if (conn != nullptr && conn->owner() != client.number()) {
    error = wire_error(ErrorKind::not_owner,
                       "deliver to socket " + std::to_string(id) + ": belongs to another client");
    conn = nullptr;
  }
  bool over = false;
  if (conn != nullptr) {
    if (auto failure = conn->deliver(data, over)) {
      error = std::move(*failure);
      conn = nullptr;
    }
  }
  if (conn == nullptr) {
    client.send(protocol::deliver_error_reply(id, ref, error));
    return;
  }
  if (over) {
    // The peer reads slowly: stop taking commands from this client until it drains.
    conn->block_client(client.number());
    client.pause_input();
  }
  if (!ref.is_null()) client.send(protocol::ok_reply(ref));
}

void Executor::run(Call call, protocol::HelloCommand& cmd) {
  if (cmd.name) {
    if (auto error = shared_.registry.name_client(call.client, *cmd.name)) {
      fail(call, *error);
      return;
    }
  }
  if (cmd.grace)
    call.client.set_grace(
        std::min(*cmd.grace, std::chrono::milliseconds(shared_.options.max_grace_ms)));
  json body = {{"version", kVersion},
               {"protocol", kProtocolVersion},
               {"client", call.client.number()},
               {"capabilities", kCapabilities}};
  if (!call.client.name().empty()) body["name"] = call.client.name();
  json reply = protocol::ok_reply(call.ref, body);
  if (!call.client.fits(reply)) {
    // A --packet 1 frame holds 255 bytes: the list is left out, and said so.
    body.erase("capabilities");
    body["capabilities_omitted"] = true;
  }
  if (call.client.grace().count() > 0) body["grace_ms"] = call.client.grace().count();
  ok(call, std::move(body));
  if (cmd.name) adopt_orphans(call.client);
}

void Executor::adopt_orphans(ControlClient& client) {
  auto orphans = shared_.registry.take_orphans(client.name());
  if (!orphans) return;
  orphans->expiry->cancel();
  protocol::OwnedFacts facts;
  facts.from = orphans->from;
  facts.from_name = client.name();
  for (std::uint32_t id : orphans->sockets) {
    facts.id = id;
    if (Listener* listener = shared_.registry.listener(id)) {
      listener->set_owner(client.number());
      facts.listener = true;
      facts.endpoint = listener->endpoint();
    } else if (Connection* conn = shared_.registry.connection(id)) {
      facts.listener = false;
      facts.mode = protocol::framing_name(conn->framing());
      facts.busy = conn->busy();
      facts.endpoint = conn->endpoint(true);
      // The event goes out before anything the socket reads for its new owner.
      client.send(protocol::owned_event(facts));
      conn->set_owner(client.number());
      continue;
    } else {
      continue;  // closed meanwhile (a peer's reset)
    }
    client.send(protocol::owned_event(facts));
  }
}

void Executor::run(Call call, protocol::DeliverCommand& cmd) {
  deliver(call.client, cmd.id, cmd.data, call.ref);
}

void Executor::run(Call call, protocol::CloseCommand& cmd) {
  Registry::OwnedSocket owned = owned_socket(call, cmd.id);
  if (owned.listener != nullptr) {
    shared_.registry.remove_listener(cmd.id)->close();
  } else if (owned.connection != nullptr) {
    auto keep = owned.connection->shared_from_this();
    shared_.registry.forget_connection(cmd.id);
    keep->close_orderly();
  } else {
    return;
  }
  ok(call);
}

void Executor::run(Call call, protocol::ControllingProcessCommand& cmd) {
  ControlClient* target = nullptr;
  if (const auto* name = std::get_if<std::string>(&cmd.to)) {
    target = shared_.registry.client_named(*name);
    if (target == nullptr) {
      fail(call, wire_error(ErrorKind::no_such_client, "no client is named " + *name));
      return;
    }
  } else {
    std::uint32_t number = std::get<std::uint32_t>(cmd.to);
    target = shared_.registry.client(number);
    if (target == nullptr) {
      fail(call, wire_error(ErrorKind::no_such_client, "no client " + std::to_string(number)));
      return;
    }
  }
  protocol::OwnedFacts facts;
  facts.id = cmd.id;
  facts.from = call.client.number();
  facts.from_name = call.client.name();
  bool same = target == &call.client;
  Registry::OwnedSocket owned = owned_socket(call, cmd.id);
  if (Listener* listener = owned.listener) {
    listener->drop_accepts(facts.from, wire_error(ErrorKind::cancelled, "listener handed over"));
    listener->set_owner(target->number());
    facts.listener = true;
    facts.endpoint = listener->endpoint();
    ok(call);
    if (!same) target->send(protocol::owned_event(facts));
    return;
  }
  Connection* conn = owned.connection;
  if (conn == nullptr) return;
  // The old owner's reply and the new owner's event are queued at the same
  // moment: every event before belongs to the old owner, every one after to the new.
  ok(call);
  if (same) return;
  conn->set_owner(target->number());
  facts.mode = protocol::framing_name(conn->framing());
  facts.busy = conn->busy();
  facts.endpoint = conn->endpoint(true);
  target->send(protocol::owned_event(facts));
}

void Executor::run(Call call, protocol::SetoptsCommand& cmd) {
  Connection* conn = owned_connection(call, cmd.id);
  if (conn == nullptr) return;
  if (cmd.packet_size) conn->set_packet_size(*cmd.packet_size);
  if (cmd.active) conn->set_active(*cmd.active);
  ok(call);
}

void Executor::run(Call call, protocol::RecvCommand& cmd) {
  Connection* conn = owned_connection(call, cmd.id);
  if (conn == nullptr) return;
  if (auto error = conn->recv(call.client.number(), call.ref, cmd.timeout)) fail(call, *error);
}

void Executor::run(Call call, protocol::PeernameCommand& cmd) {
  Connection* conn = owned_connection(call, cmd.id);
  if (conn == nullptr) return;
  json ep = conn->endpoint(true);
  if (ep.is_null())
    fail(call, wire_error(std::errc::not_connected, "socket is not connected"));
  else
    ok(call, std::move(ep));
}

void Executor::run(Call call, protocol::SocknameCommand& cmd) {
  Registry::OwnedSocket owned = owned_socket(call, cmd.id);
  if (owned.listener != nullptr)
    ok(call, owned.listener->endpoint());
  else if (owned.connection != nullptr)
    ok(call, owned.connection->endpoint(false));
}

void Executor::run(Call call, protocol::InfoCommand& cmd) {
  Connection* conn = owned_connection(call, cmd.id);
  if (conn == nullptr) return;
  json body = conn->info();
  body["peer"] = conn->endpoint(true);
  body["sockname"] = conn->endpoint(false);
  ok(call, std::move(body));
}

void Executor::run(Call call, protocol::ResolveCommand& cmd) {
  resolve_address(call, cmd.address.value_or(""));
}

void Executor::resolve_address(Call call, const std::string& address) {
  if (lookups_.size() >= kMaxLookups) {
    fail(call, wire_error(ErrorKind::overloaded,
                          std::to_string(kMaxLookups) + " name lookups are under way"));
    return;
  }
  std::string host = address;
  if (address.empty()) {
    char name[256] = {0};
    if (::gethostname(name, sizeof name - 1) != 0) {
      fail(call, classify(std::error_code(errno, std::system_category())));
      return;
    }
    host = name;
  }
  auto resolver = std::make_shared<asio::ip::tcp::resolver>(shared_.io);
  std::uint64_t serial = next_lookup_++;
  lookups_.emplace(serial, std::make_pair(call.client.number(), call.ref));
  auto answer = [this, resolver, serial, address, host](
                    const std::error_code& ec, asio::ip::tcp::resolver::results_type results) {
    auto waiting = lookups_.find(serial);
    if (waiting == lookups_.end()) return;  // answered already: the daemon is stopping
    auto [number, ref] = std::move(waiting->second);
    lookups_.erase(waiting);
    ControlClient* client = shared_.registry.client(number);
    if (client == nullptr) return;
    std::string found = !ec && !results.empty() ? results.begin()->host_name() : "";
    if (found.empty()) {
      if (auto error = out_of_descriptors()) {
        client->send(protocol::error_reply(ref, *error));
        return;
      }
    }
    if (address.empty()) {
      // The official name is the canonical one; without DNS it is the host name itself.
      client->send(protocol::ok_reply(ref, {{"name", found.empty() ? host : found}}));
    } else if (found.empty() || found == address) {
      client->send(protocol::error_reply(
          ref, wire_error(std::errc::no_such_file_or_directory, "no host name for " + address)));
    } else {
      client->send(protocol::ok_reply(ref, {{"name", found}}));
    }
  };
  if (address.empty()) {
    resolver->async_resolve(host, "", asio::ip::tcp::resolver::canonical_name, std::move(answer));
  } else {
    std::error_code ec;
    resolver->async_resolve(asio::ip::tcp::endpoint(asio::ip::make_address(address, ec), 0),
                            std::move(answer));
  }
}

void Executor::answer_lookups(const ErrorInfo& error) {
  auto lookups = std::move(lookups_);
  lookups_.clear();
  for (auto& [serial, waiting] : lookups) {
    if (ControlClient* client = shared_.registry.client(waiting.first))
      client->send(protocol::error_reply(waiting.second, error));
  }
}

void Executor::run(Call call, protocol::StatsCommand&) { ok(call, stats_snapshot(shared_)); }

void Executor::run(Call call, protocol::ReloadCommand&) {
  if (auto error = reload_())
    fail(call, *error);
  else
    ok(call);
}

void Executor::run(Call call, protocol::StopCommand&) {
  ok(call);
  asio::post(shared_.io, stop_);
}

}  // namespace tlsport::daemon
