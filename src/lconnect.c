/*
** lconnect.c -- outbound connections: luasrv.connect(url [, opts]) and the
** keep-alive pool (OpenResty's cosockets). A connection is a struct lconn
** like a request, flagged LC_OUTBOUND, so every request method works on
** it and waits through the same waitio path: the event model yields, the
** others poll. Connecting is non-blocking (EINPROGRESS, then EV_WRITE and
** SO_ERROR). Host names are looked up by one short-lived thread per
** lookup running getaddrinfo; the waiting request watches an eventfd that
** the thread signals, so the loop never blocks and the connect timeout
** covers the lookup too. Network failures return nil, msg; misuse raises.
*/
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "address.h"
#include "lsrv.h"
#include "tls.h"

#define MAX_ADDRS 8           /* addresses of a name tried in turn */
#define MAX_LOOKUPS 64        /* lookup threads running at once, per process */
#define RETRY_SECS 0.01       /* a full Unix backlog: try again this often */
#define POOL_IDLE 60.0        /* setkeepalive defaults */
#define POOL_SIZE 30
#define UV_KEY 2              /* user value of an outbound conn: pool key */
#define LOOKUP_MT "luasrv.lookup"
/* A failed lookup; its reason is in struct addrs. */
#define ERR_LOOKUP (-100010)
#define ERR_UNREAD LCONNECT_ERR_UNREAD

/* Phases of connect_k. */
enum { K_LOOKUP, K_CONNECT, K_RETRY };

static char pool_key;         /* registry: the keep-alive pool */


/* {====================================================== name lookups */

/*
** A lookup in flight. The thread owns it until it moves state from
** Q_PENDING to Q_DONE; then the request does. A request that gives up
** (timeout, garbage collection) moves it to Q_ABANDONED instead, and the
** thread frees it. The thread signals through its own duplicate of the
** eventfd, so the request may close its end at any time.
*/
enum { Q_PENDING, Q_DONE, Q_ABANDONED };

struct query {
  atomic_int state;
  int wfd;                    /* the thread's descriptor of the eventfd */
  int socktype;
  int err;                    /* getaddrinfo's result */
  int syserr;                 /* errno, for EAI_SYSTEM */
  struct addrinfo *res;
  char port[8];
  char host[];
};

static atomic_int nlookups;


static void query_free (struct query *q) {
  if (q->res != NULL) freeaddrinfo(q->res);
  free(q);
}


static void *lookup_thread (void *arg) {
  struct query *q = arg;
  struct addrinfo hints;
  int wfd = q->wfd, expected = Q_PENDING;
  uint64_t one = 1;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = q->socktype;
  hints.ai_flags = AI_NUMERICSERV;
  q->err = getaddrinfo(q->host, q->port, &hints, &q->res);
  q->syserr = errno;
  if (atomic_compare_exchange_strong(&q->state, &expected, Q_DONE)) {
    if (write(wfd, &one, sizeof one) < 0) { /* cannot fail: counter only */ }
  }
  else
    query_free(q);  /* abandoned: nobody else holds it */
  close(wfd);
  atomic_fetch_sub(&nlookups, 1);
  return NULL;
}


/*
** Starts looking up q; returns the eventfd to watch or -errno. The thread
** runs with every signal blocked: the worker's handlers belong elsewhere.
*/
static int lookup_start (struct query *q) {
  pthread_t tid;
  pthread_attr_t attr;
  sigset_t all, old;
  int efd, rc;
  if (atomic_fetch_add(&nlookups, 1) >= MAX_LOOKUPS) {
    atomic_fetch_sub(&nlookups, 1);
    return -EAGAIN;
  }
  if ((efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0 ||
      (q->wfd = fcntl(efd, F_DUPFD_CLOEXEC, 0)) < 0) {
    rc = -errno;
    if (efd >= 0) close(efd);
    atomic_fetch_sub(&nlookups, 1);
    return rc;
  }
  sigfillset(&all);
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = pthread_create(&tid, &attr, lookup_thread, q);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    close(q->wfd);
    close(efd);
    atomic_fetch_sub(&nlookups, 1);
    return -rc;
  }
  return efd;
}


/* The request gives q up; whoever holds it last frees it. */
static void query_abandon (struct query *q) {
  int expected = Q_PENDING;
  if (!atomic_compare_exchange_strong(&q->state, &expected, Q_ABANDONED))
    query_free(q);  /* done: the thread let go of it */
}

