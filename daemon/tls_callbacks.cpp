// The OpenSSL callbacks of the daemon's contexts, and the data they use.
#include "daemon/tls_callbacks.hpp"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509_vfy.h>

#include <cstring>

#include "daemon/session_cache.hpp"

namespace tlsport::daemon {
namespace {

using protocol::TlsRole;

void free_extras(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<ContextExtras*>(ptr);
}

void free_notes(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<SslNotes*>(ptr);
}

int extras_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_extras);
  return index;
}

int notes_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_notes);
  return index;
}

SSL* ssl_of(X509_STORE_CTX* store) {
  return static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
}

/// Errors that verify level 1 (seed 004) tolerates: the issuer is unknown.
bool unknown_issuer(int error) {
  switch (error) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      return true;
    default:
      return false;
  }
}

/// Per certificate: notes the first failure's depth and applies level 1.
int verify_certificate(int ok, X509_STORE_CTX* store) {
  SSL* ssl = ssl_of(store);
  if (ok || ssl == nullptr) return ok;
  SslNotes& notes = ssl_notes(ssl);
  if (notes.failed_depth < 0) notes.failed_depth = X509_STORE_CTX_get_error_depth(store);
  const ContextExtras* extras = context_extras(SSL_get_SSL_CTX(ssl));
  if (extras != nullptr && extras->verify_level == 1 &&
      unknown_issuer(X509_STORE_CTX_get_error(store)))
    return 1;
  return 0;
}

/// Client with verify_callback: OpenSSL's verdict first, then the
/// handshake waits (SSL_set_retry_verify) until the owner has answered.
int client_judges_chain(X509_STORE_CTX* store, void*) {
  SSL* ssl = ssl_of(store);
  if (ssl == nullptr) return 0;
  SslNotes& notes = ssl_notes(ssl);
  switch (notes.verdict) {
    case SslNotes::Verdict::unknown:
      X509_verify_cert(store);
      notes.verify_code = X509_STORE_CTX_get_error(store);
      notes.verdict = SslNotes::Verdict::asked;
      return SSL_set_retry_verify(ssl);
    case SslNotes::Verdict::asked:
      return SSL_set_retry_verify(ssl);
    case SslNotes::Verdict::accepted:
      X509_verify_cert(store);  // keeps OpenSSL's verdict for info
      return 1;
    case SslNotes::Verdict::rejected:
      X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
      return 0;
  }
  return 0;
}

/// Server SNI: switches to the context whose names match the one asked for.
int choose_certificate(SSL* ssl, int*, void*) {
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  const ContextExtras* extras = context_extras(SSL_get_SSL_CTX(ssl));
  if (name == nullptr || extras == nullptr) return SSL_TLSEXT_ERR_OK;
  std::string asked(name);
  for (const auto& [names, ctx] : extras->sni) {
    for (const auto& pattern : names) {
      if (protocol::sni_name_matches(pattern, asked)) {
        SSL_set_SSL_CTX(ssl, ctx.get());
        return SSL_TLSEXT_ERR_OK;
      }
    }
  }
  return SSL_TLSEXT_ERR_OK;  // the default certificate
}

/// Server ALPN: our most preferred protocol that the client offered; none
/// in common fails the handshake with no_application_protocol.
int choose_protocol(SSL* ssl, const unsigned char** out, unsigned char* outlen,
                    const unsigned char* in, unsigned int inlen, void*) {
  const ContextExtras* extras = context_extras(SSL_get_SSL_CTX(ssl));
  if (extras == nullptr || extras->alpn_preference.empty()) return SSL_TLSEXT_ERR_NOACK;
  const auto* ours = reinterpret_cast<const unsigned char*>(extras->alpn_preference.data());
  std::size_t ours_len = extras->alpn_preference.size();
  for (std::size_t i = 0; i < ours_len; i += 1 + ours[i]) {
    for (unsigned int j = 0; j < inlen; j += 1 + in[j]) {
      if (j + 1 + in[j] > inlen) break;  // a malformed offer ends the search
      if (in[j] == ours[i] && std::memcmp(in + j + 1, ours + i + 1, ours[i]) == 0) {
        *out = in + j + 1;
        *outlen = in[j];
        return SSL_TLSEXT_ERR_OK;
      }
    }
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/// Sets HMAC-SHA256 with `key` on a ticket's MAC context.
bool set_ticket_mac(EVP_MAC_CTX* mac, const TicketKey& key) {
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(
          OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(key.hmac.data()), key.hmac.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA256"), 0),
      OSSL_PARAM_construct_end()};
  return EVP_MAC_CTX_set_params(mac, params) == 1;
}

/// Session tickets with the configured keys: the first encrypts; any
/// decrypts, and a ticket under an older key is renewed.
int ticket_key(SSL* ssl, unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher,
               EVP_MAC_CTX* mac, int encrypt) {
  const ContextExtras* extras = context_extras(SSL_get_SSL_CTX(ssl));
  if (extras == nullptr || extras->ticket_keys.empty()) return -1;
  if (encrypt) {
    const TicketKey& key = extras->ticket_keys.front();
    std::memcpy(name, key.name.data(), key.name.size());
    if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1 ||
        EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes.data(), iv) != 1 ||
        !set_ticket_mac(mac, key))
      return -1;
    return 1;
  }
  for (std::size_t i = 0; i < extras->ticket_keys.size(); ++i) {
    const TicketKey& key = extras->ticket_keys[i];
    if (std::memcmp(name, key.name.data(), key.name.size()) != 0) continue;
    if (EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes.data(), iv) != 1 ||
        !set_ticket_mac(mac, key))
      return -1;
    return i == 0 ? 1 : 2;
  }
  return 0;  // unknown key: a full handshake
}

