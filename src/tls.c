/*
** tls.c -- TLS on OpenSSL 3 as a transport of the connection layer
** (conn_tls). A connection starts plain; starting TLS gives it an SSL
** object over a small BIO of ours that reads and writes its socket
** without blocking (and first hands the handshake any input already
** buffered: a PROXY header's or a STARTTLS command's next bytes), and
** keeps the connection's readiness flags true: a flag is cleared only
** when the socket said EAGAIN, which is what the edge-triggered event
** loop relies on. read and write loop over records until the buffer is
** full or the socket is empty, so a short result still means "drained".
**
** Records OpenSSL writes by itself wait in a queue for the next write
** of the connection's own bytes, so that they leave in one segment: a
** TLS 1.3 server's session tickets go with the first answer, and a
** connection's last write (LC_LAST) takes its close_notify along. A
** connection with a handshake after a new connection per request sent
** four segments, nginx's too; it sends two. The queue goes out whenever
** the connection would wait for its peer: a handshake or a read that
** wants input, the end of every write, the close. Only a TLS 1.3
** server's tickets may stay queued past a read that returns data (a
** client never waits for them); every other flight leaves at once.
**
** The server's contexts are built once by the master, before it forks:
** every worker inherits them. The session ticket keys are in memory they
** all share, made and rotated by the master, so a session resumes
** whichever worker accepts it, across reloads too. A reload builds a new
** set of certificates for the next generation; the old keeps its own.
*/
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "address.h"
#include "evloop.h"
#include "sslmem.h"
#include "log.h"
#include "tls.h"

/* A connection's TLS: its SSL and the input it had before TLS began. */
struct tlsconn {
  SSL *ssl;
  struct conn *c;
  int syserr;                 /* errno of the socket call that failed */
  int failed;                 /* a fatal error: no close_notify */
  int drained;                /* the last recv was short: the socket is empty */
  int hold;                   /* records written now wait in q */
  int notified;               /* the close_notify is written */
  int handshaking;            /* counted in hs_inflight */
  size_t owed;                /* bytes a write took whose records wait in q */
  struct buf q;               /* records not sent yet, oldest first */
  pid_t pid;                  /* the process whose session it is */
  char *key;                  /* a client's session cache key, or NULL */
  size_t npre, off;
  char pre[];
};

/* The server's certificates: one context per --tls-cert/--tls-key pair. */
struct tls_server {
  SSL_CTX *ctx[CLI_MAX_CERTS];
  int n;
  unsigned char alpn[256];    /* --tls-alpn in wire form */
  size_t alpnlen;
};

static struct tls_server *server;
static struct tls_server *next_server;  /* a reload's, until it serves */
static BIO_METHOD *bio_meth;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;
static _Thread_local char errbuf[256];

/*
** What every process of the server shares, in memory the master maps
** before it forks: the rate limit of failed handshakes' log lines, and
** the session ticket keys. The master alone writes the keys (a seqlock:
** seq is odd while it does); a worker encrypts new tickets with the
** current key and takes the previous one too, so a session lives across
** one rotation (--tls-ticket-rotate).
*/
#define TICKET_KEY 80         /* name 16, HMAC 32, AES 32 */

struct loglimit {
  atomic_long second;         /* the second of the last line */
  atomic_long quiet;          /* failures not logged since */
};

struct shared {
  struct loglimit log;
  atomic_uint seq;
  unsigned char keys[2][TICKET_KEY];  /* current, previous */
};
static struct shared *shared;
static struct loglimit local_limit;
static double rotate_secs, rotate_at;  /* the master's */


int tls_log_allowed (long *quiet) {
  struct loglimit *l = shared != NULL ? &shared->log : &local_limit;
  long now = (long)time(NULL), last = atomic_load(&l->second);
  if (last == now || !atomic_compare_exchange_strong(&l->second, &last, now)) {
    atomic_fetch_add(&l->quiet, 1);
    return 0;
  }
  *quiet = atomic_exchange(&l->quiet, 0);
  return 1;
}


const char *tls_error (void) {
  return errbuf;
}


/* errbuf gets OpenSSL's reason for the last failure (and the queue is emptied). */
static void take_error (const char *what) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  if (r != NULL) snprintf(errbuf, sizeof errbuf, "%s%s%s", what ? what : "",
                          what ? ": " : "", r);
  else snprintf(errbuf, sizeof errbuf, "%s", what ? what : "TLS error");
  ERR_clear_error();
}


/* {====================================================== the BIO */

/* getpid() is a system call: cached, and refreshed in a forked child. */
static pid_t self_pid;
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;

static void pid_refresh (void) {
  self_pid = getpid();
}


static void pid_init (void) {
  pid_refresh();
  pthread_atfork(NULL, NULL, pid_refresh);
}


/* Is t's session this process's (not a fork-model parent's copy)? */
static int own (const struct tlsconn *t) {
  return t->pid == self_pid;
}


#define QUEUE_MAX BUF_CHUNK   /* queued at most; a full record goes at once */

/* send(2) of n bytes at p, retried on EINTR. */
static ssize_t send1 (int fd, const char *p, size_t n) {
  ssize_t r;
  do r = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (r < 0 && errno == EINTR);
  return r;
}


