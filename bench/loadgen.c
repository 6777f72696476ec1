/*
** loadgen.c -- the load generator of luasrv's benchmark.
**
** One thread and one epoll set drive every connection, non-blocking.  Each
** message is MSGSIZE-1 printable bytes and a '\n', so a line-echo handler can
** echo it; every echoed byte is checked against what was sent.  A message's
** bytes are a slice of one random pattern, chosen by a hash of (connection,
** message number), so nothing is stored per message but its send time.
**
** Modes: persistent connections with PIPELINE messages in flight each (a
** 64 KiB message is bulk mode: its echo arrives in pieces); connect per
** request; UDP (PIPELINE datagrams in flight per socket, each headed by its
** sequence number in hex; one unanswered after --udp-timeout is a loss and is
** replaced); hold (open N connections, one echo each to prove the server
** took them, then keep them idle); WebSocket (--ws PATH with --tcp: an
** HTTP/1.1 upgrade to PATH, then each message is a masked text frame of
** SIZE pattern bytes and its echo an unmasked text frame of the same bytes;
** PIPELINE frames in flight, every echoed byte checked).  TLS (--tls
** HOST:PORT): the same stream modes over TLS 1.3 (OpenSSL, no
** certificate check: loopback only); each connection's handshake is part
** of its connect, so with --warmup the measured time has none; in hold
** mode --http-ping makes the one exchange a GET /hello whose answer ends
** in "hello\n" (for HTTP servers).
**
** Output: one JSON line on stdout, see usage().  Latency is kept in a
** log-linear histogram (under 1% error), from a message's first byte written
** (connect-per-request: from connect) to its last byte echoed.
*/

#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define PATLEN (256 * 1024)   /* random pattern messages are cut from */
#define RXBUF (256 * 1024)
#define MAX_EVENTS 512
#define MAX_IOV 64
#define MAX_READS 4           /* full-buffer reads per wake-up */
#define HOLD_INFLIGHT 256     /* hold mode: connections being set up at once */
#define RETRY_NS 10000000LL   /* back-off after an error: 10 ms */
#define TICK_MS 5             /* housekeeping period */
#define UDP_HDR 16            /* hex sequence number heading a datagram */
#define UDP_MAXSIZE 65507
#define TLSBUF (256 * 1024)   /* TLS: a send's bytes, in one buffer */
#define FLAT_MAX 16384        /* stream sends up to this size are copied */
#define MAX_SIZE (16 * 1024 * 1024)
#define SUB_BITS 7            /* histogram: 128 sub-buckets per power of 2 */
#define SUB (1 << SUB_BITS)
#define HIST_BUCKETS (64 * SUB)

enum mode { M_TCP, M_UNIX, M_UDP };
enum state { S_IDLE, S_CONNECTING, S_TLS, S_HANDSHAKE, S_OPEN, S_HELD,
             S_DONE };

struct opts {
  enum mode mode;
  const char *target;
  const char *ws;         /* WebSocket: the path to upgrade, or NULL */
  int conns, pipeline, cpr, ping, sources, tls, http_ping;
  size_t size;
  long hold;
  double duration, warmup, udp_timeout;
};

struct stats {
  uint64_t requests, bytes, mismatch, closed, connfail, lost, late, connects;
  int64_t max_ns;
  uint64_t hist[HIST_BUCKETS];
};

struct conn {
  int fd;
  enum state state;
  uint32_t events;        /* what epoll watches */
  uint64_t id;            /* identity of the current byte stream */
  uint64_t txk, rxk;      /* messages begun sending / fully echoed */
  size_t txoff, rxoff;    /* bytes of message txk sent, of rxk echoed */
  uint64_t max_msgs;      /* 1 for connect-per-request and hold pings */
  int64_t retry_at;       /* S_IDLE: when to connect again */
  int64_t *ts;            /* per pipeline slot: send time (ns) */
  uint64_t *seq;          /* UDP, per slot: sequence number in flight */
  char *wbuf;             /* WebSocket: frames being sent */
  size_t wlen, woff;      /*   their length, how much is written */
  char *carry;            /* WebSocket: the unparsed tail of the input */
  size_t clen;
  SSL *ssl;               /* --tls: the connection's session */
};

static struct opts O = {.conns = 50, .pipeline = 1, .size = 64, .ping = 1,
                        .sources = -1, .duration = 5, .udp_timeout = 0.2};
static struct stats S;
static struct conn *conns;
static int nconns, epfd;
static char *pat;
static char rxbuf[RXBUF];
static char txbuf[UDP_MAXSIZE];  /* a UDP datagram, or a flattened send */
static struct sockaddr_storage peer;
static socklen_t peerlen;
static int64_t now;
static uint64_t next_id = 1;
static volatile sig_atomic_t stopping;
static long hold_next, hold_busy, hold_open;
static unsigned next_source;
static SSL_CTX *tls_ctx;
static char tlsbuf[TLSBUF];

/* ---- small helpers ---- */

static void on_signal(int sig) {
  (void)sig;
  stopping = 1;
}

