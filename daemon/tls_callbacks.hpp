// What a TLS context and a TLS connection carry beyond OpenSSL's own state,
// and the OpenSSL callbacks that use it: verification (seed 004's levels,
// the failing depth, the client's own judgement), SNI, ALPN, ticket keys,
// OCSP stapling, the key log, new client sessions.
#pragma once

#include <openssl/ssl.h>

#include <array>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "protocol/tls_settings.hpp"

namespace tlsport::daemon {

class SessionCache;

/// One 80-byte ticket key file: name, HMAC secret, AES secret.
struct TicketKey {
  std::array<unsigned char, 16> name;  ///< sent in tickets to find the key again
  std::array<unsigned char, 32> hmac;  ///< HMAC-SHA256 secret
  std::array<unsigned char, 32> aes;   ///< AES-256-CBC secret
};

/// A key-log file, shared by the contexts that write to it.
struct KeyLogFile {
  explicit KeyLogFile(std::FILE* f) : file(f) {}
  ~KeyLogFile() { std::fclose(file); }
  std::FILE* file;  ///< line-buffered, appended to
};

/// Attached to every SSL_CTX the daemon builds; freed with it.
struct ContextExtras {
  int verify_level = 0;          ///< seed 004's 0, 1, 2
  bool verify_callback = false;  ///< the owning client judges the peer
  std::string alpn_preference;   ///< server: protocols in wire format, preferred first
  /// Server: certificates by name ({names, context}), tried in order.
  std::vector<std::pair<std::vector<std::string>, std::shared_ptr<SSL_CTX>>> sni;
  std::vector<TicketKey> ticket_keys;  ///< server: the first encrypts, all decrypt
  std::string ocsp_response;           ///< server: DER response stapled on request
  std::shared_ptr<KeyLogFile> keylog;  ///< where secrets are written, if anywhere
  SessionCache* sessions = nullptr;    ///< client: where new sessions go
};

/// What the daemon notes about one SSL connection (allocated when first needed).
struct SslNotes {
  std::string session_key;  ///< client: where its sessions are cached ("" = none)
  int failed_depth = -1;    ///< depth of the first certificate that failed verification
  long verify_code = 0;     ///< OpenSSL's verdict when the client was asked (X509_V_*)
  /// The client's verdict on the peer's chain: unknown until asked and answered.
  enum class Verdict { unknown, asked, accepted, rejected } verdict = Verdict::unknown;
};

/// The extras of a context the daemon built (never null for those).
ContextExtras* context_extras(const SSL_CTX* ctx);
/// Attaches fresh extras to `ctx` and returns them.
ContextExtras* attach_extras(SSL_CTX* ctx);
/// The notes of a connection, created on first use.
SslNotes& ssl_notes(SSL* ssl);
/// The notes of a connection, or null when none were made.
const SslNotes* find_ssl_notes(const SSL* ssl);

/// Installs the callbacks that `extras` needs on `ctx` (call once it is filled in).
void install_callbacks(SSL_CTX* ctx, protocol::TlsRole role, const ContextExtras& extras);

}  // namespace tlsport::daemon
