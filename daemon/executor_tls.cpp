// Executor: TLS contexts (named, cached, built; passphrases asked of the
// client) and the commands on a connection's TLS (starttls, stoptls,
// inject_ca, ciphers), and answers to the daemon's questions.
#include <type_traits>

#include "daemon/connection.hpp"
#include "daemon/control_client.hpp"
#include "daemon/executor.hpp"
#include "daemon/shared.hpp"
#include "daemon/tls_files.hpp"
#include "daemon/tls_inspect.hpp"
#include "daemon/verdicts.hpp"
#include "protocol/messages.hpp"

namespace tlsport::daemon {

using nlohmann::json;
using protocol::TlsChoice;
using std::chrono::milliseconds;

namespace {

/// Most contexts defined with tls_context.
constexpr std::size_t kMaxNamedContexts = 1024;

/// The TLS settings inside a command, if it has any.
protocol::TlsSettings* settings_in(protocol::Command& command) {
  return std::visit(
      [](auto& cmd) -> protocol::TlsSettings* {
        using T = std::decay_t<decltype(cmd)>;
        if constexpr (std::is_same_v<T, protocol::TlsContextCommand>) {
          return &cmd.settings;
        } else if constexpr (std::is_same_v<T, protocol::ListenCommand> ||
                             std::is_same_v<T, protocol::AcceptCommand> ||
                             std::is_same_v<T, protocol::ConnectCommand> ||
                             std::is_same_v<T, protocol::StarttlsCommand>) {
          return &cmd.tls.settings;
        } else {
          return nullptr;
        }
      },
      command);
}

}  // namespace

Executor::Timeouts Executor::timeouts_for(const protocol::SocketTimeouts& given) const {
  const Options& o = shared_.options;
  return {given.handshake.value_or(milliseconds(o.handshake_timeout_ms)),
          given.idle.value_or(milliseconds(o.idle_timeout_ms)),
          given.close.value_or(milliseconds(o.close_timeout_ms))};
}

Executor::Pick Executor::pick_context(Call call, TlsChoice& choice, TlsRole role, Source source,
                                      const std::function<protocol::Command()>& retry,
                                      Picked& out) {
  out = Picked{nullptr, nullptr};
  if (choice.kind == TlsChoice::Kind::plain) return Pick::ok;
  if (choice.kind == TlsChoice::Kind::named) {
    auto it = shared_.named_contexts.find(choice.name);
    if (it == shared_.named_contexts.end()) {
      fail(call, wire_error(ErrorKind::bad_request, "no tls_context is named " + choice.name));
      return Pick::failed;
    }
    out.ctx = role == TlsRole::server ? it->second.server : it->second.client;
    out.settings = &it->second.settings;
    if (!out.ctx) {
      fail(call, wire_error(ErrorKind::bad_tls_config,
                            "tls_context " + choice.name + " has no certificate: it cannot serve"));
      return Pick::failed;
    }
    return Pick::ok;
  }
  protocol::TlsSettings& settings = choice.settings;
  ErrorInfo error;
  BuildNeeds needs;
  if (source == Source::client_cache)
    out.ctx = shared_.client_contexts.get(settings, error, &needs);
  else if (source == Source::server_cache)
    out.ctx = shared_.server_contexts.get(settings, error, &needs);
  else
    out.ctx = build_context(settings, role, error, &needs);
  out.settings = &settings;
  if (out.ctx) return Pick::ok;
  if (needs.password && settings.ask_password) {
    ask_password(call, retry(), needs.key_source, callback_timeout_of(settings));
    return Pick::waiting;
  }
  fail(call, error);
  return Pick::failed;
}

void Executor::ask_password(Call call, protocol::Command command, const std::string& key_source,
                            milliseconds timeout) {
  json event = {{"event", "password_needed"}, {"source", key_source}};
  if (!call.ref.is_null()) event["ref"] = call.ref;
  std::uint32_t number = call.client.number();
  json ref = call.ref;
  auto on_answer = [this, number, ref, key_source, timeout,
                    command = std::move(command)](const protocol::AnswerCommand* answer) mutable {
    ControlClient* client = shared_.registry.client(number);
    if (client == nullptr) return;
    if (answer == nullptr || !answer->password) {
      client->send(protocol::error_reply(
          ref, wire_error(ErrorKind::timeout, "no password for the private key in " + key_source +
                                                  " within " + std::to_string(timeout.count()) +
                                                  " ms")));
      return;
    }
    protocol::TlsSettings* settings = settings_in(command);
    settings->password = *answer->password;
    settings->ask_password = false;  // a wrong one is an error, not a second question
    execute(*client, ref, command);
  };
  if (!shared_.questions.ask(number, event, timeout, std::move(on_answer)))
    fail(call, wire_error(ErrorKind::overloaded, "too many questions open"));
}

void Executor::run(Call call, protocol::TlsContextCommand& cmd) {
  bool exists = shared_.named_contexts.count(cmd.name) != 0;
  if (!exists && shared_.named_contexts.size() >= kMaxNamedContexts) {
    fail(call, wire_error(ErrorKind::overloaded,
                          "more than " + std::to_string(kMaxNamedContexts) + " tls_contexts"));
    return;
  }
  NamedContext named;
  named.settings = cmd.settings;
  ErrorInfo error;
  BuildNeeds needs;
  named.client =
      build_context(cmd.settings, TlsRole::client, error, &needs, &shared_.client_sessions);
  if (named.client && cmd.settings.has_identity())
    named.server = build_context(cmd.settings, TlsRole::server, error, &needs);
  if (!named.client || (cmd.settings.has_identity() && !named.server)) {
    if (needs.password && cmd.settings.ask_password)
      ask_password(call, cmd, needs.key_source, callback_timeout_of(cmd.settings));
    else
      fail(call, error);
    return;
  }
  bool serves = named.server != nullptr;
  // Live connections keep the contexts they were made with.
  shared_.named_contexts[cmd.name] = std::move(named);
  ok(call, {{"name", cmd.name}, {"server", serves}, {"replaced", exists}});
}

void Executor::run(Call call, protocol::StarttlsCommand& cmd) {
  Connection* conn = owned_connection(call, cmd.id);
  if (conn == nullptr) return;
  if (cmd.tls.kind == TlsChoice::Kind::absent) cmd.tls.kind = TlsChoice::Kind::tls;
  Picked picked;
  Source source = cmd.side == TlsRole::client ? Source::client_cache : Source::server_cache;
  if (pick_context(
          call, cmd.tls, cmd.side, source, [&] { return protocol::Command(cmd); }, picked) !=
      Pick::ok)
    return;
  ErrorInfo error;
  SslPtr ssl = new_ssl(picked.ctx, cmd.side, error);
  if (!ssl) {
    fail(call, error);
    return;
  }
  const protocol::TlsSettings& settings = *picked.settings;
  if (cmd.side == TlsRole::client)
    configure_client_ssl(ssl.get(), settings, conn->peer_host(), conn->peer_port(),
                         &shared_.client_sessions);
  Timeouts t = timeouts_for(cmd.timeouts);
  std::uint32_t number = call.client.number(), id = cmd.id;
  json ref = call.ref;
  bool judge_server_side = cmd.side == TlsRole::server && settings.verify_callback;
  milliseconds judge_timeout = callback_timeout_of(settings);
  auto done = [this, number, id, ref, t, judge_server_side,
               judge_timeout](const std::optional<ErrorInfo>& outcome) {
    ControlClient* client = shared_.registry.client(number);
    Connection* conn = shared_.registry.connection(id);
    if (outcome || conn == nullptr) {
      ErrorInfo error = outcome.value_or(wire_error(ErrorKind::closed, "the socket closed"));
      if (client == nullptr) return;
      client->send(protocol::error_reply(ref, error));
      client->send(protocol::socket_closed_event(id, &error));
      return;
    }
    conn->set_timeouts(t.idle, t.close);
    if (!judge_server_side) {
      if (client != nullptr) client->send(protocol::ok_reply(ref, {{"id", id}}));
      return;
    }
    ask_server_verdict(shared_, number, {{"ref", ref}, {"id", id}}, *conn, judge_timeout,
                       [this, number, id, ref](bool accept) {
                         ControlClient* client = shared_.registry.client(number);
                         Connection* conn = shared_.registry.connection(id);
                         if (conn != nullptr && accept) {
                           if (client != nullptr)
                             client->send(protocol::ok_reply(ref, {{"id", id}}));
                           return;
                         }
                         ErrorInfo rejected =
                             wire_error(ErrorKind::tls, "peer certificate rejected by the client");
                         if (conn != nullptr) conn->abort();
                         if (client == nullptr) return;
                         client->send(protocol::error_reply(ref, rejected));
                         client->send(protocol::socket_closed_event(id, &rejected));
                       });
  };
  Connection::AskVerdict ask;
  if (cmd.side == TlsRole::client && settings.verify_callback)
    ask = ask_client_verdict(shared_, number, ref, callback_timeout_of(settings));
  if (auto failure = conn->start_tls(std::move(ssl), t.handshake, std::move(done), std::move(ask)))
    fail(call, *failure);
}

void Executor::run(Call call, protocol::StoptlsCommand& cmd) {
  Connection* conn = owned_connection(call, cmd.id);
  if (conn == nullptr) return;
  std::uint32_t number = call.client.number(), id = cmd.id;
  json ref = call.ref;
  auto done = [this, number, id, ref](const std::optional<ErrorInfo>& outcome) {
    ControlClient* client = shared_.registry.client(number);
    if (client == nullptr) return;
    client->send(outcome ? protocol::error_reply(ref, *outcome)
                         : protocol::ok_reply(ref, {{"id", id}}));
  };
  milliseconds timeout = cmd.timeout.value_or(milliseconds(shared_.options.close_timeout_ms));
  if (auto failure = conn->stop_tls(timeout, std::move(done))) fail(call, *failure);
}

void Executor::run(Call call, protocol::InjectCaCommand& cmd) {
  Connection* conn = owned_connection(call, cmd.id);
  if (conn == nullptr) return;
  if (conn->ssl() == nullptr) {
    fail(call,
         wire_error(ErrorKind::bad_request, "socket " + std::to_string(cmd.id) + " speaks no TLS"));
    return;
  }
  std::string text = cmd.cacert, source = "inline cacert";
  ErrorInfo error;
  if (!cmd.cacertfile.empty()) {
    source = "CA file " + cmd.cacertfile;
    if (!read_tls_file(cmd.cacertfile, "CA", text, error)) {
      fail(call, error);
      return;
    }
  }
  if (!inject_ca_and_verify(conn->ssl(), text, source, error)) {
    fail(call, error);
    return;
  }
  ok(call, {{"verify_result", verify_result(conn->ssl())}});
}

void Executor::run(Call call, protocol::CiphersCommand& cmd) {
  Connection* conn = owned_connection(call, cmd.id);
  if (conn == nullptr) return;
  if (conn->ssl() == nullptr) {
    fail(call,
         wire_error(ErrorKind::bad_request, "socket " + std::to_string(cmd.id) + " speaks no TLS"));
    return;
  }
  ok(call, {{"ciphers", supported_ciphers(conn->ssl())}});
}

void Executor::run(Call call, protocol::AnswerCommand& cmd) {
  if (!shared_.questions.answer(call.client.number(), cmd)) {
    fail(call, wire_error(ErrorKind::bad_request,
                          "no open question numbered " + std::to_string(cmd.request)));
    return;
  }
  ok(call);
}

}  // namespace tlsport::daemon
