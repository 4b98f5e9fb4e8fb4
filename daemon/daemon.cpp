#include "daemon/daemon.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdlib>

#include "daemon/connection.hpp"
#include "daemon/connector.hpp"
#include "daemon/listener.hpp"
#include "daemon/log.hpp"
#include "protocol/messages.hpp"

namespace tlsport::daemon {

using nlohmann::json;

namespace {

/// Gives memory freed since the last call back to the kernel. glibc keeps the
/// last seven freed chunks of each small size (up to about 1 KiB) in a
/// per-thread cache that malloc_trim does not touch: after 10,000 connections
/// close, those chunks lie scattered over the whole grown heap and each keeps
/// its page or two resident (355 of the 392 islands of live memory in a soak's
/// heap were such chunks). Taking each size's cached chunks out, refilling the
/// cache with fresh chunks and then freeing the old ones (the cache is full, so
/// they go back to the heap and merge) lets the trim release their pages.
void release_free_memory() {
#if defined(__GLIBC__)
  constexpr std::size_t kSizes = 64;   // cached sizes: chunks of 32 to 1040 bytes
  constexpr std::size_t kPerSize = 7;  // chunks cached per size
  std::array<void*, kPerSize * 2> held{};
  for (std::size_t size_class = 0; size_class < kSizes; ++size_class) {
    std::size_t request = 24 + 16 * size_class;  // fills a chunk of 32 + 16 * size_class
    for (auto& p : held) {
      p = std::malloc(request);                    // the cached ones first, then fresh
      __asm__ volatile("" : : "g"(p) : "memory");  // not to be elided with its free
    }
    for (std::size_t i = held.size(); i-- > 0;) std::free(held[i]);  // fresh ones refill the cache
  }
  ::malloc_trim(0);
#endif
}

}  // namespace

Daemon::Daemon(asio::io_context& io, Options options)
    : options_(std::move(options)),
      shared_(io, options_),
      executor_(
          shared_, [this] { shutdown(); }, [this] { return reload_tls(); }),
      signals_(io, SIGINT, SIGTERM, SIGHUP),
      stop_timer_(io),
      trim_timer_(io) {}

Daemon::~Daemon() = default;

void Daemon::wait_for_signal() {
  signals_.async_wait([this](const std::error_code& ec, int signal) {
    if (ec) return;
    if (signal == SIGHUP) {
      // A closed terminal must not kill the daemon: SIGHUP reloads.
      if (auto error = reload_tls())
        log(LogLevel::error, "SIGHUP: reload refused, the old material stays: %s",
            error->message.c_str());
      wait_for_signal();
      return;
    }
    log(LogLevel::info, "signal %d: shutting down", signal);
    shutdown();
  });
}

void Daemon::trim_memory_later() {
  trim_timer_.expires_after(std::chrono::seconds(2));
  trim_timer_.async_wait([this](const std::error_code& ec) {
    if (ec || shutting_down_) return;
    std::size_t now = shared_.registry.connection_count();
    connections_peak_ = std::max(connections_peak_, now);
    // Only after a real drop (a quarter of at least a few hundred): never on
    // the data path, and rarely in steady state.
    if (connections_peak_ >= kTrimAfter && now <= connections_peak_ / 4 * 3) {
      release_free_memory();
      connections_peak_ = now;
    }
    trim_memory_later();
  });
}

std::optional<ErrorInfo> Daemon::reload_tls() {
  // Everything is built before anything changes: a bad file refuses the
  // whole reload and the old material stays in use.
  std::map<std::string, NamedContext> named;
  for (const auto& [name, old] : shared_.named_contexts) {
    NamedContext fresh{old.settings, nullptr, nullptr};
    ErrorInfo error;
    fresh.client =
        build_context(old.settings, TlsRole::client, error, nullptr, &shared_.client_sessions);
    if (fresh.client && old.server)
      fresh.server = build_context(old.settings, TlsRole::server, error);
    if (!fresh.client || (old.server && !fresh.server))
      return wire_error(ErrorKind::bad_tls_config, "tls_context " + name + ": " + error.message);
    named.emplace(name, std::move(fresh));
  }
  std::vector<std::pair<std::shared_ptr<Listener>, SslCtxPtr>> listeners;
  for (const auto& listener : shared_.registry.listeners()) {
    const ListenSettings& settings = listener->settings();
    SslCtxPtr ctx;
    ErrorInfo error;
    if (settings.tls)
      ctx = build_context(*settings.tls, TlsRole::server, error);
    else if (!settings.context_name.empty() && named.count(settings.context_name))
      ctx = named[settings.context_name].server;
    else
      continue;
    if (!ctx)
      return wire_error(ErrorKind::bad_tls_config,
                        "listener " + std::to_string(listener->id()) + ": " + error.message);
    listeners.emplace_back(listener, std::move(ctx));
  }
  for (auto& [listener, ctx] : listeners) listener->set_context(std::move(ctx));
  shared_.named_contexts = std::move(named);
  shared_.client_contexts.clear();
  shared_.server_contexts.clear();
  log(LogLevel::info, "reload: %zu listeners and %zu named contexts read their files again",
      listeners.size(), shared_.named_contexts.size());
  return std::nullopt;
}

bool Daemon::start() {
  wait_for_signal();
  trim_memory_later();
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
  if (!options_.stats_listen.empty()) {
    stats_server_ = std::make_unique<StatsServer>(shared_);
    if (!stats_server_->open(options_.stats_listen)) return false;
  }
  if (options_.use_stdio) {
    int in = options_.nouse_stdio ? 3 : 0;
    int out = options_.nouse_stdio ? 4 : 1;
    struct stat st;
    if (fstat(in, &st) != 0 || fstat(out, &st) != 0) {
      log(LogLevel::error, "fds %d and %d must be open (--nouse-stdio needs fds 3 and 4)", in, out);
      return false;
    }
    // A port's pipes hold 64 KiB by default: one 64 KiB DATA frame fills one,
    // and every frame costs a wake-up of both ends. Not a pipe: nothing happens.
    ::fcntl(in, F_SETPIPE_SZ, kPortPipeSize);
    ::fcntl(out, F_SETPIPE_SZ, kPortPipeSize);
    add_client(in, out, true, options_.control, options_.packet);
  }
  return true;
}

void Daemon::add_client(int in_fd, int out_fd, bool is_port,
                        std::optional<protocol::ControlEncoding> encoding, unsigned header) {
  std::uint32_t number = shared_.registry.next_client_number();
  auto client = std::make_shared<ControlClient>(shared_, *this, number, in_fd, out_fd, is_port,
                                                encoding, header);
  ++shared_.counters.clients_attached;
  shared_.registry.add_client(client);
  client->start();
  log(LogLevel::info, "client %u connected", number);
}

void Daemon::on_command(ControlClient& client, const json& message) {
  protocol::ParsedCommand parsed = protocol::parse_command(message);
  if (parsed.error && parsed.deliver_id) {
    client.send(protocol::deliver_error_reply(*parsed.deliver_id, parsed.ref, *parsed.error));
  } else if (parsed.error) {
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
  shared_.questions.drop_client(number);
  if (shutting_down_) {
    if (registry.client_count() == 0) shared_.io.stop();
    return;
  }
  if (!keep->name().empty() && keep->grace().count() > 0) {
    keep_for_successor(*keep);
    return;
  }
  log(LogLevel::info, "client %u left: closing its sockets", number);
  // Listeners first: by the time a peer sees its connection close, nothing
  // of this client accepts any more.
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
  for (auto& conn : registry.connections_of(number)) {
    registry.forget_connection(conn->id());
    conn->close_orderly();
  }
}

void Daemon::keep_for_successor(ControlClient& client) {
  Registry& registry = shared_.registry;
  Registry::Orphans orphans;
  orphans.from = client.number();
  ErrorInfo left = wire_error(ErrorKind::cancelled, "client left");
  for (auto& listener : registry.listeners()) {
    listener->drop_accepts(client.number(), left);
    if (listener->owner() != client.number()) continue;
    listener->set_owner(0);
    orphans.sockets.push_back(listener->id());
  }
  for (auto& connector : registry.connectors_of(client.number())) connector->abandon();
  for (auto& conn : registry.connections_of(client.number())) {
    conn->orphan();
    orphans.sockets.push_back(conn->id());
  }
  orphans.expiry = std::make_shared<asio::steady_timer>(shared_.io, client.grace());
  orphans.expiry->async_wait([this, name = client.name()](const std::error_code& ec) {
    if (!ec) close_orphans(name);
  });
  log(LogLevel::info, "client %u (%s) left: %zu sockets kept for %lld ms", client.number(),
      client.name().c_str(), orphans.sockets.size(),
      static_cast<long long>(client.grace().count()));
  registry.keep_orphans(client.name(), std::move(orphans));
}

void Daemon::close_orphans(const std::string& name) {
  Registry& registry = shared_.registry;
  auto orphans = registry.take_orphans(name);
  if (!orphans) return;
  log(LogLevel::info, "no successor named %s came: its %zu sockets close", name.c_str(),
      orphans->sockets.size());
  for (std::uint32_t id : orphans->sockets) {
    if (auto listener = registry.remove_listener(id)) {
      listener->close();
    } else if (Connection* conn = registry.connection(id)) {
      auto keep = conn->shared_from_this();
      registry.forget_connection(id);
      keep->close_orderly();
    }
  }
}

void Daemon::shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  signals_.cancel();
  trim_timer_.cancel();
  if (unix_server_) unix_server_->close();
  if (stats_server_) stats_server_->close();
  Registry& registry = shared_.registry;
  for (auto& listener : registry.listeners()) {
    registry.remove_listener(listener->id());
    listener->close();
  }
  // Every command still waiting on the network gets its reply now (a port
  // whose input ended right after a connect or resolve hears why).
  ErrorInfo stopping = wire_error(ErrorKind::closed, "the daemon is stopping");
  for (auto& connector : registry.connectors()) connector->fail(stopping);
  executor_.answer_lookups(stopping);
  for (auto& conn : registry.connections()) conn->abort();
  // Replies already queued (the answer to stop, replies to the last commands
  // of a port whose input ended) leave before the loop stops, within a second.
  for (auto& client : registry.clients()) client->close_after_flush();
  if (registry.client_count() == 0) {
    shared_.io.stop();
    return;
  }
  stop_timer_.expires_after(std::chrono::seconds(1));
  stop_timer_.async_wait([this](const std::error_code& ec) {
    if (!ec) shared_.io.stop();
  });
}

}  // namespace tlsport::daemon
