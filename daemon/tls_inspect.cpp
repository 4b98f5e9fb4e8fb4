// Session facts, certificates as JSON, supported ciphers, inject_ca.
#include "daemon/tls_inspect.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <ctime>

#include "daemon/tls_callbacks.hpp"
#include "daemon/tls_context.hpp"
#include "daemon/tls_files.hpp"

namespace tlsport::daemon {
namespace {

using nlohmann::json;

/// Most SAN entries and chain certificates reported (a peer could send many).
constexpr int kMaxSanEntries = 256;
constexpr int kMaxChain = 16;

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  std::string text(data, static_cast<std::size_t>(len > 0 ? len : 0));
  BIO_free(bio);
  return text;
}

std::string name_text(const X509_NAME* name) {
  if (name == nullptr) return "";
  BIO* bio = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
  return bio_text(bio);
}

std::string hex(const unsigned char* bytes, std::size_t size) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < size; ++i) {
    out += digits[bytes[i] >> 4];
    out += digits[bytes[i] & 15];
  }
  return out;
}

json iso_time(const ASN1_TIME* time) {
  std::tm tm{};
  if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) return nullptr;
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

json serial_of(X509* cert) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
  if (bn == nullptr) return nullptr;
  char* text = BN_bn2hex(bn);
  json serial = text != nullptr ? json(text) : json(nullptr);
  OPENSSL_free(text);
  BN_free(bn);
  return serial;
}

std::string ip_text(const ASN1_OCTET_STRING* ip) {
  char text[INET6_ADDRSTRLEN] = "";
  const unsigned char* data = ASN1_STRING_get0_data(ip);
  int length = ASN1_STRING_length(ip);
  if (length == 4) inet_ntop(AF_INET, data, text, sizeof text);
  if (length == 16) inet_ntop(AF_INET6, data, text, sizeof text);
  return text;
}

std::string ia5_text(const ASN1_IA5STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<std::size_t>(ASN1_STRING_length(s)));
}

json san_of(X509* cert) {
  json list = json::array();
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return list;
  int count = std::min(sk_GENERAL_NAME_num(names), kMaxSanEntries);
  for (int i = 0; i < count; ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type == GEN_DNS) list.push_back("DNS:" + ia5_text(name->d.dNSName));
    if (name->type == GEN_IPADD) list.push_back("IP:" + ip_text(name->d.iPAddress));
    if (name->type == GEN_EMAIL) list.push_back("email:" + ia5_text(name->d.rfc822Name));
    if (name->type == GEN_URI) list.push_back("URI:" + ia5_text(name->d.uniformResourceIdentifier));
  }
  GENERAL_NAMES_free(names);
  return list;
}

json public_key_of(X509* cert) {
  EVP_PKEY* key = X509_get0_pubkey(cert);
  if (key == nullptr) return nullptr;
  const char* type = EVP_PKEY_get0_type_name(key);
  return {{"type", type != nullptr ? type : "unknown"}, {"bits", EVP_PKEY_get_bits(key)}};
}

/// The stapled OCSP response a client received, or null.
json ocsp_of(SSL* ssl) {
  const unsigned char* data = nullptr;
  long length = SSL_get_tlsext_status_ocsp_resp(ssl, &data);
  if (length <= 0 || data == nullptr) return nullptr;
  OCSP_RESPONSE* response = d2i_OCSP_RESPONSE(nullptr, &data, length);
  if (response == nullptr) return {{"status", "malformed"}};
  json out = {{"status", OCSP_response_status_str(OCSP_response_status(response))}};
  if (OCSP_BASICRESP* basic = OCSP_response_get1_basic(response)) {
    if (OCSP_SINGLERESP* single = OCSP_resp_get0(basic, 0)) {
      ASN1_GENERALIZEDTIME *revoked = nullptr, *this_update = nullptr, *next_update = nullptr;
      int reason = 0;
      int status = OCSP_single_get0_status(single, &reason, &revoked, &this_update, &next_update);
      out["cert_status"] = OCSP_cert_status_str(status);
      out["this_update"] = iso_time(this_update);
      out["next_update"] = iso_time(next_update);
    }
    OCSP_BASICRESP_free(basic);
  }
  OCSP_RESPONSE_free(response);
  return out;
}

json alpn_of(SSL* ssl) {
  const unsigned char* data = nullptr;
  unsigned int length = 0;
  SSL_get0_alpn_selected(ssl, &data, &length);
  if (length == 0) return nullptr;
  return std::string(reinterpret_cast<const char*>(data), length);
}

json cipher_facts(SSL* ssl, json& info) {
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  int alg_bits = 0;
  info["cipher"] = cipher != nullptr ? SSL_CIPHER_get_name(cipher) : "";
  info["bits"] = cipher != nullptr ? SSL_CIPHER_get_bits(cipher, &alg_bits) : 0;
  info["alg_bits"] = alg_bits;
  char description[256] = "";
  if (cipher != nullptr) SSL_CIPHER_description(cipher, description, sizeof description);
  std::string text(description);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  info["cipher_description"] = text;
  return info;
}

}  // namespace

