// Typed commands and TLS settings: bytes of the control channel (JSON lines,
// binary frames with ETF terms) through the decoder into parse_command(),
// at every split; defaults, caps, unknown fields, SSLFlags, the host-name
// rules; the replies and events of protocol/messages.hpp.
#include <gtest/gtest.h>

#include <cerrno>
#include <string>
#include <vector>

#include "protocol/commands.hpp"
#include "protocol/control_codec.hpp"
#include "protocol/messages.hpp"

using namespace tlsport::protocol;
using nlohmann::json;

namespace {

/// The messages a decoder produces from `bytes`, fed in two pieces split at `split`.
std::vector<json> decode(ControlEncoding encoding, const std::string& bytes, std::size_t split) {
  ControlDecoder decoder(encoding, 4, 1 << 20);
  std::vector<json> out;
  auto on_message = [&](InboundMessage& m) {
    out.push_back(m.command);
    return true;
  };
  auto on_bad = [](ControlError, const std::string& detail) { ADD_FAILURE() << detail; };
  decoder.feed(std::string_view(bytes).substr(0, split), on_message, on_bad);
  decoder.feed(std::string_view(bytes).substr(split), on_message, on_bad);
  return out;
}

/// Parses one JSON line, checking that every split of its bytes parses the same.
ParsedCommand parse_line(const std::string& line) {
  std::string bytes = line + "\n";
  std::vector<json> first = decode(ControlEncoding::lines, bytes, 0);
  EXPECT_EQ(first.size(), 1u) << line;
  for (std::size_t split = 1; split < bytes.size(); ++split)
    EXPECT_EQ(decode(ControlEncoding::lines, bytes, split), first) << "split at " << split;
  return parse_command(first.empty() ? json() : first.front());
}

template <class T>
T command_of(const std::string& line) {
  ParsedCommand parsed = parse_line(line);
  EXPECT_FALSE(parsed.error) << line << ": " << (parsed.error ? parsed.error->message : "");
  EXPECT_TRUE(parsed.command && std::holds_alternative<T>(*parsed.command)) << line;
  return parsed.command && std::holds_alternative<T>(*parsed.command) ? std::get<T>(*parsed.command)
                                                                      : T{};
}

/// The error of a command that must be refused.
WireError error_of(const std::string& line) {
  ParsedCommand parsed = parse_line(line);
  EXPECT_TRUE(parsed.error) << line << " was accepted";
  EXPECT_FALSE(parsed.command);
  return parsed.error.value_or(WireError{});
}

bool mentions(const WireError& e, const std::string& text) {
  return e.message.find(text) != std::string::npos;
}

}  // namespace

TEST(Commands, HelloNamesAndItsCap) {
  EXPECT_FALSE(command_of<HelloCommand>(R"({"op":"hello","ref":1})").name);
  EXPECT_EQ(*command_of<HelloCommand>(R"({"op":"hello","name":"w1"})").name, "w1");
  EXPECT_FALSE(command_of<HelloCommand>(R"({"op":"hello","name":""})").name);
  WireError e = error_of(R"({"op":"hello","name":")" + std::string(256, 'x') + R"("})");
  EXPECT_EQ(e.kind(), "bad_request");
  EXPECT_TRUE(mentions(e, "name"));
}

