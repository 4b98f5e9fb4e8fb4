// Parsing of the `tls` field and of seed 004's SSLFlags string.
#include "protocol/tls_settings.hpp"

#include <arpa/inet.h>

#include <cctype>
#include <vector>

#include "protocol/field_reader.hpp"

namespace tlsport::protocol {
namespace {

using nlohmann::json;

WireError bad_request(std::string message) {
  return wire_error(ErrorKind::bad_request, std::move(message));
}

/// "tlsv1.2" -> TLS 1.2; versions below 1.2 are unsupported_protocol.
std::optional<WireError> parse_version(const std::string& text, TlsVersion& out) {
  std::string v;
  for (char c : text) v += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (v == "tlsv1.2" || v == "tls1.2") {
    out = TlsVersion::tls1_2;
  } else if (v == "tlsv1.3" || v == "tls1.3") {
    out = TlsVersion::tls1_3;
  } else if (v == "sslv2" || v == "sslv3" || v == "tlsv1" || v == "tlsv1.0" || v == "tlsv1.1" ||
             v == "tls1" || v == "tls1.1") {
    return wire_error(ErrorKind::unsupported_protocol,
                      text + " is not supported: use tlsv1.2 or tlsv1.3");
  } else {
    return bad_request("unknown TLS version \"" + text + "\" (use tlsv1.2 or tlsv1.3)");
  }
  return std::nullopt;
}

/// verify_hostname: a name, or false to turn the host check off.
void read_verify_hostname(FieldReader& fields, TlsSettings& out) {
  const json* v = fields.value("verify_hostname");
  if (v == nullptr) return;
  if (v->is_boolean() && !v->get<bool>()) {
    out.check_hostname = false;
  } else if (v->is_string() && !v->get<std::string>().empty()) {
    out.verify_hostname = v->get<std::string>();
  } else {
    fields.fail("verify_hostname", "must be a host name, or false to turn the check off");
  }
}

/// The string fields of a `tls` object, with where each goes.
void read_strings(FieldReader& fields, TlsSettings& out) {
  const std::pair<const char*, std::string*> strings[] = {
      {"certfile", &out.certfile},         {"keyfile", &out.keyfile},
      {"password", &out.password},         {"cacertfile", &out.cacertfile},
      {"cacertdir", &out.cacertdir},       {"ciphers", &out.ciphers},
      {"ciphersuites", &out.ciphersuites}, {"logfile", &out.logfile}};
  for (const auto& [name, field] : strings) {
    if (auto v = fields.string(name)) *field = std::move(*v);
  }
}

/// The fields of a `tls` object into `out` (SSLFlags first: fields override them).
std::optional<WireError> parse_tls_object(const json& object, TlsSettings& out) {
  FieldReader fields(object, "tls");
  if (auto flags = fields.string("flags")) {
    if (auto err = parse_ssl_flags(*flags, out)) return err;
  }
  read_strings(fields, out);
  if (auto v = fields.integer("verify", 0, 2)) out.verify = static_cast<int>(*v);
  if (auto v = fields.integer("depth", 0, 100)) out.depth = static_cast<int>(*v);
  for (auto [name, field] :
       {std::pair{"min_version", &out.min_version}, std::pair{"max_version", &out.max_version}}) {
    if (auto v = fields.string(name)) {
      if (auto err = parse_version(*v, *field)) fields.fail(std::move(*err));
    }
  }
  if (auto v = fields.string("server_name")) out.server_name = std::move(*v);
  read_verify_hostname(fields, out);
  if (auto err = fields.finish()) return err;
  if (out.max_version != TlsVersion::unset && out.max_version < out.min_version)
    return bad_request("tls.max_version is below tls.min_version");
  return std::nullopt;
}

}  // namespace

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  // inet_pton() stops at a NUL: "127.0.0.1\0junk" is not an address.
  if (host.find('\0') != std::string::npos) return false;
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

int TlsSettings::effective_verify(TlsRole role) const {
  if (verify) return *verify;
  return role == TlsRole::client && !legacy_flags ? 2 : 0;
}

std::string TlsSettings::context_key() const {
  // Each field length-prefixed: file names and passwords are bytes (not
  // always UTF-8, so no JSON text), and no field can run into the next.
  std::string key;
  auto add = [&key](const std::string& field) {
    key += std::to_string(field.size());
    key += ':';
    key += field;
  };
  for (const std::string* field :
       {&certfile, &keyfile, &password, &cacertfile, &cacertdir, &ciphers, &ciphersuites}) {
    add(*field);
  }
  for (const int number : {verify.value_or(-1), depth.value_or(-1), static_cast<int>(min_version),
                           static_cast<int>(max_version), legacy_flags ? 1 : 0}) {
    add(std::to_string(number));
  }
  return key;
}

std::string TlsSettings::sni_for(const std::string& host) const {
  if (server_name) return *server_name;
  return is_ip_literal(host) ? std::string() : host;
}

std::string TlsSettings::hostname_check_for(const std::string& host) const {
  if (effective_verify(TlsRole::client) == 0 || !check_hostname) return std::string();
  if (verify_hostname) return *verify_hostname;
  if (server_name && !server_name->empty()) return *server_name;
  return host;
}

std::optional<WireError> parse_ssl_flags(std::string_view flags, TlsSettings& out) {
  std::vector<std::string_view> words;
  for (std::size_t i = 0; i < flags.size();) {
    while (i < flags.size() && std::isspace(static_cast<unsigned char>(flags[i]))) ++i;
    std::size_t start = i;
    while (i < flags.size() && !std::isspace(static_cast<unsigned char>(flags[i]))) ++i;
    if (i > start) words.push_back(flags.substr(start, i - start));
  }
  out.legacy_flags = true;
  bool cert_seen = false;
  for (std::size_t i = 0; i < words.size(); ++i) {
    std::string flag(words[i]);
    if (i + 1 >= words.size()) return bad_request("SSLFlags: " + flag + " needs an argument");
    std::string arg(words[++i]);
    if (flag == "-cert") {
      // The seed's own example passes the key as a second -cert.
      (cert_seen && out.keyfile.empty() ? out.keyfile : out.certfile) = arg;
      cert_seen = true;
    } else if (flag == "-key") {
      out.keyfile = arg;
    } else if (flag == "-cipher") {
      out.ciphers = arg;
    } else if (flag == "-verify") {
      if (arg != "0" && arg != "1" && arg != "2")
        return bad_request("SSLFlags: -verify must be 0, 1 or 2");
      out.verify = arg[0] - '0';
    } else if (flag == "-log") {
      out.logfile = arg;
    } else if (flag == "-cacert") {
      out.cacertfile = arg;
    } else {
      return bad_request("SSLFlags: unknown flag " + flag +
                         " (known: -cert -key -cipher -verify -log -cacert)");
    }
  }
  return std::nullopt;
}

std::optional<WireError> parse_tls_choice(const json* field, TlsChoice& out) {
  out = TlsChoice{};
  if (field == nullptr || field->is_null()) return std::nullopt;
  if (field->is_boolean()) {
    out.kind = field->get<bool>() ? TlsChoice::Kind::tls : TlsChoice::Kind::plain;
    return std::nullopt;
  }
  if (!field->is_object()) return bad_request("tls must be an object or false");
  out.kind = TlsChoice::Kind::tls;
  return parse_tls_object(*field, out.settings);
}

}  // namespace tlsport::protocol
