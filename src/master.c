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
**
** Also the master's: a reload re-reads --config (what a restart alone
** can change is kept and logged; listeners are added and removed), the
** --metrics listener's /metrics, /healthz, /readyz and /status, SIGUSR1
** (reopen the log), SIGUSR2 (the binary upgrade) and the --admin
** console. Every client of the master is answered at once, from its own
** state, within METRICS_WAIT_MS: none can hold the supervision up.
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
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <grp.h>
#include <unistd.h>

#include "evloop.h"
#include "lload.h"
#include "log.h"
#include "master.h"
#include "metrics.h"
#include "model.h"
#include "shdict.h"
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
  int chan;                   /* the console's channel to it; -1: none */
};

struct master {
  struct config *cfg;         /* the serving generation's */
  struct config *initial;     /* the start's (main's): never freed */
  struct config *next_cfg;    /* a reload's, while it starts; else NULL */
  char *script, *next_script; /* their scripts' bytes, read by the master */
  size_t script_len, next_script_len;
  struct listener *ls;        /* the serving generation's listeners */
  int nls;
  int *nls_out;               /* main's count of ls */
  struct listener next_ls[CLI_MAX_LISTEN];  /* a reload's */
  int next_nls;
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
  int draining;               /* --drain-delay: /readyz says 503 until */
  double drain_until;         /* then the stop begins */
  int exit_code;
  int sigints;
  int reload_again;           /* a SIGHUP came while a reload was starting */
  double kill_at;             /* stopping: SIGKILL the rest then */
  double respawn_at[MAX_WORKERS + 1];  /* per id; 0: none pending */
  double backoff[MAX_WORKERS + 1];
  struct mslot *metrics;      /* --metrics: slots 1..workers, shared */
  struct listener mls;        /* --metrics listener; fd -1 when none */
  /* SIGUSR2, the binary upgrade (see upgrade()): */
  char exe[4096];             /* this binary's path, resolved at start */
  pid_t up_pid;               /* the new master while it starts; 0: none */
  int up_fd;                  /* its "serving" pipe's read end, or -1 */
  double up_until;            /* it must serve by then */
  int upgraded;               /* it serves: this master drains and exits */
  int tell_fd;                /* we are the new one: the old one's pipe */
  int barrier_fd;             /* systemd closes its other end once it has
                              ** read the new MAINPID; -1: none */
  /* --admin, the console (see serve_admin()): */
  struct listener als;        /* its Unix socket; fd -1 when none */
  int admin_wait;             /* a "reload" client waiting; -1: none */
  int child_chan;             /* in a new worker: its end of the channel */
};


/*
** systemd's readiness protocol (Type=notify / notify-reload): one datagram
** to $NOTIFY_SOCKET per state change; nothing when the variable is unset.
** A path starting with '@' is in the abstract namespace. pass, when >= 0,
** goes along as SCM_RIGHTS. Returns 0, or -1 when nothing was sent.
*/
static int notify_send (const char *msg, size_t n, int pass) {
  const char *path = getenv("NOTIFY_SOCKET");
  struct sockaddr_un sun;
  union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } ctl;
  struct iovec iov = {(void *)msg, n};
  struct msghdr mh;
  size_t plen;
  int fd, rc;
  if (path == NULL || (path[0] != '/' && path[0] != '@') ||
      (plen = strlen(path)) >= sizeof sun.sun_path)
    return -1;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path, plen);
  if (path[0] == '@') sun.sun_path[0] = '\0';
  memset(&mh, 0, sizeof mh);
  mh.msg_name = &sun;
  mh.msg_namelen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (pass >= 0) {
    memset(&ctl, 0, sizeof ctl);
    mh.msg_control = ctl.b;
    mh.msg_controllen = sizeof ctl.b;
    CMSG_FIRSTHDR(&mh)->cmsg_level = SOL_SOCKET;
    CMSG_FIRSTHDR(&mh)->cmsg_type = SCM_RIGHTS;
    CMSG_FIRSTHDR(&mh)->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(CMSG_FIRSTHDR(&mh)), &pass, sizeof pass);
  }
  /* non-blocking: a notification never holds the master up when the
  ** reader lags and its queue is full (the state is sent again later) */
  if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
    return -1;
  if ((rc = (int)sendmsg(fd, &mh, MSG_NOSIGNAL)) < 0)
    log_debug("sd_notify: %s", strerror(errno));
  close(fd);
  return rc < 0 ? -1 : 0;
}


static void sd_notify (const char *fmt, ...)
  __attribute__((format(printf, 1, 2)));

static void sd_notify (const char *fmt, ...) {
  char msg[256];
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n >= 0 && (size_t)n < sizeof msg) notify_send(msg, (size_t)n, -1);
}


/*
** sd_notify_barrier(3): BARRIER=1 with a pipe's write end, which systemd
** closes once it has handled every message sent before. Returns the read
** end (it reports POLLHUP then), or -1.
*/
static int notify_barrier (void) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return -1;
  if (notify_send("BARRIER=1", 9, p[1]) < 0) {
    close(p[0]);
    p[0] = -1;
  }
  close(p[1]);
  return p[0];
}


/* Waits, within BARRIER_WAIT_MS, until systemd has read up to the barrier. */
#define BARRIER_WAIT_MS 5000

static void await_barrier (struct master *m) {
  struct pollfd p = {m->barrier_fd, POLLIN, 0};
  if (m->barrier_fd < 0) return;
  while (poll(&p, 1, BARRIER_WAIT_MS) < 0 && errno == EINTR)
    ;
  close(m->barrier_fd);
  m->barrier_fd = -1;
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
  if (m->up_fd >= 0) close(m->up_fd);
  if (m->tell_fd >= 0) close(m->tell_fd);
  for (int i = 0; i < m->nprocs; i++)
    if (m->procs[i].ready_fd >= 0) close(m->procs[i].ready_fd);
  for (int i = 0; i < m->nprocs; i++)
    if (m->procs[i].pid != 0 && m->procs[i].chan >= 0)
      close(m->procs[i].chan);
}


/* The model each --model runs in the workers. */
static const struct model *const models[] = {
  [MODEL_SYNC] = &model_sync, [MODEL_FORK] = &model_fork,
  [MODEL_THREAD] = &model_thread, [MODEL_EVENT] = &model_event,
};


static int holds (const struct listener *ls, int n, int fd) {
  for (int i = 0; i < n; i++)
    if (ls[i].fd == fd) return 1;
  return 0;
}


/*
** A worker keeps its own generation's listeners only: a listener that a
** reload removes (or adds) must not stay open in a worker that never
** accepts on it.
*/
static void close_other_listeners (struct master *m, const struct listener *ls,
                                   int nls) {
  for (int i = 0; i < m->nls; i++)
    if (!holds(ls, nls, m->ls[i].fd)) close(m->ls[i].fd);
  if (m->next_cfg != NULL)
    for (int i = 0; i < m->next_nls; i++)
      if (!holds(ls, nls, m->next_ls[i].fd)) close(m->next_ls[i].fd);
}


