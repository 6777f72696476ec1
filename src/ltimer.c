/*
** ltimer.c -- luasrv.timer: functions that run later, outside any
** request, in the state that made them (as OpenResty's ngx.timer). The
** model's loop asks when the next one is due (ltimer_next) and runs those
** due (ltimer_run); each run is a detached light thread (lspawn_detached):
** in the event model a task of its own on the loop, elsewhere run to its
** end at once, in the loop, between requests. When the worker stops or
** reloads (ltimer_stop) each pending timer runs once more at once with
** premature = true, and none is made or run after.
**
** A timer is its handle, a "luasrv.timer" userdata: its function and
** arguments in its user value, a registry reference while it is pending
** or running. Pending handles are in an array (the next due one is found
** by a scan, cached until the array changes): timers are few (at most
** --max-timers, 1024 by default) and a scan of them costs less than a
** request.
*/
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>

#include "log.h"
#include "lsrv.h"
#include "metrics.h"

#define TIMER_MT "luasrv.timer"
#define SET_MT "luasrv.timers"

struct ltimer {
  struct ltimers *set;
  double when;                /* due (monotonic); pending only */
  double interval;            /* every; 0: at */
  int slot;                   /* index in set->pend; -1: not pending */
  int running;                /* its runs in progress */
  int cancelled;
  int ref;                    /* registry ref while pending or running */
};

struct ltimers {
  struct ltimer **pend;
  int npend, cap;
  long running;               /* runs in progress, all timers */
  double next;                /* cached: the earliest due; 0: none */
  int next_ok;                /* next is up to date */
  int stopping;               /* the worker stops: no more timers */
  int forked;                 /* a fork model's child: no timers here */
  struct mslot *ms;           /* the worker's counters (/metrics), or NULL */
};


/* The set of x, made the first time (an object of the registry). */
static struct ltimers *set_of (lua_State *L, struct lctx *x) {
  struct ltimers *set;
  if (x->timers != NULL) return x->timers;
  set = lua_newuserdatauv(L, sizeof *set, 0);
  set->pend = NULL;
  set->npend = set->cap = 0;
  set->running = 0;
  set->next = 0;
  set->next_ok = 1;
  set->stopping = set->forked = 0;
  set->ms = x->w->mslot;
  luaL_setmetatable(L, SET_MT);
  lua_rawsetp(L, LUA_REGISTRYINDEX, (void *)set);  /* for ever */
  return x->timers = set;
}


static int set_gc (lua_State *L) {
  struct ltimers *set = luaL_checkudata(L, 1, SET_MT);
  free(set->pend);
  set->pend = NULL;
  set->npend = set->cap = 0;
  return 0;
}


static void unpend (struct ltimer *t) {
  struct ltimers *set = t->set;
  int i = t->slot;
  if (i < 0) return;
  set->pend[i] = set->pend[--set->npend];
  set->pend[i]->slot = i;
  METRICS_ADD(set->ms, timers_pending, -1);
  t->slot = -1;
  set->next_ok = 0;
}


/* Adds t to the pending array; 0 or -1 (no memory). */
static int pend (struct ltimer *t) {
  struct ltimers *set = t->set;
  if (set->npend == set->cap) {
    int n = set->cap ? 2 * set->cap : 16;
    struct ltimer **p = realloc(set->pend, (size_t)n * sizeof *p);
    if (p == NULL) return -1;
    set->pend = p;
    set->cap = n;
  }
  t->slot = set->npend;
  set->pend[set->npend++] = t;
  METRICS_ADD(set->ms, timers_pending, 1);
  if (set->next_ok && (set->next == 0 || t->when < set->next))
    set->next = t->when;
  return 0;
}


/* Drops the reference of t once it is neither pending nor running. */
static void release (lua_State *L, struct ltimer *t) {
  if (t->slot < 0 && t->running == 0 && t->ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
    t->ref = LUA_NOREF;
  }
}


/* {====================================================== one run */

static int traceback (lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL)
    msg = lua_pushfstring(L, "(error object is a %s value)",
                          luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}


static int body_k (lua_State *L, int status, lua_KContext kc) {
  struct ltimer *t = lua_touserdata(L, 1);
  (void)kc;
  if (status != LUA_OK && status != LUA_YIELD) {
    log_error("error in a timer: %s", lua_tostring(L, -1) != NULL
              ? lua_tostring(L, -1) : "?");
  }
  t->running--;
  t->set->running--;
  METRICS_ADD(t->set->ms, timers_running, -1);
  release(L, t);
  return 0;
}


