#include "daemon/daemon.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <asio/ip/address.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <climits>
#include <cstring>

#include "daemon/control_client.hpp"
#include "daemon/log.hpp"
#include "daemon/version.hpp"

namespace tlsport::daemon {

using nlohmann::json;
using protocol::Framing;

namespace {

/// Size of the read buffer shared by every socket: a few TLS records.
constexpr std::size_t kReadBufferSize = 64u << 10;
/// Cap on one socket's packet_size.
constexpr std::size_t kMaxPacketSize = std::size_t{1} << 30;
/// Cap on control clients at once.
constexpr std::size_t kMaxClients = 1024;
/// Cap on outstanding accepts per listener.
constexpr std::size_t kMaxPendingAccepts = 4096;
/// Default packet_size.
constexpr std::size_t kDefaultPacketSize = 64u << 20;

void send_reply(ControlClient& c, const json& ref, json body) { c.reply_ok(ref, std::move(body)); }

void send_error(ControlClient& c, const json& ref, const std::string& kind,
                const std::string& message) {
  c.reply_error(ref, kind, message);
}

void send_error(ControlClient& c, const json& ref, const ErrorInfo& e) {
  send_error(c, ref, e.kind, e.message);
}

/// The bytes of a string or binary value.
std::string bytes_of(const json& data) {
  if (data.is_binary()) return std::string(data.get_binary().begin(), data.get_binary().end());
  if (data.is_string()) return data.get<std::string>();
  return std::string();
}

/// Reads an optional string field; false (after replying) when it has another type.
bool get_string(ControlClient& c, const json& cmd, const json& ref, const char* field,
                std::string& out) {
  auto it = cmd.find(field);
  if (it == cmd.end() || it->is_null()) return true;
  if (it->is_string() || it->is_binary()) {
    out = bytes_of(*it);
    return true;
  }
  send_error(c, ref, "bad_request", std::string(field) + " must be a string");
  return false;
}

/// Reads an optional integer field within [lo, hi].
bool get_integer(ControlClient& c, const json& cmd, const json& ref, const char* field,
                 long long lo, long long hi, long long& out) {
  auto it = cmd.find(field);
  if (it == cmd.end() || it->is_null()) return true;
  if (!it->is_number_integer() || it->get<long long>() < lo || it->get<long long>() > hi) {
    send_error(c, ref, "bad_request",
               std::string(field) + " must be an integer from " + std::to_string(lo) + " to " +
                   std::to_string(hi));
    return false;
  }
  out = it->get<long long>();
  return true;
}

bool get_framing(ControlClient& c, const json& cmd, const json& ref, Framing& out) {
  std::string mode = "raw";
  if (!get_string(c, cmd, ref, "mode", mode)) return false;
  auto framing = protocol::parse_framing(mode);
  if (!framing) {
    send_error(c, ref, "bad_request",
               "unknown mode \"" + mode +
                   "\" (raw, packet:N, binary_packet:N with N = 1, 2, 4, onebyte, twobytes, "
                   "fourbytes, asn1, line)");
    return false;
  }
  out = *framing;
  return true;
}

/// Reads an `active` field (true, false, "once", N >= 1); nullopt when absent.
bool get_active(ControlClient& c, const json& cmd, const json& ref,
                std::optional<ActiveMode>& out) {
  auto active = cmd.find("active");
  if (active == cmd.end() || active->is_null()) return true;
  ActiveMode mode;
  if (active->is_boolean()) {
    mode.count = active->get<bool>() ? -1 : 0;
  } else if (active->is_string() && active->get<std::string>() == "once") {
    mode.count = 1;
    mode.once = true;
  } else if (active->is_number_integer() && active->get<long long>() >= 1 &&
             active->get<long long>() <= INT_MAX) {
    mode.count = active->get<long long>();
  } else {
    send_error(c, ref, "bad_request", "active must be true, false, \"once\" or an integer N >= 1");
    return false;
  }
  out = mode;
  return true;
}

}  // namespace

Daemon::Daemon(asio::io_context& io, Options options)
    : io_(io),
      options_(std::move(options)),
      read_buffer_(kReadBufferSize),
      signals_(io, SIGINT, SIGTERM, SIGHUP) {}

Daemon::~Daemon() = default;

void Daemon::wait_for_signal() {
  signals_.async_wait([this](const std::error_code& ec, int signal) {
    if (ec) return;
    if (signal == SIGHUP) {
      // A closed terminal must not kill the daemon. New listeners and
      // connects read their certificate files afresh; live contexts stay.
      log(LogLevel::info, "SIGHUP: client TLS contexts will be rebuilt on next use");
      client_contexts_.clear();
      server_contexts_.clear();
      wait_for_signal();
      return;
    }
    log(LogLevel::info, "signal %d: shutting down", signal);
    shutdown();
  });
}

bool Daemon::start() {
  wait_for_signal();
  if (!options_.unix_path.empty() && !open_unix_socket()) return false;
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

bool Daemon::open_unix_socket() {
  const std::string& path = options_.unix_path;
  using asio::local::stream_protocol;
  std::error_code ec;
  // A socket file left by a daemon that died is removed; a live one is not.
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      log(LogLevel::error, "%s exists and is not a socket", path.c_str());
      return false;
    }
    stream_protocol::socket probe(io_);
    probe.connect(stream_protocol::endpoint(path), ec);
    if (!ec) {
      log(LogLevel::error, "another daemon is serving %s", path.c_str());
      return false;
    }
    ::unlink(path.c_str());
  }
  unix_acceptor_ = std::make_unique<stream_protocol::acceptor>(io_);
  unix_acceptor_->open(stream_protocol(), ec);
  mode_t old_mask = ::umask(0177);  // created 0600, never wider even for a moment
  if (!ec) unix_acceptor_->bind(stream_protocol::endpoint(path), ec);
  ::umask(old_mask);
  if (!ec) ::chmod(path.c_str(), 0600);
  if (!ec) unix_acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    log(LogLevel::error, "cannot serve %s: %s", path.c_str(), ec.message().c_str());
    return false;
  }
  log(LogLevel::info, "serving clients on %s", path.c_str());
  accept_unix_client();
  return true;
}