/* Runs in the child: becomes worker id of generation gen; never returns. */
static void run_worker (struct master *m, int id, unsigned gen, int ready_wfd,
                        pid_t master_pid) {
  struct worker w;
  int next = m->next_cfg != NULL && gen == m->next_gen;
  const struct config *cfg = next ? m->next_cfg : m->cfg;
  struct listener *ls = next ? m->next_ls : m->ls;
  int nls = next ? m->next_nls : m->nls, rc;
  /* A master killed outright must not leave workers serving alone. */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != master_pid) _exit(1);
  if (next) tls_server_use_next();  /* the reload's certificates */
  if ((next ? m->next_script : m->script) != NULL)  /* its generation's */
    lload_seed(cfg->script, next ? m->next_script : m->script,
               next ? m->next_script_len : m->script_len);
  close_master_fds(m);
  close_other_listeners(m, ls, nls);
  if (m->mls.fd >= 0) close(m->mls.fd);
  if (m->als.fd >= 0) close(m->als.fd);
  if (m->admin_wait >= 0) close(m->admin_wait);
  unsetenv("NOTIFY_SOCKET");  /* the master speaks for the server */
  if (cfg->setuser) {
    gid_t gid = (gid_t)cfg->gid;
    if (setgroups(1, &gid) < 0 || setgid(gid) < 0 ||
        setuid((uid_t)cfg->uid) < 0) {
      log_error("error: --user %s: %s", cfg->user, strerror(errno));
      exit(1);
    }
  }
  if (worker_init(&w, cfg, ls, nls, id) < 0) {
    log_error("error: worker %d: cannot create pipes", id);
    exit(1);
  }
  w.ready_fd = ready_wfd;
  w.admin_fd = m->child_chan;
  w.master = master_pid;  /* its death makes the worker give the port up */
  if (m->metrics != NULL) w.mslot = &m->metrics[id];
  /* the handlers first, then unblock: a SIGTERM that came after the fork
  ** is pending, and must stop the worker gracefully, not kill it */
  worker_signals_install(&w);
  sigprocmask(SIG_SETMASK, &m->oldmask, NULL);
  rc = model_serve(models[cfg->model], &w);
  worker_close(&w);
  exit(rc);
}

/* }====================================================== */


static struct wproc *free_slot (struct master *m) {
  for (int i = 0; i < m->nprocs; i++)
    if (m->procs[i].pid == 0) return &m->procs[i];
  return NULL;
}


static int admin_channel (int chan[2]);

static struct wproc *spawn (struct master *m, int id, unsigned gen) {
  struct wproc *p = free_slot(m);
  int fds[2], chan[2] = {-1, -1};
  pid_t pid, self = getpid();
  if (p == NULL) return NULL;
  if (m->als.fd >= 0 && admin_channel(chan) < 0) return NULL;
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
    if (chan[0] >= 0) close(chan[0]);
    m->child_chan = chan[1];
    run_worker(m, id, gen, fds[1], self);
  }
  close(fds[1]);
  if (chan[1] >= 0) close(chan[1]);
  memset(p, 0, sizeof *p);
  p->chan = chan[0];
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


static void oldbin_name (const struct master *m, char *out, size_t len);

static void begin_stop (struct master *m, int code) {
  if (m->stopping) return;
  m->stopping = 1;
  m->exit_code = code;
  m->kill_at = monotonic_now() + m->cfg->grace + KILL_SLACK;
  if (!m->upgraded) sd_notify("STOPPING=1");  /* else: the new one's unit */
  signal_gen(m, 0, SIGTERM);
  if (m->up_pid > 0) {  /* a stop asked for mid-upgrade stops both */
    log_warn("stopping: the upgrade is abandoned; the new binary (pid %d) "
             "stops too", (int)m->up_pid);
    kill(m->up_pid, SIGTERM);
    m->up_pid = 0;
    if (m->initial->pidfile != NULL) {
      char old[4200];
      oldbin_name(m, old, sizeof old);
      unlink(old);
    }
  }
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
  /* after a binary upgrade the old master speaks for us until it has
  ** told systemd our pid: NotifyAccess=main would refuse us till then */
  if (m->tell_fd < 0)
    sd_notify("READY=1\nMAINPID=%d\nSTATUS=serving", (int)getpid());
  if (m->tell_fd >= 0) {  /* an upgrade: the old master may leave now */
    if (write(m->tell_fd, "r", 1) < 0)
      log_warn("upgrade: cannot tell the old master: %s", strerror(errno));
    close(m->tell_fd);
    m->tell_fd = -1;
  }
}


static void reload (struct master *m);
static int upgrade_exited (struct master *m, pid_t pid, int status);
static void upgrade (struct master *m);


static void free_config (struct master *m, struct config *c) {
  if (c == NULL || c == m->initial || c == m->cfg) return;
  cli_free(c);
  free(c);
}


/*
** The reload's listeners that the serving generation does not share are
** closed: from ls when the reload took over, from next_ls when it failed.
*/
static void close_unshared (struct listener *ls, int n,
                            const struct listener *keep, int nkeep) {
  for (int i = 0; i < n; i++)
    if (!holds(keep, nkeep, ls[i].fd)) {
      log_info("closed %s", ls[i].name);
      listener_close(&ls[i]);
    }
}


/* A reload that names another --log-file: the master writes there now. */
static void reopen_changed_log (const struct config *old,
                                const struct config *nc) {
  int rc;
  if (nc->log_file == NULL || (old->log_file != NULL &&
                               strcmp(old->log_file, nc->log_file) == 0))
    return;
  if ((rc = log_open(nc->log_file)) < 0)
    log_error("error: --log-file %s: %s; logging on where it was",
              nc->log_file, strerror(-rc));
}


/* SIGUSR1: the master's log first, then every worker's. */
static void reopen_logs (struct master *m) {
  int rc = log_reopen();
  if (rc < 0) log_error("SIGUSR1: cannot reopen %s: %s; logging on there",
                        log_file(), strerror(-rc));
  else if (log_file() != NULL) log_info("SIGUSR1: reopened %s", log_file());
  signal_gen(m, 0, SIGUSR1);
}


/* The reload's configuration and listeners become the serving ones. */
static void take_next_config (struct master *m) {
  struct config *old = m->cfg;
  if (m->next_cfg == NULL) return;
  free(m->script);
  m->script = m->next_script;
  m->script_len = m->next_script_len;
  m->next_script = NULL;
  if (m->next_cfg != old) {
    close_unshared(m->ls, m->nls, m->next_ls, m->next_nls);
    for (int i = 0; i < m->next_nls; i++)
      if (!holds(m->ls, m->nls, m->next_ls[i].fd))
        log_info("listening on %s%s", m->next_ls[i].name,
                 reach(&m->next_ls[i]));
    memcpy(m->ls, m->next_ls, (size_t)m->next_nls * sizeof *m->ls);
    m->nls = *m->nls_out = m->next_nls;
    m->cfg = m->next_cfg;
    log_setup((enum log_level)m->cfg->log_level, m->cfg->log_json);
    reopen_changed_log(old, m->cfg);
    free_config(m, old);
  }
  m->next_cfg = NULL;
}


static void drop_next_config (struct master *m) {
  free(m->next_script);
  m->next_script = NULL;
  if (m->next_cfg == NULL) return;
  if (m->next_cfg != m->cfg) {
    close_unshared(m->next_ls, m->next_nls, m->ls, m->nls);
    free_config(m, m->next_cfg);
  }
  m->next_cfg = NULL;
}