/// Server: staples the OCSP response when the client asks for one.
int staple_ocsp(SSL* ssl, void*) {
  const ContextExtras* extras = context_extras(SSL_get_SSL_CTX(ssl));
  if (extras == nullptr || extras->ocsp_response.empty()) return SSL_TLSEXT_ERR_NOACK;
  auto* copy = static_cast<unsigned char*>(OPENSSL_malloc(extras->ocsp_response.size()));
  if (copy == nullptr) return SSL_TLSEXT_ERR_NOACK;
  std::memcpy(copy, extras->ocsp_response.data(), extras->ocsp_response.size());
  SSL_set_tlsext_status_ocsp_resp(ssl, copy, static_cast<long>(extras->ocsp_response.size()));
  return SSL_TLSEXT_ERR_OK;
}

/// Client: accepts whatever staple came (info reports it).
int accept_staple(SSL*, void*) { return 1; }

void write_key_log(const SSL* ssl, const char* line) {
  const ContextExtras* extras = context_extras(SSL_get_SSL_CTX(ssl));
  if (extras != nullptr && extras->keylog) std::fprintf(extras->keylog->file, "%s\n", line);
}

/// Client: keeps a new session (or TLS 1.3 ticket) for the next connect.
int keep_session(SSL* ssl, SSL_SESSION* session) {
  const ContextExtras* extras = context_extras(SSL_get_SSL_CTX(ssl));
  const SslNotes* notes = find_ssl_notes(ssl);
  if (extras == nullptr || extras->sessions == nullptr || notes == nullptr ||
      notes->session_key.empty())
    return 0;
  extras->sessions->store(notes->session_key, session);
  return 1;  // the cache holds the reference
}

}  // namespace

ContextExtras* context_extras(const SSL_CTX* ctx) {
  return static_cast<ContextExtras*>(SSL_CTX_get_ex_data(ctx, extras_index()));
}

ContextExtras* attach_extras(SSL_CTX* ctx) {
  auto* extras = new ContextExtras;
  SSL_CTX_set_ex_data(ctx, extras_index(), extras);
  return extras;
}

SslNotes& ssl_notes(SSL* ssl) {
  auto* notes = static_cast<SslNotes*>(SSL_get_ex_data(ssl, notes_index()));
  if (notes == nullptr) {
    notes = new SslNotes;
    SSL_set_ex_data(ssl, notes_index(), notes);
  }
  return *notes;
}

const SslNotes* find_ssl_notes(const SSL* ssl) {
  return static_cast<const SslNotes*>(SSL_get_ex_data(ssl, notes_index()));
}

void install_callbacks(SSL_CTX* ctx, TlsRole role, const ContextExtras& extras) {
  SSL_CTX_set_verify(ctx, SSL_CTX_get_verify_mode(ctx), verify_certificate);
  if (extras.keylog) SSL_CTX_set_keylog_callback(ctx, write_key_log);
  if (role == TlsRole::server) {
    if (!extras.sni.empty()) SSL_CTX_set_tlsext_servername_callback(ctx, choose_certificate);
    if (!extras.alpn_preference.empty()) SSL_CTX_set_alpn_select_cb(ctx, choose_protocol, nullptr);
    if (!extras.ticket_keys.empty()) SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key);
    if (!extras.ocsp_response.empty()) SSL_CTX_set_tlsext_status_cb(ctx, staple_ocsp);
    return;
  }
  SSL_CTX_set_tlsext_status_cb(ctx, accept_staple);
  if (extras.sessions != nullptr) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, keep_session);
  }
  if (extras.verify_callback) SSL_CTX_set_cert_verify_callback(ctx, client_judges_chain, nullptr);
}

}  // namespace tlsport::daemon
