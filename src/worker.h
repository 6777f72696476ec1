/*
** worker.h -- a worker process: its listeners, its stop state and its
** signals. The model decides how requests run; the worker decides when to
** stop.
*/
#ifndef LUASRV_WORKER_H
#define LUASRV_WORKER_H

#include <stdatomic.h>
#include "cli.h"
#include "listener.h"
#include "metrics.h"
#include "persource.h"

struct worker {
  const struct config *cfg;
  struct listener *ls;
  int nls;
  int id;                     /* 1-based */
  pid_t pid;                  /* the worker process, not a fork-model child */
  pid_t master;               /* the master's pid; 0: none (see worker_stop) */
  atomic_int orphaned;        /* the master died: listeners shut down */
  int ready_fd;               /* written once the worker serves; -1: none */
  int admin_fd;               /* the console's requests (admin.c); -1: none */
  /*
  ** Called when admin_fd turns readable during a blocking wait
  ** (worker_block), with what the wait is for ("read", "write",
  ** "sleep"); NULL: admin_fd is not watched there. admin_held: a request
  ** taken there waits for the loop (admin_fd is not watched meanwhile).
  */
  void (*admin_hook) (struct worker *w, const char *waits);
  void *admin_ud;
  int admin_held;
  int stop_fd[2];             /* read end is readable once stopping */
  int sig_fd[2];              /* wakes the loop on any signal; drained */
  atomic_int stopping;
  _Atomic double cut_at;      /* monotonic deadline for in-flight work */
  atomic_long served;         /* requests started (for --once) */
  atomic_int oom;             /* the heap is exhausted: exit 1, be replaced */
  /* The accepting thread's alone (model.c): */
  int spare_fd;               /* given up to accept-and-close at EMFILE */
  double shed_logged, refused_logged;  /* when last logged (rate limit) */
  long shed, refused;         /* since then */
  struct srctab *sources;     /* --max-per-source counts, or NULL */
  struct mslot *mslot;        /* --metrics: this worker's counters, or NULL */
};

int worker_init (struct worker *w, const struct config *cfg,
                 struct listener *ls, int nls, int id);
void worker_close (struct worker *w);

/*
** Installs the handlers (SIGTERM, SIGINT; SIGUSR1 reopens the log file;
** SIGUSR2, the master's, does nothing);
** SIGHUP and SIGPIPE are ignored:
** the master reloads, and a vanished client is an error, not a death.
*/
void worker_signals_install (struct worker *w);

/*
** A fork model's child, just forked: SIGTERM and SIGINT stop this process
** alone (its idle waits end at once, others at the grace), not the worker
** that shares its stop pipe (the worker signals its children when it
** stops); SIGHUP does nothing. The child's waits watch a pipe of its own
** (w->stop_fd[0]); w->stop_fd[1] stays the worker's, for
** server:shutdown(). 0 or -errno.
*/
int worker_signals_child (struct worker *w);

/*
** Turns pending signal flags into worker state (a stop). Safe to call
** from any thread of the worker.
*/
void worker_signals (struct worker *w);

/*
** Has a stop signal (SIGTERM, SIGINT) arrived, whether or not the loop has
** read its pipe yet? One atomic load: the accept path asks before taking.
*/
int worker_stop_signalled (void);

/*
** Starts a graceful stop (server:shutdown(), SIGTERM): idempotent. When
** the master is gone (its death sends SIGTERM), the stream listeners are
** shut down first, so a new server can bind them while this one drains.
*/
void worker_stop (struct worker *w);

static inline int worker_stopping (struct worker *w) {
  return atomic_load_explicit(&w->stopping, memory_order_acquire);
}

/*
** Waits until fd is ready for events (POLLIN/POLLOUT), deadline passes
** (0 = none) or the shutdown grace period ends. fd may be -1 to just
** sleep. Returns 0 (ready), -ETIMEDOUT, -ECANCELED (cut by shutdown) or
** -errno. idle: a wait for a client's next request, which the stop ends
** at once (-ECANCELED) rather than at the end of the grace. Used by the
** blocking models.
*/
int worker_block (struct worker *w, int fd, short events, double deadline,
                  int idle);

#endif