void Daemon::accept_unix_client() {
  unix_acceptor_->async_accept(
      [this](const std::error_code& ec, asio::local::stream_protocol::socket socket) {
        if (ec == asio::error::operation_aborted || shutting_down_) return;
        if (!ec) {
          struct ucred cred;
          socklen_t len = sizeof cred;
          int fd = socket.native_handle();
          if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || cred.uid != ::getuid()) {
            log(LogLevel::warning, "refused a Unix-socket client of another user (uid %d)",
                static_cast<int>(cred.uid));
          } else if (clients_.size() >= kMaxClients) {
            log(LogLevel::warning, "refused a Unix-socket client: %zu clients already",
                clients_.size());
          } else {
            int owned = socket.release();
            add_client(owned, owned, false, std::nullopt, 4);
          }
        } else {
          // EMFILE and the like: back off instead of spinning.
          log(LogLevel::warning, "Unix-socket accept failed: %s", ec.message().c_str());
          auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100));
          timer->async_wait([this, timer](const std::error_code& e) {
            if (!e && !shutting_down_) accept_unix_client();
          });
          return;
        }
        accept_unix_client();
      });
}

std::uint32_t Daemon::add_client(int in_fd, int out_fd, bool is_port,
                                 std::optional<protocol::ControlEncoding> encoding,
                                 unsigned header) {
  std::uint32_t number = next_client_++;
  auto client =
      std::make_shared<ControlClient>(*this, number, in_fd, out_fd, is_port, encoding, header);
  clients_[number] = client;
  client->start();
  log(LogLevel::info, "client %u connected", number);
  return number;
}

ControlClient* Daemon::client(std::uint32_t number) {
  auto it = clients_.find(number);
  if (it == clients_.end() || it->second->closed()) return nullptr;
  return it->second.get();
}

bool Daemon::has_room_for_socket() const {
  return sockets_.size() + listeners_.size() + handshaking_.size() < options_.max_sockets;
}

