/* test_acl.c -- --allow/--deny rules: parsing and matching, without sockets. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include "acl.h"
#include "test.h"

static char err[256];
static struct acl_rule rules[8];
static int nrules;


static void add (const char *text, int allow) {
  if (acl_parse(text, allow, &rules[nrules], err, sizeof err) == 0) nrules++;
}


static int allows (const char *ip) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (strchr(ip, ':')) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    s6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, ip, &s6->sin6_addr);
  }
  else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    s4->sin_family = AF_INET;
    inet_pton(AF_INET, ip, &s4->sin_addr);
  }
  return acl_allows(rules, nrules, (struct sockaddr *)&ss);
}


TEST(parse_errors) {
  struct acl_rule r;
  ASSERT_EQ(acl_parse("10.0.0.0/8", 1, &r, err, sizeof err), 0);
  ASSERT_EQ(r.prefix, 8);
  ASSERT_EQ(acl_parse("::1", 0, &r, err, sizeof err), 0);
  ASSERT_EQ(r.prefix, 128);
  ASSERT_EQ(acl_parse("10.0.0.0/33", 1, &r, err, sizeof err), -1);
  ASSERT_STR(err, "bad address rule '10.0.0.0/33' (an IP address, ADDR/BITS, or all)");
  ASSERT_EQ(acl_parse("10.0.0.0/", 1, &r, err, sizeof err), -1);
  ASSERT_EQ(acl_parse("example.com", 1, &r, err, sizeof err), -1);
  ASSERT_EQ(acl_parse("1.2.3.4/8x", 1, &r, err, sizeof err), -1);
  ASSERT_EQ(acl_parse("fe80::/129", 1, &r, err, sizeof err), -1);
}


TEST(no_rules_allow_all) {
  nrules = 0;
  ASSERT_EQ(allows("8.8.8.8"), 1);
}


TEST(first_match_wins) {
  nrules = 0;
  add("10.1.2.3", 0);
  add("10.0.0.0/8", 1);
  ASSERT_EQ(allows("10.1.2.3"), 0);
  ASSERT_EQ(allows("10.200.0.1"), 1);
  ASSERT_EQ(allows("11.0.0.1"), 0);  /* an allow list refuses the rest */
}


TEST(deny_list_accepts_the_rest) {
  nrules = 0;
  add("192.168.0.0/16", 0);
  ASSERT_EQ(allows("192.168.4.4"), 0);
  ASSERT_EQ(allows("192.169.0.1"), 1);
}


TEST(odd_prefixes_and_v6) {
  nrules = 0;
  add("172.16.0.0/12", 1);
  add("fe80::/10", 1);
  ASSERT_EQ(allows("172.31.255.255"), 1);
  ASSERT_EQ(allows("172.32.0.0"), 0);
  ASSERT_EQ(allows("febf::1"), 1);
  ASSERT_EQ(allows("fec0::1"), 0);
  ASSERT_EQ(allows("::ffff:172.20.0.1"), 1);  /* v4-mapped matches v4 rules */
}


TEST(v4mapped_rules_are_v4) {
  struct acl_rule r;
  ASSERT_EQ(acl_parse("::ffff:127.0.0.2", 0, &r, err, sizeof err), 0);
  ASSERT_EQ(r.family, AF_INET);
  ASSERT_EQ(r.prefix, 32);
  ASSERT_EQ(acl_parse("::ffff:10.0.0.0/104", 1, &r, err, sizeof err), 0);
  ASSERT_EQ(r.family, AF_INET);
  ASSERT_EQ(r.prefix, 8);
  ASSERT_EQ(acl_parse("::ffff:0:0/95", 1, &r, err, sizeof err), -1);
  ASSERT_STR(err, "bad address rule '::ffff:0:0/95' (an IPv4-mapped rule "
             "needs /96 or more; or write the IPv4 address)");
  nrules = 0;
  add("::ffff:127.0.0.2", 0);
  ASSERT_EQ(allows("127.0.0.2"), 0);          /* an IPv4 client */
  ASSERT_EQ(allows("::ffff:127.0.0.2"), 0);   /* the same, on a v6 socket */
  ASSERT_EQ(allows("127.0.0.1"), 1);
  ASSERT_EQ(allows("::1"), 1);
  nrules = 0;
  add("::ffff:10.0.0.0/104", 1);
  ASSERT_EQ(allows("10.9.9.9"), 1);
  ASSERT_EQ(allows("11.0.0.1"), 0);
  nrules = 0;
  add("::ffff:0.0.0.0/96", 0);                /* every IPv4 client */
  ASSERT_EQ(allows("192.0.2.1"), 0);
  ASSERT_EQ(allows("::1"), 1);
}


TEST(all_and_zero_prefix) {
  nrules = 0;
  add("127.0.0.1", 1);
  add("all", 0);
  ASSERT_EQ(allows("127.0.0.1"), 1);
  ASSERT_EQ(allows("::1"), 0);
  nrules = 0;
  add("0.0.0.0/0", 0);
  ASSERT_EQ(allows("1.1.1.1"), 0);
  ASSERT_EQ(allows("::1"), 1);  /* a v4 rule says nothing of v6 */
}


int main (void) {
  RUN(parse_errors);
  RUN(no_rules_allow_all);
  RUN(first_match_wins);
  RUN(deny_list_accepts_the_rest);
  RUN(odd_prefixes_and_v6);
  RUN(v4mapped_rules_are_v4);
  RUN(all_and_zero_prefix);
  return DONE();
}
