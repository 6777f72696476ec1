/*
** refserver.c -- the C reference echo server of luasrv's benchmark.
**
** It is the "physical limit" luasrv is measured against, so it is written
** the way a careful C programmer would: one thread, one epoll set,
** level-triggered, non-blocking sockets, TCP_NODELAY.  A readable stream is
** read in one large batch (into a buffer shared by all connections, since
** only one runs at a time) and everything read is written straight back.
** When the kernel takes only part of it, the rest is kept in a buffer of that
** connection, reading from it stops, and EPOLLOUT is awaited; once drained,
** reading resumes.  An idle connection costs one small struct.  EOF closes.
**
** --tls CERT KEY (epoll model, TCP): the same loop over TLS 1.3 (OpenSSL
** on the socket itself, SSL_set_fd, read-ahead on, partial writes): a
** readable connection is read record by record until the socket is
** empty: a read of the socket shorter than asked (a BIO callback notes it)
** with nothing left in OpenSSL (which may hold bytes read ahead that epoll
** no longer shows), or OpenSSL wanting more; what was read is written back
** in records as large as it came; a write
** the kernel refuses keeps its bytes for OpenSSL's retry.  --ktls also
** asks OpenSSL for kernel TLS (SSL_OP_ENABLE_KTLS) and prints, after the
** first handshake, whether the kernel took the send and receive sides.
**
** UDP: a blocking socket, recvmmsg(MSG_WAITFORONE) of up to 64 datagrams,
** and one sendmmsg back to their senders.
**
** --model thread and --model fork are the physical limits of luasrv's
** thread and fork models, built the way those models serve: one request
** (a connection, or a datagram) per thread or per process, with blocking
** I/O.  thread: the main thread accepts (or receives) and hands each
** request to an idle thread, starting a new one when none is idle; a
** thread serves its connection to the end with blocking read and write,
** then waits for the next (luasrv's thread model keeps its threads too).
** fork: the main process accepts (or receives) and forks a child per
** request, which echoes and exits (luasrv's fork model forks per request).
**
**   refserver [--model epoll|thread|fork] tcp HOST:PORT  ([::1]:PORT for
**                                               IPv6; PORT 0 = any)
**   refserver --tls CERT KEY [--ktls] tcp HOST:PORT  (prints tls://...)
**   refserver [--model ...] unix PATH
**   refserver [--model ...] udp HOST:PORT
**
** After binding it prints one line to stderr, e.g.
**   refserver: listening on tcp://127.0.0.1:41234
** and it exits 0 on SIGTERM or SIGINT (removing the Unix socket file).
*/

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define RBUF_SIZE (256 * 1024)  /* shared read buffer */
#define MAX_EVENTS 256
#define MAX_ACCEPTS 128         /* accepts per wake-up, for fairness */
#define MAX_READS 4             /* full-buffer reads per wake-up */
#define UDP_BATCH 64
#define UDP_MAX 65536
#define BACKLOG 511             /* luasrv's default */

enum kind { K_LISTENER, K_CONN };

struct conn {
  enum kind kind;
  int fd;
  char *pend;          /* bytes read but not yet written back */
  size_t plen, poff, pcap;
  SSL *ssl;            /* --tls: the connection's session */
};

static volatile sig_atomic_t stopping;
static char rbuf[RBUF_SIZE];
static int epfd;
static int is_tcp;
static SSL_CTX *tls_ctx;  /* --tls */
static int want_ktls;     /* --ktls */

static void on_signal(int sig) {
  (void)sig;
  stopping = 1;
}