std::uint32_t Daemon::next_socket_id() {
  // Ids are not reused while the daemon runs, unless 2^32 of them wrap.
  for (;;) {
    std::uint32_t id = next_socket_++;
    if (next_socket_ == 0) next_socket_ = 1;
    if (id != 0 && !sockets_.count(id) && !listeners_.count(id)) return id;
  }
}

std::uint32_t Daemon::register_connection(const std::shared_ptr<Connection>& conn) {
  std::uint32_t id = next_socket_id();
  sockets_[id] = conn;
  return id;
}

void Daemon::forget_socket(std::uint32_t id) {
  auto it = sockets_.find(id);
  if (it == sockets_.end()) return;
  closing_[it->second.get()] = it->second;
  sockets_.erase(it);
}

void Daemon::connection_finished(Connection& conn) {
  auto it = sockets_.find(conn.id());
  if (it != sockets_.end() && it->second.get() == &conn) sockets_.erase(it);
  closing_.erase(&conn);
  handshaking_.erase(&conn);
}

void Daemon::resume_sockets(const std::vector<std::uint32_t>& ids) {
  for (std::uint32_t id : ids) {
    auto it = sockets_.find(id);
    if (it != sockets_.end()) it->second->resume_reading();
  }
}

void Daemon::resume_client_input(std::uint32_t number) {
  if (ControlClient* c = client(number)) c->resume_input();
}

void Daemon::on_port_closed() {
  log(LogLevel::info, "port input ended: closing every socket");
  shutdown();
}

void Daemon::on_client_closed(std::uint32_t number) {
  auto it = clients_.find(number);
  if (it == clients_.end()) return;
  auto keep = it->second;
  clients_.erase(it);
  if (!keep->name().empty()) client_names_.erase(keep->name());
  log(LogLevel::info, "client %u left: closing its sockets", number);
  std::vector<std::shared_ptr<Connection>> owned;
  for (auto& [id, conn] : sockets_)
    if (conn->owner() == number) owned.push_back(conn);
  for (auto& conn : owned) {
    forget_socket(conn->id());
    conn->close_orderly();
  }
  std::vector<std::shared_ptr<Listener>> owned_listeners;
  for (auto& [id, listener] : listeners_) {
    if (listener->owner() == number)
      owned_listeners.push_back(listener);
    else
      listener->drop_accepts(number, "closed", "client left");
  }
  for (auto& listener : owned_listeners) {
    listeners_.erase(listener->id());
    listener->close();
  }
  std::vector<std::shared_ptr<Connector>> connects;
  for (auto& [ptr, connector] : connectors_)
    if (connector->client() == number) connects.push_back(connector);
  for (auto& connector : connects) connector->abandon();
}

void Daemon::shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  signals_.cancel();
  if (unix_acceptor_) {
    std::error_code ignored;
    unix_acceptor_->close(ignored);
    ::unlink(options_.unix_path.c_str());
  }
  auto listeners = listeners_;
  listeners_.clear();
  for (auto& [id, listener] : listeners) listener->close();
  auto connectors = connectors_;
  for (auto& [ptr, connector] : connectors) connector->abandon();
  std::vector<std::shared_ptr<Connection>> all;
  for (auto& [id, conn] : sockets_) all.push_back(conn);
  for (auto& [ptr, conn] : closing_) all.push_back(conn);
  for (auto& [ptr, conn] : handshaking_) all.push_back(conn);
  for (auto& conn : all) conn->abort();
  // Replies already queued (the answer to stop, say) get one last chance.
  auto clients = clients_;
  for (auto& [number, client] : clients) client->flush_pending();
  io_.stop();
}

Connection* Daemon::owned_connection(ControlClient& c, const json& cmd, const json& ref) {
  long long id = 0;
  if (!get_integer(c, cmd, ref, "id", 1, UINT32_MAX, id)) return nullptr;
  if (id == 0) {
    send_error(c, ref, "bad_request", "missing id");
    return nullptr;
  }
  auto it = sockets_.find(static_cast<std::uint32_t>(id));
  if (it == sockets_.end()) {
    send_error(c, ref, listeners_.count(id) ? "bad_request" : "no_such_socket",
               listeners_.count(id) ? "socket " + std::to_string(id) + " is a listener"
                                    : "no socket " + std::to_string(id));
    return nullptr;
  }
  if (it->second->owner() != c.number()) {
    send_error(c, ref, "not_owner", "socket " + std::to_string(id) + " belongs to another client");
    return nullptr;
  }
  return it->second.get();
}

