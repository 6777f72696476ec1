/*
** lspawn.c -- light threads: luasrv.spawn, luasrv.wait, luasrv.kill, as
** OpenResty's ngx.thread. In the event model a spawned function is a task
** of its own on the worker's loop: it runs at once until it first waits,
** and its I/O and sleeps yield like the request's. Elsewhere (sync, fork,
** thread, and code outside a request) there is nothing to switch to: spawn
** runs the function to its end before it returns, and wait collects what
** it returned.
**
** Threads belong to the request (the task whose flow spawned them, also
** for threads spawned by threads). The flow joins them after handle and
** after finish: a request ends only when its threads have ended or were
** killed. An error in a thread goes to whoever waits for it; one nobody
** collected is logged when the request joins.
*/
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "log.h"
#include "lsrv.h"

#define THREAD_MT "luasrv.thread"

enum { TH_RUNNING, TH_DONE, TH_FAILED, TH_WAITED, TH_KILLED };
static const char *const state_names[] = {
  "running", "done", "failed", "waited", "killed"
};

struct sthread {
  struct task *t;             /* running in the loop: its task */
  struct task *owner;         /* the request's task; NULL: orphaned */
  struct task *waiter;        /* a task in luasrv.wait for it */
  int state;
  int ref;                    /* registry ref while owner lists it */
  int detached;               /* lspawn_detached: of no request */
  struct sthread *next;       /* owner's list */
};


static struct sthread *checkthread (lua_State *L, int i) {
  return luaL_checkudata(L, i, THREAD_MT);
}


/* The request task that threads spawned by the running code belong to. */
static struct task *owner_of (struct task *t) {
  if (t->th != NULL && t->th->detached) return t;  /* a timer's own */
  if (t->th != NULL) return t->th->owner;  /* may be NULL: orphaned */
  return t;
}


/* Does t run in a loop, where a spawned thread is a task of its own? */
static int loop_task (struct task *t) {
  return sched_switches(t) && t->x->ops->spawn != NULL;
}


/* Pushes the thread object of s (it is listed, so referenced). */
static void push_thread (lua_State *L, struct sthread *s) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
}


static void wake (struct lctx *x, struct task *t) {
  if (x->ops->wake != NULL) x->ops->wake(x, t);
}


/* Forgets w as a waiter of every thread of owner. */
static void unwait (struct task *owner, struct task *w) {
  for (struct sthread *s = owner != NULL ? owner->threads : NULL; s != NULL;
       s = s->next)
    if (s->waiter == w) s->waiter = NULL;
}


/* s stopped running (ended or killed): wakes whoever waits for it. */
static void stopped (struct lctx *x, lua_State *L, struct sthread *s) {
  struct task *owner = s->owner;
  s->t = NULL;
  if (owner == NULL) {  /* its request is gone: nobody will look */
    luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
    s->ref = LUA_NOREF;
    return;
  }
  if (s->waiter != NULL) {
    struct task *w = s->waiter;
    unwait(owner, w);
    wake(x, w);
  }
  if (--owner->nthreads == 0 && owner->joining) {
    owner->joining = 0;
    wake(x, owner);
  }
}


/*
** Stores what the coroutine co of s ended with in s's user value:
** {n, results...} or {msg, traceback}.
*/
static void store_end (lua_State *L, struct sthread *s, lua_State *co,
                       int st, int nres) {
  luaL_checkstack(L, nres + 4, "too many results");
  push_thread(L, s);
  if (st == LUA_OK) {
    lua_createtable(L, nres, 1);
    lua_xmove(co, L, nres);
    for (int i = nres; i >= 1; i--) lua_rawseti(L, -1 - i, i);
    lua_pushinteger(L, nres);
    lua_setfield(L, -2, "n");
    s->state = TH_DONE;
  }
  else {
    const char *msg;
    int tbl, pushed = 0;
    lua_createtable(L, 2, 0);
    tbl = lua_gettop(L);
    lua_xmove(co, L, 1);  /* the error object, as it is */
    if (lua_type(L, -1) == LUA_TSTRING)
      msg = lua_tostring(L, -1);
    else {
      msg = lua_pushfstring(L, "(error object is a %s value)",
                            luaL_typename(L, -1));
      pushed = 1;
    }
    luaL_traceback(L, co, msg, 0);
    lua_rawseti(L, tbl, 2);
    if (pushed) lua_pop(L, 1);
    lua_rawseti(L, tbl, 1);
    s->state = TH_FAILED;
  }
  lua_setiuservalue(L, -2, 1);
  lua_pop(L, 1);
}