static int64_t clock_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static uint64_t mix64(uint64_t x) {  /* splitmix64 finaliser */
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/* Where message k of stream id starts in the pattern. */
static const char *msg_body(uint64_t id, uint64_t k) {
  return pat + mix64(id * 0x9e3779b97f4a7c15ULL + k) % PATLEN;
}

static void make_pattern(void) {
  pat = malloc(PATLEN + O.size);
  if (!pat) {
    perror("loadgen: malloc");
    exit(1);
  }
  uint64_t r = (uint64_t)clock_ns();
  for (size_t i = 0; i < PATLEN + O.size; i++) {
    r = mix64(r + i);
    pat[i] = (char)(' ' + r % 95);  /* printable, never '\n' */
  }
}

static void raise_fd_limit(long want) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  if ((long)rl.rlim_max < want) rl.rlim_max = (rlim_t)want;
  rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* ---- latency histogram (ns) ---- */

static int hist_index(int64_t v) {
  if (v < SUB) return v < 0 ? 0 : (int)v;
  int e = 63 - __builtin_clzll((uint64_t)v);
  return (e - SUB_BITS + 1) * SUB + (int)((v >> (e - SUB_BITS)) & (SUB - 1));
}

static double hist_value(int i) {
  if (i < SUB) return i;
  int e = i / SUB + SUB_BITS - 1;
  int64_t lo = (int64_t)(SUB + i % SUB) << (e - SUB_BITS);
  return (double)lo + (double)(1LL << (e - SUB_BITS)) / 2;
}

static void record_latency(int64_t ns) {
  S.hist[hist_index(ns)]++;
  if (ns > S.max_ns) S.max_ns = ns;
}

static double percentile_us(double q) {
  if (!S.requests) return 0;
  uint64_t rank = (uint64_t)(q * (double)S.requests + 0.999999), seen = 0;
  if (rank < 1) rank = 1;
  for (int i = 0; i < HIST_BUCKETS; i++) {
    seen += S.hist[i];
    if (seen >= rank) {
      double v = hist_value(i);
      return (v < (double)S.max_ns ? v : (double)S.max_ns) / 1000.0;
    }
  }
  return (double)S.max_ns / 1000.0;
}

/* ---- options ---- */

static void usage(FILE *f) {
  fputs(
      "usage: loadgen (--tcp HOST:PORT | --tls HOST:PORT | --unix PATH |\n"
      "                --udp HOST:PORT) [options]\n"
      "      --tls HOST:PORT      TCP with TLS 1.3 (no certificate check);\n"
      "                           the handshake is part of the connect\n"
      "  -c, --conns N            connections (UDP: sockets) (50)\n"
      "  -s, --size BYTES         message size: BYTES-1 random printable\n"
      "                           bytes and '\\n' (64; UDP: 18..65507)\n"
      "  -p, --pipeline N         messages in flight per connection (1)\n"
      "  -d, --duration SECS      measured time (5); hold: longest hold\n"
      "      --warmup SECS        unmeasured load before it (0)\n"
      "      --connect-per-request  each request: connect, send one\n"
      "                           message, read its echo, close; CONNS such\n"
      "                           loops at once; latency counts the connect\n"
      "      --hold N             open N connections, echo one message on\n"
      "                           each, keep them idle until SIGTERM or -d;\n"
      "                           prints 'loadgen: holding N connections'\n"
      "                           to stderr once they are set up\n"
      "      --no-ping            hold: no echo, just connect\n"
      "      --http-ping          hold: GET /hello instead of an echo; its\n"
      "                           answer must end in \"hello\\n\"\n"
      "      --udp-timeout MS     UDP reply deadline; later is a loss (200)\n"
      "      --ws PATH            with --tcp: WebSocket echo (RFC 6455):\n"
      "                           upgrade to PATH, then send masked text\n"
      "                           frames of SIZE bytes (<= 65535), read\n"
      "                           their echoes; handshake failures count\n"
      "                           as connfail\n"
      "      --sources N          TCP to 127.x: bind client sockets to\n"
      "                           127.0.0.1..127.0.0.N in turn, so that\n"
      "                           TIME_WAIT does not exhaust the ephemeral\n"
      "                           ports (default 32 with\n"
      "                           --connect-per-request, else 1 = no bind)\n"
      "  -h, --help\n"
      "Every echoed byte is checked.  At the end one JSON line on stdout:\n"
      "  requests, seconds, rps, mbps (MB/s = 10^6 bytes of echo received\n"
      "  per second), p50_us, p99_us, p999_us, max_us, errors (= mismatch\n"
      "  + closed + connfail + lost), mismatch, closed (unexpected close or\n"
      "  reset), connfail, lost (UDP timeouts), late (UDP replies after\n"
      "  their timeout, not errors), connects, cpu (loadgen CPU seconds per\n"
      "  second), and the settings; hold mode adds held.\n"
      "SIGINT/SIGTERM end the run early; the report covers the time run.\n",
      f);
}

static double parse_num(const char *s, const char *what, double lo,
                        double hi) {
  char *end;
  double v = strtod(s, &end);
  if (*s == '\0' || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "loadgen: bad %s '%s'\n", what, s);
    exit(2);
  }
  return v;
}

static void set_target(enum mode m, const char *t, int *seen) {
  O.mode = m;
  O.target = t;
  (*seen)++;
}

static void check_opts(int seen) {
  if (seen != 1) {
    fputs("loadgen: give exactly one of --tcp, --tls, --unix, --udp\n",
          stderr);
    exit(2);
  }
  if (O.mode == M_UDP && (O.size < UDP_HDR + 2 || O.size > UDP_MAXSIZE)) {
    fputs("loadgen: UDP needs 18 <= size <= 65507\n", stderr);
    exit(2);
  }
  if (O.mode == M_UDP && (O.cpr || O.hold)) {
    fputs("loadgen: --connect-per-request and --hold are for streams\n",
          stderr);
    exit(2);
  }
  if ((O.tls && O.ws) || (O.http_ping && !O.hold)) {
    fputs("loadgen: --tls is without --ws; --http-ping needs --hold\n",
          stderr);
    exit(2);
  }
  if (O.ws && (O.mode != M_TCP || O.cpr || O.hold || O.size > 65535)) {
    fputs("loadgen: --ws needs --tcp, no --connect-per-request or --hold,"
          " and size <= 65535\n", stderr);
    exit(2);
  }
  if (O.cpr) O.pipeline = 1;
  if (O.sources < 0) O.sources = O.cpr ? 32 : 1;
}