/*
** Sends the queue (not empty) and then n bytes of p (n may be 0) in one
** system call: the bytes of p sent, or -1 with errno (EAGAIN: the socket
** is full, as a send that stops short says too). What went of the queue
** leaves it.
*/
static ssize_t send_queued (struct tlsconn *t, const char *p, size_t n) {
  size_t qlen = buf_len(&t->q);
  struct iovec iov[2];
  struct msghdr m;
  ssize_t r;
  if (n == 0) r = send1(t->c->fd, buf_head(&t->q), qlen);
  else {
    iov[0].iov_base = (char *)buf_head(&t->q);
    iov[0].iov_len = qlen;
    iov[1].iov_base = (char *)p;
    iov[1].iov_len = n;
    memset(&m, 0, sizeof m);
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    do r = sendmsg(t->c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
  }
  if (r < 0) return r;
  if ((size_t)r < qlen || ((size_t)r == qlen && n > 0)) {
    buf_consume(&t->q, (size_t)r < qlen ? (size_t)r : qlen);
    errno = EAGAIN;
    return -1;
  }
  buf_consume(&t->q, qlen);
  buf_release(&t->q, t->c->pool);
  return r - (ssize_t)qlen;
}


/* Sends what is queued: 0, CONN_WANT_WRITE, or a failure code. */
static int flush_queue (struct tlsconn *t) {
  while (buf_len(&t->q) > 0) {  /* bounded: each pass sends or returns */
    if (send_queued(t, NULL, 0) < 0) {
      if (errno == EAGAIN) {
        t->c->flags &= ~LC_WRITABLE;
        return CONN_WANT_WRITE;
      }
      t->syserr = errno;
      t->failed = 1;
      return conn_errno(errno);
    }
  }
  return 0;
}


static int bio_write (BIO *b, const char *p, int n) {
  struct tlsconn *t = BIO_get_data(b);
  size_t qlen = buf_len(&t->q);
  ssize_t r;
  BIO_clear_retry_flags(b);
  if (t->hold && qlen + (size_t)n <= QUEUE_MAX &&
      buf_append(&t->q, p, (size_t)n, t->c->pool) == 0)
    return n;
  r = qlen == 0 ? send1(t->c->fd, p, (size_t)n) : send_queued(t, p, (size_t)n);
  if (r >= 0) return (int)r;
  if (errno == EAGAIN) {
    BIO_set_retry_write(b);
    t->c->flags &= ~LC_WRITABLE;
  }
  else t->syserr = errno;
  return -1;
}


static int bio_read (BIO *b, char *p, int n) {
  struct tlsconn *t = BIO_get_data(b);
  ssize_t r;
  BIO_clear_retry_flags(b);
  if (t->off < t->npre) {  /* what came before TLS began */
    size_t k = t->npre - t->off < (size_t)n ? t->npre - t->off : (size_t)n;
    memcpy(p, t->pre + t->off, k);
    t->off += k;
    return (int)k;
  }
  /* a short recv emptied the socket and no edge came since: it would
  ** only find EAGAIN (the handshake reads again after each flight) */
  if (t->drained && !(t->c->flags & (LC_READABLE | LC_RDHUP))) {
    BIO_set_retry_read(b);
    return -1;
  }
  do r = recv(t->c->fd, p, (size_t)n, MSG_DONTWAIT);
  while (r < 0 && errno == EINTR);
  t->drained = r >= 0 && r < n;
  if (r > 0 && r < n && !(t->c->flags & LC_RDHUP)) t->c->flags &= ~LC_READABLE;
  if (r >= 0) return (int)r;
  if (errno == EAGAIN) {
    BIO_set_retry_read(b);
    t->c->flags &= ~LC_READABLE;
  }
  else t->syserr = errno;
  return -1;
}


static long bio_ctrl (BIO *b, int cmd, long num, void *ptr) {
  (void)b;
  (void)num;
  (void)ptr;
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}


static int bio_create (BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}


static void make_bio_meth (void) {
  bio_meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "luasrv");
  if (bio_meth == NULL) return;
  BIO_meth_set_write(bio_meth, bio_write);
  BIO_meth_set_read(bio_meth, bio_read);
  BIO_meth_set_ctrl(bio_meth, bio_ctrl);
  BIO_meth_set_create(bio_meth, bio_create);
}

/* }====================================================== */


/* {====================================================== the heap after a burst */

/*
** A handshake borrows about 50 KB from the heap (OpenSSL's two record
** buffers and its handshake buffer, ~16.5 KB each, and many small blocks)
** and gives it back when it is done (SSL_MODE_RELEASE_BUFFERS), but
** meanwhile the lasting state of the connections beside it is allocated
** around those blocks: after a burst their places are holes between
** connections that stay, memory malloc keeps and the process pays for.
** 5,000 connections set up 256 at a time left 4.8 MB of them, ~1 KB of
** RSS per connection, more than the holes nginx keeps. So when no
** handshake is in flight and HS_TRIM ended since the last time, the free
** pages go back to the system (malloc_trim): at once when the last one
** ends if the last time was a second ago or HS_TRIM_MANY handshakes ago,
** else at the next service tick (tls_service). A trim walks malloc's free
** lists (a few thousand instructions), and the pages it gave back fault in again
** as they are used: ~500 faults and ~100 madvise calls under a steady
** load of new connections, at most once a second or per HS_TRIM_MANY
** handshakes. Counted by process: malloc_trim trims every arena.
*/
#define HS_TRIM 64
#define HS_TRIM_MANY 1024

static atomic_long hs_inflight, hs_ended, hs_trim_ended, hs_trim_sec;

