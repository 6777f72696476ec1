/*
** master.c -- the supervising master, as nginx runs it. The master owns
** the listening sockets and never runs Lua: it forks the workers, prints
** the startup lines once every worker serves, forwards signals, replaces
** a worker that dies (backing off when one keeps dying), and on SIGHUP
** starts a new generation of workers on the same sockets before it stops
** the old one, so not one queued connection is lost. A stopped generation
** drains (its in-flight requests finish, within --grace) while the next
** serves; up to MAX_DRAINING generations drain at once, so a reload while
** a long connection holds old code still deploys the new.
**
** A worker tells its state through its exit: 0 after a stop it was asked
** for (SIGTERM), or one it chose (server:shutdown(), --once), which stops
** the whole server; anything else is a crash. A worker that exits before
** it reported ready failed to load its script: at start-up the server
** exits 1, during a reload the old generation keeps serving.
*/
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <grp.h>
#include <unistd.h>

#include "evloop.h"
#include "log.h"
#include "master.h"
#include "metrics.h"
#include "model.h"
#include "tls.h"
#include "worker.h"

#define MAX_WORKERS 1024
#define BACKOFF_MIN 0.1       /* first delay after a quick crash */
#define BACKOFF_MAX 5.0
#define QUICK_CRASH 1.0       /* a worker that dies younger crashed quickly */
#define KILL_SLACK 2.0        /* after --grace, stragglers are killed */
/* Generations that may drain at once: each holds --workers processes
** (and their Lua states) until its last request ends. */
#define MAX_DRAINING 4

struct wproc {
  pid_t pid;                  /* 0: slot free */
  int id;                     /* 1..N, req.server.worker */
  unsigned gen;               /* generation (1, then +1 per reload) */
  int ready_fd;               /* read end; -1 once read */
  int ready;
  int retiring;               /* told to stop: its exit is expected */
  int respawned;              /* replaces a worker that died */
  double started;
};

struct master {
  const struct config *cfg;
  struct listener *ls;
  int nls;
  int sfd;                    /* signalfd */
  sigset_t oldmask;
  struct wproc *procs;        /* the serving generation, the next and
                              ** MAX_DRAINING draining ones: N slots each */
  int nprocs;
  unsigned gen;               /* the generation that serves */
  unsigned next_gen;          /* being started by a reload; 0: none */
  unsigned last_gen;          /* the newest number given */
  int announced;              /* startup lines printed */
  int stopping;
  int exit_code;
  int sigints;
  int reload_again;           /* a SIGHUP came while a reload was starting */
  double kill_at;             /* stopping: SIGKILL the rest then */
  double respawn_at[MAX_WORKERS + 1];  /* per id; 0: none pending */
  double backoff[MAX_WORKERS + 1];
  struct mslot *metrics;      /* --metrics: slots 1..workers, shared */
  struct listener mls;        /* --metrics listener; fd -1 when none */
};


/*
** systemd's readiness protocol (Type=notify / notify-reload): one datagram
** to $NOTIFY_SOCKET per state change; nothing when the variable is unset.
** A path starting with '@' is in the abstract namespace.
*/
static void sd_notify (const char *fmt, ...) {
  const char *path = getenv("NOTIFY_SOCKET");
  struct sockaddr_un sun;
  char msg[256];
  va_list ap;
  size_t plen;
  int fd, n;
  if (path == NULL || (path[0] != '/' && path[0] != '@') ||
      (plen = strlen(path)) >= sizeof sun.sun_path)
    return;
  va_start(ap, fmt);
  n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof msg) return;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path, plen);
  if (path[0] == '@') sun.sun_path[0] = '\0';
  /* non-blocking: a notification never holds the master up when the
  ** reader lags and its queue is full (the state is sent again later) */
  if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
    return;
  if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sun,
             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen)) < 0)
    log_debug("sd_notify: %s", strerror(errno));
  close(fd);
}


