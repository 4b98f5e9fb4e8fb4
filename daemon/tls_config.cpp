#include "daemon/tls_config.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <vector>

namespace tlsport::daemon {
namespace {

using nlohmann::json;

ErrorInfo bad_request(const std::string& message) { return {"bad_request", message}; }

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::optional<ErrorInfo> parse_version(const std::string& text, int& out) {
  std::string v;
  for (char c : text) v += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (v == "tlsv1.2" || v == "tls1.2") {
    out = TLS1_2_VERSION;
  } else if (v == "tlsv1.3" || v == "tls1.3") {
    out = TLS1_3_VERSION;
  } else if (v == "sslv2" || v == "sslv3" || v == "tlsv1" || v == "tlsv1.0" || v == "tlsv1.1" ||
             v == "tls1" || v == "tls1.1") {
    return ErrorInfo{"unsupported_protocol", text + " is not supported: use tlsv1.2 or tlsv1.3"};
  } else {
    return bad_request("unknown TLS version \"" + text + "\" (use tlsv1.2 or tlsv1.3)");
  }
  return std::nullopt;
}

std::optional<ErrorInfo> parse_verify(const json& value, std::optional<int>& out) {
  if (!value.is_number_integer() || value.get<long long>() < 0 || value.get<long long>() > 2)
    return bad_request("tls.verify must be 0, 1 or 2");
  out = value.get<int>();
  return std::nullopt;
}

// Verify level 1 (seed 004): the check runs, but a failure because the
// issuer is unknown still lets the connection be established.
int verify_level1(int ok, X509_STORE_CTX* store) {
  if (ok) return 1;
  switch (X509_STORE_CTX_get_error(store)) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      return 1;
    default:
      return 0;
  }
}

int password_callback(char* buf, int size, int, void* userdata) {
  const auto* password = static_cast<const std::string*>(userdata);
  if (password == nullptr || password->empty()) return 0;
  int n = static_cast<int>(std::min<std::size_t>(password->size(), static_cast<std::size_t>(size)));
  std::memcpy(buf, password->data(), n);
  return n;
}

ErrorInfo config_error(const std::string& what) {
  return {"bad_tls_config", what + ": " + take_openssl_error("failed")};
}

}  // namespace

int TlsOptions::effective_verify(TlsRole role) const {
  if (verify) return *verify;
  return role == TlsRole::client && !legacy_flags ? 2 : 0;
}

