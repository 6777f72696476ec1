/*
** test_sslmem.c -- OpenSSL's allocator (sslmem.c), through OpenSSL's own
** entry points: blocks of every small size and of the big ones are
** aligned, apart and keep what is written in them; realloc keeps the
** contents; a freed handshake-sized run is kept as it is for the next one
** (no page is given back at a free) until sslmem_trim gives it back;
** four threads taking and freeing blocks at once spoil none. Under
** AddressSanitizer or valgrind the allocator is off (OpenSSL's blocks
** are malloc's): the tests that look at its runs say so and pass, the
** others check what malloc promises.
*/
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include <openssl/crypto.h>

#include "sslmem.h"
#include "test.h"

static void fill (unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed * 31u + i * 7u);
}

static int intact (const unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != (unsigned char)(seed * 31u + i * 7u)) return 0;
  return 1;
}

static int zeros (const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0) return 0;
  return 1;
}


TEST(active_outside_sanitizers) {
#if defined(__SANITIZE_ADDRESS__)
  ASSERT_EQ(sslmem_active(), 0);
#else
  const char *preload = getenv("LD_PRELOAD");
  if (preload != NULL && strstr(preload, "valgrind") != NULL) {
    ASSERT_EQ(sslmem_active(), 0);
    return;
  }
  ASSERT_EQ(sslmem_active(), 1);
#endif
}


/* 24 blocks of each size from 1 to 600 bytes, all alive at once. */
TEST(small_blocks_apart_and_aligned) {
  enum { PER = 24, MAXN = 600 };
  static unsigned char *b[MAXN + 1][PER];
  for (size_t n = 1; n <= MAXN; n++)
    for (int k = 0; k < PER; k++) {
      b[n][k] = OPENSSL_malloc(n);
      ASSERT(b[n][k] != NULL);
      ASSERT_EQ((uintptr_t)b[n][k] % 16, 0);
      fill(b[n][k], n, (unsigned)(n * PER + (size_t)k));
    }
  for (size_t n = 1; n <= MAXN; n++)
    for (int k = 0; k < PER; k++) {
      ASSERT(intact(b[n][k], n, (unsigned)(n * PER + (size_t)k)));
      OPENSSL_free(b[n][k]);
    }
}


TEST(big_blocks) {
  static const size_t sizes[] = { 513, 4096, 8192, 8193, 16389, 17000,
                                  32768, 32769, 100000 };
  enum { N = sizeof sizes / sizeof sizes[0] };
  unsigned char *b[N][3];
  for (size_t i = 0; i < N; i++)
    for (int k = 0; k < 3; k++) {
      ASSERT((b[i][k] = OPENSSL_malloc(sizes[i])) != NULL);
      ASSERT_EQ((uintptr_t)b[i][k] % 16, 0);
      fill(b[i][k], sizes[i], (unsigned)(i * 3 + (size_t)k));
    }
  for (size_t i = 0; i < N; i++)
    for (int k = 0; k < 3; k++) {
      ASSERT(intact(b[i][k], sizes[i], (unsigned)(i * 3 + (size_t)k)));
      OPENSSL_free(b[i][k]);
    }
}


TEST(realloc_keeps_contents) {
  unsigned char *p = OPENSSL_malloc(100);
  ASSERT(p != NULL);
  fill(p, 100, 5);
  ASSERT((p = OPENSSL_realloc(p, 300)) != NULL);    /* a bigger class */
  ASSERT(intact(p, 100, 5));
  fill(p, 300, 6);
  ASSERT((p = OPENSSL_realloc(p, 20000)) != NULL);  /* a run of pages */
  ASSERT(intact(p, 300, 6));
  fill(p, 20000, 7);
  ASSERT((p = OPENSSL_realloc(p, 2000)) != NULL);   /* malloc's size */
  ASSERT(intact(p, 2000, 7));
  ASSERT((p = OPENSSL_realloc(p, 40)) != NULL);     /* small again */
  ASSERT(intact(p, 40, 7));
  ASSERT((p = OPENSSL_realloc(p, 33)) != NULL);
  ASSERT(intact(p, 33, 7));
  OPENSSL_free(p);
  OPENSSL_free(NULL);                             /* as free(NULL) */
}


/*
** A TLS connection frees and takes its ~17 KB record buffers with every
** message: a freed run waits whole, pages and all, and the next block of
** its size is that run again; only sslmem_trim gives its pages back.
*/
TEST(a_freed_run_waits_until_trim) {
  unsigned char *p, *q;
  if (!sslmem_active()) {
    printf("# sslmem is off here: malloc's blocks, no runs to look at\n");
    return;
  }
  ASSERT((p = OPENSSL_malloc(17000)) != NULL);
  ASSERT_EQ((uintptr_t)p % 4096, 0);
  fill(p, 17000, 9);
  OPENSSL_free(p);
  ASSERT((q = OPENSSL_malloc(17000)) == p);   /* the same run, */
  ASSERT(intact(q, 17000, 9));                /* its pages still there */
  OPENSSL_free(q);
  sslmem_trim();
  ASSERT((q = OPENSSL_malloc(17000)) == p);   /* the same addresses, */
  ASSERT(zeros(q, 17000));                    /* fresh pages */
  OPENSSL_free(q);
}


/* Four threads, each with 64 live blocks of sizes from 1 B to 20 KB. */
enum { SLOTS = 64, ROUNDS = 20000 };

static void *churn (void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg * 2654435761u + 1;
  unsigned char *live[SLOTS] = { 0 };
  size_t len[SLOTS] = { 0 };
  unsigned tag[SLOTS] = { 0 };
  intptr_t bad = 0;
  for (unsigned r = 0; r < ROUNDS && !bad; r++) {
    unsigned s;
    seed = seed * 1103515245u + 12345u;
    s = (seed >> 8) % SLOTS;
    if (live[s] != NULL) {
      if (!intact(live[s], len[s], tag[s])) bad = 1;
      OPENSSL_free(live[s]);
    }
    len[s] = (seed >> 4) % 8 == 0 ? 8193 + (seed >> 12) % 12000
                                  : 1 + (seed >> 12) % 600;
    tag[s] = seed;
    if ((live[s] = OPENSSL_malloc(len[s])) == NULL) bad = 1;
    else fill(live[s], len[s], tag[s]);
  }
  for (int s = 0; s < SLOTS; s++)
    if (live[s] != NULL) {
      if (!intact(live[s], len[s], tag[s])) bad = 1;
      OPENSSL_free(live[s]);
    }
  return (void *)bad;
}

TEST(threads_at_once) {
  pthread_t th[4];
  for (uintptr_t i = 0; i < 4; i++)
    ASSERT_EQ(pthread_create(&th[i], NULL, churn, (void *)i), 0);
  for (int i = 0; i < 4; i++) {
    void *bad;
    ASSERT_EQ(pthread_join(th[i], &bad), 0);
    ASSERT(bad == NULL);
  }
  sslmem_trim();
}


int main (void) {
  sslmem_init();  /* before anything calls OpenSSL */
  RUN(active_outside_sanitizers);
  RUN(small_blocks_apart_and_aligned);
  RUN(big_blocks);
  RUN(realloc_keeps_contents);
  RUN(a_freed_run_waits_until_trim);
  RUN(threads_at_once);
  return DONE();
}
