/* test_shdict.c -- shared dictionaries: operations, eviction, processes,
** threads, and a lock holder that dies. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "shdict.h"
#include "test.h"

static char errbuf[256];


static struct shd_val S (const char *s) {
  struct shd_val v = {SHD_STR, s, strlen(s), 0, 0, 0};
  return v;
}
static struct shd_val I (int64_t i) {
  struct shd_val v = {SHD_INT, NULL, 0, i, 0, 0};
  return v;
}
static struct shd_val N (double n) {
  struct shd_val v = {SHD_NUM, NULL, 0, 0, n, 0};
  return v;
}
static struct shd_val Bo (int b) {
  struct shd_val v = {SHD_BOOL, NULL, 0, 0, 0, b};
  return v;
}


static int set (struct shdict *d, const char *k, struct shd_val v,
                double ttl) {
  int forcible;
  return shdict_store(d, SHD_SET, k, strlen(k), &v, ttl, &forcible);
}


static int get (struct shdict *d, const char *k, struct shd_val *v,
                char *buf) {
  return shdict_get(d, k, strlen(k), v, buf, 256);
}


static void sleep_ms (int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}


TEST(types_round_trip) {
  struct shdict *d = shdict_create(64 * 1024, errbuf, sizeof errbuf);
  struct shd_val v;
  char buf[256];
  ASSERT(d != NULL);
  ASSERT_EQ(set(d, "s", S("hello"), 0), 0);
  ASSERT_EQ(set(d, "i", I(-42), 0), 0);
  ASSERT_EQ(set(d, "n", N(1.5), 0), 0);
  ASSERT_EQ(set(d, "t", Bo(1), 0), 0);
  ASSERT_EQ(set(d, "f", Bo(0), 0), 0);
  ASSERT_EQ(set(d, "e", S(""), 0), 0);
  ASSERT_EQ(get(d, "s", &v, buf), 0);
  ASSERT(v.type == SHD_STR && v.len == 5 && memcmp(v.s, "hello", 5) == 0);
  ASSERT_EQ(get(d, "i", &v, buf), 0);
  ASSERT(v.type == SHD_INT && v.i == -42);
  ASSERT_EQ(get(d, "n", &v, buf), 0);
  ASSERT(v.type == SHD_NUM && v.n == 1.5);
  ASSERT_EQ(get(d, "t", &v, buf), 0);
  ASSERT(v.type == SHD_BOOL && v.b == 1);
  ASSERT_EQ(get(d, "f", &v, buf), 0);
  ASSERT(v.type == SHD_BOOL && v.b == 0);
  ASSERT_EQ(get(d, "e", &v, buf), 0);
  ASSERT(v.type == SHD_STR && v.len == 0);
  ASSERT_EQ(get(d, "missing", &v, buf), SHD_NOTFOUND);
  ASSERT_EQ(shdict_get(d, "", 0, &v, buf, 256), SHD_BADKEY);
  /* a set to nil deletes */
  {
    struct shd_val nil = {SHD_NIL, NULL, 0, 0, 0, 0};
    ASSERT_EQ(set(d, "s", nil, 0), 0);
    ASSERT_EQ(get(d, "s", &v, buf), SHD_NOTFOUND);
  }
  /* a value bigger than the buffer: SHD_AGAIN with its length */
  {
    char big[1000];
    struct shd_val bv;
    memset(big, 'x', sizeof big);
    bv = S("");
    bv.s = big;
    bv.len = sizeof big;
    ASSERT_EQ(set(d, "big", bv, 0), 0);
    ASSERT_EQ(get(d, "big", &v, buf), SHD_AGAIN);
    ASSERT_EQ(v.len, sizeof big);
  }
  ASSERT_EQ(shdict_verify(d), 0);
  shdict_destroy(d);
}


