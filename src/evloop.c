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
  struct timer *root;         /* min-heap on when, linked through timers */
  unsigned long nheap;
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
  t->parent = t->left = t->right = NULL;
  t->armed = 0;
  t->fn = fn;
  t->data = data;
}


/*
** The heap is a complete binary tree whose nodes are the timers: node k
** (counting from 1, level by level) has children 2k and 2k + 1, so the
** binary digits of k after the leading 1 spell the way down to it from
** the root (0: left, 1: right). The last node is the one numbered nheap.
** Arming a timer links it in as node nheap + 1; stopping one moves the
** last node into its place. Nothing is allocated: a timer can always be
** armed, whatever memory is left (libuv keeps its timers the same way).
*/

/* The link that holds (or would hold) node k. */
static struct timer **heap_slot (struct evloop *loop, unsigned long k) {
  struct timer **slot = &loop->root;
  int bit = 0;
  while ((k >> bit) > 1) bit++;
  while (bit-- > 0)
    slot = ((k >> bit) & 1) ? &(*slot)->right : &(*slot)->left;
  return slot;
}


/* The link that points at t: its parent's left or right, or the root. */
static struct timer **link_to (struct evloop *loop, struct timer *t) {
  if (t->parent == NULL) return &loop->root;
  return t->parent->left == t ? &t->parent->left : &t->parent->right;
}


/* Exchanges t with its parent p in the tree (t moves up one level). */
static void swap_up (struct evloop *loop, struct timer *t) {
  struct timer *p = t->parent, **above = link_to(loop, p);
  struct timer *tl = t->left, *tr = t->right;
  if (p->left == t) {
    t->left = p;
    t->right = p->right;
    if (t->right != NULL) t->right->parent = t;
  }
  else {
    t->right = p;
    t->left = p->left;
    if (t->left != NULL) t->left->parent = t;
  }
  t->parent = p->parent;
  *above = t;
  p->parent = t;
  p->left = tl;
  p->right = tr;
  if (tl != NULL) tl->parent = p;
  if (tr != NULL) tr->parent = p;
}


static void sift_up (struct evloop *loop, struct timer *t) {
  while (t->parent != NULL && t->when < t->parent->when) swap_up(loop, t);
}


static void sift_down (struct evloop *loop, struct timer *t) {
  for (;;) {
    struct timer *c = t->left;
    if (c == NULL) break;
    if (t->right != NULL && t->right->when < c->when) c = t->right;
    if (t->when <= c->when) break;
    swap_up(loop, c);
  }
}


void timer_stop (struct evloop *loop, struct timer *t) {
  struct timer **lastslot, *last;
  if (!t->armed) return;
  t->armed = 0;
  lastslot = heap_slot(loop, loop->nheap--);
  last = *lastslot;
  *lastslot = NULL;  /* unlinks the last node from its parent */
  if (last != t) {   /* the last node takes t's place */
    last->parent = t->parent;
    last->left = t->left;
    last->right = t->right;
    if (last->left != NULL) last->left->parent = last;
    if (last->right != NULL) last->right->parent = last;
    *link_to(loop, t) = last;
    sift_up(loop, last);
    sift_down(loop, last);
  }
  t->parent = t->left = t->right = NULL;
}


void timer_start (struct evloop *loop, struct timer *t, double when) {
  unsigned long k;
  timer_stop(loop, t);
  t->when = when;
  t->left = t->right = NULL;
  k = ++loop->nheap;
  if (k == 1) t->parent = NULL;
  else t->parent = *heap_slot(loop, k / 2);
  *heap_slot(loop, k) = t;
  t->armed = 1;
  sift_up(loop, t);
}


long evloop_timer_count (const struct evloop *loop) {
  return loop->nheap;
}


static void run_timers (struct evloop *loop) {
  /* Bounded by the heap size at entry: timers armed by callbacks for
  ** "now" wait for the next iteration, so a zero sleep cannot starve I/O. */
  unsigned long budget = loop->nheap;
  while (loop->root != NULL && budget-- > 0) {
    struct timer *t = loop->root;
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
  if (loop->root != NULL) {
    double due = loop->root->when - monotonic_now();
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
