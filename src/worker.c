/*
** worker.c -- a worker's stop state and signals, and the blocking wait
** (worker_block) under the scheduler's. Signal handlers only set flags
** and write to pipes; everything else happens in the loop. It knows no
** model: the master runs one in it (model_serve).
*/
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "evloop.h"
#include "log.h"
#include "worker.h"

/* Set by signal handlers; read by the worker's loop. */
static volatile sig_atomic_t sig_ints;
static volatile sig_atomic_t sig_reopen;  /* SIGUSR1: reopen the log */
/* Also read by handler threads (worker_block): an atomic, which is as
** safe in a signal handler as sig_atomic_t when lock-free. */
static atomic_int sig_stop;
/* A fork model's child (worker_signals_child), and a stop of it alone */
static int in_child;
static atomic_int sig_stop_here;
/* Written once before the handlers are installed, read-only after. */
static int sig_stop_wfd = -1, sig_wake_wfd = -1;


static void on_signal (int signo) {
  int saved = errno;
  if (signo == SIGUSR2) return;  /* the master's upgrade: not ours */
  /* a second ^C: leave now (the master removes the socket files) */
  if (signo == SIGINT && sig_ints++ > 0) _exit(130);
  if (signo == SIGUSR1) sig_reopen = 1;
  else sig_stop = 1;
  if (signo != SIGUSR1 && write(sig_stop_wfd, "s", 1) < 0) {
    /* full pipe: already stopping */
  }
  if (write(sig_wake_wfd, "w", 1) < 0) { /* full pipe: a wake-up is pending */ }
  errno = saved;
}


static int make_pipe (int fds[2]) {
  return pipe2(fds, O_NONBLOCK | O_CLOEXEC);
}


int worker_init (struct worker *w, const struct config *cfg,
                 struct listener *ls, int nls, int id) {
  memset(w, 0, sizeof *w);
  w->cfg = cfg;
  w->ls = ls;
  w->nls = nls;
  w->id = id;
  w->pid = getpid();
  w->ready_fd = -1;
  w->admin_fd = -1;
  /* libuv's trick: with no descriptor left, give this one up to accept
  ** the waiting client and close it, instead of spinning on EMFILE */
  w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (cfg->max_per_source > 0 &&
      ((w->sources = malloc(sizeof *w->sources)) == NULL ||
       srctab_init(w->sources, cfg->max_per_source) < 0)) {
    free(w->sources);
    w->sources = NULL;
    return -ENOMEM;
  }
  atomic_init(&w->stopping, 0);
  atomic_init(&w->orphaned, 0);
  atomic_init(&w->cut_at, 0.0);
  atomic_init(&w->served, 0);
  atomic_init(&w->oom, 0);
  if (make_pipe(w->stop_fd) < 0) return -errno;
  if (make_pipe(w->sig_fd) < 0) {
    int en = errno;
    close(w->stop_fd[0]);
    close(w->stop_fd[1]);
    return -en;
  }
  return 0;
}


void worker_close (struct worker *w) {
  if (w->sources != NULL) {
    srctab_free(w->sources);
    free(w->sources);
  }
  if (w->spare_fd >= 0) close(w->spare_fd);
  for (int i = 0; i < 2; i++) {
    close(w->stop_fd[i]);
    close(w->sig_fd[i]);
  }
}


/* fn handles signo; system calls it interrupts go on (SA_RESTART). */
static void catch (int signo, void (*fn) (int)) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fn;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(signo, &sa, NULL);
}


void worker_signals_install (struct worker *w) {
  sig_stop_wfd = w->stop_fd[1];
  sig_wake_wfd = w->sig_fd[1];
  catch(SIGTERM, on_signal);
  catch(SIGINT, on_signal);
  catch(SIGUSR1, on_signal);
  /* a handler, not SIG_IGN: a program a handler runs gets the default */
  catch(SIGUSR2, on_signal);
  signal(SIGHUP, SIG_IGN);  /* the master reloads (master.c) */
  signal(SIGPIPE, SIG_IGN);
}


/* A fork model's child's SIGTERM and SIGINT (SIGHUP: nothing). */
static void on_child_signal (int signo) {
  int saved = errno;
  if (signo != SIGHUP) {
    sig_stop_here = 1;
    if (write(sig_stop_wfd, "s", 1) < 0) { /* full pipe: already told */ }
  }
  errno = saved;
}