/* What store_end_p is given. */
struct ending {
  struct sthread *s;
  lua_State *co;
  int st, nres;
};

static int store_end_p (lua_State *L) {
  struct ending *e = lua_touserdata(L, 1);
  lua_pop(L, 1);
  store_end(L, e->s, e->co, e->st, e->nres);
  return 0;
}


/*
** The outcome is stored protected: the loop calls this from no Lua code
** at all, and the table may need memory the state does not have (then
** the thread reads as killed: its results are lost).
*/
void lspawn_ended (struct lctx *x, struct task *t, lua_State *L, int st,
                   int nres) {
  struct sthread *s = t->th;
  struct ending e = {s, t->co, st, nres};
  t->th = NULL;
  if (s == NULL) return;
  lua_pushcfunction(L, store_end_p);
  lua_pushlightuserdata(L, &e);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    s->state = TH_KILLED;
  }
  stopped(x, L, s);
}


void lspawn_orphan (struct lctx *x, struct task *t) {
  lua_State *L = lsrv_L(x);
  struct sthread *s = t->threads;
  while (s != NULL) {
    struct sthread *next = s->next;
    s->next = NULL;
    s->waiter = NULL;
    s->owner = NULL;
    if (s->state != TH_RUNNING) {  /* running ones unref themselves */
      luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
      s->ref = LUA_NOREF;
    }
    s = next;
  }
  t->threads = NULL;
  t->nthreads = 0;
  t->joining = 0;
}


/* Blocking models: runs the thread s to its end now (fn and its nargs
** arguments at 1..nargs+1); leaves s's object on top. */
static void spawn_blocking (lua_State *L, struct sthread *s, int nargs) {
  lua_State *co = lua_newthread(L);
  int nres, st;
  for (int i = 1; i <= nargs + 1; i++) lua_pushvalue(L, i);
  lua_xmove(L, co, nargs + 1);
  st = lua_resume(co, L, nargs, &nres);
  if (st == LUA_YIELD) {
    lua_pop(co, nres);
    lua_pushliteral(co, "attempt to yield from a light thread outside a "
                    "coroutine of its own");
    st = LUA_ERRRUN;
  }
  store_end(L, s, co, st, nres);
  stopped(lsrv_ctx(L), L, s);
  lua_pop(L, 1);  /* the coroutine */
}


/* luasrv.spawn(fn, ...) -> thread */
int lspawn_spawn (lua_State *L) {
  struct task *t = lsrv_task(L), *owner = owner_of(t);
  struct lctx *x = t->x;
  int nargs = lua_gettop(L) - 1;
  struct sthread *s;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  s = lua_newuserdatauv(L, sizeof *s, 1);
  memset(s, 0, sizeof *s);
  s->state = TH_RUNNING;
  s->ref = LUA_NOREF;
  luaL_setmetatable(L, THREAD_MT);
  /* listed (and referenced) by its request until the request joins */
  lua_pushvalue(L, -1);
  s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  s->owner = owner;
  if (owner != NULL) {
    s->next = owner->threads;
    owner->threads = s;
    owner->nthreads++;
  }
  if (!loop_task(t)) {
    spawn_blocking(L, s, nargs);
    return 1;  /* the thread object, still on top */
  }
  else {
    struct task *nt = x->ops->spawn(x);
    if (nt == NULL) {
      s->state = TH_KILLED;
      stopped(x, L, s);
      return luaL_error(L, "cannot spawn: out of memory");
    }
    nt->th = s;
    nt->req = t->req;
    s->t = nt;
    luaL_checkstack(nt->co, nargs + 2, "too many arguments");
    for (int i = 1; i <= nargs + 1; i++) lua_pushvalue(L, i);
    lua_xmove(L, nt->co, nargs + 1);
    x->ops->start(x, nt, L, nargs);  /* runs until it waits or ends */
    return 1;
  }
}