static void die(const char *what) {
  fprintf(stderr, "refserver: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void usage(FILE *f) {
  fputs("usage: refserver [--model epoll|thread|fork] tcp HOST:PORT |\n"
        "                 unix PATH | udp HOST:PORT\n"
        "       refserver --tls CERT KEY [--ktls] tcp HOST:PORT\n"
        "  C reference echo server: epoll, non-blocking (default), or a\n"
        "  thread or a process per request with blocking I/O; prints\n"
        "  'refserver: listening on ...' to stderr; exits 0 on SIGTERM.\n",
        f);
}

/* Signals interrupt epoll_wait/recvmmsg (no SA_RESTART); SIGPIPE ignored. */
static void setup_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}

static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* ---- addresses ---- */

/* Splits "HOST:PORT" or "[V6]:PORT" and resolves it for binding. */
static struct addrinfo *resolve(const char *spec, int socktype) {
  char host[256];
  const char *colon = strrchr(spec, ':');
  if (!colon || (size_t)(colon - spec) >= sizeof host) {
    fprintf(stderr, "refserver: bad address '%s'\n", spec);
    exit(2);
  }
  size_t hl = (size_t)(colon - spec);
  memcpy(host, spec, hl);
  host[hl] = '\0';
  if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
    memmove(host, host + 1, hl - 2);
    host[hl - 2] = '\0';
  }
  struct addrinfo hints, *res;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = socktype;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  int rc = getaddrinfo(host[0] ? host : "0.0.0.0", colon + 1, &hints, &res);
  if (rc != 0) {
    fprintf(stderr, "refserver: %s: %s\n", spec, gai_strerror(rc));
    exit(2);
  }
  return res;
}

/* Prints the listening line with the port the kernel chose. */
static void announce(int fd, const char *scheme) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char host[NI_MAXHOST], port[NI_MAXSERV];
  if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) die("getsockname");
  getnameinfo((struct sockaddr *)&ss, len, host, sizeof host, port,
              sizeof port, NI_NUMERICHOST | NI_NUMERICSERV);
  if (ss.ss_family == AF_INET6)
    fprintf(stderr, "refserver: listening on %s://[%s]:%s\n", scheme, host,
            port);
  else
    fprintf(stderr, "refserver: listening on %s://%s:%s\n", scheme, host,
            port);
}

static int bind_inet(const char *spec, int socktype) {
  struct addrinfo *ai = resolve(spec, socktype);
  int fd = socket(ai->ai_family, socktype | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) die("bind");
  freeaddrinfo(ai);
  return fd;
}

static int bind_unix(const char *path) {
  struct sockaddr_un sun;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sun.sun_path) {
    fprintf(stderr, "refserver: unix path too long\n");
    exit(2);
  }
  strcpy(sun.sun_path, path);
  unlink(path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  if (bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0) die("bind");
  return fd;
}

/* ---- stream echo ---- */

static int fcntl_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void set_events(struct conn *c, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_close(struct conn *c) {
  if (c->ssl) SSL_free(c->ssl);  /* no close_notify: the peer is gone */
  close(c->fd);
  free(c->pend);
  free(c);
}

/* Keeps the bytes the kernel did not take; 0 on out-of-memory. */
static int keep_pending(struct conn *c, const char *p, size_t n) {
  if (c->pcap < n) {
    char *nb = malloc(n);
    if (!nb) return 0;
    free(c->pend);
    c->pend = nb;
    c->pcap = n;
  }
  memcpy(c->pend, p, n);
  c->plen = n;
  c->poff = 0;
  set_events(c, EPOLLOUT);
  return 1;
}

/* Writes back n bytes just read; 0 if the connection must be closed. */
static int echo_back(struct conn *c, const char *p, size_t n) {
  ssize_t w = write(c->fd, p, n);
  if (w < 0) {
    if (errno != EAGAIN) return 0;
    w = 0;
  }
  if ((size_t)w == n) return 1;
  return keep_pending(c, p + w, n - (size_t)w);
}

static void on_readable(struct conn *c) {
  for (int i = 0; i < MAX_READS; i++) {
    ssize_t n = read(c->fd, rbuf, sizeof rbuf);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
      conn_close(c);
      return;
    }
    if (n < 0) return;
    if (!echo_back(c, rbuf, (size_t)n)) {
      conn_close(c);
      return;
    }
    if (c->plen || (size_t)n < sizeof rbuf) return;
  }
}