/* }====================================================== */


/* {====================================================== addresses */

/*
** What a connect tries: the addresses of its target, in order, and the
** lookup that finds them. A userdata on the connecting task's stack, so
** that a request dropped mid-lookup abandons it through __gc.
*/
struct addrs {
  struct query *q;            /* the lookup in flight, or NULL */
  int n, i;                   /* addresses; the one being tried */
  int socktype;
  int tls;                    /* tls://: TLS once connected */
  int gai_err, syserr;        /* why the lookup failed */
  socklen_t len[MAX_ADDRS];
  struct sockaddr_storage a[MAX_ADDRS];
  char host[256];             /* for messages */
};


static int addrs_gc (lua_State *L) {
  struct addrs *a = luaL_checkudata(L, 1, LOOKUP_MT);
  if (a->q != NULL) query_abandon(a->q);
  a->q = NULL;
  return 0;
}


static void addrs_take (struct addrs *a, const struct addrinfo *res) {
  for (; res != NULL && a->n < MAX_ADDRS; res = res->ai_next) {
    if (res->ai_addrlen > sizeof a->a[0]) continue;
    memcpy(&a->a[a->n], res->ai_addr, res->ai_addrlen);
    a->len[a->n++] = res->ai_addrlen;
  }
}


/*
** Takes the addresses a finished lookup found: 0, -EAGAIN while it
** runs, or ERR_LOOKUP.
*/
static int lookup_collect (struct addrs *a) {
  struct query *q = a->q;
  if (atomic_load(&q->state) != Q_DONE) return -EAGAIN;
  a->gai_err = q->err;
  a->syserr = q->syserr;
  if (q->err == 0) addrs_take(a, q->res);
  query_free(q);
  a->q = NULL;
  if (a->gai_err == 0 && a->n == 0) a->gai_err = EAI_NONAME;
  return a->gai_err != 0 ? ERR_LOOKUP : 0;
}


/* Numeric hosts need no lookup: 1 done, 0 a name, or ERR_LOOKUP. */
static int resolve_numeric (struct addrs *a, const char *port) {
  struct addrinfo hints, *res;
  int rc;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = a->socktype;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  rc = getaddrinfo(a->host, port, &hints, &res);
  if (rc == EAI_NONAME) return 0;
  if (rc != 0) {
    a->gai_err = rc;
    a->syserr = errno;
    return ERR_LOOKUP;
  }
  addrs_take(a, res);
  freeaddrinfo(res);
  return 1;
}


/* Starts a lookup of a->host; returns its eventfd or a failure code. */
static int resolve_name (struct addrs *a, const char *port) {
  size_t hl = strlen(a->host);
  struct query *q = calloc(1, sizeof *q + hl + 1);
  int efd;
  if (q == NULL) return -ENOMEM;
  atomic_init(&q->state, Q_PENDING);
  q->socktype = a->socktype;
  memcpy(q->host, a->host, hl + 1);
  memcpy(q->port, port, strlen(port) + 1);
  if ((efd = lookup_start(q)) < 0) {
    free(q);
    a->gai_err = EAI_SYSTEM;
    a->syserr = -efd;
    return ERR_LOOKUP;
  }
  a->q = q;
  return efd;
}

/* }====================================================== */


/* {====================================================== url */

/*
** "tcp://HOST:PORT", "udp://HOST:PORT" (HOST may be [v6]) or "unix:PATH".
** Fills a with the transport's socket type and, for Unix, its one
** address; port gets the port. Returns 0 or -1 with a reason in err.
*/
static int parse_url (const char *url, struct addrs *a, char *port,
                      size_t portlen, char *err, size_t errlen) {
  if (strncmp(url, "unix:", 5) == 0) {
    struct sockaddr_un *un = (struct sockaddr_un *)&a->a[0];
    const char *path = url + 5;
    if (*path == '\0' || strlen(path) > ADDRESS_PATH_MAX) {
      snprintf(err, errlen, "bad unix socket path in '%s'", url);
      return -1;
    }
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path, path, strlen(path) + 1);
    a->len[0] = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
                            strlen(path) + 1);
    a->n = 1;
    a->socktype = SOCK_STREAM;
    snprintf(a->host, sizeof a->host, "%s", path);
    return 0;
  }
  if (strncmp(url, "tcp://", 6) == 0) a->socktype = SOCK_STREAM;
  else if (strncmp(url, "udp://", 6) == 0) a->socktype = SOCK_DGRAM;
  else if (strncmp(url, "tls://", 6) == 0) {
    a->socktype = SOCK_STREAM;
    a->tls = 1;
  }
  else {
    snprintf(err, errlen, "bad url '%s' (expected tcp://HOST:PORT, "
             "tls://HOST:PORT, udp://HOST:PORT or unix:PATH)", url);
    return -1;
  }
  if (address_split(url + 6, a->host, sizeof a->host, port, portlen, err,
                    errlen) < 0)
    return -1;
  if (a->host[0] == '\0') {
    snprintf(err, errlen, "no host in '%s'", url);
    return -1;
  }
  return 0;
}

