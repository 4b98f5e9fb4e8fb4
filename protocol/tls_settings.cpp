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
      {"certfile", &out.certfile},
      {"keyfile", &out.keyfile},
      {"cert", &out.cert},
      {"key", &out.key},
      {"password", &out.password},
      {"password_file", &out.password_file},
      {"dhparamfile", &out.dhparamfile},
      {"cacertfile", &out.cacertfile},
      {"cacertdir", &out.cacertdir},
      {"cacert", &out.cacert},
      {"crlfile", &out.crlfile},
      {"ciphers", &out.ciphers},
      {"ciphersuites", &out.ciphersuites},
      {"ocsp_response_file", &out.ocsp_response_file},
      {"keylog", &out.keylog},
      {"logfile", &out.logfile}};
  for (const auto& [name, field] : strings) {
    if (auto v = fields.string(name)) *field = std::move(*v);
  }
}

void read_booleans(FieldReader& fields, TlsSettings& out) {
  const std::pair<const char*, bool*> booleans[] = {
      {"ask_password", &out.ask_password},
      {"verify_callback", &out.verify_callback},
      {"session_reuse", &out.session_reuse},
      {"ocsp_status_request", &out.ocsp_status_request}};
  for (const auto& [name, field] : booleans) {
    if (auto v = fields.boolean(name)) *field = *v;
  }
}

/// One entry of `sni`: names and a certificate (file or inline), nothing else.
void read_sni_entry(const json& entry, std::size_t index, FieldReader& outer, SniCertificate& out) {
  std::string where = "tls.sni[" + std::to_string(index) + "]";
  FieldReader fields(entry, where, where + ".");
  out.names = fields.strings("names", kMaxSniNames, 253).value_or(std::vector<std::string>());
  const std::pair<const char*, std::string*> strings[] = {{"certfile", &out.certfile},
                                                          {"keyfile", &out.keyfile},
                                                          {"cert", &out.cert},
                                                          {"key", &out.key},
                                                          {"password", &out.password}};
  for (const auto& [name, field] : strings) {
    if (auto v = fields.string(name)) *field = std::move(*v);
  }
  if (fields.ok() && out.names.empty()) fields.fail("names", "must list at least one name");
  if (fields.ok() && out.certfile.empty() && out.cert.empty())
    fields.fail("certfile", "or cert must be given");
  if (auto error = fields.finish()) outer.fail(std::move(*error));
}

void read_sni(FieldReader& fields, TlsSettings& out) {
  const json* sni = fields.value("sni");
  if (sni == nullptr) return;
  if (!sni->is_array() || sni->size() > kMaxSniEntries) {
    fields.fail("sni", "must be a list of at most " + std::to_string(kMaxSniEntries) +
                           " {names, certfile|cert, keyfile|key} objects");
    return;
  }
  out.sni.resize(sni->size());
  for (std::size_t i = 0; i < sni->size() && fields.ok(); ++i)
    read_sni_entry((*sni)[i], i, fields, out.sni[i]);
}

/// The fields of a `tls` object into `out` (SSLFlags first: fields override them).
std::optional<WireError> parse_tls_object(const json& object, TlsSettings& out) {
  FieldReader fields(object, "tls", "tls.");
  if (auto flags = fields.string("flags")) {
    if (auto err = parse_ssl_flags(*flags, out)) return err;
  }
  read_strings(fields, out);
  read_booleans(fields, out);
  read_sni(fields, out);
  if (auto v = fields.integer("verify", 0, 2)) out.verify = static_cast<int>(*v);
  if (auto v = fields.integer("depth", 0, 100)) out.depth = static_cast<int>(*v);
  out.callback_timeout_ms = fields.integer("callback_timeout_ms", 1, kMaxCallbackTimeoutMs);
  for (auto [name, field] :
       {std::pair{"min_version", &out.min_version}, std::pair{"max_version", &out.max_version}}) {
    if (auto v = fields.string(name)) {
      if (auto err = parse_version(*v, *field)) fields.fail(std::move(*err));
    }
  }
  if (auto v = fields.strings("alpn", kMaxAlpnProtocols, 255)) out.alpn = std::move(*v);
  if (auto v = fields.strings("ticket_keys", kMaxTicketKeys, 4096)) out.ticket_keys = std::move(*v);
  if (auto v = fields.string("server_name")) out.server_name = std::move(*v);
  read_verify_hostname(fields, out);
  if (auto err = fields.finish()) return err;
  if (out.max_version != TlsVersion::unset && out.max_version < out.min_version)
    return bad_request("tls.max_version is below tls.min_version");
  if (!out.certfile.empty() && !out.cert.empty())
    return bad_request("tls.certfile and tls.cert are alternatives: give one");
  return std::nullopt;
}

