// parse_command(): decoded control messages to typed commands.
#include "protocol/commands.hpp"

#include <cstdint>
#include <cstring>

#include "protocol/field_reader.hpp"

namespace tlsport::protocol {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

// ---------------------------------------------------------------- shared fields

SocketId read_id(FieldReader& fields) {
  auto id = fields.integer("id", 1, UINT32_MAX);
  if (!id && fields.ok()) fields.fail("id", "is missing");
  return static_cast<SocketId>(id.value_or(0));
}

Framing read_framing(FieldReader& fields) {
  auto mode = fields.string("mode");
  if (!mode) return Framing{};
  auto framing = parse_framing(*mode);
  if (!framing)
    fields.fail("mode", "\"" + *mode +
                            "\" is unknown (raw, packet:N, binary_packet:N with N = 1, 2, 4, "
                            "onebyte, twobytes, fourbytes, asn1, line)");
  return framing.value_or(Framing{});
}

std::size_t read_packet_size(FieldReader& fields, std::size_t fallback) {
  auto size = fields.integer("packet_size", 1, static_cast<long long>(kMaxPacketSize));
  return size ? static_cast<std::size_t>(*size) : fallback;
}

/// `active`: true, false, "once" or N >= 1; unset when absent.
std::optional<ActiveMode> read_active(FieldReader& fields) {
  const json* v = fields.value("active");
  if (v == nullptr) return std::nullopt;
  ActiveMode mode;
  if (v->is_boolean()) {
    mode.count = v->get<bool>() ? -1 : 0;
  } else if (v->is_string() && v->get<std::string>() == "once") {
    mode.count = 1;
    mode.once = true;
  } else if (v->is_number_integer() && !v->is_number_unsigned() && v->get<long long>() >= 1 &&
             v->get<long long>() <= INT32_MAX) {
    mode.count = v->get<long long>();
  } else if (v->is_number_unsigned() && v->get<std::uint64_t>() >= 1 &&
             v->get<std::uint64_t>() <= INT32_MAX) {
    mode.count = static_cast<long long>(v->get<std::uint64_t>());
  } else {
    fields.fail("active", "must be true, false, \"once\" or an integer N >= 1");
    return std::nullopt;
  }
  return mode;
}

TlsChoice read_tls(FieldReader& fields) {
  TlsChoice choice;
  if (auto error = parse_tls_choice(fields.value("tls"), choice)) fields.fail(std::move(*error));
  return choice;
}

std::optional<milliseconds> read_timeout(FieldReader& fields, const char* name, long long lo,
                                         long long hi) {
  auto ms = fields.integer(name, lo, hi);
  if (!ms) return std::nullopt;
  return milliseconds(*ms);
}

/// handshake_timeout_ms, idle_timeout_ms, close_timeout_ms.
SocketTimeouts read_timeouts(FieldReader& fields) {
  SocketTimeouts t;
  t.handshake = read_timeout(fields, "handshake_timeout_ms", 1, kMaxTimeoutMs);
  t.idle = read_timeout(fields, "idle_timeout_ms", 1, kMaxRecvTimeoutMs);
  t.close = read_timeout(fields, "close_timeout_ms", 1, kMaxTimeoutMs);
  return t;
}

// ---------------------------------------------------------------- one parser per op

Command parse_hello(FieldReader& fields) {
  HelloCommand c;
  auto name = fields.string("name");
  if (name && name->size() > kMaxClientName)
    fields.fail("name", "is longer than " + std::to_string(kMaxClientName) + " bytes");
  if (name && !name->empty()) c.name = std::move(*name);
  c.grace = read_timeout(fields, "grace_ms", 0, kMaxRecvTimeoutMs);
  if (c.grace && c.grace->count() > 0 && !c.name && fields.ok())
    fields.fail("grace_ms", "needs a name: a successor finds the sockets by it");
  return c;
}

Command parse_listen(FieldReader& fields) {
  ListenCommand c;
  if (auto host = fields.string("host")) c.host = *host == "localhost" ? "127.0.0.1" : *host;
  auto port = fields.integer("port", 0, 65535);
  c.backlog = static_cast<std::uint32_t>(fields.integer("backlog", 1, 65535).value_or(128));
  c.framing = read_framing(fields);
  c.packet_size = read_packet_size(fields, kDefaultPacketSize);
  c.timeouts = read_timeouts(fields);
  c.active = read_active(fields);
  c.tls = read_tls(fields);
  if (!port && fields.ok()) fields.fail("port", "is missing (0 picks a free one)");
  if (fields.ok() && !is_ip_literal(c.host))
    fields.fail("host", "must be an IPv4 or IPv6 address: " + c.host);
  c.port = static_cast<std::uint16_t>(port.value_or(0));
  return c;
}

Command parse_accept(FieldReader& fields) {
  AcceptCommand c;
  c.id = read_id(fields);
  c.active = read_active(fields);
  c.timeouts = read_timeouts(fields);
  c.tls = read_tls(fields);
  return c;
}

Command parse_cancel(FieldReader& fields) {
  CancelCommand c;
  const json* target = fields.value("target");
  if (target == nullptr || !(target->is_number_integer() || target->is_string()))
    fields.fail("target", "must be the ref of an accept");
  else
    c.target = *target;
  return c;
}

Command parse_connect(FieldReader& fields) {
  ConnectCommand c;
  c.host = fields.string("host").value_or("");
  auto port = fields.integer("port", 1, 65535);
  c.framing = read_framing(fields);
  c.packet_size = read_packet_size(fields, kDefaultPacketSize);
  c.timeout = read_timeout(fields, "timeout_ms", 1, kMaxTimeoutMs).value_or(c.timeout);
  c.timeouts = read_timeouts(fields);
  c.active = read_active(fields);
  c.tls = read_tls(fields);
  if (fields.ok() && (c.host.empty() || !port)) fields.fail("connect needs host and port");
  if (c.host.size() > kMaxHostName) fields.fail("host", "is longer than 253 characters");
  c.port = static_cast<std::uint16_t>(port.value_or(0));
  return c;
}

Command parse_deliver(FieldReader& fields) {
  DeliverCommand c;
  c.id = read_id(fields);
  // The decoder has turned "data" (base64 in JSON) and a lone "text" into
  // bytes: a "data" string left is not base64, a "text" left came with "data".
  const json* data = fields.value("data");
  const json* text = fields.value("text");
  if (data != nullptr && text != nullptr)
    fields.fail("deliver takes data or text, not both");
  else if (text != nullptr)
    fields.fail("text", "must be a string");
  else if (data != nullptr && data->is_string())
    fields.fail("data", "is not valid base64");
  else if (data != nullptr && data->is_binary())
    c.data.assign(data->get_binary().begin(), data->get_binary().end());
  else if (fields.ok())
    fields.fail("deliver needs id and data (or text)");
  return c;
}

Command parse_close(FieldReader& fields) { return CloseCommand{read_id(fields)}; }

Command parse_controlling_process(FieldReader& fields) {
  ControllingProcessCommand c;
  c.id = read_id(fields);
  const json* to = fields.value("to");
  if (to != nullptr && to->is_number_integer() && to->get<long long>() > 0 &&
      to->get<long long>() <= UINT32_MAX)
    c.to = to->get<std::uint32_t>();
  else if (to != nullptr && to->is_string())
    c.to = to->get<std::string>();
  else
    fields.fail("to", "must be a client's name or number");
  return c;
}

Command parse_setopts(FieldReader& fields) {
  SetoptsCommand c;
  c.id = read_id(fields);
  c.active = read_active(fields);
  if (auto size = fields.integer("packet_size", 1, static_cast<long long>(kMaxPacketSize)))
    c.packet_size = static_cast<std::size_t>(*size);
  return c;
}

Command parse_recv(FieldReader& fields) {
  RecvCommand c;
  c.id = read_id(fields);
  c.timeout = read_timeout(fields, "timeout_ms", 0, kMaxRecvTimeoutMs).value_or(c.timeout);
  return c;
}

Command parse_peername(FieldReader& fields) { return PeernameCommand{read_id(fields)}; }
Command parse_sockname(FieldReader& fields) { return SocknameCommand{read_id(fields)}; }
Command parse_info(FieldReader& fields) { return InfoCommand{read_id(fields)}; }

Command parse_resolve(FieldReader& fields) {
  ResolveCommand c;
  auto address = fields.string("address");
  if (address && !address->empty() && !is_ip_literal(*address))
    fields.fail("address", "is not an IP address: " + *address);
  if (address && !address->empty()) c.address = std::move(*address);
  return c;
}

Command parse_stop(FieldReader&) { return StopCommand{}; }

Command parse_tls_context(FieldReader& fields) {
  TlsContextCommand c;
  auto name = fields.string("name");
  if (!name || name->empty() || name->size() > kMaxContextName)
    fields.fail("name", "must be a string of 1 to " + std::to_string(kMaxContextName) + " bytes");
  else
    c.name = std::move(*name);
  const json* tls = fields.value("tls");
  if (tls == nullptr) {
    fields.fail("tls", "is missing (an object of TLS settings)");
  } else if (auto error = parse_tls_settings(*tls, c.settings)) {
    fields.fail(std::move(*error));
  }
  return c;
}

Command parse_starttls(FieldReader& fields) {
  StarttlsCommand c;
  c.id = read_id(fields);
  auto side = fields.string("side");
  if (side == std::optional<std::string>("client"))
    c.side = TlsRole::client;
  else if (side == std::optional<std::string>("server"))
    c.side = TlsRole::server;
  else
    fields.fail("side", "must be \"client\" or \"server\"");
  c.tls = read_tls(fields);
  if (c.tls.kind == TlsChoice::Kind::plain) fields.fail("tls", "cannot be false for starttls");
  c.timeouts = read_timeouts(fields);
  if (auto ms = read_timeout(fields, "timeout_ms", 1, kMaxTimeoutMs)) c.timeouts.handshake = ms;
  return c;
}

Command parse_stoptls(FieldReader& fields) {
  StoptlsCommand c;
  c.id = read_id(fields);
  c.timeout = read_timeout(fields, "timeout_ms", 1, kMaxTimeoutMs);
  return c;
}

Command parse_inject_ca(FieldReader& fields) {
  InjectCaCommand c;
  c.id = read_id(fields);
  c.cacertfile = fields.string("cacertfile").value_or("");
  c.cacert = fields.string("cacert").value_or("");
  if (fields.ok() && c.cacertfile.empty() == c.cacert.empty())
    fields.fail("inject_ca needs one of cacertfile and cacert");
  return c;
}

Command parse_ciphers(FieldReader& fields) { return CiphersCommand{read_id(fields)}; }
Command parse_stats(FieldReader&) { return StatsCommand{}; }
Command parse_reload(FieldReader&) { return ReloadCommand{}; }

Command parse_answer(FieldReader& fields) {
  AnswerCommand c;
  auto request = fields.integer("request", 1, INT64_MAX);
  if (!request && fields.ok()) fields.fail("request", "is missing");
  c.request = static_cast<std::uint64_t>(request.value_or(0));
  c.password = fields.string("password");
  c.accept = fields.boolean("accept");
  if (fields.ok() && c.password.has_value() == c.accept.has_value())
    fields.fail("answer needs one of password (for password_needed) and accept (for verify_peer)");
  return c;
}

/// One op and its parser.
struct Op {
  const char* name;                ///< the "op" value
  Command (*parse)(FieldReader&);  ///< reads its fields
  bool needs_ref;                  ///< answered later: a reply without ref could not be matched
};

constexpr Op kOps[] = {
    {"hello", parse_hello, false},
    {"listen", parse_listen, false},
    {"accept", parse_accept, true},
    {"cancel", parse_cancel, false},
    {"connect", parse_connect, false},
    {"deliver", parse_deliver, false},
    {"close", parse_close, false},
    {"controlling_process", parse_controlling_process, false},
    {"setopts", parse_setopts, false},
    {"recv", parse_recv, false},
    {"peername", parse_peername, false},
    {"sockname", parse_sockname, false},
    {"info", parse_info, false},
    {"resolve", parse_resolve, false},
    {"stop", parse_stop, false},
    {"tls_context", parse_tls_context, false},
    {"starttls", parse_starttls, false},
    {"stoptls", parse_stoptls, false},
    {"inject_ca", parse_inject_ca, false},
    {"ciphers", parse_ciphers, false},
    {"answer", parse_answer, false},
    {"stats", parse_stats, false},
    {"reload", parse_reload, false},
};

}  // namespace