static void on_writable(struct conn *c) {
  ssize_t w = write(c->fd, c->pend + c->poff, c->plen - c->poff);
  if (w < 0) {
    if (errno != EAGAIN) conn_close(c);
    return;
  }
  c->poff += (size_t)w;
  if (c->poff < c->plen) return;
  c->plen = c->poff = 0;
  set_events(c, EPOLLIN);
}

/* ---- stream echo over TLS (--tls) ---- */

/* --ktls: says once, after the first handshake, what the kernel took. */
static void report_ktls(struct conn *c) {
  static int done;
  if (done || !want_ktls || !SSL_is_init_finished(c->ssl)) return;
  done = 1;
  fprintf(stderr, "refserver: kTLS send %s, receive %s (%s)\n",
          BIO_get_ktls_send(SSL_get_wbio(c->ssl)) ? "on" : "off",
          BIO_get_ktls_recv(SSL_get_rbio(c->ssl)) ? "on" : "off",
          SSL_get_cipher_name(c->ssl));
}

/* The socket BIO's callback: a read shorter than asked emptied the socket
   (it is read ahead, so OpenSSL asks for a whole buffer). */
static int drained;

static long on_bio(BIO *b, int op, const char *argp, size_t len, int argi,
                   long argl, int ret, size_t *processed) {
  (void)b, (void)argp, (void)argi, (void)argl;
  if (op == (BIO_CB_READ | BIO_CB_RETURN))
    drained = ret > 0 && processed && *processed < len;
  return ret;
}

/* Writes n bytes back in records; the rest waits for EPOLLOUT (OpenSSL's
   retry must see the same bytes).  0 if the connection must be closed. */
static int tls_echo_back(struct conn *c, const char *p, size_t n) {
  while (n > 0) {
    int w = SSL_write(c->ssl, p, n > 1 << 30 ? 1 << 30 : (int)n);
    if (w > 0) {
      p += w;
      n -= (size_t)w;
      continue;
    }
    int e = SSL_get_error(c->ssl, w);
    if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) return 0;
    return keep_pending(c, p, n);
  }
  return 1;
}

/* Reads until OpenSSL wants the socket again (it may hold decrypted bytes
   epoll cannot see), echoing a full buffer at a time. */
static void tls_on_readable(struct conn *c) {
  size_t got = 0;
  for (;;) {
    drained = 0;
    int n = SSL_read(c->ssl, rbuf + got, (int)(sizeof rbuf - got));
    if (n > 0) {
      got += (size_t)n;
      if (drained && !SSL_has_pending(c->ssl)) {  /* no EAGAIN read */
        if (!tls_echo_back(c, rbuf, got)) break;
        return;
      }
      if (got < sizeof rbuf) continue;
      if (!tls_echo_back(c, rbuf, got)) break;
      got = 0;
      if (c->plen) return;
      continue;
    }
    int e = SSL_get_error(c->ssl, n);
    report_ktls(c);
    if (e == SSL_ERROR_WANT_WRITE && !got) {  /* the handshake's output */
      set_events(c, EPOLLOUT);
      return;
    }
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) break;
    if (got && !tls_echo_back(c, rbuf, got)) break;
    ERR_clear_error();
    return;
  }
  ERR_clear_error();
  conn_close(c);
}

static void tls_on_writable(struct conn *c) {
  while (c->poff < c->plen) {
    int w = SSL_write(c->ssl, c->pend + c->poff, (int)(c->plen - c->poff));
    if (w <= 0) {
      int e = SSL_get_error(c->ssl, w);
      if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) {
        ERR_clear_error();
        conn_close(c);
      }
      return;
    }
    c->poff += (size_t)w;
  }
  c->plen = c->poff = 0;
  set_events(c, EPOLLIN);
  tls_on_readable(c);  /* what OpenSSL read ahead meanwhile */
}

