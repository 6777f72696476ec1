/*
** fuzz_acl.c -- acl_parse and acl_allows.
**
** Input: up to 8 rule lines ("+RULE" allows, anything else denies; the
** first byte is dropped), then a line of client address bytes (16 used:
** as IPv4 from the first 4, as IPv6 from all 16, and IPv4-mapped).
** Checked:
**   - acl_parse returns 0/-1, a parsed rule has a family, a prefix within
**     the family's bits, and "all" only as AF_UNSPEC; err is terminated;
**   - a rule parsed from "ADDR" or "ADDR/BITS" for an address that
**     inet_pton reads agrees with the text (a re-implementation); an
**     IPv4-mapped ADDR gives the IPv4 rule, its prefix less 96;
**   - acl_allows agrees with a bit-by-bit reference, on IPv4, IPv6 and
**     IPv4-mapped IPv6 clients, and a mapped client is judged as the
**     IPv4 address it is; Unix clients always pass.
*/
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

#include "acl.h"
#include "fuzz_common.h"

#define MAX_RULES 8


static int bit (const unsigned char *b, int i) {
  return (b[i / 8] >> (7 - i % 8)) & 1;
}


static int ref_allows (const struct acl_rule *r, int n, int family,
                       const unsigned char *bytes) {
  int any_allow = 0;
  if (n == 0) return 1;
  for (int i = 0; i < n; i++) {
    int match = r[i].family == AF_UNSPEC;
    any_allow |= r[i].allow;
    if (r[i].family == family) {
      match = 1;
      for (int k = 0; k < r[i].prefix; k++)
        if (bit(bytes, k) != bit(r[i].addr, k)) {
          match = 0;
          break;
        }
    }
    if (match) return r[i].allow;
  }
  return !any_allow;
}


int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  struct acl_rule rules[MAX_RULES];
  int n = 0;
  unsigned char client[16] = {0};
  size_t i = 0;
  while (i < size && n <= MAX_RULES) {
    const uint8_t *nl = memchr(data + i, '\n', size - i);
    size_t len = nl ? (size_t)(nl - (data + i)) : size - i;
    if (n == MAX_RULES || nl == NULL) {  /* the last line: the client */
      memcpy(client, data + i, len < 16 ? len : 16);
      break;
    }
    if (len > 0) {
      char *text = malloc(len);  /* exactly: "+RULE" -> "RULE\0" */
      char err[128];
      int allow = data[i] == '+';
      memcpy(text, data + i + 1, len - 1);
      text[len - 1] = '\0';
      memset(err, 'x', sizeof err);
      int rc = acl_parse(text, allow, &rules[n], err, sizeof err);
      CHECK(rc == 0 || rc == -1, "rc %d", rc);
      if (rc < 0) CHECK(memchr(err, '\0', sizeof err) != NULL && err[0],
                        "bad err for '%s'", text);
      else {
        struct acl_rule *r = &rules[n];
        CHECK(r->allow == allow, "allow flag lost");
        if (strcmp(text, "all") == 0)
          CHECK(r->family == AF_UNSPEC, "'all' not AF_UNSPEC");
        else {
          char host[64];
          unsigned char want[16] = {0};
          const char *slash = strchr(text, '/');
          size_t hl = slash ? (size_t)(slash - text) : strlen(text);
          int fam = r->family, maxbits = fam == AF_INET ? 32 : 128;
          CHECK(fam == AF_INET || fam == AF_INET6, "family %d for '%s'", fam, text);
          CHECK(r->prefix >= 0 && r->prefix <= maxbits, "prefix %d for '%s'",
                r->prefix, text);
          CHECK(hl < sizeof host, "host of %zu bytes accepted", hl);
          memcpy(host, text, hl);
          host[hl] = '\0';
          if (fam == AF_INET && inet_pton(AF_INET6, host, want) == 1) {
            /* ::ffff:a.b.c.d[/BITS]: the IPv4 rule a.b.c.d[/BITS-96] */
            CHECK(IN6_IS_ADDR_V4MAPPED((struct in6_addr *)want),
                  "'%s' is IPv6, not mapped, but parsed as IPv4", host);
            memmove(want, want + 12, 4);
            memset(want + 4, 0, 12);
            if (slash != NULL)
              CHECK(r->prefix == atoi(slash + 1) - 96, "mapped prefix %d "
                    "for '%s'", r->prefix, text);
          }
          else
            CHECK(inet_pton(fam, host, want) == 1, "'%s' is not %d", host, fam);
          CHECK(memcmp(want, r->addr, 16) == 0, "address bytes of '%s'", text);
          if (slash == NULL)
            CHECK(r->prefix == maxbits, "no /BITS but prefix %d", r->prefix);
          CHECK(fam != AF_INET6 ||
                !IN6_IS_ADDR_V4MAPPED((struct in6_addr *)r->addr),
                "'%s' kept as an IPv4-mapped IPv6 rule", text);
        }
        n++;
      }
      free(text);
    }
    i += len + 1;
  }

  /* Clients: IPv4, IPv6, IPv4-mapped IPv6, Unix. */
  struct sockaddr_in in4;
  struct sockaddr_in6 in6, mapped;
  struct sockaddr_un un;
  unsigned char m[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  memset(&in4, 0, sizeof in4);
  in4.sin_family = AF_INET;
  memcpy(&in4.sin_addr, client, 4);
  memset(&in6, 0, sizeof in6);
  in6.sin6_family = AF_INET6;
  memcpy(&in6.sin6_addr, client, 16);
  memcpy(m + 12, client, 4);
  memset(&mapped, 0, sizeof mapped);
  mapped.sin6_family = AF_INET6;
  memcpy(&mapped.sin6_addr, m, 16);
  memset(&un, 0, sizeof un);
  un.sun_family = AF_UNIX;

  int a4 = acl_allows(rules, n, (struct sockaddr *)&in4);
  int a6 = acl_allows(rules, n, (struct sockaddr *)&in6);
  int am = acl_allows(rules, n, (struct sockaddr *)&mapped);
  int au = acl_allows(rules, n, (struct sockaddr *)&un);
  CHECK(a4 == 0 || a4 == 1, "acl_allows returned %d", a4);
  CHECK(a4 == ref_allows(rules, n, AF_INET, client), "IPv4 verdict %d", a4);
  CHECK(am == a4, "mapped verdict %d, IPv4 verdict %d", am, a4);
  CHECK(au == 1, "a Unix client refused");
  if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr))
    CHECK(a6 == ref_allows(rules, n, AF_INET, client + 12), "mapped v6 %d", a6);
  else
    CHECK(a6 == ref_allows(rules, n, AF_INET6, client), "IPv6 verdict %d", a6);
  return 0;
}