ParsedCommand parse_command(const json& message) {
  ParsedCommand out;
  auto bad = [&out](std::string text) {
    out.error = wire_error(ErrorKind::bad_request, std::move(text));
    return out;
  };
  if (!message.is_object()) return bad("a command must be an object");
  if (auto ref = message.find("ref"); ref != message.end() && !ref->is_null()) {
    if (!ref->is_number_integer() && !ref->is_string())
      return bad("ref must be an integer or a string");
    out.ref = *ref;
  }
  auto op = message.find("op");
  if (op == message.end() || !op->is_string()) return bad("missing op");
  const std::string& name = op->get_ref<const std::string&>();
  for (const Op& candidate : kOps) {
    if (name != candidate.name) continue;
    if (candidate.needs_ref && out.ref.is_null()) return bad(name + " needs a ref to answer");
    FieldReader fields(message, name);
    fields.allow("op");
    fields.allow("ref");
    Command command = candidate.parse(fields);
    if (auto error = fields.finish()) {
      out.error = std::move(error);
      // A failed deliver names its socket in the error (docs/protocol.md, deliver).
      if (const auto* deliver = std::get_if<DeliverCommand>(&command); deliver && deliver->id != 0)
        out.deliver_id = deliver->id;
      return out;
    }
    out.command = std::move(command);
    return out;
  }
  std::string shown = name.size() > 64 ? name.substr(0, 64) + "..." : name;
  return bad("unknown op \"" + shown + "\"");
}

}  // namespace tlsport::protocol
