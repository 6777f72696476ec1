/*
** model_event.c -- every connection a coroutine on the worker's epoll loop,
** as OpenResty does it. Request I/O and luasrv.sleep yield here when they
** would block (sched_wait in sched.c); readiness or a timer resumes them.
** Connections are registered once, edge-triggered, and never modified:
** readiness is kept as flags on the connection.
*/
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "admin.h"
#include "log.h"
#include "lsrv.h"
#include "model.h"
#include "sslmem.h"

#define ACCEPT_BATCH 64       /* accepts or datagrams per readiness event */
#define TASK_POOL 1024        /* finished coroutines kept for reuse */
#define TRIM_KEEP 16          /* ... of which kept through an idle spell */
#define DGRAM_POOL 64         /* ... with their datagram request object */
#define SPARE_MAX 256         /* coroutines of parked tasks kept for reuse */
/*
** req:recv(max, fn, state): a request that waited this long for input
** gives its coroutine back. A kept-alive HTTP connection between two
** requests of a busy client waits some microseconds; parking it each
** time would add unwinding, a coroutine and the flow's xpcall to every
** request, while an idle one holds ~2 KB of coroutine (its stack and
** call frames) for nothing.
*/
#define PARK_AFTER 0.01
/*
** Datagrams received with one recvmmsg. Each may be DGRAM_MAX bytes, so
** the buffer is 4 MiB, but only the pages that datagrams reach become
** resident; it is allocated only when there is a datagram listener.
*/
#define DGRAM_BATCH 64

/* Free lists of small blocks for the Lua state (see small_lalloc). */
#define SMALL_STEP 16
#define SMALL_SLACK 8         /* class k serves k * SMALL_STEP + SMALL_SLACK */
#define SMALL_CLASSES 16      /* blocks up to 264 bytes */
#define SMALL_MAX (SMALL_CLASSES * SMALL_STEP + SMALL_SLACK)
#define SMALL_KEEP 4096       /* free blocks kept per class */

struct smallpool {
  void *free[SMALL_CLASSES + 1];
  int n[SMALL_CLASSES + 1];
};

/* A coroutine with its registry reference, not in any task. */
struct spare {
  lua_State *co;
  int ref;
};

struct eloop {
  struct mloop ml;            /* first: the skeleton's hooks get it */
  struct worker *w;
  struct lctx *x;
  struct evloop *loop;        /* ml's */
  long active;                /* requests running (or parked) */
  long parked;                /* ... of which parked (req:recv with fn) */
  struct spare spares[SPARE_MAX];  /* coroutines given back by parking */
  int nspare;
  struct task *pool;          /* finished tasks, coroutines reusable */
  struct task *running;       /* tasks of active requests */
  int npool;
  struct task *dgpool;        /* finished datagram tasks, their request
                                 object kept at index 1 of their stack */
  int ndgpool;
  char *dgram;                /* DGRAM_BATCH slots of DGRAM_MAX bytes */
  struct dgq dgq;             /* replies of the batch being run */
  struct smallpool small;     /* the state's allocator */
  long served_seen;           /* w->served at the last service tick */
  long trimmed_at;            /* w->served when last trimmed (trim_idle) */
};


static struct eloop *eloop_of (struct lctx *x) {
  return x->model;
}


/* {====================================================== allocator */

/*
** The Lua allocator of the event model's state: free lists of small
** blocks in front of malloc. One state serves every connection, and a
** request makes and drops small objects all the time (a string per line
** read); glibc's malloc and free cost about an eighth of a pipelined
** echo, a free list a fraction of that. The state is single-threaded.
** Blocks are classed by malloc_usable_size, so those that the previous
** allocator made (the state is loaded before this one is installed) can
** join the lists too. A class's blocks are 8 bytes past a multiple of 16:
** glibc's chunks are multiples of 16 with an 8-byte header, so that is
** what a chunk holds anyway (a Table's 56 bytes take 64, not 80): ~90
** bytes less RSS per idle keep-alive connection of scripts/http.lua.
*/
static size_t small_class (size_t size) {
  return size <= SMALL_STEP + SMALL_SLACK
         ? 1 : (size - SMALL_SLACK + SMALL_STEP - 1) / SMALL_STEP;
}


static void small_free (struct smallpool *p, void *ptr) {
  size_t u = malloc_usable_size(ptr);  /* what it can serve */
  size_t k = u < SMALL_STEP + SMALL_SLACK ? 0 : (u - SMALL_SLACK) / SMALL_STEP;
  if (k >= 1 && k <= SMALL_CLASSES && p->n[k] < SMALL_KEEP) {
    *(void **)ptr = p->free[k];
    p->free[k] = ptr;
    p->n[k]++;
  }
  else
    free(ptr);
}