TEST(add_replace_delete) {
  struct shdict *d = shdict_create(64 * 1024, errbuf, sizeof errbuf);
  struct shd_val v = S("a"), w = S("b"), r;
  char buf[256];
  int f;
  ASSERT_EQ(shdict_store(d, SHD_REPLACE, "k", 1, &v, 0, &f), SHD_NOTFOUND);
  ASSERT_EQ(shdict_store(d, SHD_ADD, "k", 1, &v, 0, &f), 0);
  ASSERT_EQ(shdict_store(d, SHD_ADD, "k", 1, &w, 0, &f), SHD_EXISTS);
  ASSERT_EQ(get(d, "k", &r, buf), 0);
  ASSERT(r.len == 1 && r.s[0] == 'a');
  ASSERT_EQ(shdict_store(d, SHD_REPLACE, "k", 1, &w, 0, &f), 0);
  ASSERT_EQ(get(d, "k", &r, buf), 0);
  ASSERT(r.len == 1 && r.s[0] == 'b');
  ASSERT_EQ(shdict_delete(d, "k", 1), 0);
  ASSERT_EQ(get(d, "k", &r, buf), SHD_NOTFOUND);
  ASSERT_EQ(shdict_delete(d, "k", 1), 0);
  ASSERT_EQ(shdict_count(d), 0);
  ASSERT_EQ(shdict_free_space(d), shdict_capacity(d));
  ASSERT_EQ(shdict_verify(d), 0);
  shdict_destroy(d);
}


TEST(incr) {
  struct shdict *d = shdict_create(64 * 1024, errbuf, sizeof errbuf);
  struct shd_val one = I(1), half = N(0.5), init = I(10), out;
  int f;
  ASSERT_EQ(shdict_incr(d, "c", 1, &one, NULL, 0, &out, &f), SHD_NOTFOUND);
  ASSERT_EQ(shdict_incr(d, "c", 1, &one, &init, 0, &out, &f), 0);
  ASSERT(out.type == SHD_INT && out.i == 11);
  ASSERT_EQ(shdict_incr(d, "c", 1, &one, &init, 0, &out, &f), 0);
  ASSERT(out.type == SHD_INT && out.i == 12);
  ASSERT_EQ(shdict_incr(d, "c", 1, &half, NULL, 0, &out, &f), 0);
  ASSERT(out.type == SHD_NUM && out.n == 12.5);
  ASSERT_EQ(set(d, "s", S("x"), 0), 0);
  ASSERT_EQ(shdict_incr(d, "s", 1, &one, NULL, 0, &out, &f), SHD_NAN);
  ASSERT_EQ(set(d, "m", I(INT64_MAX), 0), 0);
  ASSERT_EQ(shdict_incr(d, "m", 1, &one, NULL, 0, &out, &f), 0);
  ASSERT(out.type == SHD_INT && out.i == INT64_MIN);  /* wraps, as Lua */
  ASSERT_EQ(shdict_verify(d), 0);
  shdict_destroy(d);
}


TEST(ttl_expiry) {
  struct shdict *d = shdict_create(64 * 1024, errbuf, sizeof errbuf);
  struct shd_val v, one = I(1), out;
  char buf[256];
  double secs;
  int f;
  ASSERT_EQ(set(d, "short", S("x"), 0.05), 0);
  ASSERT_EQ(set(d, "long", S("y"), 0), 0);
  ASSERT_EQ(set(d, "bad", S("y"), -1), SHD_BADTTL);
  ASSERT_EQ(shdict_ttl(d, "short", 5, &secs), 0);
  ASSERT(secs > 0 && secs <= 0.05);
  ASSERT_EQ(shdict_ttl(d, "long", 4, &secs), 0);
  ASSERT(secs == 0);
  ASSERT_EQ(shdict_ttl(d, "none", 4, &secs), SHD_NOTFOUND);
  sleep_ms(80);
  ASSERT_EQ(get(d, "short", &v, buf), SHD_NOTFOUND);
  ASSERT_EQ(shdict_ttl(d, "short", 5, &secs), SHD_NOTFOUND);
  ASSERT_EQ(get(d, "long", &v, buf), 0);
  /* an expired item is absent for add and incr */
  ASSERT_EQ(set(d, "e", I(5), 0.02), 0);
  sleep_ms(40);
  ASSERT_EQ(shdict_incr(d, "e", 1, &one, NULL, 0, &out, &f),
            SHD_NOTFOUND);
  ASSERT_EQ(set(d, "a", S("1"), 0.02), 0);
  sleep_ms(40);
  {
    struct shd_val a2 = S("2");
    ASSERT_EQ(shdict_store(d, SHD_ADD, "a", 1, &a2, 0, &f), 0);
  }
  ASSERT_EQ(shdict_verify(d), 0);
  shdict_destroy(d);
}