/* The reload that was asked for while one started runs now. */
static void reload_queued (struct master *m) {
  if (!m->reload_again) return;
  m->reload_again = 0;
  reload(m);
}


/* A reload that could not start a generation: the old one goes on. */
static void admin_reloaded (struct master *m, const char *why);

static void reload_failed_early (struct master *m, const char *why) {
  admin_reloaded(m, why);
  log_error("reload failed: the old code keeps serving (%s)", why);
  sd_notify("READY=1\nSTATUS=reload failed: the old code keeps serving (%s)",
            why);
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
  take_next_config(m);
  tls_server_commit();
  log_info("reloaded %s: %d worker%s the new code", m->cfg->script,
           m->cfg->workers, m->cfg->workers == 1 ? " serves" : "s serve");
  admin_reloaded(m, NULL);
  sd_notify("READY=1\nSTATUS=serving (reloaded)");
  reload_queued(m);
}


/* The new generation cannot serve: why says so, the old one goes on. */
static void reload_failed (struct master *m, const char *why) {
  admin_reloaded(m, why);
  log_error("reload failed: the old code keeps serving (%s)", why);
  sd_notify("READY=1\nSTATUS=reload failed: the old code keeps serving (%s)",
            why);
  signal_gen(m, m->next_gen, SIGTERM);
  m->next_gen = 0;
  drop_next_config(m);
  tls_server_discard();  /* old workers, respawned too, keep the old ones */
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
  if (p->chan >= 0) close(p->chan);
  p->chan = -1;
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


/* A process of worker number id is alive, in any generation. */
static int id_alive (struct master *m, int id) {
  for (int i = 0; i < m->nprocs; i++)
    if (m->procs[i].pid != 0 && m->procs[i].id == id) return 1;
  return 0;
}


static void reap (struct master *m) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    if (upgrade_exited(m, pid, status)) continue;
    for (int i = 0; i < m->nprocs; i++) {
      if (m->procs[i].pid == pid) {
        int id = m->procs[i].id;
        on_exit_status(m, &m->procs[i], status);
        if (m->metrics != NULL && !id_alive(m, id))  /* a crash left them */
          metrics_gone(&m->metrics[id]);
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


static void restart_needed (const char *name, void *ud) {
  struct master *m = ud;
  log_warn("--%s changed in %s: needs a restart", name, m->cfg->config);
}


/* Is the listener spec ls[i] of old the one nc's j names? */
static int same_listener (const struct config *old, int i,
                          const struct config *nc, int j) {
  return i < old->nlisten && old->listen[i].tr == nc->listen[j].tr &&
         strcmp(old->listen[i].text, nc->listen[j].text) == 0;
}


/*
** The reload's listeners: the serving ones it still names (the same
** sockets: not one queued client is lost), new ones opened. -1 when one
** cannot open (the reason logged; the old ones go on).
*/
static int next_listeners (struct master *m, const struct config *nc) {
  struct listen_opts o = {nc->backlog, nc->reuse_port, nc->unix_mode};
  int used[CLI_MAX_LISTEN] = {0};
  char err[512];
  m->next_nls = 0;
  if (nc->nlisten == 0) {  /* systemd's sockets, as they are */
    memcpy(m->next_ls, m->ls, (size_t)m->nls * sizeof *m->ls);
    m->next_nls = m->nls;
    return 0;
  }
  for (int j = 0; j < nc->nlisten; j++) {
    struct address a;
    int i = 0;
    while (i < m->nls && (used[i] || !same_listener(m->cfg, i, nc, j))) i++;
    if (i < m->nls) {
      used[i] = 1;
      m->next_ls[m->next_nls++] = m->ls[i];
      continue;
    }
    if (address_parse(nc->listen[j].tr, nc->listen[j].text, &a, err,
                      sizeof err) < 0 ||
        listener_open(&m->next_ls[m->next_nls], &a, &o, err, sizeof err) < 0) {
      reload_failed_early(m, err);
      close_unshared(m->next_ls, m->next_nls, m->ls, m->nls);
      return -1;
    }
    m->next_nls++;
  }
  return 0;
}


/*
** The configuration a reload starts: the file read again with --config
** (what only a restart can change is logged and kept), else the same.
*/
static int next_config (struct master *m) {
  struct config *nc;
  char err[512];
  if (m->cfg->config == NULL) {  /* the same options and listeners */
    memcpy(m->next_ls, m->ls, (size_t)m->nls * sizeof *m->ls);
    m->next_nls = m->nls;
    m->next_cfg = m->cfg;
    return 0;
  }
  if ((nc = malloc(sizeof *nc)) == NULL) {
    reload_failed_early(m, "out of memory");
    return -1;
  }
  if (cli_reparse(m->cfg, nc, err, sizeof err) != CLI_RUN) {
    reload_failed_early(m, err);
    cli_free(nc);
    free(nc);
    return -1;
  }
  cli_keep_restart_options(m->cfg, nc, restart_needed, m);
  if (next_listeners(m, nc) < 0) {
    cli_free(nc);
    free(nc);
    return -1;
  }
  m->next_cfg = nc;
  return 0;
}


/*
** SIGHUP. A reload asked for while one starts runs when that one is done
** (the script may have changed again). With MAX_DRAINING generations
** still draining, it is refused: the log and systemd's status say so.
*/
static void reload (struct master *m) {
  int draining;
  if (m->stopping || m->draining) return;
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
    admin_reloaded(m, why);
    log_error("%s", why);
    sd_notify("READY=1\nSTATUS=%s", why);
    return;
  }
  if (next_config(m) < 0) return;
  m->next_gen = ++m->last_gen;  /* never a failed generation's number */
  /* the script as it is now is the new generation's, whatever the file
  ** holds when one of its workers starts again */
  m->next_script = lload_read(m->next_cfg->script, &m->next_script_len);
  if (m->next_script == NULL) {
    char why[600];
    snprintf(why, sizeof why, "cannot open %s: %s", m->next_cfg->script,
             strerror(errno));
    reload_failed(m, why);
    return;
  }
  {  /* the certificates and keys are read again, by the master */
    char why[600];
    if (tls_server_load_next(m->next_cfg, why, sizeof why) < 0) {
      reload_failed(m, why);
      return;
    }
  }
  if (spawn(m, 1, m->next_gen) == NULL)
    reload_failed(m, "cannot start its first worker");
}


/*
** SIGTERM. With --drain-delay, /readyz answers 503 for that long first,
** while every worker still serves: a load balancer that probes it stops
** sending before the listeners close. A second SIGTERM stops at once.
*/
static void drain (struct master *m) {
  if (m->cfg->drain_delay <= 0 || m->draining || m->stopping) {
    begin_stop(m, 0);
    return;
  }
  m->draining = 1;
  m->drain_until = monotonic_now() + m->cfg->drain_delay;
  log_info("SIGTERM: draining: /readyz answers 503; stopping in %g s",
           m->cfg->drain_delay);
  sd_notify("STOPPING=1\nSTATUS=draining");
}


/* Returns non-zero when the master must leave at once (second ^C). */
static int on_signals (struct master *m) {
  struct signalfd_siginfo si;
  while (read(m->sfd, &si, sizeof si) == (ssize_t)sizeof si) {
    switch (si.ssi_signo) {
      case SIGCHLD: reap(m); break;
      case SIGHUP: reload(m); break;
      case SIGUSR1: reopen_logs(m); break;
      case SIGUSR2: upgrade(m); break;
      case SIGINT:
        if (m->sigints++ > 0) return 1;
        begin_stop(m, 0);
        break;
      default: drain(m); break;  /* SIGTERM */
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
  if (m->draining && !m->stopping && (until == 0 || m->drain_until < until))
    until = m->drain_until;
  if (m->up_pid != 0 && (until == 0 || m->up_until < until))
    until = m->up_until;
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



/* {====================================================== SIGUSR2 */

/*
** The binary upgrade, as nginx does it: the master forks and execs the
** binary now at its own path (resolved at start: a package manager
** replaces the file) with the same arguments, passing every listening
** socket, the --metrics one included, the way systemd would (LISTEN_FDS
** from descriptor 3; LUASRV_METRICS_FD). Both generations accept on the
** same sockets meanwhile, so no client is refused. Once the new master's
** workers all serve, it writes a byte to LUASRV_UPGRADE_FD and this
** master drains and exits; if it exits first, or does not serve within
** UPGRADE_WAIT, this one goes on serving and says why. The pid file is
** renamed PIDFILE.oldbin meanwhile and systemd is told the new MAINPID.
*/
#define UPGRADE_WAIT 60.0


static void oldbin_name (const struct master *m, char *out, size_t len) {
  snprintf(out, len, "%s.oldbin", m->initial->pidfile);
}


/* In the child: the sockets at 3.., the environment, then exec. */
static void exec_new_binary (struct master *m, int wfd) {
  int fds[CLI_MAX_LISTEN + 3], n = 0, nls = m->nls;
  char num[32], owned[CLI_MAX_LISTEN + 1];
  sigprocmask(SIG_SETMASK, &m->oldmask, NULL);
  signal(SIGPIPE, SIG_DFL);
  for (int i = 0; i < m->nls; i++) {
    fds[n++] = m->ls[i].fd;
    owned[i] = m->ls[i].created_path ? '1' : '0';  /* systemd's stay its */
  }
  owned[m->nls] = '\0';
  setenv("LUASRV_OWNED", owned, 1);
  if (m->mls.fd >= 0) fds[n++] = m->mls.fd;
  if (m->als.fd >= 0) fds[n++] = m->als.fd;
  fds[n++] = wfd;
  /* copies above the range first: dup2 onto 3.. must not close a source */
  for (int i = 0; i < n; i++)
    if ((fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 3 + n)) < 0) _exit(127);
  for (int i = 0; i < n; i++)
    if (dup2(fds[i], 3 + i) < 0) _exit(127);  /* dup2 clears CLOEXEC */
  snprintf(num, sizeof num, "%d", nls);
  setenv("LISTEN_FDS", num, 1);
  snprintf(num, sizeof num, "%d", (int)getpid());
  setenv("LISTEN_PID", num, 1);
  unsetenv("LISTEN_FDNAMES");
  if (m->mls.fd >= 0) {
    snprintf(num, sizeof num, "%d", 3 + nls);
    setenv("LUASRV_METRICS_FD", num, 1);
  }
  if (m->als.fd >= 0) {
    snprintf(num, sizeof num, "%d", 3 + nls + (m->mls.fd >= 0));
    setenv("LUASRV_ADMIN_FD", num, 1);
  }
  snprintf(num, sizeof num, "%d", 3 + n - 1);
  setenv("LUASRV_UPGRADE_FD", num, 1);
  execv(m->exe, m->initial->argv);
  log_error("upgrade: cannot run %s: %s", m->exe, strerror(errno));
  _exit(127);
}


static void upgrade_failed (struct master *m, const char *why) {
  log_error("upgrade failed: %s; the old binary keeps serving", why);
  sd_notify("READY=1\nSTATUS=upgrade failed: %s; the old binary keeps "
            "serving", why);
  if (m->up_fd >= 0) close(m->up_fd);
  m->up_fd = -1;
  m->up_pid = 0;
  if (m->initial->pidfile != NULL) {
    char old[4200];
    oldbin_name(m, old, sizeof old);
    if (rename(old, m->initial->pidfile) < 0)
      log_warn("upgrade: cannot rename %s back: %s", old, strerror(errno));
  }
}


/* The new master serves: this one hands over and drains. */
static void upgrade_done (struct master *m) {
  pid_t pid = m->up_pid;
  log_info("upgrade: the new binary (pid %d) serves; this master (pid %d) "
           "drains and exits", (int)pid, (int)getpid());
  /* systemd now follows the new master; it must read this before we
  ** exit, or it would take our exit for the service's: the barrier, which
  ** master_run waits for at the end */
  sd_notify("MAINPID=%d\nREADY=1\nSTATUS=upgraded: pid %d serves", (int)pid,
            (int)pid);
  m->barrier_fd = notify_barrier();
  close(m->up_fd);
  m->up_fd = -1;
  m->up_pid = 0;
  m->upgraded = 1;
  for (int i = 0; i < m->nls; i++)  /* the socket files are its now */
    m->ls[i].created_path = 0;
  /* the console and /readyz are the new master's alone: a draining one
  ** answering "stopping" would turn a load balancer away */
  m->als.created_path = 0;
  listener_close(&m->als);
  listener_close(&m->mls);
  if (m->initial->pidfile != NULL) {
    char old[4200];
    oldbin_name(m, old, sizeof old);
    unlink(old);
    m->initial->pidfile = NULL;  /* main leaves the new one's alone */
  }
  begin_stop(m, 0);
}


static void upgrade (struct master *m) {
  int fds[2];
  pid_t pid;
  if (m->stopping || m->draining || m->upgraded) return;
  if (m->up_pid != 0) {
    log_warn("SIGUSR2: an upgrade is starting already (pid %d)",
             (int)m->up_pid);
    return;
  }
  if (m->exe[0] == '\0') {
    log_error("SIGUSR2: cannot upgrade: this binary's path is unknown");
    return;
  }
  if (pipe2(fds, O_CLOEXEC) < 0) {
    log_error("SIGUSR2: cannot upgrade: %s", strerror(errno));
    return;
  }
  if (m->initial->pidfile != NULL) {
    char old[4200];
    oldbin_name(m, old, sizeof old);
    if (rename(m->initial->pidfile, old) < 0)
      log_warn("upgrade: cannot rename %s: %s", m->initial->pidfile,
               strerror(errno));
  }
  log_info("SIGUSR2: upgrading: starting %s on the same sockets", m->exe);
  if ((pid = fork()) == 0) exec_new_binary(m, fds[1]);
  close(fds[1]);
  m->up_fd = fds[0];
  m->up_pid = pid;
  m->up_until = monotonic_now() + UPGRADE_WAIT;
  if (pid > 0)
    sd_notify("STATUS=upgrading: the new binary (pid %d) starts", (int)pid);
  if (pid < 0) {
    char why[128];
    snprintf(why, sizeof why, "cannot fork: %s", strerror(errno));
    upgrade_failed(m, why);
  }
}


/* Its pipe is readable: a byte (it serves) or the end (it is leaving). */
static void on_upgrade_fd (struct master *m) {
  char c;
  ssize_t n = read(m->up_fd, &c, 1);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n == 1) {
    upgrade_done(m);
    return;
  }
  close(m->up_fd);  /* its exit status, reaped, says why */
  m->up_fd = -1;
}


/* The new master exited (reaped): before it served, the upgrade failed. */
static int upgrade_exited (struct master *m, pid_t pid, int status) {
  char how[64], why[4300];
  if (pid != m->up_pid || m->up_pid == 0) return 0;
  if (m->up_fd >= 0) {  /* it may have written before it exited */
    struct pollfd p = {m->up_fd, POLLIN, 0};
    if (poll(&p, 1, 0) > 0) {
      on_upgrade_fd(m);
      if (m->upgraded) return 1;
    }
  }
  if (WIFSIGNALED(status))
    snprintf(how, sizeof how, "was killed by signal %d (SIG%s)",
             WTERMSIG(status), signame(WTERMSIG(status)));
  else snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(status));
  snprintf(why, sizeof why, "the new binary %s (pid %d) %s before it served",
           m->exe, (int)pid, how);
  upgrade_failed(m, why);
  return 1;
}


static void upgrade_timeout (struct master *m) {
  char why[128];
  if (m->up_pid == 0 || monotonic_now() < m->up_until) return;
  kill(m->up_pid, SIGTERM);
  snprintf(why, sizeof why, "the new binary (pid %d) did not serve within "
           "%.0f s; it was sent SIGTERM", (int)m->up_pid, UPGRADE_WAIT);
  m->up_pid = 0;  /* its exit, reaped later, is no news */
  upgrade_failed(m, why);
}


/*
** This binary's path, for SIGUSR2: /proc/self/exe now, while it still
** names the file we run (after a replacement it reads "... (deleted)").
*/
static void resolve_exe (struct master *m) {
  ssize_t n = readlink("/proc/self/exe", m->exe, sizeof m->exe - 1);
  m->exe[n > 0 ? n : 0] = '\0';
}


/* We are the new binary of an upgrade: the old master's pipe. */
static void upgrade_env (struct master *m) {
  const char *fd = getenv("LUASRV_UPGRADE_FD");
  m->tell_fd = fd != NULL ? atoi(fd) : -1;
  if (m->tell_fd >= 0) fcntl(m->tell_fd, F_SETFD, FD_CLOEXEC);
  if (m->tell_fd < 3) m->tell_fd = -1;
  unsetenv("LUASRV_UPGRADE_FD");
}

/* }====================================================== */

/* {====================================================== --metrics */

#define METRICS_WAIT_MS 200   /* for a scraper's request line */

/* Sends the whole of p[0..n), briefly: a scraper that stalls is dropped. */
static int send_all (int fd, const char *p, size_t n) {
  struct pollfd pf = {fd, POLLOUT, 0};
  while (n > 0 && poll(&pf, 1, METRICS_WAIT_MS) > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return n == 0 ? 0 : -1;
}


static void respond (int fd, const char *status, const char *type,
                     const char *body, size_t len) {
  char head[256];
  int hl = snprintf(head, sizeof head, "HTTP/1.1 %s\r\nContent-Type: %s\r\n"
                    "Content-Length: %zu\r\nCache-Control: no-store\r\n"
                    "Connection: close\r\n\r\n", status, type, len);
  if (send_all(fd, head, (size_t)hl) == 0) send_all(fd, body, len);
}


/* Workers alive that serve, in any generation. */
static int serving_workers (struct master *m) {
  int n = 0;
  for (int i = 0; i < m->nprocs; i++)
    n += m->procs[i].pid != 0 && m->procs[i].ready;
  return n;
}


static const char *master_state (struct master *m) {
  if (m->stopping) return "stopping";
  if (m->draining) return "draining";
  if (m->next_gen != 0) return "reloading";
  return m->announced ? "serving" : "starting";
}


/*
** /readyz: every worker of the serving generation serves and the server
** is neither draining (--drain-delay) nor stopping. The reason otherwise.
*/
static int ready (struct master *m, char *why, size_t len) {
  int n = count_gen(m, m->gen, 1);
  if (m->stopping || m->draining) {
    snprintf(why, len, "%s\n", master_state(m));
    return 0;
  }
  if (n < m->cfg->workers) {
    snprintf(why, len, "%d of %d workers serve\n", n, m->cfg->workers);
    return 0;
  }
  snprintf(why, len, "ready\n");
  return 1;
}


static const char *worker_state (struct master *m, const struct wproc *p) {
  if (p->retiring || p->gen != m->gen) return p->gen == m->next_gen ?
      (p->ready ? "serving" : "starting") : "draining";
  return p->ready ? "serving" : "starting";
}


#define LOADC(field) atomic_load_explicit(&(field), memory_order_relaxed)

/* /status: the master, its workers and their counters, in JSON. */
static long status_json (struct master *m, char *buf, size_t cap) {
  size_t n = 0;
  unsigned long conns = 0, reqs = 0;
  int first = 1;
#define PUT(...) do { int k_ = snprintf(buf + n, n < cap ? cap - n : 0, \
                                        __VA_ARGS__); \
                      if (k_ < 0 || (size_t)k_ >= cap - n) return -1; \
                      n += (size_t)k_; } while (0)
  PUT("{\"pid\":%d,\"state\":\"%s\",\"generation\":%u,\"model\":\"%s\","
      "\"workers\":[", (int)getpid(), master_state(m), m->gen,
      model_name(m->cfg->model));
  for (int i = 0; i < m->nprocs; i++) {
    const struct wproc *p = &m->procs[i];
    const struct mslot *sl = &m->metrics[p->id];
    if (p->pid == 0) continue;
    PUT("%s{\"id\":%d,\"pid\":%d,\"generation\":%u,\"state\":\"%s\","
        "\"connections\":%lu,\"requests\":%lu}", first ? "" : ",", p->id,
        (int)p->pid, p->gen, worker_state(m, p), LOADC(sl->conn_open),
        LOADC(sl->requests));
    first = 0;
  }
  for (int id = 1; id <= m->cfg->workers; id++) {
    conns += LOADC(m->metrics[id].conn_open);
    reqs += LOADC(m->metrics[id].requests);
  }
  PUT("],\"connections\":%lu,\"requests\":%lu}\n", conns, reqs);
#undef PUT
  return (long)n;
}


/*
** Reads a client's request into buf[0..cap) and ends it with a NUL:
** until ends(buf, got) says it is whole, buf is full, the client closes,
** or METRICS_WAIT_MS pass with nothing new. Used by both of the master's
** listeners (--metrics and --admin), which differ only in ends.
*/
static void read_request (int fd, char *buf, size_t cap,
                          int (*ends)(const char *buf, size_t got)) {
  size_t got = 0;
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    ssize_t n;
    if (poll(&p, 1, METRICS_WAIT_MS) <= 0) break;
    if ((n = read(fd, buf + got, cap - 1 - got)) <= 0) break;
    got += (size_t)n;
    buf[got] = '\0';
    if (ends(buf, got) || got == cap - 1) break;
  }
  buf[got] = '\0';
}


