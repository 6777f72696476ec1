/*
** conn.c -- buffered connection I/O over a transport (see conn.h): fill,
** flush, close, datagram reply batching, and the error texts. No Lua,
** no scheduler: a call that cannot go on returns CONN_WANT_READ or
** CONN_WANT_WRITE, and the caller decides how to wait.
*/
#include <fcntl.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"

#define FILL_MAX     (1u << 20)  /* most a read reserves ahead of data */
#define UDP_ROOM     65536    /* an outbound UDP datagram is received whole */
#define DIRECT_WRITE 16384    /* write large strings without copying */
#define FILE_CHUNK   65536    /* a file copied through the buffer at a time */
#define FILE_INLINE  16384    /* a smaller body joins the head in one write */
#define SENDFILE_MAX 0x7ffff000  /* the most one sendfile(2) sends (Linux) */


/*
** A peer that is gone reads as one condition, whatever the kernel said
** first: a reset (ECONNRESET) and a write after it (EPIPE) are both
** "closed".
*/
int conn_errno (int en) {
  return en == ECONNRESET || en == EPIPE ? ERR_CLOSED : -en;
}


const char *conn_strerror (int rc) {
  switch (rc) {
    case ERR_TIMEOUT: return "timeout";
    case ERR_CLOSED: return "closed";
    case ERR_LINE: return "line too long";
    case ERR_TLS: return "TLS error";
    case ERR_CUT: return "closed";
    case ERR_SHORT: return "file truncated";
    case -EPIPE: return "closed";
    case CONN_WANT_WRITE: return strerror(EAGAIN);
    default: return strerror(-rc);
  }
}


/* {====================================================== transports */

/*
** A socket read. The thread model may have armed one blocking try
** (LC_BLOCKRD: SO_RCVTIMEO bounds it); its EINTR is a stop, and reads as
** "nothing yet", so that the caller polls up to the cut.
*/
static long sock_read (struct conn *c, char *p, size_t n) {
  ssize_t r;
  if (c->flags & LC_BLOCKRD) {
    c->flags &= ~LC_BLOCKRD;
    r = recv(c->fd, p, n, 0);
    if (r < 0 && errno == EINTR) errno = EAGAIN;
  }
  else {
    do r = recv(c->fd, p, n, MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
  }
  if (r >= 0) return (long)r;
  return errno == EAGAIN ? CONN_WANT_READ : conn_errno(errno);
}


/* LC_MORE: the file's bytes follow (conn_sendfile), so hold a short tail. */
static long sock_write (struct conn *c, const char *p, size_t n) {
  int fl = MSG_NOSIGNAL | MSG_DONTWAIT | (c->flags & LC_MORE ? MSG_MORE : 0);
  ssize_t r;
  do r = send(c->fd, p, n, fl);
  while (r < 0 && errno == EINTR);
  if (r > 0) return (long)r;
  if (r == 0) return ERR_CLOSED;
  return errno == EAGAIN ? CONN_WANT_WRITE : conn_errno(errno);
}


/*
** sendfile(2) has no MSG_DONTWAIT: the socket must be non-blocking
** itself, which the thread model may have undone (LC_BLOCKING; its next
** blocking read makes it blocking again). SIGPIPE is ignored in workers.
*/
static long sock_sendfile (struct conn *c, int fd, off_t *off, size_t n) {
  ssize_t r;
  if (c->flags & LC_BLOCKING) {
    int fl = fcntl(c->fd, F_GETFL);
    if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0)
      return conn_errno(errno);
    c->flags &= ~LC_BLOCKING;
  }
  do r = sendfile(c->fd, fd, off, n);
  while (r < 0 && errno == EINTR);
  if (r >= 0) return (long)r;
  return errno == EAGAIN ? CONN_WANT_WRITE : conn_errno(errno);
}


static int sock_shutdown (struct conn *c) {
  return shutdown(c->fd, SHUT_WR) < 0 ? conn_errno(errno) : 0;
}


static void sock_close (struct conn *c) {
  close(c->fd);
}


