/* Fault injection for the daemon's tests, loaded with LD_PRELOAD: SSL_new
 * fails (returns NULL with an error queued) for as long as the file named by
 * TLSPORT_FAIL_SSL_NEW exists, and works as usual otherwise. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <unistd.h>

SSL* SSL_new(SSL_CTX* ctx) {
  static SSL* (*real)(SSL_CTX*) = NULL;
  if (real == NULL) real = (SSL * (*)(SSL_CTX*)) dlsym(RTLD_NEXT, "SSL_new");
  const char* flag = getenv("TLSPORT_FAIL_SSL_NEW");
  if (flag != NULL && access(flag, F_OK) == 0) {
    ERR_raise(ERR_LIB_SSL, ERR_R_MALLOC_FAILURE);
    return NULL;
  }
  return real(ctx);
}
