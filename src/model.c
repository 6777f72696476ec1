/*
** model.c -- what every concurrency model does the same way: start a Lua
** state and announce the listeners, count requests for --once, accept and
** receive without surprises, make a request object without ever failing
** the worker, and the skeleton (struct mloop): the loop, the accept loop
** under the limit, signals, service_actions, the grace, running the flow.
*/
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "acl.h"
#include "admin.h"
#include "address.h"
#include "evloop.h"
#include "log.h"
#include "lsrv.h"
#include "model.h"
#include "tls.h"

#define SERVICE_EVERY 0.5     /* seconds between service_actions calls */


struct lctx *model_start (struct worker *w, const struct sched_ops *ops) {
  char err[1024];
  struct lctx *x = lstate_new(w, w->cfg->script, ops, err, sizeof err);
  if (x == NULL) {
    log_error("error: %s", err);
    return NULL;
  }
  if (lstate_call_hook(x, "init", 1) < 0) {
    lstate_close(x);
    return NULL;
  }
  return x;
}


int model_serve (const struct model *m, struct worker *w) {
  int rc = m->serve(w);
  return atomic_load(&w->oom) ? 1 : rc;
}


void model_ready (struct worker *w) {
  if (w->ready_fd < 0) {  /* no master: announce the listeners ourselves */
    for (int i = 0; i < w->nls; i++)
      log_info("listening on %s", w->ls[i].name);
    return;
  }
  if (write(w->ready_fd, "r", 1) < 0) { /* the master is gone: it will not wait */ }
  close(w->ready_fd);
  w->ready_fd = -1;
}


void model_finish (struct lctx *x) {
  lstate_call_hook(x, "server_close", 0);
  lstate_close(x);
}


void model_count_request (struct worker *w) {
  if (atomic_fetch_add(&w->served, 1) == 0 && w->cfg->once) worker_stop(w);
}


/* Logs "what" for a client at most once a second, with a count of the rest. */
static void log_limited (double *last, long *count,
                         const char *what, const struct sockaddr_storage *peer) {
  double now = monotonic_now();
  char addr[ADDRESS_STRLEN];
  (*count)++;
  if (now - *last < 1.0) return;
  address_format_peer((const struct sockaddr *)peer, sizeof *peer, addr,
                      sizeof addr);
  if (*count > 1)
    log_warn("%s %s (and %ld more in the last second)", what, addr, *count - 1);
  else
    log_warn("%s %s", what, addr);
  *last = now;
  *count = 0;
}


void model_out_of_memory (struct worker *w) {
  if (!atomic_exchange(&w->oom, 1))
    log_error("the worker is out of memory (%s): it stops, to be replaced",
              strerror(ENOMEM));
  worker_stop(w);
}


/*
** The state had no memory for a request. At its --memory-limit that is
** the state's business: this client is refused, the others go on. A heap
** that is full without a limit (ulimit -v) will not get better: the
** worker stops, and exits 1 so that the master starts a fresh one.
*/
static void out_of_memory (struct lctx *x, const struct sockaddr_storage *peer) {
  if (x->sys_oom || x->mem_limit == 0) {
    model_out_of_memory(x->w);
    return;
  }
  log_limited(&x->oom_logged, &x->oom_refused,
              "out of memory (--memory-limit): refused a client of", peer);
}


void model_refuse (struct lctx *x, int fd, const struct sockaddr_storage *peer) {
  out_of_memory(x, peer);
  if (fd >= 0) {
    close(fd);
    model_release(x->w, (const struct sockaddr *)peer);
  }
}


struct lconn *model_request (struct lctx *x, lua_State *L, int lindex, int fd,
                             const char *data, size_t len,
                             const struct sockaddr_storage *peer,
                             socklen_t peerlen) {
  const struct sockaddr *sa = (const struct sockaddr *)peer;
  struct lconn *c = fd >= 0 ? lconn_new(L, x, fd, lindex, sa, peerlen)
                            : lconn_new_dgram(L, x, lindex, data, len, sa,
                                              peerlen);
  if (c != NULL) {
    lstate_cpu_begin(x, lsrv_task(L), 1);  /* a request starts on L's task */
    return c;
  }
  model_refuse(x, fd, peer);
  return NULL;
}


void model_fix_sender (struct sockaddr_storage *peer, socklen_t *len) {
  if (*len < (socklen_t)sizeof(sa_family_t)) {
    peer->ss_family = AF_UNIX;  /* ((struct sockaddr_un *)peer)->sun_path: "" */
    ((char *)peer)[sizeof(sa_family_t)] = '\0';
    *len = sizeof(sa_family_t);
  }
}