const std::map<std::string, Daemon::Handler>& Daemon::handlers() {
  static const std::map<std::string, Handler> table = {
      {"hello", &Daemon::cmd_hello},
      {"listen", &Daemon::cmd_listen},
      {"accept", &Daemon::cmd_accept},
      {"cancel", &Daemon::cmd_cancel},
      {"connect", &Daemon::cmd_connect},
      {"deliver", &Daemon::cmd_deliver},
      {"close", &Daemon::cmd_close},
      {"controlling_process", &Daemon::cmd_controlling_process},
      {"setopts", &Daemon::cmd_setopts},
      {"recv", &Daemon::cmd_recv},
      {"peername", &Daemon::cmd_peername},
      {"sockname", &Daemon::cmd_sockname},
      {"resolve", &Daemon::cmd_resolve},
      {"info", &Daemon::cmd_info},
      {"stop", &Daemon::cmd_stop},
  };
  return table;
}

void Daemon::handle_command(ControlClient& c, json& cmd) {
  json ref = cmd.contains("ref") ? cmd["ref"] : json();
  if (!ref.is_null() && !ref.is_number_integer() && !ref.is_string()) {
    send_error(c, json(), "bad_request", "ref must be an integer or a string");
    return;
  }
  auto op = cmd.find("op");
  if (op == cmd.end() || !op->is_string()) {
    send_error(c, ref, "bad_request", "missing op");
    return;
  }
  auto it = handlers().find(op->get<std::string>());
  if (it == handlers().end()) {
    send_error(c, ref, "bad_request", "unknown op \"" + op->get<std::string>() + "\"");
    return;
  }
  if (shutting_down_) {
    send_error(c, ref, "closed", "the daemon is stopping");
    return;
  }
  (this->*(it->second))(c, cmd, ref);
}

void Daemon::handle_deliver(ControlClient& c, std::uint32_t id, std::string_view data,
                            const json* ref) {
  json reply_ref = ref != nullptr ? *ref : json();
  auto it = sockets_.find(id);
  if (it == sockets_.end() || it->second->owner() != c.number()) {
    bool exists = it != sockets_.end();
    json body = {
        {"ok", false},
        {"id", id},
        {"error",
         {{"kind", exists ? "not_owner" : "no_such_socket"},
          {"message", "deliver to socket " + std::to_string(id) +
                          (exists ? ": belongs to another client" : ": no such socket")}}}};
    if (!reply_ref.is_null()) body["ref"] = reply_ref;
    c.send(body);
    return;
  }
  bool over = false;
  if (auto error = it->second->deliver(data, over)) {
    json body = {{"ok", false}, {"id", id}, {"error", error->to_json()}};
    if (!reply_ref.is_null()) body["ref"] = reply_ref;
    c.send(body);
    return;
  }
  if (over) {
    // The peer reads slowly: stop taking commands from this client until it drains.
    it->second->block_client(c.number());
    c.pause_input();
  }
  if (!reply_ref.is_null()) send_reply(c, reply_ref, json::object());
}

void Daemon::cmd_hello(ControlClient& c, json& cmd, const json& ref) {
  std::string name;
  if (!get_string(c, cmd, ref, "name", name)) return;
  if (!name.empty()) {
    if (name.size() > 255) {
      send_error(c, ref, "bad_request", "name longer than 255 bytes");
      return;
    }
    auto it = client_names_.find(name);
    if (it != client_names_.end() && it->second != c.number()) {
      send_error(c, ref, "eaddrinuse", "another client is named " + name);
      return;
    }
    if (!c.name().empty()) client_names_.erase(c.name());
    client_names_[name] = c.number();
    c.set_name(name);
  }
  json body = {{"version", kVersion},
               {"protocol", kProtocolVersion},
               {"client", c.number()},
               {"capabilities",
                {"lines", "binary", "etf", "json", "tls", "asn1", "line", "active", "recv", "unix",
                 "ipv6"}}};
  if (!c.name().empty()) body["name"] = c.name();
  send_reply(c, ref, body);
}

