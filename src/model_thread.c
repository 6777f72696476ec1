/*
** model_thread.c -- socketserver's ThreadingMixIn: each request runs on a
** thread of its own. The main thread accepts and receives; a pool of
** handler threads, grown on demand up to --max-threads, serves the
** requests, each thread owning one Lua state loaded once (script and
** init) and reused for every request it serves. A state is touched by
** its thread alone, and by the main thread only before the thread starts
** and after it was joined. At the limit the listeners leave the loop and
** further clients wait in the backlog; the queue between the two sides
** never holds more than --max-threads requests.
*/
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <lua.h>

#include "admin.h"
#include "log.h"
#include "lsrv.h"
#include "model.h"

#define ACCEPT_BATCH 16       /* requests taken per readiness event */
#define SERVICE_EVERY 0.5     /* seconds between service_actions calls */
#define CUT_SLACK 0.5         /* after the grace, for cut requests to unwind */
#define GROW_DELAY 0.002      /* a busy thread may be just finishing */
#define RETRY_GROW 1.0        /* after a thread could not load its state */
#define KICK_EVERY 0.01       /* stopping: how often running threads are
                              ** signalled out of a blocking read */
#define KICK_SIG (SIGRTMIN + 1)

/* An accepted request on its way to a handler thread. */
struct job {
  int lindex;
  int fd;                     /* the connection; -1 for a datagram */
  char *data;                 /* the datagram (malloc'd); NULL for a stream */
  size_t len;
  struct sockaddr_storage peer;
  socklen_t peerlen;
  struct job *next;
};

struct tpool;

struct hthread {
  struct tpool *p;
  pthread_t tid;
  struct lctx *x;             /* this thread's state */
  int running;                /* serving a job (under p->mu) */
  int first;                  /* the first thread: it runs the console's eval */
  struct lconn *cur;          /* its request, for the console (p->mu) */
  _Atomic(const char *) waits;  /* what cur waits on now, or NULL */
  int dead;                   /* could not load its state; exits (p->mu) */
  double next_service;
};

struct tpool {
  struct mloop ml;            /* first: the skeleton's hooks get it */
  struct worker *w;
  pthread_mutex_t mu;         /* guards the fields down to 'main_waits' */
  pthread_cond_t work;        /* a job was queued, or quit was set */
  struct job *head, *tail;    /* queued jobs, oldest first */
  int nqueued;
  long busy;                  /* jobs queued or running */
  int nidle;                  /* threads waiting for work */
  int nstarting;              /* threads created that have not looked yet */
  double nogrow_until;        /* a thread failed to start: retry after */
  int quit;                   /* threads leave once the queue is empty */
  int main_waits;             /* the main thread wants to hear of each end */
  int eval_fd;                /* the console's eval for the first thread's
                                 state: its client, or -1 */
  char *eval_code;            /* ... and its chunk (malloc'd) */
  pthread_mutex_t load;       /* one model_start at a time */
  /* the main thread's alone */
  struct hthread **threads;
  int nthreads, cap;
  struct evloop *loop;        /* ml's */
  int done_fd;                /* eventfd: a job ended while main_waits */
  struct timer grow;          /* armed while jobs wait for a new thread */
  char *dgram;
};

/*
** A handler thread blocks in its waits, and waits for input in the read
** itself (lconn_block_read) when it can.
*/
static int thread_block (struct lctx *x, struct lconn *c, unsigned ev,
                         double deadline) {
  struct hthread *h = x->model;
  int rc;
  if (h != NULL)  /* for the console's connections */
    atomic_store(&h->waits, c == NULL ? "sleep" : ev & EV_WRITE ? "write"
                                                                : "read");
  /* the read itself waits: "read" stays until the next wait or the end
  ** of the request (the handler runs briefly between its reads) */
  if (c != NULL && (ev & ~EV_IDLEWAIT) == EV_READ && lconn_block_read(c))
    return 0;
  rc = sched_block(x, c, ev, deadline);
  if (h != NULL) atomic_store(&h->waits, NULL);
  return rc;
}

static const struct sched_ops thread_ops = {
  .name = "thread",
  .block = thread_block,
};


/* {====================================================== handler threads */

