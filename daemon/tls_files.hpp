// Key material for TLS contexts: files read without ever blocking the
// daemon (regular files only, opened non-blocking, size capped), and
// certificates, keys, CRLs and DH parameters parsed from PEM or DER, told
// apart by their content.
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/errors.hpp"

namespace tlsport::daemon {

struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct X509CrlDeleter {
  void operator()(X509_CRL* x) const { X509_CRL_free(x); }
};
struct EvpPkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using X509CrlPtr = std::unique_ptr<X509_CRL, X509CrlDeleter>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyDeleter>;

/// Largest TLS file read (certificate chains, CRLs, responses are far smaller).
inline constexpr std::size_t kMaxTlsFileSize = 4u << 20;

/// Reads `path` whole into `out`. Refuses what is not a regular file (a FIFO,
/// a directory, a device: opening or reading one could block the daemon)
/// and files over kMaxTlsFileSize. `what` names the file's role in errors
/// ("certificate", "ticket key"); errors are bad_tls_config and name the file.
bool read_tls_file(const std::string& path, const char* what, std::string& out, ErrorInfo& error);

/// The certificates in `data` (PEM, several allowed; or one DER), in order.
bool parse_certificates(std::string_view data, const std::string& source, std::vector<X509Ptr>& out,
                        ErrorInfo& error);

/// Why a private key could not be had.
enum class KeyProblem {
  none,            ///< loaded
  needs_password,  ///< encrypted, and no passphrase was given
  wrong_password,  ///< encrypted, and the passphrase does not open it
  unreadable,      ///< not a key in a format we know
};

/// The private key in `data` (PEM, possibly encrypted; or DER: PKCS#8,
/// encrypted PKCS#8, traditional RSA/EC), opened with `password` if needed.
EvpPkeyPtr parse_private_key(std::string_view data, const std::string& source,
                             const std::string& password, KeyProblem& problem, ErrorInfo& error);

/// The CRLs in `data` (PEM, several allowed; or one DER).
bool parse_crls(std::string_view data, const std::string& source, std::vector<X509CrlPtr>& out,
                ErrorInfo& error);

/// DH parameters from `data` (PEM or DER).
EvpPkeyPtr parse_dh_parameters(std::string_view data, const std::string& source, ErrorInfo& error);

/// The first line of a password file (without its line end).
bool read_password_file(const std::string& path, std::string& out, ErrorInfo& error);

}  // namespace tlsport::daemon
