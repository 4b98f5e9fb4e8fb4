// TLS files and the formats inside them.
#include "daemon/tls_files.hpp"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tlsport::daemon {
namespace {

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

BioPtr memory_bio(std::string_view data) {
  return BioPtr(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}

bool is_pem(std::string_view data) { return data.find("-----BEGIN ") != std::string_view::npos; }

ErrorInfo config_error(const std::string& message) {
  return wire_error(ErrorKind::bad_tls_config, message);
}

/// What a file is when it is not a regular file.
const char* file_type_name(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

/// Passphrase for OpenSSL's PEM and PKCS#8 readers; remembers being asked.
struct PasswordAsk {
  const std::string* password;  ///< the passphrase ("" = none)
  bool asked = false;           ///< the key was encrypted
};

int password_callback(char* buf, int size, int, void* userdata) {
  auto* ask = static_cast<PasswordAsk*>(userdata);
  ask->asked = true;
  if (ask->password->empty()) return -1;
  int n = static_cast<int>(
      std::min<std::size_t>(ask->password->size(), static_cast<std::size_t>(size)));
  std::memcpy(buf, ask->password->data(), n);
  return n;
}

/// Reads every PEM object of one type from `data`, stopping at the end.
template <class T, class Read, class Out>
bool read_pem_all(std::string_view data, Read read, Out& out) {
  BioPtr bio = memory_bio(data);
  ERR_clear_error();
  while (T* item = read(bio.get(), nullptr, nullptr, nullptr)) out.emplace_back(item);
  // The loop ends at the first object that is not there: not an error.
  unsigned long err = ERR_peek_last_error();
  if (ERR_GET_LIB(err) == ERR_LIB_PEM && ERR_GET_REASON(err) == PEM_R_NO_START_LINE)
    ERR_clear_error();
  return !out.empty() && ERR_peek_error() == 0;
}

}  // namespace

bool read_tls_file(const std::string& path, const char* what, std::string& out, ErrorInfo& error) {
  std::string name = std::string(what) + " " + path;
  // Non-blocking: a FIFO opens at once instead of waiting for a writer, and
  // is refused below like anything else that is not a regular file.
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    error = config_error("cannot read " + name + ": " + std::strerror(errno));
    return false;
  }
  struct stat st;
  bool ok = false;
  if (::fstat(fd, &st) != 0) {
    error = config_error("cannot read " + name + ": " + std::strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    error = config_error(name + " is " + file_type_name(st.st_mode) + ", not a regular file");
  } else if (static_cast<std::size_t>(st.st_size) > kMaxTlsFileSize) {
    error = config_error(name + " is larger than " + std::to_string(kMaxTlsFileSize) + " bytes");
  } else {
    out.assign(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t got = 0;
    while (got < out.size()) {
      ssize_t n = ::read(fd, out.data() + got, out.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    out.resize(got);
    ok = true;
  }
  ::close(fd);
  return ok;
}

bool parse_certificates(std::string_view data, const std::string& source, std::vector<X509Ptr>& out,
                        ErrorInfo& error) {
  out.clear();
  bool ok = false;
  if (is_pem(data)) {
    ok = read_pem_all<X509>(data, PEM_read_bio_X509, out);
  } else {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    if (X509* cert = d2i_X509(nullptr, &p, static_cast<long>(data.size()))) out.emplace_back(cert);
    ok = !out.empty();
  }
  if (!ok)
    error =
        config_error("no certificate in " + source + ": " + take_openssl_error("not PEM or DER"));
  return ok;
}

EvpPkeyPtr parse_private_key(std::string_view data, const std::string& source,
                             const std::string& password, KeyProblem& problem, ErrorInfo& error) {
  PasswordAsk ask{&password};
  EvpPkeyPtr key;
  ERR_clear_error();
  if (is_pem(data)) {
    BioPtr bio = memory_bio(data);
    key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, password_callback, &ask));
  } else {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    key.reset(d2i_AutoPrivateKey(nullptr, &p, static_cast<long>(data.size())));
    if (!key) {
      BioPtr bio = memory_bio(data);
      key.reset(d2i_PKCS8PrivateKey_bio(bio.get(), nullptr, password_callback, &ask));
    }
  }
  if (key) {
    problem = KeyProblem::none;
    ERR_clear_error();
    return key;
  }
  if (ask.asked && password.empty()) {
    problem = KeyProblem::needs_password;
    error = config_error("the private key in " + source +
                         " is encrypted and no password was given (password, password_file or "
                         "ask_password)");
  } else if (ask.asked) {
    problem = KeyProblem::wrong_password;
    error = config_error("wrong password for the private key in " + source);
  } else {
    problem = KeyProblem::unreadable;
    error =
        config_error("no private key in " + source + ": " + take_openssl_error("not PEM or DER"));
  }
  ERR_clear_error();
  return nullptr;
}

bool parse_crls(std::string_view data, const std::string& source, std::vector<X509CrlPtr>& out,
                ErrorInfo& error) {
  out.clear();
  bool ok = false;
  if (is_pem(data)) {
    ok = read_pem_all<X509_CRL>(data, PEM_read_bio_X509_CRL, out);
  } else {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    if (X509_CRL* crl = d2i_X509_CRL(nullptr, &p, static_cast<long>(data.size())))
      out.emplace_back(crl);
    ok = !out.empty();
  }
  if (!ok)
    error = config_error("no CRL in " + source + ": " + take_openssl_error("not PEM or DER"));
  return ok;
}

EvpPkeyPtr parse_dh_parameters(std::string_view data, const std::string& source, ErrorInfo& error) {
  EvpPkeyPtr params;
  ERR_clear_error();
  if (is_pem(data)) {
    BioPtr bio = memory_bio(data);
    params.reset(PEM_read_bio_Parameters(bio.get(), nullptr));
  } else {
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    params.reset(d2i_KeyParams(EVP_PKEY_DH, nullptr, &p, static_cast<long>(data.size())));
  }
  if (!params)
    error =
        config_error("no DH parameters in " + source + ": " + take_openssl_error("not PEM or DER"));
  return params;
}

bool read_password_file(const std::string& path, std::string& out, ErrorInfo& error) {
  std::string text;
  if (!read_tls_file(path, "password file", text, error)) return false;
  out = text.substr(0, text.find_first_of("\r\n"));
  OPENSSL_cleanse(text.data(), text.size());
  return true;
}

}  // namespace tlsport::daemon
