/*
** sched.c -- the one place that decides how a task waits: yield to the
** model's loop, or block this thread. Request I/O, luasrv.sleep, connect
** and its name lookups, and light threads' wait and join all come here;
** the model's table (struct sched_ops) says what either way means.
*/
#include <errno.h>
#include <poll.h>

#include <lua.h>

#include "lsrv.h"

char lsrv_yield_token;
char lsrv_park_token;


int sched_switches (struct task *t) {
  return t->x->ops->arm != NULL && t != &t->x->main_task;
}


/*
** A task in a loop yields: an outbound connection joins the loop when a
** task first waits on it (one made or pooled in init, by the main task,
** had no loop yet), the model arms the wake-up, and the yield carries
** the token that tells the loop the task waits for it. Anything else
** (sync, fork, thread, and code outside a request) blocks right here.
*/
int sched_wait (lua_State *L, struct lconn *c, unsigned ev, double deadline,
                lua_KContext kc, lua_KFunction k) {
  struct task *t = lsrv_task(L);
  const struct sched_ops *ops = t->x->ops;
  if ((ev & EV_IDLEWAIT) && worker_stopping(t->x->w)) return ERR_CUT;
  if (sched_switches(t)) {
    if (c != NULL && (c->io.flags & LC_UNWATCHED)) {
      int rc = ops->attach(t->x, c);
      if (rc < 0) return rc;
      c->io.flags &= ~LC_UNWATCHED;
    }
    ops->arm(t, c, ev, deadline);
    lua_pushlightuserdata(L, &lsrv_yield_token);
    return lua_yieldk(L, 1, kc, k);  /* does not return here */
  }
  return ops->block(t->x, c, ev, deadline);
}


int sched_result (lua_State *L, int status) {
  return status == LUA_YIELD ? lsrv_task(L)->wait_rc : 0;
}


void sched_detach (struct lconn *c) {
  if (c->x->ops->detach != NULL) c->x->ops->detach(c->x, c);
}


int sched_park (struct lconn *c, evloop_fn *fn, void *data) {
  const struct sched_ops *ops = c->x->ops;
  return ops->park != NULL ? ops->park(c->x, c, fn, data) : -1;
}


void sched_unpark (struct lctx *x, int fd, struct lconn *c) {
  if (x->ops->unpark != NULL) x->ops->unpark(x, fd, c);
}


int sched_block (struct lctx *x, struct lconn *c, unsigned ev, double deadline) {
  int rc;
  if (c == NULL) {  /* a sleep: its end is no failure */
    rc = worker_block(x->w, -1, 0, deadline, 0);
    return rc == ERR_TIMEOUT ? 0 : rc;
  }
  rc = worker_block(x->w, c->io.fd, ev & EV_READ ? POLLIN : POLLOUT, deadline,
                    (ev & EV_IDLEWAIT) != 0);
  if (rc == 0) c->io.flags |= ev & EV_READ ? LC_READABLE : LC_WRITABLE;
  return rc;
}


const struct sched_ops sched_blocking = {
  .name = "blocking",
  .block = sched_block,
};
