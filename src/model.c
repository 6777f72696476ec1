/*
** model.c -- what every concurrency model does the same way: start a Lua
** state and announce the listeners, count requests for --once, accept and
** receive without surprises.
*/
#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "lsrv.h"
#include "model.h"


struct lctx *model_start (struct worker *w, const struct waitops *ops) {
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


int model_accept (int lfd, struct sockaddr_storage *peer, socklen_t *len) {
  int fd;
  do {
    *len = sizeof *peer;
    fd = accept4(lfd, (struct sockaddr *)peer, len,
                 SOCK_NONBLOCK | SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  return fd < 0 ? -errno : fd;
}


long model_recv (int fd, char *buf, size_t cap,
                 struct sockaddr_storage *peer, socklen_t *len) {
  ssize_t n;
  do {
    *len = sizeof *peer;
    n = recvfrom(fd, buf, cap, MSG_TRUNC, (struct sockaddr *)peer, len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  if ((size_t)n > cap) {
    log_warn("dropped a datagram of %zd bytes (at most %zu)", n, cap);
    return -EMSGSIZE;
  }
  return (long)n;
}
