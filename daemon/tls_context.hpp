// TLS contexts built from typed settings (protocol/tls_settings.hpp): one
// per listener, shared by identical client configurations, never one per
// connection; and the per-connection pieces (SSL objects, client checks,
// what info reports).
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

/// Shared pointer to an SSL_CTX: connections hold theirs through SSL_new.
using SslCtxPtr = std::shared_ptr<SSL_CTX>;

/// Builds a context for `role`; nullptr and `error` (bad_tls_config, ...) on failure.
SslCtxPtr build_context(const TlsSettings& settings, TlsRole role, ErrorInfo& error);

/// A new SSL object of `ctx` for `role`; null and `error` when OpenSSL
/// cannot make one (then the connection must be refused, never served as
/// plain TCP).
SslPtr new_ssl(const SslCtxPtr& ctx, TlsRole role, ErrorInfo& error);

/// Sets SNI and the host-name check on a client connection to `host`.
void configure_client_ssl(SSL* ssl, const TlsSettings& settings, const std::string& host);

/// The session's facts for info: protocol, cipher, bits, verify result, peer certificate.
nlohmann::json describe_session(SSL* ssl);

/// Contexts shared by identical configurations: never one per connection.
class ContextCache {
 public:
  explicit ContextCache(TlsRole role) : role_(role) {}
  /// The context for these settings, built on first use.
  SslCtxPtr get(const TlsSettings& settings, ErrorInfo& error);
  /// Forgets every context (connections keep theirs), so files are read again.
  void clear() { contexts_.clear(); }

 private:
  TlsRole role_;                                   ///< which end the contexts serve
  static constexpr std::size_t kMaxEntries = 256;  ///< bound on distinct configurations kept
  std::map<std::string, SslCtxPtr> contexts_;      ///< by TlsSettings::context_key()
};

}  // namespace tlsport::daemon
