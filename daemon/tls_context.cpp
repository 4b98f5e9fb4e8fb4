// SSL_CTX building and sharing, SSL objects and client connection settings.
#include "daemon/tls_context.hpp"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "daemon/session_cache.hpp"
#include "daemon/tls_callbacks.hpp"
#include "daemon/tls_files.hpp"

namespace tlsport::daemon {
namespace {

using nlohmann::json;
using protocol::TlsVersion;

ErrorInfo config_error(const std::string& what) {
  return wire_error(ErrorKind::bad_tls_config, what + ": " + take_openssl_error("failed"));
}

/// Protocol bounds, ciphers, ALPN offer and buffer modes.
bool set_protocol(SSL_CTX* c, const TlsSettings& settings, TlsRole role, ErrorInfo& error) {
  // Idle connections give their record buffers back; writes may be partial
  // and retried from a buffer that has grown in the meantime.
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // An EOF without close_notify is reported as such (tls_transport tells
  // truncation from close_notify), not disguised as a close_notify.
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION);
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
  if (role == TlsRole::client && !settings.alpn.empty()) {
    std::string wire;
    for (const auto& name : settings.alpn) wire += static_cast<char>(name.size()) + name;
    // Unlike most of OpenSSL, 0 is success here.
    if (SSL_CTX_set_alpn_protos(c, reinterpret_cast<const unsigned char*>(wire.data()),
                                static_cast<unsigned>(wire.size())) != 0) {
      error = config_error("bad alpn list");
      return false;
    }
  }
  return true;
}

/// The passphrase of the key: given, from a file, or from the environment.
bool resolve_password(const TlsSettings& settings, std::string& out, ErrorInfo& error) {
  out = settings.password;
  if (!out.empty()) return true;
  if (!settings.password_file.empty())
    return read_password_file(settings.password_file, out, error);
  if (!settings.password_env.empty()) {
    const char* value = std::getenv(settings.password_env.c_str());
    if (value == nullptr) {
      error = wire_error(ErrorKind::bad_tls_config,
                         "-pass env:" + settings.password_env + ": no such environment variable");
      return false;
    }
    out = value;
  }
  return true;
}

/// Text of a file (`path`) or inline PEM (`inline_pem`); `source` names it.
bool material(const std::string& path, const std::string& inline_pem, const char* what,
              std::string& out, std::string& source, ErrorInfo& error) {
  if (!path.empty()) {
    source = std::string(what) + " file " + path;
    return read_tls_file(path, what, out, error);
  }
  source = std::string("inline ") + what;
  out = inline_pem;
  return true;
}

/// A certificate chain and its key into `c`; the key may be in the certificate's text.
bool load_identity(SSL_CTX* c, const TlsSettings& settings, ErrorInfo& error, BuildNeeds* needs) {
  std::string cert_text, cert_source, key_text, key_source, password;
  if (!material(settings.certfile, settings.cert, "certificate", cert_text, cert_source, error))
    return false;
  bool own_key = !settings.keyfile.empty() || !settings.key.empty();
  if (own_key && !material(settings.keyfile, settings.key, "key", key_text, key_source, error))
    return false;
  if (!own_key) {
    key_text = cert_text;
    key_source = cert_source;
  }
  std::vector<X509Ptr> chain;
  if (!parse_certificates(cert_text, cert_source, chain, error) ||
      !resolve_password(settings, password, error))
    return false;
  KeyProblem problem = KeyProblem::none;
  EvpPkeyPtr key = parse_private_key(key_text, key_source, password, problem, error);
  OPENSSL_cleanse(key_text.data(), key_text.size());
  OPENSSL_cleanse(password.data(), password.size());
  if (!key) {
    if (needs != nullptr && problem == KeyProblem::needs_password) {
      needs->password = true;
      needs->key_source = key_source;
    }
    return false;
  }
  if (SSL_CTX_use_certificate(c, chain.front().get()) != 1) {
    error = config_error("cannot use the certificate in " + cert_source);
    return false;
  }
  for (std::size_t i = 1; i < chain.size(); ++i) SSL_CTX_add1_chain_cert(c, chain[i].get());
  if (SSL_CTX_use_PrivateKey(c, key.get()) != 1 || SSL_CTX_check_private_key(c) != 1) {
    error = config_error("the private key in " + key_source + " does not match the certificate");
    return false;
  }
  return true;
}

/// SHA-256 of `text`, which is wiped (it may hold passphrases and keys).
std::string digest_of(std::string& text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr);
  OPENSSL_cleanse(text.data(), text.size());
  return std::string(reinterpret_cast<char*>(digest), length);
}

