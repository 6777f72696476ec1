/*
** model_event.c -- every connection a coroutine on the worker's epoll loop,
** as OpenResty does it. Request I/O and luasrv.sleep yield here when they
** would block (see waitio in lreq.c); readiness or a timer resumes them.
** Connections are registered once, edge-triggered, and never modified:
** readiness is kept as flags on the connection.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "log.h"
#include "lsrv.h"
#include "model.h"

#define ACCEPT_BATCH 64       /* accepts or datagrams per readiness event */
#define TASK_POOL 1024        /* finished coroutines kept for reuse */

struct eloop {
  struct worker *w;
  struct lctx *x;
  struct evloop *loop;
  long active;                /* requests running */
  int accepting;              /* listeners are in the loop */
  struct task *pool;          /* finished tasks, coroutines reusable */
  struct task *running;       /* tasks of active requests */
  int npool;
  struct timer service;
  char *dgram;
};


static struct eloop *eloop_of (struct lctx *x) {
  return x->model;
}


/* {====================================================== tasks */

static void on_timer (struct evloop *loop, struct timer *tm);

static struct task *task_get (struct eloop *e) {
  lua_State *L = lstate_L(e->x);
  struct task *t = e->pool;
  if (t != NULL) {
    e->pool = t->next;
    e->npool--;
    return t;
  }
  if ((t = calloc(1, sizeof *t)) == NULL) return NULL;
  t->x = e->x;
  t->co = lua_newthread(L);
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX);  /* pops the thread */
  lsrv_settask(t->co, t);
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
  t->req = NULL;
  t->wait_conn = NULL;
  timer_stop(e->loop, &t->timer);
  if (reusable && e->npool < TASK_POOL) {
    lua_settop(t->co, 0);
    t->next = e->pool;
    e->pool = t;
    e->npool++;
    return;
  }
  luaL_unref(lstate_L(e->x), LUA_REGISTRYINDEX, t->ref);
  free(t);
}


static void update_accepting (struct eloop *e);

/* Resumes t with nargs values on its stack; handles its end. */
static void resume (struct eloop *e, struct task *t, int nargs) {
  lua_State *co = t->co;
  int nres, st = lua_resume(co, lstate_L(e->x), nargs, &nres);
  if (st == LUA_YIELD) {
    int ours = nres > 0 && lua_touserdata(co, -1) == &lsrv_yield_token;
    lua_pop(co, nres);
    if (ours) return;  /* waiting for the loop */
    lua_pushliteral(co, "attempt to yield from a request outside a "
                    "coroutine of its own");
    st = LUA_ERRRUN;
  }
  if (st != LUA_OK) {
    lstate_report(co, t->req, lua_tostring(co, -1));
    lconn_abort(t->req);
  }
  e->active--;
  unlink_running(e, t);
  task_put(e, t, st == LUA_OK);
  update_accepting(e);
}


static void on_timer (struct evloop *loop, struct timer *tm) {
  struct task *t = tm->data;
  struct lconn *c = t->wait_conn;
  (void)loop;
  t->wait_rc = c != NULL ? ERR_TIMEOUT : 0;  /* a sleep ends well */
  if (c != NULL) c->waiter = NULL;
  t->wait_conn = NULL;
  resume(eloop_of(t->x), t, 0);
}


static void arm (struct task *t, struct lconn *c, unsigned ev, double deadline) {
  struct eloop *e = eloop_of(t->x);
  t->wait_conn = c;
  if (c != NULL) {
    c->waiter = t;
    c->wait_ev = ev;
  }
  if (deadline > 0) timer_start(e->loop, &t->timer, deadline);
}


static void detach (struct lctx *x, struct lconn *c) {
  struct eloop *e = eloop_of(x);
  evloop_del(e->loop, c->fd);
  if (c->waiter != NULL) {  /* closed under a waiting task */
    c->waiter->wait_conn = NULL;
    c->waiter = NULL;
  }
}

static const struct waitops event_ops = {1, arm, detach};

/* }====================================================== */


static void on_conn (struct evloop *loop, int fd, unsigned ev, void *data) {
  struct lconn *c = data;
  struct task *t = c->waiter;
  (void)loop;
  (void)fd;
  if (ev & EV_READ) c->flags |= LC_READABLE;
  if (ev & EV_WRITE) c->flags |= LC_WRITABLE;
  if (ev & EV_RDHUP) c->flags |= LC_RDHUP;
  if (t == NULL || !(c->wait_ev & ev)) return;
  c->waiter = NULL;
  t->wait_conn = NULL;
  t->wait_rc = 0;
  timer_stop(loop, &t->timer);
  resume(eloop_of(c->x), t, 0);
}


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
    log_warn("dropping a connection on %s: out of memory", e->w->ls[lindex].name);
    close(fd);
    return;
  }
  lstate_push_flow(t->co, e->x);
  c = lconn_new(t->co, e->x, fd, lindex, (struct sockaddr *)peer, len);
  rc = evloop_add(e->loop, fd, EV_READ | EV_WRITE | EV_EDGE, on_conn, c);
  if (rc < 0) {
    log_warn("dropping a connection on %s: %s", e->w->ls[lindex].name,
             strerror(-rc));
    lconn_abort(c);
    task_put(e, t, 0);
    return;
  }
  start(e, t, c);
}