TEST(lru_eviction) {
  struct shdict *d = shdict_create(8 * 1024, errbuf, sizeof errbuf);
  struct shd_val v, val;
  char key[32], buf[256], payload[200];
  int f, any = 0;
  memset(payload, 'p', sizeof payload);
  val = S("");
  val.s = payload;
  val.len = sizeof payload;
  for (int i = 0; i < 200; i++) {
    snprintf(key, sizeof key, "key%d", i);
    ASSERT_EQ(shdict_store(d, SHD_SET, key, strlen(key), &val, 0, &f), 0);
    any |= f;
    if (i == 5) ASSERT_EQ(f, 0);
    /* keep key0 recently used */
    ASSERT_EQ(get(d, "key0", &v, buf), 0);
  }
  ASSERT(any);
  ASSERT_EQ(get(d, "key1", &v, buf), SHD_NOTFOUND);      /* evicted */
  ASSERT_EQ(get(d, "key0", &v, buf), 0);         /* kept: used */
  ASSERT_EQ(get(d, "key199", &v, buf), 0);     /* the newest */
  ASSERT(shdict_count(d) < 200);
  ASSERT_EQ(shdict_verify(d), 0);
  /* an item bigger than the zone: no memory, nothing evicted */
  {
    size_t n = shdict_count(d);
    static char huge[16 * 1024];
    struct shd_val h = S("");
    h.s = huge;
    h.len = sizeof huge;
    ASSERT_EQ(shdict_store(d, SHD_SET, "huge", 4, &h, 0, &f), SHD_NOMEM);
    ASSERT_EQ(shdict_count(d), n);
    /* one that fits only in the whole zone: evicts everything */
    h.len = shdict_capacity(d) - 100;
    ASSERT_EQ(shdict_store(d, SHD_SET, "huge", 4, &h, 0, &f), 0);
    ASSERT_EQ(f, 1);
    ASSERT_EQ(shdict_count(d), 1);
  }
  ASSERT_EQ(shdict_verify(d), 0);
  shdict_flush_all(d);
  ASSERT_EQ(shdict_count(d), 0);
  ASSERT_EQ(shdict_free_space(d), shdict_capacity(d));
  shdict_destroy(d);
}


TEST(expired_go_before_live) {
  struct shdict *d = shdict_create(8 * 1024, errbuf, sizeof errbuf);
  struct shd_val v, val;
  char key[32], buf[256], payload[300];
  int f, i;
  memset(payload, 'p', sizeof payload);
  val = S("");
  val.s = payload;
  val.len = sizeof payload;
  ASSERT_EQ(set(d, "live", S("1"), 0), 0);
  for (i = 0; ; i++) {  /* fill with short-lived items */
    snprintf(key, sizeof key, "tmp%d", i);
    ASSERT_EQ(shdict_store(d, SHD_SET, key, strlen(key), &val, 0.02, &f), 0);
    if (shdict_free_space(d) < 400) break;
  }
  sleep_ms(40);
  for (int j = 0; j < i; j++) {
    snprintf(key, sizeof key, "new%d", j);
    ASSERT_EQ(shdict_store(d, SHD_SET, key, strlen(key), &val, 0, &f), 0);
    ASSERT_EQ(f, 0);  /* only expired items made room */
  }
  ASSERT_EQ(get(d, "live", &v, buf), 0);
  ASSERT_EQ(shdict_verify(d), 0);
  shdict_destroy(d);
}


struct kctx { int n; char seen[8]; };

static int count_key (void *ud, const char *k, size_t n) {
  struct kctx *c = ud;
  if (n == 1 && k[0] >= 'a' && k[0] < 'a' + 8) c->seen[k[0] - 'a'] = 1;
  c->n++;
  return 0;
}


TEST(keys) {
  struct shdict *d = shdict_create(64 * 1024, errbuf, sizeof errbuf);
  struct kctx c;
  memset(&c, 0, sizeof c);
  ASSERT_EQ(set(d, "a", I(1), 0), 0);
  ASSERT_EQ(set(d, "b", I(1), 0), 0);
  ASSERT_EQ(set(d, "c", I(1), 0.01), 0);
  sleep_ms(30);
  ASSERT_EQ(shdict_keys(d, 0, count_key, &c), 2);
  ASSERT(c.seen[0] && c.seen[1] && !c.seen[2]);
  memset(&c, 0, sizeof c);
  ASSERT_EQ(shdict_keys(d, 1, count_key, &c), 1);
  ASSERT(c.seen[1] && !c.seen[0]);  /* most recent first */
  shdict_destroy(d);
}