int lspawn_detached (lua_State *L, int nargs) {
  struct task *t = lsrv_task(L);
  struct lctx *x = t->x;
  struct sthread *s;
  int base = lua_gettop(L) - nargs;  /* the function's index */
  s = lua_newuserdatauv(L, sizeof *s, 1);
  memset(s, 0, sizeof *s);
  s->state = TH_RUNNING;
  s->detached = 1;
  luaL_setmetatable(L, THREAD_MT);
  s->ref = luaL_ref(L, LUA_REGISTRYINDEX);  /* unref'd when it stops */
  if (!loop_task(t)) {
    lua_State *co = lua_newthread(L);
    int nres, st;
    lua_insert(L, base);  /* co, fn, args */
    lua_xmove(L, co, nargs + 1);
    st = lua_resume(co, L, nargs, &nres);
    lua_pop(co, st == LUA_OK || st == LUA_YIELD ? nres : 1);
    s->state = st == LUA_OK ? TH_DONE : TH_FAILED;
    stopped(x, L, s);
    lua_pop(L, 1);  /* co */
    return 0;
  }
  {
    struct task *nt = x->ops->spawn(x);
    if (nt == NULL) {
      s->state = TH_KILLED;
      stopped(x, L, s);
      lua_pop(L, nargs + 1);
      return -1;
    }
    nt->th = s;
    nt->req = NULL;
    nt->cpu_used = 0;
    s->t = nt;
    luaL_checkstack(nt->co, nargs + 2, "too many arguments");
    lua_xmove(L, nt->co, nargs + 1);
    x->ops->start(x, nt, L, nargs);
    /* started from the loop (no task runs): --cpu-limit has nobody to
    ** count for now, not the main task (.start resumed its count) */
    if (t == &x->main_task) x->cpu_task = NULL;
    return 0;
  }
}


/*
** Looks at the threads given to wait (arguments 1..n) for one that ended:
** pushes its outcome and returns how many values; 0 if none has. A thread
** that is not the running code's raises.
*/
static int collect (lua_State *L, int n, int *running) {
  struct task *t = lsrv_task(L);
  *running = 0;
  for (int i = 1; i <= n; i++) {
    struct sthread *s = checkthread(L, i);
    if (s->state == TH_DONE || s->state == TH_FAILED) {
      int ok = s->state == TH_DONE, nres;
      s->state = TH_WAITED;
      lua_getiuservalue(L, i, 1);
      if (ok) {
        lua_getfield(L, -1, "n");
        nres = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
        luaL_checkstack(L, nres + 2, "too many results");
        lua_pushboolean(L, 1);
        for (int k = 1; k <= nres; k++) lua_rawgeti(L, -1 - k, k);
        return nres + 1;
      }
      lua_pushboolean(L, 0);
      lua_rawgeti(L, -2, 1);
      return 2;
    }
    if (s->state == TH_RUNNING) {
      if (s->t == t) return luaL_error(L, "a thread cannot wait for itself");
      if (s->waiter != NULL && s->waiter != t)
        return luaL_error(L, "thread is already being waited for");
      (*running)++;
    }
  }
  return 0;
}


static int wait_k (lua_State *L, int status, lua_KContext ctx) {
  struct task *t = lsrv_task(L);
  int n = (int)ctx, running, r;
  (void)status;
  unwait(owner_of(t), t);
  if ((r = collect(L, n, &running)) > 0) return r;
  if (running == 0) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "already waited or killed");
    return 2;
  }
  if (!loop_task(t) || owner_of(t) == NULL)  /* cannot happen */
    return luaL_error(L, "wait: the threads cannot run here");
  for (int i = 1; i <= n; i++) {
    struct sthread *s = lua_touserdata(L, i);
    if (s->state == TH_RUNNING) s->waiter = t;
  }
  return sched_wait(L, NULL, 0, 0, ctx, wait_k);  /* an end wakes it */
}