/* --ktls: does the kernel have TLS (the "tls" upper layer protocol of a
   connected TCP socket)?  Exits 2 with the reason when it has not. */
static void ktls_probe(void) {
  struct sockaddr_in sa = {.sin_family = AF_INET};
  socklen_t len = sizeof sa;
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), a = -1, rc = -1;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (l >= 0 && c >= 0 && bind(l, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      listen(l, 1) == 0 && getsockname(l, (struct sockaddr *)&sa, &len) == 0 &&
      connect(c, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      (a = accept(l, NULL, NULL)) >= 0)
    rc = setsockopt(c, IPPROTO_TCP, TCP_ULP, "tls", sizeof "tls");
  int err = errno;
  close(l);
  close(c);
  if (a >= 0) close(a);
  if (rc == 0) return;
  fprintf(stderr, "refserver: --ktls: this kernel has no TLS "
          "(setsockopt TCP_ULP \"tls\": %s)\n", strerror(err));
  exit(2);
}

static SSL_CTX *tls_context(const char *cert, const char *key) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx || SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
    fprintf(stderr, "refserver: --tls %s %s: ", cert, key);
    ERR_print_errors_fp(stderr);
    exit(2);
  }
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                   SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                   SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  /* the suite luasrv's --tls listeners pick by default: the reference
  ** does the same work */
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:"
                           "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
  if (want_ktls) SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS);
  return ctx;
}

static void on_accept(int lfd) {
  for (int i = 0; i < MAX_ACCEPTS; i++) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  /* EAGAIN, or EMFILE & co: retry next wake-up */
    struct conn *c = calloc(1, sizeof *c);
    if (!c) {
      close(fd);
      return;
    }
    c->kind = K_CONN;
    c->fd = fd;
    if (is_tcp) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (tls_ctx && (!(c->ssl = SSL_new(tls_ctx)) || !SSL_set_fd(c->ssl, fd))) {
      ERR_clear_error();
      conn_close(c);
      continue;
    }
    if (c->ssl) {
      SSL_set_accept_state(c->ssl);
      BIO_set_callback_ex(SSL_get_rbio(c->ssl), on_bio);
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) conn_close(c);
  }
}

static void dispatch(struct epoll_event *ev) {
  struct conn *c = ev->data.ptr;
  if (c->kind == K_LISTENER) {
    on_accept(c->fd);
  } else if (ev->events & EPOLLOUT) {
    if (c->ssl) tls_on_writable(c);
    else on_writable(c);
  } else if (ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    if (c->ssl) tls_on_readable(c);
    else on_readable(c);
  }
}

/* Listens before the line is printed, so a client may connect at once. */
static void start_listening(int lfd) {
  if (listen(lfd, BACKLOG) < 0) die("listen");
  if (fcntl_nonblock(lfd) < 0) die("fcntl");
}

static void serve_stream(int lfd) {
  struct conn listener = {.kind = K_LISTENER, .fd = lfd};
  struct epoll_event evs[MAX_EVENTS];
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) die("epoll_create1");
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listener};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev) < 0) die("epoll_ctl");
  while (!stopping) {
    int n = epoll_wait(epfd, evs, MAX_EVENTS, -1);
    for (int i = 0; i < n; i++) dispatch(&evs[i]);
  }
}

/* ---- datagram echo ---- */

