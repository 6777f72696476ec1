/* test_persource.c -- per-source connection counts. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include "persource.h"
#include "test.h"


static struct srckey key4 (unsigned a) {
  struct sockaddr_in s;
  struct srckey k;
  memset(&s, 0, sizeof s);
  s.sin_family = AF_INET;
  s.sin_addr.s_addr = htonl(a);
  srckey_of((struct sockaddr *)&s, &k);
  return k;
}


TEST(limit_per_key) {
  struct srctab t;
  struct srckey a = key4(0x7f000001), b = key4(0x7f000002);
  ASSERT_EQ(srctab_init(&t, 2), 0);
  ASSERT_EQ(srctab_enter(&t, &a), 1);
  ASSERT_EQ(srctab_enter(&t, &a), 1);
  ASSERT_EQ(srctab_enter(&t, &a), 0);  /* a holds 2 */
  ASSERT_EQ(srctab_enter(&t, &b), 1);  /* b is another source */
  srctab_leave(&t, &a);
  ASSERT_EQ(srctab_enter(&t, &a), 1);
  ASSERT_EQ(srctab_count(&t, &a), 2);
  srctab_free(&t);
}


TEST(v4_mapped_is_v4) {
  struct sockaddr_in6 s6;
  struct srckey k6, k4 = key4(0x0a000001);
  memset(&s6, 0, sizeof s6);
  s6.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "::ffff:10.0.0.1", &s6.sin6_addr);
  srckey_of((struct sockaddr *)&s6, &k6);
  ASSERT(memcmp(&k6, &k4, sizeof k4) == 0);
}


TEST(many_sources_grow_and_reuse) {
  struct srctab t;
  ASSERT_EQ(srctab_init(&t, 1), 0);
  for (int round = 0; round < 3; round++) {
    for (unsigned i = 0; i < 5000; i++) {
      struct srckey k = key4(0x0b000000 + i);
      ASSERT_EQ(srctab_enter(&t, &k), 1);
    }
    for (unsigned i = 0; i < 5000; i++) {
      struct srckey k = key4(0x0b000000 + i);
      ASSERT_EQ(srctab_enter(&t, &k), 0);
      srctab_leave(&t, &k);
      ASSERT_EQ(srctab_count(&t, &k), 0);
    }
  }
  ASSERT(t.cap <= 16384);  /* tombstones were dropped, not piled up */
  srctab_free(&t);
}


int main (void) {
  RUN(limit_per_key);
  RUN(v4_mapped_is_v4);
  RUN(many_sources_grow_and_reuse);
  return DONE();
}
