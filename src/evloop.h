/*
** evloop.h -- an epoll loop: descriptors mapped to callbacks, timers in a
** binary heap linked through the timers themselves (so arming one never
** allocates and cannot fail), a cached monotonic clock and a stop flag. Single-threaded;
** each worker (or thread) owns its own loop.
*/
#ifndef LUASRV_EVLOOP_H
#define LUASRV_EVLOOP_H

#include <stdint.h>

#define EV_READ  1u
#define EV_WRITE 2u
#define EV_EDGE  4u           /* edge-triggered (register once, never modify) */
#define EV_ERROR 8u           /* reported: error or hang-up */
#define EV_RDHUP 16u          /* reported: the peer shut its side down */

struct evloop;
struct timer;

typedef void evloop_fn (struct evloop *loop, int fd, unsigned events,
                        void *data);
typedef void timer_fn (struct evloop *loop, struct timer *t);

struct timer {
  double when;                /* monotonic seconds */
  struct timer *parent, *left, *right;  /* the heap's links */
  int armed;
  timer_fn *fn;
  void *data;
};

struct evloop *evloop_new (void);
void evloop_free (struct evloop *loop);

/* Watches fd; returns 0 or -errno. A descriptor has one watcher. */
int evloop_add (struct evloop *loop, int fd, unsigned events,
                evloop_fn *fn, void *data);
int evloop_mod (struct evloop *loop, int fd, unsigned events);
/*
** Hands watched fd to another watcher, with no system call (the kernel's
** registration stays as it is); 0 or -ENOENT.
*/
int evloop_set (struct evloop *loop, int fd, evloop_fn *fn, void *data);
/* Forgets fd; call before closing it. Pending events for it are dropped. */
void evloop_del (struct evloop *loop, int fd);

void timer_init (struct timer *t, timer_fn *fn, void *data);
void timer_start (struct evloop *loop, struct timer *t, double when);
void timer_stop (struct evloop *loop, struct timer *t);
static inline int timer_armed (const struct timer *t) { return t->armed; }

/* Seconds on the monotonic clock, as of the last loop iteration. */
double evloop_now (struct evloop *loop);
double evloop_update_now (struct evloop *loop);
double monotonic_now (void);

/*
** Waits for events at most max_wait seconds (less if a timer is due),
** then runs callbacks and due timers. Returns the number of events or
** -errno.
*/
int evloop_run_once (struct evloop *loop, double max_wait);

/* Number of armed timers (for tests and shutdown decisions). */
long evloop_timer_count (const struct evloop *loop);

#endif