static void *small_alloc (struct smallpool *p, size_t size) {
  size_t k = small_class(size);
  void *b;
  if (k > SMALL_CLASSES) return malloc(size);
  if ((b = p->free[k]) != NULL) {
    p->free[k] = *(void **)b;
    p->n[k]--;
    return b;
  }
  return malloc(k * SMALL_STEP + SMALL_SLACK);
}


/*
** Keeps lstate.c's l_alloc accounting: mem_used is what the state holds
** (a block in a free list is not), and --memory-limit refuses growth
** beyond mem_limit; Lua then collects and, failing that, raises "not
** enough memory" in the request that asked.
*/
static void *small_lalloc (void *ud, void *ptr, size_t osize, size_t nsize) {
  struct eloop *e = ud;
  struct lctx *x = e->x;
  size_t old = ptr != NULL ? osize : 0;  /* without ptr, osize is a type */
  void *b;
  if (nsize == 0) {
    if (ptr != NULL) small_free(&e->small, ptr);
    x->mem_used -= old;
    return NULL;
  }
  if (x->mem_limit > 0 && nsize > old &&
      x->mem_used + (nsize - old) > x->mem_limit)
    return NULL;
  if (ptr == NULL)
    b = small_alloc(&e->small, nsize);
  else if (osize > SMALL_MAX && nsize > SMALL_MAX)
    b = realloc(ptr, nsize);  /* neither end is a small block */
  else if ((b = small_alloc(&e->small, nsize)) != NULL) {
    memcpy(b, ptr, osize < nsize ? osize : nsize);
    small_free(&e->small, ptr);
  }
  else if (nsize <= osize)
    b = ptr;  /* a shrink must not fail: keep the block as it is */
  if (b != NULL) x->mem_used = x->mem_used - old + nsize;
  else x->sys_oom = 1;
  return b;
}


static void smallpool_free (struct smallpool *p) {
  for (int k = 1; k <= SMALL_CLASSES; k++) {
    while (p->free[k] != NULL) {
      void *b = p->free[k];
      p->free[k] = *(void **)b;
      free(b);
    }
    p->n[k] = 0;
  }
}

/* }====================================================== */


/* {====================================================== tasks */

static void on_timer (struct evloop *loop, struct timer *tm);

/* new_thread(t): makes t's coroutine and its registry reference. */
static int new_thread (lua_State *L) {
  struct task *t = lua_touserdata(L, 1);
  t->co = lua_newthread(L);
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX);  /* pops the thread */
  return 0;
}


/*
** Gives t a coroutine: a spare one, or a new one (made protected: a state
** at its --memory-limit must not panic the worker). 0 or -1.
*/
static int take_thread (struct eloop *e, struct task *t) {
  lua_State *L = lsrv_L(e->x);
  if (e->nspare > 0) {
    struct spare *s = &e->spares[--e->nspare];
    t->co = s->co;
    t->ref = s->ref;
  }
  else {
    e->x->sys_oom = 0;
    lua_pushcfunction(L, new_thread);
    lua_pushlightuserdata(L, t);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      lua_pop(L, 1);
      return -1;
    }
  }
  lsrv_settask(t->co, t);
  return 0;
}


/* Takes t's coroutine (ended, its stack empty) from it, for another task. */
static void give_thread (struct eloop *e, struct task *t) {
  if (e->nspare < SPARE_MAX) {
    e->spares[e->nspare].co = t->co;
    e->spares[e->nspare++].ref = t->ref;
  }
  else
    luaL_unref(lsrv_L(e->x), LUA_REGISTRYINDEX, t->ref);
  t->co = NULL;
  t->ref = LUA_NOREF;
}


/*
** A task from the pool, or a new one; NULL when there is no memory for
** it (the coroutine is made protected: a state at its --memory-limit
** must not panic the worker).
*/
static struct task *task_get (struct eloop *e) {
  struct task *t = e->pool;
  if (t != NULL) {
    e->pool = t->next;
    e->npool--;
    return t;
  }
  if ((t = calloc(1, sizeof *t)) == NULL) {
    e->x->sys_oom = 1;
    return NULL;
  }
  t->x = e->x;
  t->park_fn = t->park_state = LUA_NOREF;
  if (take_thread(e, t) < 0) {
    free(t);
    return NULL;
  }
  timer_init(&t->timer, on_timer, t);
  return t;
}


static void link_running (struct eloop *e, struct task *t) {
  t->prev = NULL;
  t->next = e->running;
  if (e->running != NULL) e->running->prev = t;
  e->running = t;
}


static void unlink_running (struct eloop *e, struct task *t) {
  if (t->prev != NULL) t->prev->next = t->next;
  else e->running = t->next;
  if (t->next != NULL) t->next->prev = t->prev;
  t->next = t->prev = NULL;
}


