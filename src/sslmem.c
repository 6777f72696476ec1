/*
** sslmem.c -- OpenSSL's blocks: small ones without malloc's chunk
** headers, big ones out of malloc's heap.
**
** An idle TLS connection holds some thirty blocks of OpenSSL's under 512
** bytes; malloc gives each a header and rounds it up to 16 (at least 32
** bytes). Here they come from pages of one size class each (multiples of
** 16). And a handshake makes and drops a dozen buffers of ~16.5 KB: in
** malloc's heap, a burst of handshakes leaves the connections' long-lived
** blocks scattered between their holes (pages partly used after
** malloc_trim); here each is a run of pages of its own, kept for the next
** one. So 5,000 idle TLS connections of scripts/http.lua hold ~300 B of
** RSS less each (~15.3 KB). Blocks of 513 B to 8 KB, and over 32 KB, are
** malloc's.
**
** All in one reserved range of addresses, so a pointer is told as ours by
** its address alone. A run whose blocks are all free waits on a spare
** list, and sslmem_trim (called with malloc_trim) gives the memory of the
** spare runs back to the system. Never at a free: a TLS connection frees
** and takes its record buffers again with every message it reads or
** writes (SSL_MODE_RELEASE_BUFFERS), and pages given back would fault in
** again each time (a 64-byte TLS echo cost twice the CPU). One lock:
** OpenSSL frees from any thread (the thread model).
**
** Not under AddressSanitizer or valgrind (they must see OpenSSL's
** blocks), and not when OpenSSL allocated before sslmem_init (it then
** refuses new functions).
*/
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "sslmem.h"
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#define SM_OFF 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SM_OFF 1
#endif
#endif

#define SM_PAGE 4096
#define SM_STEP 16
#define SM_MAX 512                    /* classes of SM_STEP up to this */
#define SM_CLASSES (SM_MAX / SM_STEP)
#define SM_BIG 8                      /* pages of a big block, at most */
#define SM_BIG_MIN 8193               /* bigger: a run of pages of its own */
#define SM_ARENA ((size_t)1 << 30)    /* reserved, touched as used */
#define SM_PAGES (SM_ARENA / SM_PAGE)

/*
** A run of pages: a page carved into blocks of one class, or the pages of
** one big block (class SM_CLASSES + its pages).
*/
struct smpage {
  void *free;                 /* its free blocks, linked through them */
  struct smpage *next, *prev; /* its class's runs with a free block, or
                                 the empty ones */
  struct smpage *run;         /* the run's first page (every page's) */
  unsigned short used;        /* its blocks in use */
  unsigned char cls;
  unsigned char npages;       /* pages of the run */
  unsigned char idle;         /* all its blocks free (on a spare list) */
  unsigned char released;     /* ... and given back (sslmem_trim) */
};

static char *base;            /* the arena: SM_PAGES pages */
static struct smpage *pages;  /* one per page of it */
static size_t top;            /* pages ever used */
/* runs with a free block, by class; empty runs: pages any small class
** takes ([0]), big blocks by their class */
static struct smpage *partial[SM_CLASSES + 1];
static struct smpage *spare[SM_CLASSES + SM_BIG + 1];
static size_t nidle;                /* spare runs */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void unlink_page (struct smpage **head, struct smpage *p) {
  if (p->prev != NULL) p->prev->next = p->next;
  else *head = p->next;
  if (p->next != NULL) p->next->prev = p->prev;
  p->next = p->prev = NULL;
}

static void push_page (struct smpage **head, struct smpage *p) {
  p->prev = NULL;
  p->next = *head;
  if (*head != NULL) (*head)->prev = p;
  *head = p;
}

static char *page_addr (const struct smpage *p) {
  return base + (size_t)(p - pages) * SM_PAGE;
}

/* Where the empty runs of class k wait. */
static struct smpage **spare_list (unsigned k) {
  return k <= SM_CLASSES ? &spare[0] : &spare[k];
}

/* An empty run for class k (of np pages); NULL when the arena is full. */
static struct smpage *take_run (unsigned k, size_t np) {
  struct smpage **sl = spare_list(k), *p = *sl;
  if (p != NULL) {
    unlink_page(sl, p);
    nidle--;
  }
  else if (top + np <= SM_PAGES) {
    p = &pages[top];
    for (size_t i = 0; i < np; i++) pages[top + i].run = p;
    p->npages = (unsigned char)np;
    top += np;
  }
  else return NULL;
  p->cls = (unsigned char)k;
  p->idle = p->released = 0;
  p->used = 0;
  return p;
}

