/*
** fuzz_address.c -- address_parse, address_format and address_format_peer.
**
** Input: byte 0 picks the transport (low 2 bits) and, with bit 7 set, the
** raw-sockaddr mode; the rest is the address text (cut at the first NUL).
**
** Raw mode: the rest is a sockaddr (family from the next byte, then the
** bytes) with a length and an output size taken from the input, given to
** address_format_peer and address_format: they must not read or write out
** of bounds, and must NUL-terminate within the size given.
**
** Invariants checked on what address_parse accepts:
**   - Unix transports: accepted iff 0 < strlen <= ADDRESS_PATH_MAX; the
**     formatted form is exactly "unix:TEXT" / "unixgram:TEXT".
**   - inet: AF_INET or AF_INET6, salen of that family, the port is the
**     decimal the text ended with; the formatted form "tcp://HOST:PORT"
**     re-parses to the same family, address bytes and port (not the IPv6
**     scope id, which inet_ntop does not print).
**   - err is NUL-terminated on failure and names something.
**
** Name resolution: address.c is compiled for this target with
** -Dgetaddrinfo=fuzz_getaddrinfo; the shim below adds AI_NUMERICHOST so
** the fuzzer never waits on DNS or /etc/hosts (names fail with NONAME).
*/
#include <arpa/inet.h>
#include <netdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "fuzz_common.h"

int fuzz_getaddrinfo (const char *node, const char *service,
                      const struct addrinfo *hints, struct addrinfo **res);

int fuzz_getaddrinfo (const char *node, const char *service,
                      const struct addrinfo *hints, struct addrinfo **res) {
  struct addrinfo h = *hints;
  h.ai_flags |= AI_NUMERICHOST;
  return getaddrinfo(node, service, &h, res);
}


static void check_nul (const char *buf, size_t len, const char *what) {
  CHECK(memchr(buf, '\0', len) != NULL, "%s not NUL-terminated", what);
}


static void raw_mode (const uint8_t *data, size_t size) {
  struct sockaddr_storage ss;
  struct address a;
  char out[ADDRESS_STRLEN + 16];
  size_t outlen;
  socklen_t salen;
  int fams[] = {AF_INET, AF_INET6, AF_UNIX, AF_UNSPEC};
  if (size < 3) return;
  memset(&ss, 0, sizeof ss);
  ss.ss_family = (sa_family_t)(data[0] < 252 ? fams[data[0] % 4] : data[0]);
  salen = (socklen_t)(data[1] % (sizeof ss + 1));
  outlen = 1 + data[2] % ADDRESS_STRLEN;
  data += 3;
  size -= 3;
  if (size > sizeof ss - 2) size = sizeof ss - 2;
  memcpy((char *)&ss + 2, data, size);  /* after the family */
  /* the output goes into a heap block of exactly outlen bytes */
  char *buf = malloc(outlen);
  memset(buf, 'x', outlen);
  address_format_peer((struct sockaddr *)&ss, salen, buf, outlen);
  check_nul(buf, outlen, "address_format_peer");
  free(buf);
  if (ss.ss_family == AF_UNIX) {  /* a path is shown up to salen, no further */
    address_format_peer((struct sockaddr *)&ss, salen, out, sizeof out);
    size_t off = offsetof(struct sockaddr_un, sun_path);
    size_t n = salen > off ? salen - off : 0;
    CHECK(strncmp(out, "unix:", 5) == 0, "unix peer shown as '%s'", out);
    CHECK(strlen(out + 5) <= n, "unix path longer than salen: '%s'", out);
  }
  memset(&a, 0, sizeof a);
  a.tr = (enum transport)(outlen % 4);
  memcpy(&a.sa, &ss, sizeof ss);
  a.salen = salen;
  buf = malloc(outlen);
  address_format(&a, buf, outlen);
  check_nul(buf, outlen, "address_format");
  free(buf);
}


