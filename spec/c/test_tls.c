/*
** test_tls.c -- the TLS transport's output queue (tls.c over conn.c):
** a TLS 1.3 server's session tickets, its answer and the close_notify
** leave in one send; an answer that the socket takes only in part is
** all delivered, with its close_notify, once the caller waits and
** flushes again. The server is luasrv's transport on one end of a
** socketpair; the client is OpenSSL over memory BIOs, fed by the test
** from the other end, so that the test sees every send as it was made
** (SOCK_SEQPACKET keeps each one a message of its own).
*/
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "cli.h"
#include "conn.h"
#include "tls.h"
#include "test.h"

static char dir[] = "/tmp/luasrv-test-tls.XXXXXX";
static char cert[64], key[64];
static SSL_CTX *client_ctx;

struct pair {
  int fd[2];                  /* the server's end, the client's */
  struct conn srv;
  struct bufpool pool;
  SSL *cl;
  BIO *in, *out;              /* the client's memory BIOs */
  int sends;                  /* what the client received, in receives */
};


/* A self-signed ECDSA P-256 certificate for localhost, made once. */
static int make_cert (void) {
  char cmd[512];
  if (mkdtemp(dir) == NULL) return -1;
  snprintf(cert, sizeof cert, "%s/cert.pem", dir);
  snprintf(key, sizeof key, "%s/key.pem", dir);
  snprintf(cmd, sizeof cmd, "openssl req -x509 -newkey ec -pkeyopt "
           "ec_paramgen_curve:P-256 -nodes -keyout %s -out %s -days 1 "
           "-subj /CN=localhost >/dev/null 2>&1", key, cert);
  return system(cmd) == 0 ? 0 : -1;
}


static void cleanup (void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) printf("# could not remove %s\n", dir);
}


