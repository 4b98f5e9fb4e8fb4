// Carries out typed commands (protocol/commands.hpp) for one client at a
// time: each command's checks against the registry, its effect, its reply.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string_view>

#include "daemon/errors.hpp"
#include "daemon/registry.hpp"
#include "protocol/commands.hpp"

namespace tlsport::daemon {

struct Shared;
class ControlClient;

/// The commands of docs/protocol.md §2.1, carried out.
class Executor {
 public:
  /// `stop`: what the stop command does after its reply (ends the daemon).
  Executor(Shared& shared, std::function<void()> stop) : shared_(shared), stop_(std::move(stop)) {}
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  /// Carries out `command` for `client`; every reply goes to `client`.
  void execute(ControlClient& client, const nlohmann::json& ref, protocol::Command& command);
  /// Queues bytes for a socket (a DATA frame, or deliver); `ref` may be null.
  void deliver(ControlClient& client, std::uint32_t id, std::string_view data,
               const nlohmann::json& ref);

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

 private:
  /// Replies ok with `body`.
  static void ok(Call call, nlohmann::json body = nlohmann::json::object());
  /// Replies an error.
  static void fail(Call call, const ErrorInfo& error);
  /// The connection `id` if the caller owns it; else replies the error and returns null.
  class Connection* owned_connection(Call call, std::uint32_t id);
  /// The listener or connection `id` if the caller owns it; else replies the error.
  Registry::OwnedSocket owned_socket(Call call, std::uint32_t id);
  /// Answers a reverse lookup of `address` (this host's name when empty).
  void resolve_address(Call call, const std::string& address);

  Shared& shared_;              ///< registry, contexts, loop
  std::function<void()> stop_;  ///< ends the daemon
};

}  // namespace tlsport::daemon