static void parse_args(int argc, char **argv) {
  static const struct option lo[] = {
      {"tcp", 1, 0, 'T'},         {"unix", 1, 0, 'U'},
      {"udp", 1, 0, 'G'},         {"conns", 1, 0, 'c'},
      {"size", 1, 0, 's'},        {"pipeline", 1, 0, 'p'},
      {"duration", 1, 0, 'd'},    {"warmup", 1, 0, 'w'},
      {"connect-per-request", 0, 0, 'R'},
      {"hold", 1, 0, 'H'},        {"no-ping", 0, 0, 'N'},
      {"udp-timeout", 1, 0, 't'}, {"sources", 1, 0, 'S'},
      {"ws", 1, 0, 'W'},          {"tls", 1, 0, 'L'},
      {"http-ping", 0, 0, 'P'},
      {"help", 0, 0, 'h'},
      {0, 0, 0, 0}};
  int ch, seen = 0;
  while ((ch = getopt_long(argc, argv, "c:s:p:d:h", lo, NULL)) != -1) {
    switch (ch) {
    case 'T': set_target(M_TCP, optarg, &seen); break;
    case 'L': set_target(M_TCP, optarg, &seen); O.tls = 1; break;
    case 'P': O.http_ping = 1; break;
    case 'U': set_target(M_UNIX, optarg, &seen); break;
    case 'G': set_target(M_UDP, optarg, &seen); break;
    case 'c': O.conns = (int)parse_num(optarg, "-c", 1, 1000000); break;
    case 's': O.size = (size_t)parse_num(optarg, "-s", 1, MAX_SIZE); break;
    case 'p': O.pipeline = (int)parse_num(optarg, "-p", 1, 4096); break;
    case 'd': O.duration = parse_num(optarg, "-d", 0.001, 86400); break;
    case 'w': O.warmup = parse_num(optarg, "--warmup", 0, 3600); break;
    case 'R': O.cpr = 1; break;
    case 'H': O.hold = (long)parse_num(optarg, "--hold", 1, 1000000); break;
    case 'N': O.ping = 0; break;
    case 't': O.udp_timeout = parse_num(optarg, "--udp-timeout", 1, 60000)
                              / 1000; break;
    case 'W': O.ws = optarg; break;
    case 'S': O.sources = (int)parse_num(optarg, "--sources", 1, 250); break;
    case 'h': usage(stdout); exit(0);
    default: usage(stderr); exit(2);
    }
  }
  if (optind != argc) {
    usage(stderr);
    exit(2);
  }
  check_opts(seen);
}

/* Resolves the target into peer/peerlen. */
static void resolve_target(void) {
  if (O.mode == M_UNIX) {
    struct sockaddr_un *sun = (struct sockaddr_un *)&peer;
    if (strlen(O.target) >= sizeof sun->sun_path) {
      fputs("loadgen: unix path too long\n", stderr);
      exit(2);
    }
    sun->sun_family = AF_UNIX;
    strcpy(sun->sun_path, O.target);
    peerlen = sizeof *sun;
    return;
  }
  char host[256];
  const char *colon = strrchr(O.target, ':');
  size_t hl = colon ? (size_t)(colon - O.target) : 0;
  if (!colon || hl >= sizeof host) {
    fprintf(stderr, "loadgen: bad address '%s'\n", O.target);
    exit(2);
  }
  memcpy(host, O.target, hl);
  host[hl] = '\0';
  if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
    memmove(host, host + 1, hl - 2);
    host[hl - 2] = '\0';
  }
  struct addrinfo hints = {0}, *ai;
  hints.ai_socktype = O.mode == M_UDP ? SOCK_DGRAM : SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  int rc = getaddrinfo(host[0] ? host : "127.0.0.1", colon + 1, &hints, &ai);
  if (rc != 0) {
    fprintf(stderr, "loadgen: %s: %s\n", O.target, gai_strerror(rc));
    exit(2);
  }
  memcpy(&peer, ai->ai_addr, ai->ai_addrlen);
  peerlen = ai->ai_addrlen;
  freeaddrinfo(ai);
}

/* Source spreading applies to TCP towards 127.x.x.x only. */
static void check_sources(void) {
  struct sockaddr_in *sin = (struct sockaddr_in *)&peer;
  if (peer.ss_family != AF_INET || O.mode != M_TCP ||
      (ntohl(sin->sin_addr.s_addr) >> 24) != 127)
    O.sources = 1;
}

/* ---- connections ---- */