TEST(Commands, ListenDefaultsAndFields) {
  auto c = command_of<ListenCommand>(R"({"op":"listen","port":0})");
  EXPECT_EQ(c.host, "0.0.0.0");
  EXPECT_EQ(c.port, 0);
  EXPECT_EQ(c.backlog, 128u);
  EXPECT_EQ(c.framing.kind, FramingKind::raw);
  EXPECT_EQ(c.packet_size, kDefaultPacketSize);
  EXPECT_FALSE(c.timeouts.handshake);
  EXPECT_FALSE(c.active);
  EXPECT_EQ(c.tls.kind, TlsChoice::Kind::absent);

  c = command_of<ListenCommand>(
      R"({"op":"listen","ref":"r","host":"localhost","port":443,"backlog":5,"mode":"packet:2",)"
      R"("packet_size":1000,"handshake_timeout_ms":250,"active":"once","tls":false})");
  EXPECT_EQ(c.host, "127.0.0.1");
  EXPECT_EQ(c.port, 443);
  EXPECT_EQ(c.backlog, 5u);
  EXPECT_EQ(c.framing.kind, FramingKind::packet);
  EXPECT_EQ(c.framing.header_bytes, 2u);
  EXPECT_EQ(c.packet_size, 1000u);
  EXPECT_EQ(c.timeouts.handshake->count(), 250);
  EXPECT_TRUE(c.active->once);
  EXPECT_EQ(c.tls.kind, TlsChoice::Kind::plain);
  EXPECT_EQ(command_of<ListenCommand>(R"({"op":"listen","port":1,"host":"::1"})").host, "::1");
}

TEST(Commands, ListenRefusalsNameTheField) {
  EXPECT_TRUE(mentions(error_of(R"({"op":"listen"})"), "port"));
  EXPECT_TRUE(mentions(error_of(R"({"op":"listen","port":65536})"), "port"));
  EXPECT_TRUE(mentions(error_of(R"({"op":"listen","port":"80"})"), "port"));
  EXPECT_TRUE(mentions(error_of(R"({"op":"listen","port":0,"host":"example.org"})"), "host"));
  EXPECT_TRUE(mentions(error_of(R"({"op":"listen","port":0,"mode":"packet:3"})"), "mode"));
  EXPECT_TRUE(mentions(error_of(R"({"op":"listen","port":0,"packet_size":0})"), "packet_size"));
  EXPECT_TRUE(
      mentions(error_of(R"({"op":"listen","port":0,"packet_size":1073741825})"), "packet_size"));
  EXPECT_TRUE(mentions(error_of(R"({"op":"listen","port":0,"backlog":0})"), "backlog"));
  EXPECT_TRUE(mentions(error_of(R"({"op":"listen","port":0,"handshake_timeout_ms":1.5})"),
                       "handshake_timeout_ms"));
}

TEST(Commands, UnknownFieldsAreRefusedAndNamed) {
  WireError e = error_of(R"({"op":"listen","port":0,"packet_sise":10})");
  EXPECT_EQ(e.kind(), "bad_request");
  EXPECT_TRUE(mentions(e, "unknown field \"packet_sise\" in listen")) << e.message;
  EXPECT_TRUE(mentions(e, "packet_size"));  // the known fields are listed
  e = error_of(R"({"op":"connect","host":"h","port":1,"tls":{"cafile":"ca.pem"}})");
  EXPECT_TRUE(mentions(e, "unknown field \"cafile\" in tls")) << e.message;
  EXPECT_TRUE(
      mentions(error_of(R"({"op":"connect","host":"h","port":1,"tls":{"verfy":0}})"), "\"verfy\""));
  EXPECT_TRUE(mentions(error_of(R"({"op":"stop","now":true})"), "\"now\" in stop"));
  // A hostile key is quoted only in part.
  e = error_of(R"({"op":"stop",")" + std::string(5000, 'k') + R"(":1})");
  EXPECT_LT(e.message.size(), 300u);
}

TEST(Commands, NullIsAbsent) {
  auto c = command_of<ConnectCommand>(
      R"({"op":"connect","host":"h","port":1,"tls":null,"mode":null,"active":null,"ref":null})");
  EXPECT_EQ(c.tls.kind, TlsChoice::Kind::absent);
  EXPECT_EQ(c.framing.kind, FramingKind::raw);
}

TEST(Commands, RefAndOp) {
  ParsedCommand p = parse_line(R"({"op":"hello","ref":1.5})");
  EXPECT_TRUE(p.error && mentions(*p.error, "ref"));
  EXPECT_TRUE(p.ref.is_null());
  p = parse_line(R"({"op":"frobnicate","ref":7})");
  EXPECT_TRUE(p.error && mentions(*p.error, "unknown op \"frobnicate\""));
  EXPECT_EQ(p.ref, 7);  // the error still reaches the caller
  EXPECT_TRUE(mentions(error_of(R"({"ref":1})"), "missing op"));
  EXPECT_TRUE(mentions(error_of(R"({"op":"accept","id":3})"), "needs a ref"));
  EXPECT_EQ(command_of<AcceptCommand>(R"({"op":"accept","id":3,"ref":"a"})").id, 3u);
}

