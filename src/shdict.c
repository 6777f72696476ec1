/*
** shdict.c -- shared dictionaries in a fixed zone of shared memory (see
** shdict.h). The zone, all offsets from its start:
**
**   [struct shdict: header, robust mutex] [buckets: uint32 x 2^k] [heap]
**
** The heap is a sequence of blocks, each starting with a struct blk
** (its size with a "used" bit, and the size of the block before it, so
** that a freed block merges with both neighbours). Free blocks are on a
** doubly linked free list (first fit, split when the rest is worth a
** block); two free blocks are never adjacent. A used block holds one item:
** a struct item (hash chain link, LRU links, hash, lengths, type,
** expiry), then the key, then the value (8 bytes for a number, 1 for a
** boolean). Per item: 8 (block) + 32 (item) bytes, rounded up to a
** multiple of 8, plus the hash table's 4 bytes per bucket (one bucket per
** 128 bytes of zone).
**
** Expired items are invisible at once and reclaimed lazily: when looked
** up, and all of them before anything live is evicted.
*/
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "log.h"
#include "shdict.h"

#define MAGIC 0x6c736864u     /* "lshd" */
#define USED 1u
#define ALIGN8(n) (((n) + 7u) & ~(size_t)7u)

struct blk {
  uint32_t size;              /* bytes, header included; | USED */
  uint32_t prev;              /* size of the block before; 0: the first */
};

struct fblk {                 /* a free block */
  struct blk b;
  uint32_t next, pprev;       /* the free list */
};

struct item {                 /* after the struct blk of a used block */
  uint32_t hnext;             /* hash chain */
  uint32_t lprev, lnext;      /* LRU list: head = most recently used */
  uint32_t hash;
  uint32_t vlen;
  uint16_t klen;
  uint8_t type;               /* enum shd_type */
  uint8_t pad;
  int64_t expires;            /* CLOCK_MONOTONIC ms; 0 = never */
};

#define DATA_OFF (sizeof(struct blk) + sizeof(struct item))
#define MIN_BLOCK ALIGN8(DATA_OFF + 2)   /* the smallest item */

struct shdict {
  uint32_t magic;
  uint32_t size;              /* of the mapping */
  uint32_t nbuckets;          /* a power of 2 */
  uint32_t buckets;           /* offset of the hash table */
  uint32_t heap, heap_end;    /* offsets */
  uint32_t lru_head, lru_tail;
  uint32_t free_head;
  uint32_t nitems;
  uint64_t free_bytes;
  uint32_t dirty;             /* the lock holder has begun writing */
  uint32_t recoveries, flushes;
  pthread_mutex_t lock;       /* process-shared, robust */
};

_Static_assert(sizeof(struct item) == 32, "item header is 32 bytes");
_Static_assert(sizeof(struct fblk) <= MIN_BLOCK, "a free block fits");


/* {====================================================== layout */

static inline struct blk *B (struct shdict *d, uint32_t off) {
  return (struct blk *)((char *)d + off);
}

static inline struct fblk *FB (struct shdict *d, uint32_t off) {
  return (struct fblk *)((char *)d + off);
}

static inline struct item *IT (struct shdict *d, uint32_t off) {
  return (struct item *)((char *)d + off + sizeof(struct blk));
}

static inline char *DATA (struct shdict *d, uint32_t off) {
  return (char *)d + off + DATA_OFF;
}

static inline uint32_t bsize (const struct blk *b) {
  return b->size & ~USED;
}

static inline uint32_t *bucket (struct shdict *d, uint32_t hash) {
  return (uint32_t *)((char *)d + d->buckets) + (hash & (d->nbuckets - 1));
}


static uint32_t hash_key (const char *k, size_t n) {
  uint32_t h = 2166136261u;   /* FNV-1a */
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)k[i];
    h *= 16777619u;
  }
  return h;
}


