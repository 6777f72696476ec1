/* test_address.c -- address parsing and formatting, without sockets. */
#include <netinet/in.h>
#include "address.h"
#include "test.h"

static char err[256];


static void fmt (enum transport tr, const char *in, char *out, size_t n) {
  struct address a;
  if (address_parse(tr, in, &a, err, sizeof err) < 0)
    snprintf(out, n, "ERR %s", err);
  else
    address_format(&a, out, n);
}


TEST(split_forms) {
  char h[64], p[8];
  ASSERT_EQ(address_split("127.0.0.1:80", h, sizeof h, p, sizeof p, err, sizeof err), 0);
  ASSERT_STR(h, "127.0.0.1");
  ASSERT_STR(p, "80");
  ASSERT_EQ(address_split("[::1]:9", h, sizeof h, p, sizeof p, err, sizeof err), 0);
  ASSERT_STR(h, "::1");
  ASSERT_STR(p, "9");
  ASSERT_EQ(address_split(":9999", h, sizeof h, p, sizeof p, err, sizeof err), 0);
  ASSERT_STR(h, "");
  ASSERT_STR(p, "9999");
  ASSERT_EQ(address_split("8080", h, sizeof h, p, sizeof p, err, sizeof err), 0);
  ASSERT_STR(h, "");
  ASSERT_STR(p, "8080");
}


TEST(split_errors) {
  char h[64], p[8];
  ASSERT_EQ(address_split("host:", h, sizeof h, p, sizeof p, err, sizeof err), -1);
  ASSERT_EQ(address_split("host:65536", h, sizeof h, p, sizeof p, err, sizeof err), -1);
  ASSERT_EQ(address_split("host:12a", h, sizeof h, p, sizeof p, err, sizeof err), -1);
  ASSERT_EQ(address_split("[::1]80", h, sizeof h, p, sizeof p, err, sizeof err), -1);
  ASSERT_EQ(address_split("::1:80", h, sizeof h, p, sizeof p, err, sizeof err), -1);
  ASSERT(strstr(err, "[HOST]:PORT") != NULL);
  ASSERT_EQ(address_split("[::1:80", h, sizeof h, p, sizeof p, err, sizeof err), -1);
}


TEST(parse_and_format) {
  char out[512];
  fmt(TR_TCP, "127.0.0.1:80", out, sizeof out);
  ASSERT_STR(out, "tcp://127.0.0.1:80");
  fmt(TR_TCP, ":9999", out, sizeof out);
  ASSERT_STR(out, "tcp://0.0.0.0:9999");
  fmt(TR_UDP, "[::1]:53", out, sizeof out);
  ASSERT_STR(out, "udp://[::1]:53");
  fmt(TR_TCP, "[::]:0", out, sizeof out);
  ASSERT_STR(out, "tcp://[::]:0");
  fmt(TR_TCP, "localhost:7", out, sizeof out);
  ASSERT(strcmp(out, "tcp://127.0.0.1:7") == 0 || strcmp(out, "tcp://[::1]:7") == 0);
  fmt(TR_UNIX, "/run/app.sock", out, sizeof out);
  ASSERT_STR(out, "unix:/run/app.sock");
  fmt(TR_UNIXGRAM, "/run/app.dgram", out, sizeof out);
  ASSERT_STR(out, "unixgram:/run/app.dgram");
}


TEST(parse_errors) {
  char out[512], path[200];
  fmt(TR_TCP, "no-such-host.invalid:80", out, sizeof out);
  ASSERT(strncmp(out, "ERR cannot resolve 'no-such-host.invalid'", 41) == 0);
  fmt(TR_UNIX, "", out, sizeof out);
  ASSERT_STR(out, "ERR empty Unix socket path");
  memset(path, 'a', sizeof path - 1);
  path[sizeof path - 1] = '\0';
  fmt(TR_UNIX, path, out, sizeof out);
  ASSERT(strncmp(out, "ERR Unix socket path too long", 29) == 0);
}


TEST(peer_forms) {
  struct sockaddr_in in;
  struct sockaddr_in6 in6;
  char out[512];
  memset(&in, 0, sizeof in);
  in.sin_family = AF_INET;
  in.sin_port = htons(5000);
  in.sin_addr.s_addr = htonl(0x7f000001);
  address_format_peer((struct sockaddr *)&in, sizeof in, out, sizeof out);
  ASSERT_STR(out, "127.0.0.1:5000");
  memset(&in6, 0, sizeof in6);
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(5000);
  in6.sin6_addr.s6_addr[15] = 1;
  address_format_peer((struct sockaddr *)&in6, sizeof in6, out, sizeof out);
  ASSERT_STR(out, "[::1]:5000");
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  address_format_peer((struct sockaddr *)&un, sizeof(sa_family_t), out, sizeof out);
  ASSERT_STR(out, "unix:");
}


int main (void) {
  RUN(split_forms);
  RUN(split_errors);
  RUN(parse_and_format);
  RUN(parse_errors);
  RUN(peer_forms);
  return DONE();
}