/* Runs the flow on job j in h's state. */
static void run_job (struct hthread *h, struct job *j) {
  struct lconn *c = model_request(h->x, lsrv_L(h->x), j->lindex, j->fd,
                                  j->data, j->len, &j->peer, j->peerlen);
  if (c == NULL) return;  /* refused (and released) */
  pthread_mutex_lock(&h->p->mu);
  h->cur = j->fd >= 0 ? c : NULL;
  pthread_mutex_unlock(&h->p->mu);
  model_run(h->x, c, 0);
  pthread_mutex_lock(&h->p->mu);
  h->cur = NULL;
  atomic_store(&h->waits, NULL);
  pthread_mutex_unlock(&h->p->mu);
  if (j->fd >= 0)  /* the table is locked */
    model_release(h->p->w, (struct sockaddr *)&j->peer);
}


static void free_job (struct job *j) {
  free(j->data);
  free(j);
}


/* service_actions in h's own state, about every SERVICE_EVERY seconds. */
static void maybe_service (struct hthread *h) {
  double now = monotonic_now();
  if (now < h->next_service) return;
  lstate_call_hook(h->x, "service_actions", 0);
  h->next_service = now + SERVICE_EVERY;
}


static struct timespec abstime (double t) {
  struct timespec ts;
  ts.tv_sec = (time_t)t;
  ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
  return ts;
}


/* Loads a state for a thread started after the first; 0 or -1. */
static int load (struct hthread *h) {
  struct tpool *p = h->p;
  /* init hooks, and C modules' luaopen_ functions, need not be
  ** thread-safe: a script's init then runs as it does elsewhere */
  pthread_mutex_lock(&p->load);
  h->x = model_start(p->w, &thread_ops);
  pthread_mutex_unlock(&p->load);
  if (h->x != NULL) h->x->model = h;
  return h->x != NULL ? 0 : -1;
}


/* Takes the oldest job (p->mu held); NULL when none. */
static struct job *dequeue (struct tpool *p) {
  struct job *j = p->head;
  if (j != NULL) {
    p->head = j->next;
    if (p->head == NULL) p->tail = NULL;
    p->nqueued--;
  }
  return j;
}


/* A job ended (p->mu held): tell the main thread if it waits for that. */
static void job_done (struct tpool *p) {
  p->busy--;
  if (p->main_waits) {
    uint64_t one = 1;
    if (write(p->done_fd, &one, sizeof one) < 0) { /* a wake-up is pending */ }
  }
}


static int timer_due (struct lctx *x) {
  double next = ltimer_next(x);
  return next > 0 && next <= monotonic_now();
}


/*
** Serves jobs until quit is set and the queue is empty. While idle it
** runs service_actions and the timers of its state when they are due.
*/
static void *thread_main (void *arg) {
  struct hthread *h = arg;
  struct tpool *p = h->p;
  int ok = h->x != NULL || load(h) == 0;
  sigset_t kick;
  /* a stop interrupts a read blocked in conn.c's read (EINTR) */
  sigemptyset(&kick);
  sigaddset(&kick, KICK_SIG);
  pthread_sigmask(SIG_UNBLOCK, &kick, NULL);
  pthread_mutex_lock(&p->mu);
  p->nstarting--;
  if (!ok) {  /* the error is logged; others serve the queue meanwhile */
    p->nogrow_until = monotonic_now() + RETRY_GROW;
    h->dead = 1;
  }
  h->next_service = monotonic_now() + SERVICE_EVERY;
  while (ok) {
    struct job *j;
    if (h->first && p->eval_fd >= 0) {  /* the console's eval, first */  /* the console's eval */
      int fd = p->eval_fd;
      char *code = p->eval_code;
      p->eval_fd = -1;
      p->eval_code = NULL;
      pthread_mutex_unlock(&p->mu);
      admin_eval(h->x, fd, code);
      free(code);
      pthread_mutex_lock(&p->mu);
      continue;
    }
    j = dequeue(p);
    if (j != NULL) {
      h->running = 1;
      pthread_mutex_unlock(&p->mu);
      run_job(h, j);
      free_job(j);
      maybe_service(h);
      pthread_mutex_lock(&p->mu);
      h->running = 0;
      job_done(p);
    }
    else if (p->quit) {
      pthread_mutex_unlock(&p->mu);
      ltimer_stop(h->x);  /* its timers' premature runs, here */
      pthread_mutex_lock(&p->mu);
      break;
    }
    else if (monotonic_now() >= h->next_service) {
      pthread_mutex_unlock(&p->mu);
      maybe_service(h);
      pthread_mutex_lock(&p->mu);
    }
    else if (timer_due(h->x)) {  /* its state's timers run when it is idle */
      pthread_mutex_unlock(&p->mu);
      ltimer_run(h->x);
      pthread_mutex_lock(&p->mu);
    }
    else {
      double until = ltimer_next(h->x);
      struct timespec ts = abstime(until > 0 && until < h->next_service
                                   ? until : h->next_service);
      p->nidle++;
      pthread_cond_timedwait(&p->work, &p->mu, &ts);
      p->nidle--;
    }
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}


/*
** Starts a handler thread with state x (NULL: it loads its own). Signals
** are blocked in it so that they reach the main thread, whose loop acts
** on them. Returns 0 or -errno.
*/
static int spawn (struct tpool *p, struct lctx *x) {
  struct hthread *h;
  sigset_t all, old;
  int rc;
  if (p->nthreads == p->cap) {
    int n = p->cap ? 2 * p->cap : 16;
    struct hthread **t = realloc(p->threads, (size_t)n * sizeof *t);
    if (t == NULL) return -ENOMEM;
    p->threads = t;
    p->cap = n;
  }
  if ((h = calloc(1, sizeof *h)) == NULL) return -ENOMEM;
  h->p = p;
  h->x = x;
  h->first = x != NULL;
  if (x != NULL) x->model = h;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  rc = pthread_create(&h->tid, NULL, thread_main, h);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    free(h);
    return -rc;
  }
  p->threads[p->nthreads++] = h;
  return 0;
}