static int64_t now_ms (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


/* Empties the zone: every block merged into one free block. */
static void format_data (struct shdict *d) {
  struct fblk *f = FB(d, d->heap);
  memset((char *)d + d->buckets, 0, (size_t)d->nbuckets * sizeof(uint32_t));
  d->lru_head = d->lru_tail = 0;
  d->nitems = 0;
  f->b.size = d->heap_end - d->heap;
  f->b.prev = 0;
  f->next = f->pprev = 0;
  d->free_head = d->heap;
  d->free_bytes = f->b.size;
}

/* }====================================================== */


/* {====================================================== lock */

/*
** Takes the lock. A holder that died leaves it "owner dead": if it had
** begun writing, its lists may be half-updated, and the zone is flushed.
*/
static int lock (struct shdict *d) {
  int rc = pthread_mutex_lock(&d->lock);
  if (rc == EOWNERDEAD) {
    int flushed = 0;
    d->recoveries++;
    if (__atomic_load_n(&d->dirty, __ATOMIC_SEQ_CST)) {
      format_data(d);
      d->flushes++;
      flushed = 1;
    }
    __atomic_store_n(&d->dirty, 0, __ATOMIC_SEQ_CST);
    pthread_mutex_consistent(&d->lock);
    log_warn("shared dictionary: a process died holding its lock%s",
             flushed ? " while writing: the dictionary was flushed" : "");
    return 0;
  }
  return rc == 0 ? 0 : SHD_LOCK;
}


/*
** The dirty mark guards against death, not against other threads (the
** mutex does that): it only has to be stored before the writes that
** follow it and after the writes that precede its clearing, in program
** order. A process dies at an instruction boundary, and what it stored
** is seen by the next holder (the kernel's robust-futex hand-over is a
** full barrier), so a compiler barrier is enough.
*/
#define COMPILER_BARRIER() __asm__ __volatile__("" ::: "memory")

/* Before the first write under the lock. */
static inline void mark (struct shdict *d) {
  if (!d->dirty) {
    __atomic_store_n(&d->dirty, 1, __ATOMIC_SEQ_CST);
    COMPILER_BARRIER();
  }
}


static void unlock (struct shdict *d) {
  COMPILER_BARRIER();
  __atomic_store_n(&d->dirty, 0, __ATOMIC_SEQ_CST);
  pthread_mutex_unlock(&d->lock);
}

/* }====================================================== */


/* {====================================================== heap */

static void fl_push (struct shdict *d, uint32_t off) {
  struct fblk *f = FB(d, off);
  f->next = d->free_head;
  f->pprev = 0;
  if (d->free_head) FB(d, d->free_head)->pprev = off;
  d->free_head = off;
}


static void fl_remove (struct shdict *d, uint32_t off) {
  struct fblk *f = FB(d, off);
  if (f->pprev) FB(d, f->pprev)->next = f->next;
  else d->free_head = f->next;
  if (f->next) FB(d, f->next)->pprev = f->pprev;
}


static void blk_free (struct shdict *d, uint32_t off) {
  struct blk *b = B(d, off);
  uint32_t size = bsize(b), nxt = off + size;
  d->free_bytes += size;
  if (nxt < d->heap_end && !(B(d, nxt)->size & USED)) {
    fl_remove(d, nxt);
    size += B(d, nxt)->size;
  }
  if (b->prev && !(B(d, off - b->prev)->size & USED)) {
    off -= b->prev;
    fl_remove(d, off);
    size += B(d, off)->size;
  }
  B(d, off)->size = size;
  if (off + size < d->heap_end) B(d, off + size)->prev = size;
  fl_push(d, off);
}


/* First fit; 0 when no free block is big enough. */
static uint32_t blk_alloc (struct shdict *d, uint32_t need) {
  for (uint32_t off = d->free_head; off; off = FB(d, off)->next) {
    uint32_t size = B(d, off)->size;
    if (size < need) continue;
    fl_remove(d, off);
    if (size - need >= MIN_BLOCK) {
      uint32_t rest = off + need, after = off + size;
      B(d, rest)->size = size - need;
      B(d, rest)->prev = need;
      if (after < d->heap_end) B(d, after)->prev = size - need;
      fl_push(d, rest);
      size = need;
    }
    B(d, off)->size = size | USED;
    d->free_bytes -= size;
    return off;
  }
  return 0;
}

/* }====================================================== */


/* {====================================================== items */

static uint32_t find (struct shdict *d, const char *key, size_t klen,
                      uint32_t h) {
  for (uint32_t off = *bucket(d, h); off; off = IT(d, off)->hnext) {
    struct item *it = IT(d, off);
    if (it->hash == h && it->klen == klen &&
        memcmp(DATA(d, off), key, klen) == 0)
      return off;
  }
  return 0;
}


static inline int expired (const struct item *it, int64_t now) {
  return it->expires != 0 && it->expires <= now;
}


static void lru_unlink (struct shdict *d, uint32_t off) {
  struct item *it = IT(d, off);
  if (it->lprev) IT(d, it->lprev)->lnext = it->lnext;
  else d->lru_head = it->lnext;
  if (it->lnext) IT(d, it->lnext)->lprev = it->lprev;
  else d->lru_tail = it->lprev;
}


static void lru_push (struct shdict *d, uint32_t off) {
  struct item *it = IT(d, off);
  it->lprev = 0;
  it->lnext = d->lru_head;
  if (d->lru_head) IT(d, d->lru_head)->lprev = off;
  else d->lru_tail = off;
  d->lru_head = off;
}


static void touch (struct shdict *d, uint32_t off) {
  if (d->lru_head == off) return;
  mark(d);
  lru_unlink(d, off);
  lru_push(d, off);
}


static void item_remove (struct shdict *d, uint32_t off) {
  uint32_t *p = bucket(d, IT(d, off)->hash);
  while (*p != off) p = &IT(d, *p)->hnext;
  *p = IT(d, off)->hnext;
  lru_unlink(d, off);
  blk_free(d, off);
  d->nitems--;
}


/*
** A block of need bytes: from the free list, else after reclaiming every
** expired item, else evicting from the LRU tail (*forcible = 1).
*/
static uint32_t make_room (struct shdict *d, uint32_t need, int64_t now,
                           int *forcible) {
  uint32_t off;
  if (need > d->heap_end - d->heap) return 0;
  if ((off = blk_alloc(d, need)) != 0) return off;
  for (uint32_t o = d->lru_tail; o; ) {
    uint32_t prev = IT(d, o)->lprev;
    if (expired(IT(d, o), now)) item_remove(d, o);
    o = prev;
  }
  if ((off = blk_alloc(d, need)) != 0) return off;
  while (d->lru_tail) {
    item_remove(d, d->lru_tail);
    *forcible = 1;
    if ((off = blk_alloc(d, need)) != 0) return off;
  }
  return 0;
}


static size_t value_len (const struct shd_val *v) {
  switch (v->type) {
    case SHD_STR: return v->len;
    case SHD_INT: case SHD_NUM: return 8;
    case SHD_BOOL: return 1;
    default: return 0;
  }
}


static void write_value (char *p, const struct shd_val *v) {
  switch (v->type) {
    case SHD_STR: memcpy(p, v->s, v->len); break;
    case SHD_INT: memcpy(p, &v->i, 8); break;
    case SHD_NUM: memcpy(p, &v->n, 8); break;
    case SHD_BOOL: *p = (char)(v->b != 0); break;
    default: break;
  }
}


/* Fills a new block off with the item and links it in. */
static void item_insert (struct shdict *d, uint32_t off, const char *key,
                         size_t klen, uint32_t h, const struct shd_val *v,
                         int64_t expires) {
  struct item *it = IT(d, off);
  uint32_t *bk = bucket(d, h);
  it->hash = h;
  it->klen = (uint16_t)klen;
  it->vlen = (uint32_t)value_len(v);
  it->type = (uint8_t)v->type;
  it->pad = 0;
  it->expires = expires;
  memcpy(DATA(d, off), key, klen);
  write_value(DATA(d, off) + klen, v);
  it->hnext = *bk;
  *bk = off;
  lru_push(d, off);
  d->nitems++;
}


static int check_ttl (double ttl, int64_t *ms) {
  if (!(ttl >= 0) || ttl > 1e9) return SHD_BADTTL;
  if (ttl == 0) *ms = 0;
  else {
    *ms = (int64_t)ceil(ttl * 1000);
    if (*ms < 1) *ms = 1;
  }
  return 0;
}


static int check_key (size_t klen) {
  return klen == 0 || klen > SHD_MAX_KEY ? SHD_BADKEY : 0;
}


/* Block bytes an item needs; 0 if it could never fit a 32-bit zone. */
static uint32_t item_need (size_t klen, size_t vlen) {
  if (vlen > SHD_MAX_SIZE) return 0;
  return (uint32_t)ALIGN8(DATA_OFF + klen + vlen);
}

/* }====================================================== */


/* {====================================================== operations */

int shdict_get (struct shdict *d, const char *key, size_t klen,
                struct shd_val *v, char *buf, size_t bufsize) {
  uint32_t off, h = hash_key(key, klen);
  const char *p;
  int rc;
  memset(v, 0, sizeof *v);
  if ((rc = check_key(klen)) < 0) return rc;
  if ((rc = lock(d)) < 0) return rc;
  off = find(d, key, klen, h);
  if (off == 0) rc = SHD_NOTFOUND;
  else if (expired(IT(d, off), now_ms())) {
    mark(d);
    item_remove(d, off);
    rc = SHD_NOTFOUND;
  }
  else {
    struct item *it = IT(d, off);
    p = DATA(d, off) + klen;
    v->type = it->type;
    switch (it->type) {
      case SHD_STR:
        v->len = it->vlen;
        if (it->vlen > bufsize) {
          rc = SHD_AGAIN;
          break;
        }
        memcpy(buf, p, it->vlen);
        v->s = buf;
        break;
      case SHD_INT: memcpy(&v->i, p, 8); break;
      case SHD_NUM: memcpy(&v->n, p, 8); break;
      case SHD_BOOL: v->b = *p != 0; break;
      case SHD_LIST: rc = SHD_ISLIST; break;
      default: break;
    }
    if (rc == 0) touch(d, off);
  }
  unlock(d);
  return rc;
}


int shdict_store (struct shdict *d, enum shd_mode mode, const char *key,
                  size_t klen, const struct shd_val *v, double ttl,
                  int *forcible) {
  uint32_t off, need, h = hash_key(key, klen);
  int64_t ttl_ms, now;
  int rc, live;
  *forcible = 0;
  if ((rc = check_key(klen)) < 0 || (rc = check_ttl(ttl, &ttl_ms)) < 0)
    return rc;
  need = item_need(klen, value_len(v));
  if ((rc = lock(d)) < 0) return rc;
  now = now_ms();
  off = find(d, key, klen, h);
  live = off != 0 && !expired(IT(d, off), now);
  if (mode == SHD_ADD && live) rc = SHD_EXISTS;
  else if (mode == SHD_REPLACE && !live) rc = SHD_NOTFOUND;
  if (rc < 0 || (off == 0 && v->type == SHD_NIL)) {
    unlock(d);
    return rc;
  }
  mark(d);
  if (off != 0) item_remove(d, off);
  if (v->type != SHD_NIL) {
    off = need != 0 ? make_room(d, need, now, forcible) : 0;
    if (off == 0) rc = SHD_NOMEM;
    else item_insert(d, off, key, klen, h, v, ttl_ms ? now + ttl_ms : 0);
  }
  unlock(d);
  return rc;
}


static void add_numbers (const struct shd_val *a, const struct shd_val *b,
                         struct shd_val *out) {
  memset(out, 0, sizeof *out);
  if (a->type == SHD_INT && b->type == SHD_INT) {
    out->type = SHD_INT;
    out->i = (int64_t)((uint64_t)a->i + (uint64_t)b->i);
  }
  else {
    out->type = SHD_NUM;
    out->n = (a->type == SHD_INT ? (double)a->i : a->n) +
             (b->type == SHD_INT ? (double)b->i : b->n);
  }
}


int shdict_incr (struct shdict *d, const char *key, size_t klen,
                 const struct shd_val *delta, const struct shd_val *init,
                 double init_ttl, struct shd_val *out, int *forcible) {
  uint32_t off, h = hash_key(key, klen);
  int64_t ttl_ms, now;
  int rc;
  *forcible = 0;
  memset(out, 0, sizeof *out);
  if ((rc = check_key(klen)) < 0 || (rc = check_ttl(init_ttl, &ttl_ms)) < 0)
    return rc;
  if ((delta->type != SHD_INT && delta->type != SHD_NUM) ||
      (init != NULL && init->type != SHD_INT && init->type != SHD_NUM))
    return SHD_NAN;
  if ((rc = lock(d)) < 0) return rc;
  now = now_ms();
  off = find(d, key, klen, h);
  if (off != 0 && expired(IT(d, off), now)) {
    mark(d);
    item_remove(d, off);
    off = 0;
  }
  if (off == 0) {
    if (init == NULL) rc = SHD_NOTFOUND;
    else {
      add_numbers(init, delta, out);
      mark(d);
      off = make_room(d, item_need(klen, 8), now, forcible);
      if (off == 0) rc = SHD_NOMEM;
      else item_insert(d, off, key, klen, h, out, ttl_ms ? now + ttl_ms : 0);
    }
  }
  else {
    struct item *it = IT(d, off);
    struct shd_val cur;
    char *p = DATA(d, off) + klen;
    memset(&cur, 0, sizeof cur);
    cur.type = it->type;
    if (it->type == SHD_INT) memcpy(&cur.i, p, 8);
    else if (it->type == SHD_NUM) memcpy(&cur.n, p, 8);
    else rc = it->type == SHD_LIST ? SHD_ISLIST : SHD_NAN;
    if (rc == 0) {
      add_numbers(&cur, delta, out);
      mark(d);
      write_value(p, out);
      it->type = (uint8_t)out->type;
      touch(d, off);
    }
  }
  unlock(d);
  return rc;
}


/* {====================================================== lists */

/*
** A list is one item whose value is a 4-byte count and its elements, end
** to end, each framed at both ends so that either end can be taken:
** [type:1][len:4][bytes][len:4]. A push makes the item anew one element
** longer (the old one stays out of the eviction's reach meanwhile); a
** pop moves what is left into place and gives the block's tail back.
*/
#define ELEM_OVER 9u          /* bytes of framing per element */

static uint32_t rd32 (const char *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

static void wr32 (char *p, uint32_t v) {
  memcpy(p, &v, 4);
}


/* Writes element v at p: ELEM_OVER + its length bytes. */
static void elem_write (char *p, const struct shd_val *v) {
  uint32_t n = (uint32_t)value_len(v);
  p[0] = (char)v->type;
  wr32(p + 1, n);
  write_value(p + 5, v);
  wr32(p + 5 + n, n);
}


/* Reads the element at p into v (a string copied to buf, if it fits). */
static int elem_read (const char *p, struct shd_val *v, char *buf,
                      size_t bufsize) {
  uint32_t n = rd32(p + 1);
  const char *q = p + 5;
  memset(v, 0, sizeof *v);
  v->type = (unsigned char)p[0];
  switch (v->type) {
    case SHD_STR:
      v->len = n;
      if (n > bufsize) return SHD_AGAIN;
      memcpy(buf, q, n);
      v->s = buf;
      break;
    case SHD_INT: memcpy(&v->i, q, 8); break;
    case SHD_NUM: memcpy(&v->n, q, 8); break;
    case SHD_BOOL: v->b = *q != 0; break;
    default: break;
  }
  return 0;
}


/* Gives the tail of used block off past need bytes back to the heap. */
static void blk_shrink (struct shdict *d, uint32_t off, uint32_t need) {
  uint32_t size = bsize(B(d, off)), rest = off + need;
  if (size - need < MIN_BLOCK) return;
  B(d, off)->size = need | USED;
  B(d, rest)->size = (size - need) | USED;
  B(d, rest)->prev = need;
  if (off + size < d->heap_end) B(d, off + size)->prev = size - need;
  blk_free(d, rest);  /* counts it free, merges it with what follows */
}


/* The live item at key (an expired one is removed), or 0. */
static uint32_t find_live (struct shdict *d, const char *key, size_t klen,
                           uint32_t h, int64_t now) {
  uint32_t off = find(d, key, klen, h);
  if (off != 0 && expired(IT(d, off), now)) {
    mark(d);
    item_remove(d, off);
    off = 0;
  }
  return off;
}


int shdict_push (struct shdict *d, int left, const char *key, size_t klen,
                 const struct shd_val *v, long *len, int *forcible) {
  uint32_t off, nb, h = hash_key(key, klen), oldv = 4, count = 0, need;
  size_t elen = ELEM_OVER + value_len(v);
  int64_t now, expires = 0;
  int rc;
  *forcible = 0;
  *len = 0;
  if ((rc = check_key(klen)) < 0) return rc;
  if (v->type == SHD_NIL || v->type == SHD_LIST) return SHD_NOTLIST;
  if ((rc = lock(d)) < 0) return rc;
  now = now_ms();
  off = find_live(d, key, klen, h, now);
  if (off != 0 && IT(d, off)->type != SHD_LIST) {
    unlock(d);
    return SHD_NOTLIST;
  }
  if (off != 0) {
    oldv = IT(d, off)->vlen;
    count = rd32(DATA(d, off) + klen);
    expires = IT(d, off)->expires;
  }
  need = item_need(klen, (size_t)oldv + elen);
  mark(d);
  if (off != 0) lru_unlink(d, off);  /* not to be evicted for its own room */
  nb = need != 0 && oldv + elen <= UINT32_MAX ? make_room(d, need, now, forcible) : 0;
  if (off != 0) lru_push(d, off);
  if (nb == 0) {
    unlock(d);
    return SHD_NOMEM;
  }
  {
    struct item *it = IT(d, nb);
    char *p = DATA(d, nb);
    uint32_t *bk = bucket(d, h);
    it->hash = h;
    it->klen = (uint16_t)klen;
    it->vlen = (uint32_t)(oldv + elen);
    it->type = SHD_LIST;
    it->pad = 0;
    it->expires = expires;
    memcpy(p, key, klen);
    wr32(p + klen, count + 1);
    if (left) {
      elem_write(p + klen + 4, v);
      if (off != 0) memcpy(p + klen + 4 + elen, DATA(d, off) + klen + 4, oldv - 4);
    }
    else {
      if (off != 0) memcpy(p + klen + 4, DATA(d, off) + klen + 4, oldv - 4);
      elem_write(p + klen + oldv, v);
    }
    if (off != 0) item_remove(d, off);
    it->hnext = *bk;
    *bk = nb;
    lru_push(d, nb);
    d->nitems++;
  }
  *len = (long)count + 1;
  unlock(d);
  return 0;
}


int shdict_pop (struct shdict *d, int left, const char *key, size_t klen,
                struct shd_val *v, char *buf, size_t bufsize) {
  uint32_t off, h = hash_key(key, klen);
  int rc;
  memset(v, 0, sizeof *v);
  if ((rc = check_key(klen)) < 0) return rc;
  if ((rc = lock(d)) < 0) return rc;
  off = find_live(d, key, klen, h, now_ms());
  if (off == 0) rc = SHD_NOTFOUND;
  else if (IT(d, off)->type != SHD_LIST) rc = SHD_NOTLIST;
  else {
    struct item *it = IT(d, off);
    char *body = DATA(d, off) + klen, *e;
    uint32_t count = rd32(body), elen;
    if (left) e = body + 4;
    else e = body + it->vlen - 4 - rd32(body + it->vlen - 4) - 5;
    elen = ELEM_OVER + rd32(e + 1);
    if ((rc = elem_read(e, v, buf, bufsize)) == 0) {
      mark(d);
      if (count <= 1) item_remove(d, off);
      else {
        if (left) memmove(e, e + elen, it->vlen - 4 - elen);
        wr32(body, count - 1);
        it->vlen -= elen;
        blk_shrink(d, off, (uint32_t)ALIGN8(DATA_OFF + klen + it->vlen));
        touch(d, off);
      }
    }
  }
  unlock(d);
  return rc;
}


int shdict_llen (struct shdict *d, const char *key, size_t klen, long *len) {
  uint32_t off, h = hash_key(key, klen);
  int rc;
  *len = 0;
  if ((rc = check_key(klen)) < 0) return rc;
  if ((rc = lock(d)) < 0) return rc;
  off = find_live(d, key, klen, h, now_ms());
  if (off != 0 && IT(d, off)->type != SHD_LIST) rc = SHD_NOTLIST;
  else if (off != 0) *len = (long)rd32(DATA(d, off) + klen);
  unlock(d);
  return rc;
}

/* }====================================================== */


int shdict_delete (struct shdict *d, const char *key, size_t klen) {
  uint32_t off, h = hash_key(key, klen);
  int rc;
  if ((rc = check_key(klen)) < 0) return rc;
  if ((rc = lock(d)) < 0) return rc;
  if ((off = find(d, key, klen, h)) != 0) {
    mark(d);
    item_remove(d, off);
  }
  unlock(d);
  return 0;
}


int shdict_ttl (struct shdict *d, const char *key, size_t klen,
                double *secs) {
  uint32_t off, h = hash_key(key, klen);
  int64_t now;
  int rc;
  *secs = 0;
  if ((rc = check_key(klen)) < 0) return rc;
  if ((rc = lock(d)) < 0) return rc;
  now = now_ms();
  off = find(d, key, klen, h);
  if (off == 0 || expired(IT(d, off), now)) rc = SHD_NOTFOUND;
  else if (IT(d, off)->expires != 0)
    *secs = (double)(IT(d, off)->expires - now) / 1000.0;
  unlock(d);
  return rc;
}


int shdict_keys (struct shdict *d, int max,
                 int (*fn) (void *ud, const char *key, size_t klen),
                 void *ud) {
  int n = 0;
  int64_t now;
  if (lock(d) < 0) return 0;
  now = now_ms();
  for (uint32_t off = d->lru_head; off && (max <= 0 || n < max);
       off = IT(d, off)->lnext) {
    if (expired(IT(d, off), now)) continue;
    n++;
    if (fn(ud, DATA(d, off), IT(d, off)->klen)) break;
  }
  unlock(d);
  return n;
}


void shdict_flush_all (struct shdict *d) {
  if (lock(d) < 0) return;
  mark(d);
  format_data(d);
  unlock(d);
}


size_t shdict_free_space (struct shdict *d) {
  size_t n;
  if (lock(d) < 0) return 0;
  n = (size_t)d->free_bytes;
  unlock(d);
  return n;
}


size_t shdict_capacity (struct shdict *d) {
  return d->heap_end - d->heap;
}


size_t shdict_count (struct shdict *d) {
  size_t n;
  if (lock(d) < 0) return 0;
  n = d->nitems;
  unlock(d);
  return n;
}


const char *shdict_strerror (int rc) {
  switch (rc) {
    case SHD_OK: return "ok";
    case SHD_NOTFOUND: return "not found";
    case SHD_EXISTS: return "exists";
    case SHD_NOMEM: return "no memory";
    case SHD_NAN: return "not a number";
    case SHD_AGAIN: return "buffer too small";
    case SHD_BADKEY: return "bad key";
    case SHD_BADTTL: return "bad ttl";
    case SHD_LOCK: return "cannot lock";
    case SHD_NOTLIST: return "value not a list";
    case SHD_ISLIST: return "value is a list";
    default: return "unknown error";
  }
}

/* }====================================================== */


/* {====================================================== zones */

struct shdict *shdict_create (size_t size, char *err, size_t errlen) {
  pthread_mutexattr_t a;
  struct shdict *d;
  uint32_t nb = 16;
  size_t hdr = ALIGN8(sizeof(struct shdict));
  int rc;
  if (size < SHD_MIN_SIZE || size > SHD_MAX_SIZE) {
    snprintf(err, errlen, "size must be between %zuk and %zum",
             SHD_MIN_SIZE >> 10, SHD_MAX_SIZE >> 20);
    return NULL;
  }
  while ((size_t)nb * 2 <= size / 128) nb *= 2;
  d = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
           -1, 0);
  if (d == MAP_FAILED) {
    snprintf(err, errlen, "cannot map %zu bytes of shared memory: %s", size,
             strerror(errno));
    return NULL;
  }
  memset(d, 0, hdr);
  d->magic = MAGIC;
  d->size = (uint32_t)size;
  d->nbuckets = nb;
  d->buckets = (uint32_t)hdr;
  d->heap = (uint32_t)ALIGN8(hdr + (size_t)nb * sizeof(uint32_t));
  d->heap_end = (uint32_t)(size & ~(size_t)7);
  format_data(d);
  if ((rc = pthread_mutexattr_init(&a)) != 0 ||
      (rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)) != 0 ||
      (rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)) != 0 ||
      (rc = pthread_mutex_init(&d->lock, &a)) != 0) {
    snprintf(err, errlen, "cannot create a shared mutex: %s", strerror(rc));
    munmap(d, size);
    return NULL;
  }
  pthread_mutexattr_destroy(&a);
  return d;
}