/* A received datagram: its bytes are in c->in already, then EOF. */
static long dgram_read (struct conn *c, char *p, size_t n) {
  (void)c;
  (void)p;
  (void)n;
  return 0;
}


/* Its reply is collected in c->out and sent by conn_reply. */
static long dgram_write (struct conn *c, const char *p, size_t n) {
  (void)c;
  (void)p;
  return (long)n;
}


/* The descriptor is the listener's: nothing to close. */
static void dgram_close (struct conn *c) {
  (void)c;
}


const struct conn_ops conn_stream = {
  .name = "stream",
  .read = sock_read,
  .write = sock_write,
  .shutdown = sock_shutdown,
  .close = sock_close,
  .sendfile = sock_sendfile,
};

const struct conn_ops conn_outbound = {
  .name = "outbound stream",
  .read = sock_read,
  .write = sock_write,
  .shutdown = sock_shutdown,
  .close = sock_close,
  .sendfile = sock_sendfile,
};

const struct conn_ops conn_dgram = {
  .name = "datagram",
  .read = dgram_read,
  .write = dgram_write,
  .close = dgram_close,
  .message = 1,
};

const struct conn_ops conn_udp = {
  .name = "connected udp",
  .read = sock_read,
  .write = sock_write,
  .close = sock_close,
  .message = 1,
};

/* }====================================================== */


/*
** fill for a message transport: the datagram in c->in is the whole
** input, its end reads as EOF; the next one is only received once it is
** used up. An empty datagram reads as EOF too.
*/
static int fill_message (struct conn *c) {
  long n;
  if (buf_len(&c->in) > 0) return 0;
  if (!(c->flags & LC_READABLE)) return CONN_WANT_READ;
  if (buf_reserve(&c->in, UDP_ROOM, c->pool) < 0) return -ENOMEM;
  n = c->tr->read(c, buf_tail(&c->in), buf_space(&c->in));
  if (n >= 0) {  /* more may be queued: stay readable until EAGAIN */
    c->in.end += (size_t)n;
    conn_count_in(c, (unsigned long long)n);
    return (int)n;
  }
  if (n == CONN_WANT_READ) c->flags &= ~LC_READABLE;
  return (int)n;
}


int conn_fill (struct conn *c, size_t want) {
  long n;
  size_t space;
  if (c->flags & LC_EOF) return 0;
  if (c->tr->message) return fill_message(c);
  if (!(c->flags & LC_READABLE)) {  /* what the transport queued goes first */
    int rc = c->tr->flush != NULL ? c->tr->flush(c) : 0;
    return rc < 0 ? rc : CONN_WANT_READ;
  }
  if (want < BUF_CHUNK) want = BUF_CHUNK;
  /* read(n) with a client-supplied n must not reserve n bytes before
  ** any arrive: the buffer grows as data comes, FILL_MAX at a time */
  if (want > FILL_MAX) want = FILL_MAX;
  if (buf_space(&c->in) < want / 2 && buf_reserve(&c->in, want, c->pool) < 0)
    return -ENOMEM;
  space = buf_space(&c->in);
  n = c->tr->read(c, buf_tail(&c->in), space);
  if (n > 0) {
    c->in.end += (size_t)n;
    conn_count_in(c, (unsigned long long)n);
    /* A short read drained the socket; the next edge says when more
    ** comes (nginx does the same), so we save a read that would fail.
    ** Not when the peer's EOF is pending: it brings no further edge. */
    if ((size_t)n < space && !(c->flags & LC_RDHUP))
      c->flags &= ~LC_READABLE;
    return (int)n;
  }
  if (n == 0) {
    c->flags |= LC_EOF;
    return 0;
  }
  if (n == CONN_WANT_READ) c->flags &= ~LC_READABLE;
  return (int)n;
}