static void serve_udp(int fd) {
  static struct mmsghdr msgs[UDP_BATCH];
  static struct iovec iov[UDP_BATCH];
  static struct sockaddr_storage peers[UDP_BATCH];
  char *bufs = malloc((size_t)UDP_BATCH * UDP_MAX);
  if (!bufs) die("malloc");
  for (int i = 0; i < UDP_BATCH; i++) {
    iov[i].iov_base = bufs + (size_t)i * UDP_MAX;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
    msgs[i].msg_hdr.msg_name = &peers[i];
  }
  while (!stopping) {
    for (int i = 0; i < UDP_BATCH; i++) {
      iov[i].iov_len = UDP_MAX;
      msgs[i].msg_hdr.msg_namelen = sizeof peers[i];
    }
    int n = recvmmsg(fd, msgs, UDP_BATCH, MSG_WAITFORONE, NULL);
    if (n <= 0) continue;  /* EINTR: check stopping */
    for (int i = 0; i < n; i++) iov[i].iov_len = msgs[i].msg_len;
    for (int sent = 0; sent < n;) {
      int k = sendmmsg(fd, msgs + sent, (unsigned)(n - sent), 0);
      if (k < 0 && errno == EINTR && !stopping) continue;
      sent += k > 0 ? k : 1;  /* a datagram that fails is dropped: UDP */
    }
  }
  free(bufs);
}

/* ---- thread and fork modes: a request per thread or per process ---- */

enum model { M_EPOLL, M_THREAD, M_FORK };

/* A request: an accepted connection (fd), or a datagram to echo on fd. */
struct job {
  struct job *next;
  int fd;
  int dgram;
  size_t len;
  struct sockaddr_storage peer;
  socklen_t peerlen;
  char data[];         /* the datagram */
};

/* Requests waiting for a thread, and the threads waiting for one. */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct job *head, *tail;
  int queued, idle;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL,
          0, 0};

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Echoes a connection with blocking I/O until EOF, then closes it. */
static void echo_blocking(int fd, char *buf, size_t cap) {
  if (is_tcp) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  for (;;) {
    ssize_t n = read(fd, buf, cap);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || write_all(fd, buf, (size_t)n) < 0) break;
  }
  close(fd);
}

static void run_job(struct job *j, char *buf, size_t cap) {
  if (j->dgram)
    sendto(j->fd, j->data, j->len, 0, (struct sockaddr *)&j->peer,
           j->peerlen);
  else
    echo_blocking(j->fd, buf, cap);
  free(j);
}

static void *pool_thread(void *arg) {
  char *buf = malloc(RBUF_SIZE);
  (void)arg;
  if (!buf) die("malloc");
  for (;;) {
    pthread_mutex_lock(&pool.mu);
    while (pool.head == NULL) {
      pool.idle++;
      pthread_cond_wait(&pool.cv, &pool.mu);
      pool.idle--;
    }
    struct job *j = pool.head;
    pool.head = j->next;
    if (pool.head == NULL) pool.tail = NULL;
    pool.queued--;
    pthread_mutex_unlock(&pool.mu);
    run_job(j, buf, RBUF_SIZE);
  }
  return NULL;
}

/* Queues j for an idle thread, or for a new one when none is idle. */
static void pool_submit(struct job *j) {
  pthread_t t;
  pthread_attr_t attr;
  int spawn;
  j->next = NULL;
  pthread_mutex_lock(&pool.mu);
  if (pool.tail) pool.tail->next = j;
  else pool.head = j;
  pool.tail = j;
  pool.queued++;
  spawn = pool.idle < pool.queued;
  pthread_cond_signal(&pool.cv);
  pthread_mutex_unlock(&pool.mu);
  if (!spawn) return;
  /* SIGTERM and SIGINT go to the main thread, whose accept they end */
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  if (pthread_create(&t, &attr, pool_thread, NULL) != 0) die("pthread_create");
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* In a forked child: the default actions back, so SIGTERM ends it. */
static void child_signals(void) {
  signal(SIGTERM, SIG_DFL);
  signal(SIGINT, SIG_DFL);
}

/* One request, in a thread or in a child process. */
static void dispatch_job(enum model m, int lfd, struct job *j) {
  static char cbuf[RBUF_SIZE];
  if (m == M_THREAD) {
    pool_submit(j);
    return;
  }
  pid_t pid = fork();
  if (pid == 0) {
    child_signals();
    if (!j->dgram) close(lfd);
    run_job(j, cbuf, sizeof cbuf);
    _exit(0);
  }
  if (pid < 0) perror("refserver: fork");
  if (!j->dgram) close(j->fd);
  free(j);
}

/* Blocking accept loop (the listener stays blocking); ends on a signal. */
static void serve_stream_per_request(enum model m, int lfd) {
  while (!stopping) {
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EINTR && errno != ECONNABORTED) perror("refserver: accept");
      continue;
    }
    struct job *j = calloc(1, sizeof *j);
    if (!j) die("calloc");
    j->fd = fd;
    dispatch_job(m, lfd, j);
  }
}