/* Random operations against a model, with the invariants checked. */
TEST(random_against_model) {
  enum { NK = 300 };
  struct shdict *d = shdict_create(256 * 1024, errbuf, sizeof errbuf);
  static char model[NK][600];
  static int mlen[NK];
  char key[16], buf[1024];
  unsigned seed = 12345;
  int f;
  for (int i = 0; i < NK; i++) mlen[i] = -1;
  for (int op = 0; op < 40000; op++) {
    int k = (int)(rand_r(&seed) % NK), what = (int)(rand_r(&seed) % 10);
    struct shd_val v;
    snprintf(key, sizeof key, "k%d", k);
    if (what < 5) {
      int len = (int)(rand_r(&seed) % 600);
      memset(model[k], 'a' + op % 26, (size_t)len);
      v = S("");
      v.s = model[k];
      v.len = (size_t)len;
      ASSERT_EQ(shdict_store(d, SHD_SET, key, strlen(key), &v, 0, &f), 0);
      ASSERT_EQ(f, 0);  /* 300 x 650 bytes at most: it all fits */
      mlen[k] = len;
    }
    else if (what < 7) {
      ASSERT_EQ(shdict_delete(d, key, strlen(key)), 0);
      mlen[k] = -1;
    }
    else {
      int rc = shdict_get(d, key, strlen(key), &v, buf, sizeof buf);
      if (mlen[k] < 0) ASSERT_EQ(rc, SHD_NOTFOUND);
      else {
        ASSERT_EQ(rc, 0);
        ASSERT(v.len == (size_t)mlen[k] &&
               memcmp(v.s, model[k], v.len) == 0);
      }
    }
    if (op % 1000 == 0) ASSERT_EQ(shdict_verify(d), 0);
  }
  ASSERT_EQ(shdict_verify(d), 0);
  for (int i = 0; i < NK; i++) {
    snprintf(key, sizeof key, "k%d", i);
    shdict_delete(d, key, strlen(key));
  }
  ASSERT_EQ(shdict_free_space(d), shdict_capacity(d));  /* all merged */
  ASSERT_EQ(shdict_verify(d), 0);
  shdict_destroy(d);
}


TEST(processes_share_and_incr_exactly) {
  enum { NPROC = 4, NINC = 20000 };
  struct shdict *d = shdict_create(64 * 1024, errbuf, sizeof errbuf);
  struct shd_val one = I(1), zero = I(0), out, v;
  char buf[256];
  int f;
  for (int p = 0; p < NPROC; p++) {
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
      for (int i = 0; i < NINC; i++)
        if (shdict_incr(d, "n", 1, &one, &zero, 0, &out, &f) != 0) _exit(1);
      if (set(d, p == 0 ? "from0" : "fromN", S("hi"), 0) != 0) _exit(1);
      _exit(0);
    }
  }
  for (int p = 0; p < NPROC; p++) {
    int st;
    ASSERT(wait(&st) > 0);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  ASSERT_EQ(get(d, "n", &v, buf), 0);
  ASSERT(v.type == SHD_INT && v.i == NPROC * NINC);
  ASSERT_EQ(get(d, "from0", &v, buf), 0);
  ASSERT_EQ(shdict_verify(d), 0);
  shdict_destroy(d);
}


static struct shdict *thr_d;

static void *thr_incr (void *arg) {
  struct shd_val one = I(1), zero = I(0), out;
  int f;
  (void)arg;
  for (int i = 0; i < 20000; i++)
    shdict_incr(thr_d, "t", 1, &one, &zero, 0, &out, &f);
  return NULL;
}


TEST(threads_incr_exactly) {
  pthread_t th[4];
  struct shd_val v;
  char buf[256];
  thr_d = shdict_create(64 * 1024, errbuf, sizeof errbuf);
  ASSERT(thr_d != NULL);
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(pthread_create(&th[i], NULL, thr_incr, NULL), 0);
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  ASSERT_EQ(get(thr_d, "t", &v, buf), 0);
  ASSERT(v.type == SHD_INT && v.i == 80000);
  shdict_destroy(thr_d);
}


/* A child takes the lock and dies holding it. */
static int die_holding (struct shdict *d, int dirty) {
  int st;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (shdict_debug_lock(d, dirty) != 0) _exit(1);
    _exit(0);  /* the lock is still held */
  }
  if (waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}