void Daemon::cmd_listen(ControlClient& c, json& cmd, const json& ref) {
  std::string host = "0.0.0.0";
  long long port = -1, backlog = 128, packet_size = kDefaultPacketSize,
            timeout = options_.handshake_timeout_ms;
  Framing framing;
  if (!get_string(c, cmd, ref, "host", host) || !get_integer(c, cmd, ref, "port", 0, 65535, port) ||
      !get_integer(c, cmd, ref, "backlog", 1, 65535, backlog) ||
      !get_framing(c, cmd, ref, framing) ||
      !get_integer(c, cmd, ref, "packet_size", 1, kMaxPacketSize, packet_size) ||
      !get_integer(c, cmd, ref, "handshake_timeout_ms", 1, 3600000, timeout))
    return;
  if (port < 0) {
    send_error(c, ref, "bad_request", "listen needs a port (0 picks a free one)");
    return;
  }
  std::optional<ActiveMode> active;
  if (!get_active(c, cmd, ref, active)) return;
  // Without tls, every accept brings its own (seed 004: SSLFlags on accept).
  TlsOptions tls;
  auto tls_field = cmd.find("tls");
  bool per_accept = tls_field == cmd.end() || tls_field->is_null();
  if (!per_accept) {
    if (auto error = parse_tls_options(&*tls_field, tls)) {
      send_error(c, ref, *error);
      return;
    }
  }
  if (!has_room_for_socket()) {
    send_error(c, ref, "overloaded", "too many sockets open");
    return;
  }
  ListenSettings settings;
  settings.framing = framing;
  settings.packet_size = static_cast<std::size_t>(packet_size);
  settings.handshake_timeout = std::chrono::milliseconds(timeout);
  settings.backlog = static_cast<std::size_t>(backlog);
  settings.log_file = tls.logfile;
  settings.tls_per_accept = per_accept;
  settings.active = active.value_or(ActiveMode{});
  if (!per_accept && tls.enabled) {
    ErrorInfo error;
    settings.ctx = build_context(tls, TlsRole::server, error);
    if (!settings.ctx) {
      send_error(c, ref, error);
      return;
    }
  }
  std::error_code ec;
  asio::ip::address address = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) {
    send_error(c, ref, "bad_request", "listen host must be an IPv4 or IPv6 address: " + host);
    return;
  }
  asio::ip::tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  asio::ip::tcp::acceptor acceptor(io_);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(static_cast<int>(backlog), ec);
  if (ec) {
    send_error(c, ref, classify(ec));
    return;
  }
  acceptor.non_blocking(true, ec);
  auto listener = std::make_shared<Listener>(*this, std::move(acceptor), std::move(settings));
  std::uint32_t id = next_socket_id();
  listener->set_id(id);
  listener->set_owner(c.number());
  listeners_[id] = listener;
  send_reply(c, ref, {{"id", id}, {"port", listener->port()}});
}

void Daemon::cmd_accept(ControlClient& c, json& cmd, const json& ref) {
  long long id = 0;
  if (!get_integer(c, cmd, ref, "id", 1, UINT32_MAX, id)) return;
  auto it = listeners_.find(static_cast<std::uint32_t>(id));
  if (it == listeners_.end()) {
    send_error(c, ref, "no_such_socket", "no listener " + std::to_string(id));
    return;
  }
  if (it->second->owner() != c.number()) {
    send_error(c, ref, "not_owner",
               "listener " + std::to_string(id) + " belongs to another client");
    return;
  }
  if (ref.is_null()) {
    send_error(c, ref, "bad_request", "accept needs a ref to answer");
    return;
  }
  std::optional<ActiveMode> active;
  if (!get_active(c, cmd, ref, active)) return;
  AcceptTls accept_tls;
  auto tls_field = cmd.find("tls");
  if (tls_field != cmd.end() && !tls_field->is_null()) {
    TlsOptions tls;
    if (auto error = parse_tls_options(&*tls_field, tls)) {
      send_error(c, ref, *error);
      return;
    }
    accept_tls.given = true;
    accept_tls.log_file = tls.logfile;
    if (tls.enabled) {
      ErrorInfo error;
      // Accepts usually repeat the same flags: the cache keeps one context each.
      accept_tls.ctx = server_contexts_.get(tls, error);
      if (!accept_tls.ctx) {
        send_error(c, ref, error);
        return;
      }
    }
  } else if (it->second->tls_per_accept()) {
    send_error(c, ref, "bad_request",
               "this listener was opened without tls: accept needs tls (an object, or false)");
    return;
  }
  if (it->second->pending_accepts() >= kMaxPendingAccepts) {
    send_error(c, ref, "overloaded",
               "more than " + std::to_string(kMaxPendingAccepts) + " accepts outstanding");
    return;
  }
  it->second->add_accept(c.number(), ref, std::move(accept_tls), active);
}