std::optional<ErrorInfo> parse_ssl_flags(const std::string& flags, TlsOptions& out) {
  std::istringstream in(flags);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  out.legacy_flags = true;
  bool cert_seen = false;
  for (std::size_t i = 0; i < words.size(); ++i) {
    const std::string& flag = words[i];
    if (i + 1 >= words.size()) return bad_request("SSLFlags: " + flag + " needs an argument");
    const std::string& arg = words[++i];
    if (flag == "-cert") {
      // The seed's own example passes the key as a second -cert.
      if (cert_seen && out.keyfile.empty())
        out.keyfile = arg;
      else
        out.certfile = arg;
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
  // Seed 004: without -cipher, the SSL_CIPHER environment variable is used.
  if (out.ciphers.empty()) {
    if (const char* env = std::getenv("SSL_CIPHER")) out.ciphers = env;
  }
  return std::nullopt;
}

std::optional<ErrorInfo> parse_tls_options(const json* tls, TlsOptions& out) {
  out = TlsOptions{};
  if (tls == nullptr || tls->is_null()) return std::nullopt;
  if (tls->is_boolean()) {
    out.enabled = tls->get<bool>();
    return std::nullopt;
  }
  if (!tls->is_object()) return bad_request("tls must be an object or false");
  if (auto it = tls->find("flags"); it != tls->end()) {
    if (!it->is_string()) return bad_request("tls.flags must be a string");
    if (auto err = parse_ssl_flags(it->get<std::string>(), out)) return err;
  }
  const std::pair<const char*, std::string*> strings[] = {
      {"certfile", &out.certfile},         {"keyfile", &out.keyfile},
      {"password", &out.password},         {"cacertfile", &out.cacertfile},
      {"cacertdir", &out.cacertdir},       {"ciphers", &out.ciphers},
      {"ciphersuites", &out.ciphersuites}, {"logfile", &out.logfile}};
  for (const auto& [name, field] : strings) {
    auto it = tls->find(name);
    if (it == tls->end()) continue;
    if (!it->is_string()) return bad_request(std::string("tls.") + name + " must be a string");
    *field = it->get<std::string>();
  }
  for (const char* name : {"server_name", "verify_hostname"}) {
    auto it = tls->find(name);
    if (it == tls->end() || it->is_null()) continue;
    if (!it->is_string()) return bad_request(std::string("tls.") + name + " must be a string");
    (std::strcmp(name, "server_name") == 0 ? out.server_name : out.verify_hostname) =
        it->get<std::string>();
  }
  if (auto it = tls->find("verify"); it != tls->end()) {
    if (auto err = parse_verify(*it, out.verify)) return err;
  }
  if (auto it = tls->find("depth"); it != tls->end()) {
    if (!it->is_number_integer() || it->get<long long>() < 0 || it->get<long long>() > 100)
      return bad_request("tls.depth must be an integer from 0 to 100");
    out.depth = it->get<int>();
  }
  if (auto it = tls->find("min_version"); it != tls->end()) {
    if (!it->is_string()) return bad_request("tls.min_version must be a string");
    if (auto err = parse_version(it->get<std::string>(), out.min_version)) return err;
  }
  if (auto it = tls->find("max_version"); it != tls->end()) {
    if (!it->is_string()) return bad_request("tls.max_version must be a string");
    if (auto err = parse_version(it->get<std::string>(), out.max_version)) return err;
  }
  if (out.max_version != 0 && out.max_version < out.min_version)
    return bad_request("tls.max_version is below tls.min_version");
  return std::nullopt;
}

SslCtxPtr build_context(const TlsOptions& options, TlsRole role, ErrorInfo& error) {
  ERR_clear_error();
  SslCtxPtr ctx(SSL_CTX_new(TLS_method()), SslCtxDeleter{});
  if (!ctx) {
    error = config_error("cannot create a TLS context");
    return nullptr;
  }
  SSL_CTX* c = ctx.get();
  // Idle connections give their record buffers back; writes may be partial
  // and retried from a buffer that has grown in the meantime.
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  // One read() fetches as many records as are there, not a header then a
  // body; the buffer is still given back when it empties. Safe here: reading
  // always starts with SSL_read, never with a wait, once a socket may hold data.
  SSL_CTX_set_read_ahead(c, 1);
  SSL_CTX_set_min_proto_version(c, options.min_version);
  if (options.max_version != 0) SSL_CTX_set_max_proto_version(c, options.max_version);
  if (!options.ciphers.empty() && SSL_CTX_set_cipher_list(c, options.ciphers.c_str()) != 1) {
    error = config_error("bad cipher list \"" + options.ciphers + "\"");
    return nullptr;
  }
  if (!options.ciphersuites.empty() &&
      SSL_CTX_set_ciphersuites(c, options.ciphersuites.c_str()) != 1) {
    error = config_error("bad ciphersuites \"" + options.ciphersuites + "\"");
    return nullptr;
  }
  // The passphrase is needed only while the key is loaded below; never
  // prompt on the terminal when there is none.
  SSL_CTX_set_default_passwd_cb(c, password_callback);
  SSL_CTX_set_default_passwd_cb_userdata(c, const_cast<std::string*>(&options.password));
  if (!options.certfile.empty()) {
    if (SSL_CTX_use_certificate_chain_file(c, options.certfile.c_str()) != 1) {
      error = config_error("cannot load certificate " + options.certfile);
      return nullptr;
    }
    const std::string& keyfile = options.keyfile.empty() ? options.certfile : options.keyfile;
    if (SSL_CTX_use_PrivateKey_file(c, keyfile.c_str(), SSL_FILETYPE_PEM) != 1) {
      error = config_error("cannot load private key " + keyfile);
      return nullptr;
    }
    if (SSL_CTX_check_private_key(c) != 1) {
      error = config_error("private key does not match the certificate");
      return nullptr;
    }
  } else if (role == TlsRole::server) {
    error = {"bad_tls_config", "a TLS server needs a certificate (tls.certfile or -cert)"};
    return nullptr;
  }
  SSL_CTX_set_default_passwd_cb_userdata(c, nullptr);
  int verify = options.effective_verify(role);
  if (!options.cacertfile.empty() || !options.cacertdir.empty()) {
    if (SSL_CTX_load_verify_locations(
            c, options.cacertfile.empty() ? nullptr : options.cacertfile.c_str(),
            options.cacertdir.empty() ? nullptr : options.cacertdir.c_str()) != 1) {
      error = config_error("cannot load CA certificates");
      return nullptr;
    }
    if (role == TlsRole::server && !options.cacertfile.empty()) {
      // Tell clients which CAs we accept.
      if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(options.cacertfile.c_str()))
        SSL_CTX_set_client_CA_list(c, names);
    }
  } else if (verify > 0) {
    // The system store; honours SSL_CERT_FILE and SSL_CERT_DIR.
    SSL_CTX_set_default_verify_paths(c);
  }
  ERR_clear_error();
  int mode = SSL_VERIFY_NONE;
  if (verify >= 1) mode = SSL_VERIFY_PEER;
  if (verify == 2 && role == TlsRole::server) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  SSL_CTX_set_verify(c, mode, verify == 1 ? verify_level1 : nullptr);
  if (options.depth) SSL_CTX_set_verify_depth(c, *options.depth);
  if (role == TlsRole::server) {
    static const unsigned char kSessionContext[] = "tlsportd";
    SSL_CTX_set_session_id_context(c, kSessionContext, sizeof kSessionContext - 1);
    // Resumption is mostly by stateless tickets; the cache serves TLS 1.2
    // clients that resume by session id, bounded well below OpenSSL's
    // default of 20480 sessions (~1 KB each plus peer certificates).
    SSL_CTX_sess_set_cache_size(c, 1024);
  }
  return ctx;
}

SslCtxPtr ContextCache::get(const TlsOptions& o, ErrorInfo& error) {
  // Everything that shapes the context; SNI and host name are per connection.
  json key = {o.certfile,           o.keyfile,     o.password,
              o.cacertfile,         o.cacertdir,   o.verify.value_or(-1),
              o.depth.value_or(-1), o.ciphers,     o.ciphersuites,
              o.min_version,        o.max_version, o.legacy_flags};
  std::string text = key.dump();
  if (auto it = contexts_.find(text); it != contexts_.end()) return it->second;
  SslCtxPtr ctx = build_context(o, role_, error);
  if (!ctx) return nullptr;
  // Connections keep their own reference through SSL_new, so forgetting
  // contexts here is safe; it only bounds the cache.
  if (contexts_.size() >= kMaxEntries) contexts_.clear();
  contexts_.emplace(std::move(text), ctx);
  return ctx;
}

void configure_client_ssl(SSL* ssl, const TlsOptions& options, const std::string& host) {
  std::string sni = options.server_name.value_or(is_ip_literal(host) ? "" : host);
  if (!sni.empty()) SSL_set_tlsext_host_name(ssl, sni.c_str());
  if (options.effective_verify(TlsRole::client) == 0) return;
  std::string check = options.verify_hostname.value_or(options.server_name.value_or(host));
  if (check.empty()) return;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (is_ip_literal(check))
    X509_VERIFY_PARAM_set1_ip_asc(param, check.c_str());
  else
    X509_VERIFY_PARAM_set1_host(param, check.c_str(), 0);
}

namespace {
std::string name_text(X509_NAME* name) {
  if (name == nullptr) return "";
  BIO* bio = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string text(data, static_cast<std::size_t>(len));
  BIO_free(bio);
  return text;
}
}  // namespace

json describe_session(SSL* ssl) {
  json info = json::object();
  info["protocol"] = SSL_get_version(ssl);
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  info["cipher"] = cipher != nullptr ? SSL_CIPHER_get_name(cipher) : "";
  info["bits"] = cipher != nullptr ? SSL_CIPHER_get_bits(cipher, nullptr) : 0;
  long code = SSL_get_verify_result(ssl);
  info["verify_result"] = {{"code", code}, {"text", X509_verify_cert_error_string(code)}};
  if (X509* peer = SSL_get1_peer_certificate(ssl)) {
    info["peer_certificate"] = {{"subject", name_text(X509_get_subject_name(peer))},
                                {"issuer", name_text(X509_get_issuer_name(peer))}};
    X509_free(peer);
  } else {
    info["peer_certificate"] = nullptr;
  }
  return info;
}

}  // namespace tlsport::daemon