TEST(dead_reader_keeps_data) {
  struct shdict *d = shdict_create(64 * 1024, errbuf, sizeof errbuf);
  struct shd_val v;
  char buf[256];
  unsigned flushes = 9;
  ASSERT_EQ(set(d, "keep", S("me"), 0), 0);
  ASSERT_EQ(die_holding(d, 0), 0);
  ASSERT_EQ(get(d, "keep", &v, buf), 0);  /* no deadlock, data intact */
  ASSERT_EQ(shdict_recoveries(d, &flushes), 1);
  ASSERT_EQ(flushes, 0);
  ASSERT_EQ(set(d, "more", S("x"), 0), 0);
  ASSERT_EQ(shdict_verify(d), 0);
  shdict_destroy(d);
}


TEST(dead_writer_flushes) {
  struct shdict *d = shdict_create(64 * 1024, errbuf, sizeof errbuf);
  struct shd_val v;
  char buf[256];
  unsigned flushes = 0;
  ASSERT_EQ(set(d, "a", S("1"), 0), 0);
  ASSERT_EQ(set(d, "b", S("2"), 0), 0);
  ASSERT_EQ(die_holding(d, 1), 0);  /* died with the LRU list half-done */
  ASSERT_EQ(get(d, "a", &v, buf), SHD_NOTFOUND);  /* flushed */
  ASSERT_EQ(shdict_recoveries(d, &flushes), 1);
  ASSERT_EQ(flushes, 1);
  ASSERT_EQ(shdict_verify(d), 0);
  ASSERT_EQ(set(d, "a", S("1"), 0), 0);
  ASSERT_EQ(get(d, "a", &v, buf), 0);
  /* a second death, then many processes carry on */
  ASSERT_EQ(die_holding(d, 1), 0);
  ASSERT_EQ(die_holding(d, 0), 0);
  ASSERT_EQ(shdict_recoveries(d, &flushes), 3);
  ASSERT_EQ(flushes, 2);
  ASSERT_EQ(shdict_verify(d), 0);
  shdict_destroy(d);
}


/* A process killed (SIGKILL) at random points while it hammers the zone. */
TEST(killed_writers_never_break_it) {
  struct shdict *d = shdict_create(16 * 1024, errbuf, sizeof errbuf);
  struct shd_val v;
  char buf[256];
  for (int round = 0; round < 20; round++) {
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
      char key[16], val[120];
      int f;
      memset(val, 'v', sizeof val);
      for (unsigned i = 0; ; i++) {
        struct shd_val sv = S("");
        sv.s = val;
        sv.len = i % sizeof val;
        snprintf(key, sizeof key, "k%u", i % 500);
        shdict_store(d, SHD_SET, key, strlen(key), &sv, 0, &f);
        if (i % 3 == 0) shdict_delete(d, key, strlen(key));
      }
    }
    sleep_ms(5 + round % 7);
    kill(pid, SIGKILL);
    ASSERT(waitpid(pid, NULL, 0) == pid);
    ASSERT_EQ(set(d, "after", S("ok"), 0), 0);
    ASSERT_EQ(get(d, "after", &v, buf), 0);
    ASSERT_EQ(shdict_verify(d), 0);
  }
  shdict_destroy(d);
}


TEST(registry) {
  char err[256];
  ASSERT_EQ(shdict_define("cache", 16 * 1024, err, sizeof err), 0);
  ASSERT_EQ(shdict_define("other_1", 16 * 1024, err, sizeof err), 0);
  ASSERT_EQ(shdict_define("cache", 16 * 1024, err, sizeof err), -1);
  ASSERT(strstr(err, "twice") != NULL);
  ASSERT_EQ(shdict_define("bad-name", 16 * 1024, err, sizeof err), -1);
  ASSERT_EQ(shdict_define("", 16 * 1024, err, sizeof err), -1);
  ASSERT_EQ(shdict_define("small", 1024, err, sizeof err), -1);
  ASSERT(strstr(err, "size") != NULL);
  ASSERT(shdict_lookup("cache") != NULL);
  ASSERT(shdict_lookup("other_1") != shdict_lookup("cache"));
  ASSERT(shdict_lookup("nope") == NULL);
  ASSERT_EQ(shdict_ndicts(), 2);
  ASSERT_STR(shdict_name_at(1), "other_1");
}


/* {------------------------------------------------------ lists */