/* A task whose coroutine ended cleanly goes back to the pool. */
static void task_put (struct eloop *e, struct task *t, int reusable) {
  struct lconn *c = t->req;
  t->req = NULL;
  t->wait_conn = NULL;
  t->th = NULL;
  if (t->threads != NULL) lspawn_orphan(e->x, t);
  t->threads = NULL;
  t->nthreads = t->joining = t->suspended = 0;
  t->parking = PARK_NONE;
  timer_stop(e->loop, &t->timer);
  /* a datagram request that ended well keeps its task and its object:
  ** the next datagram reuses both (start_dgram) */
  if (reusable && c != NULL && (c->io.flags & LC_DGRAM) &&
      e->ndgpool < DGRAM_POOL && lua_gettop(t->co) >= 1 &&
      lua_touserdata(t->co, 1) == c) {
    lua_settop(t->co, 1);
    t->next = e->dgpool;
    e->dgpool = t;
    e->ndgpool++;
    return;
  }
  if (reusable && e->npool < TASK_POOL) {
    lua_settop(t->co, 0);
    t->next = e->pool;
    e->pool = t;
    e->npool++;
    return;
  }
  luaL_unref(lsrv_L(e->x), LUA_REGISTRYINDEX, t->ref);
  free(t);
}


/* The end of request task t (its coroutine ended; reusable: cleanly). */
static void end_request (struct eloop *e, struct task *t, int reusable) {
  if (t->src.sin6_family != AF_UNSPEC) {
    model_release(e->w, (struct sockaddr *)&t->src);
    t->src.sin6_family = AF_UNSPEC;
  }
  e->active--;
  unlink_running(e, t);
  task_put(e, t, reusable);
  model_accepting(&e->ml);
}


/* {------------------------------------------------------ parking */

/*
** req:recv given a continuation (lconn.c) waits with EV_IDLEWAIT: arm
** gives the wait a timer at PARK_AFTER (or at its deadline, if sooner),
** and when it fires first the task is resumed with ERR_PARK. A wait
** with no deadline (--timeout 0) is not worth a timer of its own: the
** task's timer ticks every PARK_AFTER while it makes such waits, left
** armed between them (a timer started and stopped per wait cost 4 % of
** a /hello request), and a wait that two ticks see (PARK_TICKED) parks. recv then
** keeps the continuation in the task (PARK_ASKED) and returns the token,
** which the handler returns to the flow, and the flow to us with the
** request (resume_from). The coroutine goes back to the spares; the
** task stays in the running list, counted as active (--max-connections),
** and waits for its connection (PARK_PARKED) until the request's
** deadline. Woken, it gets a coroutine, which runs the flow's
** resumed(fn, req, state, why) (why: the wait timed out or the worker
** stops, and the request ends without fn). So an idle kept-alive
** connection holds its task, its request object and the continuation's
** state, and no coroutine.
*/

/* Can task t, about to wait for input on c, be parked if it lasts? */
static int parkable (const struct task *t, const struct lconn *c) {
  return c != NULL && c == t->req && t->th == NULL && t->nthreads == 0 &&
         !(c->io.flags & LC_DGRAM);
}


/* Drops the continuation recv kept: the handler waits again, or fails. */
static void park_drop (struct eloop *e, struct task *t) {
  lua_State *L = lsrv_L(e->x);
  luaL_unref(L, LUA_REGISTRYINDEX, t->park_fn);
  luaL_unref(L, LUA_REGISTRYINDEX, t->park_state);
  t->park_fn = t->park_state = LUA_NOREF;
  t->parking = PARK_NONE;
}


/* ref_request(t, req): t->ref = a registry reference to req. */
static int ref_request (lua_State *L) {
  struct task *t = lua_touserdata(L, 1);
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX);  /* pops req */
  return 0;
}


/* t's flow returned the token and its request (on its stack): park it. */
static void park_task (struct eloop *e, struct task *t) {
  lua_State *L = lsrv_L(e->x), *co = t->co;
  struct lconn *c = t->req;
  int ok = lua_checkstack(L, 3);
  if (ok) {
    lua_pushcfunction(L, ref_request);
    lua_pushlightuserdata(L, t);
    lua_xmove(co, L, 1);  /* the request */
  }
  lua_settop(co, 0);
  give_thread(e, t);
  if (!ok || lua_pcall(L, 2, 0, 0) != LUA_OK) {  /* no memory: it ends */
    if (ok) lua_pop(L, 1);
    park_drop(e, t);
    lconn_abort(c);
    end_request(e, t, 0);
    return;
  }
  t->parking = PARK_PARKED;
  e->parked++;
  t->suspended = 1;
  t->wait_conn = c;
  c->waiter = t;
  c->wait_ev = EV_READ;
  if (c->deadline > 0) timer_start(e->loop, &t->timer, c->deadline);
}


