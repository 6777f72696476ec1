/*
** model_fork.c -- socketserver's ForkingMixIn: each request (connection or
** datagram) runs in a child forked from the worker, which inherits the
** worker's loaded Lua state; whatever the child changes is lost with it.
** The worker only accepts, forks, reaps and counts; it never runs handler
** code. At most --max-children are alive: at the limit the listeners
** leave the loop and further clients wait in the backlog.
*/
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "log.h"
#include "lsrv.h"
#include "model.h"

#define ACCEPT_BATCH 16       /* requests forked per readiness event */

struct forker {
  struct mloop ml;            /* first: the skeleton's hooks get it */
  struct worker *w;
  struct lctx *x;
  char *dgram;                /* DGRAM_MAX bytes for model_recv */
  pid_t *pids;                /* children alive: max_children slots, 0 free */
  struct sockaddr_in6 *srcs;  /* --max-per-source: each child's client */
  int nchildren;
  int chld_fd;                /* signalfd for SIGCHLD */
  sigset_t oldmask;           /* the mask before SIGCHLD was blocked */
};

/* {====================================================== the child */

/*
** Makes a fresh child fit to run one request. A SIGTERM or SIGINT, the
** worker's when it stops, or one sent to the whole process group (^C,
** systemd), ends the child's wait for a next request of its own (a
** kept-alive connection closes at once, as in the other models) but
** never cuts a request short: the worker kills children left after
** --grace (worker_signals_child). The child keeps the write end of the
** worker's stop pipe: a server:shutdown() in the child reaches the
** worker through it.
*/
static void child_setup (struct forker *f, pid_t parent) {
  int rc = worker_signals_child(f->w);
  sigprocmask(SIG_SETMASK, &f->oldmask, NULL);
  /* a child never outlives its worker (a second ^C, a crash) */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(1);  /* it died before prctl */
  if (rc < 0) {
    log_warn("request process %d: %s", (int)getpid(), strerror(-rc));
    _exit(1);
  }
  close(f->chld_fd);
}


/*
** Runs the flow on the request at the top of the stack, as model_sync
** does, minus verify_request, which the worker ran. Then leaves without
** running anything of the worker's: no server_close, no listener
** clean-up (_exit, not exit).
*/
static void child_run (struct forker *f, struct lconn *c) {
  ltimer_forked(f->x);  /* the worker's timers run in the worker */
  /* verified by the worker before the fork; not with --proxy-protocol,
  ** whose header (which says who the client is) the child reads first */
  model_run(f->x, c, !f->w->cfg->proxy_protocol);
  fflush(NULL);  /* what the handler print()ed; the worker flushed its own */
  _exit(0);
}

/* }====================================================== */


/* {====================================================== children */

static void track (struct forker *f, pid_t pid, const struct sockaddr *src,
                   socklen_t len) {
  int i = 0;
  while (f->pids[i] != 0) i++;  /* a free slot exists: we are under the limit */
  f->pids[i] = pid;
  f->nchildren++;
  memset(&f->srcs[i], 0, sizeof f->srcs[i]);
  if (src != NULL)  /* counted in by model_accept, out when it is reaped */
    memcpy(&f->srcs[i], src, len < sizeof f->srcs[i] ? len : sizeof f->srcs[i]);
}


/* Forgets pid; 0 if it is not one of our children. */
static int untrack (struct forker *f, pid_t pid) {
  for (int i = 0; i < f->w->cfg->max_children; i++) {
    if (f->pids[i] == pid) {
      f->pids[i] = 0;
      f->nchildren--;
      if (f->srcs[i].sin6_family != AF_UNSPEC)
        model_release(f->w, (struct sockaddr *)&f->srcs[i]);
      return 1;
    }
  }
  return 0;
}


/* Reaps every child that has ended; SIGCHLDs coalesce, so loop. */
static void reap (struct forker *f) {
  pid_t pid;
  int status;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    if (!untrack(f, pid)) continue;  /* one the script started */
    if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL)
      log_warn("request process %d died of signal %d", (int)pid,
               WTERMSIG(status));
    else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)  /* os.exit */
      log_warn("request process %d exited with status %d", (int)pid,
               WEXITSTATUS(status));
  }
}


static void on_child (struct evloop *loop, int fd, unsigned ev, void *data) {
  struct forker *f = data;
  struct signalfd_siginfo si[8];
  (void)loop;
  (void)ev;
  while (read(fd, si, sizeof si) > 0)
    ;
  reap(f);
  model_accepting(&f->ml);
}


/*
** Forks a child for request c, at the top of the stack. Returns 0 or
** -errno; the worker's copy of c is left to the caller to close.
*/
static int spawn (struct forker *f, struct lconn *c, const struct sockaddr *src,
                  socklen_t len) {
  pid_t parent = getpid(), pid;
  sigset_t stops, mask;
  int en;
  fflush(NULL);  /* or the child would write the worker's buffers again */
  /* a stop signal before the child has its own handlers would run the
  ** worker's there, which stop the worker: held until it has them */
  sigemptyset(&stops);
  sigaddset(&stops, SIGTERM);
  sigaddset(&stops, SIGINT);
  sigprocmask(SIG_BLOCK, &stops, &mask);
  pid = fork();
  en = errno;
  if (pid != 0) sigprocmask(SIG_SETMASK, &mask, NULL);
  if (pid < 0) return -en;
  if (pid == 0) {
    child_setup(f, parent);
    child_run(f, c);
  }
  track(f, pid, src, len);
  return 0;
}

/* }====================================================== */


/* {====================================================== the worker's loop */



