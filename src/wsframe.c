/*
** wsframe.c -- WebSocket frame headers, masking and UTF-8 validation
** (wsframe.h). Pure functions over bytes: which connection the bytes
** came from, and what to do about a bad frame, is the caller's business.
*/
#include <string.h>

#include "wsframe.h"


/* {====================================================== headers */

/* Why an opcode no frame may have is refused (the reason names it). */
static const char *const unknown_op[16] = {
  NULL, NULL, NULL, "unknown opcode 3", "unknown opcode 4",
  "unknown opcode 5", "unknown opcode 6", "unknown opcode 7", NULL, NULL,
  NULL, "unknown opcode 11", "unknown opcode 12", "unknown opcode 13",
  "unknown opcode 14", "unknown opcode 15"
};


static int refuse (const char **why, const char *what, int code) {
  *why = what;
  return -code;
}


/*
** What the first byte alone may already refuse (RFC 6455 5.2, 5.4, 5.5):
** reserved bits (no extension is negotiated), an unknown opcode, a
** fragmented control frame, and data frames out of their sequence.
*/
static int check_first (unsigned b, unsigned kind, const char **why) {
  unsigned op = b & 0x0F;
  if (b & 0x70) return refuse(why, "reserved bits set", 1002);
  if (unknown_op[op] != NULL) return refuse(why, unknown_op[op], 1002);
  if (op >= 8 && !(b & 0x80))
    return refuse(why, "fragmented control frame", 1002);
  if (op == WS_CONT && kind == 0)
    return refuse(why, "continuation without a message", 1002);
  if ((op == WS_TEXT || op == WS_BINARY) && kind != 0)
    return refuse(why, "new message inside a fragmented one", 1002);
  return 0;
}


int wsframe_parse (const unsigned char *p, size_t n, unsigned kind,
                   uint64_t max, struct wsframe *f, const char **why) {
  size_t h = 2;
  uint64_t len;
  int rc;
  if (n < 1) return 0;
  if ((rc = check_first(p[0], kind, why)) < 0) return rc;
  f->opcode = p[0] & 0x0F;
  f->fin = (p[0] & 0x80) != 0;
  if (n < 2) return 0;
  if (!(p[1] & 0x80)) return refuse(why, "unmasked client frame", 1002);
  len = p[1] & 0x7F;
  if (f->opcode >= 8 && len > 125)
    return refuse(why, "control frame over 125 bytes", 1002);
  if (len == 126) {
    if (n < 4) return 0;
    len = (uint64_t)p[2] << 8 | p[3];
    h = 4;
  }
  else if (len == 127) {
    if (n < 10) return 0;
    len = 0;
    for (int i = 2; i < 10; i++) len = len << 8 | p[i];
    if (len >> 63) return refuse(why, "payload length over 2^63", 1002);
    h = 10;
  }
  if (f->opcode < 8 && len > max)
    return refuse(why, "message over max_payload", 1009);
  if (n < h + 4) return 0;
  memcpy(f->key, p + h, 4);
  f->len = len;
  return (int)(h + 4);
}


size_t wsframe_head (unsigned char *out, unsigned opcode, int fin,
                     uint64_t len) {
  out[0] = (unsigned char)((fin ? 0x80 : 0) | (opcode & 0x0F));
  if (len < 126) {
    out[1] = (unsigned char)len;
    return 2;
  }
  if (len < 65536) {
    out[1] = 126;
    out[2] = (unsigned char)(len >> 8);
    out[3] = (unsigned char)len;
    return 4;
  }
  out[1] = 127;
  for (int i = 0; i < 8; i++) out[2 + i] = (unsigned char)(len >> (56 - 8 * i));
  return 10;
}

/* }====================================================== */


/*
** The key repeated over 8 bytes: either half of the word holds the 4 key
** bytes in order, whatever the byte order, so 8 payload bytes at a time
** are XORed with it; the tail byte by byte (its offset is a multiple of
** 8, so the key starts again at its byte 0).
*/
void wsframe_mask (unsigned char *p, size_t n, const unsigned char key[4]) {
  uint32_t k4;
  uint64_t k8, w;
  size_t i = 0;
  memcpy(&k4, key, 4);
  k8 = (uint64_t)k4 << 32 | k4;
  for (; i + 8 <= n; i += 8) {
    memcpy(&w, p + i, 8);
    w ^= k8;
    memcpy(p + i, &w, 8);
  }
  for (; i < n; i++) p[i] ^= key[i & 3];
}


/* {====================================================== UTF-8 */

/*
** A deterministic automaton over byte classes, in the manner of Bjoern
** Hoehrmann's decoder (this table is its own). The classes: 0 ASCII;
** 1 continuation 80..8F, 2 90..9F, 3 A0..BF; 4 never valid (C0, C1,
** F5..FF); 5 a 2-byte lead C2..DF; 6 E0; 7 E1..EC, EE, EF; 8 ED; 9 F0;
** 10 F1..F3; 11 F4. The leads whose second byte is narrowed get states
** of their own: E0 (A0..BF: no overlong), ED (80..9F: no surrogates),
** F0 (90..BF: no overlong), F4 (80..8F: nothing above U+10FFFF).
*/
static const unsigned char byte_class[256] = {
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 00..0F */
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 10..1F */
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 20..2F */
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 30..3F */
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 40..4F */
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 50..5F */
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 60..6F */
   0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  /* 70..7F */
   1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  1,  /* 80..8F */
   2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  /* 90..9F */
   3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  /* A0..AF */
   3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  3,  /* B0..BF */
   4,  4,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  /* C0..CF */
   5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  5,  /* D0..DF */
   6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  7,  /* E0..EF */
   9, 10, 10, 10, 11,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  4,  /* F0..FF */
};

/*
** The states: 0 accept (between code points), 1 reject (for good), 2 one
** continuation byte to go, 3 two to go, 4 after E0, 5 after ED, 6 three
** to go, 7 after F0, 8 after F4. A row per state, a column per class.
*/
#define NCLASS 12
static const unsigned char next_state[9][NCLASS] = {
  /*  0  1  2  3  4  5  6  7  8  9 10 11 */
  {   0, 1, 1, 1, 1, 2, 4, 3, 5, 7, 6, 8 },  /* 0 accept */
  {   1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 },  /* 1 reject */
  {   1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1 },  /* 2 one to go */
  {   1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1 },  /* 3 two to go */
  {   1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1 },  /* 4 E0: A0..BF */
  {   1, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1 },  /* 5 ED: 80..9F */
  {   1, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 },  /* 6 three to go */
  {   1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 },  /* 7 F0: 90..BF */
  {   1, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 },  /* 8 F4: 80..8F */
};


unsigned utf8_step (unsigned state, const unsigned char *p, size_t n) {
  size_t i = 0;
  if (state > 8) return UTF8_REJECT;  /* not a state this returned */
  while (i < n) {
    if (state == UTF8_ACCEPT && i + 8 <= n) {  /* ASCII, 8 bytes at once */
      uint64_t w;
      memcpy(&w, p + i, 8);
      if ((w & UINT64_C(0x8080808080808080)) == 0) {
        i += 8;
        continue;
      }
    }
    state = next_state[state][byte_class[p[i++]]];
    if (state == UTF8_REJECT) break;
  }
  return state;
}

/* }====================================================== */
