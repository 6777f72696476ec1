/*
** lsrv.h -- what the Lua bindings share: the per-state context, the task a
** coroutine runs as, the request object and the wait interface that each
** concurrency model implements.
*/
#ifndef LUASRV_LSRV_H
#define LUASRV_LSRV_H

#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "buf.h"
#include "conn.h"
#include "evloop.h"
#include "worker.h"

#define LCONN_MT "luasrv.conn"
#define LADDR_MT "luasrv.address"

struct lctx;
struct lconn;
struct luaL_Reg;
struct sthread;
struct ltimers;

/*
** A task is one coroutine driven by the event loop (a request). Code that
** is not in such a coroutine uses the context's main task, and waits by
** blocking.
*/
struct task {
  struct lctx *x;
  lua_State *co;
  int ref;                    /* registry ref keeping co alive */
  int wait_rc;                /* result of the last wait, set by the loop */
  struct lconn *wait_conn;    /* the connection this task waits on */
  struct timer timer;         /* deadline or sleep */
  struct lconn *req;          /* the request this task serves */
  struct task *next, *prev;   /* the model's lists (active, free) */
  double cpu_used;            /* --cpu-limit: CPU seconds of its request */
  struct sockaddr_in6 src;    /* --max-per-source: its client (AF_UNSPEC: none) */
  /* light threads (lspawn.c) */
  struct sthread *th;         /* a spawned thread's task: its object */
  struct sthread *threads;    /* a request's task: the threads spawned for it */
  int nthreads;               /* ... of which still running */
  /* req:recv with fn (event model): the continuation's registry refs */
  int park_fn, park_state;
  unsigned char joining;      /* the request waits for them to end */
  unsigned char suspended;    /* yielded to the loop (event model) */
  unsigned char parking;      /* PARK_* below */
};

/*
** A request task's req:recv(max, fn, state) (event model). WAIT: it
** waits for input, and may be parked if the wait lasts; TICKED: so
** waits, and the tick of a wait with no deadline saw it (model_event.c).
** ASKED: the wait
** was ended with ERR_PARK and park_fn, park_state hold the continuation;
** the handler unwinds with the token. PARKED: its coroutine ended and went back to
** the loop; co is NULL, ref holds the request object, and the task waits
** for its connection to turn readable.
*/
#define PARK_NONE 0
#define PARK_WAIT 1
#define PARK_ASKED 2
#define PARK_PARKED 3
#define PARK_TICKED 4

/*
** The scheduler interface: how a model makes a task wait and runs light
** threads. Each model fills one table with designated initializers, and
** sched_wait (sched.c) is the one place that decides between yielding to
** the model's loop (a model with .arm) and blocking the thread (.block).
** Nothing above this table asks which model runs.
*/
struct sched_ops {
  const char *name;
  /*
  ** Blocking models: waits, now, for c (NULL: a plain sleep) to be ready
  ** for EV_READ/EV_WRITE (with EV_IDLEWAIT: a stop ends it at once),
  ** until deadline (0 = none). Returns 0 (ready; a
  ** sleep that ran its course), ERR_TIMEOUT, ERR_CUT or -errno. A wait
  ** for EV_READ is always followed by a fill of c, which the model may
  ** let do the waiting (the thread model's blocking read).
  */
  int (*block) (struct lctx *x, struct lconn *c, unsigned ev, double deadline);
  /*
  ** Yielding models: arms the wake-up of task t, waiting for c (NULL: a
  ** sleep, or a wait that wake ends) as block does; the caller yields
  ** next, and the loop resumes t with the outcome in t->wait_rc.
  */
  void (*arm) (struct task *t, struct lconn *c, unsigned ev, double deadline);
  /* Puts an outbound connection (LC_UNWATCHED) into the loop; 0 or -errno. */
  int (*attach) (struct lctx *x, struct lconn *c);
  /* c's descriptor is about to be closed. */
  void (*detach) (struct lctx *x, struct lconn *c);
  /*
  ** Yielding models, the keep-alive pool (lconnect.c): outbound c, in the
  ** loop, goes idle. Its descriptor stays registered, and what comes for
  ** it now goes to fn(data), not to c, whose waiters are woken as by
  ** detach. 0, or -1 when c is not in a loop. unpark hands such a
  ** descriptor to connection c again, or (c NULL) forgets it before it
  ** is closed.
  */
  int (*park) (struct lctx *x, struct lconn *c, evloop_fn *fn, void *data);
  void (*unpark) (struct lctx *x, int fd, struct lconn *c);
  /*
  ** Light threads (lspawn.c); NULL in blocking models, where spawn runs
  ** the function to its end at once. spawn: a fresh task in the loop;
  ** start: runs it (nargs values on its stack) from L until it first
  ** waits or ends; wake: resumes a task that waits with no connection
  ** and no deadline, at the loop's next turn; kill: abandons a suspended
  ** task.
  */
  struct task *(*spawn) (struct lctx *x);
  void (*start) (struct lctx *x, struct task *t, lua_State *L, int nargs);
  void (*wake) (struct lctx *x, struct task *t);
  void (*kill) (struct lctx *x, struct task *t);
};