static int push (struct shdict *d, int left, const char *k, struct shd_val v,
                 long *len) {
  int f;
  return shdict_push(d, left, k, strlen(k), &v, len, &f);
}

static int pop (struct shdict *d, int left, const char *k, struct shd_val *v,
                char *buf) {
  return shdict_pop(d, left, k, strlen(k), v, buf, 256);
}


TEST(list_ends_and_types) {
  struct shdict *d = shdict_create(64 * 1024, errbuf, sizeof errbuf);
  struct shd_val v;
  char buf[256];
  long n;
  ASSERT(d != NULL);
  ASSERT_EQ(push(d, 0, "l", S("b"), &n), 0);
  ASSERT_EQ(n, 1);
  ASSERT_EQ(push(d, 0, "l", I(3), &n), 0);
  ASSERT_EQ(push(d, 1, "l", S("a"), &n), 0);
  ASSERT_EQ(push(d, 0, "l", N(0.5), &n), 0);
  ASSERT_EQ(push(d, 1, "l", Bo(1), &n), 0);
  ASSERT_EQ(n, 5);                              /* true a b 3 0.5 */
  ASSERT_EQ(shdict_llen(d, "l", 1, &n), 0);
  ASSERT_EQ(n, 5);
  ASSERT_EQ(shdict_verify(d), 0);
  ASSERT_EQ(pop(d, 1, "l", &v, buf), 0);
  ASSERT(v.type == SHD_BOOL && v.b == 1);
  ASSERT_EQ(pop(d, 0, "l", &v, buf), 0);
  ASSERT(v.type == SHD_NUM && v.n == 0.5);
  ASSERT_EQ(pop(d, 0, "l", &v, buf), 0);
  ASSERT(v.type == SHD_INT && v.i == 3);
  ASSERT_EQ(pop(d, 1, "l", &v, buf), 0);
  ASSERT(v.type == SHD_STR && v.len == 1 && buf[0] == 'a');
  ASSERT_EQ(shdict_verify(d), 0);
  ASSERT_EQ(pop(d, 1, "l", &v, buf), 0);
  ASSERT(v.type == SHD_STR && buf[0] == 'b');
  ASSERT_EQ(pop(d, 1, "l", &v, buf), SHD_NOTFOUND);  /* the key went */
  ASSERT_EQ(shdict_count(d), 0);
  ASSERT_EQ(shdict_llen(d, "l", 1, &n), 0);
  ASSERT_EQ(n, 0);
  ASSERT_EQ(shdict_verify(d), 0);
  shdict_destroy(d);
}


TEST(list_and_value_kept_apart) {
  struct shdict *d = shdict_create(64 * 1024, errbuf, sizeof errbuf);
  struct shd_val v, one = I(1), out;
  char buf[256];
  long n;
  int f;
  ASSERT_EQ(set(d, "v", S("x"), 0), 0);
  ASSERT_EQ(push(d, 1, "v", S("y"), &n), SHD_NOTLIST);
  ASSERT_EQ(pop(d, 0, "v", &v, buf), SHD_NOTLIST);
  ASSERT_EQ(shdict_llen(d, "v", 1, &n), SHD_NOTLIST);
  ASSERT_EQ(get(d, "v", &v, buf), 0);           /* untouched */
  ASSERT(v.type == SHD_STR && buf[0] == 'x');
  ASSERT_EQ(push(d, 1, "l", I(1), &n), 0);
  ASSERT_EQ(get(d, "l", &v, buf), SHD_ISLIST);
  ASSERT_EQ(shdict_incr(d, "l", 1, &one, NULL, 0, &out, &f), SHD_ISLIST);
  ASSERT_EQ(set(d, "l", S("now a value"), 0), 0);  /* set replaces a list */
  ASSERT_EQ(get(d, "l", &v, buf), 0);
  ASSERT_EQ(shdict_delete(d, "v", 1), 0);
  ASSERT_EQ(push(d, 1, "v", S("y"), &n), 0);     /* deleted: a list now */
  ASSERT_STR(shdict_strerror(SHD_NOTLIST), "value not a list");
  ASSERT_EQ(shdict_verify(d), 0);
  shdict_destroy(d);
}