/*
** Parked t was woken (t->wait_rc says how): gives it a coroutine and
** pushes the flow's resumed and its arguments there; their count, or -1
** when there was no memory for a coroutine (the request then ended).
*/
static int unpark_task (struct eloop *e, struct task *t) {
  lua_State *L = lsrv_L(e->x), *co;
  int req = t->ref;
  e->parked--;
  t->parking = PARK_NONE;
  if (take_thread(e, t) < 0) {
    luaL_unref(L, LUA_REGISTRYINDEX, req);
    t->ref = LUA_NOREF;
    park_drop(e, t);
    lconn_abort(t->req);
    end_request(e, t, 0);
    return -1;
  }
  co = t->co;
  lua_rawgeti(co, LUA_REGISTRYINDEX, e->x->resumed_ref);
  lua_rawgeti(co, LUA_REGISTRYINDEX, t->park_fn);
  lua_rawgeti(co, LUA_REGISTRYINDEX, req);
  lua_rawgeti(co, LUA_REGISTRYINDEX, t->park_state);
  lua_pushboolean(co, t->wait_rc != 0);  /* why: a timeout, the stop */
  luaL_unref(L, LUA_REGISTRYINDEX, req);
  park_drop(e, t);
  return 4;
}


/* The worker stops: parked requests end now (as nginx closes idle ones). */
static void stopped (struct mloop *ml) {
  struct eloop *e = (struct eloop *)ml;
  for (struct task *t = e->running; t != NULL; t = t->next)
    if (t->parking == PARK_PARKED)
      timer_start(e->loop, &t->timer, evloop_now(e->loop));
}

/* }------------------------------------------------------ */


/*
** Resumes t with nargs values on its stack, from L (the loop: the main
** state; luasrv.spawn: the spawning coroutine); handles its end.
*/
static void resume_from (struct eloop *e, struct task *t, lua_State *L,
                         int nargs) {
  lua_State *co;
  int nres, st;
  if (t->co == NULL && (nargs = unpark_task(e, t)) < 0) return;
  co = t->co;
  if (t->parking == PARK_WAIT || t->parking == PARK_TICKED)
    t->parking = PARK_NONE;  /* (recv sees ERR_PARK, if that was why) */
  lstate_cpu_begin(e->x, t, 0);
  t->suspended = 0;
  st = lua_resume(co, L, nargs, &nres);
  lstate_cpu_end(e->x);
  if (st == LUA_YIELD) {
    int ours = nres > 0 && lua_touserdata(co, -1) == &lsrv_yield_token;
    lua_pop(co, nres);
    if (ours) {  /* waiting for the loop */
      t->suspended = 1;
      /* a datagram's bytes are in the receive buffer: the next batch
      ** reuses it */
      if (t->req != NULL && (t->req->io.flags & LC_DGRAW) &&
          lconn_keep_dgram(t->req) < 0)
        lconn_abort(t->req);
      return;
    }
    if (t->th == NULL) {  /* told by a static text: co's memory may be full */
      lstate_report(co, t->req, "attempt to yield from a request outside a "
                    "coroutine of its own");
      lconn_abort(t->req);
      st = LUA_ERRERR;  /* reported */
    }
    else {
      lua_pushliteral(co, "attempt to yield from a request outside a "
                      "coroutine of its own");
      st = LUA_ERRRUN;
      nres = 1;
    }
  }
  if (t->th != NULL) {  /* a light thread ended: its outcome to its object */
    lspawn_ended(e->x, t, L, st, nres);
    unlink_running(e, t);
    task_put(e, t, st == LUA_OK);
    return;
  }
  if (t->parking == PARK_ASKED) {
    if (st == LUA_OK && nres == 2 &&  /* the flow returned token, req */
        lua_touserdata(co, -2) == &lsrv_park_token &&
        lua_touserdata(co, -1) == t->req) {
      park_task(e, t);
      return;
    }
    park_drop(e, t);  /* the handler did not return the token */
  }
  if (st != LUA_OK && st != LUA_ERRERR) {
    lstate_report(co, t->req, lua_tostring(co, -1));
    lconn_abort(t->req);
  }
  end_request(e, t, st == LUA_OK);
}


static void resume (struct eloop *e, struct task *t, int nargs) {
  resume_from(e, t, lsrv_L(e->x), nargs);
}


