/*
** conn.h -- a connection's bytes, below the Lua binding: input and output
** buffers over a transport (struct conn_ops: accepted stream, outbound
** stream, a received datagram, connected UDP). Filling, finding lines,
** flushing, closing and the batching of datagram replies live here, with
** no Lua in them. What reads and writes the bytes is the transport's
** business: nothing above this header knows whether they are encrypted.
*/
#ifndef LUASRV_CONN_H
#define LUASRV_CONN_H

#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "buf.h"
#include "evloop.h"

/* Failure codes beyond errno, all negative like -errno. */
#define ERR_TIMEOUT  (-ETIMEDOUT)
#define ERR_CLOSED   (-100001)
#define ERR_LINE     (-100002)
#define ERR_CUT      (-ECANCELED)
#define ERR_TLS      (-100004)  /* the TLS layer failed: tls_error() says why */
#define ERR_SHORT    (-100005)  /* a file ended before the length to send */
#define ERR_PARK     (-100006)  /* an idle wait: the loop would rather park
                                   the task (req:recv, model_event.c) */

/*
** "Try again once ...": the two results of a transport that cannot go on
** now. A read may want the socket writable (a TLS read that must send
** first), a write may want it readable: the caller waits for what the
** result says (conn_want_event) and retries the same call.
*/
#define CONN_WANT_READ  (-EAGAIN)
#define CONN_WANT_WRITE (-100003)

static inline int conn_wants (int rc) {
  return rc == CONN_WANT_READ || rc == CONN_WANT_WRITE;
}
static inline unsigned conn_want_event (int rc) {
  return rc == CONN_WANT_WRITE ? EV_WRITE : EV_READ;
}

/* Connection flags; the request layer (lsrv.h) adds its own in the bits left. */
#define LC_CLOSED   0x01u
#define LC_EOF      0x02u
#define LC_READABLE 0x04u     /* the socket may have input (edge seen) */
#define LC_WRITABLE 0x08u     /* ... may take output */
#define LC_DGRAM    0x10u     /* a datagram request: fd is the listener's */
#define LC_BORROWED 0x20u     /* in.data points into memory not ours */
#define LC_RDHUP    0x40u     /* the peer's EOF (or an error) is pending */
#define LC_UDP      0x100u    /* outbound connected UDP: a flush is a datagram */
#define LC_BLOCKING 0x4000u   /* the socket was made blocking (thread model) */
#define LC_BLOCKRD  0x8000u   /* the next fill may block (lconn_block_read) */
#define LC_MORE     0x10000u  /* a write is followed by more (MSG_MORE) */
#define LC_NOSENDFILE 0x20000u  /* sendfile(2) refused this socket: copy */
#define LC_LAST     0x40000u  /* this flush ends the output: the close follows
                                 (TLS sends its close_notify with it) */

struct conn;

/*
** One kind of connection. read and write move bytes between the socket
** and p: they return how many (> 0), 0 for read at EOF, CONN_WANT_READ or
** CONN_WANT_WRITE, or a failure code; they retry EINTR themselves.
** shutdown ends the output (NULL: nothing to send first), close gives the
** descriptor back. sendfile sends up to n bytes of the file fd from *off
** (advanced past what went) without copying them through user space: as
** write, and 0 when the file ends at *off; NULL where the transport
** cannot (TLS: conn_sendfile reads the file into the output buffer).
** flush sends what the transport queued itself (TLS records held to
** leave with the next write): 0, CONN_WANT_* or a failure; NULL when it
** queues nothing. conn_flush calls it, and conn_fill before it says
** CONN_WANT_READ, so nothing stays queued while the peer is awaited.
*/
struct conn_ops {
  const char *name;
  long (*read) (struct conn *c, char *p, size_t n);
  long (*write) (struct conn *c, const char *p, size_t n);
  int (*shutdown) (struct conn *c);
  void (*close) (struct conn *c);
  long (*sendfile) (struct conn *c, int fd, off_t *off, size_t n);
  int (*flush) (struct conn *c);
  int message;                /* a read or a flush is one whole datagram */
};

