// TLS contexts built from typed settings (protocol/tls_settings.hpp): one
// per listener, shared by identical client configurations, never one per
// connection; and the per-connection pieces (SSL objects, client checks).
#pragma once

#include <openssl/ssl.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "daemon/errors.hpp"
#include "daemon/tls_transport.hpp"
#include "protocol/tls_settings.hpp"

namespace tlsport::daemon {

using protocol::TlsRole;
using protocol::TlsSettings;

class SessionCache;

/// Shared pointer to an SSL_CTX: connections hold theirs through SSL_new.
using SslCtxPtr = std::shared_ptr<SSL_CTX>;

/// Why a context could not be built beyond a plain error: what the client
/// may be asked for.
struct BuildNeeds {
  bool password = false;   ///< an encrypted key and no passphrase
  std::string key_source;  ///< which key ("key file k.pem")
};

/// Builds a context for `role`; nullptr and `error` (bad_tls_config, ...) on
/// failure. `needs`, when given, learns that only a passphrase is missing.
/// Client contexts store new sessions in `sessions` (may be null).
SslCtxPtr build_context(const TlsSettings& settings, TlsRole role, ErrorInfo& error,
                        BuildNeeds* needs = nullptr, SessionCache* sessions = nullptr);

/// A new SSL object of `ctx` for `role`; null and `error` when OpenSSL
/// cannot make one (then the connection must be refused, never served as
/// plain TCP).
SslPtr new_ssl(const SslCtxPtr& ctx, TlsRole role, ErrorInfo& error);

/// Sets SNI, the host-name check, OCSP request and a cached session on a
/// client connection to `host`:`port`.
void configure_client_ssl(SSL* ssl, const TlsSettings& settings, const std::string& host,
                          unsigned short port, SessionCache* sessions);

/// The depth of the first certificate that failed verification, or -1.
int failed_verify_depth(const SSL* ssl);

/// Contexts shared by identical configurations: never one per connection.
class ContextCache {
 public:
  /// Client caches give their contexts `sessions` for resumption.
  explicit ContextCache(TlsRole role, SessionCache* sessions = nullptr)
      : role_(role), sessions_(sessions) {}
  /// The context for these settings, built on first use.
  SslCtxPtr get(const TlsSettings& settings, ErrorInfo& error, BuildNeeds* needs = nullptr);
  /// Forgets every context (connections keep theirs), so files are read again.
  void clear() { contexts_.clear(); }

 private:
  TlsRole role_;                                   ///< which end the contexts serve
  SessionCache* sessions_;                         ///< client: where sessions go
  static constexpr std::size_t kMaxEntries = 256;  ///< bound on distinct configurations kept
  std::map<std::string, SslCtxPtr> contexts_;      ///< by TlsSettings::context_key()
};

}  // namespace tlsport::daemon