static void on_timer (struct evloop *loop, struct timer *tm) {
  struct task *t = tm->data;
  struct lconn *c = t->wait_conn;
  t->wait_rc = c != NULL ? ERR_TIMEOUT : 0;  /* a sleep ends well */
  if ((t->parking == PARK_WAIT || t->parking == PARK_TICKED) && c != NULL &&
      !(c->deadline > 0 && evloop_now(loop) >= c->deadline)) {
    if (t->parking == PARK_WAIT && c->deadline == 0 &&
        !worker_stopping(t->x->w)) {  /* a tick: the wait may be new */
      t->parking = PARK_TICKED;
      timer_start(loop, tm, evloop_now(loop) + PARK_AFTER);
      return;
    }
    t->wait_rc = ERR_PARK;  /* the wait lasts: park, or the stop ends it */
  }
  if (t->parking != PARK_NONE && worker_stopping(t->x->w))
    t->wait_rc = ERR_CUT;
  if (c != NULL && c->waiter == t) c->waiter = NULL;
  if (c != NULL && c->wwaiter == t) c->wwaiter = NULL;
  t->wait_conn = NULL;
  resume(eloop_of(t->x), t, 0);
}


static void arm (struct task *t, struct lconn *c, unsigned ev, double deadline) {
  struct eloop *e = eloop_of(t->x);
  double when = deadline;
  if (t->parking == PARK_ASKED) park_drop(e, t);  /* it waits here instead */
  if ((ev & EV_IDLEWAIT) && parkable(t, c)) {
    t->parking = PARK_WAIT;
    if (when == 0) {  /* no deadline: the tick, left armed by a last wait */
      if (!timer_armed(&t->timer))  /* (other timers were stopped) */
        timer_start(e->loop, &t->timer, evloop_now(e->loop) + PARK_AFTER);
      when = -1;
    }
    else if (evloop_now(e->loop) + PARK_AFTER < when)
      when = evloop_now(e->loop) + PARK_AFTER;
  }
  ev &= ~EV_IDLEWAIT;
  t->wait_conn = c;
  /* a write wait takes the second slot, so that a reader (another light
  ** thread) can wait too; a reader that must first flush what the writer
  ** could not (read_wait_event) waits for EV_WRITE in the reader's slot */
  if (c != NULL && ev == EV_WRITE && (c->wwaiter == NULL || c->wwaiter == t))
    c->wwaiter = t;
  else if (c != NULL) {
    c->waiter = t;
    c->wait_ev = ev;
  }
  if (when > 0) timer_start(e->loop, &t->timer, when);
  else if (when == 0 && timer_armed(&t->timer))
    timer_stop(e->loop, &t->timer);  /* a tick left armed */
}


/*
** c's descriptor goes away from under its waiting tasks (another light
** thread closed it): they wake to see "closed".
*/
static void wake_waiters (struct eloop *e, struct lconn *c) {
  for (int k = 0; k < 2; k++) {
    struct task **slot = k == 0 ? &c->waiter : &c->wwaiter, *t = *slot;
    if (t == NULL) continue;
    t->wait_conn = NULL;
    *slot = NULL;
    timer_start(e->loop, &t->timer, evloop_now(e->loop));
  }
}


static void detach (struct lctx *x, struct lconn *c) {
  struct eloop *e = eloop_of(x);
  if (e == NULL) return;  /* init: an outbound connection, no loop yet */
  evloop_del(e->loop, c->io.fd);
  wake_waiters(e, c);
}


static void on_conn (struct evloop *loop, int fd, unsigned ev, void *data);

/*
** An idle pooled connection stays in the loop: a peer that hangs up or
** writes reaches the pool at once, and taking it again costs no system
** call (epoll_ctl twice, and a probe, per request otherwise).
*/
static int park (struct lctx *x, struct lconn *c, evloop_fn *fn, void *data) {
  struct eloop *e = eloop_of(x);
  if (e == NULL || (c->io.flags & LC_UNWATCHED) ||
      evloop_set(e->loop, c->io.fd, fn, data) < 0)
    return -1;
  wake_waiters(e, c);
  return 0;
}


static void unpark (struct lctx *x, int fd, struct lconn *c) {
  struct eloop *e = eloop_of(x);
  if (e == NULL) return;
  if (c == NULL) evloop_del(e->loop, fd);
  else evloop_set(e->loop, fd, on_conn, c);
}



/* {------------------------------------------------------ light threads */

/* A task for luasrv.spawn: in the running list, not counted as a request. */
static struct task *spawn_task (struct lctx *x) {
  struct eloop *e = eloop_of(x);
  struct task *t = task_get(e);
  if (t != NULL) link_running(e, t);
  return t;
}


static void spawn_start (struct lctx *x, struct task *t, lua_State *L,
                         int nargs) {
  struct task *parent = lsrv_task(L);
  resume_from(eloop_of(x), t, L, nargs);
  lstate_cpu_begin(x, parent, 0);  /* the spawner runs on */
}


/* Resumes t (waiting without a connection or deadline) at the next turn. */
static void wake (struct lctx *x, struct task *t) {
  struct eloop *e = eloop_of(x);
  t->wait_conn = NULL;
  timer_start(e->loop, &t->timer, evloop_now(e->loop));
}