/* A page carved into blocks of class k, on partial[k]; NULL when none. */
static struct smpage *new_page (unsigned k) {
  struct smpage *p = take_run(k, 1);
  size_t size = (size_t)k * SM_STEP, n = SM_PAGE / size;
  char *a;
  if (p == NULL) return NULL;
  a = page_addr(p);
  p->free = NULL;
  for (size_t i = n; i-- > 0; ) {   /* the first block first */
    *(void **)(a + i * size) = p->free;
    p->free = a + i * size;
  }
  push_page(&partial[k], p);
  return p;
}

static int ours (const void *b) {
  return (const char *)b >= base && (const char *)b < base + SM_ARENA;
}

static struct smpage *run_of (const void *b) {
  return pages[(size_t)((const char *)b - base) / SM_PAGE].run;
}

static void *sm_malloc (size_t n, const char *file, int line) {
  unsigned k;
  struct smpage *p;
  void *b;
  (void)file; (void)line;
  if (n > SM_MAX) {
    size_t np = (n + SM_PAGE - 1) / SM_PAGE;
    if (n < SM_BIG_MIN || np > SM_BIG) return malloc(n);
    pthread_mutex_lock(&lock);
    p = take_run(SM_CLASSES + (unsigned)np, np);
    if (p != NULL) p->used = 1;
    pthread_mutex_unlock(&lock);
    return p != NULL ? page_addr(p) : malloc(n);
  }
  k = n == 0 ? 1 : (unsigned)((n + SM_STEP - 1) / SM_STEP);
  pthread_mutex_lock(&lock);
  p = partial[k];
  if (p == NULL && (p = new_page(k)) == NULL) {
    pthread_mutex_unlock(&lock);
    return malloc(n);             /* the arena is full */
  }
  b = p->free;
  p->free = *(void **)b;
  p->used++;
  if (p->free == NULL) unlink_page(&partial[k], p);
  pthread_mutex_unlock(&lock);
  return b;
}

static void sm_free (void *b, const char *file, int line) {
  struct smpage *p;
  (void)file; (void)line;
  if (!ours(b)) {
    free(b);
    return;
  }
  p = run_of(b);
  pthread_mutex_lock(&lock);
  if (p->cls <= SM_CLASSES) {
    if (p->free == NULL) push_page(&partial[p->cls], p);  /* was full */
    *(void **)b = p->free;
    p->free = b;
  }
  if (--p->used == 0) {
    if (p->cls <= SM_CLASSES) unlink_page(&partial[p->cls], p);
    p->idle = 1;
    push_page(spare_list(p->cls), p);
    nidle++;
  }
  pthread_mutex_unlock(&lock);
}

static void *sm_realloc (void *b, size_t n, const char *file, int line) {
  struct smpage *p;
  size_t old;
  void *nb;
  if (b == NULL) return sm_malloc(n, file, line);
  if (!ours(b)) return realloc(b, n);
  p = run_of(b);
  old = p->cls <= SM_CLASSES ? (size_t)p->cls * SM_STEP
                             : (size_t)p->npages * SM_PAGE;
  if (n <= old && n > old / 2) return b;
  if ((nb = sm_malloc(n, file, line)) == NULL) return NULL;
  memcpy(nb, b, n < old ? n : old);
  sm_free(b, file, line);
  return nb;
}


void sslmem_init (void) {
#ifdef SM_OFF
  (void)sm_malloc;            /* AddressSanitizer sees malloc's blocks */
  (void)sm_realloc;
  (void)sm_free;
#else
  void *a, *m;
  if (RUNNING_ON_VALGRIND) return;  /* memcheck and massif see malloc's */
  a = mmap(NULL, SM_ARENA, PROT_READ | PROT_WRITE,
           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (a == MAP_FAILED) return;
  m = mmap(NULL, SM_PAGES * sizeof *pages, PROT_READ | PROT_WRITE,
           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) {
    munmap(a, SM_ARENA);
    return;
  }
  base = a;
  pages = m;
  if (!CRYPTO_set_mem_functions(sm_malloc, sm_realloc, sm_free)) {
    munmap(a, SM_ARENA);
    munmap(m, SM_PAGES * sizeof *pages);
    base = NULL;
    pages = NULL;
  }
#endif
}


void sslmem_trim (void) {
  size_t i, from = 0, to = 0;   /* the pages to give back next */
  if (pages == NULL) return;
  pthread_mutex_lock(&lock);
  for (i = 0; nidle > 0 && i < top; i += pages[i].npages) {
    struct smpage *p = &pages[i];
    if (!p->idle || p->released) continue;
    p->released = 1;
    if (i != to) {            /* not next to the last ones */
      if (to > from)
        madvise(base + from * SM_PAGE, (to - from) * SM_PAGE, MADV_DONTNEED);
      from = i;
    }
    to = i + p->npages;
  }
  if (to > from)
    madvise(base + from * SM_PAGE, (to - from) * SM_PAGE, MADV_DONTNEED);
  pthread_mutex_unlock(&lock);
}


int sslmem_active (void) {
  return pages != NULL;
}