/* An HTTP request's head ends at its first empty line. */
static int head_ends (const char *buf, size_t got) {
  (void)got;
  return strstr(buf, "\r\n\r\n") != NULL || strstr(buf, "\n\n") != NULL;
}


/* A console command is one line. */
static int line_ends (const char *buf, size_t got) {
  return memchr(buf, '\n', got) != NULL;
}


/* The request line's path: "GET /readyz HTTP/1.1" gives "/readyz". */
static void request_path (const char *req, char *path, size_t len) {
  const char *sp = strchr(req, ' '), *end;
  path[0] = '\0';
  if (sp == NULL) return;
  end = sp + 1 + strcspn(sp + 1, " ?\r\n");
  snprintf(path, len, "%.*s", (int)(end - sp - 1), sp + 1);
}


/*
** Answers one client of the --metrics listener: reads its request
** (briefly: the master must not be held up by a slow client) and
** answers /metrics, /healthz, /readyz or /status.
*/
static void serve_metrics (struct master *m) {
  char req[2048], path[256], small[128], *body;
  size_t cap = 65536;
  long len;
  int fd = accept4(m->mls.fd, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0) return;
  read_request(fd, req, sizeof req, head_ends);
  request_path(req, path, sizeof path);
  if (strcmp(path, "/healthz") == 0) {
    int ok = serving_workers(m) > 0;
    respond(fd, ok ? "200 OK" : "503 Service Unavailable", "text/plain",
            ok ? "ok\n" : "no worker serves\n", ok ? 3 : 17);
  }
  else if (strcmp(path, "/readyz") == 0) {
    int ok = ready(m, small, sizeof small);
    respond(fd, ok ? "200 OK" : "503 Service Unavailable", "text/plain",
            small, strlen(small));
  }
  else if (strcmp(path, "/metrics") == 0 || strcmp(path, "/status") == 0) {
    int json = path[1] == 's';
    while ((body = malloc(cap)) != NULL &&
           (len = json ? status_json(m, body, cap) :
                  metrics_format(m->metrics, m->cfg->workers, m->ls, m->nls,
                                 body, cap)) < 0) {
      free(body);
      cap *= 2;
    }
    if (body != NULL)
      respond(fd, "200 OK", json ? "application/json" :
              "text/plain; version=0.0.4", body, (size_t)len);
    free(body);
  }
  else {
    static const char hint[] = "try /metrics, /healthz, /readyz or /status\n";
    respond(fd, "404 Not Found", "text/plain", hint, sizeof hint - 1);
  }
  close(fd);
}