void Daemon::cmd_cancel(ControlClient& c, json& cmd, const json& ref) {
  auto target = cmd.find("target");
  if (target == cmd.end() || (!target->is_number_integer() && !target->is_string())) {
    send_error(c, ref, "bad_request", "cancel needs target: the ref of an accept");
    return;
  }
  for (auto& [id, listener] : listeners_) {
    if (listener->cancel(c.number(), *target)) {
      send_reply(c, ref, json::object());
      return;
    }
  }
  send_error(c, ref, "enoent", "no outstanding accept with ref " + target->dump());
}

void Daemon::cmd_connect(ControlClient& c, json& cmd, const json& ref) {
  ConnectRequest req;
  long long port = 0, packet_size = kDefaultPacketSize, timeout = 30000;
  if (!get_string(c, cmd, ref, "host", req.host) ||
      !get_integer(c, cmd, ref, "port", 1, 65535, port) || !get_framing(c, cmd, ref, req.framing) ||
      !get_integer(c, cmd, ref, "packet_size", 1, kMaxPacketSize, packet_size) ||
      !get_integer(c, cmd, ref, "timeout_ms", 1, 3600000, timeout))
    return;
  if (!get_active(c, cmd, ref, req.active)) return;
  if (req.host.empty() || port == 0) {
    send_error(c, ref, "bad_request", "connect needs host and port");
    return;
  }
  if (req.host.size() > 253) {
    send_error(c, ref, "bad_request", "host name too long");
    return;
  }
  auto tls_field = cmd.find("tls");
  json empty = json::object();
  if (auto error = parse_tls_options(tls_field == cmd.end() ? &empty : &*tls_field, req.tls)) {
    send_error(c, ref, *error);
    return;
  }
  if (!has_room_for_socket() || connectors_.size() >= options_.max_sockets) {
    send_error(c, ref, "overloaded", "too many sockets open");
    return;
  }
  if (req.tls.enabled) {
    ErrorInfo error;
    req.ctx = client_contexts_.get(req.tls, error);
    if (!req.ctx) {
      send_error(c, ref, error);
      return;
    }
  }
  req.client = c.number();
  req.ref = ref;
  req.port = static_cast<unsigned short>(port);
  req.packet_size = static_cast<std::size_t>(packet_size);
  req.timeout = std::chrono::milliseconds(timeout);
  auto connector = std::make_shared<Connector>(*this, std::move(req));
  connectors_[connector.get()] = connector;
  connector->start();
}

void Daemon::cmd_deliver(ControlClient& c, json& cmd, const json& ref) {
  long long id = 0;
  if (!get_integer(c, cmd, ref, "id", 1, UINT32_MAX, id)) return;
  auto data = cmd.find("data");
  if (id == 0 || data == cmd.end() || !(data->is_binary() || data->is_string())) {
    send_error(c, ref, "bad_request", "deliver needs id and data (or text)");
    return;
  }
  std::string bytes = bytes_of(*data);
  handle_deliver(c, static_cast<std::uint32_t>(id), bytes, ref.is_null() ? nullptr : &ref);
}