static unsigned long long monotonic_usec (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (unsigned long long)ts.tv_sec * 1000000ULL +
         (unsigned long long)ts.tv_nsec / 1000ULL;
}


static const char *signame (int sig) {
  const char *s = sigabbrev_np(sig);
  return s != NULL ? s : "?";
}


/* {====================================================== worker side */

static void close_master_fds (struct master *m) {
  close(m->sfd);
  for (int i = 0; i < m->nprocs; i++)
    if (m->procs[i].ready_fd >= 0) close(m->procs[i].ready_fd);
}


/* The model each --model runs in the workers. */
static const struct model *const models[] = {
  [MODEL_SYNC] = &model_sync, [MODEL_FORK] = &model_fork,
  [MODEL_THREAD] = &model_thread, [MODEL_EVENT] = &model_event,
};


/* Runs in the child: becomes worker id and never returns. */
static void run_worker (struct master *m, int id, int ready_wfd,
                        pid_t master_pid) {
  struct worker w;
  int rc;
  /* A master killed outright must not leave workers serving alone. */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != master_pid) _exit(1);
  close_master_fds(m);
  if (m->mls.fd >= 0) close(m->mls.fd);
  unsetenv("NOTIFY_SOCKET");  /* the master speaks for the server */
  if (m->cfg->setuser) {
    gid_t gid = (gid_t)m->cfg->gid;
    if (setgroups(1, &gid) < 0 || setgid(gid) < 0 ||
        setuid((uid_t)m->cfg->uid) < 0) {
      log_error("error: --user %s: %s", m->cfg->user, strerror(errno));
      exit(1);
    }
  }
  if (worker_init(&w, m->cfg, m->ls, m->nls, id) < 0) {
    log_error("error: worker %d: cannot create pipes", id);
    exit(1);
  }
  w.ready_fd = ready_wfd;
  w.master = master_pid;  /* its death makes the worker give the port up */
  if (m->metrics != NULL) w.mslot = &m->metrics[id];
  /* the handlers first, then unblock: a SIGTERM that came after the fork
  ** is pending, and must stop the worker gracefully, not kill it */
  worker_signals_install(&w);
  sigprocmask(SIG_SETMASK, &m->oldmask, NULL);
  rc = model_serve(models[m->cfg->model], &w);
  worker_close(&w);
  exit(rc);
}

/* }====================================================== */


static struct wproc *free_slot (struct master *m) {
  for (int i = 0; i < m->nprocs; i++)
    if (m->procs[i].pid == 0) return &m->procs[i];
  return NULL;
}


static struct wproc *spawn (struct master *m, int id, unsigned gen) {
  struct wproc *p = free_slot(m);
  int fds[2];
  pid_t pid, self = getpid();
  if (p == NULL) return NULL;
  if (pipe2(fds, O_CLOEXEC) < 0) {
    log_error("cannot start worker %d: %s", id, strerror(errno));
    return NULL;
  }
  pid = fork();
  if (pid < 0) {
    log_error("cannot start worker %d: %s", id, strerror(errno));
    close(fds[0]);
    close(fds[1]);
    return NULL;
  }
  if (pid == 0) {
    close(fds[0]);
    run_worker(m, id, fds[1], self);
  }
  close(fds[1]);
  memset(p, 0, sizeof *p);
  p->pid = pid;
  p->id = id;
  p->gen = gen;
  p->ready_fd = fds[0];
  p->started = monotonic_now();
  return p;
}


static void signal_gen (struct master *m, unsigned gen, int sig) {
  for (int i = 0; i < m->nprocs; i++) {
    struct wproc *p = &m->procs[i];
    if (p->pid != 0 && (gen == 0 || p->gen == gen)) {
      if (sig == SIGTERM) p->retiring = 1;
      kill(p->pid, sig);
    }
  }
}