static void set_events(struct conn *c, uint32_t ev) {
  if (c->events == ev) return;
  struct epoll_event e = {.events = ev, .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
  c->events = ev;
}

/* Closes c; it connects again at retry_at unless it is done. */
static void conn_reset(struct conn *c, int64_t delay) {
  if (c->ssl) SSL_free(c->ssl);
  c->ssl = NULL;
  ERR_clear_error();
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->state = O.hold ? S_DONE : S_IDLE;
  c->retry_at = now + delay;
}

/* An error: count it and start over after a back-off. */
static void conn_fail(struct conn *c, uint64_t *counter) {
  (*counter)++;
  if (O.hold && c->state == S_HELD) hold_open--;
  if (O.hold && c->state != S_HELD) hold_busy--;
  conn_reset(c, RETRY_NS);
}

static void stream_send(struct conn *c);
static void on_ready(struct conn *c);
static void udp_send(struct conn *c, int slot);
static void ws_handshake(struct conn *c);

static void http_ping(struct conn *c);
static void last_message_done(struct conn *c);
static void tls_handshake(struct conn *c);

static void on_connected(struct conn *c) {
  c->state = S_OPEN;
  if (O.mode == M_TCP) {
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  if (O.tls) {
    if (!(c->ssl = SSL_new(tls_ctx)) || !SSL_set_fd(c->ssl, c->fd)) {
      conn_fail(c, &S.connfail);
      return;
    }
    SSL_set_connect_state(c->ssl);
    c->state = S_TLS;
    tls_handshake(c);
    return;
  }
  on_ready(c);
}

/* Connected (and through the TLS handshake): the first message. */
static void on_ready(struct conn *c) {
  S.connects++;
  c->state = S_OPEN;
  if (O.hold && O.http_ping) {
    http_ping(c);
    return;
  }
  if (O.hold && !O.ping) {
    c->state = S_HELD;
    hold_busy--;
    hold_open++;
    set_events(c, EPOLLIN);
    return;
  }
  if (O.ws) {
    ws_handshake(c);
    return;
  }
  stream_send(c);
}

/* Binds to the next loopback source address; the port is left to
   connect(), which picks one unique for the whole 4-tuple. */
static int bind_source(int fd) {
  int one = 1;
  struct sockaddr_in src = {.sin_family = AF_INET};
  unsigned k = next_source++ % (unsigned)O.sources;
  src.sin_addr.s_addr = htonl(0x7f000001u + k);
  setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  return bind(fd, (struct sockaddr *)&src, sizeof src);
}

static int new_socket(void) {
  int type = O.mode == M_UDP ? SOCK_DGRAM : SOCK_STREAM;
  int fd = socket(peer.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd >= 0 && O.sources > 1 && bind_source(fd) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Starts a new connection (a new byte stream) on c. */
static void conn_open(struct conn *c) {
  c->id = next_id++;
  c->txk = c->rxk = 0;
  c->txoff = c->rxoff = 0;
  c->wlen = c->woff = c->clen = 0;
  c->max_msgs = (O.cpr || O.hold) ? 1 : UINT64_MAX;
  c->ts[0] = now;  /* connect-per-request latency starts here */
  c->fd = new_socket();
  if (c->fd < 0) {
    conn_fail(c, &S.connfail);
    return;
  }
  int rc = connect(c->fd, (struct sockaddr *)&peer, peerlen);
  if (rc < 0 && errno == EAGAIN && O.mode == M_UNIX) {
    conn_reset(c, RETRY_NS / 10);  /* listen backlog full: not an error */
    if (O.hold) c->state = S_IDLE;
    return;
  }
  if (rc < 0 && errno != EINPROGRESS) {
    conn_fail(c, &S.connfail);
    return;
  }
  c->state = rc == 0 ? S_OPEN : S_CONNECTING;
  c->events = rc == 0 ? EPOLLIN : EPOLLOUT;
  struct epoll_event e = {.events = c->events, .data.ptr = c};
  epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e);
  if (O.mode == M_UDP) {
    S.connects++;
    for (int i = 0; i < O.pipeline; i++) {
      c->seq[i] = (uint64_t)i;
      udp_send(c, i);
    }
  } else if (rc == 0) {
    on_connected(c);
  }
}

static void on_connect_done(struct conn *c) {
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err) conn_fail(c, &S.connfail);
  else on_connected(c);
}

/* ---- TLS ---- */

static void tls_init(void) {
  tls_ctx = SSL_CTX_new(TLS_client_method());
  if (!tls_ctx || SSL_CTX_set_min_proto_version(tls_ctx, TLS1_3_VERSION) != 1) {
    fputs("loadgen: cannot make a TLS context\n", stderr);
    exit(1);
  }
  SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                   SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_read_ahead(tls_ctx, 1);
}

/* Is OpenSSL's result r a wait for the socket (the rest are failures)? */
static int tls_wants(struct conn *c, int r, uint32_t *ev) {
  int e = SSL_get_error(c->ssl, r);
  ERR_clear_error();
  if (e == SSL_ERROR_WANT_READ) *ev = EPOLLIN;
  else if (e == SSL_ERROR_WANT_WRITE) *ev = EPOLLOUT;
  else return 0;
  return 1;
}

static void tls_handshake(struct conn *c) {
  uint32_t ev;
  int r = SSL_do_handshake(c->ssl);
  if (r == 1) on_ready(c);
  else if (tls_wants(c, r, &ev)) set_events(c, ev);
  else conn_fail(c, &S.connfail);
}

/* read(2) for streams, TLS or not: up to n bytes (TLS: records until the
   buffer is full or the socket empty), 0 at EOF, -1 with errno. */
static ssize_t stream_read(struct conn *c, char *p, size_t n) {
  size_t got = 0;
  uint32_t ev;
  if (!c->ssl) return read(c->fd, p, n);
  while (got < n) {
    int r = SSL_read(c->ssl, p + got, (int)(n - got));
    if (r > 0) {
      got += (size_t)r;
      continue;
    }
    if (got) break;
    if (tls_wants(c, r, &ev)) {
      errno = EAGAIN;
      return -1;
    }
    errno = ECONNRESET;
    return SSL_get_shutdown(c->ssl) & SSL_RECEIVED_SHUTDOWN ? 0 : -1;
  }
  return (ssize_t)got;
}

/* writev(2) for TLS: the pieces copied into one buffer (one record per
   16 KiB, not one per piece); a partial write returns what went, -1 with
   EAGAIN when OpenSSL waits for the socket.  Its retry sends the same
   bytes again from the same position, as OpenSSL requires. */
static ssize_t tls_writev(struct conn *c, const struct iovec *iov, int n) {
  size_t len = 0;
  uint32_t ev;
  for (int i = 0; i < n && len < TLSBUF; i++) {
    size_t k = iov[i].iov_len < TLSBUF - len ? iov[i].iov_len : TLSBUF - len;
    memcpy(tlsbuf + len, iov[i].iov_base, k);
    len += k;
  }
  int r = SSL_write(c->ssl, tlsbuf, (int)len);
  if (r > 0) return r;
  errno = tls_wants(c, r, &ev) ? EAGAIN : ECONNRESET;
  return -1;
}

/* ---- HTTP ping (hold mode, --http-ping) ---- */

#define HTTP_PING "GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n"
#define HTTP_END "hello\n"

static void http_ping(struct conn *c) {
  struct iovec iov = {.iov_base = HTTP_PING, .iov_len = sizeof HTTP_PING - 1};
  ssize_t w = c->ssl ? tls_writev(c, &iov, 1) : writev(c->fd, &iov, 1);
  if (w != (ssize_t)iov.iov_len) {  /* a new socket takes 40 bytes */
    conn_fail(c, &S.closed);
    return;
  }
  c->rxoff = 0;  /* how much of HTTP_END was matched */
  set_events(c, EPOLLIN);
}

/* The answer: done at its end "hello\n", after any head. */
static void http_ping_recv(struct conn *c) {
  static const char end[] = HTTP_END;
  for (;;) {
    ssize_t n = stream_read(c, rxbuf, sizeof rxbuf);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
      conn_fail(c, &S.closed);
      return;
    }
    for (ssize_t i = 0; i < n; i++) {
      if (rxbuf[i] == end[c->rxoff]) c->rxoff++;
      else c->rxoff = rxbuf[i] == end[0];
      if (c->rxoff == sizeof end - 1) {
        S.requests++;
        last_message_done(c);
        return;
      }
    }
  }
}

/* ---- streams ---- */

/* Small pieces are copied into one buffer: the kernel copies one segment
   faster than many (pipelined 64 B messages are 32 segments). */
static int flatten(struct iovec *iov, int n, size_t total) {
  if (n < 2 || total > FLAT_MAX) return n;
  char *p = txbuf;
  for (int i = 0; i < n; i++) {
    memcpy(p, iov[i].iov_base, iov[i].iov_len);
    p += iov[i].iov_len;
  }
  iov[0].iov_base = txbuf;
  iov[0].iov_len = total;
  return 1;
}

/* Gathers what may be sent now: message txk on, within the window. */
static int gather(struct conn *c, struct iovec *iov, size_t *total) {
  uint64_t limit = c->rxk + (uint64_t)O.pipeline;
  if (limit > c->max_msgs) limit = c->max_msgs;
  size_t off = c->txoff, body = O.size - 1;
  int n = 0;
  *total = 0;
  for (uint64_t k = c->txk; k < limit && n + 2 <= MAX_IOV; k++, off = 0) {
    if (off < body) {
      iov[n].iov_base = (char *)msg_body(c->id, k) + off;
      iov[n++].iov_len = body - off;
      *total += body - off;
    }
    iov[n].iov_base = "\n";
    iov[n++].iov_len = 1;
    (*total)++;
  }
  return flatten(iov, n, *total);
}

/* Moves the send position n bytes on, noting when each message began. */
static void advance_tx(struct conn *c, size_t n) {
  while (n > 0) {
    if (c->txoff == 0 && !O.cpr) c->ts[c->txk % (uint64_t)O.pipeline] = now;
    size_t rest = O.size - c->txoff;
    if (n < rest) {
      c->txoff += n;
      return;
    }
    n -= rest;
    c->txk++;
    c->txoff = 0;
  }
}

static void stream_send(struct conn *c) {
  struct iovec iov[MAX_IOV];
  size_t total;
  int n, blocked = 0;
  while ((n = gather(c, iov, &total)) > 0) {
    ssize_t w = c->ssl ? tls_writev(c, iov, n) : writev(c->fd, iov, n);
    if (w < 0 && errno == EAGAIN) {
      blocked = 1;
      break;
    }
    if (w < 0) {
      conn_fail(c, &S.closed);
      return;
    }
    advance_tx(c, (size_t)w);
    if ((size_t)w < total) {
      blocked = 1;
      break;
    }
  }
  set_events(c, EPOLLIN | (blocked ? EPOLLOUT : 0));
}

/* One message fully echoed. */
static void message_done(struct conn *c) {
  record_latency(now - c->ts[c->rxk % (uint64_t)O.pipeline]);
  S.requests++;
  c->rxk++;
  c->rxoff = 0;
}

/* Checks n echoed bytes against what was sent; 0 on a mismatch. */
static int verify(struct conn *c, const char *p, size_t n) {
  uint64_t sent = c->txk * O.size + c->txoff;
  uint64_t got = c->rxk * O.size + c->rxoff;
  if (got + n > sent) return 0;  /* more than was sent */
  size_t body = O.size - 1;
  while (n > 0) {
    if (c->rxoff < body) {
      size_t take = body - c->rxoff < n ? body - c->rxoff : n;
      if (memcmp(p, msg_body(c->id, c->rxk) + c->rxoff, take)) return 0;
      c->rxoff += take;
      p += take;
      n -= take;
    } else {
      if (*p != '\n') return 0;
      p++;
      n--;
      message_done(c);
    }
  }
  return 1;
}

/* After the echo of a connection's only message (cpr, hold ping). */
static void last_message_done(struct conn *c) {
  if (O.cpr) {
    conn_reset(c, 0);
    conn_open(c);
    return;
  }
  c->state = S_HELD;
  hold_busy--;
  hold_open++;
  set_events(c, EPOLLIN);
}

static void stream_recv(struct conn *c) {
  /* TLS: until the socket is empty, for OpenSSL may hold bytes read ahead
     that epoll does not see (the window bounds what is in flight) */
  for (int i = 0; c->ssl || i < MAX_READS; i++) {
    ssize_t n = stream_read(c, rxbuf, sizeof rxbuf);
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) {
      conn_fail(c, &S.closed);  /* EOF or reset: the server closed */
      return;
    }
    S.bytes += (uint64_t)n;
    if (!verify(c, rxbuf, (size_t)n)) {
      conn_fail(c, &S.mismatch);
      return;
    }
    if ((size_t)n < sizeof rxbuf) break;
  }
  if (c->rxk == c->max_msgs) last_message_done(c);
  else stream_send(c);
}

