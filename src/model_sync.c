/*
** model_sync.c -- socketserver's plain servers: one request at a time in
** the worker. The loop only decides which listener goes next; the request
** runs to its end inside the callback, its waits blocking in poll.
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>

#include "log.h"
#include "lsrv.h"
#include "model.h"

struct sync {
  struct worker *w;
  struct lctx *x;
  struct evloop *loop;
  struct timer service;
  char *dgram;                /* DGRAM_MAX bytes */
};

/* Runs the flow on the request at the top of the stack; pops it. */
static void run (struct sync *s, struct lconn *c) {
  lua_State *L = lsrv_L(s->x);
  model_count_request(s->w);
  lstate_push_flow(L, s->x);
  lua_pushvalue(L, -2);  /* flow, req */
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {  /* the flow itself failed */
    lstate_report(L, c, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lstate_cpu_end(s->x);
  lconn_abort(c);
  lua_pop(L, 1);  /* the request */
}


static void on_listener (struct evloop *loop, int fd, unsigned ev, void *data) {
  struct sync *s = data;
  struct sockaddr_storage peer;
  socklen_t len;
  int i = 0;
  (void)loop;
  (void)ev;
  while (s->w->ls[i].fd != fd) i++;
  if (worker_stopping(s->w)) return;
  if (s->w->ls[i].stream) {
    int cfd = model_accept(s->w, fd, &peer, &len);
    if (cfd == -EAGAIN) return;
    if (cfd < 0) {
      log_warn("accept on %s: %s", s->w->ls[i].name, strerror(-cfd));
      return;
    }
    struct lconn *c = model_request(s->x, lsrv_L(s->x), i, cfd, NULL, 0,
                                    &peer, len);
    if (c == NULL) return;  /* refused, released */
    run(s, c);
    model_release(s->w, (struct sockaddr *)&peer);
  }
  else {
    long n = model_recv(s->w, fd, s->dgram, DGRAM_MAX, &peer, &len);
    struct lconn *c;
    if (n < 0) return;
    c = model_request(s->x, lsrv_L(s->x), i, -1, s->dgram, (size_t)n,
                      &peer, len);
    if (c != NULL) run(s, c);
  }
}


static void on_signal (struct evloop *loop, int fd, unsigned ev, void *data) {
  struct sync *s = data;
  (void)loop;
  (void)fd;
  (void)ev;
  worker_signals(s->w);
}


static void on_service (struct evloop *loop, struct timer *t) {
  struct sync *s = t->data;
  lstate_call_hook(s->x, "service_actions", 0);
  timer_start(loop, t, evloop_now(loop) + 0.5);
}


static int serve_sync (struct worker *w) {
  struct sync s = {w, NULL, NULL, {0, -1, NULL, NULL}, NULL};
  int rc = 1;
  if ((s.loop = evloop_new()) == NULL || (s.dgram = malloc(DGRAM_MAX)) == NULL) {
    log_error("error: %s", strerror(errno ? errno : ENOMEM));
    goto out;
  }
  if ((s.x = model_start(w, &sched_blocking)) == NULL) goto out;
  for (int i = 0; i < w->nls; i++)
    evloop_add(s.loop, w->ls[i].fd, EV_READ, on_listener, &s);
  evloop_add(s.loop, w->sig_fd[0], EV_READ, on_signal, &s);
  model_ready(w);
  timer_init(&s.service, on_service, &s);
  timer_start(s.loop, &s.service, evloop_now(s.loop) + 0.5);
  while (!worker_stopping(w))
    if (evloop_run_once(s.loop, 1.0) < 0) break;
  model_finish(s.x);
  rc = 0;
out:
  evloop_free(s.loop);
  free(s.dgram);
  return rc;
}


const struct model model_sync = {
  .name = "sync",
  .serve = serve_sync,
};