void Daemon::cmd_close(ControlClient& c, json& cmd, const json& ref) {
  long long id = 0;
  if (!get_integer(c, cmd, ref, "id", 1, UINT32_MAX, id)) return;
  if (auto it = listeners_.find(static_cast<std::uint32_t>(id)); it != listeners_.end()) {
    if (it->second->owner() != c.number()) {
      send_error(c, ref, "not_owner",
                 "listener " + std::to_string(id) + " belongs to another client");
      return;
    }
    auto listener = it->second;
    listeners_.erase(it);
    listener->close();
    send_reply(c, ref, json::object());
    return;
  }
  Connection* conn = owned_connection(c, cmd, ref);
  if (conn == nullptr) return;
  auto keep = conn->shared_from_this();
  forget_socket(conn->id());
  keep->close_orderly();
  send_reply(c, ref, json::object());
}

void Daemon::cmd_controlling_process(ControlClient& c, json& cmd, const json& ref) {
  long long id = 0;
  if (!get_integer(c, cmd, ref, "id", 1, UINT32_MAX, id)) return;
  auto to = cmd.find("to");
  std::uint32_t target = 0;
  if (to != cmd.end() && to->is_number_integer() && to->get<long long>() > 0 &&
      to->get<long long>() <= UINT32_MAX) {
    target = to->get<std::uint32_t>();
  } else if (to != cmd.end() && (to->is_string() || to->is_binary())) {
    std::string name = bytes_of(*to);
    auto it = client_names_.find(name);
    if (it == client_names_.end()) {
      send_error(c, ref, "no_such_client", "no client is named " + name);
      return;
    }
    target = it->second;
  } else {
    send_error(c, ref, "bad_request", "controlling_process needs to: a client's name or number");
    return;
  }
  ControlClient* new_owner = client(target);
  if (new_owner == nullptr) {
    send_error(c, ref, "no_such_client", "no client " + std::to_string(target));
    return;
  }
  json owned = {{"event", "owned"}, {"id", id}, {"from", c.number()}};
  if (!c.name().empty()) owned["from_name"] = c.name();
  if (auto it = listeners_.find(static_cast<std::uint32_t>(id)); it != listeners_.end()) {
    if (it->second->owner() != c.number()) {
      send_error(c, ref, "not_owner",
                 "listener " + std::to_string(id) + " belongs to another client");
      return;
    }
    it->second->drop_accepts(c.number(), "cancelled", "listener handed over");
    it->second->set_owner(target);
    owned["listener"] = true;
    owned["sockname"] = it->second->endpoint();
    send_reply(c, ref, json::object());
    if (target != c.number()) new_owner->send(owned);
    return;
  }
  Connection* conn = owned_connection(c, cmd, ref);
  if (conn == nullptr) return;
  // The old owner's reply and the new owner's event are queued at the same
  // moment: every event before belongs to the old owner, every one after to the new.
  send_reply(c, ref, json::object());
  if (target == c.number()) return;
  conn->set_owner(target);
  owned["mode"] = protocol::framing_name(conn->framing());
  if (conn->busy()) owned["busy"] = true;
  owned["peer"] = conn->endpoint(true);
  new_owner->send(owned);
}

void Daemon::cmd_setopts(ControlClient& c, json& cmd, const json& ref) {
  Connection* conn = owned_connection(c, cmd, ref);
  if (conn == nullptr) return;
  long long packet_size = 0;
  if (!get_integer(c, cmd, ref, "packet_size", 1, kMaxPacketSize, packet_size)) return;
  auto active = cmd.find("active");
  long long count = 0;
  bool once = false, set_active = false;
  if (active != cmd.end()) {
    set_active = true;
    if (active->is_boolean()) {
      count = active->get<bool>() ? -1 : 0;
    } else if ((active->is_string() || active->is_binary()) && bytes_of(*active) == "once") {
      count = 1;
      once = true;
    } else if (active->is_number_integer() && active->get<long long>() >= 1 &&
               active->get<long long>() <= INT_MAX) {
      count = active->get<long long>();
    } else {
      send_error(c, ref, "bad_request",
                 "active must be true, false, \"once\" or an integer N >= 1");
      return;
    }
  }
  if (packet_size > 0) conn->set_packet_size(static_cast<std::size_t>(packet_size));
  if (set_active) conn->set_active(count, once);
  send_reply(c, ref, json::object());
}

