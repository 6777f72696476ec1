/*
** test_wsframe.c -- wsframe.c: client frame headers and their refusals,
** masking, server headers, and the UTF-8 automaton against every code
** point, every surrogate, overlong forms and pieces split anywhere.
*/
#include <stdint.h>
#include <string.h>

#include "test.h"
#include "wsframe.h"


/* The UTF-8 of code point cp (any value up to 0x1FFFFF), in n bytes (1..4:
** more than it needs makes an overlong form). */
static size_t encode (unsigned char *out, uint32_t cp, size_t n) {
  if (n == 1) { out[0] = (unsigned char)cp; return 1; }
  for (size_t i = n - 1; i > 0; i--) {
    out[i] = (unsigned char)(0x80 | (cp & 0x3F));
    cp >>= 6;
  }
  out[0] = (unsigned char)((0xF00 >> n) & 0xFF) | (unsigned char)cp;
  return n;
}


static size_t need (uint32_t cp) {
  return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}


static unsigned check (const char *s) {
  return utf8_step(UTF8_ACCEPT, (const unsigned char *)s, strlen(s));
}


TEST(utf8_every_code_point) {
  unsigned char b[4];
  for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
    size_t n = encode(b, cp, need(cp));
    unsigned st = utf8_step(UTF8_ACCEPT, b, n);
    if (cp >= 0xD800 && cp <= 0xDFFF) ASSERT_EQ(st, UTF8_REJECT);
    else ASSERT_EQ(st, UTF8_ACCEPT);
    for (size_t k = need(cp) + 1; k <= 4; k++)   /* overlong forms */
      ASSERT_EQ(utf8_step(UTF8_ACCEPT, b, encode(b, cp, k)), UTF8_REJECT);
  }
  for (uint32_t cp = 0x110000; cp <= 0x1FFFFF; cp += 0x111)  /* too big */
    ASSERT_EQ(utf8_step(UTF8_ACCEPT, b, encode(b, cp, 4)), UTF8_REJECT);
}


TEST(utf8_bad_bytes) {
  ASSERT_EQ(check("\x80"), UTF8_REJECT);         /* a lone continuation */
  ASSERT_EQ(check("ab\xbf"), UTF8_REJECT);
  ASSERT_EQ(check("\xc0\xaf"), UTF8_REJECT);     /* overlong '/' */
  ASSERT_EQ(check("\xe0\x80\xaf"), UTF8_REJECT);
  ASSERT_EQ(check("\xf0\x80\x80\xaf"), UTF8_REJECT);
  ASSERT_EQ(check("\xed\xa0\x80"), UTF8_REJECT);  /* U+D800 */
  ASSERT_EQ(check("\xed\xbf\xbf"), UTF8_REJECT);  /* U+DFFF */
  ASSERT_EQ(check("\xf4\x90\x80\x80"), UTF8_REJECT);  /* U+110000 */
  ASSERT_EQ(check("\xfe"), UTF8_REJECT);
  ASSERT_EQ(check("\xff"), UTF8_REJECT);
  ASSERT_EQ(check("\xc2\x41"), UTF8_REJECT);     /* a lead, then ASCII */
  /* invalid stays invalid, whatever follows */
  ASSERT_EQ(utf8_step(check("\xff"), (const unsigned char *)"a", 1),
            UTF8_REJECT);
  ASSERT_EQ(check("plain ASCII, longer than eight bytes"), UTF8_ACCEPT);
  ASSERT_EQ(check("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"), UTF8_ACCEPT);
  ASSERT_EQ(check("\xef\xbf\xbf\xf4\x8f\xbf\xbf"), UTF8_ACCEPT);
}


/* Any split of a valid text into two pieces: incomplete, then accepted. */
TEST(utf8_split_anywhere) {
  const char *s = "a\xf0\x9f\x98\x80z\xe2\x82\xac" "0123456789\xc3\xa9";
  size_t n = strlen(s);
  for (size_t cut = 0; cut <= n; cut++) {
    unsigned st = utf8_step(UTF8_ACCEPT, (const unsigned char *)s, cut);
    ASSERT(st != UTF8_REJECT);
    ASSERT_EQ(utf8_step(st, (const unsigned char *)s + cut, n - cut),
              UTF8_ACCEPT);
  }
  /* the first piece of a 4-byte code point is incomplete, not whole */
  ASSERT(check("\xf0\x9f") != UTF8_ACCEPT);
  ASSERT(check("\xf0\x9f") != UTF8_REJECT);
}


static int parse (const char *s, size_t n, unsigned kind, uint64_t max,
                  struct wsframe *f, const char **why) {
  return wsframe_parse((const unsigned char *)s, n, kind, max, f, why);
}