/* }====================================================== */


/* {====================================================== connecting */

/* Failure text: strerror's, in lower case ("connection refused"). */
static int connect_fail (lua_State *L, struct addrs *a, int rc) {
  char msg[300];
  luaL_pushfail(L);
  if (rc == ERR_LOOKUP)
    snprintf(msg, sizeof msg, "name not resolved: %s: %s", a->host,
             a->gai_err == EAI_SYSTEM ? strerror(a->syserr)
                                      : gai_strerror(a->gai_err));
  else
    snprintf(msg, sizeof msg, "%s", conn_strerror(rc));
  if (msg[0] >= 'A' && msg[0] <= 'Z' && msg[1] >= 'a' && msg[1] <= 'z')
    msg[0] = (char)(msg[0] - 'A' + 'a');
  lua_pushstring(L, msg);
  return 2;
}


/* c gets descriptor fd, open but in no loop yet. */
static void set_fd (struct lconn *c, int fd) {
  c->io.tr = &conn_outbound;  /* until connected says which */
  c->io.fd = fd;
  c->io.flags = LC_UNWATCHED;
}


/* Closes c's descriptor (a socket tried, a lookup's eventfd). */
static void drop_fd (struct lconn *c) {
  if (c->io.fd < 0) return;
  if (!(c->io.flags & LC_UNWATCHED)) sched_detach(c);
  close(c->io.fd);
  c->io.fd = -1;
  c->io.flags = LC_CLOSED;
}


/*
** Starts connecting c to address a->i: 0 connected, -EINPROGRESS, -EAGAIN
** (a Unix listener's backlog is full) or a failure code.
*/
static int start_addr (struct lconn *c, struct addrs *a) {
  const struct sockaddr *sa = (const struct sockaddr *)&a->a[a->i];
  int fd = socket(sa->sa_family, a->socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  0);
  int rc;
  if (fd < 0) return -errno;
  set_fd(c, fd);
  if (sa->sa_family != AF_UNIX && a->socktype == SOCK_STREAM) {
    int one = 1;  /* as for accepted connections (model_event.c) */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  do rc = connect(fd, sa, a->len[a->i]);
  while (rc < 0 && errno == EINTR);
  return rc < 0 ? -errno : 0;
}


/* Tries a Unix connect again on the same socket after -EAGAIN. */
static int retry_addr (struct lconn *c, struct addrs *a) {
  int rc = connect(c->io.fd, (const struct sockaddr *)&a->a[a->i], a->len[a->i]);
  return rc < 0 ? -errno : 0;
}


/* The outcome of a connect that was in progress. */
static int connect_result (struct lconn *c) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return -errno;
  return -err;
}


/*
** c is connected to a->a[a->i]: it becomes a connection. Readiness
** flags the loop set meanwhile (a peer that already hung up) are kept.
*/
static int connected (lua_State *L, struct lconn *c, struct addrs *a) {
  double deadline = c->deadline;  /* a TLS handshake still to come has it */
  memcpy(&c->peer, &a->a[a->i], a->len[a->i]);
  c->peerlen = a->len[a->i];
  c->io.flags = (c->io.flags & (LC_UNWATCHED | LC_RDHUP)) | LC_OUTBOUND |
             LC_READABLE | LC_WRITABLE | (a->socktype == SOCK_DGRAM ? LC_UDP : 0);
  c->io.tr = a->socktype == SOCK_DGRAM ? &conn_udp : &conn_outbound;
  c->deadline = 0;
  lua_settop(L, 3);
  if (a->tls) {
    c->deadline = deadline;
    return ltls_client(L, c, 3, lua_istable(L, 2) ? 2 : 0, a->host);
  }
  if (a->socktype == SOCK_STREAM && c->peer.ss_family != AF_UNIX)
    ltls_set_host(L, 3, a->host);  /* what conn:starttls verifies */
  return 1;
}


