// Carries out typed commands (protocol/commands.hpp) for one client at a
// time: each command's checks against the registry, its effect, its reply.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "daemon/errors.hpp"
#include "daemon/registry.hpp"
#include "daemon/tls_context.hpp"
#include "protocol/commands.hpp"

namespace tlsport::daemon {

struct Shared;
class ControlClient;

/// The commands of docs/protocol.md §2.1, carried out.
class Executor {
 public:
  /// Reloads TLS material; the error when nothing was changed.
  using Reload = std::function<std::optional<ErrorInfo>()>;
  /// `stop`: what the stop command does after its reply (ends the daemon);
  /// `reload`: what reload does (the daemon's, shared with SIGHUP).
  Executor(Shared& shared, std::function<void()> stop, Reload reload)
      : shared_(shared), stop_(std::move(stop)), reload_(std::move(reload)) {}
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  /// Carries out `command` for `client`; every reply goes to `client`.
  void execute(ControlClient& client, const nlohmann::json& ref, protocol::Command& command);
  /// Queues bytes for a socket (a DATA frame, or deliver); `ref` may be null.
  void deliver(ControlClient& client, std::uint32_t id, std::string_view data,
               const nlohmann::json& ref);

  /// Answers every name lookup still under way with `error` (the daemon
  /// stops: each command still gets its one reply).
  void answer_lookups(const ErrorInfo& error);

  /// The command being carried out, for the handlers.
  struct Call {
    ControlClient& client;      ///< who sent it
    const nlohmann::json& ref;  ///< its ref (null when none)
  };

  void run(Call call, protocol::HelloCommand& cmd);
  void run(Call call, protocol::ListenCommand& cmd);
  void run(Call call, protocol::AcceptCommand& cmd);
  void run(Call call, protocol::CancelCommand& cmd);
  void run(Call call, protocol::ConnectCommand& cmd);
  void run(Call call, protocol::DeliverCommand& cmd);
  void run(Call call, protocol::CloseCommand& cmd);
  void run(Call call, protocol::ControllingProcessCommand& cmd);
  void run(Call call, protocol::SetoptsCommand& cmd);
  void run(Call call, protocol::RecvCommand& cmd);
  void run(Call call, protocol::PeernameCommand& cmd);
  void run(Call call, protocol::SocknameCommand& cmd);
  void run(Call call, protocol::InfoCommand& cmd);
  void run(Call call, protocol::ResolveCommand& cmd);
  void run(Call call, protocol::StopCommand& cmd);
  void run(Call call, protocol::TlsContextCommand& cmd);
  void run(Call call, protocol::StarttlsCommand& cmd);
  void run(Call call, protocol::StoptlsCommand& cmd);
  void run(Call call, protocol::InjectCaCommand& cmd);
  void run(Call call, protocol::CiphersCommand& cmd);
  void run(Call call, protocol::AnswerCommand& cmd);
  void run(Call call, protocol::StatsCommand& cmd);
  void run(Call call, protocol::ReloadCommand& cmd);

 private:
  /// The context a `tls` field gives: ok (ctx null for plain TCP), failed
  /// (the error was replied), or waiting (the client is asked for a
  /// passphrase; the command runs again with it).
  enum class Pick { ok, failed, waiting };
  /// What pick_context() found.
  struct Picked {
    SslCtxPtr ctx;                          ///< null: plain TCP
    const protocol::TlsSettings* settings;  ///< the settings behind it (for clients, logs)
  };
  /// How a fresh context is had: from a cache, or built for one listener.
  enum class Source { client_cache, server_cache, own };
  /// Finds or builds the context `choice` asks for, as `role`. `retry` is the
  /// command to run again once a passphrase comes.
  Pick pick_context(Call call, protocol::TlsChoice& choice, TlsRole role, Source source,
                    const std::function<protocol::Command()>& retry, Picked& out);
  /// Asks the client for a key's passphrase, then runs `command` again.
  void ask_password(Call call, protocol::Command command, const std::string& key_source,
                    std::chrono::milliseconds timeout);
  /// The timeouts a socket gets: the command's, else the daemon's defaults.
  struct Timeouts {
    std::chrono::milliseconds handshake, idle, close;
  };
  Timeouts timeouts_for(const protocol::SocketTimeouts& given) const;

  /// Replies ok with `body`.
  static void ok(Call call, nlohmann::json body = nlohmann::json::object());
  /// Replies an error.
  static void fail(Call call, const ErrorInfo& error);
  /// The connection `id` if the caller owns it; else replies the error and returns null.
  class Connection* owned_connection(Call call, std::uint32_t id);
  /// The listener or connection `id` if the caller owns it; else replies the error.
  Registry::OwnedSocket owned_socket(Call call, std::uint32_t id);
  /// Gives a client the sockets kept under its name (grace period), each
  /// with an owned event.
  void adopt_orphans(ControlClient& client);
  /// Answers a reverse lookup of `address` (this host's name when empty).
  void resolve_address(Call call, const std::string& address);

  /// Cap on name lookups in flight (their replies come late, so the
  /// output cap alone would not bound them).
  static constexpr std::size_t kMaxLookups = 256;

  Shared& shared_;              ///< registry, contexts, loop
  std::function<void()> stop_;  ///< ends the daemon
  Reload reload_;               ///< reads TLS material again
  /// Resolve commands not yet answered, by serial: the client and the ref.
  std::unordered_map<std::uint64_t, std::pair<std::uint32_t, nlohmann::json>> lookups_;
  std::uint64_t next_lookup_ = 0;  ///< serial of the next lookup
};

}  // namespace tlsport::daemon
