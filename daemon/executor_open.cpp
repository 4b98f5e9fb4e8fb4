// Executor: the commands that open sockets (listen, accept, cancel, connect).
#include <asio/ip/address.hpp>

#include "daemon/connector.hpp"
#include "daemon/control_client.hpp"
#include "daemon/executor.hpp"
#include "daemon/listener.hpp"
#include "daemon/shared.hpp"
#include "daemon/verdicts.hpp"
#include "protocol/messages.hpp"

namespace tlsport::daemon {

using nlohmann::json;
using protocol::TlsChoice;

namespace {
/// Cap on outstanding accepts per listener.
constexpr std::size_t kMaxPendingAccepts = 4096;

const ErrorInfo& too_many_sockets() {
  static const ErrorInfo error = wire_error(ErrorKind::overloaded, "too many sockets open");
  return error;
}

/// A bound, listening acceptor for `cmd`; `ec` says why not.
asio::ip::tcp::acceptor open_acceptor(asio::io_context& io, const protocol::ListenCommand& cmd,
                                      std::error_code& ec) {
  asio::ip::tcp::endpoint endpoint(asio::ip::make_address(cmd.host, ec), cmd.port);
  asio::ip::tcp::acceptor acceptor(io);
  if (!ec) acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  // The kernel's queue is as long as it allows: the daemon accepts eagerly
  // and applies its own bounds; `backlog` bounds handshaken connections
  // waiting for an accept.
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (!ec) acceptor.non_blocking(true, ec);
  return acceptor;
}
}  // namespace

void Executor::run(Call call, protocol::ListenCommand& cmd) {
  if (!shared_.registry.has_room_for_socket()) {
    fail(call, too_many_sockets());
    return;
  }
  ListenSettings settings;
  settings.framing = cmd.framing;
  settings.packet_size = cmd.packet_size;
  Timeouts t = timeouts_for(cmd.timeouts);
  settings.handshake_timeout = t.handshake;
  settings.idle_timeout = t.idle;
  settings.close_timeout = t.close;
  settings.backlog = cmd.backlog;
  settings.active = cmd.active.value_or(ActiveMode{});
  // Without tls, every accept brings its own (seed 004: SSLFlags on accept).
  settings.tls_per_accept = cmd.tls.kind == TlsChoice::Kind::absent;
  if (!settings.tls_per_accept) {
    // One context per listener: its files are read now, errors reported now.
    Picked picked;
    if (pick_context(
            call, cmd.tls, TlsRole::server, Source::own, [&] { return protocol::Command(cmd); },
            picked) != Pick::ok)
      return;
    settings.ctx = picked.ctx;
    if (picked.settings != nullptr) {
      settings.log_file = picked.settings->logfile;
      settings.verdict_timeout = callback_timeout_of(*picked.settings);
    }
    if (cmd.tls.kind == TlsChoice::Kind::named)
      settings.context_name = cmd.tls.name;
    else if (cmd.tls.kind == TlsChoice::Kind::tls)
      settings.tls = cmd.tls.settings;
  }
  std::error_code ec;
  asio::ip::tcp::acceptor acceptor = open_acceptor(shared_.io, cmd, ec);
  if (ec) {
    fail(call, classify(ec));
    return;
  }
  auto listener = std::make_shared<Listener>(shared_, std::move(acceptor), std::move(settings));
  std::uint32_t id = shared_.registry.add_listener(listener);
  listener->set_id(id);
  listener->set_owner(call.client.number());
  ok(call, {{"id", id}, {"port", listener->port()}});
  listener->start();
}

void Executor::run(Call call, protocol::AcceptCommand& cmd) {
  ErrorInfo error;
  Listener* listener = shared_.registry.owned_listener(call.client.number(), cmd.id, error);
  if (listener == nullptr) {
    fail(call, error);
    return;
  }
  AcceptTls accept_tls;
  if (cmd.tls.kind != TlsChoice::Kind::absent) {
    // Accepts usually repeat the same flags: the cache keeps one context each.
    Picked picked;
    if (pick_context(
            call, cmd.tls, TlsRole::server, Source::server_cache,
            [&] { return protocol::Command(cmd); }, picked) != Pick::ok)
      return;
    accept_tls.given = true;
    accept_tls.ctx = picked.ctx;
    if (picked.settings != nullptr) {
      accept_tls.log_file = picked.settings->logfile;
      accept_tls.verdict_timeout = callback_timeout_of(*picked.settings);
    }
  } else if (listener->tls_per_accept()) {
    fail(call, wire_error(ErrorKind::bad_request,
                          "this listener was opened without tls: accept needs tls (an object, "
                          "or false)"));
    return;
  }
  accept_tls.timeouts = cmd.timeouts;
  if (listener->pending_accepts() >= kMaxPendingAccepts) {
    fail(call, wire_error(ErrorKind::overloaded, "more than " + std::to_string(kMaxPendingAccepts) +
                                                     " accepts outstanding"));
    return;
  }
  listener->add_accept(call.client.number(), call.ref, std::move(accept_tls), cmd.active);
}

void Executor::run(Call call, protocol::CancelCommand& cmd) {
  for (auto& listener : shared_.registry.listeners()) {
    if (listener->cancel(call.client.number(), cmd.target)) {
      ok(call);
      return;
    }
  }
  fail(call, wire_error(std::errc::no_such_file_or_directory,
                        "no outstanding accept with ref " + cmd.target.dump()));
}

void Executor::run(Call call, protocol::ConnectCommand& cmd) {
  if (!shared_.registry.has_room_for_socket()) {
    fail(call, too_many_sockets());
    return;
  }
  ConnectRequest request;
  // No tls field means secure defaults: TLS, verified against the system store.
  if (cmd.tls.kind == TlsChoice::Kind::absent) cmd.tls.kind = TlsChoice::Kind::tls;
  Picked picked;
  if (pick_context(
          call, cmd.tls, TlsRole::client, Source::client_cache,
          [&] { return protocol::Command(cmd); }, picked) != Pick::ok)
    return;
  request.ctx = picked.ctx;
  if (picked.settings != nullptr) request.settings = *picked.settings;
  Timeouts t = timeouts_for(cmd.timeouts);
  request.handshake_timeout = t.handshake;
  request.idle_timeout = t.idle;
  request.close_timeout = t.close;
  if (request.settings.verify_callback)
    request.ask_verdict = ask_client_verdict(shared_, call.client.number(), call.ref,
                                             callback_timeout_of(request.settings));
  request.client = call.client.number();
  request.ref = call.ref;
  request.command = std::move(cmd);
  auto connector = std::make_shared<Connector>(shared_, std::move(request));
  shared_.registry.add_connector(connector);
  connector->start();
}

}  // namespace tlsport::daemon