// An address is the whole string: inet_pton() reads up to a NUL, so
// "127.0.0.1\u0000junk" must not pass for 127.0.0.1.
TEST(Commands, AddressWithNulIsRefused) {
  EXPECT_FALSE(is_ip_literal(std::string("127.0.0.1\0junk", 14)));
  EXPECT_FALSE(is_ip_literal(std::string("::1\0", 4)));
  EXPECT_TRUE(is_ip_literal("::1"));
  EXPECT_EQ(error_of(R"({"op":"listen","port":0,"host":"127.0.0.1\u0000junk"})").kind(),
            "bad_request");
  EXPECT_EQ(error_of(R"({"op":"resolve","address":"10.0.0.1\u0000"})").kind(), "bad_request");
}

TEST(Commands, ConnectDefaultsAndCaps) {
  auto c = command_of<ConnectCommand>(R"({"op":"connect","host":"example.org","port":443})");
  EXPECT_EQ(c.timeout.count(), 30000);
  EXPECT_EQ(c.tls.kind, TlsChoice::Kind::absent);
  EXPECT_EQ(error_of(R"({"op":"connect","host":"127.0.0.1"})").kind(), "bad_request");
  EXPECT_EQ(error_of(R"({"op":"connect","port":1})").kind(), "bad_request");
  EXPECT_TRUE(mentions(error_of(R"({"op":"connect","port":0,"host":"h"})"), "port"));
  EXPECT_TRUE(mentions(
      error_of(R"({"op":"connect","port":1,"host":")" + std::string(254, 'a') + R"("})"), "host"));
  EXPECT_TRUE(
      mentions(error_of(R"({"op":"connect","port":1,"host":"h","timeout_ms":0})"), "timeout_ms"));
}

TEST(Commands, ActiveModes) {
  auto active = [](const std::string& v) {
    return command_of<SetoptsCommand>(R"({"op":"setopts","id":1,"active":)" + v + "}").active;
  };
  EXPECT_EQ(active("true")->count, -1);
  EXPECT_EQ(active("false")->count, 0);
  EXPECT_TRUE(active("\"once\"")->once);
  EXPECT_EQ(active("7")->count, 7);
  EXPECT_EQ(active("2147483647")->count, 2147483647);
  for (const char* bad : {"0", "-1", "2147483648", "\"twice\"", "1.0", "[1]"})
    EXPECT_TRUE(mentions(error_of(std::string(R"({"op":"setopts","id":1,"active":)") + bad + "}"),
                         "active"))
        << bad;
}

TEST(Commands, SocketIds) {
  EXPECT_EQ(command_of<CloseCommand>(R"({"op":"close","id":4294967295})").id, 4294967295u);
  for (const char* bad : {"0", "4294967296", "\"x\"", "-3"})
    EXPECT_TRUE(mentions(error_of(std::string(R"({"op":"close","id":)") + bad + "}"), "id"));
  EXPECT_TRUE(mentions(error_of(R"({"op":"info"})"), "id is missing"));
}

TEST(Commands, DeliverTextBecomesData) {
  EXPECT_EQ(command_of<DeliverCommand>(R"({"op":"deliver","id":2,"text":"hi"})").data, "hi");
  EXPECT_EQ(command_of<DeliverCommand>(R"({"op":"deliver","id":2,"data":"aGk="})").data, "hi");
  EXPECT_EQ(error_of(R"({"op":"deliver","id":2})").kind(), "bad_request");
  EXPECT_EQ(error_of(R"({"op":"deliver","id":2,"text":5})").kind(), "bad_request");
}