static void trim_heap (void) {
  struct timespec now;
  long ended = atomic_load(&hs_ended), last = atomic_load(&hs_trim_ended);
  long sec;
  if (atomic_load(&hs_inflight) != 0 || ended - last < HS_TRIM) return;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
  sec = atomic_load(&hs_trim_sec);
  if ((long)now.tv_sec <= sec && ended - last < HS_TRIM_MANY) return;
  if (!atomic_compare_exchange_strong(&hs_trim_ended, &last, ended)) return;
  atomic_store(&hs_trim_sec, (long)now.tv_sec);
  malloc_trim(0);
  sslmem_trim();
}


void tls_service (void) {
  trim_heap();
}


static void handshake_begins (struct tlsconn *t) {
  t->handshaking = 1;
  atomic_fetch_add(&hs_inflight, 1);
}


static void handshake_ends (struct tlsconn *t) {
  if (!t->handshaking) return;
  t->handshaking = 0;
  atomic_fetch_add(&hs_ended, 1);
  if (atomic_fetch_sub(&hs_inflight, 1) == 1) trim_heap();
}

/* }====================================================== */


/* {====================================================== the transport */

/* The result of an SSL call that returned r <= 0. */
static int ssl_result (struct tlsconn *t, int r) {
  switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_READ: return CONN_WANT_READ;
    case SSL_ERROR_WANT_WRITE: return CONN_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN: return 0;
    case SSL_ERROR_SYSCALL:
      t->failed = 1;
      ERR_clear_error();
      if (t->syserr != 0) return conn_errno(t->syserr);
      return ERR_CLOSED;
    default: {
      long v = SSL_get_verify_result(t->ssl);
      t->failed = 1;
      take_error(NULL);
      if (v != X509_V_OK)
        snprintf(errbuf, sizeof errbuf, "certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
      return ERR_TLS;
    }
  }
}


/*
** A read: records OpenSSL writes meanwhile (a key update's answer, an
** alert) are queued, and leave now unless data came (the next write
** takes them): so the tickets a handshake queued wait for the answer.
*/
static long tls_read (struct conn *c, char *p, size_t n) {
  struct tlsconn *t = c->tls;
  size_t got = 0;
  int rc = 0;
  t->hold = 1;
  while (got < n) {
    int want = n - got > INT_MAX ? INT_MAX : (int)(n - got);
    int r = SSL_read(t->ssl, p + got, want);
    if (r > 0) {
      got += (size_t)r;
      /* read ahead: a short recv emptied the socket, and nothing is left
      ** in OpenSSL's buffer, so another try would only find EAGAIN */
      if (t->drained && !SSL_has_pending(t->ssl)) {
        c->flags &= ~LC_READABLE;
        break;
      }
      continue;
    }
    rc = ssl_result(t, r);
    break;
  }
  t->hold = 0;
  if (got > 0) return (long)got;  /* the socket is empty, or ended */
  if (buf_len(&t->q) > 0) {
    int frc = flush_queue(t);
    if (frc < 0 && rc == CONN_WANT_READ) return frc;
  }
  return rc;
}


/*
** A write. Its records join what is queued (and, when LC_LAST says the
** connection closes after it, the close_notify) and leave with it.
** When the socket takes only part of them, the write reports none of
** its bytes: the caller waits and calls again with the same bytes,
** which then count as written once the queue has gone.
*/
static long tls_write (struct conn *c, const char *p, size_t n) {
  struct tlsconn *t = c->tls;
  size_t put = 0;
  int rc = 0;
  if (t->owed > 0) {
    size_t k = t->owed < n ? t->owed : n;
    if ((rc = flush_queue(t)) < 0) return rc;
    t->owed = 0;
    return (long)k;
  }
  t->hold = buf_len(&t->q) > 0 || (c->flags & LC_LAST);
  while (put < n) {
    int want = n - put > INT_MAX ? INT_MAX : (int)(n - put);
    int r = SSL_write(t->ssl, p + put, want);
    if (r <= 0) {
      rc = ssl_result(t, r);
      break;
    }
    put += (size_t)r;
  }
  if (put == n && (c->flags & LC_LAST) && !t->notified && own(t)) {
    SSL_shutdown(t->ssl);
    t->notified = 1;
    ERR_clear_error();
  }
  t->hold = 0;
  if (buf_len(&t->q) > 0) {
    int frc = flush_queue(t);
    if (frc == CONN_WANT_WRITE && put > 0) {
      t->owed = put;
      return frc;
    }
    if (frc < 0) return frc;
  }
  if (put > 0) return (long)put;
  return rc == 0 ? ERR_CLOSED : rc;
}


/* The close_notify, if the session is sound and ours, and what is queued. */
static void send_end (struct tlsconn *t) {
  if (!own(t)) return;
  t->hold = 1;
  if (!t->failed && !t->notified && SSL_is_init_finished(t->ssl)) {
    SSL_shutdown(t->ssl);
    t->notified = 1;
  }
  t->hold = 0;
  ERR_clear_error();
  if (buf_len(&t->q) > 0) flush_queue(t);
}


static int tls_flush (struct conn *c) {
  struct tlsconn *t = c->tls;
  return buf_len(&t->q) > 0 ? flush_queue(t) : 0;
}


static int tls_shutdown (struct conn *c) {
  send_end(c->tls);
  return shutdown(c->fd, SHUT_WR) < 0 ? conn_errno(errno) : 0;
}