TEST(list_space_and_eviction) {
  struct shdict *d = shdict_create(8 * 1024, errbuf, sizeof errbuf);
  struct shd_val v, big = S("");
  char buf[256], payload[100];
  size_t empty = shdict_free_space(d);
  long n = 0;
  int rc = 0, i;
  memset(payload, 'q', sizeof payload);
  big.s = payload;
  big.len = sizeof payload;
  for (i = 0; i < 10; i++) ASSERT_EQ(push(d, 0, "l", big, &n), 0);
  ASSERT(shdict_free_space(d) < empty - 10 * sizeof payload);
  for (i = 0; i < 9; i++) ASSERT_EQ(pop(d, 1, "l", &v, buf), 0);
  ASSERT(shdict_free_space(d) > empty - 2 * sizeof payload - 200);  /* given back */
  ASSERT_EQ(shdict_verify(d), 0);
  ASSERT_EQ(pop(d, 1, "l", &v, buf), 0);
  ASSERT_EQ(shdict_free_space(d), empty);
  /* a list that cannot grow any more is left whole */
  for (i = 0; i < 200 && (rc = push(d, 0, "l", big, &n)) == 0; i++) {}
  ASSERT_EQ(rc, SHD_NOMEM);
  ASSERT_EQ(shdict_llen(d, "l", 1, &n), 0);
  ASSERT_EQ(n, i);
  ASSERT_EQ(shdict_verify(d), 0);
  /* and it is evicted like any item when room is needed */
  {
    static char more[8 * 1024];
    struct shd_val m = S("");
    m.s = more;
    m.len = shdict_free_space(d) + 100;
    ASSERT_EQ(set(d, "other", m, 0), 0);
  }
  ASSERT_EQ(shdict_llen(d, "l", 1, &n), 0);
  ASSERT_EQ(n, 0);
  ASSERT_EQ(shdict_verify(d), 0);
  shdict_destroy(d);
}


TEST(list_strings_longer_than_the_buffer) {
  struct shdict *d = shdict_create(64 * 1024, errbuf, sizeof errbuf);
  struct shd_val v, s = S("");
  static char longs[1000], back[1000];
  long n;
  memset(longs, 'z', sizeof longs);
  s.s = longs;
  s.len = sizeof longs;
  ASSERT_EQ(push(d, 0, "l", s, &n), 0);
  ASSERT_EQ(shdict_pop(d, 1, "l", 1, &v, back, 10), SHD_AGAIN);
  ASSERT_EQ(v.len, sizeof longs);
  ASSERT_EQ(shdict_llen(d, "l", 1, &n), 0);
  ASSERT_EQ(n, 1);                              /* nothing taken */
  ASSERT_EQ(shdict_pop(d, 1, "l", 1, &v, back, sizeof back), 0);
  ASSERT(memcmp(back, longs, sizeof longs) == 0);
  shdict_destroy(d);
}


/* Lists and values mixed at random, against a model of deques. */
TEST(list_random_against_model) {
  enum { NK = 50, CAP = 64 };
  struct shdict *d = shdict_create(256 * 1024, errbuf, sizeof errbuf);
  static int64_t dq[NK][CAP];
  static int first[NK], len[NK], isval[NK];
  char key[16], buf[256];
  unsigned seed = 777;
  for (int op = 0; op < 60000; op++) {
    int k = (int)(rand_r(&seed) % NK), what = (int)(rand_r(&seed) % 12);
    struct shd_val v;
    long n;
    int rc;
    snprintf(key, sizeof key, "l%d", k);
    if (what < 4 && len[k] < CAP) {          /* push */
      int left = what & 1;
      rc = push(d, left, key, I(op), &n);
      if (isval[k]) { ASSERT_EQ(rc, SHD_NOTLIST); continue; }
      ASSERT_EQ(rc, 0);
      if (left) { first[k] = (first[k] + CAP - 1) % CAP; dq[k][first[k]] = op; }
      else dq[k][(first[k] + len[k]) % CAP] = op;
      ASSERT_EQ(n, ++len[k]);
    }
    else if (what < 8) {                     /* pop */
      int left = what & 1;
      rc = pop(d, left, key, &v, buf);
      if (isval[k]) { ASSERT_EQ(rc, SHD_NOTLIST); continue; }
      if (len[k] == 0) { ASSERT_EQ(rc, SHD_NOTFOUND); continue; }
      ASSERT_EQ(rc, 0);
      ASSERT(v.type == SHD_INT);
      if (left) {
        ASSERT_EQ(v.i, dq[k][first[k]]);
        first[k] = (first[k] + 1) % CAP;
      }
      else ASSERT_EQ(v.i, dq[k][(first[k] + len[k] - 1) % CAP]);
      len[k]--;
    }
    else if (what == 8) {                    /* llen */
      rc = shdict_llen(d, key, strlen(key), &n);
      if (isval[k]) ASSERT_EQ(rc, SHD_NOTLIST);
      else { ASSERT_EQ(rc, 0); ASSERT_EQ(n, len[k]); }
    }
    else if (what == 9) {                    /* a value replaces it */
      ASSERT_EQ(set(d, key, S("v"), 0), 0);
      isval[k] = 1;
      len[k] = first[k] = 0;
    }
    else if (what == 10) {
      ASSERT_EQ(shdict_delete(d, key, strlen(key)), 0);
      isval[k] = 0;
      len[k] = first[k] = 0;
    }
    else {
      rc = get(d, key, &v, buf);
      ASSERT_EQ(rc, isval[k] ? 0 : len[k] > 0 ? SHD_ISLIST : SHD_NOTFOUND);
    }
    if (op % 500 == 0) ASSERT_EQ(shdict_verify(d), 0);
  }
  ASSERT_EQ(shdict_verify(d), 0);
  shdict_flush_all(d);
  ASSERT_EQ(shdict_free_space(d), shdict_capacity(d));
  shdict_destroy(d);
}