TEST(Commands, ControllingProcessTargets) {
  auto c = command_of<ControllingProcessCommand>(R"({"op":"controlling_process","id":1,"to":7})");
  EXPECT_EQ(std::get<std::uint32_t>(c.to), 7u);
  c = command_of<ControllingProcessCommand>(R"({"op":"controlling_process","id":1,"to":"w2"})");
  EXPECT_EQ(std::get<std::string>(c.to), "w2");
  EXPECT_TRUE(mentions(error_of(R"({"op":"controlling_process","id":1,"to":0})"), "to"));
  EXPECT_TRUE(mentions(error_of(R"({"op":"controlling_process","id":1})"), "to"));
}

TEST(Commands, RecvResolveCancel) {
  EXPECT_EQ(command_of<RecvCommand>(R"({"op":"recv","id":1})").timeout.count(), kMaxRecvTimeoutMs);
  EXPECT_EQ(command_of<RecvCommand>(R"({"op":"recv","id":1,"timeout_ms":0})").timeout.count(), 0);
  EXPECT_FALSE(command_of<ResolveCommand>(R"({"op":"resolve"})").address);
  EXPECT_EQ(*command_of<ResolveCommand>(R"({"op":"resolve","address":"::1"})").address, "::1");
  EXPECT_TRUE(mentions(error_of(R"({"op":"resolve","address":"nope"})"), "address"));
  EXPECT_EQ(command_of<CancelCommand>(R"({"op":"cancel","target":"a1"})").target, "a1");
  EXPECT_TRUE(mentions(error_of(R"({"op":"cancel","target":[1]})"), "target"));
}

TEST(Commands, EtfFromErlang) {
  // term_to_binary(#{op => listen, port => 0, mode => <<"packet:2">>, tls => false}) on OTP 25.
  static const char kTerm[] =
      "\x83\x74\x00\x00\x00\x04"
      "\x64\x00\x02op\x64\x00\x06listen"
      "\x64\x00\x04port\x61\x00"
      "\x64\x00\x04mode\x6d\x00\x00\x00\x08packet:2"
      "\x64\x00\x03tls\x64\x00\x05"
      "false";
  std::string term(kTerm, sizeof kTerm - 1);
  std::string body = std::string(1, '\0') + term;
  std::string frame = std::string(3, '\0') + static_cast<char>(body.size()) + body;
  for (std::size_t split = 0; split <= frame.size(); ++split) {
    std::vector<json> messages = decode(ControlEncoding::binary, frame, split);
    ASSERT_EQ(messages.size(), 1u) << split;
    ParsedCommand parsed = parse_command(messages.front());
    ASSERT_FALSE(parsed.error) << parsed.error->message;
    const auto& listen = std::get<ListenCommand>(*parsed.command);
    EXPECT_EQ(listen.framing.header_bytes, 2u);
    EXPECT_EQ(listen.tls.kind, TlsChoice::Kind::plain);
  }
}

TEST(TlsSettings, FieldsAndRefusals) {
  auto c = command_of<ConnectCommand>(
      R"({"op":"connect","host":"h","port":1,"tls":{"certfile":"c.pem","keyfile":"k.pem",)"
      R"("password":"pw","cacertfile":"ca.pem","cacertdir":"d","verify":1,"depth":3,)"
      R"("ciphers":"HIGH","ciphersuites":"TLS_AES_128_GCM_SHA256","min_version":"tlsv1.3",)"
      R"("server_name":"sni.example","logfile":"/tmp/l"}})");
  const TlsSettings& s = c.tls.settings;
  EXPECT_EQ(c.tls.kind, TlsChoice::Kind::tls);
  EXPECT_EQ(s.certfile, "c.pem");
  EXPECT_EQ(s.password, "pw");
  EXPECT_EQ(*s.verify, 1);
  EXPECT_EQ(*s.depth, 3);
  EXPECT_EQ(s.min_version, TlsVersion::tls1_3);
  EXPECT_EQ(*s.server_name, "sni.example");
  auto tls = [](const std::string& object) {
    return error_of(R"({"op":"connect","host":"h","port":1,"tls":)" + object + "}");
  };
  EXPECT_TRUE(mentions(tls(R"({"verify":3})"), "tls.verify"));
  EXPECT_TRUE(mentions(tls(R"({"certfile":5})"), "tls.certfile"));
  EXPECT_EQ(tls(R"({"min_version":"tlsv1"})").kind(), "unsupported_protocol");
  EXPECT_EQ(tls(R"({"max_version":"sslv3"})").kind(), "unsupported_protocol");
  EXPECT_TRUE(mentions(tls(R"({"min_version":"tlsv1.3","max_version":"tlsv1.2"})"), "below"));
  EXPECT_TRUE(mentions(tls(R"({"verify_hostname":""})"), "verify_hostname"));
  EXPECT_TRUE(mentions(tls(R"({"verify_hostname":true})"), "verify_hostname"));
  EXPECT_TRUE(mentions(tls("[]"), "tls must be"));
  EXPECT_EQ(
      command_of<ConnectCommand>(R"({"op":"connect","host":"h","port":1,"tls":true})").tls.kind,
      TlsChoice::Kind::tls);
}

