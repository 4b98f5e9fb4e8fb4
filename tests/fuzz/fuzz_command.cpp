// Fuzz target: the typed-command parser, protocol::parse_command, on commands
// decoded from JSON text and from ETF terms.
//
// Input: a term as a client would put it in a CONTROL frame: ETF when it
// starts with the version byte 131, JSON text otherwise. It is decoded the
// way the daemon decodes it (ControlDecoder, so "data"/"text" are normalised)
// and also as a bare JSON/ETF value (so fields keep their raw types).
//
// Checked: parse_command never crashes or throws; parsing twice gives the
// same result; a result is exactly one of a command and an error, the error
// of kind bad_request or unsupported_protocol with a message; the ref comes
// back as given; and every field of a command is within the range and cap
// docs/protocol.md gives it.
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "fuzz_support.hpp"
#include "protocol/commands.hpp"
#include "protocol/control_codec.hpp"
#include "protocol/etf.hpp"

namespace tlsport::fuzz {
namespace {

using nlohmann::json;
using namespace protocol;

/// Checks an active mode and describes it.
json describe(const std::optional<ActiveMode>& a) {
  if (!a) return nullptr;
  FUZZ_CHECK(a->count >= -1 && a->count <= INT32_MAX);
  if (a->once) FUZZ_CHECK(a->count == 1);
  return {a->count, a->once};
}

/// Checks a list of strings against its caps and describes it.
json describe(const std::vector<std::string>& list, std::size_t max_items, std::size_t max_size) {
  FUZZ_CHECK(list.size() <= max_items);
  for (const std::string& item : list) FUZZ_CHECK(item.size() <= max_size);
  return json::array({list.size(), list.empty() ? std::string() : list.front()});
}

/// Checks TLS settings and describes them.
json describe(const TlsSettings& s) {
  if (s.verify) FUZZ_CHECK(*s.verify >= 0 && *s.verify <= 2);
  if (s.depth) FUZZ_CHECK(*s.depth >= 0 && *s.depth <= 100);
  FUZZ_CHECK(s.min_version != TlsVersion::unset);
  if (s.max_version != TlsVersion::unset) FUZZ_CHECK(s.max_version >= s.min_version);
  if (s.verify_hostname) FUZZ_CHECK(!s.verify_hostname->empty());
  if (s.callback_timeout_ms)
    FUZZ_CHECK(*s.callback_timeout_ms >= 1 && *s.callback_timeout_ms <= kMaxCallbackTimeoutMs);
  FUZZ_CHECK(s.certfile.empty() || s.cert.empty());
  FUZZ_CHECK(s.sni.size() <= kMaxSniEntries);
  json sni = json::array();
  for (const SniCertificate& entry : s.sni) {
    FUZZ_CHECK(!entry.names.empty());
    FUZZ_CHECK(!entry.certfile.empty() || !entry.cert.empty());
    sni.push_back(describe(entry.names, kMaxSniNames, 253));
  }
  // The context key is text of any bytes; it must tell settings apart
  // deterministically, so it is compared between the two parses.
  return {s.context_key(),
          s.server_name.value_or("<unset>"),
          s.verify_hostname.value_or("<unset>"),
          s.check_hostname,
          s.logfile,
          s.ask_password,
          s.session_reuse,
          s.ocsp_status_request,
          s.callback_timeout_ms.value_or(0),
          sni,
          describe(s.alpn, kMaxAlpnProtocols, 255),
          describe(s.ticket_keys, kMaxTicketKeys, 4096)};
}

/// Checks a `tls` choice and describes it.
json describe(const TlsChoice& tls) {
  if (tls.kind != TlsChoice::Kind::tls) {
    FUZZ_CHECK(tls.settings.context_key() == TlsSettings{}.context_key());
  }
  if (tls.kind == TlsChoice::Kind::named) {
    FUZZ_CHECK(!tls.name.empty() && tls.name.size() <= kMaxContextName);
  } else {
    FUZZ_CHECK(tls.name.empty());
  }
  return {static_cast<int>(tls.kind), tls.name, describe(tls.settings)};
}

/// Checks an optional timeout against its range; -1 when unset.
long long millis(const std::optional<std::chrono::milliseconds>& t, long long lo, long long hi) {
  if (!t) return -1;
  FUZZ_CHECK(t->count() >= lo && t->count() <= hi);
  return t->count();
}

/// Checks per-socket timeouts and describes them.
json describe(const SocketTimeouts& t) {
  return {millis(t.handshake, 1, kMaxTimeoutMs), millis(t.idle, 1, kMaxRecvTimeoutMs),
          millis(t.close, 1, kMaxTimeoutMs)};
}

/// Checks a packet_size and a framing and describes them.
json describe(const Framing& f, std::size_t packet_size) {
  FUZZ_CHECK(packet_size >= 1 && packet_size <= kMaxPacketSize);
  FUZZ_CHECK(parse_framing(framing_name(f)) == f);
  return {framing_name(f), packet_size};
}

/// Checks an id.
json id(SocketId v) {
  FUZZ_CHECK(v >= 1);
  return v;
}

/// Checks that every field of a command is in range, and describes it whole,
/// so that two parses can be compared.
json describe(const Command& command) {
  return std::visit(
      [](const auto& c) -> json {
        using T = std::decay_t<decltype(c)>;
        if constexpr (std::is_same_v<T, HelloCommand>) {
          if (c.name) FUZZ_CHECK(!c.name->empty() && c.name->size() <= kMaxClientName);
          const long long grace = millis(c.grace, 0, kMaxRecvTimeoutMs);
          if (grace > 0) FUZZ_CHECK(c.name.has_value());
          return {"hello", c.name.value_or("<unset>"), grace};
        } else if constexpr (std::is_same_v<T, ListenCommand>) {
          // An address literal, whole: not one followed by a NUL and more.
          FUZZ_CHECK(is_ip_literal(c.host) && c.host.find('\0') == std::string::npos);
          FUZZ_CHECK(c.backlog >= 1 && c.backlog <= 65535);
          return {"listen",
                  c.host,
                  c.port,
                  c.backlog,
                  describe(c.framing, c.packet_size),
                  describe(c.timeouts),
                  describe(c.active),
                  describe(c.tls)};
        } else if constexpr (std::is_same_v<T, AcceptCommand>) {
          return {"accept", id(c.id), describe(c.active), describe(c.timeouts), describe(c.tls)};
        } else if constexpr (std::is_same_v<T, CancelCommand>) {
          FUZZ_CHECK(c.target.is_number_integer() || c.target.is_string());
          return {"cancel", c.target};
        } else if constexpr (std::is_same_v<T, ConnectCommand>) {
          FUZZ_CHECK(!c.host.empty() && c.host.size() <= kMaxHostName);
          FUZZ_CHECK(c.port >= 1);
          FUZZ_CHECK(c.timeout.count() >= 1 && c.timeout.count() <= kMaxTimeoutMs);
          return {"connect",
                  c.host,
                  c.port,
                  describe(c.framing, c.packet_size),
                  c.timeout.count(),
                  describe(c.timeouts),
                  describe(c.active),
                  describe(c.tls)};
        } else if constexpr (std::is_same_v<T, DeliverCommand>) {
          return {"deliver", id(c.id),
                  json::binary(json::binary_t::container_type(c.data.begin(), c.data.end()))};
        } else if constexpr (std::is_same_v<T, CloseCommand>) {
          return {"close", id(c.id)};
        } else if constexpr (std::is_same_v<T, ControllingProcessCommand>) {
          if (const auto* n = std::get_if<std::uint32_t>(&c.to)) FUZZ_CHECK(*n >= 1);
          return {"controlling_process", id(c.id),
                  std::visit([](const auto& to) { return json(to); }, c.to)};
        } else if constexpr (std::is_same_v<T, SetoptsCommand>) {
          if (c.packet_size) FUZZ_CHECK(*c.packet_size >= 1 && *c.packet_size <= kMaxPacketSize);
          return {"setopts", id(c.id), describe(c.active), c.packet_size.value_or(0)};
        } else if constexpr (std::is_same_v<T, RecvCommand>) {
          FUZZ_CHECK(c.timeout.count() >= 0 && c.timeout.count() <= kMaxRecvTimeoutMs);
          return {"recv", id(c.id), c.timeout.count()};
        } else if constexpr (std::is_same_v<T, PeernameCommand>) {
          return {"peername", id(c.id)};
        } else if constexpr (std::is_same_v<T, SocknameCommand>) {
          return {"sockname", id(c.id)};
        } else if constexpr (std::is_same_v<T, InfoCommand>) {
          return {"info", id(c.id)};
        } else if constexpr (std::is_same_v<T, ResolveCommand>) {
          if (c.address) {
            FUZZ_CHECK(is_ip_literal(*c.address) && c.address->find('\0') == std::string::npos);
          }
          return {"resolve", c.address.value_or("<unset>")};
        } else if constexpr (std::is_same_v<T, StopCommand>) {
          return {"stop"};
        } else if constexpr (std::is_same_v<T, TlsContextCommand>) {
          FUZZ_CHECK(!c.name.empty() && c.name.size() <= kMaxContextName);
          return {"tls_context", c.name, describe(c.settings)};
        } else if constexpr (std::is_same_v<T, StarttlsCommand>) {
          FUZZ_CHECK(c.tls.kind != TlsChoice::Kind::plain);
          return {"starttls", id(c.id), static_cast<int>(c.side), describe(c.tls),
                  describe(c.timeouts)};
        } else if constexpr (std::is_same_v<T, StoptlsCommand>) {
          return {"stoptls", id(c.id), millis(c.timeout, 1, kMaxTimeoutMs)};
        } else if constexpr (std::is_same_v<T, InjectCaCommand>) {
          FUZZ_CHECK(c.cacertfile.empty() != c.cacert.empty());
          return {"inject_ca", id(c.id), c.cacertfile, c.cacert};
        } else if constexpr (std::is_same_v<T, CiphersCommand>) {
          return {"ciphers", id(c.id)};
        } else if constexpr (std::is_same_v<T, AnswerCommand>) {
          FUZZ_CHECK(c.request >= 1 && c.request <= static_cast<std::uint64_t>(INT64_MAX));
          FUZZ_CHECK(c.password.has_value() != c.accept.has_value());
          return {"answer", c.request, c.password.value_or("<unset>"), c.accept.value_or(false)};
        } else if constexpr (std::is_same_v<T, StatsCommand>) {
          return {"stats"};
        } else {
          static_assert(std::is_same_v<T, ReloadCommand>);
          return {"reload"};
        }
      },
      command);
}

/// Checks one parse result and describes it.
json describe(const json& message, const ParsedCommand& p) {
  FUZZ_CHECK(p.command.has_value() != p.error.has_value());
  if (p.error) {
    FUZZ_CHECK(p.error->is(ErrorKind::bad_request) || p.error->is(ErrorKind::unsupported_protocol));
    FUZZ_CHECK(!p.error->message.empty());
    return {p.ref, p.error->kind(), p.error->message};
  }
  FUZZ_CHECK(message.is_object());
  const auto ref = message.find("ref");
  if (ref == message.end() || ref->is_null()) {
    FUZZ_CHECK(p.ref.is_null());
  } else {
    FUZZ_CHECK(p.ref == *ref);
  }
  FUZZ_CHECK(message.contains("op") && message["op"].is_string());
  return {p.ref, describe(*p.command)};
}

/// Parses a message twice; the two results must agree.
void parse_twice(const json& message) {
  const json first = describe(message, parse_command(message));
  const json second = describe(message, parse_command(message));
  FUZZ_CHECK(first == second);
}

}  // namespace
}  // namespace tlsport::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace tlsport::fuzz;
  const std::string_view term(reinterpret_cast<const char*>(data), size);

  // As the daemon sees it: one CONTROL frame.
  std::string frame = {0, 0, 0, 0, static_cast<char>(kFrameControl)};
  frame += term;
  const std::size_t body = frame.size() - 4;
  for (int i = 0; i < 4; ++i) frame[i] = static_cast<char>(body >> (8 * (3 - i)));
  ControlDecoder decoder(ControlEncoding::binary, 4, std::size_t{1} << 30);
  const auto e = decoder.feed(
      frame,
      [](InboundMessage& m) {
        parse_twice(m.command);
        return true;
      },
      [](ControlError, const std::string&) {});
  FUZZ_CHECK(!e);

  // As a bare value: binaries and unnormalised data reach the parser too.
  json raw;
  std::string error;
  if (!term.empty() && static_cast<std::uint8_t>(term[0]) == 131) {
    if (etf::decode(term, raw, error)) parse_twice(raw);
  } else {
    raw = json::parse(term.begin(), term.end(), nullptr, false);
    if (!raw.is_discarded()) parse_twice(raw);
  }
  return 0;
}