/* Re-parses "tr://HOST:PORT" (what address_format wrote for inet). */
static void check_inet_roundtrip (const struct address *a, const char *text,
                                  const char *fmt) {
  struct address b;
  char err[256];
  const char *p = strstr(fmt, "://");
  CHECK(p != NULL, "no scheme in '%s' (from '%s')", fmt, text);
  CHECK(strncmp(fmt, transport_name(a->tr), (size_t)(p - fmt)) == 0,
        "scheme of '%s' is not %s", fmt, transport_name(a->tr));
  CHECK(address_parse(a->tr, p + 3, &b, err, sizeof err) == 0,
        "'%s' (formatted from '%s') does not re-parse: %s", fmt, text, err);
  CHECK(b.sa.ss_family == a->sa.ss_family, "family changed: '%s' -> '%s'",
        text, fmt);
  CHECK(b.salen == a->salen, "salen changed: '%s' -> '%s'", text, fmt);
  if (a->sa.ss_family == AF_INET) {
    const struct sockaddr_in *x = (const void *)&a->sa, *y = (const void *)&b.sa;
    CHECK(x->sin_port == y->sin_port &&
          memcmp(&x->sin_addr, &y->sin_addr, 4) == 0,
          "'%s' -> '%s' is another address", text, fmt);
  }
  else {
    const struct sockaddr_in6 *x = (const void *)&a->sa, *y = (const void *)&b.sa;
    CHECK(x->sin6_port == y->sin6_port &&
          memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0,
          "'%s' -> '%s' is another address", text, fmt);
  }
}


int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  struct address a;
  char err[256], fmt[ADDRESS_STRLEN], *text;
  enum transport tr;
  size_t n;
  int rc;
  if (size < 1) return 0;
  if (data[0] & 0x80) {
    raw_mode(data + 1, size - 1);
    return 0;
  }
  tr = (enum transport)(data[0] & 3);
  n = strnlen((const char *)data + 1, size - 1);
  if (n > 4096) return 0;
  text = malloc(n + 1);  /* exactly: reads past the text are caught */
  memcpy(text, data + 1, n);
  text[n] = '\0';
  memset(err, 'x', sizeof err);
  rc = address_parse(tr, text, &a, err, sizeof err);
  CHECK(rc == 0 || rc == -1, "rc %d", rc);
  if (rc < 0) {
    check_nul(err, sizeof err, "err");
    CHECK(err[0] != '\0', "empty error for '%s'", text);
    if (!(tr == TR_TCP || tr == TR_UDP))
      CHECK(n == 0 || n > ADDRESS_PATH_MAX, "unix path '%s' refused: %s",
            text, err);
    free(text);
    return 0;
  }
  CHECK(a.tr == tr, "transport changed");
  memset(fmt, 'x', sizeof fmt);
  address_format(&a, fmt, sizeof fmt);
  check_nul(fmt, sizeof fmt, "address_format");
  if (tr == TR_TCP || tr == TR_UDP) {
    const char *colon = strrchr(text, ':');
    long port = atol(colon ? colon + 1 : text);
    CHECK(a.sa.ss_family == AF_INET || a.sa.ss_family == AF_INET6,
          "family %d for '%s'", a.sa.ss_family, text);
    CHECK(a.salen == (a.sa.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                               : sizeof(struct sockaddr_in6)),
          "salen %u for '%s'", (unsigned)a.salen, text);
    CHECK(port >= 0 && port <= 65535, "port %ld accepted in '%s'", port, text);
    CHECK(ntohs(((struct sockaddr_in *)&a.sa)->sin_port) == port,
          "port of '%s' parsed as %d", text,
          ntohs(((struct sockaddr_in *)&a.sa)->sin_port));
    check_inet_roundtrip(&a, text, fmt);
  }
  else {
    char want[ADDRESS_STRLEN];
    CHECK(n > 0 && n <= ADDRESS_PATH_MAX, "unix path of %zu bytes accepted", n);
    snprintf(want, sizeof want, "%s:%s", transport_name(tr), text);
    CHECK(strcmp(fmt, want) == 0, "'%s' formatted as '%s'", want, fmt);
    CHECK(a.sa.ss_family == AF_UNIX, "family %d", a.sa.ss_family);
  }
  free(text);
  return 0;
}
