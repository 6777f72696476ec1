/*
** resp.c -- parsing RESP2 requests: array headers, bulk strings and
** inline commands, from a buffer that may end anywhere. Each function
** says "more" until its item is all there, so the caller parses again
** once more input came; none keeps state between calls.
*/
#include <stdint.h>
#include <string.h>

#include "resp.h"


/* isspace in the C locale, as Lua's %s */
static int is_space (unsigned char c) {
  return c == ' ' || (c >= '\t' && c <= '\r');
}


static int hex_value (unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}


/*
** s[0..n) as Redis reads an integer: "12", "-3", "0"; not " 12", "+1",
** "012", "-0", "1.0", nor out of the 64-bit range. Returns 0 when it is
** not one.
*/
static int to_int (const char *s, size_t n, long long *v) {
  int neg = n > 0 && s[0] == '-';
  uint64_t u = 0, lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  size_t i = (size_t)neg;
  if (i == n || (s[i] == '0' && n > i + 1) || (neg && s[i] == '0'))
    return 0;
  for (; i < n; i++) {
    unsigned d = (unsigned char)s[i] - '0';
    if (d > 9 || u > (lim - d) / 10) return 0;
    u = u * 10 + d;
  }
  *v = neg ? (long long)(0 - u) : (long long)u;  /* two's complement */
  return 1;
}


/*
** The count of the "*N" or "$N" header at buf (its first byte is the
** type): returns the header's length with "\n", RESP_MORE, or RESP_BAD
** (not a count: the caller says which).
*/
static long header (const char *buf, size_t len, long long *v) {
  const char *nl = memchr(buf, '\n', len);
  size_t end;
  if (nl == NULL) return len - 1 > RESP_HEADER_MAX ? RESP_BAD : RESP_MORE;
  end = (size_t)(nl - buf);
  if (end == 0) return RESP_BAD;  /* not a header at all */
  if (end > 1 && buf[end - 1] == '\r') end--;  /* "\r" before "\n" */
  if (!to_int(buf + 1, end - 1, v)) return RESP_BAD;
  return (long)(nl - buf) + 1;
}


long resp_array (const char *buf, size_t len, long *n, int *err) {
  long long v;
  long h;
  if (len == 0) return RESP_MORE;
  h = header(buf, len, &v);
  if (h == RESP_MORE) return RESP_MORE;
  if (h == RESP_BAD || v > RESP_MAX_ARGS) {
    *err = RESP_E_MBULK;
    return RESP_BAD;
  }
  *n = v < 0 ? 0 : (long)v;
  return h;
}


long resp_bulk (const char *buf, size_t len, size_t *off, size_t *dlen,
                size_t *need, int *err) {
  long long v;
  long h;
  size_t total;
  *need = 0;
  if (len == 0) return RESP_MORE;
  if (buf[0] != '$') {
    *err = RESP_E_DOLLAR;
    return RESP_BAD;
  }
  /* the usual header, "$N\r\n" with N < 10, told without a search */
  if (len >= 4 && buf[2] == '\r' && buf[3] == '\n' &&
      buf[1] >= '0' && buf[1] <= '9') {
    h = 4;
    v = buf[1] - '0';
  } else {
    h = header(buf, len, &v);
    if (h == RESP_MORE) return RESP_MORE;
    if (h == RESP_BAD || v < 0 || v > RESP_MAX_BULK) {
      *err = RESP_E_BULK;
      return RESP_BAD;
    }
  }
  total = (size_t)h + (size_t)v + 2;
  if (total > len) {
    *need = total;
    return RESP_MORE;
  }
  *off = (size_t)h;
  *dlen = (size_t)v;
  return (long)total;
}


static char escape (char e) {
  switch (e) {
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    case 'b': return '\b';
    case 'a': return '\a';
    default: return e;
  }
}


/*
** The quoted word at line[i] (the quote) of a line of n bytes, unescaped
** into line[i..): returns the index after the closing quote with the
** word's length in *wlen, or -1 when the quote is left open or is not
** followed by a space.
*/
static long quoted (char *line, size_t n, size_t i, size_t *wlen) {
  char q = line[i];
  size_t j = i + 1, w = i;
  for (;; j++) {
    char c;
    if (j >= n) return -1;
    c = line[j];
    if (c == q) break;
    if (q == '"' && c == '\\' && j + 3 < n && line[j + 1] == 'x' &&
        hex_value((unsigned char)line[j + 2]) >= 0 &&
        hex_value((unsigned char)line[j + 3]) >= 0) {
      line[w++] = (char)(hex_value((unsigned char)line[j + 2]) * 16 +
                         hex_value((unsigned char)line[j + 3]));
      j += 3;
    } else if (c == '\\' && j + 1 < n && (q == '"' || line[j + 1] == '\'')) {
      line[w++] = q == '"' ? escape(line[j + 1]) : line[j + 1];
      j++;
    } else {
      line[w++] = c;
    }
  }
  if (j + 1 < n && !is_space((unsigned char)line[j + 1])) return -1;
  *wlen = w - i;
  return (long)j + 1;
}


long resp_inline (char *buf, size_t len, size_t max, resp_word_fn *word,
                  void *ud, long *nwords, int *err) {
  const char *nl = memchr(buf, '\n', len);
  size_t n, i = 0;
  long count = 0;
  if (nl == NULL || (size_t)(nl - buf) > max) {
    if (nl == NULL && len <= max) return RESP_MORE;
    *err = RESP_E_INLINE;
    return RESP_BAD;
  }
  n = (size_t)(nl - buf);
  if (n > 0 && buf[n - 1] == '\r') n--;
  for (;;) {
    size_t j, wlen;
    while (i < n && is_space((unsigned char)buf[i])) i++;
    if (i >= n) break;
    if (buf[i] == '"' || buf[i] == '\'') {
      long after = quoted(buf, n, i, &wlen);
      if (after < 0) {
        *err = RESP_E_QUOTES;
        return RESP_BAD;
      }
      j = (size_t)after;
    } else {
      for (j = i; j < n && !is_space((unsigned char)buf[j]); j++)
        ;
      wlen = j - i;
    }
    word(ud, buf + i, wlen);
    count++;
    i = j;
  }
  *nwords = count;
  return (long)(nl - buf) + 1;
}


const char *resp_strerror (int err) {
  switch (err) {
    case RESP_E_MBULK: return "invalid multibulk length";
    case RESP_E_BULK: return "invalid bulk length";
    case RESP_E_QUOTES: return "unbalanced quotes in request";
    case RESP_E_INLINE: return "too big inline request";
    default: return "expected '$'";
  }
}