/* Abandons t, suspended in a wait; its coroutine is closed, not reused. */
static void kill_task (struct lctx *x, struct task *t) {
  struct eloop *e = eloop_of(x);
  if (t->wait_conn != NULL) {
    if (t->wait_conn->waiter == t) t->wait_conn->waiter = NULL;
    if (t->wait_conn->wwaiter == t) t->wait_conn->wwaiter = NULL;
    t->wait_conn = NULL;
  }
  timer_stop(e->loop, &t->timer);
  unlink_running(e, t);
  t->suspended = 0;
  lua_resetthread(t->co);  /* runs pending __close handlers */
  task_put(e, t, 0);
}

/* }------------------------------------------------------ */

/* }====================================================== */


static void on_conn (struct evloop *loop, int fd, unsigned ev, void *data) {
  struct lconn *c = data;
  struct task *t = c->waiter, *w = c->wwaiter;
  (void)fd;
  if (ev & EV_READ) c->io.flags |= LC_READABLE;
  if (ev & EV_WRITE) c->io.flags |= LC_WRITABLE;
  if (ev & EV_RDHUP) c->io.flags |= LC_RDHUP;
  if (w != NULL && (ev & EV_WRITE)) {  /* a light thread's write */
    c->wwaiter = NULL;
    w->wait_conn = NULL;
    w->wait_rc = 0;
    if (t != NULL && (c->wait_ev & ev)) {
      /* the reader runs first; the writer at the next turn (the reader
      ** may kill it meanwhile, which stops the timer) */
      timer_start(loop, &w->timer, evloop_now(loop));
    }
    else {
      timer_stop(loop, &w->timer);
      resume(eloop_of(c->x), w, 0);
      return;
    }
  }
  if (t == NULL || !(c->wait_ev & ev)) return;
  c->waiter = NULL;
  t->wait_conn = NULL;
  t->wait_rc = 0;
  if (c->deadline != 0 ||  /* a tick stays armed for the next idle wait */
      (t->parking != PARK_WAIT && t->parking != PARK_TICKED))
    timer_stop(loop, &t->timer);
  resume(eloop_of(c->x), t, 0);
}


/*
** An outbound connection (luasrv.connect) joins the loop as accepted ones
** do: once, edge-triggered, for both directions.
*/
static int attach (struct lctx *x, struct lconn *c) {
  struct eloop *e = eloop_of(x);
  return evloop_add(e->loop, c->io.fd, EV_READ | EV_WRITE | EV_EDGE, on_conn, c);
}


/*
** Tasks yield to the loop; code that runs outside any request's task
** (init, service_actions, server_close) blocks, as in the sync model.
*/
static const struct sched_ops event_ops = {
  .name = "event",
  .block = sched_block,
  .arm = arm,
  .attach = attach,
  .detach = detach,
  .park = park,
  .unpark = unpark,
  .spawn = spawn_task,
  .start = spawn_start,
  .wake = wake,
  .kill = kill_task,
};


/* Starts the flow for the request just pushed on t's coroutine. */
static void start (struct eloop *e, struct task *t, struct lconn *c) {
  t->req = c;
  e->active++;
  link_running(e, t);
  model_count_request(e->w);
  resume(e, t, 1);
}


static void start_stream (struct eloop *e, int lindex, int fd,
                          struct sockaddr_storage *peer, socklen_t len) {
  struct task *t = task_get(e);
  struct lconn *c;
  int rc;
  if (t == NULL) {
    model_refuse(e->x, fd, peer);
    return;
  }
  if (e->w->ls[lindex].addr.tr == TR_TCP || e->w->ls[lindex].addr.tr == TR_TLS) {
    /* Replies are already coalesced until the handler waits for input
    ** (or flushes); Nagle would only hold the last one back for an ACK.
    ** nginx's tcp_nodelay does the same for the same reason. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  lstate_push_flow(t->co, e->x);
  c = model_request(e->x, t->co, lindex, fd, NULL, 0, peer, len);
  if (c == NULL) {  /* refused, released */
    task_put(e, t, 1);
    return;
  }
  rc = evloop_add(e->loop, fd, EV_READ | EV_WRITE | EV_EDGE, on_conn, c);
  if (rc < 0) {
    log_warn("dropping a connection on %s: %s", e->w->ls[lindex].name,
             strerror(-rc));
    lconn_abort(c);
    task_put(e, t, 0);
    model_release(e->w, (struct sockaddr *)peer);
    return;
  }
  if (model_tracks(e->w))  /* counted in by model_accept; out at the end */
    memcpy(&t->src, peer, len < sizeof t->src ? len : sizeof t->src);
  start(e, t, c);
}