/* ---- WebSocket ---- */

#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="        /* RFC 6455 1.3's */
#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#define WS_HEAD_MAX 4096                        /* the 101's head */

static size_t ws_frame_max(void) { return O.size + 14; }

/* Writes what is pending of wbuf; 1 when all of it went, 0 when the
   socket is full, -1 after an error (c failed). */
static int ws_flush(struct conn *c) {
  while (c->woff < c->wlen) {
    ssize_t w = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
    if (w < 0 && errno == EAGAIN) return 0;
    if (w < 0) {
      conn_fail(c, &S.closed);
      return -1;
    }
    c->woff += (size_t)w;
  }
  return 1;
}

/* The upgrade request; the answer is read by ws_recv. */
static void ws_handshake(struct conn *c) {
  c->state = S_HANDSHAKE;
  int n = snprintf(c->wbuf, WS_HEAD_MAX,
                   "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY
                   "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                   O.ws, O.target);
  c->wlen = n > 0 && n < WS_HEAD_MAX ? (size_t)n : 0;
  c->woff = 0;
  int r = ws_flush(c);
  if (r >= 0) set_events(c, EPOLLIN | (r == 0 ? EPOLLOUT : 0));
}

/* Sends frames for the messages the window allows (after what is
   pending); message k's payload is its pattern slice, masked with a key
   from k. */
static void ws_send(struct conn *c) {
  for (int round = 0; round < 64; round++) {
    int r = ws_flush(c);
    if (r < 0) return;
    if (r == 0) {
      set_events(c, EPOLLIN | EPOLLOUT);
      return;
    }
    uint64_t limit = c->rxk + (uint64_t)O.pipeline;
    if (c->txk >= limit) break;
    c->wlen = c->woff = 0;
    for (; c->txk < limit; c->txk++) {
      unsigned char *f = (unsigned char *)c->wbuf + c->wlen;
      size_t h = 2;
      f[0] = 0x81;
      if (O.size < 126) {
        f[1] = (unsigned char)(0x80 | O.size);
      } else {
        f[1] = 0x80 | 126;
        f[2] = (unsigned char)(O.size >> 8);
        f[3] = (unsigned char)O.size;
        h = 4;
      }
      uint64_t m = mix64(c->txk + 1);
      unsigned char key[4] = {(unsigned char)m, (unsigned char)(m >> 8),
                              (unsigned char)(m >> 16),
                              (unsigned char)(m >> 24)};
      memcpy(f + h, key, 4);
      const char *body = msg_body(c->id, c->txk);
      for (size_t i = 0; i < O.size; i++)
        f[h + 4 + i] = (unsigned char)body[i] ^ key[i & 3];
      c->wlen += h + 4 + O.size;
      c->ts[c->txk % (uint64_t)O.pipeline] = now;
    }
  }
  set_events(c, EPOLLIN);
}

/* Parses the server's frames in p[0..n); returns how many bytes were
   used (the rest is a partial frame), or -1 on a bad frame. */
static long ws_parse(struct conn *c, const char *p, size_t n) {
  size_t used = 0;
  while (n - used >= 2) {
    const unsigned char *f = (const unsigned char *)p + used;
    size_t len = f[1] & 0x7f, h = 2;
    if (f[0] != 0x81 || (f[1] & 0x80) || len == 127) return -1;
    if (len == 126) {
      if (n - used < 4) break;
      len = (size_t)f[2] << 8 | f[3];
      h = 4;
    }
    if (len != O.size || c->rxk >= c->txk) return -1;
    if (n - used < h + len) break;
    if (memcmp(f + h, msg_body(c->id, c->rxk), len)) return -1;
    S.bytes += h + len;
    message_done(c);
    used += h + len;
  }
  return (long)used;
}

/* The 101 answer in carry: 1 when it is whole and right (the rest of
   carry kept), 0 when more is needed, -1 when it is wrong. */
static int ws_answer(struct conn *c) {
  char *end = memmem(c->carry, c->clen, "\r\n\r\n", 4);
  if (!end) return c->clen >= WS_HEAD_MAX ? -1 : 0;
  size_t head = (size_t)(end - c->carry) + 4;
  if (c->clen < 13 || memcmp(c->carry, "HTTP/1.1 101 ", 13) ||
      !memmem(c->carry, head, WS_ACCEPT, sizeof WS_ACCEPT - 1))
    return -1;
  memmove(c->carry, c->carry + head, c->clen - head);
  c->clen -= head;
  return 1;
}

static void ws_recv(struct conn *c) {
  size_t cap = c->state == S_HANDSHAKE ? WS_HEAD_MAX : ws_frame_max();
  for (int i = 0; i < MAX_READS; i++) {
    /* the carried tail first, then what arrived, in one buffer */
    memcpy(rxbuf, c->carry, c->clen);
    ssize_t n = read(c->fd, rxbuf + c->clen, sizeof rxbuf - c->clen);
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) {
      conn_fail(c, c->state == S_HANDSHAKE ? &S.connfail : &S.closed);
      return;
    }
    size_t have = c->clen + (size_t)n;
    if (c->state == S_HANDSHAKE) {
      if (have > cap) {
        conn_fail(c, &S.connfail);
        return;
      }
      memcpy(c->carry, rxbuf, have);
      c->clen = have;
      int r = ws_answer(c);
      if (r < 0) {
        conn_fail(c, &S.connfail);
        return;
      }
      if (r == 0) continue;
      c->state = S_OPEN;
      c->wlen = c->woff = 0;
      if (c->clen) {                /* nothing should come before we send */
        conn_fail(c, &S.mismatch);
        return;
      }
      cap = ws_frame_max();
      break;
    }
    long used = ws_parse(c, rxbuf, have);
    if (used < 0 || have - (size_t)used > cap) {
      conn_fail(c, &S.mismatch);
      return;
    }
    c->clen = have - (size_t)used;
    memcpy(c->carry, rxbuf + used, c->clen);
    if ((size_t)n < sizeof rxbuf - (have - (size_t)n)) break;
  }
  if (c->state == S_OPEN) ws_send(c);
}