/* Sleeps RETRY_SECS, at most to the deadline (0, or ERR_CUT). */
static int nap (lua_State *L, struct lconn *c, lua_KFunction k) {
  double until = monotonic_now() + RETRY_SECS;
  if (c->deadline > 0 && until > c->deadline) until = c->deadline;
  return sched_wait(L, NULL, 0, until, K_RETRY, k) == ERR_CUT ? ERR_CUT : 0;
}


static int connect_k (lua_State *L, int status, lua_KContext ctx);

/*
** Drives the connect of c after rc (the result of starting an address):
** waits while it is in progress, moves to the next address when one
** fails, until one connects, all failed or the deadline passed.
*/
static int connect_loop (lua_State *L, struct lconn *c, struct addrs *a,
                         int rc) {
  for (;;) {
    if (rc == -EINPROGRESS) {
      rc = lconn_waitio(L, c, EV_WRITE, K_CONNECT, connect_k);
      if (rc >= 0) rc = connect_result(c);
    }
    while (rc == -EAGAIN) {  /* no pending connect to wait for: retry */
      if (c->deadline > 0 && monotonic_now() >= c->deadline) rc = ERR_TIMEOUT;
      else if ((rc = nap(L, c, connect_k)) == 0) rc = retry_addr(c, a);
    }
    if (rc >= 0) return connected(L, c, a);
    drop_fd(c);
    if (rc == ERR_TIMEOUT || rc == ERR_CUT || ++a->i >= a->n)
      return connect_fail(L, a, rc);
    rc = start_addr(c, a);
  }
}


/* Stack: url, opts, the connection, its addrs. */
static int connect_k (lua_State *L, int status, lua_KContext ctx) {
  struct lconn *c = lua_touserdata(L, 3);
  struct addrs *a = lua_touserdata(L, 4);
  int rc = sched_result(L, status);
  if (c->io.flags & LC_CLOSED) rc = ERR_CLOSED;  /* closed under us */
  if (ctx == K_CONNECT) {
    if (rc >= 0) rc = connect_result(c);
    return connect_loop(L, c, a, rc);
  }
  if (ctx == K_RETRY)
    return connect_loop(L, c, a, rc >= 0 ? retry_addr(c, a) : rc);
  while (rc >= 0 && (rc = lookup_collect(a)) == -EAGAIN)
    rc = lconn_waitio(L, c, EV_READ, K_LOOKUP, connect_k);
  drop_fd(c);
  if (rc < 0) return connect_fail(L, a, rc);
  return connect_loop(L, c, a, start_addr(c, a));
}

/* }====================================================== */


/* {====================================================== keep-alive pool */

/*
** The pool of a state: idle connections per key, newest last, in C. An
** entry holds the descriptor (and TLS session) of a connection that was
** given back; taking it makes a new connection object around them. In a
** loop (the event model) an idle descriptor stays registered and the pool
** watches it (sched_park): a peer that hangs up or sends while nobody
** asked evicts its entry when it happens, so taking one costs no system
** call. Without a loop, taking one first checks that its peer is still
** quiet (a MSG_PEEK). Entries past their idle time are closed by the
** periodic service tick, and by a take or a put at most once a second
** (the thread model's handler states get no tick); a take never hands out
** one that expired. A pool made before a fork belongs to the parent: a
** child only closes its own copies of the descriptors.
*/
struct pentry {
  struct pentry *prev, *next;  /* in its list: oldest first */
  struct plist *list;
  struct conn io;             /* fd, transport, flags, TLS; no buffers */
  double expires;             /* monotonic; HUGE_VAL: never */
  unsigned reused;
  int parked;                 /* watched by the pool in the model's loop */
  char *host;                 /* the name connect was given (TLS), or NULL */
  socklen_t peerlen;
  struct sockaddr_storage peer;
};

struct plist {
  struct pentry *head, *tail;
  int n;
  struct plist *next;         /* all lists of the pool */
  struct kpool *pool;
  size_t klen;
  char key[];                 /* its key, to forget it when empty */
};

struct kpool {
  struct lctx *x;
  pid_t pid;                  /* the process it belongs to */
  struct plist *lists;
  struct pentry *spare;       /* entry storage for reuse */
  int nspare;
  double next_sweep;
};

