/*
** fuzz_resp.c -- the RESP request parser (resp.c). Input: one byte, the
** inline limit (its value + 1) and the chunk size (its high bits), then
** the bytes a client sends. Checks: each parser's result is within its
** input; a complete item is "more" for every shorter prefix, never bad;
** a bulk's data lies inside it; an inline line gives as many words as it
** says, no longer than the line. Then the whole input is read as
** lresp.c reads it (arrays resumed across waits, their elements taken
** from the buffer one by one), once all at once and once in chunks: the
** commands, and where and why reading stops, must be the same.
*/
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "resp.h"

/* A digest of the commands read: their words, lengths and ends. */
struct seen {
  uint64_t h;
  long commands;
  int err;                    /* why reading stopped: 0 more, else refused */
};

static void mix (struct seen *s, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t k = 0; k < n; k++) s->h = (s->h ^ b[k]) * 1099511628211ULL;
  s->h = (s->h ^ n) * 1099511628211ULL;
}


struct line {
  struct seen *s;
  long words;
  size_t bytes;
  const char *lo, *hi;        /* where the words may lie */
};

static void add_word (void *ud, const char *p, size_t n) {
  struct line *l = ud;
  CHECK(p >= l->lo && p + n <= l->hi, "a word outside its line");
  l->words++;
  l->bytes += n;
  mix(l->s, p, n);
}


/* One item at the front of buf[0..len): the checks on its own. */
static void check_item (const char *buf, size_t len, size_t max) {
  static char copy[1 << 16];
  size_t off, dlen, need;
  long n, r, nw;
  int err;
  if (len == 0) return;
  r = buf[0] == '*' ? resp_array(buf, len, &n, &err) : RESP_BAD;
  CHECK(r >= RESP_BAD && r <= (long)len, "array %ld of %zu", r, len);
  if (r > 0) {
    CHECK(n >= 0 && n <= RESP_MAX_ARGS, "count %ld", n);
    for (size_t k = 0; k < (size_t)r; k++)
      CHECK(resp_array(buf, k, &n, &err) == RESP_MORE, "array prefix %zu", k);
  }
  r = resp_bulk(buf, len, &off, &dlen, &need, &err);
  CHECK(r >= RESP_BAD && r <= (long)len, "bulk %ld of %zu", r, len);
  if (r == RESP_MORE) CHECK(need == 0 || need > len, "need %zu", need);
  if (r > 0) {
    CHECK(off + dlen + 2 == (size_t)r, "bulk %zu+%zu of %ld", off, dlen, r);
    for (size_t k = 0; k < (size_t)r; k += 1 + (size_t)r / 32)
      CHECK(resp_bulk(buf, k, &off, &dlen, &need, &err) == RESP_MORE,
            "bulk prefix %zu", k);
  }
  if (len > sizeof copy) len = sizeof copy;
  memcpy(copy, buf, len);
  struct seen s = {0, 0, 0};
  struct line l = {&s, 0, 0, copy, copy + len};
  r = resp_inline(copy, len, max, add_word, &l, &nw, &err);
  CHECK(r >= RESP_BAD && r <= (long)len, "inline %ld of %zu", r, len);
  if (r > 0) {
    CHECK(nw == l.words && l.bytes <= (size_t)r, "%ld words", nw);
    CHECK((size_t)r - 1 <= max, "a line of %ld over %zu", r, max);
    for (size_t k = 0; k < (size_t)r; k += 1 + (size_t)r / 32) {
      memcpy(copy, buf, k);
      CHECK(resp_inline(copy, k, max, add_word, &l, &nw, &err) == RESP_MORE,
            "inline prefix %zu", k);
    }
  }
}


/*
** Reads commands from in[0..len) as lresp.c's parse does, with the state
** (*n, *i) kept across calls; returns the bytes used, stops at "more" or
** at a refusal (s->err).
*/
static size_t drive (char *in, size_t len, size_t max, long *n, long *i,
                     struct seen *s) {
  size_t pos = 0;
  while (pos < len && !s->err) {
    long r;
    int err = 0;
    if (*n < 0) {
      if (in[pos] == '*') {
        r = resp_array(in + pos, len - pos, n, &err);
        if (r == RESP_MORE) break;
        if (r < 0) { s->err = err; break; }
        pos += (size_t)r;
        mix(s, n, sizeof *n);
        if (*n == 0) *n = -1;
        else *i = 1;
        continue;
      }
      struct line l = {s, 0, 0, in + pos, in + len};
      long nw;
      r = resp_inline(in + pos, len - pos, max, add_word, &l, &nw, &err);
      if (r == RESP_MORE) break;
      if (r < 0) { s->err = err; break; }
      pos += (size_t)r;
      if (nw > 0) s->commands++;
      continue;
    }
    while (*i <= *n) {
      size_t off, dlen, need;
      r = resp_bulk(in + pos, len - pos, &off, &dlen, &need, &err);
      if (r == RESP_MORE) return pos;
      if (r < 0) { s->err = err; return pos; }
      mix(s, in + pos + off, dlen);
      pos += (size_t)r;
      (*i)++;
    }
    *n = -1;
    s->commands++;
  }
  return pos;
}


int LLVMFuzzerTestOneInput (const unsigned char *data, size_t size) {
  static char buf[1 << 16];
  size_t max, chunk, have = 0, used;
  long n = -1, i = 0;
  struct seen whole = {0, 0, 0}, cut = {0, 0, 0};
  if (size < 1 || size - 1 > sizeof buf) return 0;
  max = (size_t)(data[0] & 0x3f) + 1;
  chunk = (size_t)(data[0] >> 6) * 3 + 1;
  data++, size--;
  for (size_t k = 0; k < size; k++)
    check_item((const char *)data + k, size - k, max);
  memcpy(buf, data, size);
  drive(buf, size, max, &n, &i, &whole);
  /* the same input arriving chunk by chunk: the unused rest kept, the
  ** array in progress resumed */
  n = -1, i = 0;
  for (size_t at = 0; at < size && !cut.err;) {
    size_t step = size - at < chunk ? size - at : chunk;
    memcpy(buf + have, data + at, step);
    have += step, at += step;
    used = drive(buf, have, max, &n, &i, &cut);
    memmove(buf, buf + used, have - used);
    have -= used;
  }
  CHECK(whole.h == cut.h && whole.commands == cut.commands &&
        whole.err == cut.err, "chunks of %zu read otherwise: %ld/%ld "
        "commands, errors %d/%d", chunk, whole.commands, cut.commands,
        whole.err, cut.err);
  return 0;
}