/* One per lua_State. */
struct lctx {
  struct worker *w;
  const struct sched_ops *ops;
  struct bufpool pool;
  struct task main_task;
  const char *script;
  int hooks_ref;              /* the hooks table */
  int flow_ref;               /* the request flow: flow(req [, verified]) */
  int verify_ref;             /* its verify_request step alone */
  int resumed_ref;            /* resumed(fn, req, state, why): a parked
                                 request's flow from its continuation */
  int servers_ref;            /* array of server tables, one per listener */
  int pool_ref;               /* lconnect.c's keep-alive pool; 0: none yet */
  void *model;                /* model-private data */
  size_t mem_used;            /* bytes the state holds (its allocator) */
  size_t mem_limit;           /* --memory-limit; 0 = none */
  int sys_oom;                /* malloc itself failed (not the limit) */
  double oom_logged;          /* a client refused for memory: when logged */
  long oom_refused;           /* ... and how many since */
  struct task *cpu_task;      /* --cpu-limit: the task running now, if any */
  double cpu_mark;            /* thread CPU time when it started running */
  struct dgq *dgq;            /* datagram replies go here, if not NULL */
  struct ltimers *timers;     /* luasrv.timer's (ltimer.c); NULL: none yet */
};

/* Request flags, beside the connection's own (conn.h). */
#define LC_OUTBOUND 0x80u     /* made by luasrv.connect, not accepted */
#define LC_UNWATCHED 0x200u   /* event model: fd not in the loop yet */
#define LC_PROXY    0x400u    /* --proxy-protocol: its header is still to read */
#define LC_HOSTNAME 0x800u    /* the object has a host name (ltls.c's hosts) */
#define LC_DGRAW    0x2000u   /* a renewed datagram: in.data is the model's
                                 receive buffer, req.request not made yet */

/*
** The request object, "luasrv.conn": a connection (io) with what Lua and
** the scheduler keep about it.
*/
struct lconn {
  const char *tag;            /* &lsrv_conn_tag: tells the type quickly */
  struct conn io;             /* its bytes (io.flags: LC_* of both files) */
  double timeout;             /* < 0: the server's */
  double deadline;            /* of the operation in progress; 0 = none,
                                 < 0 = not computed until it must wait */
  struct lctx *x;
  double born;                /* monotonic: when it was made (the console) */
  int lindex;                 /* index of its listener */
  socklen_t peerlen;
  /* event model */
  struct task *waiter;
  unsigned wait_ev;
  struct task *wwaiter;       /* a task waiting to write while another
                                 (waiter) waits to read: light threads */
  unsigned reused;            /* outbound: times taken from the keep-alive
                                 pool (fills what was padding) */
  /*
  ** Last: the object is allocated only up to peerlen bytes of it (at
  ** least an inet6 address), see LCONN_SIZE.
  */
  struct sockaddr_storage peer;
};

/* Bytes of a struct lconn that holds a peer address of len bytes. */
#define LCONN_SIZE(len) (offsetof(struct lconn, peer) + \
  ((len) > sizeof(struct sockaddr_in6) ? (size_t)(len) \
                                       : sizeof(struct sockaddr_in6)))

static inline struct task *lsrv_task (lua_State *L) {
  return *(struct task **)lua_getextraspace(L);
}
static inline struct lctx *lsrv_ctx (lua_State *L) {
  return lsrv_task(L)->x;
}
/* The state's main thread. */
static inline lua_State *lsrv_L (struct lctx *x) {
  return x->main_task.co;
}
static inline void lsrv_settask (lua_State *L, struct task *t) {
  *(struct task **)lua_getextraspace(L) = t;
}