/* luasrv.wait(th1 [, th2...]) -> true, results... | false, err */
int lspawn_wait (lua_State *L) {
  struct task *owner = owner_of(lsrv_task(L));
  int n = lua_gettop(L);
  luaL_argcheck(L, n >= 1, 1, "thread expected");
  for (int i = 1; i <= n; i++) {
    struct sthread *s = checkthread(L, i);
    luaL_argcheck(L, s->owner == owner, i, "not a thread of this request");
  }
  lua_settop(L, n);
  return wait_k(L, LUA_OK, (lua_KContext)n);
}


/* luasrv.kill(th) -> true | nil, err */
int lspawn_kill (lua_State *L) {
  struct sthread *s = checkthread(L, 1);
  struct task *t = lsrv_task(L);
  struct lctx *x = t->x;
  luaL_argcheck(L, s->owner == owner_of(t), 1, "not a thread of this request");
  switch (s->state) {
    case TH_DONE: case TH_FAILED:
      s->state = TH_KILLED;  /* its outcome is dropped, not logged */
      luaL_pushfail(L);
      lua_pushliteral(L, "already terminated");
      return 2;
    case TH_WAITED: case TH_KILLED:
      luaL_pushfail(L);
      lua_pushliteral(L, "already waited or killed");
      return 2;
  }
  if (s->t == NULL || !s->t->suspended || x->ops->kill == NULL) {
    luaL_pushfail(L);
    lua_pushliteral(L, "thread is running");
    return 2;
  }
  {
    struct task *victim = s->t;
    victim->th = NULL;
    unwait(s->owner, victim);  /* it was perhaps waiting for others */
    x->ops->kill(x, victim);
    s->state = TH_KILLED;
    stopped(x, L, s);
  }
  lua_pushboolean(L, 1);
  return 1;
}


static int join_k (lua_State *L, int status, lua_KContext ctx) {
  struct task *t = lsrv_task(L);
  struct sthread *s;
  (void)status;
  (void)ctx;
  if (t->th != NULL && !t->th->detached)
    return 0;  /* a thread's own code: not a request */
  if (t->nthreads > 0 && loop_task(t)) {
    t->joining = 1;
    return sched_wait(L, NULL, 0, 0, 0, join_k);  /* the last end wakes it */
  }
  /* all ended: report the errors nobody collected, forget them all */
  s = t->threads;
  t->threads = NULL;
  t->nthreads = 0;
  t->joining = 0;
  while (s != NULL) {
    struct sthread *next = s->next;
    if (s->state == TH_FAILED) {
      const char *tb;
      push_thread(L, s);
      lua_getiuservalue(L, -1, 1);
      lua_rawgeti(L, -1, 2);
      tb = lua_tostring(L, -1);
      log_error("error in a thread of the request: %s",
                tb != NULL ? tb : "?");
      lua_pop(L, 3);
    }
    s->owner = NULL;
    s->next = NULL;
    s->waiter = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, s->ref);
    s->ref = LUA_NOREF;
    s = next;
  }
  return 0;
}


int lspawn_join (lua_State *L) {
  lua_settop(L, 0);
  return join_k(L, LUA_OK, 0);
}


static int thread_tostring (lua_State *L) {
  struct sthread *s = checkthread(L, 1);
  lua_pushfstring(L, "luasrv.thread (%s): %p", state_names[s->state],
                  (void *)s);
  return 1;
}


/* Registers the thread metatable; called by luaopen_luasrv. */
void lspawn_open (lua_State *L) {
  if (luaL_newmetatable(L, THREAD_MT)) {
    lua_pushcfunction(L, thread_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "luasrv.thread");
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
}