int worker_signals_child (struct worker *w) {
  int p[2];
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) return -errno;
  /* the worker's read end would turn readable when the worker stops, and
  ** this process's flag would not say so: worker_block would spin */
  close(w->stop_fd[0]);
  w->stop_fd[0] = p[0];
  sig_stop_wfd = p[1];
  catch(SIGTERM, on_child_signal);
  catch(SIGINT, on_child_signal);
  catch(SIGHUP, on_child_signal);  /* not SIG_IGN: programs get the default */
  if (sig_stop) sig_stop_here = 1;  /* the worker's, before the handlers */
  sig_stop = 0;
  in_child = 1;
  return 0;
}


/* A fork child's stop: as worker_stop, but the worker is not told. */
static void stop_here (struct worker *w) {
  double unset = 0.0;
  atomic_compare_exchange_strong(&w->cut_at, &unset,
                                 monotonic_now() + w->cfg->grace);
  atomic_store(&w->stopping, 1);
}


/*
** An orphaned worker gives the port up at once. shutdown(2), not close:
** the descriptor stays valid for the model's loop (which stops watching
** it once stopping), while the socket, shared with every other worker,
** stops listening: the port can be bound again (SO_REUSEADDR), a Unix
** socket file refuses connections (a new server replaces it), and
** clients still queued are reset rather than left to wait --grace. Only
** the worker itself: a fork-model child's parent is the worker.
*/
static void release_listeners (struct worker *w) {
  if (w->master <= 0 || atomic_load(&w->orphaned) || getpid() != w->pid ||
      getppid() == w->master || atomic_exchange(&w->orphaned, 1) != 0)
    return;
  for (int i = 0; i < w->nls; i++)
    if (w->ls[i].stream && w->ls[i].fd >= 0) shutdown(w->ls[i].fd, SHUT_RDWR);
  log_warn("worker %d: the master is gone: listeners closed, draining",
           w->id);
}


void worker_stop (struct worker *w) {
  int expected = 0;
  double unset = 0.0;
  /* The deadline before the flag: a thread that sees stopping reads
  ** cut_at next, and 0 there would make its wait endless. */
  atomic_compare_exchange_strong(&w->cut_at, &unset,
                                 monotonic_now() + w->cfg->grace);
  if (atomic_compare_exchange_strong(&w->stopping, &expected, 1) &&
      write(w->stop_fd[1], "s", 1) < 0) { /* readable already */ }
  /* after the flag, so the models no longer accept from what it shuts;
  ** also when a stop (a reload) began already */
  release_listeners(w);
}


int worker_stop_signalled (void) {
  return atomic_load(&sig_stop) != 0;
}


/* A stop signal becomes the stop: the worker's, or a fork child's own. */
static void take_stop_signal (struct worker *w) {
  if (sig_stop) worker_stop(w);
  else if (sig_stop_here) stop_here(w);
}


void worker_signals (struct worker *w) {
  char drain[64];
  if (!in_child) {  /* a child's signal pipe is the worker's: not its to read */
    while (read(w->sig_fd[0], drain, sizeof drain) > 0)
      ;
    if (sig_reopen) {
      sig_reopen = 0;
      log_reopen();  /* a failure: the master said so; lines go on to the old */
    }
  }
  take_stop_signal(w);
}


int worker_block (struct worker *w, int fd, short events, double deadline,
                  int idle) {
  for (;;) {
    struct pollfd p[3];
    int n = 1, stopping, ms, cut = 0, admin = -1;
    double now = monotonic_now(), until = deadline;
    take_stop_signal(w);
    stopping = worker_stopping(w);
    if (stopping && idle) return -ECANCELED;
    if (stopping) {
      double c = atomic_load(&w->cut_at);
      if (until == 0 || c < until) {
        until = c;
        cut = 1;
      }
    }
    if (until > 0 && now >= until) return cut ? -ECANCELED : -ETIMEDOUT;
    p[0].fd = fd;
    p[0].events = events;
    p[0].revents = 0;
    if (!stopping) {  /* wake when a stop begins, to learn the deadline */
      p[1].fd = w->stop_fd[0];
      p[1].events = POLLIN;
      p[1].revents = 0;
      n = 2;
    }
    if (w->admin_hook != NULL && w->admin_fd >= 0 && !w->admin_held) {
      admin = n;  /* the console asks while we wait */
      p[n].fd = w->admin_fd;
      p[n].events = POLLIN;
      p[n++].revents = 0;
    }
    ms = until > 0 ? (int)ceil((until - now) * 1000.0) : -1;
    n = poll(p, (nfds_t)n, ms);
    if (n < 0 && errno != EINTR) return -errno;
    if (n > 0 && p[0].revents != 0) return 0;
    if (n > 0 && admin >= 0 && p[admin].revents != 0)
      w->admin_hook(w, fd < 0 ? "sleep" : events & POLLOUT ? "write" : "read");
  }
}