/*
** Frees c's TLS, telling the peer (close_notify) if the session is sound
** and ours: a fork-model child that closes its copy of a connection its
** parent keeps (a pooled one) must leave the parent's session alone.
*/
static void tls_free (struct conn *c) {
  struct tlsconn *t = c->tls;
  if (t == NULL) return;
  send_end(t);
  buf_free(&t->q, c->pool);
  SSL_free(t->ssl);
  free(t->key);
  handshake_ends(t);  /* one that failed, or was cut short */
  free(t);
  c->tls = NULL;
}


static void tls_close (struct conn *c) {
  tls_free(c);
  close(c->fd);
}


const struct conn_ops conn_tls = {
  .name = "tls",
  .read = tls_read,
  .write = tls_write,
  .shutdown = tls_shutdown,
  .close = tls_close,
  .flush = tls_flush,
};


void tls_move (struct conn *from, struct conn *to) {
  struct tlsconn *t = from->tls;
  from->tls = NULL;
  to->tls = t;
  if (t != NULL) t->c = to;
}


/*
** Gives c an SSL of ctx over our BIO; the input c has buffered becomes
** the first the handshake reads.
*/
static int start (struct conn *c, SSL_CTX *ctx) {
  size_t npre = buf_len(&c->in);
  struct tlsconn *t;
  BIO *b;
  pthread_once(&bio_once, make_bio_meth);
  pthread_once(&pid_once, pid_init);
  if (bio_meth == NULL || (t = malloc(sizeof *t + npre)) == NULL) return -ENOMEM;
  memset(t, 0, sizeof *t);
  if (npre > 0) memcpy(t->pre, buf_head(&c->in), npre);
  t->npre = npre;
  t->c = c;
  t->pid = self_pid;
  if ((t->ssl = SSL_new(ctx)) == NULL || (b = BIO_new(bio_meth)) == NULL) {
    if (t->ssl != NULL) SSL_free(t->ssl);
    free(t);
    ERR_clear_error();
    return -ENOMEM;
  }
  BIO_set_data(b, t);
  SSL_set_bio(t->ssl, b, b);
  handshake_begins(t);
  buf_consume(&c->in, npre);
  c->scan = 0;
  c->tls = t;
  c->tr = &conn_tls;
  return 0;
}


/*
** One step of the handshake; its flights are queued and leave before it
** waits. At its end, a TLS 1.3 server's tickets stay queued for the
** first answer; anything else goes now (a TLS 1.2 server's Finished,
** that the client waits for; a client's, whose server waits).
*/
int tls_handshake (struct conn *c) {
  struct tlsconn *t = c->tls;
  int r, rc;
  t->hold = 1;
  r = SSL_do_handshake(t->ssl);
  t->hold = 0;
  if (r == 1) {
    if (buf_len(&t->q) > 0 && (!SSL_is_server(t->ssl) ||
                               SSL_version(t->ssl) != TLS1_3_VERSION) &&
        (rc = flush_queue(t)) < 0) {
      if (rc == CONN_WANT_WRITE) return rc;
      snprintf(errbuf, sizeof errbuf, "%s", conn_strerror(rc));
      return ERR_TLS;
    }
    /* data may follow at once: read ahead, or still in the socket */
    if (SSL_has_pending(t->ssl) || !t->drained || t->off < t->npre)
      c->flags |= LC_READABLE;
    if (t->npre == t->off && t->npre > 0) t->npre = t->off = 0;
    handshake_ends(t);
    c->flags |= LC_WRITABLE;
    return 0;
  }
  rc = ssl_result(t, r);
  if (buf_len(&t->q) > 0) {  /* the flight, or an alert */
    int frc = flush_queue(t);
    if (frc == CONN_WANT_WRITE && conn_wants(rc)) return frc;
  }
  if (rc == 0 || rc == ERR_CLOSED) {
    snprintf(errbuf, sizeof errbuf, "the peer closed the connection");
    return ERR_TLS;
  }
  if (rc != ERR_TLS && !conn_wants(rc)) {
    snprintf(errbuf, sizeof errbuf, "%s", conn_strerror(rc));
    return ERR_TLS;
  }
  return rc;
}

/* }====================================================== */


/* {====================================================== the server */

static int on_ticket_key (SSL *ssl, unsigned char *name, unsigned char *iv,
                          EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc);


/*
** SNI: the first context whose certificate names the client's server.
** With one certificate there is nothing to choose (and no name to check:
** ~9,000 instructions a handshake, 0.35 %).
*/
static int on_servername (SSL *ssl, int *al, void *arg) {
  struct tls_server *s = arg;
  const char *name;
  (void)al;
  if (s->n < 2) return SSL_TLSEXT_ERR_OK;
  if ((name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) == NULL)
    return SSL_TLSEXT_ERR_OK;
  for (int i = 0; i < s->n; i++) {
    X509 *x = SSL_CTX_get0_certificate(s->ctx[i]);
    if (x != NULL && X509_check_host(x, name, 0, 0, NULL) == 1) {
      if (i > 0) SSL_set_SSL_CTX(ssl, s->ctx[i]);
      return SSL_TLSEXT_ERR_OK;
    }
  }
  return SSL_TLSEXT_ERR_OK;  /* the default certificate */
}


/*
** req:starttls{alpn = ...}: the protocols of one connection, in place of
** --tls-alpn's (an SSL's ex_data, a length byte then the wire form).
*/
static int alpn_index = -1;
static pthread_once_t alpn_once = PTHREAD_ONCE_INIT;

static void free_alpn (void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                       long argl, void *argp) {
  (void)parent; (void)ad; (void)idx; (void)argl; (void)argp;
  free(ptr);
}