/* }====================================================== */


/* {====================================================== the main thread */

/* More jobs wait than threads will look at the queue (p->mu held). */
static int short_of_threads (struct tpool *p) {
  return monotonic_now() >= p->nogrow_until &&
         p->nthreads < p->w->cfg->max_threads &&
         p->nqueued > p->nidle + p->nstarting;
}


/*
** Starts threads while short of them. Not at once when a job finds
** every thread taken: one may be just done with a request whose reply is
** out, and a client that sends the next one at once would get a new
** state each time.
*/
/* The console's "connections": each thread's request (p->mu held). */
static void conns (struct mloop *ml, struct admin_out *o) {
  struct tpool *p = (struct tpool *)ml;
  pthread_mutex_lock(&p->mu);
  for (int i = 0; i < p->nthreads; i++) {
    struct hthread *h = p->threads[i];
    const char *waits = atomic_load(&h->waits);
    if (h->cur != NULL &&  /* its thread may close it meanwhile */
        __atomic_load_n(&h->cur->io.fd, __ATOMIC_RELAXED) >= 0)
      admin_conn(o, h->cur, waits != NULL ? waits : "running");
  }
  pthread_mutex_unlock(&p->mu);
}


/* The console's eval: for the first thread, between its requests. */
static void eval (struct mloop *ml, int fd, const char *code) {
  struct tpool *p = (struct tpool *)ml;
  char *copy = strdup(code);
  int busy;
  if (copy == NULL) {
    admin_reply(fd, "error: out of memory\n");
    return;
  }
  pthread_mutex_lock(&p->mu);
  if (!(busy = p->eval_fd >= 0)) {
    p->eval_fd = fd;
    p->eval_code = copy;
    pthread_cond_broadcast(&p->work);  /* the first thread must look */
  }
  pthread_mutex_unlock(&p->mu);
  if (busy) {
    free(copy);
    admin_reply(fd, "error: another eval waits for this worker\n");
  }
}


/* Joins and forgets the threads that could not load a state. */
static void reap_dead (struct tpool *p) {
  int n = 0;
  for (int i = 0; i < p->nthreads; i++) {
    struct hthread *h = p->threads[i];
    int dead;
    pthread_mutex_lock(&p->mu);
    dead = h->dead;
    pthread_mutex_unlock(&p->mu);
    if (dead) {
      pthread_join(h->tid, NULL);  /* it is on its way out */
      free(h);
    }
    else p->threads[n++] = h;
  }
  p->nthreads = n;
}


static void on_grow (struct evloop *loop, struct timer *t) {
  struct tpool *p = t->data;
  (void)loop;
  reap_dead(p);
  for (;;) {
    int grow, rc;
    pthread_mutex_lock(&p->mu);
    if ((grow = short_of_threads(p))) p->nstarting++;
    pthread_mutex_unlock(&p->mu);
    if (!grow) return;
    if ((rc = spawn(p, NULL)) < 0) {
      log_warn("cannot start a handler thread: %s", strerror(-rc));
      pthread_mutex_lock(&p->mu);
      p->nstarting--;
      p->nogrow_until = monotonic_now() + RETRY_GROW;
      pthread_mutex_unlock(&p->mu);
      return;
    }
  }
}