TEST(TlsSettings, HostNameCheckAndSni) {
  TlsSettings s;
  EXPECT_EQ(s.sni_for("example.org"), "example.org");
  EXPECT_EQ(s.sni_for("127.0.0.1"), "");
  EXPECT_EQ(s.hostname_check_for("example.org"), "example.org");
  EXPECT_EQ(s.hostname_check_for("127.0.0.1"), "127.0.0.1");
  s.server_name = "";  // SNI off: the check stays, against the host
  EXPECT_EQ(s.sni_for("example.org"), "");
  EXPECT_EQ(s.hostname_check_for("example.org"), "example.org");
  s.server_name = "front.example";
  EXPECT_EQ(s.sni_for("10.0.0.1"), "front.example");
  EXPECT_EQ(s.hostname_check_for("10.0.0.1"), "front.example");
  s.verify_hostname = "cert.example";
  EXPECT_EQ(s.hostname_check_for("10.0.0.1"), "cert.example");
  s.check_hostname = false;  // only "verify_hostname": false turns it off...
  EXPECT_EQ(s.hostname_check_for("10.0.0.1"), "");
  TlsSettings unverified;  // ...or verify 0
  unverified.verify = 0;
  EXPECT_EQ(unverified.hostname_check_for("example.org"), "");
  auto c = command_of<ConnectCommand>(
      R"({"op":"connect","host":"h","port":1,"tls":{"verify_hostname":false}})");
  EXPECT_FALSE(c.tls.settings.check_hostname);
  EXPECT_EQ(c.tls.settings.hostname_check_for("h"), "");
}

TEST(TlsSettings, SslFlagsOfSeed004) {
  TlsSettings s;
  ASSERT_FALSE(
      parse_ssl_flags("  -cert c.pem   -cert k.pem -verify 1 -cipher RC4 -log /tmp/x ", s));
  EXPECT_EQ(s.certfile, "c.pem");
  EXPECT_EQ(s.keyfile, "k.pem");  // the seed's example passes the key as a second -cert
  EXPECT_EQ(*s.verify, 1);
  EXPECT_EQ(s.ciphers, "RC4");
  EXPECT_EQ(s.logfile, "/tmp/x");
  EXPECT_TRUE(s.legacy_flags);
  TlsSettings d;
  ASSERT_FALSE(parse_ssl_flags("-cert c.pem", d));
  EXPECT_EQ(d.effective_verify(TlsRole::client), 0);  // the seed's -verify 0 default
  EXPECT_EQ(TlsSettings{}.effective_verify(TlsRole::client), 2);
  EXPECT_EQ(TlsSettings{}.effective_verify(TlsRole::server), 0);
  TlsSettings bad;
  EXPECT_TRUE(mentions(*parse_ssl_flags("-verify 7", bad), "-verify"));
  EXPECT_TRUE(mentions(*parse_ssl_flags("-cert", bad), "needs an argument"));
  EXPECT_TRUE(mentions(*parse_ssl_flags("-frob x", bad), "unknown flag -frob"));
  // Fields override the flags.
  auto c = command_of<AcceptCommand>(
      R"({"op":"accept","ref":1,"id":1,"tls":{"flags":"-cert a.pem -verify 2","verify":0}})");
  EXPECT_EQ(c.tls.settings.certfile, "a.pem");
  EXPECT_EQ(*c.tls.settings.verify, 0);
}

