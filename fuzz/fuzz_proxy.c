/*
** fuzz_proxy.c -- the PROXY protocol header parser. Checks: a complete
** header of n bytes is never reported complete or bad for any shorter
** prefix (the reader waits for more); what it says it used is within
** the input; a source address has the length of its family.
*/
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "fuzz_common.h"
#include "proxy.h"


int LLVMFuzzerTestOneInput (const unsigned char *data, size_t size) {
  struct sockaddr_storage src;
  socklen_t len;
  char err[160];
  long n = proxy_parse((const char *)data, size, &src, &len, err, sizeof err);
  CHECK(n >= -1 && n <= (long)size, "returned %ld for %zu bytes", n, size);
  if (n == -1) CHECK(strncmp(err, "bad PROXY protocol header: ", 27) == 0,
                     "reason: %s", err);
  if (n > 0) {
    struct sockaddr_storage s2;
    socklen_t l2;
    switch (src.ss_family) {
      case AF_UNSPEC: CHECK(len == 0, "unspec with length %u", len); break;
      case AF_INET: CHECK(len == sizeof(struct sockaddr_in), "v4 %u", len); break;
      case AF_INET6: CHECK(len == sizeof(struct sockaddr_in6), "v6 %u", len); break;
      case AF_UNIX: CHECK(len <= sizeof(struct sockaddr_un), "unix %u", len); break;
      default: CHECK(0, "family %d", src.ss_family);
    }
    /* every shorter prefix: wait for more (a few of them, cheaply) */
    for (size_t k = 0; k < (size_t)n; k += 1 + (size_t)n / 16)
      CHECK(proxy_parse((const char *)data, k, &s2, &l2, err, sizeof err) == 0,
            "prefix of %zu of a %ld-byte header was not 'need more'", k, n);
  }
  return 0;
}