TEST(parse_lengths_and_key) {
  struct wsframe f;
  const char *why = NULL;
  ASSERT_EQ(parse("\x81\x85" "abcd", 6, 0, 100, &f, &why), 6);
  ASSERT_EQ(f.opcode, WS_TEXT);
  ASSERT(f.fin);
  ASSERT_EQ(f.len, 5);
  ASSERT(memcmp(f.key, "abcd", 4) == 0);
  ASSERT_EQ(parse("\x02\xfe\x01\x00" "abcd", 8, 0, 1000, &f, &why), 8);
  ASSERT_EQ(f.len, 256);
  ASSERT(!f.fin);
  ASSERT_EQ(parse("\x82\xff\0\0\0\0\0\1\0\0" "abcd", 14, 0, 1 << 20, &f,
                  &why), 14);
  ASSERT_EQ(f.len, 65536);
  for (size_t n = 0; n < 14; n++)   /* not whole yet */
    ASSERT_EQ(parse("\x82\xff\0\0\0\0\0\1\0\0" "abcd", n, 0, 1 << 20, &f,
                    &why), 0);
  /* a ping amid a fragmented message; its continuation */
  ASSERT_EQ(parse("\x89\x80" "abcd", 6, WS_TEXT, 0, &f, &why), 6);
  ASSERT_EQ(parse("\x80\x80" "abcd", 6, WS_TEXT, 0, &f, &why), 6);
}


TEST(parse_refusals) {
  struct wsframe f;
  const char *why = NULL;
  ASSERT_EQ(parse("\xc1", 1, 0, 100, &f, &why), -1002);     /* RSV1 */
  ASSERT_STR(why, "reserved bits set");
  ASSERT_EQ(parse("\x83", 1, 0, 100, &f, &why), -1002);
  ASSERT_STR(why, "unknown opcode 3");
  ASSERT_EQ(parse("\x8b", 1, 0, 100, &f, &why), -1002);
  ASSERT_EQ(parse("\x09", 1, 0, 100, &f, &why), -1002);
  ASSERT_STR(why, "fragmented control frame");
  ASSERT_EQ(parse("\x80", 1, 0, 100, &f, &why), -1002);
  ASSERT_STR(why, "continuation without a message");
  ASSERT_EQ(parse("\x82", 1, WS_TEXT, 100, &f, &why), -1002);
  ASSERT_STR(why, "new message inside a fragmented one");
  ASSERT_EQ(parse("\x81\x05", 2, 0, 100, &f, &why), -1002);
  ASSERT_STR(why, "unmasked client frame");
  ASSERT_EQ(parse("\x89\xfe", 2, 0, 100, &f, &why), -1002);
  ASSERT_STR(why, "control frame over 125 bytes");
  ASSERT_EQ(parse("\x82\xff\x80\0\0\0\0\0\0\0", 10, 0, 100, &f, &why), -1002);
  ASSERT_STR(why, "payload length over 2^63");
  ASSERT_EQ(parse("\x82\xe5", 2, 0, 100, &f, &why), -1009);
  ASSERT_STR(why, "message over max_payload");
  /* control frames are not held to max */
  ASSERT_EQ(parse("\x89\xfd" "abcd", 6, WS_TEXT, 0, &f, &why), 6);
}


TEST(mask_and_head) {
  unsigned char key[4] = { 0x37, 0xfa, 0x21, 0x3d };
  unsigned char p[300], q[300];
  for (size_t n = 0; n <= sizeof p; n++) {
    for (size_t i = 0; i < n; i++) p[i] = q[i] = (unsigned char)(i * 31 + n);
    wsframe_mask(p, n, key);
    for (size_t i = 0; i < n; i++) ASSERT_EQ(p[i], q[i] ^ key[i % 4]);
  }
  unsigned char h[WSFRAME_HEAD_MAX];
  ASSERT_EQ(wsframe_head(h, WS_TEXT, 1, 125), 2);
  ASSERT(memcmp(h, "\x81\x7d", 2) == 0);
  ASSERT_EQ(wsframe_head(h, WS_BINARY, 0, 65535), 4);
  ASSERT(memcmp(h, "\x02\x7e\xff\xff", 4) == 0);
  ASSERT_EQ(wsframe_head(h, WS_BINARY, 1, 65536), 10);
  ASSERT(memcmp(h, "\x82\x7f\0\0\0\0\0\1\0\0", 10) == 0);
}


int main (void) {
  RUN(utf8_every_code_point);
  RUN(utf8_bad_bytes);
  RUN(utf8_split_anywhere);
  RUN(parse_lengths_and_key);
  RUN(parse_refusals);
  RUN(mask_and_head);
  return DONE();
}