/*
** A datagram's request. Datagrams come thick and short-lived, and a new
** coroutine, request object and flow call for each cost a fifth of an
** echo: a task whose datagram request ended well keeps the object at the
** bottom of its stack, and the next datagram renews it (lconn_renew_dgram)
** and calls the flow on it again. The stack is [req, flow, req]: resume
** takes the flow and its argument, the object stays below. A renewed
** request borrows its bytes from the receive buffer (no Lua string, no
** protected call) until it waits: resume_from gives it a copy then.
*/
static void start_dgram (struct eloop *e, int lindex, const char *data,
                         size_t n, struct sockaddr_storage *peer,
                         socklen_t len) {
  struct task *t = e->dgpool;
  struct lconn *c = NULL;
  if (t != NULL) {
    e->dgpool = t->next;
    e->ndgpool--;
    c = lconn_renew_dgram(t->co, e->x, lindex, data, n,
                          (struct sockaddr *)peer, len);
    if (c != NULL) lstate_cpu_begin(e->x, t, 1);
    else {  /* no room for this peer, or no memory: a fresh one */
      lua_settop(t->co, 0);
      t->next = e->pool;
      e->pool = t;
      e->npool++;
    }
  }
  if (c == NULL) {
    if ((t = task_get(e)) == NULL) {
      model_refuse(e->x, -1, peer);
      return;
    }
    c = model_request(e->x, t->co, lindex, -1, data, n, peer, len);
    if (c == NULL) {
      task_put(e, t, 1);
      return;
    }
  }
  lstate_push_flow(t->co, e->x);
  lua_pushvalue(t->co, 1);  /* flow, req */
  start(e, t, c);
}


/*
** Receives up to DGRAM_BATCH datagrams with one recvmmsg and runs them;
** their replies go out together too (struct dgq). Returns how many
** arrived, 0 when none is waiting.
*/
static int recv_batch (struct eloop *e, int lindex, int max) {
  struct mmsghdr msgs[DGRAM_BATCH];
  struct iovec iov[DGRAM_BATCH];
  struct sockaddr_storage peers[DGRAM_BATCH];
  int fd = e->w->ls[lindex].fd, n;
  if (max > DGRAM_BATCH) max = DGRAM_BATCH;
  memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)max);
  for (int k = 0; k < max; k++) {
    iov[k].iov_base = e->dgram + (size_t)k * DGRAM_MAX;
    iov[k].iov_len = DGRAM_MAX;
    msgs[k].msg_hdr.msg_iov = &iov[k];
    msgs[k].msg_hdr.msg_iovlen = 1;
    msgs[k].msg_hdr.msg_name = &peers[k];
    msgs[k].msg_hdr.msg_namelen = sizeof peers[k];
  }
  do n = recvmmsg(fd, msgs, (unsigned)max, MSG_DONTWAIT, NULL);
  while (n < 0 && errno == EINTR);
  if (n <= 0) {
    if (n < 0 && errno != EAGAIN)
      log_warn("recvmmsg on %s: %s", e->w->ls[lindex].name, strerror(errno));
    return 0;
  }
  e->ml.enough = n < max;  /* a short batch: the socket had no more */
  e->x->dgq = &e->dgq;
  for (int k = 0; k < n; k++) {  /* all: they were taken from the socket */
    model_fix_sender(&peers[k], &msgs[k].msg_hdr.msg_namelen);
    if (msgs[k].msg_hdr.msg_flags & MSG_TRUNC)  /* as model_recv */
      log_warn("dropped a datagram of more than %d bytes", DGRAM_MAX);
    else if (model_allowed(e->w, &peers[k]))
      start_dgram(e, lindex, iov[k].iov_base, msgs[k].msg_len, &peers[k],
                  msgs[k].msg_hdr.msg_namelen);
  }
  e->x->dgq = NULL;  /* replies of requests that waited go out at once */
  if (e->dgq.n > 0) dgq_flush(&e->dgq, &e->x->pool);
  return n;
}


/*
** Takes up to max requests from listener i (the skeleton keeps max under
** the room --max-connections leaves): a batch of datagrams, or one
** connection. Returns how many it took.
*/
static int take (struct mloop *ml, int i, int max) {
  struct eloop *e = (struct eloop *)ml;
  struct sockaddr_storage peer;
  socklen_t len;
  int cfd;
  if (!e->w->ls[i].stream) return recv_batch(e, i, max);
  if ((cfd = model_accept(e->w, e->w->ls[i].fd, &peer, &len)) < 0) {
    if (cfd != -EAGAIN && cfd != -ECONNABORTED)
      log_warn("accept on %s: %s", e->w->ls[i].name, strerror(-cfd));
    return 0;
  }
  start_stream(e, i, cfd, &peer, len);
  /* A new TLS connection's first step is the handshake's key exchange,
  ** about half a millisecond of CPU, the costliest step a connection
  ** takes: one a turn, between the events of the connections already
  ** served, not a burst of them ahead of all (nginx's multi_accept off).
  ** Plain connections cost a few microseconds to take: a batch. */
  if (e->w->ls[i].addr.tr == TR_TLS) e->ml.enough = 1;
  return 1;
}