/* ---- UDP ---- */

static void put_hex(char *p, uint64_t v) {
  for (int i = UDP_HDR - 1; i >= 0; i--, v >>= 4)
    p[i] = "0123456789abcdef"[v & 15];
}

static int get_hex(const char *p, uint64_t *v) {
  *v = 0;
  for (int i = 0; i < UDP_HDR; i++) {
    char ch = p[i];
    int d = ch >= '0' && ch <= '9' ? ch - '0'
            : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
    if (d < 0) return 0;
    *v = *v << 4 | (uint64_t)d;
  }
  return 1;
}

/* Sends the datagram of slot; a send error leaves it to time out. */
static void udp_send(struct conn *c, int slot) {
  uint64_t s = c->seq[slot];
  put_hex(txbuf, s);
  memcpy(txbuf + UDP_HDR, msg_body(c->id, s) + UDP_HDR,
         O.size - UDP_HDR - 1);
  txbuf[O.size - 1] = '\n';
  c->ts[slot] = now;
  if (send(c->fd, txbuf, O.size, 0) < 0 && errno == ECONNREFUSED)
    S.connfail++;
}

static void udp_next(struct conn *c, int slot) {
  c->seq[slot] += (uint64_t)O.pipeline;
  udp_send(c, slot);
}

static void udp_reply(struct conn *c, const char *p, size_t n) {
  uint64_t s;
  if (n < UDP_HDR || !get_hex(p, &s)) {
    S.mismatch++;
    return;
  }
  int slot = (int)(s % (uint64_t)O.pipeline);
  if (s < c->seq[slot]) {
    S.late++;  /* its loss was counted already */
    return;
  }
  int ok = s == c->seq[slot] && n == O.size && p[n - 1] == '\n' &&
           !memcmp(p + UDP_HDR, msg_body(c->id, s) + UDP_HDR,
                   n - UDP_HDR - 1);
  if (ok) {
    record_latency(now - c->ts[slot]);
    S.requests++;
    S.bytes += n;
  } else {
    S.mismatch++;
  }
  if (s == c->seq[slot]) udp_next(c, slot);
}

