/*
** resp.h -- the requests of the Redis protocol (RESP2), as a server reads
** them: array headers ("*N\r\n"), bulk strings ("$LEN\r\ndata\r\n") and
** inline commands (a telnet line of words). Pure parsing, no I/O and no
** Lua: the request layer (lresp.c) feeds it what a connection buffered.
** Limits and refusals are Redis's, worded as Redis words them.
*/
#ifndef LUASRV_RESP_H
#define LUASRV_RESP_H

#include <stddef.h>

#define RESP_MAX_ARGS (1024L * 1024)        /* elements in one array */
#define RESP_MAX_BULK (64L * 1024 * 1024)   /* bytes in one element */
#define RESP_HEADER_MAX 32  /* "*N"/"$N" bytes after the first, unended */

/* What a parser returns besides a length: more input needed, or refused. */
#define RESP_MORE 0
#define RESP_BAD (-1)

/* Why a request was refused (the text: resp_strerror). */
enum resp_error {
  RESP_E_MBULK = 1,           /* "*N": N not a count, or over the limit */
  RESP_E_BULK,                /* "$N": N not a length, or over the limit */
  RESP_E_DOLLAR,              /* an element that does not start with '$' */
  RESP_E_QUOTES,              /* an inline quote left open */
  RESP_E_INLINE               /* an inline command longer than allowed */
};

/*
** Parses the array header at buf[0..len) (buf[0] is '*'). Returns its
** length with the element count in *n (0 for "*-1" and other negative
** counts: nothing to do, as in Redis); RESP_MORE; or RESP_BAD with *err.
*/
long resp_array (const char *buf, size_t len, long *n, int *err);

/*
** Parses one bulk string at buf[0..len). Returns its whole length (the
** "\r\n" after the data included, skipped unchecked as Redis does) with
** the data at buf + *off, *dlen bytes; RESP_MORE, with *need the bytes
** the element needs in all once its header is known (else 0); or
** RESP_BAD with *err (RESP_E_DOLLAR: buf[0] is the byte found).
*/
long resp_bulk (const char *buf, size_t len, size_t *off, size_t *dlen,
                size_t *need, int *err);

/* Called with each word of an inline command; may not return (raise). */
typedef void resp_word_fn (void *ud, const char *p, size_t n);

/*
** Parses the inline command at buf[0..len): a line up to "\n", longer
** than max bytes refused (so is an unended one already longer). Words
** are bare, "double quoted" (\n \r \t \b \a \xHH and \<c> escapes) or
** 'single quoted' (\' only), as Redis's sdssplitargs; each goes to
** word(ud, ...) in turn. Quoted words are unescaped in place, so buf is
** changed. Returns the line's length with "\n" and the number of words
** in *nwords (0 for an empty line); RESP_MORE; or RESP_BAD with *err.
*/
long resp_inline (char *buf, size_t len, size_t max, resp_word_fn *word,
                  void *ud, long *nwords, int *err);

/* The text of an error, after "ERR Protocol error: " (not RESP_E_DOLLAR). */
const char *resp_strerror (int err);

#endif
