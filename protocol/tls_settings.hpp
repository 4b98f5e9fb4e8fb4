// The `tls` field of listen, accept and connect (docs/protocol.md §4) as a
// typed value, including seed 004's SSLFlags string. Pure: nothing here
// touches OpenSSL or a file; daemon/tls_context builds contexts from it.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

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

/// Every TLS setting of one connection or listener.
struct TlsSettings {
  std::string certfile;                         ///< PEM certificate chain
  std::string keyfile;                          ///< PEM private key (default: certfile)
  std::string password;                         ///< passphrase of an encrypted key
  std::string cacertfile;                       ///< trusted CAs, one PEM file
  std::string cacertdir;                        ///< trusted CAs, hashed directory
  std::optional<int> verify;                    ///< 0, 1 or 2 (seed 004); unset = role default
  std::optional<int> depth;                     ///< chain depth limit
  std::string ciphers;                          ///< TLS 1.2 cipher list
  std::string ciphersuites;                     ///< TLS 1.3 suites
  TlsVersion min_version = TlsVersion::tls1_2;  ///< lowest version allowed
  TlsVersion max_version = TlsVersion::unset;   ///< highest version allowed
  std::optional<std::string> server_name;       ///< SNI to send ("" = none); client only
  std::optional<std::string> verify_hostname;   ///< name to check the peer against; client only
  bool check_hostname = true;                   ///< false only for "verify_hostname": false
  std::string logfile;                          ///< the seed's -log file
  bool legacy_flags = false;                    ///< configured through SSLFlags (seed defaults)

  /// The verify level in force for `role`: clients verify unless told otherwise,
  /// except on the seed's SSLFlags path, whose documented default is -verify 0.
  int effective_verify(TlsRole role) const;
  /// Everything that shapes a context (not SNI, host check or log file), as
  /// text: identical settings share one context.
  std::string context_key() const;
  /// The SNI a client sends to `host`: server_name, else `host` unless it is
  /// an IP address; "" for none.
  std::string sni_for(const std::string& host) const;
  /// The name a client checks the server's certificate against when it
  /// connects to `host`; "" when there is no check (verify 0 or
  /// verify_hostname false). Turning SNI off never turns the check off.
  std::string hostname_check_for(const std::string& host) const;
};

/// What a `tls` field asked for.
struct TlsChoice {
  enum class Kind {
    absent,  ///< no `tls` field (or null)
    plain,   ///< "tls": false
    tls,     ///< an object (or true): `settings`
  } kind = Kind::absent;
  TlsSettings settings;  ///< for Kind::tls
};

/// Parses a `tls` field (nullptr when absent). Unknown fields in the object
/// are an error that names them.
std::optional<WireError> parse_tls_choice(const nlohmann::json* field, TlsChoice& out);

/// Parses the seed's SSLFlags string (-cert -key -cipher -verify -log
/// -cacert) into `out`, marking it legacy. Does not read SSL_CIPHER: that is
/// the environment's, applied where the context is built.
std::optional<WireError> parse_ssl_flags(std::string_view flags, TlsSettings& out);

/// True for an IPv4 or IPv6 address literal.
bool is_ip_literal(const std::string& host);

}  // namespace tlsport::protocol