#define POOL_MT "luasrv.pool"
#define SPARE_MAX 256         /* free entries kept */
#define SWEEP_EVERY 1.0       /* most often a take or put sweeps */

static pthread_once_t pid_once = PTHREAD_ONCE_INIT;
static pid_t self_pid;        /* getpid() is a system call: cached */


static void pid_refresh (void) {
  self_pid = getpid();
}


static void pid_init (void) {
  pid_refresh();
  pthread_atfork(NULL, NULL, pid_refresh);
}


static pid_t pool_pid (void) {
  pthread_once(&pid_once, pid_init);
  return self_pid;
}


static void entry_unlink (struct pentry *e) {
  struct plist *l = e->list;
  if (e->prev != NULL) e->prev->next = e->next;
  else l->head = e->next;
  if (e->next != NULL) e->next->prev = e->prev;
  else l->tail = e->prev;
  l->n--;
  e->prev = e->next = NULL;
}


/* Gives entry storage back (its connection is gone). */
static void entry_free (struct kpool *kp, struct pentry *e) {
  if (kp->nspare >= SPARE_MAX) {
    free(e);
    return;
  }
  e->next = kp->spare;
  kp->spare = e;
  kp->nspare++;
}


/* Closes e's connection and drops e from its list. */
static void entry_drop (struct pentry *e) {
  struct kpool *kp = e->list->pool;
  entry_unlink(e);
  if (e->parked) sched_unpark(kp->x, e->io.fd, NULL);
  conn_close(&e->io);
  free(e->host);
  entry_free(kp, e);
}


/* The loop saw something on a parked descriptor. */
static void on_parked (struct evloop *loop, int fd, unsigned ev, void *data) {
  struct pentry *e = data;
  (void)loop;
  (void)fd;
  if (ev & (EV_READ | EV_RDHUP | EV_ERROR)) entry_drop(e);  /* of no use now */
  else e->io.flags |= LC_WRITABLE;
}


/*
** What the peer of a descriptor that nobody watched did: 0 (nothing),
** ERR_UNREAD (it sent something) or ERR_CLOSED (its end, or an error).
*/
static int peer_news (int fd) {
  char b;
  ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 0;
  return n > 0 ? ERR_UNREAD : ERR_CLOSED;
}


static void list_free (lua_State *L, struct kpool *kp, struct plist *l) {
  struct plist **p = &kp->lists;
  while (*p != l) p = &(*p)->next;
  *p = l->next;
  if (L != NULL) {  /* forget its key */
    lua_getiuservalue(L, -1, 1);
    lua_pushlstring(L, l->key, l->klen);
    lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  free(l);
}


/*
** Closes what expired (all when the pool is a parent's) and forgets empty
** lists. The pool's userdata is on top of L.
*/
static void pool_sweep (lua_State *L, struct kpool *kp, double now) {
  int inherited = kp->pid != pool_pid();
  struct plist *l = kp->lists, *next;
  kp->next_sweep = now + SWEEP_EVERY;
  for (; l != NULL; l = next) {
    struct pentry *e = l->head, *en;
    next = l->next;
    for (; e != NULL; e = en) {
      en = e->next;
      if (inherited) e->parked = 0;  /* the parent's loop, not ours */
      if (inherited || e->expires <= now) entry_drop(e);
    }
    if (l->n == 0) list_free(L, kp, l);
  }
  kp->pid = pool_pid();
}


static int pool_gc (lua_State *L) {
  struct kpool *kp = luaL_checkudata(L, 1, POOL_MT);
  if (kp->pid != pool_pid())
    for (struct plist *l = kp->lists; l != NULL; l = l->next)
      for (struct pentry *e = l->head; e != NULL; e = e->next) e->parked = 0;
  while (kp->lists != NULL) {
    struct plist *l = kp->lists;
    while (l->head != NULL) entry_drop(l->head);
    list_free(NULL, kp, l);
  }
  while (kp->spare != NULL) {
    struct pentry *e = kp->spare;
    kp->spare = e->next;
    free(e);
  }
  kp->nspare = 0;
  return 0;
}


/* Pushes the pool of x's state (making it if need be) and returns it. */
static struct kpool *push_pool (lua_State *L, struct lctx *x) {
  struct kpool *kp;
  /* by its reference: a registry array slot is a cheaper look-up than
  ** pool_key (which lconnect_sweep uses) */
  if (x->pool_ref != 0 &&
      lua_rawgeti(L, LUA_REGISTRYINDEX, x->pool_ref) == LUA_TUSERDATA)
    return lua_touserdata(L, -1);
  if (x->pool_ref != 0) lua_pop(L, 1);
  kp = lua_newuserdatauv(L, sizeof *kp, 1);
  memset(kp, 0, sizeof *kp);
  kp->x = x;
  kp->pid = pool_pid();
  kp->next_sweep = monotonic_now() + SWEEP_EVERY;
  lua_newtable(L);  /* key -> its list (a light userdata) */
  lua_setiuservalue(L, -2, 1);
  if (luaL_newmetatable(L, POOL_MT)) {
    lua_pushcfunction(L, pool_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &pool_key);
  lua_pushvalue(L, -1);
  x->pool_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return kp;
}


/*
** The list of the key at index k (the pool on top), made if make; the
** pool stays on top. A pool inherited from a parent is emptied first.
*/
static struct plist *pool_list (lua_State *L, struct kpool *kp, int k,
                                int make) {
  struct plist *l;
  double now = monotonic_now();
  k = lua_absindex(L, k);
  if (now >= kp->next_sweep || kp->pid != pool_pid()) pool_sweep(L, kp, now);
  lua_getiuservalue(L, -1, 1);
  lua_pushvalue(L, k);
  l = lua_rawget(L, -2) == LUA_TLIGHTUSERDATA ? lua_touserdata(L, -1) : NULL;
  lua_pop(L, 1);
  if (l == NULL && make) {
    size_t klen;
    const char *key = lua_tolstring(L, k, &klen);
    if ((l = calloc(1, sizeof *l + klen + 1)) == NULL)
      luaL_error(L, "not enough memory");
    memcpy(l->key, key, klen + 1);
    l->klen = klen;
    l->pool = kp;
    l->next = kp->lists;
    kp->lists = l;
    lua_pushvalue(L, k);
    lua_pushlightuserdata(L, l);
    lua_rawset(L, -3);
  }
  lua_pop(L, 1);  /* the keys */
  return l;
}


void lconnect_sweep (struct lctx *x) {
  lua_State *L = lsrv_L(x);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &pool_key) == LUA_TUSERDATA)
    pool_sweep(L, lua_touserdata(L, -1), monotonic_now());
  lua_pop(L, 1);
}


