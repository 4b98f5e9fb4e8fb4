// What a TLS connection can tell (docs/protocol.md, info): protocol,
// cipher, session, ALPN, SNI, certificates of both ends, the verify result,
// a stapled OCSP response; and re-verifying a peer with more trust.
#pragma once

#include <openssl/ssl.h>

#include <nlohmann/json.hpp>

#include "daemon/errors.hpp"

namespace tlsport::daemon {

/// Every fact of the session for info.
nlohmann::json describe_session(SSL* ssl);

/// One certificate as info shows it: pem, subject, issuer, serial,
/// validity, signature algorithm, public key, SANs, SHA-256 fingerprint.
nlohmann::json describe_certificate(X509* cert);

/// The peer's chain as received, its own certificate first.
nlohmann::json describe_peer_chain(SSL* ssl);

/// {"code":N,"text":…} (and "depth" when it failed) for the connection.
nlohmann::json verify_result(SSL* ssl);

/// The cipher suites this connection could use, in preference order.
nlohmann::json supported_ciphers(SSL* ssl);

/// Adds the CAs in `pem_or_der` (from `source`) to this connection's trust
/// and verifies the peer's chain again with them, keeping the new result
/// (seed 000's ossl-ssl-inject-ca). False with `error` when the CAs cannot
/// be read or the peer sent no certificate.
bool inject_ca_and_verify(SSL* ssl, const std::string& pem_or_der, const std::string& source,
                          ErrorInfo& error);

}  // namespace tlsport::daemon