void shdict_destroy (struct shdict *d) {
  if (d == NULL) return;
  pthread_mutex_destroy(&d->lock);
  munmap(d, d->size);
}


static struct {
  char name[SHD_MAX_NAME + 1];
  struct shdict *d;
} registry[SHD_MAX_DICTS];
static int nregistry;


int shdict_define (const char *name, size_t size, char *err, size_t errlen) {
  size_t n = strlen(name);
  struct shdict *d;
  if (n == 0 || n > SHD_MAX_NAME || strspn(name,
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != n) {
    snprintf(err, errlen, "bad name '%s' (letters, digits and _, at most %d)",
             name, SHD_MAX_NAME);
    return -1;
  }
  if (shdict_lookup(name) != NULL) {
    snprintf(err, errlen, "'%s' is defined twice", name);
    return -1;
  }
  if (nregistry == SHD_MAX_DICTS) {
    snprintf(err, errlen, "too many dictionaries (at most %d)", SHD_MAX_DICTS);
    return -1;
  }
  if ((d = shdict_create(size, err, errlen)) == NULL) return -1;
  memcpy(registry[nregistry].name, name, n + 1);
  registry[nregistry++].d = d;
  return 0;
}


struct shdict *shdict_lookup (const char *name) {
  for (int i = 0; i < nregistry; i++)
    if (strcmp(registry[i].name, name) == 0) return registry[i].d;
  return NULL;
}


int shdict_ndicts (void) {
  return nregistry;
}


const char *shdict_name_at (int i) {
  return i >= 0 && i < nregistry ? registry[i].name : NULL;
}


struct shdict *shdict_at (int i) {
  return i >= 0 && i < nregistry ? registry[i].d : NULL;
}

/* }====================================================== */


/* {====================================================== testing */

#define CHECK(c) do { if (!(c)) { bad = __LINE__; goto out; } } while (0)

int shdict_verify (struct shdict *d) {
  uint32_t off, prev = 0, nfree = 0, nused = 0, n;
  uint64_t freeb = 0;
  int bad = 0, last_free = 0;
  if (lock(d) < 0) return -1;
  CHECK(d->magic == MAGIC);
  for (off = d->heap; off < d->heap_end; off += bsize(B(d, off))) {
    struct blk *b = B(d, off);
    uint32_t s = bsize(b);
    CHECK(s >= sizeof(struct fblk) && s % 8 == 0 && off + s <= d->heap_end);
    CHECK(b->prev == prev);
    if (b->size & USED) {
      nused++;
      last_free = 0;
      CHECK(s >= ALIGN8(DATA_OFF + IT(d, off)->klen + IT(d, off)->vlen));
    }
    else {
      CHECK(!last_free);    /* merged */
      last_free = 1;
      nfree++;
      freeb += s;
    }
    prev = s;
  }
  CHECK(off == d->heap_end);
  CHECK(freeb == d->free_bytes && nused == d->nitems);
  n = 0;
  for (off = d->free_head, prev = 0; off; prev = off, off = FB(d, off)->next) {
    CHECK(!(B(d, off)->size & USED) && FB(d, off)->pprev == prev);
    CHECK(++n <= nfree);
  }
  CHECK(n == nfree);
  n = 0;
  for (off = d->lru_head, prev = 0; off; prev = off, off = IT(d, off)->lnext) {
    CHECK((B(d, off)->size & USED) && IT(d, off)->lprev == prev);
    CHECK(++n <= nused);
  }
  CHECK(n == nused && d->lru_tail == prev);
  n = 0;
  for (uint32_t i = 0; i < d->nbuckets; i++)
    for (off = ((uint32_t *)((char *)d + d->buckets))[i]; off;
         off = IT(d, off)->hnext) {
      CHECK((B(d, off)->size & USED) &&
            (IT(d, off)->hash & (d->nbuckets - 1)) == i);
      CHECK(IT(d, off)->hash == hash_key(DATA(d, off), IT(d, off)->klen));
      CHECK(++n <= nused);
    }
  CHECK(n == nused);
out:
  unlock(d);
  if (bad) fprintf(stderr, "shdict_verify: shdict.c:%d\n", bad);
  return bad ? -1 : 0;
}


int shdict_debug_lock (struct shdict *d, int dirty) {
  int rc = lock(d);
  if (rc == 0 && dirty) {
    mark(d);
    /* a half-done write: an item unlinked from the LRU list only */
    if (d->lru_head) lru_unlink(d, d->lru_head);
  }
  return rc;
}


void shdict_debug_unlock (struct shdict *d) {
  unlock(d);
}


unsigned shdict_recoveries (struct shdict *d, unsigned *flushes) {
  unsigned n;
  if (lock(d) < 0) return 0;
  n = d->recoveries;
  if (flushes) *flushes = d->flushes;
  unlock(d);
  return n;
}

/* }====================================================== */