static void make_alpn_index (void) {
  alpn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_alpn);
}


/* ALPN: the first of our protocols (the connection's own, if it has
** them) that the client offers. */
static int on_alpn (SSL *ssl, const unsigned char **out, unsigned char *outlen,
                    const unsigned char *in, unsigned inlen, void *arg) {
  struct tls_server *s = arg;
  const unsigned char *ours = s->alpn;
  unsigned ourlen = (unsigned)s->alpnlen;
  unsigned char *o;
  if (alpn_index >= 0) {
    unsigned char *own = SSL_get_ex_data(ssl, alpn_index);
    if (own != NULL) {
      ourlen = own[0];
      ours = own + 1;
    }
  }
  if (ourlen == 0 ||
      SSL_select_next_proto(&o, outlen, ours, ourlen, in,
                            inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = o;
  return SSL_TLSEXT_ERR_OK;
}


/* "h2,http/1.1" to wire form; -1 when a name is empty or too long. */
static int alpn_wire (const char *list, unsigned char *out, size_t cap,
                      size_t *len) {
  size_t n = 0;
  while (*list != '\0') {
    const char *comma = strchr(list, ',');
    size_t k = comma ? (size_t)(comma - list) : strlen(list);
    if (k == 0 || k > 255 || n + 1 + k > cap) return -1;
    out[n++] = (unsigned char)k;
    memcpy(out + n, list, k);
    n += k;
    list += k + (comma ? 1 : 0);
  }
  *len = n;
  return 0;
}


/* Can path be opened for reading? err says why not. */
static int readable (const char *what, const char *path, char *err,
                     size_t errlen) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
    return -1;
  }
  fclose(f);
  return 0;
}


static int ctx_fail (const char *what, const char *path, char *err,
                     size_t errlen) {
  take_error(NULL);
  snprintf(err, errlen, "%s %s: %s", what, path, errbuf);
  return -1;
}


/* The options every context shares: versions, modes, no renegotiation. */
static void common_options (SSL_CTX *ctx, int minver) {
  SSL_CTX_set_min_proto_version(ctx, minver == 13 ? TLS1_3_VERSION
                                                  : TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                      SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS |
                   SSL_MODE_ENABLE_PARTIAL_WRITE |
                   SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  /* records are read as many as the socket has at once (one recv, not
  ** two per record), and a short recv tells that the socket is empty */
  SSL_CTX_set_read_ahead(ctx, 1);
}


/*
** TLS 1.3's suites, in the server's order, unless --tls-ciphersuites:
** AES-128-GCM first (the suite RFC 8446 makes mandatory, and the order
** Mozilla's server guidelines give). It is as strong as the X25519 or
** P-256 key exchange it follows, and costs both ends of a handshake about
** 5 % less than OpenSSL's default first, AES-256-GCM-SHA384 (the key
** schedule hashes with SHA-256), and bulk data a third less (10 AES
** rounds, not 14). A client that puts ChaCha20 first, one without AES in
** hardware, gets ChaCha20 (SSL_OP_PRIORITIZE_CHACHA).
*/
#define TLS13_SUITES \
  "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"


/*
** A context of s for cert and key, with cfg's settings; 0 or -1 with err
** naming the file as its option (name[0] for cert, name[1] for key).
*/
static int server_ctx (struct tls_server *s, const struct config *cfg,
                       const char *cert, const char *key,
                       const char *const name[2], char *err, size_t errlen) {
  const char *suites = cfg->tls_ciphersuites != NULL ? cfg->tls_ciphersuites
                                                     : TLS13_SUITES;
  SSL_CTX *ctx;
  if (readable(name[0], cert, err, errlen) < 0 ||
      readable(name[1], key, err, errlen) < 0)
    return -1;
  if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
    return ctx_fail(name[0], cert, err, errlen);
  s->ctx[s->n++] = ctx;
  common_options(ctx, cfg->tls_min_version);
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE |
                      SSL_OP_PRIORITIZE_CHACHA);
  SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"luasrv", 6);
  /* sessions resume from their tickets, on any worker: a cache per
  ** process would only hold memory */
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  if (cfg->tls_ciphers != NULL &&
      SSL_CTX_set_cipher_list(ctx, cfg->tls_ciphers) != 1) {
    take_error(NULL);
    snprintf(err, errlen, "--tls-ciphers %s: %s", cfg->tls_ciphers, errbuf);
    return -1;
  }
  if (SSL_CTX_set_ciphersuites(ctx, suites) != 1) {
    take_error(NULL);
    snprintf(err, errlen, "--tls-ciphersuites %s: %s", suites, errbuf);
    return -1;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
    ERR_clear_error();
    snprintf(err, errlen, "%s %s: no PEM certificate in it", name[0], cert);
    return -1;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_REASON(e) != X509_R_KEY_VALUES_MISMATCH &&
        ERR_GET_REASON(e) != X509_R_KEY_TYPE_MISMATCH) {
      ERR_clear_error();
      snprintf(err, errlen, "%s %s: no PEM private key in it", name[1], key);
      return -1;
    }
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    snprintf(err, errlen, "%s %s does not match %s %s", name[1], key,
             name[0], cert);
    return -1;
  }
  if (cfg->tls_client_ca != NULL) {
    STACK_OF(X509_NAME) *names;
    if (readable("--tls-client-ca", cfg->tls_client_ca, err, errlen) < 0)
      return -1;
    if (SSL_CTX_load_verify_locations(ctx, cfg->tls_client_ca, NULL) != 1 ||
        (names = SSL_load_client_CA_file(cfg->tls_client_ca)) == NULL)
      return ctx_fail("--tls-client-ca", cfg->tls_client_ca, err, errlen);
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (cfg->tls_verify_client == 2 ?
                       SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
  }
  SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
  SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
  SSL_CTX_set_tlsext_servername_arg(ctx, s);
  SSL_CTX_set_alpn_select_cb(ctx, on_alpn, s);  /* NOACK without protocols */
  return 0;
}