static int pair_open (struct pair *p, int type, int sndbuf) {
  memset(p, 0, sizeof *p);
  if (socketpair(AF_UNIX, type | SOCK_NONBLOCK, 0, p->fd) < 0) return -1;
  if (sndbuf > 0 &&
      setsockopt(p->fd[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) < 0)
    return -1;
  bufpool_init(&p->pool);
  p->srv.fd = p->fd[0];
  p->srv.tr = &conn_stream;
  p->srv.pool = &p->pool;
  p->srv.flags = LC_READABLE | LC_WRITABLE;
  if (tls_server_start(&p->srv) < 0) return -1;
  p->cl = SSL_new(client_ctx);
  p->in = BIO_new(BIO_s_mem());
  p->out = BIO_new(BIO_s_mem());
  if (p->cl == NULL || p->in == NULL || p->out == NULL) return -1;
  SSL_set_bio(p->cl, p->in, p->out);
  SSL_set_connect_state(p->cl);
  return 0;
}


static void pair_close (struct pair *p) {
  if (!(p->srv.flags & LC_CLOSED)) conn_close(&p->srv);
  SSL_free(p->cl);
  close(p->fd[1]);
  bufpool_free(&p->pool);
}


/* What the client wrote goes to the server, as one send. */
static int client_send (struct pair *p) {
  char b[16384];
  int n = BIO_read(p->out, b, sizeof b);
  if (n <= 0) return 0;
  if (send(p->fd[1], b, (size_t)n, 0) != n) return -1;
  p->srv.flags |= LC_READABLE;  /* the edge the loop would see */
  return n;
}


/* What the server sent goes into the client's BIO; counts receives. */
static int client_receive (struct pair *p, size_t at_most) {
  char b[32768];
  size_t got = 0;
  for (;;) {
    size_t want = at_most - got < sizeof b ? at_most - got : sizeof b;
    ssize_t n = want > 0 ? recv(p->fd[1], b, want, 0) : 0;
    if (n <= 0) break;
    p->sends++;
    got += (size_t)n;
    BIO_write(p->in, b, (int)n);
  }
  p->srv.flags |= LC_WRITABLE;
  return (int)got;
}


/* Both sides' handshakes, stepped in turn; 0 when both are done. */
static int handshake (struct pair *p) {
  int sdone = 0, cdone = 0;
  for (int i = 0; i < 20 && !(sdone && cdone); i++) {
    if (!cdone) cdone = SSL_do_handshake(p->cl) == 1;
    if (client_send(p) < 0) return -1;
    if (!sdone) {
      int rc = tls_handshake(&p->srv);
      if (rc == 0) sdone = 1;
      else if (!conn_wants(rc)) return -1;
    }
    client_receive(p, (size_t)-1);
  }
  return sdone && cdone ? 0 : -1;
}


/* The server reads a request, answers and closes, as luasrv's close does. */
static int serve_and_close (struct pair *p, const char *answer, size_t len) {
  int rc = conn_fill(&p->srv, 0);
  if (rc <= 0) return -1;
  if (buf_append(&p->srv.out, answer, len, &p->pool) < 0) return -1;
  p->srv.flags |= LC_LAST;
  return conn_flush(&p->srv);
}


/* The client's plaintext, until the close_notify; -1 if none came. */
static long client_read_all (struct pair *p, char *b, size_t cap) {
  size_t got = 0;
  for (;;) {
    int n = SSL_read(p->cl, b + got, (int)(cap - got));
    if (n > 0) {
      got += (size_t)n;
      continue;
    }
    return SSL_get_error(p->cl, n) == SSL_ERROR_ZERO_RETURN ? (long)got : -1;
  }
}


TEST(tickets_answer_and_close_in_one_send) {
  struct pair p;
  char b[256];
  SSL_SESSION *s;
  ASSERT_EQ(pair_open(&p, SOCK_SEQPACKET, 0), 0);
  ASSERT_EQ(handshake(&p), 0);
  p.sends = 0;  /* the server's flight is behind; its tickets are queued */
  ASSERT_EQ(SSL_write(p.cl, "GET\n", 4), 4);
  ASSERT(client_send(&p) > 0);
  ASSERT_EQ(serve_and_close(&p, "hello\n", 6), 0);
  conn_close(&p.srv);
  client_receive(&p, (size_t)-1);
  ASSERT_EQ(p.sends, 1);
  ASSERT_EQ(client_read_all(&p, b, sizeof b), 6);
  ASSERT(memcmp(b, "hello\n", 6) == 0);
  s = SSL_get1_session(p.cl);
  ASSERT(s != NULL && SSL_SESSION_has_ticket(s));
  SSL_SESSION_free(s);
  pair_close(&p);
}


/*
** The answer's record is queued with the close_notify, and the socket
** (8 KiB) takes only part of it: the write reports nothing written, and
** the flush after the wait delivers it all.
*/
TEST(answer_the_socket_takes_in_part) {
  struct pair p;
  static char answer[12000], b[16384];
  int rc, rounds = 0;
  for (size_t i = 0; i < sizeof answer; i++) answer[i] = (char)('a' + i % 26);
  ASSERT_EQ(pair_open(&p, SOCK_STREAM, 4096), 0);
  ASSERT_EQ(handshake(&p), 0);
  ASSERT_EQ(SSL_write(p.cl, "GET\n", 4), 4);
  ASSERT(client_send(&p) > 0);
  rc = serve_and_close(&p, answer, sizeof answer);
  ASSERT_EQ(rc, CONN_WANT_WRITE);
  ASSERT_EQ(buf_len(&p.srv.out), sizeof answer);  /* nothing counted as sent */
  while (conn_wants(rc) && rounds++ < 100) {
    client_receive(&p, 4096);  /* the peer reads a little: the socket drains */
    rc = conn_flush(&p.srv);
  }
  ASSERT_EQ(rc, 0);
  ASSERT_EQ(buf_len(&p.srv.out), 0u);
  conn_close(&p.srv);
  client_receive(&p, (size_t)-1);
  ASSERT_EQ(client_read_all(&p, b, sizeof b), (long)sizeof answer);
  ASSERT(memcmp(b, answer, sizeof answer) == 0);
  pair_close(&p);
}


int main (void) {
  struct config cfg;
  char err[256];
  if (make_cert() < 0) {
    printf("1..0 # SKIP no openssl command to make a certificate\n");
    return 0;
  }
  memset(&cfg, 0, sizeof cfg);
  cfg.tls_cert[0] = cert;
  cfg.tls_key[0] = key;
  cfg.ntls_cert = cfg.ntls_key = 1;
  cfg.tls_min_version = 13;
  if (tls_server_load(&cfg, err, sizeof err) < 0 ||
      (client_ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
    printf("# %s\nnot ok 1 - setup\n1..1\n", err);
    cleanup();
    return 1;
  }
  RUN(tickets_answer_and_close_in_one_send);
  RUN(answer_the_socket_takes_in_part);
  SSL_CTX_free(client_ctx);
  cleanup();
  return DONE();
}