static long busy (struct mloop *ml) {
  return ((struct eloop *)ml)->active;
}


/* Frees tasks from *list until at most keep are left. */
static void trim_tasks (struct eloop *e, struct task **list, int *n, int keep) {
  lua_State *L = lsrv_L(e->x);
  while (*n > keep) {
    struct task *t = *list;
    *list = t->next;
    (*n)--;
    luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
    free(t);
  }
}


/*
** Idle for a whole service tick after serving: gives back what the last
** burst left pooled (coroutines past TRIM_KEEP, the small-block lists,
** buffer blocks), collects, and returns the freed heap to the system.
** Without it the worker's RSS stayed at its highest burst's: 21 MB after
** 8,000 abandoned connections, 40 MB after seven such rounds.
*/
static void trim_idle (struct eloop *e) {
  lua_State *L = lsrv_L(e->x);
  trim_tasks(e, &e->pool, &e->npool, TRIM_KEEP);
  trim_tasks(e, &e->dgpool, &e->ndgpool, TRIM_KEEP);
  while (e->nspare > TRIM_KEEP)
    luaL_unref(L, LUA_REGISTRYINDEX, e->spares[--e->nspare].ref);
  lua_gc(L, LUA_GCCOLLECT);
  smallpool_free(&e->small);
  bufpool_free(&e->x->pool);
  malloc_trim(0);
  sslmem_trim();
  log_debug("idle: pools trimmed, %zu bytes of Lua heap", e->x->mem_used);
}


/* The skeleton's service tick, after service_actions. */
static void service (struct mloop *ml) {
  struct eloop *e = (struct eloop *)ml;
  long served = atomic_load(&e->w->served);
  if (e->active == e->parked && served == e->served_seen &&
      served != e->trimmed_at) {
    trim_idle(e);
    e->trimmed_at = served;
  }
  e->served_seen = served;
}


/* Frees a list of tasks; a timer still armed (a task cut short, a tick)
** leaves the loop's heap first, which links the timers themselves. */
static void free_tasks (struct evloop *loop, struct task *t) {
  while (t != NULL) {
    struct task *next = t->next;
    timer_stop(loop, &t->timer);
    free(t);
    t = next;
  }
}


/* The console's "connections": each active request and what it waits on. */
static void conns (struct mloop *ml, struct admin_out *o) {
  struct eloop *e = (struct eloop *)ml;
  for (struct task *t = e->running; t != NULL; t = t->next) {
    const char *waits = "running";
    if (t->req == NULL || t->req->io.fd < 0) continue;
    if (t->wait_conn != NULL)
      waits = t->wait_conn->wait_ev & EV_WRITE ? "write" : "read";
    else if (t->suspended) waits = "sleep";
    admin_conn(o, t->req, waits);
  }
}


static int serve_event (struct worker *w) {
  struct eloop e;
  long left;
  int rc = 1;
  memset(&e, 0, sizeof e);
  e.w = w;
  e.ml.limit = w->cfg->max_connections;
  e.ml.batch = ACCEPT_BATCH;
  e.ml.take = take;
  e.ml.busy = busy;
  e.ml.serviced = service;
  e.ml.conns = conns;
  e.ml.stopped = stopped;
  if (model_loop_init(&e.ml, w) < 0) goto out;
  e.loop = e.ml.loop;
  for (int i = 0; i < w->nls; i++) {
    if (!w->ls[i].stream && e.dgram == NULL &&
        (e.dgram = malloc((size_t)DGRAM_BATCH * DGRAM_MAX)) == NULL) {
      log_error("error: %s", strerror(ENOMEM));
      goto out;
    }
  }
  if ((e.x = model_start(w, &event_ops)) == NULL) goto out;
  e.x->model = &e;
  e.ml.x = e.x;
  lua_setallocf(lsrv_L(e.x), small_lalloc, &e);
  if ((left = model_loop_run(&e.ml)) > 0)
    log_warn("grace period over: cutting %ld request%s short", left,
             left == 1 ? "" : "s");
  model_finish(e.x);  /* closes what was cut short, through __gc */
  smallpool_free(&e.small);
  free_tasks(e.loop, e.pool);
  free_tasks(e.loop, e.dgpool);
  free_tasks(e.loop, e.running);  /* cut short at the end of the grace period */
  rc = 0;
out:
  model_loop_free(&e.ml);
  free(e.dgram);
  return rc;
}


const struct model model_event = {
  .name = "event",
  .serve = serve_event,
};