static int count_gen (struct master *m, unsigned gen, int ready_only) {
  int n = 0;
  for (int i = 0; i < m->nprocs; i++) {
    struct wproc *p = &m->procs[i];
    if (p->pid != 0 && p->gen == gen && !p->retiring && (!ready_only || p->ready))
      n++;
  }
  return n;
}


static void begin_stop (struct master *m, int code) {
  if (m->stopping) return;
  m->stopping = 1;
  m->exit_code = code;
  m->kill_at = monotonic_now() + m->cfg->grace + KILL_SLACK;
  sd_notify("STOPPING=1");
  signal_gen(m, 0, SIGTERM);
}


/* A wildcard address is said in words: a bare --tcp PORT binds it. */
static const char *reach (const struct listener *l) {
  const struct sockaddr_in *in = (const struct sockaddr_in *)&l->addr.sa;
  const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&l->addr.sa;
  if (in->sin_family == AF_INET && in->sin_addr.s_addr == htonl(INADDR_ANY))
    return " (every IPv4 interface)";
  if (in6->sin6_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
    return " (every IPv6 interface)";
  return "";
}


/* The startup lines, once every worker serves; then the root warning. */
static void announce (struct master *m) {
  m->announced = 1;
  for (int i = 0; i < m->nls; i++)
    log_info("listening on %s%s", m->ls[i].name, reach(&m->ls[i]));
  if (geteuid() == 0 && !m->cfg->setuser)
    log_warn("warning: handlers run as root; --user USER drops that");
  sd_notify("READY=1\nMAINPID=%d\nSTATUS=serving", (int)getpid());
}


static void reload (struct master *m);


/* The reload that was asked for while one started runs now. */
static void reload_queued (struct master *m) {
  if (!m->reload_again) return;
  m->reload_again = 0;
  reload(m);
}


/* A generation is ready: the first one is announced, a reload retires the old. */
static void gen_ready (struct master *m, unsigned gen) {
  if (gen == m->gen) {
    if (!m->announced) announce(m);
    return;
  }
  if (gen != m->next_gen) return;
  signal_gen(m, m->gen, SIGTERM);
  m->gen = gen;
  m->next_gen = 0;
  log_info("reloaded %s: %d worker%s serve the new code", m->cfg->script,
           m->cfg->workers, m->cfg->workers == 1 ? "" : "s");
  sd_notify("READY=1\nSTATUS=serving (reloaded)");
  reload_queued(m);
}


/* The new generation cannot serve: why says so, the old one goes on. */
static void reload_failed (struct master *m, const char *why) {
  log_error("reload failed: the old code keeps serving (%s)", why);
  sd_notify("READY=1\nSTATUS=reload failed: the old code keeps serving (%s)",
            why);
  signal_gen(m, m->next_gen, SIGTERM);
  m->next_gen = 0;
  reload_queued(m);
}


/*
** A generation starts with worker 1 alone: once it has loaded the script,
** the others follow. A script that cannot load fails once, with one
** error line, not once per worker.
*/
static void spawn_rest (struct master *m, unsigned gen) {
  for (int id = 2; id <= m->cfg->workers; id++) {
    if (spawn(m, id, gen) == NULL) {
      if (gen == m->next_gen) reload_failed(m, "cannot start its workers");
      else begin_stop(m, 1);
      return;
    }
  }
}


static void on_ready (struct master *m, struct wproc *p) {
  char c;
  ssize_t n = read(p->ready_fd, &c, 1);
  if (n < 0 && errno == EINTR) return;
  close(p->ready_fd);
  p->ready_fd = -1;
  if (n == 1) {
    p->ready = 1;
    m->backoff[p->id] = 0;  /* it loaded and serves: not crash-looping */
    if (p->id == 1 && !p->respawned) spawn_rest(m, p->gen);
    if (count_gen(m, p->gen, 1) == m->cfg->workers) gen_ready(m, p->gen);
  }
  /* n == 0: it exits before serving; waitpid tells how */
}


static void describe_exit (int status, char *out, size_t len) {
  if (WIFSIGNALED(status))
    snprintf(out, len, "was killed by signal %d (SIG%s)", WTERMSIG(status),
             signame(WTERMSIG(status)));
  else
    snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
}


static void schedule_respawn (struct master *m, struct wproc *p) {
  double now = monotonic_now(), *b = &m->backoff[p->id];
  if (now - p->started >= QUICK_CRASH) *b = 0;
  else *b = *b == 0 ? BACKOFF_MIN : fmin(*b * 2, BACKOFF_MAX);
  m->respawn_at[p->id] = now + *b;
  if (*b > 0)
    log_warn("worker %d keeps dying: restarting it in %.1f s", p->id, *b);
}


static void on_exit_status (struct master *m, struct wproc *p, int status) {
  char how[64];
  int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  struct wproc dead;
  if (p->ready_fd >= 0) on_ready(m, p);  /* it may have served already */
  dead = *p;
  p->pid = 0;
  if (dead.retiring || m->stopping) return;
  describe_exit(status, how, sizeof how);
  if (dead.gen == m->next_gen) {  /* the new code failed before it served */
    char why[128];
    snprintf(why, sizeof why, "worker %d of the new code %s", dead.id, how);
    reload_failed(m, why);
    return;
  }
  if (clean) {  /* server:shutdown() or --once: the server stops */
    begin_stop(m, 0);
    return;
  }
  if (!m->announced) {  /* cannot start: a failing worker said why */
    if (WIFSIGNALED(status))
      log_error("error: worker %d %s while starting", dead.id, how);
    begin_stop(m, 1);
    return;
  }
  log_error("worker %d (pid %d) %s; starting a new one", dead.id,
            (int)dead.pid, how);
  schedule_respawn(m, &dead);
}


static void reap (struct master *m) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (int i = 0; i < m->nprocs; i++) {
      if (m->procs[i].pid == pid) {
        on_exit_status(m, &m->procs[i], status);
        break;
      }
    }
  }
}