void Daemon::cmd_recv(ControlClient& c, json& cmd, const json& ref) {
  long long timeout = 24LL * 3600 * 1000;
  if (!get_integer(c, cmd, ref, "timeout_ms", 0, 24LL * 3600 * 1000, timeout)) return;
  Connection* conn = owned_connection(c, cmd, ref);
  if (conn == nullptr) return;
  if (auto error = conn->recv(c.number(), ref, std::chrono::milliseconds(timeout)))
    send_error(c, ref, *error);
}

void Daemon::cmd_peername(ControlClient& c, json& cmd, const json& ref) {
  Connection* conn = owned_connection(c, cmd, ref);
  if (conn == nullptr) return;
  json ep = conn->endpoint(true);
  if (ep.is_null()) {
    send_error(c, ref, "enotconn", "socket is not connected");
    return;
  }
  send_reply(c, ref, ep);
}

void Daemon::cmd_sockname(ControlClient& c, json& cmd, const json& ref) {
  long long id = 0;
  if (!get_integer(c, cmd, ref, "id", 1, UINT32_MAX, id)) return;
  if (auto it = listeners_.find(static_cast<std::uint32_t>(id)); it != listeners_.end()) {
    if (it->second->owner() != c.number()) {
      send_error(c, ref, "not_owner", "listener belongs to another client");
      return;
    }
    send_reply(c, ref, it->second->endpoint());
    return;
  }
  Connection* conn = owned_connection(c, cmd, ref);
  if (conn == nullptr) return;
  send_reply(c, ref, conn->endpoint(false));
}

void Daemon::cmd_resolve(ControlClient& c, json& cmd, const json& ref) {
  std::string address;
  if (!get_string(c, cmd, ref, "address", address)) return;
  auto resolver = std::make_shared<asio::ip::tcp::resolver>(io_);
  std::uint32_t number = c.number();
  if (address.empty()) {
    char name[256] = {0};
    if (::gethostname(name, sizeof name - 1) != 0) {
      send_error(c, ref, classify(std::error_code(errno, std::system_category())));
      return;
    }
    std::string host = name;
    // The official name is the canonical one; without DNS it is the host name itself.
    resolver->async_resolve(
        host, "", asio::ip::tcp::resolver::canonical_name,
        [this, resolver, number, ref, host](const std::error_code& ec,
                                            asio::ip::tcp::resolver::results_type results) {
          ControlClient* client_ptr = client(number);
          if (client_ptr == nullptr) return;
          std::string official = host;
          if (!ec && !results.empty()) official = results.begin()->host_name();
          send_reply(*client_ptr, ref, {{"name", official}});
        });
    return;
  }
  std::error_code ec;
  auto ip = asio::ip::make_address(address, ec);
  if (ec) {
    send_error(c, ref, "bad_request", "not an IP address: " + address);
    return;
  }
  resolver->async_resolve(
      asio::ip::tcp::endpoint(ip, 0),
      [this, resolver, number, ref, address](const std::error_code& e,
                                             asio::ip::tcp::resolver::results_type results) {
        ControlClient* client_ptr = client(number);
        if (client_ptr == nullptr) return;
        if (e || results.empty() || results.begin()->host_name() == address) {
          send_error(*client_ptr, ref, "enoent", "no host name for " + address);
          return;
        }
        send_reply(*client_ptr, ref, {{"name", results.begin()->host_name()}});
      });
}

void Daemon::cmd_info(ControlClient& c, json& cmd, const json& ref) {
  Connection* conn = owned_connection(c, cmd, ref);
  if (conn == nullptr) return;
  json body = conn->info();
  body["peer"] = conn->endpoint(true);
  body["sockname"] = conn->endpoint(false);
  send_reply(c, ref, body);
}

void Daemon::cmd_stop(ControlClient& c, json&, const json& ref) {
  send_reply(c, ref, json::object());
  asio::post(io_, [this] { shutdown(); });
}

}  // namespace tlsport::daemon