/// CAs from a file or inline PEM into the store (and, for a server, the
/// list of CAs it names to clients); the digest of what was read is
/// appended to `read`.
bool load_cas(SSL_CTX* c, const std::string& path, const std::string& inline_pem, TlsRole role,
              std::string& read, ErrorInfo& error) {
  if (path.empty() && inline_pem.empty()) return true;
  std::string text, source;
  std::vector<X509Ptr> cas;
  if (!material(path, inline_pem, "CA", text, source, error) ||
      !parse_certificates(text, source, cas, error))
    return false;
  read += digest_of(text);  // after parsing: it wipes the text
  X509_STORE* store = SSL_CTX_get_cert_store(c);
  for (auto& ca : cas) {
    X509_STORE_add_cert(store, ca.get());
    if (role == TlsRole::server) SSL_CTX_add_client_CA(c, ca.get());
  }
  ERR_clear_error();  // a CA given twice is not an error
  return true;
}

/// CRLs for the whole chain; the digest of what was read is appended to `read`.
bool load_crls(SSL_CTX* c, const std::string& path, std::string& read, ErrorInfo& error) {
  std::string text;
  std::vector<X509CrlPtr> crls;
  if (!read_tls_file(path, "CRL", text, error) ||
      !parse_crls(text, "CRL file " + path, crls, error))
    return false;
  read += digest_of(text);  // after parsing: it wipes the text
  X509_STORE* store = SSL_CTX_get_cert_store(c);
  for (auto& crl : crls) X509_STORE_add_crl(store, crl.get());
  X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
  return true;
}

/// Trusted CAs, CRLs and the verify mode of seed 004's levels; the digests
/// of the CA and CRL material read are appended to `read`.
bool set_trust(SSL_CTX* c, const TlsSettings& settings, TlsRole role, std::string& read,
               ErrorInfo& error) {
  int verify = settings.effective_verify(role);
  bool judged = settings.verify_callback && role == TlsRole::client;
  if (!load_cas(c, settings.cacertfile, settings.cacert, role, read, error)) return false;
  if (!settings.cacertdir.empty()) {
    struct stat st;
    if (::stat(settings.cacertdir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      error = wire_error(ErrorKind::bad_tls_config,
                         "CA directory " + settings.cacertdir + " is not a directory");
      return false;
    }
    SSL_CTX_load_verify_dir(c, settings.cacertdir.c_str());
  }
  bool own_cas =
      !settings.cacertfile.empty() || !settings.cacert.empty() || !settings.cacertdir.empty();
  // The system store; honours SSL_CERT_FILE and SSL_CERT_DIR.
  if (!own_cas && (verify > 0 || judged)) SSL_CTX_set_default_verify_paths(c);
  if (!settings.crlfile.empty() && !load_crls(c, settings.crlfile, read, error)) return false;
  ERR_clear_error();
  int mode = SSL_VERIFY_NONE;
  // A client that judges the chain itself needs OpenSSL to honour its verdict.
  if (verify >= 1 || judged) mode = SSL_VERIFY_PEER;
  if (verify == 2 && role == TlsRole::server) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  SSL_CTX_set_verify(c, mode, nullptr);
  if (settings.depth) SSL_CTX_set_verify_depth(c, *settings.depth);
  return true;
}

/// The 80-byte ticket key files, first one first.
bool load_ticket_keys(const std::vector<std::string>& paths, ContextExtras& extras,
                      ErrorInfo& error) {
  for (const auto& path : paths) {
    std::string bytes;
    if (!read_tls_file(path, "ticket key", bytes, error)) return false;
    TicketKey key;
    if (bytes.size() != key.name.size() + key.hmac.size() + key.aes.size()) {
      error = wire_error(ErrorKind::bad_tls_config,
                         "ticket key file " + path + " must hold 80 bytes (openssl rand 80)");
      return false;
    }
    std::memcpy(key.name.data(), bytes.data(), 16);
    std::memcpy(key.hmac.data(), bytes.data() + 16, 32);
    std::memcpy(key.aes.data(), bytes.data() + 48, 32);
    OPENSSL_cleanse(bytes.data(), bytes.size());
    extras.ticket_keys.push_back(key);
  }
  return true;
}

/// A DER OCSP response to staple (checked to be one).
bool load_ocsp_response(const std::string& path, ContextExtras& extras, ErrorInfo& error) {
  if (!read_tls_file(path, "OCSP response", extras.ocsp_response, error)) return false;
  const auto* p = reinterpret_cast<const unsigned char*>(extras.ocsp_response.data());
  OCSP_RESPONSE* response =
      d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(extras.ocsp_response.size()));
  if (response == nullptr) {
    error = config_error("OCSP response file " + path + " holds no DER OCSP response");
    return false;
  }
  OCSP_RESPONSE_free(response);
  return true;
}

