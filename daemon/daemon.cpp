#include "daemon/daemon.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include "daemon/connection.hpp"
#include "daemon/connector.hpp"
#include "daemon/listener.hpp"
#include "daemon/log.hpp"
#include "protocol/messages.hpp"

namespace tlsport::daemon {

using nlohmann::json;

Daemon::Daemon(asio::io_context& io, Options options)
    : options_(std::move(options)),
      shared_(io, options_),
      executor_(shared_, [this] { shutdown(); }),
      signals_(io, SIGINT, SIGTERM, SIGHUP) {}

Daemon::~Daemon() = default;

void Daemon::wait_for_signal() {
  signals_.async_wait([this](const std::error_code& ec, int signal) {
    if (ec) return;
    if (signal == SIGHUP) {
      // A closed terminal must not kill the daemon. New listeners and
      // connects read their certificate files afresh; live contexts stay.
      log(LogLevel::info, "SIGHUP: TLS contexts will be rebuilt on next use");
      shared_.client_contexts.clear();
      shared_.server_contexts.clear();
      wait_for_signal();
      return;
    }
    log(LogLevel::info, "signal %d: shutting down", signal);
    shutdown();
  });
}

bool Daemon::start() {
  wait_for_signal();
  if (!options_.unix_path.empty() || options_.activated_fd >= 0) {
    UnixServer::Settings unix;
    unix.path = options_.unix_path;
    unix.mode = options_.socket_mode;
    unix.allow_uids = options_.allow_uids;
    unix.allow_gids = options_.allow_gids;
    unix.activated_fd = options_.activated_fd;
    unix.max_clients = options_.max_clients;
    if (::geteuid() == 0) {  // the file goes to the user and group dropped to
      unix.owner_uid = options_.user ? static_cast<int>(*options_.user) : -1;
      unix.owner_gid = options_.group ? static_cast<int>(*options_.group) : -1;
    }
    unix_server_ = std::make_unique<UnixServer>(
        shared_.io, std::move(unix), [this] { return shared_.registry.client_count(); },
        [this](int fd) { add_client(fd, fd, false, std::nullopt, 4); });
    if (!unix_server_->open()) return false;
  }
  if (options_.use_stdio) {
    int in = options_.nouse_stdio ? 3 : 0;
    int out = options_.nouse_stdio ? 4 : 1;
    struct stat st;
    if (fstat(in, &st) != 0 || fstat(out, &st) != 0) {
      log(LogLevel::error, "fds %d and %d must be open (--nouse-stdio needs fds 3 and 4)", in, out);
      return false;
    }
    add_client(in, out, true, options_.control, options_.packet);
  }
  return true;
}

void Daemon::add_client(int in_fd, int out_fd, bool is_port,
                        std::optional<protocol::ControlEncoding> encoding, unsigned header) {
  std::uint32_t number = shared_.registry.next_client_number();
  auto client = std::make_shared<ControlClient>(shared_, *this, number, in_fd, out_fd, is_port,
                                                encoding, header);
  shared_.registry.add_client(client);
  client->start();
  log(LogLevel::info, "client %u connected", number);
}

void Daemon::on_command(ControlClient& client, const json& message) {
  protocol::ParsedCommand parsed = protocol::parse_command(message);
  if (parsed.error) {
    client.send(protocol::error_reply(parsed.ref, *parsed.error));
  } else if (shutting_down_) {
    client.send(
        protocol::error_reply(parsed.ref, wire_error(ErrorKind::closed, "the daemon is stopping")));
  } else {
    executor_.execute(client, parsed.ref, *parsed.command);
  }
}

void Daemon::on_data(ControlClient& client, std::uint32_t socket_id, std::string_view data) {
  executor_.deliver(client, socket_id, data, json());
}

void Daemon::on_port_closed() {
  log(LogLevel::info, "port input ended: closing every socket");
  shutdown();
}

void Daemon::on_client_closed(std::uint32_t number) {
  Registry& registry = shared_.registry;
  auto keep = registry.remove_client(number);
  if (!keep) return;
  log(LogLevel::info, "client %u left: closing its sockets", number);
  for (auto& conn : registry.connections_of(number)) {
    registry.forget_connection(conn->id());
    conn->close_orderly();
  }
  ErrorInfo left = wire_error(ErrorKind::closed, "client left");
  for (auto& listener : registry.listeners()) {
    if (listener->owner() != number) {
      listener->drop_accepts(number, left);
      continue;
    }
    registry.remove_listener(listener->id());
    listener->close();
  }
  for (auto& connector : registry.connectors_of(number)) connector->abandon();
}

void Daemon::shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  signals_.cancel();
  if (unix_server_) unix_server_->close();
  Registry& registry = shared_.registry;
  for (auto& listener : registry.listeners()) {
    registry.remove_listener(listener->id());
    listener->close();
  }
  for (auto& connector : registry.connectors()) connector->abandon();
  for (auto& conn : registry.connections()) conn->abort();
  // Replies already queued (the answer to stop, say) get one last chance.
  for (auto& client : registry.clients()) client->flush_pending();
  shared_.io.stop();
}

}  // namespace tlsport::daemon