int conn_flush (struct conn *c) {
  while (buf_len(&c->out) > 0) {
    long n;
    if (!(c->flags & LC_WRITABLE)) return CONN_WANT_WRITE;
    n = c->tr->write(c, buf_head(&c->out), buf_len(&c->out));
    if (n > 0) {
      if ((size_t)n < buf_len(&c->out)) c->flags &= ~LC_WRITABLE;
      buf_consume(&c->out, (size_t)n);
      conn_count_out(c, (unsigned long long)n);
      continue;
    }
    if (n == CONN_WANT_WRITE) {
      c->flags &= ~LC_WRITABLE;
      return CONN_WANT_WRITE;
    }
    if (n == CONN_WANT_READ) return CONN_WANT_READ;
    /* a datagram that cannot go (too long, refused) is lost, as any
    ** datagram may be: keeping it would fail every later flush */
    if (c->tr->message) buf_consume(&c->out, buf_len(&c->out));
    return (int)n;
  }
  buf_release(&c->out, c->pool);
  return c->tr->flush != NULL ? c->tr->flush(c) : 0;
}


size_t conn_write_direct (struct conn *c, const char *s, size_t len) {
  long n;
  if (buf_len(&c->out) > 0 || len < DIRECT_WRITE || c->tr->message ||
      !(c->flags & LC_WRITABLE))
    return 0;
  n = c->tr->write(c, s, len);
  if (n <= 0) return 0;  /* the buffered path reports the error */
  if ((size_t)n < len) c->flags &= ~LC_WRITABLE;
  conn_count_out(c, (unsigned long long)n);
  return (size_t)n;
}


/* {====================================================== files */

/*
** Appends up to FILE_CHUNK bytes of the file to c->out: bytes read, or
** ERR_SHORT (the file ends before *left), -errno.
*/
static int read_chunk (struct conn *c, int fd, off_t *off, off_t *left) {
  size_t want = *left < FILE_CHUNK ? (size_t)*left : FILE_CHUNK;
  ssize_t n;
  if (buf_reserve(&c->out, want, c->pool) < 0) return -ENOMEM;
  do n = pread(fd, buf_tail(&c->out), want, *off);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  if (n == 0) return ERR_SHORT;
  c->out.end += (size_t)n;
  *off += n;
  *left -= n;
  return (int)n;
}


/*
** The file through the output buffer: a chunk behind what is buffered,
** then a flush, until all went. Memory stays at a chunk and what was
** buffered before; a call after CONN_WANT_* goes on where it stopped.
*/
static int copy_file (struct conn *c, int fd, off_t *off, off_t *left) {
  for (;;) {  /* bounded: each pass reads a chunk of *left or fails */
    int rc;
    if (*left > 0 && buf_len(&c->out) < FILE_CHUNK &&
        (rc = read_chunk(c, fd, off, left)) < 0)
      return rc;
    if ((rc = conn_flush(c)) < 0) return rc;
    if (*left == 0) return 0;
  }
}


/*
** The file through the transport's sendfile. A short count is not taken
** for a full socket, unlike a short write (conn_flush): the file may have
** ended there, and waiting for an edge that never comes would hang; the
** next call tells (CONN_WANT_WRITE, 0 or more bytes).
*/
static int send_file (struct conn *c, int fd, off_t *off, off_t *left) {
  while (*left > 0) {  /* bounded: each pass sends bytes or returns */
    size_t want = *left < SENDFILE_MAX ? (size_t)*left : SENDFILE_MAX;
    long n;
    if (!(c->flags & LC_WRITABLE)) return CONN_WANT_WRITE;
    n = c->tr->sendfile(c, fd, off, want);
    if (n > 0) {
      conn_count_out(c, (unsigned long long)n);
      *left -= n;
      continue;
    }
    if (n == 0) return ERR_SHORT;
    if (n == CONN_WANT_WRITE) c->flags &= ~LC_WRITABLE;
    return (int)n;
  }
  return 0;
}


