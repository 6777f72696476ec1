/*
** fuzz_wsframe.c -- WebSocket client frames (wsframe.c). Input: byte 0
** picks the message type the frames arrive in (% 3) and byte 1 the
** max_payload (2^(byte % 24) - 1); the rest is a stream of frames,
** walked as lws.c does. Checks: a header is 6..14 bytes and within the
** input, or a refusal (1002, 1009) with a reason; every shorter prefix
** of a whole header waits for more, and a prefix of a refused one waits
** or gives the same refusal; a parsed header survives a rebuild with
** wsframe_head; masking twice is the identity; the UTF-8 automaton
** agrees with a plain decoder, fed whole or in two pieces split anywhere.
*/
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "wsframe.h"


/* A plain decoder: is s[0..n) valid UTF-8 (RFC 3629)? */
static int utf8_ok (const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i], need;
    uint32_t cp, min;
    if (c < 0x80) { i++; continue; }
    if (c >= 0xC0 && c < 0xE0) { need = 1; cp = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c < 0xF0) { need = 2; cp = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c < 0xF8) { need = 3; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (n - i - 1 < need) return 0;
    for (unsigned k = 1; k <= need; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return 0;
      cp = cp << 6 | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    i += need + 1;
  }
  return 1;
}


static void check_utf8 (const unsigned char *p, size_t n, size_t cut) {
  unsigned whole = utf8_step(UTF8_ACCEPT, p, n), st;
  CHECK((whole == UTF8_ACCEPT) == utf8_ok(p, n), "automaton says %u", whole);
  if (cut > n) cut = n;
  st = utf8_step(UTF8_ACCEPT, p, cut);
  st = utf8_step(st, p + cut, n - cut);
  CHECK(st == whole, "split at %zu: %u, whole: %u", cut, st, whole);
}


/* A header's prefixes: wait, or (for a refusal rc) the same refusal. */
static void check_prefixes (const unsigned char *p, int h, unsigned kind,
                            uint64_t max, int rc) {
  struct wsframe f;
  const char *why;
  for (int k = 0; k < h; k++) {
    int r = wsframe_parse(p, (size_t)k, kind, max, &f, &why);
    if (rc > 0) CHECK(r == 0, "prefix %d of a %d-byte header: %d", k, h, r);
    else CHECK(r == 0 || r == rc, "prefix %d of a refusal %d: %d", k, rc, r);
  }
}


/* The header rebuilt with wsframe_head (and a mask) parses the same. */
static void check_rebuild (const struct wsframe *f, unsigned kind) {
  unsigned char b[WSFRAME_HEAD_MAX + 4];
  struct wsframe g;
  const char *why;
  size_t n = wsframe_head(b, f->opcode, f->fin, f->len);
  b[1] |= 0x80;
  memcpy(b + n, f->key, 4);
  CHECK(wsframe_parse(b, n + 4, kind, UINT64_MAX, &g, &why) == (int)(n + 4),
        "rebuilt header of %zu bytes", n + 4);
  CHECK(g.opcode == f->opcode && g.fin == f->fin && g.len == f->len &&
        memcmp(g.key, f->key, 4) == 0, "rebuilt header differs");
}


int LLVMFuzzerTestOneInput (const unsigned char *data, size_t size) {
  static unsigned char copy[1 << 16], twice[1 << 16];
  unsigned kind;
  uint64_t max;
  size_t pos = 2;
  if (size < 2) return 0;
  kind = data[0] % 3;
  max = (UINT64_C(1) << (data[1] % 24)) - 1;
  for (int frames = 0; frames < 64 && pos < size; frames++) {
    struct wsframe f;
    const char *why = NULL;
    const unsigned char *p = data + pos;
    size_t n = size - pos;
    int h = wsframe_parse(p, n, kind, max, &f, &why);
    if (h < 0) {
      CHECK(h == -1002 || h == -1009, "refusal %d", h);
      CHECK(why != NULL && why[0] != '\0', "refusal without a reason");
      check_prefixes(p, (int)(n < 14 ? n : 14), kind, max, h);
      return 0;
    }
    if (h == 0) return 0;
    CHECK(h >= 6 && h <= 14 && (size_t)h <= n, "header of %d bytes", h);
    check_prefixes(p, h, kind, max, h);
    check_rebuild(&f, kind);
    CHECK(f.opcode >= 8 || f.len <= max, "len %llu over max",
          (unsigned long long)f.len);
    if (f.len > n - (size_t)h || f.len > sizeof copy) return 0;
    memcpy(copy, p + h, (size_t)f.len);
    memcpy(twice, copy, (size_t)f.len);
    wsframe_mask(twice, (size_t)f.len, f.key);
    for (size_t i = 0; i < (size_t)f.len; i++)
      CHECK(twice[i] == (copy[i] ^ f.key[i & 3]), "mask at %zu", i);
    wsframe_mask(twice, (size_t)f.len, f.key);
    CHECK(memcmp(twice, copy, (size_t)f.len) == 0, "masked twice differs");
    check_utf8(copy, (size_t)f.len, f.key[0]);
    if (f.opcode < 8) kind = f.fin ? 0 : (kind ? kind : f.opcode);
    pos += (size_t)h + (size_t)f.len;
  }
  return 0;
}