static void start_dgram (struct eloop *e, int lindex, long n,
                         struct sockaddr_storage *peer, socklen_t len) {
  struct task *t = task_get(e);
  struct lconn *c;
  if (t == NULL) return;
  lstate_push_flow(t->co, e->x);
  c = lconn_new_dgram(t->co, e->x, lindex, e->dgram, (size_t)n,
                      (struct sockaddr *)peer, len);
  start(e, t, c);
}


static void on_listener (struct evloop *loop, int fd, unsigned ev, void *data) {
  struct eloop *e = data;
  struct sockaddr_storage peer;
  socklen_t len;
  int i = 0;
  (void)loop;
  (void)ev;
  while (e->w->ls[i].fd != fd) i++;
  for (int k = 0; k < ACCEPT_BATCH && e->accepting && !worker_stopping(e->w);
       k++) {
    if (e->w->ls[i].stream) {
      int cfd = model_accept(fd, &peer, &len);
      if (cfd < 0) {
        if (cfd != -EAGAIN && cfd != -ECONNABORTED)
          log_warn("accept on %s: %s", e->w->ls[i].name, strerror(-cfd));
        return;
      }
      start_stream(e, i, cfd, &peer, len);
    }
    else {
      long n = model_recv(fd, e->dgram, DGRAM_MAX, &peer, &len);
      if (n == -EAGAIN) return;
      if (n >= 0) start_dgram(e, i, n, &peer, len);
    }
  }
}


/*
** Listeners are in the loop while the worker is not stopping and has room
** under --max-connections; further clients wait in the backlog.
*/
static void update_accepting (struct eloop *e) {
  int want = !worker_stopping(e->w) &&
             e->active < e->w->cfg->max_connections;
  if (want == e->accepting) return;
  e->accepting = want;
  for (int i = 0; i < e->w->nls; i++) {
    if (want) evloop_add(e->loop, e->w->ls[i].fd, EV_READ, on_listener, e);
    else evloop_del(e->loop, e->w->ls[i].fd);
  }
}


static void on_signal (struct evloop *loop, int fd, unsigned ev, void *data) {
  struct eloop *e = data;
  (void)loop;
  (void)fd;
  (void)ev;
  if (worker_signals(e->w) & WSIG_RELOAD)
    log_warn("SIGHUP: reload is not available in this build yet");
  update_accepting(e);
}


static void on_service (struct evloop *loop, struct timer *t) {
  struct eloop *e = t->data;
  lstate_call_hook(e->x, "service_actions", 0);
  timer_start(loop, t, evloop_now(loop) + 0.5);
}


static void serve (struct eloop *e) {
  for (;;) {
    double wait = 1.0;
    if (worker_stopping(e->w)) {
      double left = atomic_load(&e->w->cut_at) - evloop_update_now(e->loop);
      update_accepting(e);
      if (e->active == 0) return;
      if (left <= 0) {
        log_warn("grace period over: cutting %ld request%s short", e->active,
                 e->active == 1 ? "" : "s");
        return;
      }
      if (left < wait) wait = left;
    }
    if (evloop_run_once(e->loop, wait) < 0) return;
  }
}


static void free_tasks (struct task *t) {
  while (t != NULL) {
    struct task *next = t->next;
    free(t);
    t = next;
  }
}


int model_event_serve (struct worker *w) {
  struct eloop e;
  int rc = 1;
  memset(&e, 0, sizeof e);
  e.w = w;
  if ((e.loop = evloop_new()) == NULL || (e.dgram = malloc(DGRAM_MAX)) == NULL) {
    log_error("error: %s", strerror(errno ? errno : ENOMEM));
    goto out;
  }
  if ((e.x = model_start(w, &event_ops)) == NULL) goto out;
  e.x->model = &e;
  evloop_add(e.loop, w->sig_fd[0], EV_READ, on_signal, &e);
  timer_init(&e.service, on_service, &e);
  timer_start(e.loop, &e.service, evloop_now(e.loop) + 0.5);
  update_accepting(&e);
  model_ready(w);
  serve(&e);
  timer_stop(e.loop, &e.service);
  lstate_call_hook(e.x, "server_close", 0);
  lstate_close(e.x);  /* closes what was cut short, through __gc */
  free_tasks(e.pool);
  free_tasks(e.running);  /* cut short at the end of the grace period */
  rc = 0;
out:
  evloop_free(e.loop);
  free(e.dgram);
  return rc;
}