/* body(handle, premature): calls fn(premature, args...) protected. */
static int body (lua_State *L) {
  struct ltimer *t = lua_touserdata(L, 1);
  int n, st;
  (void)t;
  lua_pushcfunction(L, traceback);            /* 3 */
  lua_getiuservalue(L, 1, 1);                 /* 4: {fn, args..., n} */
  lua_getfield(L, 4, "n");
  n = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, n + 2, "too many arguments");
  lua_rawgeti(L, 4, 1);                       /* fn */
  lua_pushvalue(L, 2);                        /* premature */
  for (int i = 2; i <= n; i++) lua_rawgeti(L, 4, i);
  st = lua_pcallk(L, n, 0, 3, 0, body_k);
  return body_k(L, st, 0);
}


/* Starts a run of t, counted as running already, with premature. */
static void fire (lua_State *L, struct ltimer *t, int premature) {
  lua_pushcfunction(L, body);
  lua_rawgeti(L, LUA_REGISTRYINDEX, t->ref);
  lua_pushboolean(L, premature);
  if (lspawn_detached(L, 2) < 0) {
    log_error("a timer could not run: %s", "out of memory");
    t->running--;
    t->set->running--;
    METRICS_ADD(t->set->ms, timers_running, -1);
    release(L, t);
  }
}

/* }====================================================== */


/* {====================================================== the loop's side */

double ltimer_next (struct lctx *x) {
  struct ltimers *set = x->timers;
  if (set == NULL || set->npend == 0) return 0;
  if (!set->next_ok) {
    double next = set->pend[0]->when;
    for (int i = 1; i < set->npend; i++)
      if (set->pend[i]->when < next) next = set->pend[i]->when;
    set->next = next;
    set->next_ok = 1;
  }
  return set->next;
}


long ltimer_running (struct lctx *x) {
  return x->timers != NULL ? x->timers->running : 0;
}


/*
** run_due(set, premature): takes those due (all, when premature) out of
** the pending array first, earliest first, then runs them: a run may make
** or cancel timers (in the blocking models it runs to its end here).
*/
static int run_due (lua_State *L) {
  struct ltimers *set = lua_touserdata(L, 1);
  int premature = lua_toboolean(L, 2), n = 0;
  double now = monotonic_now();
  struct ltimer **due = lua_newuserdatauv(L, (size_t)set->npend * sizeof *due, 0);
  for (int i = 0; i < set->npend; ) {
    struct ltimer *t = set->pend[i];
    int k = n++;
    if (!premature && t->when > now) {
      n--;
      i++;
      continue;
    }
    while (k > 0 && due[k - 1]->when > t->when) {
      due[k] = due[k - 1];
      k--;
    }
    due[k] = t;
    unpend(t);  /* the last one moved into slot i */
  }
  for (int k = 0; k < n; k++) {
    struct ltimer *t = due[k];
    if (t->interval > 0 && !premature) {
      /* the same period, whatever a run costs; ticks missed by a busy
      ** worker, or while the last run still runs, are skipped */
      int busy = t->running > 0;
      do t->when += t->interval; while (t->when <= now);
      if (pend(t) < 0) log_error("a timer is lost: %s", "out of memory");
      if (busy) {
        due[k] = NULL;
        continue;
      }
    }
    t->running++;
    set->running++;
    METRICS_ADD(set->ms, timers_running, 1);
    METRICS_ADD(set->ms, timer_runs, 1);
  }
  for (int k = 0; k < n; k++)
    if (due[k] != NULL) fire(L, due[k], premature);
  return 0;
}


static void run (struct lctx *x, int premature) {
  lua_State *L = lsrv_L(x);
  struct ltimers *set = x->timers;
  if (set == NULL || set->npend == 0) return;
  lua_pushcfunction(L, run_due);
  lua_pushlightuserdata(L, set);
  lua_pushboolean(L, premature);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
    log_error("timers: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
  }
}


void ltimer_run (struct lctx *x) {
  double next = ltimer_next(x);
  if (next > 0 && next <= monotonic_now() && !x->timers->stopping)
    run(x, 0);
}


void ltimer_stop (struct lctx *x) {
  struct ltimers *set = x->timers;
  if (set == NULL || set->stopping) return;
  set->stopping = 1;
  run(x, 1);
}


static int make_set (lua_State *L) {
  set_of(L, lua_touserdata(L, 1));
  return 0;
}