static void serve_udp_per_request(enum model m, int fd) {
  char *buf = malloc(UDP_MAX);
  if (!buf) die("malloc");
  while (!stopping) {
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    ssize_t n = recvfrom(fd, buf, UDP_MAX, 0, (struct sockaddr *)&peer, &plen);
    if (n < 0) continue;  /* EINTR: check stopping */
    struct job *j = malloc(sizeof *j + (size_t)n);
    if (!j) die("malloc");
    memset(j, 0, sizeof *j);
    j->fd = fd;
    j->dgram = 1;
    j->len = (size_t)n;
    j->peer = peer;
    j->peerlen = plen;
    memcpy(j->data, buf, (size_t)n);
    dispatch_job(m, fd, j);
  }
  free(buf);
}

/* ---- main ---- */

int main(int argc, char **argv) {
  enum model m = M_EPOLL;
  if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
    usage(stdout);
    return 0;
  }
  const char *cert = NULL, *key = NULL;
  if (argc >= 6 && !strcmp(argv[1], "--tls")) {
    cert = argv[2];
    key = argv[3];
    argv += 3;
    argc -= 3;
    if (!strcmp(argv[1], "--ktls")) {
      want_ktls = 1;
      argv++;
      argc--;
    }
    if (argc != 3 || strcmp(argv[1], "tcp")) {
      usage(stderr);
      return 2;
    }
  }
  if (argc == 5 && !strcmp(argv[1], "--model")) {
    if (!strcmp(argv[2], "thread")) m = M_THREAD;
    else if (!strcmp(argv[2], "fork")) m = M_FORK;
    else if (strcmp(argv[2], "epoll")) {
      usage(stderr);
      return 2;
    }
    argv += 2;
    argc -= 2;
  }
  if (argc != 3) {
    usage(stderr);
    return 2;
  }
  const char *mode = argv[1], *where = argv[2];
  setup_signals();
  raise_fd_limit();
  if (m == M_FORK) signal(SIGCHLD, SIG_IGN);  /* children reap themselves */
  if (!strcmp(mode, "tcp") || !strcmp(mode, "unix")) {
    int fd;
    is_tcp = !strcmp(mode, "tcp");
    fd = is_tcp ? bind_inet(where, SOCK_STREAM) : bind_unix(where);
    if (m == M_EPOLL) start_listening(fd);
    else if (listen(fd, BACKLOG) < 0) die("listen");  /* blocking accept */
    if (want_ktls) ktls_probe();
    if (cert) tls_ctx = tls_context(cert, key);
    if (is_tcp) announce(fd, tls_ctx ? "tls" : "tcp");
    else fprintf(stderr, "refserver: listening on unix:%s\n", where);
    if (m == M_EPOLL) serve_stream(fd);
    else serve_stream_per_request(m, fd);
    if (!is_tcp) unlink(where);
  } else if (!strcmp(mode, "udp")) {
    int fd = bind_inet(where, SOCK_DGRAM);
    announce(fd, "udp");
    if (m == M_EPOLL) serve_udp(fd);
    else serve_udp_per_request(m, fd);
  } else {
    usage(stderr);
    return 2;
  }
  return 0;
}
