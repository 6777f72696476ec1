/*
** buf.c -- connection buffers with a small pool of fixed-size blocks, so
** that a busy connection does not allocate per message and an idle one
** holds no storage (memcached's rbuf_release).
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"


void bufpool_init (struct bufpool *p) {
  p->n = 0;
  p->nbig = 0;
}


void bufpool_free (struct bufpool *p) {
  while (p->n > 0) free(p->blocks[--p->n]);
  while (p->nbig > 0) free(p->big[--p->nbig]);
}


/* storage of size bytes (BUF_CHUNK or BUF_BIG), pooled if there is some */
static void *block_get (struct bufpool *p, size_t size) {
  if (p != NULL && size == BUF_CHUNK && p->n > 0) return p->blocks[--p->n];
  if (p != NULL && size == BUF_BIG && p->nbig > 0) return p->big[--p->nbig];
  return malloc(size);
}


static void storage_put (struct buf *b, struct bufpool *p) {
  if (b->cap == BUF_CHUNK && p != NULL && p->n < BUFPOOL_MAX)
    p->blocks[p->n++] = b->data;
  else if (b->cap == BUF_BIG && p != NULL && p->nbig < BUFPOOL_BIG)
    p->big[p->nbig++] = b->data;
  else
    free(b->data);
  b->data = NULL;
  b->start = b->end = b->cap = 0;
}


int buf_reserve (struct buf *b, size_t n, struct bufpool *p) {
  size_t len = buf_len(b), need, cap;
  char *nd;
  if (buf_space(b) >= n) return 0;
  if (b->data == NULL && n <= BUF_BIG) {
    size_t size = n <= BUF_CHUNK ? BUF_CHUNK : BUF_BIG;
    if ((b->data = block_get(p, size)) == NULL) return -ENOMEM;
    b->cap = size;
    return 0;
  }
  if (b->start > 0) {  /* slide unread bytes to the front */
    memmove(b->data, b->data + b->start, len);
    b->start = 0;
    b->end = len;
    if (buf_space(b) >= n) return 0;
  }
  need = len + n;
  for (cap = b->cap ? b->cap : BUF_CHUNK; cap < need; cap *= 2)
    if (cap > ((size_t)-1) / 4) return -ENOMEM;
  if ((nd = block_get(p, cap)) == NULL) return -ENOMEM;
  if (len > 0) memcpy(nd, b->data, len);
  if (b->data != NULL) storage_put(b, p);
  b->data = nd;
  b->cap = cap;
  b->start = 0;
  b->end = len;
  return 0;
}


int buf_append (struct buf *b, const void *s, size_t n, struct bufpool *p) {
  int rc;
  if (n == 0) return 0;  /* data may still be NULL: memcpy must not see it */
  rc = buf_reserve(b, n, p);
  if (rc < 0) return rc;
  memcpy(b->data + b->end, s, n);
  b->end += n;
  return 0;
}


void buf_consume (struct buf *b, size_t n) {
  b->start += n;
  if (b->start >= b->end) b->start = b->end = 0;
}


void buf_release (struct buf *b, struct bufpool *p) {
  if (b->data != NULL && buf_len(b) == 0) storage_put(b, p);
}


void buf_free (struct buf *b, struct bufpool *p) {
  if (b->data != NULL) storage_put(b, p);
}


long buf_findnl (const struct buf *b, size_t from) {
  const char *nl;
  if (from >= buf_len(b)) return -1;
  nl = memchr(b->data + b->start + from, '\n', buf_len(b) - from);
  return nl ? (long)(nl - (b->data + b->start)) : -1;
}