/* {------------------------------------------------------ ticket keys */

/* The master: a new current key, the current one becomes the previous. */
static int new_key (void) {
  unsigned char k[TICKET_KEY];
  if (RAND_bytes(k, sizeof k) != 1) return -1;
  atomic_fetch_add_explicit(&shared->seq, 1, memory_order_acq_rel);
  memcpy(shared->keys[1], shared->keys[0], TICKET_KEY);
  memcpy(shared->keys[0], k, TICKET_KEY);
  atomic_fetch_add_explicit(&shared->seq, 1, memory_order_acq_rel);
  OPENSSL_cleanse(k, sizeof k);
  return 0;
}


/* A worker: a consistent copy of both keys; -1 if the master never let go. */
static int read_keys (unsigned char out[2][TICKET_KEY]) {
  for (int tries = 0; tries < 1000; tries++) {
    unsigned s1 = atomic_load_explicit(&shared->seq, memory_order_acquire);
    if (s1 & 1) continue;
    memcpy(out, shared->keys, sizeof shared->keys);
    /* a read-modify-write, not a fence and a load: its release half keeps
    ** the copy before it (and ThreadSanitizer knows no fences) */
    if (atomic_fetch_add_explicit(&shared->seq, 0, memory_order_acq_rel) == s1)
      return 0;
  }
  return -1;
}


/*
** OpenSSL's ticket key callback: encrypts with the current key, decrypts
** with whichever of the two named it, or 0 for a ticket of no key of ours
** (a full handshake). 2 asks for a fresh ticket: after the previous key,
** and after every TLS 1.3 resumption, whose tickets clients use once
** (RFC 8446, C.4): without a new one the next connection is a full
** handshake (twice the server's CPU, and the client's).
*/
static int on_ticket_key (SSL *ssl, unsigned char *name, unsigned char *iv,
                          EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc) {
  unsigned char k[2][TICKET_KEY];
  char sha256[] = "SHA256";
  OSSL_PARAM params[2];
  int which = -1, ok;
  if (read_keys(k) < 0) return -1;
  if (enc) {
    if (RAND_bytes(iv, 16) != 1) return -1;
    memcpy(name, k[0], 16);
    which = 0;
  }
  else
    for (int i = 1; i >= 0; i--)
      if (memcmp(name, k[i], 16) == 0) which = i;
  if (which < 0) return 0;
  params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, sha256, 0);
  params[1] = OSSL_PARAM_construct_end();
  ok = EVP_MAC_init(hctx, k[which] + 16, 32, params) == 1 &&
       (enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k[which] + 48, iv)
            : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k[which] + 48, iv)) == 1;
  OPENSSL_cleanse(k, sizeof k);
  if (!ok) return -1;
  return enc || (which == 0 && SSL_version(ssl) != TLS1_3_VERSION) ? 1 : 2;
}


/* The master, once: maps what every process shares and makes the keys. */
static int map_shared (const struct config *cfg, char *err, size_t errlen) {
  void *p = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    snprintf(err, errlen, "cannot map the session ticket keys: %s", strerror(errno));
    return -1;
  }
  shared = p;
  if (new_key() < 0 || new_key() < 0) {  /* no previous key either */
    snprintf(err, errlen, "cannot make session ticket keys");
    return -1;
  }
  rotate_secs = cfg->tls_ticket_rotate;
  rotate_at = rotate_secs > 0 ? monotonic_now() + rotate_secs : 0;
  return 0;
}


double tls_rotate (double now) {
  if (rotate_at <= 0 || shared == NULL) return 0;
  if (now >= rotate_at) {
    if (new_key() < 0) log_error("cannot make a new session ticket key");
    rotate_at = now + rotate_secs;
  }
  return rotate_at;
}

/* }------------------------------------------------------ */


static void server_free (struct tls_server *s) {
  if (s == NULL) return;
  for (int i = 0; i < s->n; i++) SSL_CTX_free(s->ctx[i]);
  free(s);
}


static const char *const option_names[2] = {"--tls-cert", "--tls-key"};

