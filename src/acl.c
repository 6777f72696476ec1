/*
** acl.c -- client address rules (see acl.h). An IPv4 client that reaches
** an IPv6 socket as ::ffff:a.b.c.d is matched as the IPv4 address it is,
** and a rule written as ::ffff:a.b.c.d[/BITS] is an IPv4 rule.
*/
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl.h"


/*
** ::ffff:a.b.c.d/BITS becomes a.b.c.d/(BITS - 96): clients are matched as
** IPv4 (client_bytes), so a mapped rule must be one too. A prefix under
** 96 would also cover addresses that are not IPv4: refused.
*/
static int v4mapped (const char *text, struct acl_rule *r, char *err,
                     size_t errlen) {
  if (r->prefix < 96) {
    snprintf(err, errlen, "bad address rule '%s' (an IPv4-mapped rule needs "
             "/96 or more; or write the IPv4 address)", text);
    return -1;
  }
  memmove(r->addr, r->addr + 12, 4);
  memset(r->addr + 4, 0, 12);
  r->family = AF_INET;
  r->prefix -= 96;
  return 0;
}


int acl_parse (const char *text, int allow, struct acl_rule *r, char *err,
               size_t errlen) {
  char host[64];
  const char *slash = strchr(text, '/');
  size_t hlen = slash ? (size_t)(slash - text) : strlen(text);
  int maxbits;
  memset(r, 0, sizeof *r);
  r->allow = allow;
  if (strcmp(text, "all") == 0) {
    r->family = AF_UNSPEC;
    return 0;
  }
  if (hlen >= sizeof host) goto bad;
  memcpy(host, text, hlen);
  host[hlen] = '\0';
  if (inet_pton(AF_INET, host, r->addr) == 1) {
    r->family = AF_INET;
    maxbits = 32;
  }
  else if (inet_pton(AF_INET6, host, r->addr) == 1) {
    r->family = AF_INET6;
    maxbits = 128;
  }
  else goto bad;
  r->prefix = maxbits;
  if (slash != NULL) {
    char *end;
    long bits = strtol(slash + 1, &end, 10);
    if (slash[1] < '0' || slash[1] > '9' || *end != '\0' || bits > maxbits)
      goto bad;
    r->prefix = (int)bits;
  }
  if (r->family == AF_INET6 &&
      IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)r->addr))
    return v4mapped(text, r, err, errlen);
  return 0;
bad:
  snprintf(err, errlen, "bad address rule '%s' (an IP address, ADDR/BITS, "
           "or all)", text);
  return -1;
}


/* Do the first bits of a and b agree? */
static int prefix_match (const unsigned char *a, const unsigned char *b,
                         int bits) {
  int whole = bits / 8, rest = bits % 8;
  if (memcmp(a, b, (size_t)whole) != 0) return 0;
  if (rest == 0) return 1;
  return ((a[whole] ^ b[whole]) & (0xff << (8 - rest))) == 0;
}


/* The client's family and address bytes; IPv4-mapped IPv6 becomes IPv4. */
static int client_bytes (const struct sockaddr *sa, unsigned char *out) {
  if (sa->sa_family == AF_INET) {
    memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    return AF_INET;
  }
  if (sa->sa_family == AF_INET6) {
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6)) {
      memcpy(out, a6->s6_addr + 12, 4);
      return AF_INET;
    }
    memcpy(out, a6->s6_addr, 16);
    return AF_INET6;
  }
  return AF_UNSPEC;
}


int acl_allows (const struct acl_rule *rules, int n, const struct sockaddr *sa) {
  unsigned char bytes[16];
  int family, any_allow = 0;
  if (n == 0) return 1;
  family = client_bytes(sa, bytes);
  if (family == AF_UNSPEC) return 1;  /* Unix sockets */
  for (int i = 0; i < n; i++) {
    const struct acl_rule *r = &rules[i];
    any_allow |= r->allow;
    if (r->family == AF_UNSPEC ||
        (r->family == family && prefix_match(bytes, r->addr, r->prefix)))
      return r->allow;
  }
  return !any_allow;
}