/*
** Yielded (as a light userdata) by a task that waits for the loop, so it
** can be told apart from a handler's own coroutine.yield.
*/
extern char lsrv_yield_token;
/*
** Returned by req:recv (given fn) when the task is parked; the handler
** returns it through every frame to the flow, which ends the coroutine.
*/
extern char lsrv_park_token;
/* What struct lconn's tag points to. */
extern char lsrv_conn_tag;

/*
** The request at argument 1. Every method checks it, and an echoed line
** takes several such checks, so the common case is told by the block's
** size and tag (no other userdata can hold the address of lsrv_conn_tag):
** luaL_checkudata looks the metatable up in the registry by name each
** time. The slow path raises the usual error.
*/
static inline struct lconn *lconn_check (lua_State *L) {
  struct lconn *c = lua_touserdata(L, 1);
  if (c != NULL && lua_rawlen(L, 1) >= LCONN_SIZE(0) &&
      c->tag == &lsrv_conn_tag)
    return c;
  return luaL_checkudata(L, 1, LCONN_MT);
}

/*
** Starts an operation. Its deadline is only computed when it first has
** to wait: most operations are served from the buffers, and reading the
** clock for each of them cost a few percent of a pipelined echo.
*/
static inline void lconn_start_op (struct lconn *c) {
  c->deadline = -1;
  c->io.flags &= ~LC_BLOCKRD;
}


/*
** What a read that cannot go on waits for (rc: CONN_WANT_*): output still
** queued goes out first. The event, or a failure.
*/
static inline int lconn_read_wait (struct lconn *c, int rc) {
  if (buf_len(&c->io.out) > 0) {
    int frc = conn_flush(&c->io);
    if (conn_wants(frc)) return (int)conn_want_event(frc);
    if (frc < 0) return frc;
  }
  return (int)conn_want_event(rc);
}

/* ltls.c: TLS for Lua (tls.c below it) */
/* tls(req), the flow's handshake step on a --tls listener: true to go on */
int ltls_accept (lua_State *L);
/* req:starttls([opts]) / conn:starttls([opts]) */
int ltls_starttls (lua_State *L);
/*
** Starts TLS as a client on outbound c (at idx) with opts (a table's
** index, or 0), host the default name: pushes c or nil, msg. May yield.
*/
int ltls_client (lua_State *L, struct lconn *c, int idx, int opts,
                 const char *host);
/* Pushes req.tls: the session's table, or nil on a plain connection. */
void ltls_push_info (lua_State *L, struct lconn *c);
/*
** The host name a plain outbound connection (at idx) was made to, which
** conn:starttls verifies by default; moved with it into the pool.
*/
void ltls_set_host (lua_State *L, int idx, const char *host);
/* A copy of the host name kept for the object at idx (free it), or NULL. */
char *ltls_dup_host (lua_State *L, int idx);

/* lconn.c: the request object */
int luaopen_lconn (lua_State *L);
/*
** Adds methods to every connection object (lconnect.c adds those of
** outbound connections); call after luaopen_lconn.
*/
void lconn_add_methods (lua_State *L, const struct luaL_Reg *l);
/*
** Pushes a new stream request for fd (owned from now on) accepted on
** listener lindex; returns it. Out of memory, it pushes nothing and
** returns NULL (the caller still owns fd): it never raises.
*/
struct lconn *lconn_new (lua_State *L, struct lctx *x, int fd, int lindex,
                         const struct sockaddr *peer, socklen_t peerlen);
/*
** Pushes a datagram request; data is copied into a Lua string. NULL as
** lconn_new.
*/
struct lconn *lconn_new_dgram (lua_State *L, struct lctx *x, int lindex,
                               const char *data, size_t len,
                               const struct sockaddr *peer, socklen_t peerlen);
/*
** Makes the datagram request at index 1 of L, one that ended, the request
** for a new datagram, as if it was just made by lconn_new_dgram; the
** handler's fields of the last one are gone. It never allocates: its
** reads borrow data, and req.request is made when first asked for, so
** data must stay as it is while the request runs, unless the request
** gets its own copy first (lconn_keep_dgram). NULL (the object
** unchanged, still closed) when it has no room for the peer address.
*/
struct lconn *lconn_renew_dgram (lua_State *L, struct lctx *x, int lindex,
                                 const char *data, size_t len,
                                 const struct sockaddr *peer,
                                 socklen_t peerlen);