/* The set of cfg's certificates in *out (NULL: cfg has none); 0 or -1. */
static int server_build (const struct config *cfg, struct tls_server **out,
                         char *err, size_t errlen) {
  struct tls_server *s;
  *out = NULL;
  if (cfg->ntls_cert == 0) return 0;
  pthread_once(&bio_once, make_bio_meth);
  if (shared == NULL && map_shared(cfg, err, errlen) < 0) return -1;
  if ((s = calloc(1, sizeof *s)) == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  if (cfg->tls_alpn != NULL &&
      alpn_wire(cfg->tls_alpn, s->alpn, sizeof s->alpn, &s->alpnlen) < 0) {
    snprintf(err, errlen, "bad value '%s' for --tls-alpn", cfg->tls_alpn);
    server_free(s);
    return -1;
  }
  for (int i = 0; i < cfg->ntls_cert; i++)
    if (server_ctx(s, cfg, cfg->tls_cert[i], cfg->tls_key[i], option_names,
                   err, errlen) < 0) {
      server_free(s);
      return -1;
    }
  *out = s;
  return 0;
}


int tls_server_load (const struct config *cfg, char *err, size_t errlen) {
  struct tls_server *s;
  if (server_build(cfg, &s, err, errlen) < 0) return -1;
  if (s == NULL) return 0;
  server_free(server);
  server = s;
  return 0;
}


int tls_server_load_next (const struct config *cfg, char *err,
                          size_t errlen) {
  tls_server_discard();
  return server_build(cfg, &next_server, err, errlen);
}


void tls_server_use_next (void) {
  if (next_server != NULL) {  /* this child's copy of the old set: unused */
    server_free(server);
    server = next_server;
  }
  next_server = NULL;
}


void tls_server_commit (void) {
  if (next_server == NULL) return;
  server_free(server);  /* a worker of the old generation has its own copy */
  server = next_server;
  next_server = NULL;
}


void tls_server_discard (void) {
  server_free(next_server);
  next_server = NULL;
}


int tls_server_ready (void) {
  return server != NULL;
}


int tls_server_start (struct conn *c) {
  int rc;
  if (server == NULL) return -ENOENT;
  if ((rc = start(c, server->ctx[0])) < 0) return rc;
  SSL_set_accept_state(((struct tlsconn *)c->tls)->ssl);
  return 0;
}


void *tls_server_new (const struct config *cfg, const char *cert,
                      const char *key, char *err, size_t errlen) {
  static const char *const names[2] = {"cert", "key"};
  struct tls_server *s = calloc(1, sizeof *s);
  if (s == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  pthread_once(&bio_once, make_bio_meth);
  if ((cfg->tls_alpn != NULL &&
       alpn_wire(cfg->tls_alpn, s->alpn, sizeof s->alpn, &s->alpnlen) < 0) ||
      server_ctx(s, cfg, cert, key, names, err, errlen) < 0) {
    server_free(s);
    return NULL;
  }
  return s;
}


void tls_server_free (void *s) {
  server_free(s);
}


int tls_server_start_with (struct conn *c, void *s, const unsigned char *alpn,
                           size_t alpnlen) {
  struct tls_server *srv = s != NULL ? s : server;
  SSL *ssl;
  int rc;
  if (srv == NULL) return -ENOENT;
  if (alpn != NULL && alpnlen > 255) return -EINVAL;
  if ((rc = start(c, srv->ctx[0])) < 0) return rc;
  ssl = ((struct tlsconn *)c->tls)->ssl;
  SSL_set_accept_state(ssl);
  if (alpn != NULL) {
    unsigned char *own;
    pthread_once(&alpn_once, make_alpn_index);
    if (alpn_index < 0 || (own = malloc(alpnlen + 1)) == NULL) return -ENOMEM;
    own[0] = (unsigned char)alpnlen;
    memcpy(own + 1, alpn, alpnlen);
    if (SSL_set_ex_data(ssl, alpn_index, own) != 1) {
      free(own);
      return -ENOMEM;
    }
  }
  return 0;
}

/* }====================================================== */


/* {====================================================== the client */

/*
** Sessions of outbound connections, so that a reconnect resumes: one
** per context (its verification and certificates), name and peer
** address, the newest kept, at most SESS_MAX in a process. A session is
** only ever offered under the context that made it.
*/
#define SESS_MAX 64

struct sessentry {
  SSL_CTX *ctx;
  SSL_SESSION *sess;
  char key[ADDRESS_STRLEN + 260];
};

static struct sessentry sessions[SESS_MAX];
static int sess_next;
static pthread_mutex_t sess_mu = PTHREAD_MUTEX_INITIALIZER;
static int appdata_index = -1;


static struct sessentry *sess_find (SSL_CTX *ctx, const char *key) {
  for (int i = 0; i < SESS_MAX; i++)
    if (sessions[i].ctx == ctx && strcmp(sessions[i].key, key) == 0)
      return &sessions[i];
  return NULL;
}


/* OpenSSL's new session callback: keeps sess (our reference now). */
static int on_new_session (SSL *ssl, SSL_SESSION *sess) {
  const char *key = SSL_get_ex_data(ssl, appdata_index);
  SSL_CTX *ctx = SSL_get_SSL_CTX(ssl);
  struct sessentry *e;
  if (key == NULL) return 0;
  pthread_mutex_lock(&sess_mu);
  if ((e = sess_find(ctx, key)) == NULL) {
    e = &sessions[sess_next];
    sess_next = (sess_next + 1) % SESS_MAX;
    if (e->sess != NULL) SSL_SESSION_free(e->sess);
    e->ctx = ctx;
    snprintf(e->key, sizeof e->key, "%s", key);
  }
  else SSL_SESSION_free(e->sess);
  e->sess = sess;
  pthread_mutex_unlock(&sess_mu);
  return 1;
}


static void make_appdata_index (void) {
  appdata_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

void *tls_client_ctx (const char *ca, const char *cert, const char *key,
                      int verify, char *err, size_t errlen) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == NULL) {
    take_error("cannot make a TLS context");
    snprintf(err, errlen, "%s", errbuf);
    return NULL;
  }
  common_options(ctx, 12);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                 SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, on_new_session);
  if (verify) {
    int ok = ca != NULL ? SSL_CTX_load_verify_locations(ctx, ca, NULL)
                        : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
      ctx_fail("cannot load CA", ca ? ca : "(system)", err, errlen);
      SSL_CTX_free(ctx);
      return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
  }
  if (cert != NULL &&
      (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
       SSL_CTX_use_PrivateKey_file(ctx, key ? key : cert, SSL_FILETYPE_PEM) != 1 ||
       SSL_CTX_check_private_key(ctx) != 1)) {
    ctx_fail("cannot use certificate", cert, err, errlen);
    SSL_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}


void tls_client_ctx_free (void *ctx) {
  pthread_mutex_lock(&sess_mu);
  for (int i = 0; i < SESS_MAX; i++)
    if (sessions[i].ctx == ctx) {
      SSL_SESSION_free(sessions[i].sess);
      memset(&sessions[i], 0, sizeof sessions[i]);
    }
  pthread_mutex_unlock(&sess_mu);
  SSL_CTX_free(ctx);
}


/*
** The session cache key of t: the name and the peer's address. The last
** session made under ctx for it is offered to the server.
*/
static void resume_session (struct tlsconn *t, SSL_CTX *ctx, const char *sni) {
  struct sockaddr_storage sa;
  socklen_t len = sizeof sa;
  char peer[ADDRESS_STRLEN], key[sizeof sessions[0].key];
  struct sessentry *e;
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, make_appdata_index);
  if (appdata_index < 0 ||
      getpeername(t->c->fd, (struct sockaddr *)&sa, &len) < 0)
    return;
  address_format_peer((struct sockaddr *)&sa, len, peer, sizeof peer);
  snprintf(key, sizeof key, "%.255s|%s", sni ? sni : "", peer);
  if ((t->key = strdup(key)) == NULL) return;
  SSL_set_ex_data(t->ssl, appdata_index, t->key);
  pthread_mutex_lock(&sess_mu);
  if ((e = sess_find(ctx, t->key)) != NULL && e->sess != NULL)
    SSL_set_session(t->ssl, e->sess);
  pthread_mutex_unlock(&sess_mu);
}