/// -pass ARG in OpenSSL's pass-phrase syntax.
std::optional<WireError> parse_pass_argument(const std::string& arg, TlsSettings& out) {
  if (arg.rfind("pass:", 0) == 0) {
    out.password = arg.substr(5);
  } else if (arg.rfind("file:", 0) == 0) {
    out.password_file = arg.substr(5);
  } else if (arg.rfind("env:", 0) == 0) {
    out.password_env = arg.substr(4);
  } else {
    return bad_request("SSLFlags: -pass takes pass:TEXT, file:PATH or env:VAR");
  }
  return std::nullopt;
}

}  // namespace

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  // inet_pton() stops at a NUL: "127.0.0.1\0junk" is not an address.
  if (host.find('\0') != std::string::npos) return false;
  if (inet_pton(AF_INET, host.c_str(), buf) == 1) return true;
  // An IPv6 address may name its interface: fe80::1%eth0.
  std::string address = host.substr(0, host.find('%'));
  return inet_pton(AF_INET6, address.c_str(), buf) == 1 &&
         (address.size() == host.size() || host.size() > address.size() + 1);
}

void erase_secret(std::string& secret) {
  volatile char* bytes = secret.data();
  for (std::size_t i = 0; i < secret.size(); ++i) bytes[i] = 0;
  secret.clear();
}

TlsSettings::~TlsSettings() {
  erase_secret(password);
  erase_secret(key);
  for (auto& entry : sni) {
    erase_secret(entry.password);
    erase_secret(entry.key);
  }
}

int TlsSettings::effective_verify(TlsRole role) const {
  if (verify) return *verify;
  return role == TlsRole::client && !legacy_flags ? 2 : 0;
}

std::string TlsSettings::context_key() const {
  // Each field length-prefixed: file names, passwords and inline keys are
  // bytes (not always UTF-8, so no JSON text), and no field can run into the
  // next. Measured first, so that the key is one buffer: it holds secrets,
  // and a grown string would leave copies of them behind in freed memory.
  auto each_field = [this](auto&& add) {
    auto add_list = [&add](const std::vector<std::string>& list) {
      add(std::to_string(list.size()));
      for (const std::string& item : list) add(item);
    };
    for (const std::string* field :
         {&certfile, &keyfile, &cert, &key, &password, &password_file, &password_env, &dhparamfile,
          &cacertfile, &cacertdir, &cacert, &crlfile, &ciphers, &ciphersuites, &ocsp_response_file,
          &keylog})
      add(*field);
    add(std::to_string(sni.size()));
    for (const SniCertificate& entry : sni) {
      add_list(entry.names);
      for (const std::string* field :
           {&entry.certfile, &entry.keyfile, &entry.cert, &entry.key, &entry.password})
        add(*field);
    }
    add_list(alpn);
    add_list(ticket_keys);
    for (const int number :
         {verify.value_or(-1), depth.value_or(-1), verify_callback ? 1 : 0,
          static_cast<int>(min_version), static_cast<int>(max_version), legacy_flags ? 1 : 0})
      add(std::to_string(number));
  };
  std::size_t size = 0;
  each_field([&size](const std::string& field) {
    size += std::to_string(field.size()).size() + 1 + field.size();
  });
  std::string text;
  text.reserve(size);
  each_field([&text](const std::string& field) {
    text += std::to_string(field.size());
    text += ':';
    text += field;
  });
  return text;
}

std::string TlsSettings::trust_key() const {
  std::string text;
  for (const std::string& field :
       {cacertfile, cacertdir, cacert, crlfile, std::to_string(effective_verify(TlsRole::server)),
        std::to_string(depth.value_or(-1)), std::string(verify_callback ? "1" : "0")}) {
    text += std::to_string(field.size());
    text += ':';
    text += field;
  }
  return text;
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
    } else if (flag == "-pass") {
      if (auto err = parse_pass_argument(arg, out)) return err;
    } else {
      return bad_request("SSLFlags: unknown flag " + flag +
                         " (known: -cert -key -cipher -verify -log -cacert -pass)");
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
  if (field->is_string() && !field->get_ref<const std::string&>().empty() &&
      field->get_ref<const std::string&>().size() <= kMaxContextName) {
    out.kind = TlsChoice::Kind::named;
    out.name = field->get<std::string>();
    return std::nullopt;
  }
  if (!field->is_object())
    return bad_request("tls must be an object, false, or the name of a tls_context");
  out.kind = TlsChoice::Kind::tls;
  return parse_tls_object(*field, out.settings);
}

std::optional<WireError> parse_tls_settings(const json& object, TlsSettings& out) {
  out = TlsSettings{};
  if (!object.is_object()) return bad_request("tls must be an object");
  return parse_tls_object(object, out);
}

bool sni_name_matches(const std::string& pattern, const std::string& name) {
  auto equal = [](std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (std::tolower(static_cast<unsigned char>(a[i])) !=
          std::tolower(static_cast<unsigned char>(b[i])))
        return false;
    }
    return true;
  };
  if (pattern.rfind("*.", 0) != 0) return equal(pattern, name);
  std::string_view rest = std::string_view(pattern).substr(1);  // ".b.example"
  auto dot = name.find('.');
  return dot != std::string::npos && dot > 0 && equal(std::string_view(name).substr(dot), rest);
}

}  // namespace tlsport::protocol