/*
** Pushes a connection object made of entry e, which it unlinks and frees
** (it stays in the pool if making the object raises).
*/
static void entry_take (lua_State *L, struct lctx *x, struct pentry *e,
                        int k) {
  struct lconn *p = lconn_new_out(L, x);
  lua_pushvalue(L, k);
  lua_setiuservalue(L, -2, UV_KEY);
  ltls_set_host(L, -1, e->host);  /* what conn:starttls verifies */
  free(e->host);
  e->host = NULL;
  entry_unlink(e);
  p->io.fd = e->io.fd;
  p->io.tr = e->io.tr;
  tls_move(&e->io, &p->io);
  p->io.flags = e->io.flags | (p->io.flags & LC_HOSTNAME);  /* set above */
  p->io.nin = e->io.nin;
  p->io.nout = e->io.nout;
  p->reused = e->reused + 1;
  memcpy(&p->peer, &e->peer, e->peerlen);
  p->peerlen = e->peerlen;
  if (e->parked) sched_unpark(x, p->io.fd, p);
  entry_free(e->list->pool, e);
}


int lconnect_pool_take (lua_State *L, struct lctx *x, int k) {
  struct kpool *kp = push_pool(L, x);
  struct plist *l = pool_list(L, kp, k, 0);
  double now;
  lua_pop(L, 1);
  if (l == NULL || l->tail == NULL) return 0;
  now = monotonic_now();
  while (l->tail != NULL) {
    struct pentry *e = l->tail;
    if (e->expires > now && (e->parked || peer_news(e->io.fd) == 0)) {
      entry_take(L, x, e, k);
      return 1;
    }
    entry_drop(e);
  }
  return 0;
}