int conn_sendfile (struct conn *c, int fd, off_t *off, off_t *left) {
  int rc;
  if (c->tr->sendfile == NULL || *left <= FILE_INLINE)
    return copy_file(c, fd, off, left);
  if (buf_len(&c->out) > 0) {  /* the head, held for the body's start */
    c->flags |= LC_MORE;
    rc = conn_flush(c);
    c->flags &= ~LC_MORE;
    if (rc < 0) return rc;
  }
  rc = send_file(c, fd, off, left);
  /* a file (or socket) that sendfile(2) does not take: nothing was sent */
  if (rc == -EINVAL || rc == -ENOSYS) return copy_file(c, fd, off, left);
  return rc;
}

/* }====================================================== */


void conn_release_in (struct conn *c) {
  if (c->flags & LC_BORROWED) {
    if (buf_len(&c->in) == 0) {
      c->in.data = NULL;
      c->in.start = c->in.end = c->in.cap = 0;
    }
    return;
  }
  buf_release(&c->in, c->pool);
}


void conn_close (struct conn *c) {
  if (c->flags & LC_CLOSED) return;
  c->flags |= LC_CLOSED;
  if (c->fd >= 0) {
    if (c->tr != NULL) c->tr->close(c);
    else close(c->fd);  /* a descriptor with no transport yet */
  }
  __atomic_store_n(&c->fd, -1, __ATOMIC_RELAXED);  /* the console looks */
  if (!(c->flags & LC_BORROWED)) buf_free(&c->in, c->pool);
  c->in.data = NULL;
  c->in.start = c->in.end = c->in.cap = 0;
  buf_free(&c->out, c->pool);
}


/* {====================================================== datagram replies */

void dgq_flush (struct dgq *q, struct bufpool *pool) {
  struct mmsghdr msgs[DGQ_MAX];
  struct iovec iov[DGQ_MAX];
  int i = 0;
  memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)q->n);
  for (int k = 0; k < q->n; k++) {
    iov[k].iov_base = (char *)buf_head(&q->data[k]);
    iov[k].iov_len = buf_len(&q->data[k]);
    msgs[k].msg_hdr.msg_iov = &iov[k];
    msgs[k].msg_hdr.msg_iovlen = 1;
    msgs[k].msg_hdr.msg_name = &q->to[k];
    msgs[k].msg_hdr.msg_namelen = q->tolen[k];
  }
  while (i < q->n) {  /* bounded: each round sends one or drops one */
    int n = sendmmsg(q->fd, msgs + i, (unsigned)(q->n - i), MSG_NOSIGNAL);
    if (n > 0) i += n;
    else if (n < 0 && errno == EINTR) continue;
    else i++;  /* as sendto's failure: this reply is lost, go on */
  }
  for (int k = 0; k < q->n; k++) buf_free(&q->data[k], pool);
  q->n = 0;
}


/*
** Queues the reply of c: its output buffer moves to the queue, so nothing
** is copied. The queue goes out when full or when it is for another
** listener; the model flushes the rest.
*/
static void dgq_add (struct dgq *q, struct conn *c, const struct sockaddr *to,
                     socklen_t tolen) {
  if (q->n > 0 && q->fd != c->fd) dgq_flush(q, c->pool);
  q->fd = c->fd;
  q->data[q->n] = c->out;
  memset(&c->out, 0, sizeof c->out);
  memcpy(&q->to[q->n], to, tolen);
  q->tolen[q->n] = tolen;
  conn_count_out(c, buf_len(&q->data[q->n]));
  if (++q->n == DGQ_MAX) dgq_flush(q, c->pool);
}


int conn_reply (struct conn *c, struct dgq *q, const struct sockaddr *to,
                socklen_t tolen) {
  ssize_t n;
  if (buf_len(&c->out) == 0) return 0;
  if (q != NULL) {
    dgq_add(q, c, to, tolen);
    return 0;
  }
  do n = sendto(c->fd, buf_head(&c->out), buf_len(&c->out), MSG_NOSIGNAL,
                to, tolen);
  while (n < 0 && errno == EINTR);
  if (n < 0) return conn_errno(errno);
  conn_count_out(c, (unsigned long long)n);
  return 0;
}

/* }====================================================== */