/*
** The descriptor an upgrade passed in environment variable name (the old
** binary's listening socket), or -1; removes the variable.
*/
static int passed_fd (const char *name) {
  const char *passed = getenv(name);
  int fd = passed != NULL ? atoi(passed) : -1;
  unsetenv(name);
  return fd;
}


static int open_metrics (struct master *m) {
  struct listen_opts o = {16, 0, -1};
  struct address a;
  char err[512];
  int pfd = passed_fd("LUASRV_METRICS_FD");
  m->mls.fd = -1;
  if (m->cfg->metrics == NULL || address_parse(TR_TCP, m->cfg->metrics, &a,
                                               err, sizeof err) < 0) {
    if (pfd >= 3) close(pfd);
    if (m->cfg->metrics == NULL) return 0;
    log_error("error: --metrics: %s", err);
    return -1;
  }
  /* an upgrade passed the old binary's socket: the port stays bound */
  if (pfd >= 3 && listener_adopt(&m->mls, pfd, err, sizeof err) < 0) {
    close(pfd);
    m->mls.fd = -1;
  }
  if (m->mls.fd < 0 && listener_open(&m->mls, &a, &o, err, sizeof err) < 0) {
    log_error("error: --metrics: %s", err);
    return -1;
  }
  log_info("metrics on http://%s/metrics", m->mls.name + strlen("tcp://"));
  return 0;
}