int tls_client_start (struct conn *c, void *ctx, const char *sni, int verify,
                      const unsigned char *alpn, size_t alpnlen) {
  struct tlsconn *t;
  ASN1_OCTET_STRING *ip = sni ? a2i_IPADDRESS(sni) : NULL;
  int rc;
  ERR_clear_error();
  if ((rc = start(c, ctx)) < 0) {
    ASN1_OCTET_STRING_free(ip);
    return rc;
  }
  t = c->tls;
  SSL_set_connect_state(t->ssl);
  if (sni != NULL && ip == NULL) SSL_set_tlsext_host_name(t->ssl, sni);
  if (verify && sni != NULL) {
    if (ip != NULL) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), sni);
    else SSL_set1_host(t->ssl, sni);
  }
  ASN1_OCTET_STRING_free(ip);
  if (alpn != NULL && alpnlen > 0) SSL_set_alpn_protos(t->ssl, alpn, (unsigned)alpnlen);
  resume_session(t, ctx, sni);
  ERR_clear_error();
  return 0;
}

/* }====================================================== */


/* {====================================================== what a handler sees */

static void name_line (X509_NAME *n, char *out, size_t len) {
  BIO *b = BIO_new(BIO_s_mem());
  int k;
  out[0] = '\0';
  if (b == NULL) return;
  X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253);
  k = BIO_read(b, out, (int)len - 1);
  out[k > 0 ? k : 0] = '\0';
  BIO_free(b);
}


static void peer_info (X509 *x, struct tls_info *in) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned mdlen = 0;
  BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
  BIO *b;
  name_line(X509_get_subject_name(x), in->subject, sizeof in->subject);
  name_line(X509_get_issuer_name(x), in->issuer, sizeof in->issuer);
  in->serial[0] = '\0';
  if (bn != NULL) {
    char *hex = BN_bn2hex(bn);
    if (hex != NULL) snprintf(in->serial, sizeof in->serial, "%s", hex);
    OPENSSL_free(hex);
    BN_free(bn);
  }
  in->fingerprint[0] = '\0';
  if (X509_digest(x, EVP_sha256(), md, &mdlen) == 1)
    for (unsigned i = 0; i < mdlen && 3 * i + 3 <= sizeof in->fingerprint; i++)
      snprintf(in->fingerprint + 3 * i, 4, i + 1 < mdlen ? "%02X:" : "%02X", md[i]);
  in->expiry[0] = '\0';
  if ((b = BIO_new(BIO_s_mem())) != NULL) {
    int k;
    ASN1_TIME_print(b, X509_get0_notAfter(x));
    k = BIO_read(b, in->expiry, (int)sizeof in->expiry - 1);
    in->expiry[k > 0 ? k : 0] = '\0';
    BIO_free(b);
  }
  in->has_peer = 1;
}


void tls_get_info (struct conn *c, struct tls_info *in) {
  struct tlsconn *t = c->tls;
  X509 *x;
  memset(in, 0, sizeof *in);
  in->version = SSL_get_version(t->ssl);
  in->cipher = SSL_get_cipher_name(t->ssl);
  in->sni = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
  SSL_get0_alpn_selected(t->ssl, &in->alpn, &in->alpnlen);
  in->resumed = SSL_session_reused(t->ssl);
  x = SSL_get0_peer_certificate(t->ssl);
  if (x != NULL && SSL_get_verify_result(t->ssl) == X509_V_OK) peer_info(x, in);
  ERR_clear_error();
}

/* }====================================================== */
