/*
** shdict.h -- shared dictionaries (--shared NAME:SIZE), as OpenResty's
** ngx.shared.DICT: a fixed-size zone of MAP_SHARED memory, made by the
** master before any worker is forked, so every worker, thread and forked
** child (and every later generation after a reload) sees the same data.
**
** Inside the zone: a header with a process-shared robust mutex, a hash
** table of 32-bit offsets, and a heap of blocks (first fit, split and
** coalesced with boundary tags). Every item is one block; items form an
** LRU list evicted from its tail when the heap is full. No pointer is
** stored in the zone, only offsets from its start.
**
** Crash safety: a process that dies holding the lock leaves the mutex
** "owner dead". The next locker repairs it: if the dead holder had begun
** to modify the zone (a "dirty" mark set before the first write and
** cleared before unlocking), the zone is flushed (emptied) because its
** lists may be half-updated; if it had only read, nothing is lost.
**
** Pure C, no Lua: lshdict.c binds it.
*/
#ifndef LUASRV_SHDICT_H
#define LUASRV_SHDICT_H

#include <stddef.h>
#include <stdint.h>

#define SHD_MIN_SIZE ((size_t)8 * 1024)
#define SHD_MAX_SIZE ((size_t)4095 * 1024 * 1024)  /* 32-bit offsets */
#define SHD_MAX_KEY 65535
#define SHD_MAX_NAME 63
#define SHD_MAX_DICTS 64

/* Value types: they keep Lua's subtypes. A list holds values of the others. */
enum shd_type { SHD_NIL = 0, SHD_STR, SHD_INT, SHD_NUM, SHD_BOOL, SHD_LIST };

struct shd_val {
  int type;                   /* enum shd_type */
  const char *s;              /* SHD_STR */
  size_t len;                 /* SHD_STR: its length */
  int64_t i;                  /* SHD_INT */
  double n;                   /* SHD_NUM */
  int b;                      /* SHD_BOOL */
};

/* Results: 0 or one of these. */
#define SHD_OK        0
#define SHD_NOTFOUND  (-1)
#define SHD_EXISTS    (-2)
#define SHD_NOMEM     (-3)
#define SHD_NAN       (-4)    /* incr on a value that is not a number */
#define SHD_AGAIN     (-5)    /* get: the caller's buffer is too small */
#define SHD_BADKEY    (-6)    /* empty or too long */
#define SHD_BADTTL    (-7)
#define SHD_LOCK      (-8)    /* the mutex cannot be taken */
#define SHD_NOTLIST   (-9)    /* a list operation on a plain value */
#define SHD_ISLIST    (-10)   /* a value operation (get, incr) on a list */

/* Store modes. */
enum shd_mode { SHD_SET, SHD_ADD, SHD_REPLACE };

struct shdict;

/* Maps and formats a zone of size bytes; NULL with the reason in err. */
struct shdict *shdict_create (size_t size, char *err, size_t errlen);
void shdict_destroy (struct shdict *d);

/*
** Fills v with key's value. A string is copied into buf; if it holds
** more than bufsize bytes the result is SHD_AGAIN with v->len set to its
** length (call again with a bigger buffer). SHD_NOTFOUND if absent or
** expired.
*/
int shdict_get (struct shdict *d, const char *key, size_t klen,
                struct shd_val *v, char *buf, size_t bufsize);

/*
** set, add (SHD_EXISTS if present), replace (SHD_NOTFOUND if absent).
** ttl in seconds, 0 = never. A SHD_NIL value deletes (set) the key.
** *forcible: 1 if items that had not expired were evicted for room.
*/
int shdict_store (struct shdict *d, enum shd_mode mode, const char *key,
                  size_t klen, const struct shd_val *v, double ttl,
                  int *forcible);

/*
** Adds delta (SHD_INT or SHD_NUM) to the number at key, atomically; the
** result in *out. Absent: SHD_NOTFOUND, unless init (not NULL) is given,
** then the key is created as init + delta with init_ttl. SHD_NAN if the
** value is not a number. Integer + integer stays an integer (wrapping).
*/
int shdict_incr (struct shdict *d, const char *key, size_t klen,
                 const struct shd_val *delta, const struct shd_val *init,
                 double init_ttl, struct shd_val *out, int *forcible);

int shdict_delete (struct shdict *d, const char *key, size_t klen);

/*
** Lists, as OpenResty's lpush/rpush/lpop/rpop/llen: a key holds a list
** or a value, never both (SHD_NOTLIST; get and incr on a list give
** SHD_ISLIST). A list is one item, evicted and expired like the others
** (set and delete replace or drop it); pushing to an absent key makes a
** list without expiry, and popping its last value removes the key.
** push: v (not nil, not a list) at the left or right end; the new length
** in *len. pop: the value at that end into v, a string copied into buf
** as shdict_get does (SHD_AGAIN: nothing was removed); SHD_NOTFOUND for
** an absent key. llen: the length in *len, 0 for an absent key.
*/
int shdict_push (struct shdict *d, int left, const char *key, size_t klen,
                 const struct shd_val *v, long *len, int *forcible);
int shdict_pop (struct shdict *d, int left, const char *key, size_t klen,
                struct shd_val *v, char *buf, size_t bufsize);
int shdict_llen (struct shdict *d, const char *key, size_t klen, long *len);

/* Seconds left in *secs (0: never expires), or SHD_NOTFOUND. */
int shdict_ttl (struct shdict *d, const char *key, size_t klen,
                double *secs);

/*
** Calls fn for up to max live keys (0: all), most recently used first,
** with the lock held: fn must not block or call back into d. A non-zero
** return from fn stops the walk. Returns the number of keys given.
*/
int shdict_keys (struct shdict *d, int max,
                 int (*fn) (void *ud, const char *key, size_t klen),
                 void *ud);

void shdict_flush_all (struct shdict *d);

/* Bytes in free blocks (headers included), and the heap's size. */
size_t shdict_free_space (struct shdict *d);
size_t shdict_capacity (struct shdict *d);
/* Live and expired items held. */
size_t shdict_count (struct shdict *d);

const char *shdict_strerror (int rc);

/*
** The process-wide registry of named dictionaries, filled before the
** workers are forked (not thread-safe to define; lookups are read-only).
*/
int shdict_define (const char *name, size_t size, char *err, size_t errlen);
struct shdict *shdict_lookup (const char *name);
int shdict_ndicts (void);
const char *shdict_name_at (int i);
struct shdict *shdict_at (int i);

/* For tests: checks every invariant of the zone; 0 or -1. */
int shdict_verify (struct shdict *d);
/*
** For tests: takes the lock and, if dirty, marks the zone as being
** modified, and returns without unlocking (a child then _exits).
*/
int shdict_debug_lock (struct shdict *d, int dirty);
void shdict_debug_unlock (struct shdict *d);
/* How many times a dead holder's lock was repaired, and of those, flushed. */
unsigned shdict_recoveries (struct shdict *d, unsigned *flushes);

#endif
