/*
** proxy.c -- PROXY protocol v1 (a text line) and v2 (binary), as HAProxy
** documents them (proxy-protocol.txt). Only the source address matters to
** luasrv; v2's TLVs are skipped. Nothing is guessed: a connection on a
** listener that expects the header must start with one.
*/
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "proxy.h"

static const char v2sig[12] = "\r\n\r\n\0\r\nQUIT\n";


static long fail (char *err, size_t errlen, const char *why) {
  snprintf(err, errlen, "bad PROXY protocol header: %s", why);
  return -1;
}


/* A decimal port 0..65535 of exactly the chars in s[0..n). */
static int parse_port (const char *s, size_t n, unsigned *port) {
  unsigned v = 0;
  if (n == 0 || n > 5 || (n > 1 && s[0] == '0')) return -1;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v > 65535) return -1;
  *port = v;
  return 0;
}


/* "PROXY TCP4 SRC DST SPORT DPORT\r\n" */
static long parse_v1 (const char *buf, size_t len, struct sockaddr_storage *src,
                      socklen_t *srclen, char *err, size_t errlen) {
  char line[PROXY_V1_MAX + 1], *f[6];
  const char *crlf = memchr(buf, '\r', len < PROXY_V1_MAX ? len : PROXY_V1_MAX);
  size_t n;
  int nf = 0;
  unsigned sport, dport;
  if (crlf == NULL)
    return len < PROXY_V1_MAX ? 0 : fail(err, errlen, "v1 line too long");
  n = (size_t)(crlf - buf);
  if (n + 1 >= len) return 0;  /* the \n is not there yet */
  if (crlf[1] != '\n') return fail(err, errlen, "v1 line without CRLF");
  memcpy(line, buf, n);
  line[n] = '\0';
  for (char *p = line, *sp; nf < 6; p = sp + 1) {
    f[nf++] = p;
    if ((sp = strchr(p, ' ')) == NULL) break;
    *sp = '\0';
  }
  memset(src, 0, sizeof *src);
  *srclen = 0;
  if (nf >= 2 && strcmp(f[1], "UNKNOWN") == 0) return (long)n + 2;
  if (nf != 6) return fail(err, errlen, "v1 needs 6 fields");
  if (parse_port(f[4], strlen(f[4]), &sport) < 0 ||
      parse_port(f[5], strlen(f[5]), &dport) < 0)
    return fail(err, errlen, "v1 bad port");
  if (strcmp(f[1], "TCP4") == 0) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)src;
    struct in_addr dst;
    if (inet_pton(AF_INET, f[2], &s4->sin_addr) != 1 ||
        inet_pton(AF_INET, f[3], &dst) != 1)
      return fail(err, errlen, "v1 bad IPv4 address");
    s4->sin_family = AF_INET;
    s4->sin_port = htons((unsigned short)sport);
    *srclen = sizeof *s4;
  }
  else if (strcmp(f[1], "TCP6") == 0) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)src;
    struct in6_addr dst;
    if (inet_pton(AF_INET6, f[2], &s6->sin6_addr) != 1 ||
        inet_pton(AF_INET6, f[3], &dst) != 1)
      return fail(err, errlen, "v1 bad IPv6 address");
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((unsigned short)sport);
    *srclen = sizeof *s6;
  }
  else return fail(err, errlen, "v1 unknown protocol");
  return (long)n + 2;
}


static long parse_v2 (const unsigned char *b, size_t len,
                      struct sockaddr_storage *src, socklen_t *srclen,
                      char *err, size_t errlen) {
  size_t alen, total;
  unsigned cmd, fam;
  if (len < 16) return 0;
  if ((b[12] >> 4) != 2) return fail(err, errlen, "v2 unknown version");
  cmd = b[12] & 0x0f;
  fam = b[13];
  alen = (size_t)b[14] << 8 | b[15];
  total = 16 + alen;
  if (len < total) return 0;
  memset(src, 0, sizeof *src);
  *srclen = 0;
  if (cmd == 0) return (long)total;  /* LOCAL: the proxy's own connection */
  if (cmd != 1) return fail(err, errlen, "v2 unknown command");
  switch (fam >> 4) {
    case 0:  /* AF_UNSPEC */
      return (long)total;
    case 1: {  /* AF_INET */
      struct sockaddr_in *s4 = (struct sockaddr_in *)src;
      if (alen < 12) return fail(err, errlen, "v2 short IPv4 block");
      s4->sin_family = AF_INET;
      memcpy(&s4->sin_addr, b + 16, 4);
      memcpy(&s4->sin_port, b + 24, 2);
      *srclen = sizeof *s4;
      return (long)total;
    }
    case 2: {  /* AF_INET6 */
      struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)src;
      if (alen < 36) return fail(err, errlen, "v2 short IPv6 block");
      s6->sin6_family = AF_INET6;
      memcpy(&s6->sin6_addr, b + 16, 16);
      memcpy(&s6->sin6_port, b + 48, 2);
      *srclen = sizeof *s6;
      return (long)total;
    }
    case 3: {  /* AF_UNIX */
      struct sockaddr_un *su = (struct sockaddr_un *)src;
      if (alen < 216) return fail(err, errlen, "v2 short Unix block");
      su->sun_family = AF_UNIX;
      memcpy(su->sun_path, b + 16, sizeof su->sun_path - 1);
      *srclen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
                            strlen(su->sun_path) + 1);
      return (long)total;
    }
    default:
      return fail(err, errlen, "v2 unknown address family");
  }
}


long proxy_parse (const char *buf, size_t len, struct sockaddr_storage *src,
                  socklen_t *srclen, char *err, size_t errlen) {
  size_t n = len < sizeof v2sig ? len : sizeof v2sig;
  if (len == 0) return 0;
  if (memcmp(buf, v2sig, n) == 0)
    return n < sizeof v2sig ? 0 : parse_v2((const unsigned char *)buf, len,
                                           src, srclen, err, errlen);
  n = len < 6 ? len : 6;
  if (memcmp(buf, "PROXY ", n) == 0)
    return n < 6 ? 0 : parse_v1(buf, len, src, srclen, err, errlen);
  return fail(err, errlen, "the connection does not start with one");
}