/*
** Takes one request from listener i, verifies it and forks it; 1, or 0
** when there is none.
*/
static int take (struct mloop *ml, int i, int max) {
  struct forker *f = (struct forker *)ml;
  struct listener *l = &f->w->ls[i];
  lua_State *L = lsrv_L(f->x);
  struct sockaddr_storage peer;
  struct lconn *c;
  socklen_t len;
  int rc = 0;
  (void)max;
  if (l->stream) {
    int cfd = model_accept(f->w, l->fd, &peer, &len);
    if (cfd < 0) {
      if (cfd != -EAGAIN && cfd != -ECONNABORTED)
        log_warn("accept on %s: %s", l->name, strerror(-cfd));
      return 0;
    }
    if ((c = model_request(f->x, L, i, cfd, NULL, 0, &peer, len)) == NULL)
      return 1;  /* refused, released: try the next */
  }
  else {
    long n = model_recv(f->w, l->fd, f->dgram, DGRAM_MAX, &peer, &len);
    if (n < 0) return n == -EAGAIN ? 0 : 1;
    if ((c = model_request(f->x, L, i, -1, f->dgram, (size_t)n, &peer,
                           len)) == NULL)
      return 1;
  }
  model_count_request(f->w);
  /* socketserver runs verify_request in the server process: what it
  ** counts persists, and a refused client costs no fork */
  if (!f->w->cfg->proxy_protocol && !lstate_verify(f->x)) rc = 1;
  else if ((rc = spawn(f, c, l->stream ? (struct sockaddr *)&peer : NULL,
                       len)) < 0)
    log_warn("dropping a request on %s: fork: %s", l->name, strerror(-rc));
  if (rc != 0 && l->stream) model_release(f->w, (struct sockaddr *)&peer);
  lstate_cpu_end(f->x);  /* the worker's part (verify_request) is done */
  lconn_abort(c);  /* the worker's copy: the child has its own */
  lua_pop(L, 1);
  return rc < 0 ? 0 : 1;
}


static long busy (struct mloop *ml) {
  return ((struct forker *)ml)->nchildren;
}


/*
** The worker began to stop: its children end their idle waits (a
** kept-alive connection between two requests) at once; requests they
** are running go on until the grace.
*/
static void stopped (struct mloop *ml) {
  struct forker *f = (struct forker *)ml;
  for (int i = 0; i < f->w->cfg->max_children; i++)
    if (f->pids[i] != 0) kill(f->pids[i], SIGTERM);
}


/* Kills the children still running after the grace and reaps them. */
static void kill_children (struct forker *f) {
  int n = f->nchildren;
  if (n == 0) return;
  log_warn("grace period over: cutting %d request%s short", n,
           n == 1 ? "" : "s");
  for (int i = 0; i < f->w->cfg->max_children; i++)
    if (f->pids[i] != 0) kill(f->pids[i], SIGKILL);
  for (int i = 0; i < f->w->cfg->max_children; i++) {
    int status;
    if (f->pids[i] == 0) continue;
    while (waitpid(f->pids[i], &status, 0) < 0 && errno == EINTR)
      ;
    f->pids[i] = 0;
  }
  f->nchildren = 0;
}

/* }====================================================== */


/* Blocks SIGCHLD and opens a signalfd for it; 0 or -errno. */
static int watch_children (struct forker *f) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &set, &f->oldmask) < 0) return -errno;
  f->chld_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (f->chld_fd < 0) {
    int en = errno;
    sigprocmask(SIG_SETMASK, &f->oldmask, NULL);
    return -en;
  }
  return 0;
}


static int start (struct forker *f) {
  int rc;
  f->dgram = malloc(DGRAM_MAX);
  f->pids = calloc((size_t)f->w->cfg->max_children, sizeof *f->pids);
  f->srcs = calloc((size_t)f->w->cfg->max_children, sizeof *f->srcs);
  if (f->dgram == NULL || f->pids == NULL || f->srcs == NULL) {
    log_error("error: %s", strerror(ENOMEM));
    return -1;
  }
  if ((rc = watch_children(f)) < 0) {
    log_error("error: signalfd: %s", strerror(-rc));
    return -1;
  }
  return 0;
}


/* The console's "connections": the children serve them, unseen here. */
static const char *note (struct mloop *ml) {
  static char buf[96];
  long n = ((struct forker *)ml)->nchildren;
  snprintf(buf, sizeof buf, "; %ld child%s serving a client each (not "
           "listed)", n, n == 1 ? "" : "ren");
  return buf;
}


static int serve_fork (struct worker *w) {
  struct forker f;
  int rc = 1;
  memset(&f, 0, sizeof f);
  f.w = w;
  f.chld_fd = -1;
  f.ml.limit = w->cfg->max_children;
  f.ml.batch = ACCEPT_BATCH;
  f.ml.take = take;
  f.ml.busy = busy;
  f.ml.note = note;
  f.ml.stopped = stopped;
  if (model_loop_init(&f.ml, w) < 0 || start(&f) < 0) goto out;
  if ((f.x = model_start(w, &sched_blocking)) == NULL) goto out;
  f.ml.x = f.x;
  evloop_add(f.ml.loop, f.chld_fd, EV_READ, on_child, &f);
  model_loop_run(&f.ml);
  kill_children(&f);
  model_finish(f.x);
  rc = 0;
out:
  if (f.chld_fd >= 0) {
    close(f.chld_fd);
    sigprocmask(SIG_SETMASK, &f.oldmask, NULL);
  }
  model_loop_free(&f.ml);
  free(f.dgram);
  free(f.pids);
  free(f.srcs);
  return rc;
}


const struct model model_fork = {
  .name = "fork",
  .serve = serve_fork,
};