json describe_certificate(X509* cert) {
  BIO* pem = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(pem, cert);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_length = 0;
  X509_digest(cert, EVP_sha256(), digest, &digest_length);
  return {{"pem", bio_text(pem)},
          {"subject", name_text(X509_get_subject_name(cert))},
          {"issuer", name_text(X509_get_issuer_name(cert))},
          {"serial", serial_of(cert)},
          {"not_before", iso_time(X509_get0_notBefore(cert))},
          {"not_after", iso_time(X509_get0_notAfter(cert))},
          {"signature_algorithm", OBJ_nid2ln(X509_get_signature_nid(cert))},
          {"public_key", public_key_of(cert)},
          {"san", san_of(cert)},
          {"sha256", hex(digest, digest_length)}};
}

json describe_peer_chain(SSL* ssl) {
  json chain = json::array();
  STACK_OF(X509)* received = SSL_get_peer_cert_chain(ssl);
  // A server's received chain leaves out the client's own certificate.
  if (SSL_is_server(ssl)) {
    if (X509* leaf = SSL_get0_peer_certificate(ssl)) chain.push_back(describe_certificate(leaf));
  }
  int count = received != nullptr ? sk_X509_num(received) : 0;
  for (int i = 0; i < count && static_cast<int>(chain.size()) < kMaxChain; ++i)
    chain.push_back(describe_certificate(sk_X509_value(received, i)));
  return chain;
}

json verify_result(SSL* ssl) {
  long code = SSL_get_verify_result(ssl);
  json result = {{"code", code}, {"text", X509_verify_cert_error_string(code)}};
  int depth = failed_verify_depth(ssl);
  if (code != X509_V_OK && depth >= 0) result["depth"] = depth;
  return result;
}

json describe_session(SSL* ssl) {
  json info = json::object();
  info["protocol"] = SSL_get_version(ssl);
  cipher_facts(ssl, info);
  info["session_reused"] = SSL_session_reused(ssl) == 1;
  info["alpn"] = alpn_of(ssl);
  const char* server_name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  info["server_name"] = server_name != nullptr ? json(server_name) : json(nullptr);
  info["verify_result"] = verify_result(ssl);
  X509* peer = SSL_get0_peer_certificate(ssl);
  info["peer_certificate"] = peer != nullptr ? describe_certificate(peer) : json(nullptr);
  info["peer_chain"] = describe_peer_chain(ssl);
  X509* local = SSL_get_certificate(ssl);
  info["local_certificate"] = local != nullptr ? describe_certificate(local) : json(nullptr);
  if (!SSL_is_server(ssl)) info["ocsp"] = ocsp_of(ssl);
  return info;
}

json supported_ciphers(SSL* ssl) {
  json names = json::array();
  STACK_OF(SSL_CIPHER)* ciphers = SSL_get1_supported_ciphers(ssl);
  for (int i = 0; ciphers != nullptr && i < sk_SSL_CIPHER_num(ciphers); ++i)
    names.push_back(SSL_CIPHER_get_name(sk_SSL_CIPHER_value(ciphers, i)));
  sk_SSL_CIPHER_free(ciphers);
  return names;
}

bool inject_ca_and_verify(SSL* ssl, const std::string& pem_or_der, const std::string& source,
                          ErrorInfo& error) {
  X509* leaf = SSL_get0_peer_certificate(ssl);
  if (leaf == nullptr) {
    error = wire_error(ErrorKind::bad_request, "the peer sent no certificate to verify");
    return false;
  }
  std::vector<X509Ptr> cas;
  if (!parse_certificates(pem_or_der, source, cas, error)) return false;
  // The connection's trust: its context's store, with the new CAs added.
  X509_STORE* store = SSL_CTX_get_cert_store(SSL_get_SSL_CTX(ssl));
  X509_STORE* own = X509_STORE_new();
  STACK_OF(X509)* known = X509_STORE_get1_all_certs(store);
  for (int i = 0; known != nullptr && i < sk_X509_num(known); ++i)
    X509_STORE_add_cert(own, sk_X509_value(known, i));
  sk_X509_pop_free(known, X509_free);
  for (auto& ca : cas) X509_STORE_add_cert(own, ca.get());
  X509_STORE_CTX* verify = X509_STORE_CTX_new();
  X509_STORE_CTX_init(verify, own, leaf, SSL_get_peer_cert_chain(ssl));
  X509_VERIFY_PARAM_set1(X509_STORE_CTX_get0_param(verify), SSL_get0_param(ssl));
  X509_STORE_CTX_set_default(verify, SSL_is_server(ssl) ? "ssl_client" : "ssl_server");
  int ok = X509_verify_cert(verify);
  long code = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(verify);
  SslNotes& notes = ssl_notes(ssl);
  notes.failed_depth = ok == 1 ? -1 : X509_STORE_CTX_get_error_depth(verify);
  SSL_set_verify_result(ssl, code);
  SSL_set1_verify_cert_store(ssl, own);  // later checks of this connection see the CAs too
  X509_STORE_CTX_free(verify);
  X509_STORE_free(own);
  ERR_clear_error();
  return true;
}

}  // namespace tlsport::daemon