static void udp_recv(struct conn *c) {
  for (int i = 0; i < 64; i++) {
    ssize_t n = recv(c->fd, rxbuf, sizeof rxbuf, MSG_DONTWAIT);
    if (n < 0 && errno == ECONNREFUSED) {
      S.connfail++;
      continue;
    }
    if (n < 0) return;
    udp_reply(c, rxbuf, (size_t)n);
  }
}

static void udp_timeouts(void) {
  int64_t limit = (int64_t)(O.udp_timeout * 1e9);
  for (int i = 0; i < nconns; i++) {
    struct conn *c = &conns[i];
    if (c->state != S_OPEN) continue;
    for (int k = 0; k < O.pipeline; k++)
      if (now - c->ts[k] > limit) {
        S.lost++;
        udp_next(c, k);
      }
  }
}

/* ---- driving ---- */

static void on_event(struct epoll_event *ev) {
  struct conn *c = ev->data.ptr;
  if (c->state == S_CONNECTING) {
    on_connect_done(c);
  } else if (O.mode == M_UDP) {
    udp_recv(c);
  } else if (c->state == S_TLS) {
    tls_handshake(c);
  } else if (c->state == S_HELD) {
    ssize_t n = stream_read(c, rxbuf, sizeof rxbuf);  /* TLS: tickets */
    if (n < 0 && errno == EAGAIN) return;
    conn_fail(c, n > 0 ? &S.mismatch : &S.closed);
  } else if (O.ws) {
    if (ev->events & EPOLLOUT) {
      if (c->state == S_HANDSHAKE) {
        if (ws_flush(c) > 0) set_events(c, EPOLLIN);
      } else {
        ws_send(c);
      }
    }
    if ((c->state == S_OPEN || c->state == S_HANDSHAKE) &&
        ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR))
      ws_recv(c);
  } else if (O.http_ping) {
    if (c->state == S_OPEN) http_ping_recv(c);
  } else {
    if (ev->events & EPOLLOUT) stream_send(c);
    if (c->state == S_OPEN && ev->events & (EPOLLIN | EPOLLHUP | EPOLLERR))
      stream_recv(c);
  }
}