TEST(TlsSettings, ContextKeyTellsContextsApart) {
  TlsSettings a, b;
  EXPECT_EQ(a.context_key(), b.context_key());
  b.server_name = "x";  // per connection: same context
  b.logfile = "/tmp/l";
  EXPECT_EQ(a.context_key(), b.context_key());
  b.cacertfile = "ca.pem";
  EXPECT_NE(a.context_key(), b.context_key());
}

// A server's session context: sessions resume across listeners that let in
// the same clients, whatever else differs, and never across different trust.
TEST(TlsSettings, TrustKeyCoversWhoIsLetIn) {
  TlsSettings a;
  TlsSettings b;
  b.ticket_keys = {"k2", "k1"};  // a rotation
  b.ciphersuites = "TLS_AES_128_GCM_SHA256";
  b.certfile = "other.pem";
  b.alpn = {"h2"};
  EXPECT_EQ(a.trust_key(), b.trust_key());
  TlsSettings verify0;
  verify0.verify = 0;  // the server's default, spelt out
  EXPECT_EQ(a.trust_key(), verify0.trust_key());
  auto differs = [&a](auto change) {
    TlsSettings c;
    change(c);
    return a.trust_key() != c.trust_key();
  };
  EXPECT_TRUE(differs([](TlsSettings& c) { c.verify = 2; }));
  EXPECT_TRUE(differs([](TlsSettings& c) { c.verify = 1; }));
  EXPECT_TRUE(differs([](TlsSettings& c) { c.cacertfile = "ca.pem"; }));
  EXPECT_TRUE(differs([](TlsSettings& c) { c.cacertdir = "/etc/ssl/certs"; }));
  EXPECT_TRUE(differs([](TlsSettings& c) { c.cacert = "-----BEGIN"; }));
  EXPECT_TRUE(differs([](TlsSettings& c) { c.crlfile = "crl.pem"; }));
  EXPECT_TRUE(differs([](TlsSettings& c) { c.depth = 1; }));
  EXPECT_TRUE(differs([](TlsSettings& c) { c.verify_callback = true; }));
  TlsSettings x;
  TlsSettings y;
  x.cacertfile = "ab";  // no field may run into the next
  y.cacertfile = "a";
  y.cacertdir = "b";
  EXPECT_NE(x.trust_key(), y.trust_key());
}

// File names, ciphers and passwords are bytes: an Erlang client may send any
// (a binary in ETF is not checked for UTF-8). The key must take them all, and
// keep them apart, rather than throw from the JSON dump it was once built with.
TEST(TlsSettings, ContextKeyTakesAnyBytes) {
  TlsSettings a, b;
  a.certfile = "\xff.pem";
  b.certfile = "\xfe.pem";
  std::string ka, kb;
  EXPECT_NO_THROW(ka = a.context_key());
  EXPECT_NO_THROW(kb = b.context_key());
  EXPECT_NE(ka, kb);
  TlsSettings c;
  c.certfile = "\xff.pem\",\"";  // no field may run into the next
  c.keyfile = "";
  TlsSettings d;
  d.certfile = "\xff.pem";
  d.keyfile = "\",\"";
  EXPECT_NE(c.context_key(), d.context_key());
}