/* Older generations that still have a worker alive. */
static int count_draining (struct master *m) {
  unsigned seen[MAX_DRAINING + 2];
  int n = 0;
  for (int i = 0; i < m->nprocs; i++) {
    struct wproc *p = &m->procs[i];
    int j = 0;
    if (p->pid == 0 || p->gen == m->gen || p->gen == m->next_gen) continue;
    while (j < n && seen[j] != p->gen) j++;
    if (j == n && n < (int)(sizeof seen / sizeof seen[0])) seen[n++] = p->gen;
  }
  return n;
}


/*
** SIGHUP. A reload asked for while one starts runs when that one is done
** (the script may have changed again). With MAX_DRAINING generations
** still draining, it is refused: the log and systemd's status say so.
*/
static void reload (struct master *m) {
  int draining;
  if (m->stopping) return;
  if (m->next_gen != 0) {
    log_info("SIGHUP: a reload is starting; reloading again once it is done");
    m->reload_again = 1;
    return;
  }
  log_info("SIGHUP: reloading %s", m->cfg->script);
  sd_notify("RELOADING=1\nMONOTONIC_USEC=%llu", monotonic_usec());
  if ((draining = count_draining(m)) >= MAX_DRAINING) {
    char why[200];
    snprintf(why, sizeof why, "reload refused: %d older generations are "
             "still draining (at most %d); the current code keeps serving",
             draining, MAX_DRAINING);
    log_error("%s", why);
    sd_notify("READY=1\nSTATUS=%s", why);
    return;
  }
  m->next_gen = ++m->last_gen;  /* never a failed generation's number */
  {  /* the certificates and keys are read again, by the master */
    char why[600];
    if (tls_server_load(m->cfg, why, sizeof why) < 0) {
      reload_failed(m, why);
      return;
    }
  }
  if (spawn(m, 1, m->next_gen) == NULL)
    reload_failed(m, "cannot start its first worker");
}


