// A TLS 1.3 client for the daemon's tests, driven step by step on stdin so a
// test can place a KeyUpdate exactly where it wants it:
//   keyupdate_peer HOST PORT EXPECT_BYTES
// connects with a small receive buffer and prints "ready"; on "go" sends a
// KeyUpdate that asks the daemon to update its keys too, then the line
// "after-keyupdate\n", and prints "sent"; on "read" reads EXPECT_BYTES bytes,
// checks that byte i is i % 251, prints "got N ok" (or "got N bad"), sends
// "bye\n" and waits for the daemon to close.
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

namespace {

int fail(const char* what) {
  std::fprintf(stderr, "keyupdate_peer: %s\n", what);
  ERR_print_errors_fp(stderr);
  return 1;
}

int connect_to(const char* host, const char* port) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host, port, &hints, &found) != 0) return -1;
  int fd = socket(found->ai_family, SOCK_STREAM, 0);
  // A small window makes the daemon's send buffer fill quickly.
  int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  if (connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
    close(fd);
    fd = -1;
  }
  freeaddrinfo(found);
  return fd;
}

bool write_all(SSL* ssl, const std::string& text) {
  return SSL_write(ssl, text.data(), static_cast<int>(text.size())) ==
         static_cast<int>(text.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) return fail("usage: keyupdate_peer HOST PORT EXPECT_BYTES");
  long long expect = std::atoll(argv[3]);
  int fd = connect_to(argv[1], argv[2]);
  if (fd < 0) return fail("cannot connect");
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  if (SSL_connect(ssl) != 1) return fail("handshake failed");
  std::cout << "ready" << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line == "go") {
      if (SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) != 1) return fail("key update");
      if (!write_all(ssl, "after-keyupdate\n")) return fail("write after key update");
      std::cout << "sent" << std::endl;
    } else if (line == "read") {
      long long got = 0;
      bool good = true;
      char buffer[16384];
      while (got < expect) {
        int n = SSL_read(ssl, buffer, sizeof buffer);
        if (n <= 0) break;
        for (int i = 0; i < n; ++i)
          good = good && static_cast<unsigned char>(buffer[i]) == (got + i) % 251;
        got += n;
      }
      std::cout << "got " << got << (good && got == expect ? " ok" : " bad") << std::endl;
      if (!write_all(ssl, "bye\n")) return fail("write bye");
      char rest[256];
      while (SSL_read(ssl, rest, sizeof rest) > 0) {
      }
      std::cout << "closed" << std::endl;
      break;
    }
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  return 0;
}