int lconnect_pool_put (lua_State *L, struct lconn *c, double idle,
                       lua_Integer size) {
  struct kpool *kp;
  struct plist *l;
  struct pentry *e;
  int rc;
  /* a loop that watches the descriptor from now on misses only what came
  ** before: input not read to its end since the last readiness */
  if ((c->io.flags & (LC_READABLE | LC_UNWATCHED)) == LC_READABLE &&
      (rc = peer_news(c->io.fd)) < 0)
    return rc;
  kp = push_pool(L, c->x);
  lua_getiuservalue(L, 1, UV_KEY);
  lua_insert(L, -2);  /* key, pool */
  l = pool_list(L, kp, -2, 1);
  lua_pop(L, 2);
  if ((e = kp->spare) != NULL) {
    kp->spare = e->next;
    kp->nspare--;
  }
  else if ((e = malloc(sizeof *e)) == NULL)
    return -ENOMEM;
  while (l->n >= size) entry_drop(l->head);
  memset(e, 0, sizeof *e);
  e->list = l;
  e->parked = sched_park(c, on_parked, e) == 0;
  if (!e->parked && !(c->io.flags & LC_UNWATCHED)) sched_detach(c);
  e->io.fd = c->io.fd;
  e->io.tr = c->io.tr;
  e->io.pool = c->io.pool;
  tls_move(&c->io, &e->io);
  /* parked: its readiness is known (and kept up by on_parked); else the
  ** first wait puts it in a loop, which tells */
  e->io.flags = (c->io.flags & (LC_OUTBOUND | LC_UDP)) |
                (e->parked ? c->io.flags & LC_WRITABLE
                           : LC_UNWATCHED | LC_READABLE | LC_WRITABLE);
  e->io.nin = c->io.nin;
  e->io.nout = c->io.nout;
  e->reused = c->reused;
  e->host = ltls_dup_host(L, 1);
  e->expires = idle > 0 ? monotonic_now() + idle : HUGE_VAL;
  memcpy(&e->peer, &c->peer, c->peerlen);
  e->peerlen = c->peerlen;
  c->io.fd = -1;
  lconn_abort(c);  /* no descriptor left: frees the buffers, marks closed */
  e->prev = l->tail;
  if (l->tail != NULL) l->tail->next = e;
  else l->head = e;
  l->tail = e;
  l->n++;
  return 0;
}


int lconnect_keepalive_step (lua_State *L, struct lconn *c, int status,
                             lua_KFunction k) {
  int rc = sched_result(L, status);
  if (c->io.flags & LC_CLOSED) rc = ERR_CLOSED;
  while (rc >= 0 && conn_wants(rc = conn_flush(&c->io)))
    rc = lconn_waitio(L, c, conn_want_event(rc), 0, k);
  if (rc >= 0 && buf_len(&c->io.in) > 0) rc = ERR_UNREAD;
  if (rc >= 0 && (c->io.flags & (LC_EOF | LC_RDHUP)))
    rc = ERR_CLOSED;  /* the peer's end came: of no use */
  if (rc >= 0)
    rc = lconnect_pool_put(L, c, lua_tonumber(L, 2), lua_tointeger(L, 3));
  if (rc < 0) lconn_abort(c);
  return rc;
}