/* Queues job j for the handler threads. */
static void dispatch (struct tpool *p, struct job *j) {
  int grow;
  model_count_request(p->w);
  j->next = NULL;
  pthread_mutex_lock(&p->mu);
  if (p->tail != NULL) p->tail->next = j;
  else p->head = j;
  p->tail = j;
  p->nqueued++;
  p->busy++;
  pthread_cond_signal(&p->work);
  grow = short_of_threads(p);
  pthread_mutex_unlock(&p->mu);
  if (grow && !timer_armed(&p->grow))
    timer_start(p->loop, &p->grow, evloop_now(p->loop) + GROW_DELAY);
}


/* Takes one request from listener i and queues it; 1, or 0 when none. */
static int take (struct mloop *ml, int i, int max) {
  struct tpool *p = (struct tpool *)ml;
  struct listener *l = &p->w->ls[i];
  struct job *j = malloc(sizeof *j);
  long n;
  (void)max;
  if (j == NULL) {
    model_out_of_memory(p->w);
    return 0;
  }
  j->lindex = i;
  j->fd = -1;
  j->data = NULL;
  j->len = 0;
  if (l->stream) {
    if ((j->fd = model_accept(p->w, l->fd, &j->peer, &j->peerlen)) < 0) {
      if (j->fd != -EAGAIN && j->fd != -ECONNABORTED)
        log_warn("accept on %s: %s", l->name, strerror(-j->fd));
      free(j);
      return 0;
    }
  }
  else {
    n = model_recv(p->w, l->fd, p->dgram, DGRAM_MAX, &j->peer, &j->peerlen);
    if (n < 0 || (n > 0 && (j->data = malloc((size_t)n)) == NULL)) {
      if (n > 0) model_out_of_memory(p->w);
      free(j);
      return n == -EAGAIN ? 0 : 1;  /* a bad datagram: try the next */
    }
    if (n > 0) memcpy(j->data, p->dgram, (size_t)n);  /* no NULL to memcpy */
    j->len = (size_t)n;
  }
  dispatch(p, j);
  return 1;
}


/*
** Jobs queued or running. While there is no room for more (or the worker
** stops), the threads wake the main thread (done_fd) whenever a request
** ends: the flag is set under the same lock the count is read under, so
** an end cannot slip between the two.
*/
static long busy_jobs (struct mloop *ml) {
  struct tpool *p = (struct tpool *)ml;
  long busy;
  pthread_mutex_lock(&p->mu);
  busy = p->busy;
  p->main_waits = worker_stopping(p->w) || busy >= p->w->cfg->max_threads;
  pthread_mutex_unlock(&p->mu);
  return busy;
}


static void on_done (struct evloop *loop, int fd, unsigned ev, void *data) {
  uint64_t n;
  (void)loop;
  (void)ev;
  if (read(fd, &n, sizeof n) < 0) { /* nothing pending: spurious */ }
  model_accepting(data);
}


/* Tells the threads to leave once the queue is empty. */
static void quit (struct tpool *p) {
  pthread_mutex_lock(&p->mu);
  p->quit = 1;
  pthread_cond_broadcast(&p->work);
  pthread_mutex_unlock(&p->mu);
}


/* The worker stops: the threads leave once the queue is empty. */
static void stopped (struct mloop *ml) {
  quit((struct tpool *)ml);
}


static void on_kick (int signo) {
  (void)signo;
}


/*
** Handler threads may sleep in a blocking read (lconn_block_read) that the stop
** pipe cannot wake: signal the running ones. A signal that lands just
** before a thread enters its read is lost, hence the repeats while
** stopping.
*/
static void kick_running (struct mloop *ml) {
  struct tpool *p = (struct tpool *)ml;
  pthread_mutex_lock(&p->mu);
  for (int i = 0; i < p->nthreads; i++)
    if (p->threads[i]->running) pthread_kill(p->threads[i]->tid, KICK_SIG);
  pthread_mutex_unlock(&p->mu);
}


/* }====================================================== */


/* {====================================================== start and end */

/*
** Drops the jobs no thread has taken, so that idle threads leave, and
** returns how many threads are still running a request.
*/
static int drop_queue (struct tpool *p) {
  struct job *j;
  int running = 0;
  pthread_mutex_lock(&p->mu);
  while ((j = dequeue(p)) != NULL) {
    if (j->fd >= 0) {
      close(j->fd);
      model_release(p->w, (struct sockaddr *)&j->peer);
    }
    free_job(j);
    p->busy--;
  }
  for (int i = 0; i < p->nthreads; i++) running += p->threads[i]->running;
  pthread_mutex_unlock(&p->mu);
  return running;
}