/// DH parameters for DHE suites: automatic unless a file is given.
bool set_dh(SSL_CTX* c, const std::string& path, ErrorInfo& error) {
  if (path.empty()) {
    SSL_CTX_set_dh_auto(c, 1);
    return true;
  }
  std::string text;
  if (!read_tls_file(path, "DH parameters", text, error)) return false;
  EvpPkeyPtr params = parse_dh_parameters(text, "DH parameter file " + path, error);
  if (!params) return false;
  if (SSL_CTX_set0_tmp_dh_pkey(c, params.get()) != 1) {
    error = config_error("cannot use the DH parameters in " + path);
    return false;
  }
  params.release();  // the context owns them now
  return true;
}

/// Server-only: certificates by name, ALPN preference, tickets, OCSP, DH.
bool load_server_extras(SSL_CTX* c, const TlsSettings& settings, ContextExtras& extras,
                        ErrorInfo& error, BuildNeeds* needs) {
  for (const auto& entry : settings.sni) {
    TlsSettings own = settings;
    own.sni.clear();
    own.certfile = entry.certfile;
    own.cert = entry.cert;
    own.keyfile = entry.keyfile;
    own.key = entry.key;
    if (!entry.password.empty()) own.password = entry.password;
    SslCtxPtr sub = build_context(own, TlsRole::server, error, needs);
    if (!sub) return false;
    extras.sni.emplace_back(entry.names, std::move(sub));
  }
  for (const auto& name : settings.alpn)
    extras.alpn_preference += static_cast<char>(name.size()) + name;
  return load_ticket_keys(settings.ticket_keys, extras, error) &&
         (settings.ocsp_response_file.empty() ||
          load_ocsp_response(settings.ocsp_response_file, extras, error)) &&
         set_dh(c, settings.dhparamfile, error);
}

/// The key-log file, created 0600 (it gives away every session's secrets).
bool open_keylog(const std::string& path, ContextExtras& extras, ErrorInfo& error) {
  if (path.empty()) return true;
  int fd =
      ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, 0600);
  struct stat st;
  if (fd < 0 || ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    error = wire_error(
        ErrorKind::bad_tls_config,
        "cannot write key log " + path +
            (fd < 0 ? std::string(": ") + std::strerror(errno) : ": not a regular file"));
    if (fd >= 0) ::close(fd);
    return false;
  }
  std::FILE* file = ::fdopen(fd, "a");
  setvbuf(file, nullptr, _IOLBF, 0);
  extras.keylog = std::make_shared<KeyLogFile>(file);
  return true;
}

/// The text that names one client destination with its settings.
std::string session_key(const TlsSettings& settings, const std::string& host, unsigned short port) {
  std::string text = settings.context_key() + '\n' + host + ':' + std::to_string(port) + '\n' +
                     settings.sni_for(host) + '\n' + settings.hostname_check_for(host);
  return digest_of(text);
}

}  // namespace