/* Stack: conn, idle, size. */
static int keepalive_k (lua_State *L, int status, lua_KContext ctx) {
  int rc = lconnect_keepalive_step(L, lua_touserdata(L, 1), status,
                                   keepalive_k);
  (void)ctx;
  if (rc < 0) {
    luaL_pushfail(L);
    lua_pushstring(L, rc == ERR_UNREAD ? "unread input" : conn_strerror(rc));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}


static int lconn_setkeepalive (lua_State *L) {
  struct lconn *c = luaL_checkudata(L, 1, LCONN_MT);
  lua_Number idle = luaL_optnumber(L, 2, POOL_IDLE);
  lua_Integer size = luaL_optinteger(L, 3, POOL_SIZE);
  luaL_argcheck(L, c->io.flags & LC_OUTBOUND || c->io.flags & LC_CLOSED, 1,
                "not a connection made by luasrv.connect");
  luaL_argcheck(L, idle >= 0, 2, "must be >= 0");
  luaL_argcheck(L, size >= 1, 3, "must be >= 1");
  if (c->io.flags & LC_CLOSED) {
    luaL_pushfail(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  lua_settop(L, 1);
  lua_pushnumber(L, idle);
  lua_pushinteger(L, size);
  c->deadline = -1;  /* as start_op: the flush's timeout starts now */
  return keepalive_k(L, LUA_OK, 0);
}


static int lconn_getreusedtimes (lua_State *L) {
  struct lconn *c = luaL_checkudata(L, 1, LCONN_MT);
  lua_pushinteger(L, (lua_Integer)c->reused);
  return 1;
}

/* }====================================================== */


/*
** Pushes the pool key of a tls:// url (index 1) with opts (a table at
** 2): the url and the TLS options, so that a connection is only reused
** for the same verification, certificates, name and protocols.
*/
static void push_tls_key (lua_State *L) {
  static const char *const keys[] = {"verify", "ca", "cert", "key", "sni",
                                     "alpn", NULL};
  int n = 1;
  lua_pushvalue(L, 1);
  for (int i = 0; keys[i] != NULL; i++) {
    int t;
    lua_pushliteral(L, "\n");
    t = lua_getfield(L, 2, keys[i]);
    n += 2;
    if (t == LUA_TTABLE) {  /* alpn's list: its names, joined */
      int tab = lua_gettop(L), k = 0;
      lua_Integer len = (lua_Integer)lua_rawlen(L, tab);
      luaL_checkstack(L, 2 * (len > 64 ? 64 : (int)len), "alpn list");
      for (lua_Integer j = 1; j <= len && j <= 64; j++) {
        lua_rawgeti(L, tab, j);
        if (!lua_isstring(L, -1)) {
          lua_pop(L, 1);
          lua_pushliteral(L, "?");
        }
        lua_pushliteral(L, ",");
        k += 2;
      }
      lua_concat(L, k);
      lua_remove(L, tab);
    }
    else if (t == LUA_TBOOLEAN) {
      int v = lua_toboolean(L, -1);
      lua_pop(L, 1);
      lua_pushstring(L, v ? "true" : "false");
    }
    else if (t != LUA_TSTRING && t != LUA_TNUMBER) {
      lua_pop(L, 1);
      lua_pushliteral(L, "");
    }
  }
  lua_concat(L, n);
}


/* Reads opts at index 2: the connect timeout and the pool key (pushed). */
static double read_opts (lua_State *L, struct lctx *x) {
  double timeout = x->w->cfg->timeout;
  if (lua_istable(L, 2)) {
    if (lua_getfield(L, 2, "timeout") != LUA_TNIL) {
      luaL_argcheck(L, lua_isnumber(L, -1) && lua_tonumber(L, -1) >= 0, 2,
                    "timeout must be a number >= 0");
      timeout = (double)lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 2, "pool") != LUA_TNIL) {
      luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 2,
                    "pool must be a string");
      return timeout;  /* the key stays pushed */
    }
    lua_pop(L, 1);
  }
  else luaL_argcheck(L, lua_isnoneornil(L, 2), 2, "table expected");
  if (strncmp(lua_tostring(L, 1), "tls://", 6) == 0 && lua_istable(L, 2)) {
    push_tls_key(L);  /* the url and the TLS options are the key */
    return timeout;
  }
  lua_pushvalue(L, 1);  /* the url is the key */
  return timeout;
}


int luasrv_connect (lua_State *L) {
  struct lctx *x = lsrv_ctx(L);
  const char *url = luaL_checkstring(L, 1);
  char port[8], err[300];
  struct lconn *c;
  struct addrs *a;
  double timeout;
  int rc;
  lua_settop(L, 2);
  timeout = read_opts(L, x);  /* pushes the key: 3 */
  if (lconnect_pool_take(L, x, 3)) return 1;
  c = lconn_new_out(L, x);
  lua_insert(L, 3);  /* url, opts, conn, key */
  lua_setiuservalue(L, 3, UV_KEY);
  a = lua_newuserdatauv(L, sizeof *a, 0);
  memset(a, 0, sizeof *a);
  if (luaL_newmetatable(L, LOOKUP_MT)) {  /* first use in this state */
    lua_pushcfunction(L, addrs_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  if (parse_url(url, a, port, sizeof port, err, sizeof err) < 0)
    return luaL_argerror(L, 1, err);
  c->deadline = timeout > 0 ? monotonic_now() + timeout : 0;
  if (a->n > 0 || (rc = resolve_numeric(a, port)) == 1)
    return connect_loop(L, c, a, start_addr(c, a));
  if (rc == 0) rc = resolve_name(a, port);
  if (rc < 0) return connect_fail(L, a, rc);
  set_fd(c, rc);  /* the lookup's eventfd, watched as the conn's */
  return connect_k(L, LUA_OK, K_LOOKUP);
}



void lconnect_open (lua_State *L) {
  static const luaL_Reg methods[] = {
    {"setkeepalive", lconn_setkeepalive},
    {"getreusedtimes", lconn_getreusedtimes},
    {NULL, NULL}
  };
  lconn_add_methods(L, methods);
}
