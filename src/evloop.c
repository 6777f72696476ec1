/*
** evloop.c -- epoll and a timer heap, after Redis's ae.c.
** Events carry the descriptor, not a pointer, so a watcher removed while a
** batch is being processed is simply skipped (Redis looks the fd up again
** for the same reason).
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "evloop.h"

#define MAX_EVENTS 256

struct watcher {
  evloop_fn *fn;
  void *data;
  unsigned events;
};

struct evloop {
  int epfd;
  double now;
  struct watcher *w;          /* indexed by fd */
  int nw;
  struct timer **heap;        /* min-heap on when */
  long nheap, capheap;
  struct epoll_event ev[MAX_EVENTS];
};


double monotonic_now (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


struct evloop *evloop_new (void) {
  struct evloop *loop = calloc(1, sizeof *loop);
  if (loop == NULL) return NULL;
  loop->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (loop->epfd < 0) {
    free(loop);
    return NULL;
  }
  loop->now = monotonic_now();
  return loop;
}


void evloop_free (struct evloop *loop) {
  if (loop == NULL) return;
  close(loop->epfd);
  free(loop->w);
  free(loop->heap);
  free(loop);
}


static uint32_t to_epoll (unsigned events) {
  uint32_t e = 0;
  if (events & EV_READ) e |= EPOLLIN | EPOLLRDHUP;
  if (events & EV_WRITE) e |= EPOLLOUT;
  if (events & EV_EDGE) e |= EPOLLET;
  return e;
}


static int grow (struct evloop *loop, int fd) {
  int n = loop->nw ? loop->nw : 64;
  struct watcher *w;
  while (n <= fd) n *= 2;
  if ((w = realloc(loop->w, (size_t)n * sizeof *w)) == NULL) return -ENOMEM;
  memset(w + loop->nw, 0, (size_t)(n - loop->nw) * sizeof *w);
  loop->w = w;
  loop->nw = n;
  return 0;
}


int evloop_add (struct evloop *loop, int fd, unsigned events,
                evloop_fn *fn, void *data) {
  struct epoll_event ev;
  if (fd >= loop->nw && grow(loop, fd) < 0) return -ENOMEM;
  memset(&ev, 0, sizeof ev);
  ev.events = to_epoll(events);
  ev.data.fd = fd;
  if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return -errno;
  loop->w[fd].fn = fn;
  loop->w[fd].data = data;
  loop->w[fd].events = events;
  return 0;
}


int evloop_mod (struct evloop *loop, int fd, unsigned events) {
  struct epoll_event ev;
  if (fd >= loop->nw || loop->w[fd].fn == NULL) return -ENOENT;
  if (loop->w[fd].events == events) return 0;
  memset(&ev, 0, sizeof ev);
  ev.events = to_epoll(events);
  ev.data.fd = fd;
  if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, fd, &ev) < 0) return -errno;
  loop->w[fd].events = events;
  return 0;
}


int evloop_set (struct evloop *loop, int fd, evloop_fn *fn, void *data) {
  if (fd < 0 || fd >= loop->nw || loop->w[fd].fn == NULL) return -ENOENT;
  loop->w[fd].fn = fn;
  loop->w[fd].data = data;
  return 0;
}


void evloop_del (struct evloop *loop, int fd) {
  if (fd < 0 || fd >= loop->nw || loop->w[fd].fn == NULL) return;
  epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, NULL);
  loop->w[fd].fn = NULL;
  loop->w[fd].data = NULL;
}


/* {====================================================== timers */

void timer_init (struct timer *t, timer_fn *fn, void *data) {
  t->when = 0;
  t->idx = -1;
  t->fn = fn;
  t->data = data;
}


static void heap_set (struct evloop *loop, long i, struct timer *t) {
  loop->heap[i] = t;
  t->idx = i;
}


static void sift_up (struct evloop *loop, long i) {
  struct timer *t = loop->heap[i];
  while (i > 0) {
    long parent = (i - 1) / 2;
    if (loop->heap[parent]->when <= t->when) break;
    heap_set(loop, i, loop->heap[parent]);
    i = parent;
  }
  heap_set(loop, i, t);
}


static void sift_down (struct evloop *loop, long i) {
  struct timer *t = loop->heap[i];
  for (;;) {
    long c = 2 * i + 1;
    if (c >= loop->nheap) break;
    if (c + 1 < loop->nheap && loop->heap[c + 1]->when < loop->heap[c]->when)
      c++;
    if (t->when <= loop->heap[c]->when) break;
    heap_set(loop, i, loop->heap[c]);
    i = c;
  }
  heap_set(loop, i, t);
}


void timer_stop (struct evloop *loop, struct timer *t) {
  long i = t->idx;
  struct timer *last;
  if (i < 0) return;
  t->idx = -1;
  last = loop->heap[--loop->nheap];
  if (last == t) return;
  heap_set(loop, i, last);
  sift_up(loop, i);
  sift_down(loop, last->idx);
}


void timer_start (struct evloop *loop, struct timer *t, double when) {
  timer_stop(loop, t);
  if (loop->nheap == loop->capheap) {
    long cap = loop->capheap ? loop->capheap * 2 : 64;
    struct timer **h = realloc(loop->heap, (size_t)cap * sizeof *h);
    if (h == NULL) abort();  /* no way to report a lost timer */
    loop->heap = h;
    loop->capheap = cap;
  }
  t->when = when;
  heap_set(loop, loop->nheap++, t);
  sift_up(loop, t->idx);
}


long evloop_timer_count (const struct evloop *loop) {
  return loop->nheap;
}


static void run_timers (struct evloop *loop) {
  /* Bounded by the heap size at entry: timers armed by callbacks for
  ** "now" wait for the next iteration, so a zero sleep cannot starve I/O. */
  long budget = loop->nheap;
  while (loop->nheap > 0 && budget-- > 0) {
    struct timer *t = loop->heap[0];
    if (t->when > loop->now) break;
    timer_stop(loop, t);
    t->fn(loop, t);
  }
}

/* }====================================================== */


double evloop_now (struct evloop *loop) {
  return loop->now;
}


double evloop_update_now (struct evloop *loop) {
  return loop->now = monotonic_now();
}


int evloop_run_once (struct evloop *loop, double max_wait) {
  int n, ms;
  double wait = max_wait;
  if (loop->nheap > 0) {
    double due = loop->heap[0]->when - monotonic_now();
    if (due < wait) wait = due;
  }
  if (wait < 0) wait = 0;
  ms = (int)(wait * 1000.0 + 0.999);  /* round up: never wake early */
  n = epoll_wait(loop->epfd, loop->ev, MAX_EVENTS, ms);
  if (n < 0 && errno != EINTR) return -errno;
  loop->now = monotonic_now();
  for (int i = 0; i < n; i++) {
    int fd = loop->ev[i].data.fd;
    uint32_t e = loop->ev[i].events;
    unsigned ev = 0;
    if (fd >= loop->nw || loop->w[fd].fn == NULL) continue;  /* removed */
    if (e & (EPOLLIN | EPOLLRDHUP)) ev |= EV_READ;
    if (e & EPOLLOUT) ev |= EV_WRITE;
    if (e & (EPOLLERR | EPOLLHUP)) ev |= EV_ERROR | EV_READ | EV_WRITE;
    if (e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) ev |= EV_RDHUP;
    loop->w[fd].fn(loop, fd, ev, loop->w[fd].data);
  }
  run_timers(loop);
  return n < 0 ? 0 : n;
}