/*
** Joins the threads and closes their states (server_close runs in each,
** here, one after the other). A thread still running a request past the
** grace cannot be stopped from outside: it keeps its state and is left
** to the exit. Returns the number of such threads.
*/
static int finish (struct tpool *p, long busy) {
  int stuck = 0;
  quit(p);
  if (busy > 0 && (stuck = drop_queue(p)) > 0)
    log_warn("grace period over: %d request%s still running, exiting "
             "without %s", stuck, stuck == 1 ? "" : "s",
             stuck == 1 ? "it" : "them");
  for (int i = 0; i < p->nthreads; i++) {
    struct hthread *h = p->threads[i];
    int running, dead;
    pthread_mutex_lock(&p->mu);
    running = h->running;
    dead = h->dead;
    pthread_mutex_unlock(&p->mu);
    if (dead) {
      pthread_join(h->tid, NULL);
      free(h);
      continue;
    }
    if (running) {
      pthread_detach(h->tid);
      continue;
    }
    pthread_join(h->tid, NULL);
    if (h->x != NULL) model_finish(h->x);
    free(h);
  }
  return stuck;
}


static struct tpool *pool_new (struct worker *w) {
  struct tpool *p = calloc(1, sizeof *p);
  pthread_condattr_t ca;
  if (p == NULL) return NULL;
  p->w = w;
  p->ml.limit = w->cfg->max_threads;
  p->ml.batch = ACCEPT_BATCH;
  /* after the grace, when sched_block cuts their waits, cut requests get
  ** a little more to unwind; running ones are signalled out of a
  ** blocking read meanwhile */
  p->ml.slack = CUT_SLACK;
  p->ml.tick = KICK_EVERY;
  p->ml.take = take;
  p->ml.busy = busy_jobs;
  p->ml.stopping = kick_running;
  p->ml.stopped = stopped;
  p->ml.conns = conns;
  p->ml.eval = eval;
  p->eval_fd = -1;
  if (model_loop_init(&p->ml, w) == 0) p->loop = p->ml.loop;
  p->dgram = malloc(DGRAM_MAX);
  p->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  timer_init(&p->grow, on_grow, p);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);  /* as monotonic_now */
  pthread_cond_init(&p->work, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&p->mu, NULL);
  pthread_mutex_init(&p->load, NULL);
  return p;
}


/* Frees p, unless threads left running still use it (then the exit does). */
static void pool_free (struct tpool *p, int stuck) {
  if (p == NULL || stuck > 0) return;
  pthread_cond_destroy(&p->work);
  pthread_mutex_destroy(&p->mu);
  pthread_mutex_destroy(&p->load);
  if (p->done_fd >= 0) close(p->done_fd);
  model_loop_free(&p->ml);
  free(p->dgram);
  free(p->threads);
  free(p);
}


/* Loads the first state here, so that its errors stop the start. */
static int first_thread (struct tpool *p) {
  struct lctx *x = model_start(p->w, &thread_ops);
  int rc;
  if (x == NULL) return -1;
  p->nstarting = 1;
  if ((rc = spawn(p, x)) < 0) {
    log_error("error: cannot start a handler thread: %s", strerror(-rc));
    model_finish(x);
    return -1;
  }
  return 0;
}


static int serve_thread (struct worker *w) {
  struct tpool *p = pool_new(w);
  int stuck;
  if (p == NULL || p->loop == NULL || p->dgram == NULL || p->done_fd < 0) {
    log_error("error: %s", strerror(errno ? errno : ENOMEM));
    pool_free(p, 0);
    return 1;
  }
  {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_kick;
    sa.sa_flags = SA_RESTART;  /* reads with SO_RCVTIMEO fail with EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(KICK_SIG, &sa, NULL);
  }
  if (first_thread(p) < 0) {
    pool_free(p, 0);
    return 1;
  }
  evloop_add(p->loop, p->done_fd, EV_READ, on_done, p);
  stuck = finish(p, model_loop_run(&p->ml));
  timer_stop(p->loop, &p->grow);
  pool_free(p, stuck);
  return 0;
}


const struct model model_thread = {
  .name = "thread",
  .serve = serve_thread,
};
