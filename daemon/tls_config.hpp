// The `tls` object of listen/connect (docs/protocol.md §4), including seed
// 004's SSLFlags string, and the SSL_CTX built from it.
#pragma once

#include <openssl/ssl.h>

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "daemon/errors.hpp"

namespace tlsport::daemon {

/// Which end of the handshake a context serves.
enum class TlsRole { client, server };

/// Owning pointer to an SSL_CTX.
struct SslCtxDeleter {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using SslCtxPtr = std::shared_ptr<SSL_CTX>;

/// Parsed TLS options.
struct TlsOptions {
  bool enabled = true;                         ///< false for "tls": false (plain TCP)
  std::string certfile;                        ///< PEM certificate chain
  std::string keyfile;                         ///< PEM private key (defaults to certfile)
  std::string password;                        ///< passphrase of an encrypted key
  std::string cacertfile;                      ///< trusted CAs, one PEM file
  std::string cacertdir;                       ///< trusted CAs, hashed directory
  std::optional<int> verify;                   ///< 0, 1 or 2 (seed 004); unset = role default
  std::optional<int> depth;                    ///< chain depth limit
  std::string ciphers;                         ///< TLS 1.2 cipher list
  std::string ciphersuites;                    ///< TLS 1.3 suites
  int min_version = TLS1_2_VERSION;            ///< lowest protocol version allowed
  int max_version = 0;                         ///< highest protocol version (0 = newest)
  std::optional<std::string> server_name;      ///< SNI to send (client)
  std::optional<std::string> verify_hostname;  ///< name to check the peer against (client)
  std::string logfile;                         ///< the seed's -log file
  bool legacy_flags = false;                   ///< configured through the seed's SSLFlags string

  /// The verify level in force for this role.
  int effective_verify(TlsRole role) const;
};

/// Parses a `tls` field (absent, false, or an object). Returns an error
/// (bad_request, unsupported_protocol) when it is not valid.
std::optional<ErrorInfo> parse_tls_options(const nlohmann::json* tls, TlsOptions& out);

/// Parses the seed's SSLFlags string into `out` (fields set later override).
std::optional<ErrorInfo> parse_ssl_flags(const std::string& flags, TlsOptions& out);

/// Builds a context for `role`; nullptr and `error` (bad_tls_config, ...) on failure.
SslCtxPtr build_context(const TlsOptions& options, TlsRole role, ErrorInfo& error);

/// Contexts shared by identical configurations: never one per connection.
class ContextCache {
 public:
  explicit ContextCache(TlsRole role) : role_(role) {}
  /// The context for these options, built on first use.
  SslCtxPtr get(const TlsOptions& options, ErrorInfo& error);
  /// Forgets every context (connections keep theirs), so files are read again.
  void clear() { contexts_.clear(); }

 private:
  TlsRole role_;                                   ///< which end the contexts serve
  static constexpr std::size_t kMaxEntries = 256;  ///< bound on distinct configurations kept
  std::map<std::string, SslCtxPtr> contexts_;      ///< by canonical options text
};

/// Sets SNI and host-name checking on a client connection.
void configure_client_ssl(SSL* ssl, const TlsOptions& options, const std::string& host);

/// The verify result as {"code":N,"text":"..."}, and details of the session.
nlohmann::json describe_session(SSL* ssl);

}  // namespace tlsport::daemon