/*
** A renewed datagram request that is about to wait: its own copy of the
** datagram, for the buffer it borrowed will be reused. 0 or -ENOMEM.
*/
int lconn_keep_dgram (struct lconn *c);
/* Closes without flushing (aborts); safe to call twice. */
void lconn_abort (struct lconn *c);
/* Pushes the client_address table of c. */
void lconn_push_address (lua_State *L, struct lconn *c);

/*
** Waits for c to be ready for ev until the deadline of the operation in
** progress, through sched_wait; for lconnect.c and lproxy.c, which drive
** connections through the same path as requests.
*/
int lconn_waitio (lua_State *L, struct lconn *c, unsigned ev,
                  lua_KContext kc, lua_KFunction k);
/*
** The thread model's blocking wait for input: makes the next fill of c a
** blocking read that ends no later than the operation's deadline, when c
** is an accepted stream on the server's timeout. Returns 1 if it did (the
** wait is done), 0 if c must be polled.
*/
int lconn_block_read (struct lconn *c);

/* lfile.c: luasrv.openfile and its file objects ("luasrv.file") */
/* luasrv.openfile(path [, opts]) -> file | nil, err */
int lfile_openfile (lua_State *L);
/* Registers the file objects' metatable (luaopen_lconn calls it). */
void lfile_register (lua_State *L);
/*
** Pushes a file object for path, opened read-only (nofollow: no symbolic
** link in the path); returns its descriptor, or -errno and pushes nothing.
** May raise (memory).
*/
int lfile_push (lua_State *L, const char *path, int nofollow);
/* The descriptor of the file object at idx, -1 once closed; raises for another value. */
int lfile_check (lua_State *L, int idx);

/* lproxy.c: proxy(req), the flow's PROXY protocol step */
int lconn_proxy (lua_State *L);
/*
** Pushes a new outbound connection, closed until it gets a descriptor;
** room for any peer address.
*/
struct lconn *lconn_new_out (lua_State *L, struct lctx *x);

/* sched.c: the one place that decides "yield to the loop or block" */
/*
** Waits for c (NULL: a sleep; with no deadline, a wait that the model's
** wake ends) to be ready for ev until deadline (0 = none). A task of a
** yielding model yields here, and the loop resumes it into k with kc;
** k reads the outcome with sched_result. Otherwise the thread blocks and
** the outcome is returned: 0, ERR_TIMEOUT, ERR_CUT or -errno (a sleep
** that ran its course: 0).
*/
int sched_wait (lua_State *L, struct lconn *c, unsigned ev, double deadline,
                lua_KContext kc, lua_KFunction k);
/*
** In ev of sched_wait: an idle wait for input (req:recv given fn). It
** ends at once with ERR_CUT once the worker stops, and a yielding model
** may end it with ERR_PARK when it lasts (model_event.c).
*/
#define EV_IDLEWAIT 0x100u
/* The outcome of the wait continuation k was resumed from (status). */
int sched_result (lua_State *L, int status);
/* Can task t yield to a loop (and run light threads)? */
int sched_switches (struct task *t);
/* c's descriptor is about to be closed: the model forgets it. */
void sched_detach (struct lconn *c);
/*
** The pool's idle descriptors (see struct sched_ops): -1 when the model
** keeps no loop for c (the caller detaches c and checks the descriptor
** itself when it takes it again).
*/
int sched_park (struct lconn *c, evloop_fn *fn, void *data);
void sched_unpark (struct lctx *x, int fd, struct lconn *c);
/* The blocking wait of sync and fork (poll, through worker_block). */
int sched_block (struct lctx *x, struct lconn *c, unsigned ev, double deadline);
/* The table of a model that blocks in sched_block and has no loop. */
extern const struct sched_ops sched_blocking;

/* lconnect.c */
/* luasrv.connect(url [, opts]) */
int luasrv_connect (lua_State *L);
/* Adds the methods of outbound connections (setkeepalive, getreusedtimes). */
void lconnect_open (lua_State *L);
/* Closes the keep-alive pool's connections idle past their time. */
void lconnect_sweep (struct lctx *x);
/* Pushes an idle pooled connection for key (at index k) and returns 1, or 0. */
int lconnect_pool_take (lua_State *L, struct lctx *x, int k);
/*
** Moves c's descriptor (c at index 1) into a pool entry for c's key, idle
** for at most idle seconds (0: no limit) in a list of at most size: the
** caller's object is closed, so that a handler that goes on using it
** cannot disturb the request that takes the connection next. 0, or why c
** cannot be pooled (then c is as it was): LCONNECT_ERR_UNREAD when its
** peer sent what nobody read.
*/
int lconnect_pool_put (lua_State *L, struct lconn *c, double idle,
                       lua_Integer size);