/* Returns non-zero when the master must leave at once (second ^C). */
static int on_signals (struct master *m) {
  struct signalfd_siginfo si;
  while (read(m->sfd, &si, sizeof si) == (ssize_t)sizeof si) {
    switch (si.ssi_signo) {
      case SIGCHLD: reap(m); break;
      case SIGHUP: reload(m); break;
      case SIGINT:
        if (m->sigints++ > 0) return 1;
        begin_stop(m, 0);
        break;
      default: begin_stop(m, 0); break;  /* SIGTERM */
    }
  }
  return 0;
}


static void respawn_due (struct master *m) {
  double now = monotonic_now();
  for (int id = 1; id <= m->cfg->workers; id++) {
    if (m->respawn_at[id] > 0 && now >= m->respawn_at[id] && !m->stopping) {
      m->respawn_at[id] = 0;
      struct wproc *p = spawn(m, id, m->gen);
      if (p == NULL) m->respawn_at[id] = now + BACKOFF_MAX;
      else p->respawned = 1;
    }
  }
}


/* Milliseconds poll may sleep: until the next respawn or the kill time. */
static int next_wait_ms (struct master *m) {
  double now = monotonic_now(), until = 0;
  for (int id = 1; id <= m->cfg->workers; id++)
    if (m->respawn_at[id] > 0 && (until == 0 || m->respawn_at[id] < until))
      until = m->respawn_at[id];
  if (m->stopping && (until == 0 || m->kill_at < until)) until = m->kill_at;
  {  /* the session ticket keys' rotation */
    double r = tls_rotate(now);
    if (r > 0 && (until == 0 || r < until)) until = r;
  }
  if (until == 0) return -1;
  return until <= now ? 0 : (int)ceil((until - now) * 1000.0);
}


static int alive (struct master *m) {
  for (int i = 0; i < m->nprocs; i++)
    if (m->procs[i].pid != 0) return 1;
  return 0;
}


/* {====================================================== --metrics */

#define METRICS_WAIT_MS 200   /* for a scraper's request line */

/*
** Answers one scraper: reads its request (briefly: the master must not
** be held up by a slow client) and sends every worker's counters.
*/
static void serve_metrics (struct master *m) {
  char req[2048], *body;
  size_t got = 0, cap = 65536;
  long len;
  int fd = accept4(m->mls.fd, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0) return;
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    ssize_t n;
    if (poll(&p, 1, METRICS_WAIT_MS) <= 0) break;
    if ((n = read(fd, req + got, sizeof req - 1 - got)) <= 0) break;
    got += (size_t)n;
    req[got] = '\0';
    if (strstr(req, "\r\n\r\n") != NULL || strstr(req, "\n\n") != NULL ||
        got == sizeof req - 1)
      break;
  }
  while ((body = malloc(cap)) != NULL &&
         (len = metrics_format(m->metrics, m->cfg->workers, body, cap)) < 0) {
    free(body);
    cap *= 2;
  }
  if (body != NULL) {
    char head[160];
    int hl = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: "
                      "text/plain; version=0.0.4\r\nContent-Length: %ld\r\n"
                      "Connection: close\r\n\r\n", len);
    struct pollfd p = {fd, POLLOUT, 0};
    const char *parts[2] = {head, body};
    size_t lens[2] = {(size_t)hl, (size_t)len};
    for (int i = 0; i < 2; i++) {
      size_t off = 0;
      while (off < lens[i] && poll(&p, 1, METRICS_WAIT_MS) > 0) {
        ssize_t n = send(fd, parts[i] + off, lens[i] - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += (size_t)n;
      }
    }
    free(body);
  }
  close(fd);
}