/* }====================================================== */



/* {====================================================== --admin */

/*
** The console: one command per connection on a Unix socket (mode 0600:
** whoever can open it controls the server, as with the signals), read
** briefly like a scraper's request, answered from the master's own
** state. "reload" answers once the new workers serve or the reload
** failed: the client is kept until then (one at a time).
*/

#define ADMIN_UNKNOWN "(try status, workers, connections, shared, eval, " \
  "reload or drain)"

/* A channel to a new worker: a datagram pair, close-on-exec. */
static int admin_channel (int chan[2]) {
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, chan) == 0)
    return 0;
  log_error("cannot start a worker: %s", strerror(errno));
  return -1;
}


/* Sends head+tail and the descriptor fd over chan without waiting. */
static int admin_pass (int chan, int fd, const char *head, const char *tail) {
  char msg[8192], cbuf[CMSG_SPACE(sizeof(int))];
  int n = snprintf(msg, sizeof msg, "%s%s", head, tail);
  struct iovec iov = {msg, (size_t)n};
  struct msghdr mh = {0};
  struct cmsghdr *cm;
  if (n < 0 || (size_t)n >= sizeof msg) {
    errno = EMSGSIZE;
    return -1;
  }
  memset(cbuf, 0, sizeof cbuf);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = cbuf;
  mh.msg_controllen = sizeof cbuf;
  cm = CMSG_FIRSTHDR(&mh);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(cm), &fd, sizeof fd);
  return sendmsg(chan, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ? -1 : 0;
}


static void admin_reply (int fd, const char *text, size_t len) {
  send_all(fd, text, len);
  close(fd);
}


/* A reload ended: NULL when it serves, else why not; tells the waiter. */
static void admin_reloaded (struct master *m, const char *why) {
  char msg[512];
  int n;
  if (m->admin_wait < 0) return;
  if (why == NULL)
    n = snprintf(msg, sizeof msg, "reloaded %s: %d worker%s the new code\n",
                 m->cfg->script, m->cfg->workers,
                 m->cfg->workers == 1 ? " serves" : "s serve");
  else n = snprintf(msg, sizeof msg, "error: reload failed: %s\n", why);
  admin_reply(m->admin_wait, msg, n < (int)sizeof msg ? (size_t)n :
              sizeof msg - 1);
  m->admin_wait = -1;
}


/* "workers": a line per worker process. */
static long workers_text (struct master *m, char *buf, size_t cap) {
  size_t n = 0;
  int k = snprintf(buf, cap, "%-4s %-8s %-4s %-9s %11s %10s\n", "ID", "PID",
                   "GEN", "STATE", "CONNECTIONS", "REQUESTS");
  if (k < 0 || (size_t)k >= cap) return -1;
  n = (size_t)k;
  for (int i = 0; i < m->nprocs; i++) {
    const struct wproc *p = &m->procs[i];
    const struct mslot *sl = &m->metrics[p->id];
    if (p->pid == 0) continue;
    k = snprintf(buf + n, cap - n, "%-4d %-8d %-4u %-9s %11lu %10lu\n", p->id,
                 (int)p->pid, p->gen, worker_state(m, p),
                 LOADC(sl->conn_open), LOADC(sl->requests));
    if (k < 0 || (size_t)k >= cap - n) return -1;
    n += (size_t)k;
  }
  return (long)n;
}



