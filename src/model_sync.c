/*
** model_sync.c -- socketserver's plain servers: one request at a time in
** the worker. The skeleton's loop (model.c) only decides which listener
** goes next; the request runs to its end inside take, its waits blocking
** in poll (sched_block).
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>

#include "admin.h"
#include "log.h"
#include "lsrv.h"
#include "model.h"

struct sync {
  struct mloop ml;            /* first: take gets it */
  char *dgram;                /* DGRAM_MAX bytes */
  struct lconn *cur;          /* the request running, or NULL */
};


/* The console's "connections": the one request, if it is a connection. */
static void conns (struct mloop *ml, struct admin_out *o) {
  struct sync *s = (struct sync *)ml;
  if (s->cur != NULL && s->cur->io.fd >= 0)
    admin_conn(o, s->cur, ml->blocked != NULL ? ml->blocked : "running");
}


/* Takes one request from listener i and runs it to its end. */
static int take (struct mloop *ml, int i, int max) {
  struct sync *s = (struct sync *)ml;
  struct listener *l = &ml->w->ls[i];
  lua_State *L = lsrv_L(ml->x);
  struct sockaddr_storage peer;
  struct lconn *c;
  socklen_t len;
  (void)max;
  if (l->stream) {
    int cfd = model_accept(ml->w, l->fd, &peer, &len);
    if (cfd < 0) {
      if (cfd != -EAGAIN) log_warn("accept on %s: %s", l->name, strerror(-cfd));
      return 0;
    }
    if ((c = model_request(ml->x, L, i, cfd, NULL, 0, &peer, len)) == NULL)
      return 0;  /* refused, released */
    model_count_request(ml->w);
    s->cur = c;
    model_run(ml->x, c, 0);
    s->cur = NULL;
    model_release(ml->w, (struct sockaddr *)&peer);
  }
  else {
    long n = model_recv(ml->w, l->fd, s->dgram, DGRAM_MAX, &peer, &len);
    if (n < 0) return 0;
    if ((c = model_request(ml->x, L, i, -1, s->dgram, (size_t)n, &peer,
                           len)) == NULL)
      return 0;
    model_count_request(ml->w);
    model_run(ml->x, c, 0);
  }
  return 1;
}


static int serve_sync (struct worker *w) {
  struct sync s;
  int rc = 1;
  memset(&s, 0, sizeof s);
  s.ml.limit = 1;
  s.ml.batch = 1;
  s.ml.take = take;
  s.ml.conns = conns;
  if (model_loop_init(&s.ml, w) < 0) goto out;
  if ((s.dgram = malloc(DGRAM_MAX)) == NULL) {
    log_error("error: %s", strerror(ENOMEM));
    goto out;
  }
  if ((s.ml.x = model_start(w, &sched_blocking)) == NULL) goto out;
  admin_watch_blocking(&s.ml);
  model_loop_run(&s.ml);
  model_finish(s.ml.x);
  rc = 0;
out:
  model_loop_free(&s.ml);
  free(s.dgram);
  return rc;
}


const struct model model_sync = {
  .name = "sync",
  .serve = serve_sync,
};
