/* test_buf.c -- connection buffers, the block pool and the timer heap. */
#include <stdlib.h>
#include "buf.h"
#include "evloop.h"
#include "test.h"


TEST(append_consume) {
  struct bufpool p;
  struct buf b = {0};
  bufpool_init(&p);
  ASSERT_EQ(buf_append(&b, "hello\nworld", 11, &p), 0);
  ASSERT_EQ(buf_len(&b), 11u);
  ASSERT_EQ(buf_findnl(&b, 0), 5);
  ASSERT_EQ(buf_findnl(&b, 6), -1);
  buf_consume(&b, 6);
  ASSERT(memcmp(buf_head(&b), "world", 5) == 0);
  buf_consume(&b, 5);
  ASSERT_EQ(buf_len(&b), 0u);
  buf_release(&b, &p);
  ASSERT(b.data == NULL);
  ASSERT_EQ(p.n, 1);  /* the block went back to the pool */
  ASSERT_EQ(buf_append(&b, "x", 1, &p), 0);
  ASSERT_EQ(p.n, 0);  /* and was taken from it again */
  buf_free(&b, &p);
  bufpool_free(&p);
}


TEST(grow_keeps_bytes) {
  struct bufpool p;
  struct buf b = {0};
  char *big = malloc(3 * BUF_CHUNK);
  bufpool_init(&p);
  for (size_t i = 0; i < 3 * BUF_CHUNK; i++) big[i] = (char)('a' + i % 26);
  ASSERT_EQ(buf_append(&b, "ab", 2, &p), 0);
  buf_consume(&b, 1);
  ASSERT_EQ(buf_append(&b, big, 3 * BUF_CHUNK, &p), 0);
  ASSERT_EQ(buf_len(&b), 3u * BUF_CHUNK + 1);
  ASSERT(buf_head(&b)[0] == 'b');
  ASSERT(memcmp(buf_head(&b) + 1, big, 3 * BUF_CHUNK) == 0);
  ASSERT_EQ(buf_findnl(&b, 0), -1);
  buf_free(&b, &p);
  ASSERT(b.data == NULL);
  ASSERT_EQ(p.n, 1);  /* the first block was pooled; grown storage freed */
  free(big);
  bufpool_free(&p);
}


TEST(reserve_slides) {
  struct bufpool p;
  struct buf b = {0};
  char chunk[BUF_CHUNK];
  bufpool_init(&p);
  memset(chunk, 'x', sizeof chunk);
  ASSERT_EQ(buf_append(&b, chunk, BUF_CHUNK, &p), 0);
  buf_consume(&b, BUF_CHUNK - 10);
  ASSERT_EQ(buf_reserve(&b, 100, &p), 0);
  ASSERT_EQ(b.cap, (size_t)BUF_CHUNK);  /* slid to the front, not grown */
  ASSERT_EQ(b.start, 0u);
  ASSERT_EQ(buf_len(&b), 10u);
  buf_free(&b, &p);
  bufpool_free(&p);
}


TEST(big_blocks_pooled) {
  struct bufpool p;
  struct buf b = {0};
  void *first;
  bufpool_init(&p);
  ASSERT_EQ(buf_reserve(&b, BUF_BIG, &p), 0);   /* a 64 KiB read's room */
  ASSERT_EQ(b.cap, (size_t)BUF_BIG);
  first = b.data;
  ASSERT_EQ(buf_append(&b, "GET", 3, &p), 0);
  buf_consume(&b, 3);
  buf_release(&b, &p);
  ASSERT(b.data == NULL);
  ASSERT_EQ(p.nbig, 1);
  ASSERT_EQ(p.n, 0);
  ASSERT_EQ(buf_reserve(&b, BUF_BIG, &p), 0);   /* the same block again */
  ASSERT(b.data == first);
  ASSERT_EQ(p.nbig, 0);
  buf_free(&b, &p);
  ASSERT_EQ(buf_reserve(&b, BUF_BIG + 1, &p), 0);  /* larger: not pooled */
  ASSERT(b.cap > (size_t)BUF_BIG);
  buf_free(&b, &p);
  ASSERT_EQ(p.nbig, 1);
  bufpool_free(&p);
  ASSERT_EQ(p.nbig, 0);
}


static int fired[8], nfired;

static void on_fire (struct evloop *loop, struct timer *t) {
  (void)loop;
  fired[nfired++] = (int)(long)t->data;
}


TEST(timer_heap_order) {
  struct evloop *loop = evloop_new();
  struct timer t[6];
  double when[6] = {5, 1, 4, 2, 6, 3};
  ASSERT(loop != NULL);
  nfired = 0;
  for (int i = 0; i < 6; i++) {
    timer_init(&t[i], on_fire, (void *)(long)i);
    timer_start(loop, &t[i], evloop_now(loop) - 100 + when[i]);
  }
  timer_stop(loop, &t[2]);  /* when = 4 never fires */
  ASSERT(!timer_armed(&t[2]));
  ASSERT_EQ(evloop_timer_count(loop), 5);
  evloop_run_once(loop, 0);
  ASSERT_EQ(nfired, 5);
  ASSERT_EQ(fired[0], 1);
  ASSERT_EQ(fired[1], 3);
  ASSERT_EQ(fired[2], 5);
  ASSERT_EQ(fired[3], 0);
  ASSERT_EQ(fired[4], 4);
  ASSERT_EQ(evloop_timer_count(loop), 0);
  evloop_free(loop);
}


/* Fires in order of when; records the when it saw. */
static double seen[2000];
static int nseen;

static void on_seen (struct evloop *loop, struct timer *t) {
  (void)loop;
  seen[nseen++] = t->when;
}


/*
** Many timers armed, re-armed and stopped in a pseudo-random order (the
** heap is linked through them: every shape of the tree gets exercised)
** fire exactly once each, in order of when.
*/
TEST(timer_heap_churn) {
  enum { N = 2000 };
  static struct timer t[N];
  struct evloop *loop = evloop_new();
  unsigned seed = 12345;
  double base = evloop_now(loop) - 1e6;
  int armed = 0;
  ASSERT(loop != NULL);
  for (int i = 0; i < N; i++) timer_init(&t[i], on_seen, NULL);
  for (int round = 0; round < 20000; round++) {
    int i;
    seed = seed * 1103515245u + 12345u;
    i = (int)((seed >> 8) % N);
    if ((seed >> 4) % 3 == 0) {
      armed -= timer_armed(&t[i]);
      timer_stop(loop, &t[i]);
    }
    else {
      armed += !timer_armed(&t[i]);
      timer_start(loop, &t[i], base + (double)((seed >> 12) % 5000));
    }
    ASSERT_EQ(evloop_timer_count(loop), armed);
  }
  nseen = 0;
  evloop_run_once(loop, 0);
  ASSERT_EQ(nseen, armed);
  for (int i = 1; i < nseen; i++) ASSERT(seen[i - 1] <= seen[i]);
  for (int i = 0; i < N; i++) ASSERT(!timer_armed(&t[i]));
  ASSERT_EQ(evloop_timer_count(loop), 0);
  evloop_free(loop);
}


int main (void) {
  RUN(append_consume);
  RUN(grow_keeps_bytes);
  RUN(reserve_slides);
  RUN(big_blocks_pooled);
  RUN(timer_heap_order);
  RUN(timer_heap_churn);
  return DONE();
}
