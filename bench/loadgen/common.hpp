// Shared by the benchmark tools: the application protocol every benchmark
// server speaks, OpenSSL contexts, and a few small helpers.
//
// The echo port uses {packet,2}: every packet (2-byte big-endian length,
// then the bytes) is sent back as it is. The bulk port is raw: a 9-byte
// request, 'D' or 'U' then a 64-bit big-endian count N. 'D': the server
// sends N bytes, then closes. 'U': the client sends N bytes, the server
// answers one byte 'K' once it has them all.
#pragma once

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <asio.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace bench {

using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kRequestSize = 9;
constexpr std::size_t kChunk = 64 * 1024;

/// One read buffer for the whole (single-threaded) process, and a chunk of
/// bytes to send.
inline unsigned char g_read_buffer[256 * 1024];
inline const unsigned char g_zeros[kChunk] = {};

inline void put_request(unsigned char* out, char kind, std::uint64_t n) {
  out[0] = static_cast<unsigned char>(kind);
  for (int i = 0; i < 8; ++i) out[1 + i] = static_cast<unsigned char>(n >> (56 - 8 * i));
}

inline std::uint64_t get_u64(const unsigned char* p) {
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n = (n << 8) | p[i];
  return n;
}

inline std::string openssl_error() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "no OpenSSL error queued";
  char text[256];
  ERR_error_string_n(e, text, sizeof text);
  ERR_clear_error();
  return text;
}

[[noreturn]] inline void die(const std::string& what) {
  std::fprintf(stderr, "loadgen: %s\n", what.c_str());
  std::exit(2);
}

inline tcp::socket::wait_type wait_type_for(int ssl_error) {
  return ssl_error == SSL_ERROR_WANT_WRITE ? tcp::socket::wait_write : tcp::socket::wait_read;
}

/// A server context set up as tlsportd sets up its own: buffers released
/// when idle, partial writes, read-ahead, stateless tickets (OpenSSL's
/// default) and a small session cache.
inline SSL_CTX* server_context(const std::string& cert, const std::string& key) {
  SSL_CTX* c = SSL_CTX_new(TLS_server_method());
  if (c == nullptr) die("SSL_CTX_new: " + openssl_error());
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_read_ahead(c, 1);
  if (SSL_CTX_use_certificate_chain_file(c, cert.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(c, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(c) != 1)
    die("cannot load " + cert + " / " + key + ": " + openssl_error());
  static const unsigned char kContext[] = "tlsport-bench";
  SSL_CTX_set_session_id_context(c, kContext, sizeof kContext - 1);
  SSL_CTX_sess_set_cache_size(c, 1024);
  return c;
}

/// The load generator's context: TLS 1.3 only, no certificate check (the
/// server's CertificateVerify signature is still checked by OpenSSL).
inline SSL_CTX* client_context() {
  SSL_CTX* c = SSL_CTX_new(TLS_client_method());
  if (c == nullptr) die("SSL_CTX_new: " + openssl_error());
  SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION);
  SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_options(c, SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_read_ahead(c, 1);
  return c;
}

/// Command-line flags as --name value pairs.
class Flags {
 public:
  Flags(int argc, char** argv, int first) {
    for (int i = first; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0 || i + 1 >= argc) die("bad argument " + a);
      pairs_.emplace_back(a.substr(2), argv[++i]);
    }
  }
  std::string str(const std::string& name, const std::string& fallback = "") const {
    for (auto& [k, v] : pairs_)
      if (k == name) return v;
    if (fallback.empty()) die("missing --" + name);
    return fallback;
  }
  double num(const std::string& name, double fallback) const {
    for (auto& [k, v] : pairs_)
      if (k == name) return std::strtod(v.c_str(), nullptr);
    return fallback;
  }

 private:
  std::vector<std::pair<std::string, std::string>> pairs_;
};

/// Raises the soft limit on open files to the hard limit.
void raise_fd_limit();

int run_client(const std::string& mode, const Flags& flags);
int serve_tls(const Flags& flags);
int serve_plain(const Flags& flags);
int serve_tlsportd(const Flags& flags);

}  // namespace bench
