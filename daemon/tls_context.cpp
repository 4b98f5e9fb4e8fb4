// SSL_CTX building and sharing, SSL objects, client checks and session facts.
#include "daemon/tls_context.hpp"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cstdlib>
#include <cstring>

namespace tlsport::daemon {
namespace {

using nlohmann::json;
using protocol::TlsVersion;

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
  return wire_error(ErrorKind::bad_tls_config, what + ": " + take_openssl_error("failed"));
}

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

/// Protocol bounds, ciphers and buffer modes common to every context.
bool set_protocol(SSL_CTX* c, const TlsSettings& settings, ErrorInfo& error) {
  // Idle connections give their record buffers back; writes may be partial
  // and retried from a buffer that has grown in the meantime.
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  // One read() fetches as many records as are there, not a header then a
  // body; the buffer is still given back when it empties. Safe here: reading
  // always starts with SSL_read, never with a wait, once a socket may hold data.
  SSL_CTX_set_read_ahead(c, 1);
  SSL_CTX_set_min_proto_version(c, static_cast<int>(settings.min_version));
  if (settings.max_version != TlsVersion::unset)
    SSL_CTX_set_max_proto_version(c, static_cast<int>(settings.max_version));
  std::string ciphers = settings.ciphers;
  // Seed 004: without -cipher, the SSL_CIPHER environment variable is used.
  if (ciphers.empty() && settings.legacy_flags) {
    if (const char* env = std::getenv("SSL_CIPHER")) ciphers = env;
  }
  if (!ciphers.empty() && SSL_CTX_set_cipher_list(c, ciphers.c_str()) != 1) {
    error = config_error("bad cipher list \"" + ciphers + "\"");
    return false;
  }
  if (!settings.ciphersuites.empty() &&
      SSL_CTX_set_ciphersuites(c, settings.ciphersuites.c_str()) != 1) {
    error = config_error("bad ciphersuites \"" + settings.ciphersuites + "\"");
    return false;
  }
  return true;
}

/// The certificate chain and key (a server must have them).
bool load_identity(SSL_CTX* c, const TlsSettings& settings, TlsRole role, ErrorInfo& error) {
  if (settings.certfile.empty()) {
    if (role == TlsRole::client) return true;
    error = wire_error(ErrorKind::bad_tls_config,
                       "a TLS server needs a certificate (tls.certfile or -cert)");
    return false;
  }
  // The passphrase is needed only while the key is loaded; never prompt on
  // the terminal when there is none.
  SSL_CTX_set_default_passwd_cb(c, password_callback);
  SSL_CTX_set_default_passwd_cb_userdata(c, const_cast<std::string*>(&settings.password));
  bool ok = false;
  const std::string& keyfile = settings.keyfile.empty() ? settings.certfile : settings.keyfile;
  if (SSL_CTX_use_certificate_chain_file(c, settings.certfile.c_str()) != 1)
    error = config_error("cannot load certificate " + settings.certfile);
  else if (SSL_CTX_use_PrivateKey_file(c, keyfile.c_str(), SSL_FILETYPE_PEM) != 1)
    error = config_error("cannot load private key " + keyfile);
  else if (SSL_CTX_check_private_key(c) != 1)
    error = config_error("private key does not match the certificate");
  else
    ok = true;
  SSL_CTX_set_default_passwd_cb_userdata(c, nullptr);
  return ok;
}

/// Trusted CAs and the verify mode of seed 004's levels.
bool set_trust(SSL_CTX* c, const TlsSettings& settings, TlsRole role, ErrorInfo& error) {
  int verify = settings.effective_verify(role);
  if (!settings.cacertfile.empty() || !settings.cacertdir.empty()) {
    if (SSL_CTX_load_verify_locations(
            c, settings.cacertfile.empty() ? nullptr : settings.cacertfile.c_str(),
            settings.cacertdir.empty() ? nullptr : settings.cacertdir.c_str()) != 1) {
      error = config_error("cannot load CA certificates");
      return false;
    }
    if (role == TlsRole::server && !settings.cacertfile.empty()) {
      // Tell clients which CAs we accept.
      if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(settings.cacertfile.c_str()))
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
  if (settings.depth) SSL_CTX_set_verify_depth(c, *settings.depth);
  return true;
}

}  // namespace

SslCtxPtr build_context(const TlsSettings& settings, TlsRole role, ErrorInfo& error) {
  ERR_clear_error();
  SslCtxPtr ctx(SSL_CTX_new(TLS_method()), SSL_CTX_free);
  if (!ctx) {
    error = config_error("cannot create a TLS context");
    return nullptr;
  }
  SSL_CTX* c = ctx.get();
  if (!set_protocol(c, settings, error) || !load_identity(c, settings, role, error) ||
      !set_trust(c, settings, role, error))
    return nullptr;
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

SslPtr new_ssl(const SslCtxPtr& ctx, TlsRole role, ErrorInfo& error) {
  ERR_clear_error();
  SslPtr ssl(SSL_new(ctx.get()));
  if (!ssl) {
    error = wire_error(ErrorKind::tls, take_openssl_error("cannot create TLS state"));
    return nullptr;
  }
  if (role == TlsRole::client)
    SSL_set_connect_state(ssl.get());
  else
    SSL_set_accept_state(ssl.get());
  return ssl;
}

SslCtxPtr ContextCache::get(const TlsSettings& settings, ErrorInfo& error) {
  std::string key = settings.context_key();
  if (auto it = contexts_.find(key); it != contexts_.end()) return it->second;
  SslCtxPtr ctx = build_context(settings, role_, error);
  if (!ctx) return nullptr;
  // Connections keep their own reference through SSL_new, so forgetting
  // contexts here is safe; it only bounds the cache.
  if (contexts_.size() >= kMaxEntries) contexts_.clear();
  contexts_.emplace(std::move(key), ctx);
  return ctx;
}

void configure_client_ssl(SSL* ssl, const TlsSettings& settings, const std::string& host) {
  std::string sni = settings.sni_for(host);
  if (!sni.empty()) SSL_set_tlsext_host_name(ssl, sni.c_str());
  std::string check = settings.hostname_check_for(host);
  if (check.empty()) return;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (protocol::is_ip_literal(check))
    X509_VERIFY_PARAM_set1_ip_asc(param, check.c_str());
  else
    X509_VERIFY_PARAM_set1_host(param, check.c_str(), 0);
}

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