void ltimer_forked (struct lctx *x) {
  struct ltimers *set;
  lua_State *L = lsrv_L(x);
  lua_pushcfunction(L, make_set);
  lua_pushlightuserdata(L, x);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) lua_pop(L, 1);
  if ((set = x->timers) == NULL) return;  /* no memory: none could be made */
  set->forked = 1;
  set->npend = 0;  /* the worker's: they run there, not here */
  set->next_ok = 0;
}

/* }====================================================== */


/* {====================================================== Lua */

static int make (lua_State *L, double interval) {
  struct lctx *x = lsrv_ctx(L);
  struct ltimers *set = set_of(L, x);
  lua_Number delay = luaL_checknumber(L, 1);
  int n = lua_gettop(L) - 1;  /* fn and its arguments */
  struct ltimer *t;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (interval > 0) luaL_argcheck(L, delay > 0, 1, "must be > 0");
  else luaL_argcheck(L, delay >= 0, 1, "must be >= 0");
  if (set->stopping || set->forked) {
    luaL_pushfail(L);
    if (set->forked)
      lua_pushliteral(L, "no timers in a fork model request (make them in init)");
    else lua_pushliteral(L, "process exiting");
    return 2;
  }
  if (set->npend + set->running >= x->w->cfg->max_timers) {
    luaL_pushfail(L);
    lua_pushliteral(L, "too many timers");
    return 2;
  }
  lua_createtable(L, n, 1);
  for (int i = 1; i <= n; i++) {
    lua_pushvalue(L, i + 1);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "n");
  t = lua_newuserdatauv(L, sizeof *t, 1);
  t->set = set;
  t->when = monotonic_now() + (double)delay;
  t->interval = interval;
  t->slot = -1;
  t->running = 0;
  t->cancelled = 0;
  t->ref = LUA_NOREF;
  luaL_setmetatable(L, TIMER_MT);
  lua_rotate(L, -2, 1);
  lua_setiuservalue(L, -2, 1);
  if (pend(t) < 0) return luaL_error(L, "not enough memory");
  lua_pushvalue(L, -1);
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}


/* luasrv.timer.at(delay, fn, ...) -> handle */
static int timer_at (lua_State *L) {
  return make(L, 0);
}


/* luasrv.timer.every(interval, fn, ...) -> handle */
static int timer_every (lua_State *L) {
  lua_Number every = luaL_checknumber(L, 1);
  luaL_argcheck(L, every > 0, 1, "must be > 0");
  return make(L, (double)every);
}


/*
** t:cancel() -> true (it will not run again) | nil, "expired" (an at
** timer that already ran or runs now, or one cancelled before)
*/
static int timer_cancel (lua_State *L) {
  struct ltimer *t = luaL_checkudata(L, 1, TIMER_MT);
  if (t->set->forked) {  /* a copy: the timer is the worker's */
    luaL_pushfail(L);
    lua_pushliteral(L, "the timer runs in the worker: a fork model request "
                       "cannot cancel it");
    return 2;
  }
  if (t->cancelled || t->slot < 0) {
    luaL_pushfail(L);
    lua_pushliteral(L, "expired");
    return 2;
  }
  t->cancelled = 1;
  unpend(t);
  release(L, t);
  lua_pushboolean(L, 1);
  return 1;
}


/* luasrv.timer.count() -> running, pending */
static int timer_count (lua_State *L) {
  struct ltimers *set = lsrv_ctx(L)->timers;
  lua_pushinteger(L, set != NULL ? set->running : 0);
  lua_pushinteger(L, set != NULL ? set->npend : 0);
  return 2;
}


static int timer_tostring (lua_State *L) {
  struct ltimer *t = luaL_checkudata(L, 1, TIMER_MT);
  lua_pushfstring(L, "luasrv.timer (%s): %p",
                  t->set->forked ? "the worker's" :
                  t->slot >= 0 ? "pending" : t->running ? "running" : "done",
                  (void *)t);
  return 1;
}


void ltimer_push (lua_State *L) {
  if (luaL_newmetatable(L, TIMER_MT)) {
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, timer_cancel);
    lua_setfield(L, -2, "cancel");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, timer_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, SET_MT)) {
    lua_pushcfunction(L, set_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  lua_createtable(L, 0, 3);
  lua_pushcfunction(L, timer_at);
  lua_setfield(L, -2, "at");
  lua_pushcfunction(L, timer_every);
  lua_setfield(L, -2, "every");
  lua_pushcfunction(L, timer_count);
  lua_setfield(L, -2, "count");
}

/* }====================================================== */
