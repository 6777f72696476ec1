/* test_resp.c -- the RESP request parser: array headers, bulk strings,
** inline commands, what each refuses and when each wants more input. */
#include <string.h>
#include "resp.h"
#include "test.h"

static int err;
static long n;

/* the words of the last inline command, joined by '|' */
static char words[256];
static size_t wlen;

static void add (void *ud, const char *p, size_t len) {
  (void)ud;
  if (wlen > 0) words[wlen++] = '|';
  memcpy(words + wlen, p, len);
  wlen += len;
  words[wlen] = '\0';
}


static long line (const char *s, size_t max) {
  static char b[256];
  size_t len = strlen(s);
  memcpy(b, s, len);
  wlen = 0;
  words[0] = '\0';
  n = -1;
  return resp_inline(b, len, max, add, NULL, &n, &err);
}


static long array (const char *s) {
  n = -7;
  return resp_array(s, strlen(s), &n, &err);
}


TEST(array_headers) {
  ASSERT_EQ(array("*3\r\n$3\r\n"), 4);
  ASSERT_EQ(n, 3);
  ASSERT_EQ(array("*12\n"), 4);  /* no "\r": accepted */
  ASSERT_EQ(n, 12);
  ASSERT_EQ(array("*-1\r\n"), 5);
  ASSERT_EQ(n, 0);
  ASSERT_EQ(array("*1048576\r\n"), 10);
  ASSERT_EQ(n, 1048576);
  ASSERT_EQ(array("*"), RESP_MORE);
  ASSERT_EQ(array("*3\r"), RESP_MORE);
  ASSERT_EQ(array("*12345678901234567890123456789012"), RESP_MORE);
}


TEST(array_refusals) {
  const char *bad[] = {"*x\r\n", "*1.5\r\n", "*1048577\r\n", "*\r\n",
                       "*01\r\n", "*+1\r\n", "*-0\r\n", "* 1\r\n",
                       "*1\r\r\n", "*99999999999999999999\r\n",
                       "*123456789012345678901234567890123"};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    err = 0;
    ASSERT_EQ(array(bad[k]), RESP_BAD);
    ASSERT_EQ(err, RESP_E_MBULK);
  }
  ASSERT_STR(resp_strerror(RESP_E_MBULK), "invalid multibulk length");
}


TEST(bulks) {
  const char *s = "$3\r\nSET\r\n$12\r\na\r\nb67890123\r\n";
  size_t off, dlen, need;
  ASSERT_EQ(resp_bulk(s, strlen(s), &off, &dlen, &need, &err), 9);
  ASSERT_EQ(off, 4);
  ASSERT_EQ(dlen, 3);
  ASSERT_EQ(resp_bulk(s + 9, strlen(s) - 9, &off, &dlen, &need, &err), 19);
  ASSERT_EQ(off, 5);
  ASSERT_EQ(dlen, 12);
  ASSERT(memcmp(s + 9 + off, "a\r\nb", 4) == 0);
  /* cut: before the header ends no size is known, after it the total */
  ASSERT_EQ(resp_bulk(s + 9, 3, &off, &dlen, &need, &err), RESP_MORE);
  ASSERT_EQ(need, 0);
  ASSERT_EQ(resp_bulk(s + 9, 18, &off, &dlen, &need, &err), RESP_MORE);
  ASSERT_EQ(need, 19);
  ASSERT_EQ(resp_bulk("$0\r\n\r\n", 6, &off, &dlen, &need, &err), 6);
  ASSERT_EQ(dlen, 0);
  /* the "\r\n" after the data is skipped unchecked, as Redis does */
  ASSERT_EQ(resp_bulk("$1\r\nxyz", 7, &off, &dlen, &need, &err), 7);
}


TEST(bulk_refusals) {
  const char *bad[] = {"$-1\r\n", "$-5\r\n", "$abc\r\n", "$67108865\r\n",
                       "$999999999999999999999999999999999"};
  size_t off, dlen, need;
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    err = 0;
    ASSERT_EQ(resp_bulk(bad[k], strlen(bad[k]), &off, &dlen, &need, &err),
              RESP_BAD);
    ASSERT_EQ(err, RESP_E_BULK);
  }
  ASSERT_EQ(resp_bulk("$67108864\r\n", 11, &off, &dlen, &need, &err),
            RESP_MORE);
  ASSERT_EQ(need, 11 + 67108864 + 2);
  ASSERT_EQ(resp_bulk("+foo\r\n", 6, &off, &dlen, &need, &err), RESP_BAD);
  ASSERT_EQ(err, RESP_E_DOLLAR);
}


TEST(inline_words) {
  ASSERT_EQ(line("PING\r\nrest", 100), 6);
  ASSERT_EQ(n, 1);
  ASSERT_STR(words, "PING");
  ASSERT_EQ(line("  set   k  v  \n", 100), 15);
  ASSERT_STR(words, "set|k|v");
  ASSERT_EQ(line("set k \"two words\\x21\\n\"\r\n", 100), 25);
  ASSERT_STR(words, "set|k|two words!\n");
  ASSERT_EQ(line("set k 'it\\'s' '\\n'\n", 100), 19);
  ASSERT_STR(words, "set|k|it's|\\n");
  ASSERT_EQ(line("echo \"\" \"\\q\\x4\"\n", 100), 16);
  ASSERT_STR(words, "echo||qx4");
  ASSERT_EQ(line("a\rb\tc\n", 100), 6);  /* a lone "\r" splits too */
  ASSERT_STR(words, "a|b|c");
  ASSERT_EQ(line("\r\n", 100), 2);
  ASSERT_EQ(n, 0);
  ASSERT_EQ(line("PING", 100), RESP_MORE);
}


TEST(inline_refusals) {
  const char *bad[] = {"set k \"open\n", "set k 'open\r\n", "echo \"a\"b\n",
                       "echo \"a\\\"\n"};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    err = 0;
    ASSERT_EQ(line(bad[k], 100), RESP_BAD);
    ASSERT_EQ(err, RESP_E_QUOTES);
  }
  /* longer than max: with its "\n", or already without it */
  ASSERT_EQ(line("0123456789\n", 10), 11);
  ASSERT_EQ(line("01234567890\n", 10), RESP_BAD);
  ASSERT_EQ(err, RESP_E_INLINE);
  ASSERT_EQ(line("0123456789", 10), RESP_MORE);
  ASSERT_EQ(line("01234567890", 10), RESP_BAD);
  ASSERT_EQ(err, RESP_E_INLINE);
  ASSERT_STR(resp_strerror(RESP_E_QUOTES), "unbalanced quotes in request");
  ASSERT_STR(resp_strerror(RESP_E_INLINE), "too big inline request");
}


int main (void) {
  RUN(array_headers);
  RUN(array_refusals);
  RUN(bulks);
  RUN(bulk_refusals);
  RUN(inline_words);
  RUN(inline_refusals);
  return DONE();
}