/* A string as a Lua literal: quoted, unprintable bytes as \ddd. */
static size_t quote (char *out, size_t cap, const char *s, size_t n) {
  size_t j = 0;
  if (cap < 8) return 0;
  out[j++] = '"';
  for (size_t i = 0; i < n && j + 6 < cap; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      out[j++] = '\\';
      out[j++] = (char)c;
    }
    else if (c < 0x20 || c >= 0x7f) j += (size_t)snprintf(out + j, cap - j,
                                                          "\\%03u", c);
    else out[j++] = (char)c;
  }
  out[j++] = '"';
  out[j] = '\0';
  return j;
}


struct keylist {
  char *buf;
  size_t cap, len;
  int n;
};


static int add_key (void *ud, const char *key, size_t klen) {
  struct keylist *k = ud;
  size_t room = k->cap - k->len;
  if (room < 16) return 1;
  k->len += quote(k->buf + k->len, room - 1, key, klen);
  k->buf[k->len++] = '\n';
  k->n++;
  return 0;
}


#define SHARED_MAX_KEYS 1000

/* "shared": a line per dictionary. */
static long shared_list (char *buf, size_t cap) {
  long n = snprintf(buf, cap, "%-20s %12s %12s %8s\n", "NAME", "BYTES",
                    "FREE", "KEYS");
  for (int i = 0; i < shdict_ndicts() && n >= 0 && (size_t)n < cap; i++) {
    struct shdict *d = shdict_at(i);
    n += snprintf(buf + n, cap - (size_t)n, "%-20s %12zu %12zu %8zu\n",
                  shdict_name_at(i), shdict_capacity(d), shdict_free_space(d),
                  shdict_count(d));
  }
  return n;
}


/* "shared NAME": its keys, most recently used first. */
static long shared_keys (struct shdict *d, char *buf, size_t cap) {
  struct keylist k = {buf, cap - 64, 0, 0};
  size_t count = shdict_count(d);
  long n;
  shdict_keys(d, SHARED_MAX_KEYS, add_key, &k);
  n = (long)k.len;
  if (count > (size_t)k.n)  /* expired ones, or past the list's end */
    n += snprintf(buf + n, cap - (size_t)n, "(%d listed, %zu held)\n", k.n,
                  count);
  return n;
}


/* A value as a Lua literal into buf (cap bytes, tmp as large). */
static long literal (const struct shd_val *v, char *buf, size_t cap) {
  switch (v->type) {
    case SHD_STR: return (long)quote(buf, cap, v->s, v->len);
    case SHD_INT: return snprintf(buf, cap, "%lld", (long long)v->i);
    case SHD_NUM: return snprintf(buf, cap, "%.17g", v->n);
    default: return snprintf(buf, cap, "%s", v->b ? "true" : "false");
  }
}


/* "shared NAME KEY": the value and the time it has left. */
static long shared_value (struct shdict *d, const char *name, const char *key,
                          char *buf, size_t cap) {
  struct shd_val v;
  double ttl = 0;
  char *val = malloc(cap);
  long n;
  int rc;
  if (val == NULL) return snprintf(buf, cap, "error: out of memory\n");
  rc = shdict_get(d, key, strlen(key), &v, val, cap / 4 - 8);
  if (rc == SHD_AGAIN)
    n = snprintf(buf, cap, "error: the value is %zu bytes, too big to show\n",
                 v.len);
  else if (rc != SHD_OK)
    n = snprintf(buf, cap, "error: %.64s: %s\n", name,
                 rc == SHD_NOTFOUND ? "no such key" : shdict_strerror(rc));
  else {
    n = literal(&v, buf, cap - 64);  /* a quoted byte takes at most 4 */
    if (shdict_ttl(d, key, strlen(key), &ttl) == SHD_OK && ttl > 0)
      n += snprintf(buf + n, cap - (size_t)n, " (expires in %.3f s)", ttl);
    buf[n++] = '\n';
  }
  free(val);
  return n;
}


/*
** "shared", "shared NAME", "shared NAME KEY", read from the master's own
** mapping of the dictionaries.
*/
static long shared_text (const char *args, char *buf, size_t cap) {
  char name[SHD_MAX_NAME + 1];
  size_t nl = strcspn(args, " ");
  struct shdict *d;
  if (*args == '\0') return shared_list(buf, cap);
  snprintf(name, sizeof name, "%.*s", (int)nl, args);
  if (nl > SHD_MAX_NAME || (d = shdict_lookup(name)) == NULL)
    return snprintf(buf, cap, "error: no dictionary '%.64s' (--shared "
                    "NAME:SIZE defines one)\n", name);
  if (args[nl] != ' ') return shared_keys(d, buf, cap);
  return shared_value(d, name, args + nl + 1, buf, cap);
}


/*
** "connections ID" and "eval ID CODE" go to worker ID with the client's
** descriptor (admin.c answers); the master waits for nothing.
*/
static void admin_forward (struct master *m, int fd, const char *cmd) {
  char buf[256];
  const char *rest = strchr(cmd, ' ') + 1;
  char *end;
  long id = strtol(rest, &end, 10);
  struct wproc *p = NULL;
  int n;
  for (int i = 0; i < m->nprocs && end != rest; i++)
    if (m->procs[i].pid != 0 && m->procs[i].id == id && m->procs[i].chan >= 0
        && m->procs[i].gen == m->gen && !m->procs[i].retiring)
      p = &m->procs[i];
  if (p == NULL) {
    n = snprintf(buf, sizeof buf, "error: no worker '%.*s' (workers are "
                 "1 to %d; see workers)\n", (int)strcspn(rest, " "), rest,
                 m->cfg->workers);
    admin_reply(fd, buf, (size_t)n);
    return;
  }
  if (cmd[0] == 'e' && *end != ' ') {
    admin_reply(fd, "error: usage: eval WORKER 'lua code'\n", 37);
    return;
  }
  n = snprintf(buf, sizeof buf, "%s", cmd[0] == 'e' ? "eval " : "connections");
  if (admin_pass(p->chan, fd, buf, cmd[0] == 'e' ? end + 1 : "") < 0) {
    n = snprintf(buf, sizeof buf, "error: worker %ld is busy (%s)\n", id,
                 strerror(errno));
    admin_reply(fd, buf, (size_t)n);
    return;
  }
  close(fd);
}