int model_allowed (struct worker *w, const struct sockaddr_storage *peer) {
  if (w->cfg->nacl == 0 ||
      acl_allows(w->cfg->acl, w->cfg->nacl, (const struct sockaddr *)peer))
    return 1;
  log_limited(&w->refused_logged, &w->refused,
              "refused (--allow/--deny) a client from", peer);
  return 0;
}


/* --max-per-source: counts the client in, or refuses it (logged). */
static int admit (struct worker *w, const struct sockaddr_storage *peer) {
  struct srckey k;
  if (w->sources == NULL || srckey_of((const struct sockaddr *)peer, &k) < 0 ||
      srctab_enter(w->sources, &k) != 0)
    return 1;
  log_limited(&w->refused_logged, &w->refused,
              "refused (--max-per-source) a client from", peer);
  return 0;
}


void model_release (struct worker *w, const struct sockaddr *peer) {
  struct srckey k;
  if (w->mslot != NULL)
    atomic_fetch_sub_explicit(&w->mslot->conn_open, 1, memory_order_relaxed);
  if (w->sources != NULL && srckey_of(peer, &k) == 0)
    srctab_leave(w->sources, &k);
}


/*
** Out of descriptors: turns the waiting clients away; -EAGAIN. Another
** thread of the worker (a handler opening a file) may take the spare's
** slot before we get it back; then, with nothing to turn clients away
** with, a short pause keeps a still-readable listener from spinning.
*/
static int shed (struct worker *w, int lfd, int err) {
  int fd, n = 0;
  if (w->spare_fd < 0) w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (w->spare_fd >= 0) {
    close(w->spare_fd);
    while ((fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
      close(fd);
      n++;
    }
    w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  if (n == 0) {
    struct timespec pause = {0, 10 * 1000 * 1000};  /* 10 ms */
    nanosleep(&pause, NULL);
  }
  w->shed += n;
  if (monotonic_now() - w->shed_logged >= 1.0) {
    log_warn("out of file descriptors (%s): turned %ld connection%s away",
             strerror(err), w->shed, w->shed == 1 ? "" : "s");
    w->shed_logged = monotonic_now();
    w->shed = 0;
  }
  return -EAGAIN;
}


int model_accept (struct worker *w, int lfd, struct sockaddr_storage *peer,
                  socklen_t *len) {
  for (;;) {
    int fd;
    *len = sizeof *peer;
    fd = accept4(lfd, (struct sockaddr *)peer, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      if (model_allowed(w, peer) && admit(w, peer)) {
        if (w->mslot != NULL) {
          atomic_fetch_add_explicit(&w->mslot->conn_total, 1,
                                    memory_order_relaxed);
          atomic_fetch_add_explicit(&w->mslot->conn_open, 1,
                                    memory_order_relaxed);
        }
        return fd;
      }
      close(fd);
      continue;
    }
    switch (errno) {
      case EINTR: case ECONNABORTED: continue;
      case EMFILE: case ENFILE: return shed(w, lfd, errno);
      default: return -errno;
    }
  }
}


long model_recv (struct worker *w, int fd, char *buf, size_t cap,
                 struct sockaddr_storage *peer, socklen_t *len) {
  for (;;) {
    ssize_t n;
    *len = sizeof *peer;
    n = recvfrom(fd, buf, cap, MSG_TRUNC, (struct sockaddr *)peer, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if ((size_t)n > cap) {
      log_warn("dropped a datagram of %zd bytes (at most %zu)", n, cap);
      return -EMSGSIZE;
    }
    model_fix_sender(peer, len);
    if (model_allowed(w, peer)) return (long)n;
  }
}


/* {====================================================== the skeleton */

static long busy (struct mloop *ml) {
  return ml->busy != NULL ? ml->busy(ml) : 0;
}


/*
** Listeners are in the loop while the worker is not stopping and has
** room under the limit; further clients wait in the backlog (the socket
** buffer, for datagrams).
*/
static void on_listener (struct evloop *loop, int fd, unsigned ev, void *data);

void model_accepting (struct mloop *ml) {
  int want = !worker_stopping(ml->w) && busy(ml) < ml->limit;
  if (want == ml->accepting) return;
  ml->accepting = want;
  for (int i = 0; i < ml->w->nls; i++) {
    if (want) evloop_add(ml->loop, ml->w->ls[i].fd, EV_READ, on_listener, ml);
    else evloop_del(ml->loop, ml->w->ls[i].fd);
  }
}


/*
** The accept loop. The limit is looked at before every request taken: a
** batch never takes more than the room left (--max-connections,
** --max-children, --max-threads hold exactly). --once takes one.
*/
static void on_listener (struct evloop *loop, int fd, unsigned ev, void *data) {
  struct mloop *ml = data;
  int i = 0, max = ml->w->cfg->once ? 1 : ml->batch;
  (void)loop;
  (void)ev;
  /* a stop signal whose pipe the loop has not read yet, as when the
  ** connection came while the worker waited for the CPU: it takes none */
  if (worker_stop_signalled()) worker_signals(ml->w);
  while (ml->w->ls[i].fd != fd) i++;
  for (int k = 0; k < max && !worker_stopping(ml->w); ) {
    long room = ml->limit - busy(ml);
    int n;
    if (room <= 0) break;
    ml->enough = 0;
    if ((n = ml->take(ml, i, room < max - k ? (int)room : max - k)) <= 0)
      break;
    k += n;
    if (ml->enough) break;
  }
  model_accepting(ml);
}


static void on_signal (struct evloop *loop, int fd, unsigned ev, void *data) {
  struct mloop *ml = data;
  (void)loop;
  (void)fd;
  (void)ev;
  worker_signals(ml->w);
  model_accepting(ml);
}


/*
** The stop pipe turns readable when the worker stops, whichever thread
** or process called worker_stop (server:shutdown() in a handler thread,
** or in a fork model's child, which shares the pipe; --once; a signal).
** It stays readable, so it leaves the loop.
*/
static void on_stop (struct evloop *loop, int fd, unsigned ev, void *data) {
  struct mloop *ml = data;
  (void)ev;
  evloop_del(loop, fd);
  worker_stop(ml->w);
  if (ml->x != NULL) ltimer_stop(ml->x);  /* premature runs, then none */
  if (ml->stopped != NULL) ml->stopped(ml);
  model_accepting(ml);
}


/* A console request from the master (admin.c), between requests. */
static void on_admin (struct evloop *loop, int fd, unsigned ev, void *data) {
  (void)loop;
  (void)fd;
  (void)ev;
  admin_request(data);
}


static void on_service (struct evloop *loop, struct timer *t) {
  struct mloop *ml = t->data;
  lstate_call_hook(ml->x, "service_actions", 0);
  lconnect_sweep(ml->x);  /* idle pooled connections past their time */
  tls_service();
  if (ml->serviced != NULL) ml->serviced(ml);
  timer_start(loop, t, evloop_now(loop) + SERVICE_EVERY);
}


int model_loop_init (struct mloop *ml, struct worker *w) {
  ml->w = w;
  ml->accepting = 0;
  timer_init(&ml->service, on_service, ml);
  if ((ml->loop = evloop_new()) == NULL) {
    log_error("error: %s", strerror(errno ? errno : ENOMEM));
    return -1;
  }
  evloop_add(ml->loop, w->sig_fd[0], EV_READ, on_signal, ml);
  evloop_add(ml->loop, w->stop_fd[0], EV_READ, on_stop, ml);
  if (w->admin_fd >= 0) evloop_add(ml->loop, w->admin_fd, EV_READ, on_admin, ml);
  return 0;
}


long model_loop_run (struct mloop *ml) {
  if (ml->x != NULL)
    timer_start(ml->loop, &ml->service, evloop_now(ml->loop) + SERVICE_EVERY);
  model_accepting(ml);
  model_ready(ml->w);
  for (;;) {
    double wait = 1.0;
    admin_pending(ml);  /* an eval the console asked for during a request */
    if (ml->x != NULL) {  /* timers run between requests */
      double next;
      ltimer_run(ml->x);
      if ((next = ltimer_next(ml->x)) > 0) {
        double d = next - evloop_update_now(ml->loop);
        wait = d < 0 ? 0 : d < wait ? d : wait;
      }
    }
    if (worker_stopping(ml->w)) {
      double left = atomic_load(&ml->w->cut_at) + ml->slack -
                    evloop_update_now(ml->loop);
      long n;
      model_accepting(ml);
      if (ml->x != NULL) ltimer_stop(ml->x);
      n = busy(ml);
      if ((n == 0 && (ml->x == NULL || ltimer_running(ml->x) == 0)) ||
          left <= 0)
        return n;
      if (ml->stopping != NULL) ml->stopping(ml);
      if (left < wait) wait = left;
      if (ml->tick > 0 && wait > ml->tick) wait = ml->tick;
    }
    if (evloop_run_once(ml->loop, wait) < 0) return busy(ml);
  }
}


void model_loop_free (struct mloop *ml) {
  if (ml->loop == NULL) return;
  timer_stop(ml->loop, &ml->service);
  evloop_free(ml->loop);
  ml->loop = NULL;
}


void model_run (struct lctx *x, struct lconn *c, int verified) {
  lua_State *L = lsrv_L(x);
  lstate_push_flow(L, x);
  lua_pushvalue(L, -2);  /* flow, req */
  lua_pushboolean(L, verified);
  if (lua_pcall(L, 2, 0, 0) != LUA_OK) {  /* the flow itself failed */
    lstate_report(L, c, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lstate_cpu_end(x);
  lconn_abort(c);
  lua_pop(L, 1);  /* the request */
}

/* }====================================================== */