/* Opens what is due: retries, and hold-mode connections in waves. */
static void housekeeping(void) {
  for (int i = 0; i < nconns; i++)
    if (conns[i].state == S_IDLE && conns[i].retry_at <= now)
      conn_open(&conns[i]);
  if (O.mode == M_UDP) udp_timeouts();
}

static void hold_progress(void) {
  static int announced;
  while (hold_next < nconns && hold_busy < HOLD_INFLIGHT) {
    hold_busy++;
    conn_open(&conns[hold_next++]);
  }
  if (!announced && hold_next == nconns && hold_busy == 0) {
    fprintf(stderr, "loadgen: holding %ld connections\n", hold_open);
    announced = 1;
  }
}

static void alloc_conns(void) {
  nconns = O.hold ? (int)O.hold : O.conns;
  conns = calloc((size_t)nconns, sizeof *conns);
  if (!conns) exit(1);
  for (int i = 0; i < nconns; i++) {
    conns[i].fd = -1;
    conns[i].state = O.hold ? S_DONE : S_IDLE;
    conns[i].ts = calloc((size_t)O.pipeline, sizeof(int64_t));
    conns[i].seq = calloc((size_t)O.pipeline, sizeof(uint64_t));
    if (!conns[i].ts || !conns[i].seq) exit(1);
    if (O.ws) {
      size_t w = (size_t)O.pipeline * ws_frame_max();
      conns[i].wbuf = malloc(w > WS_HEAD_MAX ? w : WS_HEAD_MAX);
      conns[i].carry = malloc(WS_HEAD_MAX + ws_frame_max());
      if (!conns[i].wbuf || !conns[i].carry) exit(1);
    }
  }
}

static void print_report(double secs, double cpu) {
  uint64_t errors = S.mismatch + S.closed + S.connfail + S.lost;
  const char *mode = O.ws ? "ws" : O.tls ? "tls" : O.mode == M_TCP ? "tcp"
                     : O.mode == M_UNIX ? "unix" : "udp";
  printf("{\"requests\":%llu,\"seconds\":%.3f,\"rps\":%.1f,\"mbps\":%.3f,"
         "\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,"
         "\"errors\":%llu,\"mismatch\":%llu,\"closed\":%llu,"
         "\"connfail\":%llu,\"lost\":%llu,\"late\":%llu,\"connects\":%llu,"
         "\"cpu\":%.3f,\"mode\":\"%s\",\"conns\":%d,\"size\":%zu,"
         "\"pipeline\":%d,\"cpr\":%s",
         (unsigned long long)S.requests, secs, S.requests / secs,
         S.bytes / secs / 1e6, percentile_us(0.5), percentile_us(0.99),
         percentile_us(0.999), S.max_ns / 1000.0, (unsigned long long)errors,
         (unsigned long long)S.mismatch, (unsigned long long)S.closed,
         (unsigned long long)S.connfail, (unsigned long long)S.lost,
         (unsigned long long)S.late, (unsigned long long)S.connects,
         cpu / secs, mode, nconns, O.size, O.pipeline,
         O.cpr ? "true" : "false");
  if (O.hold) printf(",\"held\":%ld", hold_open);
  printf("}\n");
  fflush(stdout);
}

static void setup(int argc, char **argv) {
  parse_args(argc, argv);
  resolve_target();
  check_sources();
  make_pattern();
  if (O.tls) tls_init();
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit((O.hold ? O.hold : O.conns) + 64);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) {
    perror("loadgen: epoll_create1");
    exit(1);
  }
  alloc_conns();
}

int main(int argc, char **argv) {
  struct epoll_event evs[MAX_EVENTS];
  setup(argc, argv);
  now = clock_ns();
  int64_t start = now, tick = now;
  int warming = O.warmup > 0 && !O.hold;
  int64_t phase_end = now + (int64_t)((warming ? O.warmup : O.duration) * 1e9);
  double cpu0 = cpu_seconds();
  housekeeping();
  while (!stopping) {
    if (O.hold) hold_progress();
    int n = epoll_wait(epfd, evs, MAX_EVENTS, TICK_MS);
    now = clock_ns();
    if (now >= phase_end && !warming) break;
    if (now >= phase_end) {  /* warm-up over: measure from here */
      warming = 0;
      memset(&S, 0, sizeof S);
      start = now;
      phase_end = now + (int64_t)(O.duration * 1e9);
      cpu0 = cpu_seconds();
    }
    for (int i = 0; i < n; i++) on_event(&evs[i]);
    if (now - tick >= TICK_MS * 1000000LL) {
      housekeeping();
      tick = now;
    }
  }
  now = clock_ns();
  double secs = (double)(now - start) / 1e9;
  print_report(secs > 0 ? secs : 1e-9, cpu_seconds() - cpu0);
  return 0;
}