extern const struct conn_ops conn_stream;    /* accepted stream */
extern const struct conn_ops conn_outbound;  /* luasrv.connect's stream */
extern const struct conn_ops conn_dgram;     /* a received datagram */
extern const struct conn_ops conn_udp;       /* connected UDP (outbound) */

struct conn {
  const struct conn_ops *tr;  
  int fd;
  unsigned flags;
  struct buf in, out;
  size_t scan;                /* bytes of in already searched for '\n' */
  unsigned long long nin, nout;
  struct bufpool *pool;       /* where the buffers come from */
  void *tls;                  /* conn_tls: its session (tls.c), else NULL */
};

/*
** The byte counts grow in the thread that owns the connection; the
** console reads them from the worker's main thread (the thread model), so
** both sides use relaxed atomic accesses (plain moves on x86 and ARM).
*/
static inline void conn_count_in (struct conn *c, unsigned long long n) {
  __atomic_store_n(&c->nin, c->nin + n, __ATOMIC_RELAXED);
}

static inline void conn_count_out (struct conn *c, unsigned long long n) {
  __atomic_store_n(&c->nout, c->nout + n, __ATOMIC_RELAXED);
}

/*
** Reads what the transport has into c->in, reserving at least want bytes
** (at most a bounded step ahead of data). Returns bytes read, 0 at EOF,
** CONN_WANT_READ/CONN_WANT_WRITE, or a failure code.
*/
int conn_fill (struct conn *c, size_t want);

/* Sends buffered output: 0 when all is sent, CONN_WANT_*, or failure. */
int conn_flush (struct conn *c);

/*
** Sends s at once when nothing is queued before it and it is large
** enough to be worth not copying; returns the bytes sent (the rest is
** for the buffer; a failure shows at the next flush).
*/
size_t conn_write_direct (struct conn *c, const char *s, size_t len);

/*
** Sends *left bytes of the regular file fd from *off after what is
** buffered, advancing both as bytes go: 0 when all went, CONN_WANT_*
** (wait, then call again with the same *off and *left), ERR_SHORT when
** the file ends first (it was truncated), or a failure code. The
** buffered head leaves with the file's first bytes where the transport
** allows (MSG_MORE); a small body is copied behind it and sent in one
** write. Transports without sendfile (TLS) get the file FILE_CHUNK bytes
** at a time through the output buffer, never more.
*/
int conn_sendfile (struct conn *c, int fd, off_t *off, off_t *left);

/* An idle connection gives its input buffer back. */
void conn_release_in (struct conn *c);

/* Closes the descriptor (through the transport) and frees the buffers. */
void conn_close (struct conn *c);

/* The failure code of a socket call that failed with errno en. */
int conn_errno (int en);

/* "timeout", "closed", "line too long" or the system's text for rc. */
const char *conn_strerror (int rc);

/*
** Datagram replies waiting to go out together with one sendmmsg: the
** event model receives datagrams in batches, and sending each reply by
** itself cost a system call per datagram.
*/
#define DGQ_MAX 32

struct dgq {
  int fd;                     /* the listener they go out from */
  int n;
  struct buf data[DGQ_MAX];
  struct sockaddr_storage to[DGQ_MAX];
  socklen_t tolen[DGQ_MAX];
};

/* Sends what q holds and empties it. */
void dgq_flush (struct dgq *q, struct bufpool *pool);

/*
** Sends the reply a datagram request c collected, if it wrote anything,
** to (tolen bytes): queued in q (not NULL), where a failure is not
** reported (a datagram may be lost on the way anyway), or at once.
** Returns 0 or a failure code.
*/
int conn_reply (struct conn *c, struct dgq *q, const struct sockaddr *to,
                socklen_t tolen);

#endif
