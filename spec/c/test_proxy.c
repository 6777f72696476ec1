/* test_proxy.c -- PROXY protocol v1 and v2 headers. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include "proxy.h"
#include "test.h"

static char err[256];
static struct sockaddr_storage ss;
static socklen_t sl;


static const char *host (void) {
  static char b[64];
  if (ss.ss_family == AF_INET)
    inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, b, sizeof b);
  else if (ss.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, b, sizeof b);
  else snprintf(b, sizeof b, "unspec");
  return b;
}


static int port (void) {
  return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                       : ((struct sockaddr_in6 *)&ss)->sin6_port);
}


static long parse (const char *s, size_t n) {
  return proxy_parse(s, n, &ss, &sl, err, sizeof err);
}


TEST(v1_tcp4) {
  const char *h = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /";
  ASSERT_EQ(parse(h, strlen(h)), 47);
  ASSERT_STR(host(), "192.168.0.1");
  ASSERT_EQ(port(), 56324);
}


TEST(v1_tcp6_and_unknown) {
  const char *h = "PROXY TCP6 2001:db8::1 ::1 4000 80\r\n";
  ASSERT_EQ(parse(h, strlen(h)), (long)strlen(h));
  ASSERT_STR(host(), "2001:db8::1");
  ASSERT_EQ(port(), 4000);
  h = "PROXY UNKNOWN\r\n";
  ASSERT_EQ(parse(h, strlen(h)), (long)strlen(h));
  ASSERT_EQ(ss.ss_family, AF_UNSPEC);
}


TEST(v1_needs_more_then_bad) {
  const char *h = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
  for (size_t n = 0; n < strlen(h); n++) ASSERT_EQ(parse(h, n), 0);
  ASSERT_EQ(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", 36), -1);
  ASSERT_EQ(parse("PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", 34), -1);
  ASSERT_EQ(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", 30), -1);
  ASSERT_EQ(parse("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", 33), -1);
  ASSERT_EQ(parse("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", 32), -1);
  ASSERT_EQ(parse("GET / HTTP/1.1\r\n", 16), -1);
  ASSERT_STR(err, "bad PROXY protocol header: the connection does not start with one");
  {
    char longline[200];
    memset(longline, 'A', sizeof longline);
    memcpy(longline, "PROXY ", 6);
    ASSERT_EQ(parse(longline, sizeof longline), -1);
  }
}


static size_t v2 (unsigned char *b, unsigned cmd, unsigned fam,
                  const unsigned char *addr, size_t alen) {
  memcpy(b, "\r\n\r\n\0\r\nQUIT\n", 12);
  b[12] = (unsigned char)(0x20 | cmd);
  b[13] = (unsigned char)fam;
  b[14] = (unsigned char)(alen >> 8);
  b[15] = (unsigned char)alen;
  if (alen > 0) memcpy(b + 16, addr, alen);
  return 16 + alen;
}


TEST(v2_inet) {
  unsigned char b[128];
  unsigned char a4[12] = {10, 1, 2, 3, 10, 9, 9, 9, 0x1f, 0x90, 0, 80};
  unsigned char a6[36 + 5] = {0};
  size_t n = v2(b, 1, 0x11, a4, sizeof a4);
  ASSERT_EQ(parse((char *)b, n), (long)n);
  ASSERT_STR(host(), "10.1.2.3");
  ASSERT_EQ(port(), 8080);
  for (size_t k = 0; k < n; k++) ASSERT_EQ(parse((char *)b, k), 0);
  a6[15] = 1;          /* ::1 */
  a6[32] = 0x12;       /* port 0x1234 */
  a6[33] = 0x34;
  n = v2(b, 1, 0x21, a6, sizeof a6);  /* with 5 bytes of TLVs after */
  ASSERT_EQ(parse((char *)b, n), (long)n);
  ASSERT_STR(host(), "::1");
  ASSERT_EQ(port(), 0x1234);
}


TEST(v2_local_and_errors) {
  unsigned char b[128];
  unsigned char a4[12] = {0};
  size_t n = v2(b, 0, 0x00, NULL, 0);
  ASSERT_EQ(parse((char *)b, n), 16);
  ASSERT_EQ(ss.ss_family, AF_UNSPEC);
  n = v2(b, 1, 0x11, a4, 8);  /* too short for IPv4 */
  ASSERT_EQ(parse((char *)b, n), -1);
  n = v2(b, 2, 0x11, a4, sizeof a4);  /* unknown command */
  ASSERT_EQ(parse((char *)b, n), -1);
  n = v2(b, 1, 0x11, a4, sizeof a4);
  b[12] = 0x31;  /* version 3 */
  ASSERT_EQ(parse((char *)b, n), -1);
}


int main (void) {
  RUN(v1_tcp4);
  RUN(v1_tcp6_and_unknown);
  RUN(v1_needs_more_then_bad);
  RUN(v2_inet);
  RUN(v2_local_and_errors);
  return DONE();
}