// The same for the settings that came later: inline keys, SNI entries, ALPN
// names and ticket key files are bytes too, and lists must not run together.
TEST(TlsSettings, ContextKeyTakesAnyBytesInEveryField) {
  const TlsSettings base;
  std::vector<TlsSettings> variants(8);
  variants[0].cert = "\xff";
  variants[1].key = "\xff";
  variants[2].alpn = {"\xff"};
  variants[3].alpn = {"\xff", ""};
  variants[4].ticket_keys = {"\xfe"};
  variants[5].sni = {SniCertificate{{"\xff.example"}, "a.pem", "", "", "", ""}};
  variants[6].sni = {SniCertificate{{"\xff.example"}, "a.pem", "", "", "", "\xfe"}};
  variants[7].verify_callback = true;
  std::vector<std::string> keys = {base.context_key()};
  for (const TlsSettings& v : variants) {
    std::string key;
    EXPECT_NO_THROW(key = v.context_key());
    keys.push_back(key);
  }
  for (std::size_t i = 0; i < keys.size(); ++i)
    for (std::size_t j = i + 1; j < keys.size(); ++j) EXPECT_NE(keys[i], keys[j]) << i << " " << j;
  TlsSettings e, f;  // one list's items cannot pass for the next list's
  e.alpn = {"a", "b"};
  f.alpn = {"a"};
  f.ticket_keys = {"b"};
  EXPECT_NE(e.context_key(), f.context_key());
}

TEST(Messages, ErrorKindsOnTheWire) {
  EXPECT_EQ(wire_error(ErrorKind::bad_request, "x").kind(), "bad_request");
  EXPECT_EQ(wire_error(ErrorKind::unsupported_protocol, "x").kind(), "unsupported_protocol");
  EXPECT_EQ(wire_error(std::errc::message_size, "x").kind(), "emsgsize");
  EXPECT_EQ(WireError({std::error_code(ECONNREFUSED, std::system_category()), "x"}).kind(),
            "econnrefused");
  EXPECT_TRUE(wire_error(ErrorKind::tls, "x").is(ErrorKind::tls));
}

TEST(Messages, RepliesAndEvents) {
  EXPECT_EQ(ok_reply(7, {{"id", 3}}), json({{"ok", true}, {"ref", 7}, {"id", 3}}));
  EXPECT_EQ(ok_reply(nullptr), json({{"ok", true}}));
  WireError closed = wire_error(ErrorKind::closed, "peer closed inside a packet");
  EXPECT_EQ(error_reply("r", closed),
            json({{"ok", false},
                  {"ref", "r"},
                  {"error", {{"kind", "closed"}, {"message", "peer closed inside a packet"}}}}));
  EXPECT_EQ(deliver_error_reply(9, nullptr, closed)["id"], 9);
  EXPECT_EQ(socket_closed_event(4, nullptr),
            json({{"event", "socket_closed"}, {"id", 4}, {"reason", "normal"}}));
  EXPECT_EQ(socket_closed_event(4, &closed)["reason"]["kind"], "closed");
  EXPECT_EQ(passive_event(2), json({{"event", "passive"}, {"id", 2}}));
  OwnedFacts facts;
  facts.id = 5;
  facts.from = 1;
  facts.mode = "packet:2";
  facts.endpoint = {{"host", "127.0.0.1"}, {"port", 9}};
  json owned = owned_event(facts);
  EXPECT_EQ(owned["mode"], "packet:2");
  EXPECT_FALSE(owned.contains("from_name"));
  EXPECT_FALSE(owned.contains("busy"));
  facts.listener = true;
  facts.from_name = "acceptor";
  owned = owned_event(facts);
  EXPECT_TRUE(owned["listener"]);
  EXPECT_EQ(owned["sockname"]["port"], 9);
  EXPECT_EQ(owned["from_name"], "acceptor");
}

TEST(TlsSettings, IpLiterals) {
  EXPECT_TRUE(is_ip_literal("127.0.0.1"));
  EXPECT_TRUE(is_ip_literal("::1"));
  EXPECT_TRUE(is_ip_literal("fe80::1%lo"));  // a scoped IPv6 address
  EXPECT_FALSE(is_ip_literal("fe80::1%"));
  EXPECT_FALSE(is_ip_literal("127.0.0.1%lo"));
  EXPECT_FALSE(is_ip_literal("localhost"));
  EXPECT_FALSE(is_ip_literal(""));
}