static int open_metrics (struct master *m) {
  struct listen_opts o = {16, 0, -1};
  struct address a;
  char err[512];
  m->mls.fd = -1;
  if (m->cfg->metrics == NULL) return 0;
  if (address_parse(TR_TCP, m->cfg->metrics, &a, err, sizeof err) < 0 ||
      listener_open(&m->mls, &a, &o, err, sizeof err) < 0) {
    log_error("error: --metrics: %s", err);
    return -1;
  }
  if ((m->metrics = metrics_new(m->cfg->workers)) == NULL) {
    log_error("error: --metrics: %s", strerror(errno));
    return -1;
  }
  log_info("metrics on http://%s/metrics", m->mls.name + strlen("tcp://"));
  return 0;
}

/* }====================================================== */


static void serve (struct master *m) {
  struct pollfd *pf = calloc((size_t)m->nprocs + 2, sizeof *pf);
  struct wproc **owner = calloc((size_t)m->nprocs + 2, sizeof *owner);
  if (pf == NULL || owner == NULL) {
    log_error("error: out of memory");
    signal_gen(m, 0, SIGKILL);
    m->exit_code = 1;
    m->stopping = 1;
  }
  while (pf != NULL && owner != NULL && (alive(m) || !m->stopping)) {
    int n = 2;
    pf[0].fd = m->sfd;
    pf[0].events = POLLIN;
    pf[1].fd = m->mls.fd;  /* -1 without --metrics: poll skips it */
    pf[1].events = POLLIN;
    for (int i = 0; i < m->nprocs; i++) {
      if (m->procs[i].pid != 0 && m->procs[i].ready_fd >= 0) {
        pf[n].fd = m->procs[i].ready_fd;
        pf[n].events = POLLIN;
        owner[n++] = &m->procs[i];
      }
    }
    if (poll(pf, (nfds_t)n, next_wait_ms(m)) < 0 && errno != EINTR) break;
    for (int i = 2; i < n; i++)
      if (pf[i].revents != 0 && owner[i]->ready_fd == pf[i].fd)
        on_ready(m, owner[i]);
    if (pf[1].revents != 0) serve_metrics(m);
    if (pf[0].revents != 0 && on_signals(m)) {  /* a second ^C */
      signal_gen(m, 0, SIGKILL);
      m->exit_code = 130;
      break;
    }
    respawn_due(m);
    if (m->stopping && monotonic_now() >= m->kill_at && alive(m)) {
      log_warn("workers still running after the grace period: killing them");
      signal_gen(m, 0, SIGKILL);
      m->kill_at = monotonic_now() + 3600;
    }
  }
  while (waitpid(-1, NULL, WNOHANG) > 0)
    ;
  free(pf);
  free(owner);
}


int master_run (const struct config *cfg, struct listener *ls, int nls) {
  struct master m;
  sigset_t set;
  memset(&m, 0, sizeof m);
  m.cfg = cfg;
  m.ls = ls;
  m.nls = nls;
  m.gen = m.last_gen = 1;
  if (cfg->workers > MAX_WORKERS) {
    log_error("error: --workers: at most %d", MAX_WORKERS);
    return 1;
  }
  m.nprocs = (2 + MAX_DRAINING) * cfg->workers;
  if ((m.procs = calloc((size_t)m.nprocs, sizeof *m.procs)) == NULL) {
    log_error("error: out of memory");
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  sigprocmask(SIG_BLOCK, &set, &m.oldmask);
  if ((m.sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
    log_error("error: signalfd: %s", strerror(errno));
    free(m.procs);
    return 1;
  }
  if (open_metrics(&m) < 0) {
    close(m.sfd);
    free(m.procs);
    listener_close(&m.mls);
    sigprocmask(SIG_SETMASK, &m.oldmask, NULL);
    return 1;
  }
  if (spawn(&m, 1, m.gen) == NULL) begin_stop(&m, 1);
  serve(&m);
  close(m.sfd);
  for (int i = 0; i < m.nprocs; i++)
    if (m.procs[i].ready_fd >= 0) close(m.procs[i].ready_fd);
  free(m.procs);
  listener_close(&m.mls);
  metrics_free(m.metrics, cfg->workers);
  sigprocmask(SIG_SETMASK, &m.oldmask, NULL);
  return m.exit_code;
}