TEST(list_processes_push_and_pop_exactly) {
  enum { NPUSH = 4, NPOP = 2, EACH = 2000 };
  struct shdict *d = shdict_create(1024 * 1024, errbuf, sizeof errbuf);
  static unsigned char seen[NPUSH * EACH];
  int pipes[NPOP][2];
  for (int p = 0; p < NPUSH; p++) {
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
      long n;
      for (int i = 0; i < EACH; i++)
        if (push(d, p & 1, "q", I(p * EACH + i), &n) != 0) _exit(1);
      _exit(0);
    }
  }
  for (int p = 0; p < NPOP; p++) {
    pid_t pid;
    ASSERT(pipe(pipes[p]) == 0);
    pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
      struct shd_val v;
      char buf[256];
      int idle = 0;
      close(pipes[p][0]);
      while (idle < 200) {  /* until the pushers are long done */
        int rc = pop(d, p & 1, "q", &v, buf);
        if (rc == SHD_NOTFOUND) { idle++; sleep_ms(1); continue; }
        if (rc != 0 || v.type != SHD_INT) _exit(1);
        idle = 0;
        if (write(pipes[p][1], &v.i, sizeof v.i) != sizeof v.i) _exit(1);
      }
      _exit(0);
    }
    close(pipes[p][1]);
  }
  for (int p = 0; p < NPOP; p++) {
    int64_t x;
    while (read(pipes[p][0], &x, sizeof x) == sizeof x) {
      ASSERT(x >= 0 && x < NPUSH * EACH);
      ASSERT_EQ(seen[x], 0);                     /* never twice */
      seen[x] = 1;
    }
    close(pipes[p][0]);
  }
  for (int p = 0; p < NPUSH + NPOP; p++) {
    int st;
    ASSERT(wait(&st) > 0);
    ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  }
  for (int i = 0; i < NPUSH * EACH; i++) ASSERT_EQ(seen[i], 1);  /* all */
  ASSERT_EQ(shdict_count(d), 0);
  ASSERT_EQ(shdict_verify(d), 0);
  shdict_destroy(d);
}

/* }------------------------------------------------------ */


int main (void) {
  log_setup(LOG_ERROR, 0);  /* the repairs log warnings */
  RUN(types_round_trip);
  RUN(add_replace_delete);
  RUN(incr);
  RUN(ttl_expiry);
  RUN(lru_eviction);
  RUN(expired_go_before_live);
  RUN(keys);
  RUN(list_ends_and_types);
  RUN(list_and_value_kept_apart);
  RUN(list_space_and_eviction);
  RUN(list_strings_longer_than_the_buffer);
  RUN(list_random_against_model);
  RUN(list_processes_push_and_pop_exactly);
  RUN(random_against_model);
  RUN(processes_share_and_incr_exactly);
  RUN(threads_incr_exactly);
  RUN(dead_reader_keeps_data);
  RUN(dead_writer_flushes);
  RUN(killed_writers_never_break_it);
  RUN(registry);
  return DONE();
}