#define LCONNECT_ERR_UNREAD (-100011)
/*
** conn:setkeepalive's work, c at index 1 with idle and size at 2 and 3:
** flushes what was written (waiting with continuation k, which calls this
** again with its status), then pools c. 0, or why not (c is then closed).
*/
int lconnect_keepalive_step (lua_State *L, struct lconn *c, int status,
                             lua_KFunction k);

/* lngxsock.c: ngx.socket.tcp's object; adds its functions to the table on top */
void lngxsock_open (lua_State *L);

/* lluasrv.c */
int luaopen_luasrv (lua_State *L);

/* lspawn.c: luasrv.spawn, wait, kill and the request's join */
int lspawn_spawn (lua_State *L);
int lspawn_wait (lua_State *L);
int lspawn_kill (lua_State *L);
/* join(): waits for the threads of the running request; the flow calls it */
int lspawn_join (lua_State *L);
/*
** Spawned task t's coroutine ended with status st (LUA_OK: nres results
** on its stack; else the error on top); L: a state to work on.
*/
void lspawn_ended (struct lctx *x, struct task *t, lua_State *L, int st,
                   int nres);
/* Request task t ends without having joined: its threads go on alone. */
void lspawn_orphan (struct lctx *x, struct task *t);
/*
** Runs the function below the nargs values on top of L (all popped) as a
** thread of no request, for luasrv.timer: in a loop, a task of its own
** that runs now until it first waits; elsewhere to its end, now. Its
** outcome is dropped: the function reports its own errors. Threads it
** spawns are its own. 0, or -1 when there was no memory for a task.
*/
int lspawn_detached (lua_State *L, int nargs);
/* Registers the thread objects' metatable. */
void lspawn_open (lua_State *L);

/* lsync.c: push luasrv.semaphore and luasrv.queue (the first makes both types) */
void lsync_push_semaphore (lua_State *L);
void lsync_push_queue (lua_State *L);

/* ltimer.c: luasrv.timer */
/* Pushes the luasrv.timer table and registers the handles' type. */
void ltimer_push (lua_State *L);
/* When the next timer of x is due (monotonic); 0: none pending. */
double ltimer_next (struct lctx *x);
/* Runs the timers of x that are due (the model's loop, between requests). */
void ltimer_run (struct lctx *x);
/*
** The worker stops or reloads: runs each pending timer once, now, with
** premature = true; none is made or run after.
*/
void ltimer_stop (struct lctx *x);
/* Runs of x's timers in progress (the grace waits for them). */
long ltimer_running (struct lctx *x);
/* In a fork model's child: the worker's timers are not run here. */
void ltimer_forked (struct lctx *x);

/* lshdict.c: pushes a table of the --shared dictionaries (luasrv.shared) */
void lshdict_push (lua_State *L);

/* lstate.c */
/*
** Creates a state for worker w with the model's wait ops, loads the script
** and finds its hooks. Returns NULL with the reason in err.
*/
struct lctx *lstate_new (struct worker *w, const char *script,
                         const struct sched_ops *ops, char *err, size_t errlen);
void lstate_close (struct lctx *x);
/* Calls hook name(server) if defined; 0 or -1 (error already logged). */
int lstate_call_hook (struct lctx *x, const char *name, int fatal);
/*
** Runs verify_request (if the script has it) on the request at the top of
** the main stack; 1: serve it, 0: refused (and closed). The fork model
** verifies in the worker, then calls the flow with true as its second
** argument in the child, which skips the verify step.
*/
int lstate_verify (struct lctx *x);
/*
** --cpu-limit accounting (no-ops without it): a request's task starts a
** slice of running (fresh: a new request, its count from zero) and ends
** it when it waits or finishes. A count hook raises "cpu limit exceeded"
** in a request whose slices add up to more than the limit.
*/
void lstate_cpu_begin (struct lctx *x, struct task *t, int fresh);
void lstate_cpu_end (struct lctx *x);
/* Pushes the request flow function, which takes the request. */
void lstate_push_flow (lua_State *L, struct lctx *x);
/* Logs an error that escaped the flow itself. */
void lstate_report (lua_State *L, struct lconn *c, const char *msg);

#endif