SslCtxPtr build_context(const TlsSettings& settings, TlsRole role, ErrorInfo& error,
                        BuildNeeds* needs, SessionCache* sessions) {
  ERR_clear_error();
  SslCtxPtr ctx(SSL_CTX_new(TLS_method()), SSL_CTX_free);
  if (!ctx) {
    error = config_error("cannot create a TLS context");
    return nullptr;
  }
  SSL_CTX* c = ctx.get();
  ContextExtras* extras = attach_extras(c);
  extras->verify_level = settings.effective_verify(role);
  extras->verify_callback = settings.verify_callback;
  // Every client context keeps sessions: connects with and without
  // session_reuse share one context, and each connection decides for itself
  // (configure_client_ssl gives only reusing ones a session key).
  if (role == TlsRole::client) extras->sessions = sessions;
  if (role == TlsRole::server && !settings.has_identity()) {
    error = wire_error(ErrorKind::bad_tls_config,
                       "a TLS server needs a certificate (tls.certfile, tls.cert or -cert)");
    return nullptr;
  }
  std::string trust_read;  // digests of the CA and CRL material, for the session context
  if (!set_protocol(c, settings, role, error) ||
      (settings.has_identity() && !load_identity(c, settings, error, needs)) ||
      !set_trust(c, settings, role, trust_read, error) ||
      (role == TlsRole::server && !load_server_extras(c, settings, *extras, error, needs)) ||
      !open_keylog(settings.keylog, *extras, error))
    return nullptr;
  if (role == TlsRole::server) {
    // A session resumes only where the same clients are let in: shared
    // ticket keys must not carry a session from a listener that asked for
    // no client certificate to one that requires it, nor past a CRL or CA
    // file that changed (a reload). Certificates chosen by SNI share their
    // listener's (the switch comes after the session is looked up).
    std::string trust = settings.trust_key() + trust_read;
    std::string context = digest_of(trust);
    auto* id = reinterpret_cast<const unsigned char*>(context.data());
    SSL_CTX_set_session_id_context(c, id, static_cast<unsigned>(context.size()));
    for (const auto& [names, sub] : extras->sni)
      SSL_CTX_set_session_id_context(sub.get(), id, static_cast<unsigned>(context.size()));
    // Resumption is mostly by stateless tickets; the cache serves TLS 1.2
    // clients that resume by session id, bounded well below OpenSSL's
    // default of 20480 sessions (~1 KB each plus peer certificates).
    SSL_CTX_sess_set_cache_size(c, 1024);
  }
  install_callbacks(c, role, *extras);
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

SslCtxPtr ContextCache::get(const TlsSettings& settings, ErrorInfo& error, BuildNeeds* needs) {
  // The key is a digest: the settings' text holds passphrases and inline keys.
  std::string text = settings.context_key();
  std::string key = digest_of(text);
  if (auto it = contexts_.find(key); it != contexts_.end()) return it->second;
  SslCtxPtr ctx = build_context(settings, role_, error, needs, sessions_);
  if (!ctx) return nullptr;
  // Connections keep their own reference through SSL_new, so forgetting
  // contexts here is safe; it only bounds the cache.
  if (contexts_.size() >= kMaxEntries) contexts_.clear();
  contexts_.emplace(std::move(key), ctx);
  return ctx;
}

void configure_client_ssl(SSL* ssl, const TlsSettings& settings, const std::string& host,
                          unsigned short port, SessionCache* sessions) {
  std::string sni = settings.sni_for(host);
  if (!sni.empty()) SSL_set_tlsext_host_name(ssl, sni.c_str());
  if (settings.ocsp_status_request) SSL_set_tlsext_status_type(ssl, TLSEXT_STATUSTYPE_ocsp);
  if (sessions != nullptr && settings.session_reuse) {
    SslNotes& notes = ssl_notes(ssl);
    notes.session_key = session_key(settings, host, port);
    if (SSL_SESSION* session = sessions->find(notes.session_key)) SSL_set_session(ssl, session);
  }
  std::string check = settings.hostname_check_for(host);
  if (check.empty()) return;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (protocol::is_ip_literal(check))
    X509_VERIFY_PARAM_set1_ip_asc(param, check.c_str());
  else
    X509_VERIFY_PARAM_set1_host(param, check.c_str(), 0);
}

int failed_verify_depth(const SSL* ssl) {
  const SslNotes* notes = find_ssl_notes(ssl);
  return notes != nullptr ? notes->failed_depth : -1;
}

}  // namespace tlsport::daemon
