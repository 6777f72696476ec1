/*
** model.h -- the concurrency models. Each serves a worker's listeners
** until the worker stops and returns the process exit code. They share
** the helpers below for what every model does the same way.
*/
#ifndef LUASRV_MODEL_H
#define LUASRV_MODEL_H

#include <lua.h>
#include <sys/socket.h>
#include "worker.h"

struct lctx;
struct lconn;
struct sched_ops;
struct admin_out;

/* A concurrency model: what the master runs in a worker. */
struct model {
  const char *name;
  /* Serves w's listeners until w stops; returns the exit code. */
  int (*serve) (struct worker *w);
};

extern const struct model model_sync, model_fork, model_thread, model_event;

/*
** Runs model m in worker w until it stops; returns the worker's exit
** code: m's, or 1 when the worker stopped because its heap was exhausted
** (model_out_of_memory), so that the master replaces it.
*/
int model_serve (const struct model *m, struct worker *w);

/*
** The skeleton every model runs on (model.c): the worker's loop with its
** listeners in it while there is room under the model's limit, the accept
** loop that looks at the limit before every request it takes, the signal
** and stop pipes, the service_actions tick, and the grace loop. A model
** fills in what differs: how it takes a request, and how many it has in
** flight.
*/
struct mloop {
  struct worker *w;
  struct evloop *loop;
  struct lctx *x;             /* service_actions runs here; NULL: the
                                 model runs its own (thread) */
  long limit;                 /* requests in flight at most */
  int batch;                  /* requests taken per readiness event */
  double slack;               /* the grace loop waits this long past the
                                 cut, for cut requests to unwind */
  double tick;                /* while stopping, wake at least this often
                                 (0: no need) */
  /*
  ** Takes up to max requests from listener lindex and starts them;
  ** returns how many it took, 0 when none is waiting (or it failed).
  */
  int (*take) (struct mloop *ml, int lindex, int max);
  int enough;                 /* take wants no more tries this turn: it saw
                                 the listener empty (a batch of datagrams
                                 short of max), or took a TLS connection */
  /* Requests in flight; NULL: none outlives take (sync). */
  long (*busy) (struct mloop *ml);
  /* Called each turn of the grace loop (NULL: nothing to do). */
  void (*stopping) (struct mloop *ml);
  /* The worker began to stop (NULL: nothing to do). */
  void (*stopped) (struct mloop *ml);
  /* Each service tick, after service_actions (NULL: nothing to do). */
  void (*serviced) (struct mloop *ml);
  /*
  ** The console's "connections" (admin.c): calls admin_conn for each open
  ** connection (NULL: none to list); note, if not NULL, adds to the
  ** summary line (e.g. a fork worker's children).
  */
  void (*conns) (struct mloop *ml, struct admin_out *o);
  const char *(*note) (struct mloop *ml);
  /* Runs an eval for client fd elsewhere (NULL: in x, here). */
  void (*eval) (struct mloop *ml, int fd, const char *code);
  const char *blocked;        /* a blocking model's request waits on this
                                 now (admin.c, in worker_block); else NULL */
  /* the skeleton's own */
  int accepting;
  struct timer service;
};

/*
** Makes ml's loop and puts the signal and stop pipes into it; the
** caller has filled in the rest. 0, or -1 (logged).
*/
int model_loop_init (struct mloop *ml, struct worker *w);

/*
** Announces the worker (model_ready), serves until it stops and then
** until the requests in flight end or the grace (plus ml->slack) is
** over. Returns the number still in flight.
*/
long model_loop_run (struct mloop *ml);

/* Stops the service tick and frees the loop. */
void model_loop_free (struct mloop *ml);

/*
** Puts the listeners into the loop, or takes them out, as the worker's
** stop and the room under ml->limit say. Models call it when a request
** ends.
*/
void model_accepting (struct mloop *ml);

/*
** Runs the flow on request c, at the top of x's main stack, to its end
** (the blocking models); verified: verify_request ran already (fork).
** Then closes c and pops it.
*/
void model_run (struct lctx *x, struct lconn *c, int verified);

/* Largest datagram we receive whole (UDP's maximum payload is 65,507). */
#define DGRAM_MAX 65536

/*
** Loads the script into a new state for w with ops and runs init.
** Returns NULL after logging the error.
*/
struct lctx *model_start (struct worker *w, const struct sched_ops *ops);

/*
** Tells the master the worker serves (its states are loaded and init
** ran), or prints the startup lines when there is no master. Call once,
** before the first request.
*/
void model_ready (struct worker *w);

/* Runs server_close and closes the state. */
void model_finish (struct lctx *x);

/* Counts a request; with --once the first request starts the stop. */
void model_count_request (struct worker *w);

/*
** Accepts the next client of listener lfd that --allow/--deny let in
** (the others are closed and logged). Returns its descriptor (non-
** blocking, close-on-exec) or -errno; -EAGAIN when none is waiting. Out
** of descriptors, it accepts and closes the waiting clients with a spare
** descriptor, logs at most once a second, and returns -EAGAIN.
*/
int model_accept (struct worker *w, int lfd, struct sockaddr_storage *peer,
                  socklen_t *len);

/*
** A connection model_accept returned has ended (--max-per-source counts
** it out). Every model calls it once per accepted connection.
*/
void model_release (struct worker *w, const struct sockaddr *peer);

/*
** Pushes the request for a client accepted on listener lindex (fd >= 0,
** owned from now on) or for a datagram (fd < 0: data, len) on L, and
** starts its CPU count. When the state has no memory for it, it pushes
** nothing and returns NULL: the client is closed (model_release done)
** and refused with a log line, at most one a second; if the worker's heap
** itself is exhausted, the worker stops (model_serve then returns 1).
*/
struct lconn *model_request (struct lctx *x, lua_State *L, int lindex, int fd,
                             const char *data, size_t len,
                             const struct sockaddr_storage *peer,
                             socklen_t peerlen);

/*
** The worker's heap is exhausted (malloc failed with no --memory-limit to
** blame): logs it once and stops the worker, which then exits 1 so that
** the master starts a fresh one. Safe from any thread.
*/
void model_out_of_memory (struct worker *w);

/*
** The core has no memory to start a request for this client (fd >= 0: a
** connection, closed here and released; -1: a datagram): refuses it as
** model_request does.
*/
void model_refuse (struct lctx *x, int fd, const struct sockaddr_storage *peer);

/* Must a model remember each connection's peer for model_release? */
static inline int model_tracks (const struct worker *w) {
  return w->sources != NULL || w->mslot != NULL;
}

/*
** A datagram from an unbound Unix socket has no address (length 0, the
** family unset): make it an unnamed Unix sender, path "".
*/
void model_fix_sender (struct sockaddr_storage *peer, socklen_t *len);

/* May this datagram's sender be served (--allow/--deny)? Logs refusals. */
int model_allowed (struct worker *w, const struct sockaddr_storage *peer);

/*
** Receives one datagram into buf from a sender model_allowed lets in;
** returns its length or -errno (-EAGAIN: none waiting).
*/
long model_recv (struct worker *w, int fd, char *buf, size_t cap,
                 struct sockaddr_storage *peer, socklen_t *len);

#endif
