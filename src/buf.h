/*
** buf.h -- byte buffers for connections: a read position, a write
** position, and storage that an idle connection gives back to a pool.
** No sockets and no Lua here.
*/
#ifndef LUASRV_BUF_H
#define LUASRV_BUF_H

#include <stddef.h>

#define BUF_CHUNK 16384       /* size of pooled storage blocks */
#define BUFPOOL_MAX 64        /* blocks a pool keeps at most */
/*
** Pooled too, a few at most: storage of BUF_BIG bytes, what a read of up
** to 64 KiB (luasrv.http's recv) reserves in an empty buffer. Without
** them each such read malloc'd and freed 64 KiB: 3% of an HTTP request.
*/
#define BUF_BIG (4 * BUF_CHUNK)
#define BUFPOOL_BIG 4

struct bufpool {
  void *blocks[BUFPOOL_MAX];
  int n;
  void *big[BUFPOOL_BIG];     /* blocks of BUF_BIG bytes */
  int nbig;
};

struct buf {
  char *data;                 /* NULL when the buffer holds no storage */
  size_t start;               /* first unread byte */
  size_t end;                 /* one past the last byte */
  size_t cap;
};

void bufpool_init (struct bufpool *p);
void bufpool_free (struct bufpool *p);

static inline size_t buf_len (const struct buf *b) { return b->end - b->start; }
static inline const char *buf_head (const struct buf *b) {
  return b->data + b->start;
}
static inline char *buf_tail (struct buf *b) { return b->data + b->end; }
static inline size_t buf_space (const struct buf *b) { return b->cap - b->end; }

/*
** Makes room for at least n more bytes after end, moving unread bytes to
** the front or growing the storage. Returns 0 or -ENOMEM.
*/
int buf_reserve (struct buf *b, size_t n, struct bufpool *p);

/* Appends n bytes. Returns 0 or -ENOMEM. */
int buf_append (struct buf *b, const void *s, size_t n, struct bufpool *p);

/* Drops n unread bytes from the front. */
void buf_consume (struct buf *b, size_t n);

/* Gives storage back to the pool if the buffer is empty. */
void buf_release (struct buf *b, struct bufpool *p);

/* Frees the storage whatever it holds. */
void buf_free (struct buf *b, struct bufpool *p);

/*
** Looks for '\n' in the unread bytes from offset from; returns its offset
** from start, or -1.
*/
long buf_findnl (const struct buf *b, size_t from);

#endif