static void admin_command (struct master *m, int fd, const char *cmd) {
  char buf[65536];
  long len;
  if (strcmp(cmd, "status") == 0 || strcmp(cmd, "workers") == 0) {
    len = cmd[0] == 's' ? status_json(m, buf, sizeof buf) :
                          workers_text(m, buf, sizeof buf);
    if (len < 0) len = snprintf(buf, sizeof buf, "error: too many workers "
                                "to list\n");
    admin_reply(fd, buf, (size_t)len);
  }
  else if (strcmp(cmd, "reload") == 0) {
    if (m->admin_wait >= 0) {
      len = snprintf(buf, sizeof buf, "error: another ctl waits for a "
                     "reload already\n");
      admin_reply(fd, buf, (size_t)len);
      return;
    }
    if (m->stopping || m->draining) {
      len = snprintf(buf, sizeof buf, "error: the server is stopping\n");
      admin_reply(fd, buf, (size_t)len);
      return;
    }
    m->admin_wait = fd;  /* answered by admin_reloaded */
    reload(m);
  }
  else if (strcmp(cmd, "shared") == 0 || strncmp(cmd, "shared ", 7) == 0) {
    len = shared_text(cmd[6] == ' ' ? cmd + 7 : "", buf, sizeof buf);
    if (len < 0 || (size_t)len >= sizeof buf) len = (long)strlen(buf);
    admin_reply(fd, buf, (size_t)len);
  }
  else if (strncmp(cmd, "connections ", 12) == 0 ||
           strncmp(cmd, "eval ", 5) == 0)
    admin_forward(m, fd, cmd);
  else if (strcmp(cmd, "drain") == 0) {
    if (m->cfg->drain_delay > 0 && !m->draining && !m->stopping)
      len = snprintf(buf, sizeof buf, "draining: /readyz answers 503; "
                     "stopping in %g s\n", m->cfg->drain_delay);
    else len = snprintf(buf, sizeof buf, "stopping: in-flight requests get "
                        "%g s\n", m->cfg->grace);
    admin_reply(fd, buf, (size_t)len);
    drain(m);
  }
  else {
    len = snprintf(buf, sizeof buf, "error: unknown command '%.64s' "
                   ADMIN_UNKNOWN "\n", cmd);
    admin_reply(fd, buf, (size_t)len);
  }
}


static void serve_admin (struct master *m) {
  char req[4096];
  int fd = accept4(m->als.fd, NULL, NULL, SOCK_CLOEXEC);
  if (fd < 0) return;
  read_request(fd, req, sizeof req, line_ends);
  req[strcspn(req, "\r\n")] = '\0';
  admin_command(m, fd, req);
}


static int open_admin (struct master *m) {
  struct listen_opts o = {16, 0, 0600};
  struct address a;
  char err[512];
  int pfd = passed_fd("LUASRV_ADMIN_FD");
  m->als.fd = -1;
  m->admin_wait = -1;
  if (m->cfg->admin == NULL) {
    if (pfd >= 3) close(pfd);
    return 0;
  }
  if (address_parse(TR_UNIX, m->cfg->admin, &a, err, sizeof err) < 0) {
    log_error("error: --admin: %s", err);
    return -1;
  }
  /* an upgrade passed the old binary's socket: the file is ours now */
  if (pfd >= 3 && listener_adopt(&m->als, pfd, err, sizeof err) == 0)
    m->als.created_path = 1;
  else if (pfd >= 3) close(pfd);
  if (m->als.fd < 0 && listener_open(&m->als, &a, &o, err, sizeof err) < 0) {
    log_error("error: --admin: %s", err);
    return -1;
  }
  log_info("admin console on %s", m->als.name);
  return 0;
}

/* }====================================================== */

static void serve (struct master *m) {
  struct pollfd *pf = calloc((size_t)m->nprocs + 4, sizeof *pf);
  struct wproc **owner = calloc((size_t)m->nprocs + 4, sizeof *owner);
  if (pf == NULL || owner == NULL) {
    log_error("error: out of memory");
    signal_gen(m, 0, SIGKILL);
    m->exit_code = 1;
    m->stopping = 1;
  }
  while (pf != NULL && owner != NULL && (alive(m) || !m->stopping)) {
    int n = 4;
    pf[3].fd = m->als.fd;  /* -1 without --admin */
    pf[3].events = POLLIN;
    pf[0].fd = m->sfd;
    pf[0].events = POLLIN;
    pf[1].fd = m->mls.fd;  /* -1 without --metrics: poll skips it */
    pf[1].events = POLLIN;
    pf[2].fd = m->up_fd;   /* -1 unless an upgrade starts */
    pf[2].events = POLLIN;
    for (int i = 0; i < m->nprocs; i++) {
      if (m->procs[i].pid != 0 && m->procs[i].ready_fd >= 0) {
        pf[n].fd = m->procs[i].ready_fd;
        pf[n].events = POLLIN;
        owner[n++] = &m->procs[i];
      }
    }
    if (poll(pf, (nfds_t)n, next_wait_ms(m)) < 0 && errno != EINTR) break;
    for (int i = 4; i < n; i++)
      if (pf[i].revents != 0 && owner[i]->ready_fd == pf[i].fd)
        on_ready(m, owner[i]);
    if (pf[1].revents != 0) serve_metrics(m);
    if (pf[2].revents != 0 && m->up_fd == pf[2].fd) on_upgrade_fd(m);
    if (pf[3].revents != 0) serve_admin(m);
    upgrade_timeout(m);
    if (pf[0].revents != 0 && on_signals(m)) {  /* a second ^C */
      signal_gen(m, 0, SIGKILL);
      m->exit_code = 130;
      break;
    }
    respawn_due(m);
    if (m->draining && !m->stopping && monotonic_now() >= m->drain_until)
      begin_stop(m, 0);
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


int master_run (struct config *cfg, struct listener *ls, int *nls) {
  static struct master m;
  sigset_t set;
  memset(&m, 0, sizeof m);
  m.cfg = m.initial = cfg;
  m.ls = ls;
  m.nls = *nls;
  m.nls_out = nls;
  m.up_fd = -1;
  m.barrier_fd = -1;
  resolve_exe(&m);
  upgrade_env(&m);
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
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGUSR2);
  sigprocmask(SIG_BLOCK, &set, &m.oldmask);
  if ((m.sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
    log_error("error: signalfd: %s", strerror(errno));
    free(m.procs);
    return 1;
  }
  if ((cfg->metrics != NULL || cfg->admin != NULL) &&
      (m.metrics = metrics_new(cfg->workers)) == NULL) {
    log_error("error: --metrics: %s", strerror(errno));
    close(m.sfd);
    free(m.procs);
    return 1;
  }
  if (open_metrics(&m) < 0 || open_admin(&m) < 0) {
    listener_close(&m.als);
    close(m.sfd);
    free(m.procs);
    listener_close(&m.mls);
    sigprocmask(SIG_SETMASK, &m.oldmask, NULL);
    return 1;
  }
  /* the workers load the script from the master's copy (one it could not
  ** read, they read themselves: their error says why) */
  m.script = lload_read(cfg->script, &m.script_len);
  if (spawn(&m, 1, m.gen) == NULL) begin_stop(&m, 1);
  serve(&m);
  await_barrier(&m);
  close(m.sfd);
  for (int i = 0; i < m.nprocs; i++)
    if (m.procs[i].ready_fd >= 0) close(m.procs[i].ready_fd);
  free(m.procs);
  listener_close(&m.mls);
  listener_close(&m.als);
  if (m.admin_wait >= 0) close(m.admin_wait);
  metrics_free(m.metrics, cfg->workers);
  drop_next_config(&m);
  free(m.script);
  if (m.cfg != m.initial) {
    cli_free(m.cfg);
    free(m.cfg);
  }
  sigprocmask(SIG_SETMASK, &m.oldmask, NULL);
  return m.exit_code;
}
