// The `tls` field of listen, accept and connect (docs/protocol.md §4) as a
// typed value, including seed 004's SSLFlags string. Pure: nothing here
// touches OpenSSL or a file; daemon/tls_context builds contexts from it.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/wire_error.hpp"

namespace tlsport::protocol {

/// Which end of the handshake a connection is.
enum class TlsRole { client, server };

/// Protocol versions a client may ask for; the values are TLS's own numbers.
enum class TlsVersion : int {
  unset = 0,        ///< no bound
  tls1_2 = 0x0303,  ///< TLS 1.2
  tls1_3 = 0x0304,  ///< TLS 1.3
};

/// Caps on what a `tls` object may list.
inline constexpr std::size_t kMaxAlpnProtocols = 32;  ///< names in `alpn`
inline constexpr std::size_t kMaxSniEntries = 256;    ///< entries in `sni`
inline constexpr std::size_t kMaxSniNames = 64;       ///< names in one entry
inline constexpr std::size_t kMaxTicketKeys = 16;     ///< files in `ticket_keys`
inline constexpr long long kMaxCallbackTimeoutMs = 600000;
inline constexpr std::size_t kMaxContextName = 255;  ///< bytes in a tls_context name

/// One certificate of a server's SNI list, for the names it serves.
struct SniCertificate {
  std::vector<std::string> names;  ///< "a.example", "*.b.example" (one label)
  std::string certfile;            ///< PEM or DER, chain allowed
  std::string keyfile;             ///< default: certfile
  std::string cert;                ///< inline PEM instead of certfile
  std::string key;                 ///< inline PEM instead of keyfile
  std::string password;            ///< passphrase of its key (default: the top-level one)
};

/// Overwrites a secret's bytes (a volatile write the compiler keeps), then
/// empties it: passphrases and inline keys do not outlive their settings.
void erase_secret(std::string& secret);

/// Every TLS setting of one connection or listener. Its passphrases and
/// inline keys are wiped when it goes away.
struct TlsSettings {
  TlsSettings() = default;
  TlsSettings(const TlsSettings&) = default;
  TlsSettings(TlsSettings&&) = default;
  TlsSettings& operator=(const TlsSettings&) = default;
  TlsSettings& operator=(TlsSettings&&) = default;
  ~TlsSettings();

  // Identity.
  std::string certfile;             ///< certificate (chain allowed), PEM or DER
  std::string keyfile;              ///< private key, PEM or DER (default: certfile)
  std::string cert;                 ///< inline PEM certificate (chain allowed)
  std::string key;                  ///< inline PEM private key
  std::string password;             ///< passphrase of an encrypted key
  std::string password_file;        ///< file whose first line is the passphrase
  std::string password_env;         ///< environment variable holding it (SSLFlags -pass env:)
  bool ask_password = false;        ///< ask the client when the key is encrypted and no passphrase
  std::vector<SniCertificate> sni;  ///< server: certificates by requested name
  std::string dhparamfile;          ///< DH parameters (default: automatic)
  // Trust.
  std::string cacertfile;        ///< trusted CAs, PEM or DER
  std::string cacertdir;         ///< trusted CAs, hashed directory
  std::string cacert;            ///< inline PEM CAs
  std::string crlfile;           ///< PEM CRLs; when given, checked for the whole chain
  std::optional<int> verify;     ///< 0, 1 or 2 (seed 004); unset = role default
  std::optional<int> depth;      ///< chain depth limit
  bool verify_callback = false;  ///< the owning client judges the peer's chain
  std::optional<long long> callback_timeout_ms;  ///< for password and verify questions
  // Protocol.
  std::string ciphers;                          ///< TLS 1.2 cipher list
  std::string ciphersuites;                     ///< TLS 1.3 suites
  TlsVersion min_version = TlsVersion::tls1_2;  ///< lowest version allowed
  TlsVersion max_version = TlsVersion::unset;   ///< highest version allowed
  std::vector<std::string> alpn;                ///< client: offer in order; server: preference
  // Sessions.
  bool session_reuse = true;             ///< client: resume from the daemon's session cache
  std::vector<std::string> ticket_keys;  ///< server: 80-byte key files; the first encrypts
  // Status and visibility.
  std::string ocsp_response_file;    ///< server: DER OCSP response stapled on request
  bool ocsp_status_request = false;  ///< client: ask for a stapled OCSP response
  std::string keylog;                ///< NSS key-log file (secrets: for debugging only)
  // Per connection (client), not part of a context.
  std::optional<std::string> server_name;      ///< SNI to send ("" = none)
  std::optional<std::string> verify_hostname;  ///< name to check the peer against
  bool check_hostname = true;                  ///< false only for "verify_hostname": false
  std::string logfile;                         ///< the seed's -log file
  bool legacy_flags = false;                   ///< configured through SSLFlags (seed defaults)

  /// The verify level in force for `role`: clients verify unless told otherwise,
  /// except on the seed's SSLFlags path, whose documented default is -verify 0.
  int effective_verify(TlsRole role) const;
  /// Everything that shapes a context (not SNI, host check or log file), as
  /// text: identical settings share one context.
  std::string context_key() const;
  /// What decides which clients a server lets in (trust, CRLs, verify level,
  /// depth, a verify callback), as text: a session resumes only where this
  /// (and the CA and CRL files' contents) is the same, whatever else differs
  /// (ticket keys being rotated, ciphers).
  std::string trust_key() const;
  /// True when a certificate is configured (a server needs one).
  bool has_identity() const { return !certfile.empty() || !cert.empty(); }
  /// The SNI a client sends to `host`: server_name, else `host` unless it is
  /// an IP address; "" for none.
  std::string sni_for(const std::string& host) const;
  /// The name a client checks the server's certificate against when it
  /// connects to `host`; "" when there is no check (verify 0 or
  /// verify_hostname false). Turning SNI off never turns the check off.
  std::string hostname_check_for(const std::string& host) const;
};

/// True when `name` (a host name) matches `pattern`: equal ignoring case, or
/// "*.rest" with exactly one label before "rest".
bool sni_name_matches(const std::string& pattern, const std::string& name);

/// What a `tls` field asked for.
struct TlsChoice {
  enum class Kind {
    absent,  ///< no `tls` field (or null)
    plain,   ///< "tls": false
    tls,     ///< an object (or true): `settings`
    named,   ///< a string: the name of a context defined with tls_context
  } kind = Kind::absent;
  TlsSettings settings;  ///< for Kind::tls
  std::string name;      ///< for Kind::named
};

/// Parses a `tls` field (nullptr when absent). Unknown fields in the object
/// are an error that names them.
std::optional<WireError> parse_tls_choice(const nlohmann::json* field, TlsChoice& out);

/// Parses a `tls` object (not false, not a name) into `out`.
std::optional<WireError> parse_tls_settings(const nlohmann::json& object, TlsSettings& out);

/// Parses the seed's SSLFlags string (-cert -key -cipher -verify -log
/// -cacert -pass) into `out`, marking it legacy. -pass takes OpenSSL's
/// pass-phrase syntax (pass:TEXT, file:PATH, env:VAR). Does not read
/// SSL_CIPHER: that is the environment's, applied where the context is built.
std::optional<WireError> parse_ssl_flags(std::string_view flags, TlsSettings& out);

/// True for an IPv4 or IPv6 address literal.
bool is_ip_literal(const std::string& host);

}  // namespace tlsport::protocol
