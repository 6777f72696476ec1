/*
** metrics.c -- shared counters and their Prometheus text format (see
** metrics.h). Updates are relaxed atomic adds: each counter only needs
** to be exact on its own, not consistent with the others at one instant.
*/
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/un.h>

#include "listener.h"
#include "metrics.h"
#include "shdict.h"

static const double bounds[METRICS_BUCKETS - 1] = {
  0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5
};
static const char *const bound_names[METRICS_BUCKETS] = {
  "0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"
};


/*
** The listener names of the TLS counters, after the slots in the same
** mapping: an entry is claimed once (free -> naming -> named, by whichever
** process counts a name first) and never freed, so an index means one
** name for the server's life. Two processes naming the same listener at
** once may take two entries: the exposition adds them up.
*/
enum { NAME_FREE, NAME_NAMING, NAME_SET };

struct mnames {
  atomic_int state[METRICS_TLS];
  char name[METRICS_TLS][ADDRESS_STRLEN];
};


static size_t map_size (int n) {
  return (size_t)(n + 1) * sizeof(struct mslot) + sizeof(struct mnames);
}


struct mslot *metrics_new (int n) {
  struct mslot *m = mmap(NULL, map_size(n), PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return NULL;  /* else zero-filled: every name free */
  for (int i = 0; i <= n; i++) m[i].tls_names = (struct mnames *)&m[n + 1];
  return m;
}


void metrics_free (struct mslot *m, int n) {
  if (m != NULL) munmap(m, map_size(n));
}


#define ADD(field, v) atomic_fetch_add_explicit(&(field), (v), \
                                                memory_order_relaxed)

void metrics_request (struct mslot *s, int outcome, unsigned long long in,
                      unsigned long long out, double secs) {
  int b = 0;
  ADD(s->requests, 1);
  if (outcome == 1) ADD(s->errors, 1);
  if (outcome == 2) ADD(s->refused, 1);
  ADD(s->bytes_in, in);
  ADD(s->bytes_out, out);
  while (b < METRICS_BUCKETS - 1 && secs > bounds[b]) b++;
  ADD(s->dur_bucket[b], 1);
  ADD(s->dur_usec, (unsigned long)(secs * 1e6));
}


/* The entry of name in t, claimed if it has none; -1 when t is full. */
static int name_index (struct mnames *t, const char *name) {
  for (int i = 0; i < METRICS_TLS; i++) {
    int st = atomic_load_explicit(&t->state[i], memory_order_acquire);
    if (st == NAME_FREE &&
        atomic_compare_exchange_strong(&t->state[i], &st, NAME_NAMING)) {
      snprintf(t->name[i], sizeof t->name[i], "%s", name);
      atomic_store_explicit(&t->state[i], NAME_SET, memory_order_release);
      return i;
    }
    if (st == NAME_SET && strcmp(t->name[i], name) == 0) return i;
  }
  return -1;
}


void metrics_tls (struct mslot *s, const char *listener, int ok) {
  int i = name_index(s->tls_names, listener);
  if (i < 0) return;
  if (ok) ADD(s->tls_ok[i], 1);
  else ADD(s->tls_failed[i], 1);
}


void metrics_gone (struct mslot *s) {
  atomic_store_explicit(&s->conn_open, 0, memory_order_relaxed);
  atomic_store_explicit(&s->timers_pending, 0, memory_order_relaxed);
  atomic_store_explicit(&s->timers_running, 0, memory_order_relaxed);
}


#define LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)

struct out {
  char *buf;
  size_t cap, len;
  int full;
};


static void put (struct out *o, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));

static void put (struct out *o, const char *fmt, ...) {
  va_list ap;
  int n;
  if (o->full) return;
  va_start(ap, fmt);
  n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= o->cap - o->len) o->full = 1;
  else o->len += (size_t)n;
}


/* One counter or gauge family: a line per worker. */
static void family (struct out *o, const struct mslot *m, int n,
                    const char *name, const char *type, const char *help,
                    size_t off) {
  put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
  for (int i = 1; i <= n; i++) {
    const atomic_ulong *v = (const atomic_ulong *)((const char *)&m[i] + off);
    put(o, "%s{worker=\"%d\"} %lu\n", name, i,
        atomic_load_explicit(v, memory_order_relaxed));
  }
}


/* {====================================================== listeners */

struct lcount {
  unsigned long open;         /* established: accepted or in the queue */
  unsigned long queued;       /* in the accept queue now */
};


/*
** One line of /proc/net/tcp or tcp6 against listener l: "sl: LOCAL:PORT
** REMOTE:PORT ST TXQ:RXQ ...", addresses as the raw 32-bit words in hex.
*/
static void tcp_line (const char *line, const struct listener *l, int v6,
                      struct lcount *c) {
  unsigned w[4], port, st, rxq;
  const struct sockaddr_in *in = (const struct sockaddr_in *)&l->addr.sa;
  const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&l->addr.sa;
  int same, any;
  if (!v6) {
    if (sscanf(line, " %*u: %8X:%X %*X:%*X %X %*X:%X", &w[0], &port, &st,
               &rxq) != 4)
      return;
    if (port != ntohs(in->sin_port)) return;
    any = in->sin_addr.s_addr == htonl(INADDR_ANY);
    same = w[0] == in->sin_addr.s_addr;
  }
  else {
    if (sscanf(line, " %*u: %8X%8X%8X%8X:%X %*X:%*X %X %*X:%X", &w[0], &w[1],
               &w[2], &w[3], &port, &st, &rxq) != 7)
      return;
    if (port != ntohs(in6->sin6_port)) return;
    any = IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr);
    same = memcmp(w, &in6->sin6_addr, sizeof w) == 0;
  }
  if (st == 0x01 && (same || any)) c->open++;        /* ESTABLISHED */
  else if (st == 0x0A && same) c->queued = rxq;      /* LISTEN */
}


/* "Num: RefCount Protocol Flags Type St Inode Path": connected, same path. */
static void unix_line (const char *line, const struct listener *l,
                       struct lcount *c) {
  unsigned type, st;
  int pos = 0;
  const char *path = ((const struct sockaddr_un *)&l->addr.sa)->sun_path;
  size_t n = strlen(path);
  if (sscanf(line, "%*s %*s %*s %*s %X %X %*u %n", &type, &st, &pos) != 2 ||
      pos == 0 || type != 1 || st != 3 || n == 0)
    return;
  if (strncmp(line + pos, path, n) == 0 &&
      (line[pos + n] == '\n' || line[pos + n] == '\0'))
    c->open++;
}


static void count_listener (const struct listener *l, struct lcount *c) {
  int fam = l->addr.sa.ss_family;
  const char *path = fam == AF_INET ? "/proc/net/tcp" :
                     fam == AF_INET6 ? "/proc/net/tcp6" : "/proc/net/unix";
  char line[512];
  FILE *f;
  memset(c, 0, sizeof *c);
  if ((f = fopen(path, "re")) == NULL) return;
  while (fgets(line, sizeof line, f) != NULL) {
    if (fam == AF_UNIX) unix_line(line, l, c);
    else tcp_line(line, l, fam == AF_INET6, c);
  }
  fclose(f);
}


/* A label value: the listener's name with '"' and '\\' escaped. */
static void label (char *out, size_t len, const char *s) {
  size_t j = 0;
  for (; *s != '\0' && j + 3 < len; s++) {
    if (*s == '"' || *s == '\\') out[j++] = '\\';
    out[j++] = *s == '\n' ? ' ' : *s;
  }
  out[j] = '\0';
}

/* Every stream listener's connections, then its accept queue. */
static void listener_families (struct out *o, const struct listener *ls,
                               int nls) {
  struct lcount c[64];
  char name[2 * ADDRESS_STRLEN];
  if (nls > 64) nls = 64;  /* CLI_MAX_LISTEN */
  for (int i = 0; i < nls; i++)
    if (ls[i].stream) count_listener(&ls[i], &c[i]);
  put(o, "# HELP luasrv_listener_connections Stream connections open on the "
      "listener (TCP: accepted or queued; Unix: accepted).\n"
      "# TYPE luasrv_listener_connections "
      "gauge\n");
  for (int i = 0; i < nls; i++) {
    if (!ls[i].stream) continue;
    label(name, sizeof name, ls[i].name);
    put(o, "luasrv_listener_connections{listener=\"%s\"} %lu\n", name,
        c[i].open);
  }
  put(o, "# HELP luasrv_listener_queued Connections waiting in the TCP "
      "listener's accept queue.\n# TYPE luasrv_listener_queued gauge\n");
  for (int i = 0; i < nls; i++) {
    if (!ls[i].stream || ls[i].addr.sa.ss_family == AF_UNIX) continue;
    label(name, sizeof name, ls[i].name);
    put(o, "luasrv_listener_queued{listener=\"%s\"} %lu\n", name,
        c[i].queued);
  }
}

/* }====================================================== */


/* {====================================================== TLS */

/* The first entry named as entry i, so that a name shows once. */
static int first_of (const struct mnames *t, int i) {
  for (int j = 0; j < i; j++)
    if (atomic_load_explicit(&t->state[j], memory_order_acquire) == NAME_SET &&
        strcmp(t->name[j], t->name[i]) == 0)
      return j;
  return i;
}


/*
** Worker w's handshakes on the listener of entry i, ok or failed: the sum
** of every entry of that name.
*/
static unsigned long tls_count (const struct mslot *w, int i, int ok) {
  const struct mnames *t = w->tls_names;
  unsigned long sum = 0;
  for (int j = i; j < METRICS_TLS; j++)
    if (atomic_load_explicit(&t->state[j], memory_order_acquire) == NAME_SET &&
        strcmp(t->name[j], t->name[i]) == 0)
      sum += ok ? LOAD(w->tls_ok[j]) : LOAD(w->tls_failed[j]);
  return sum;
}


static void tls_family (struct out *o, const struct mslot *m, int n,
                        const struct listener *ls, int nls) {
  struct mnames *t = m[0].tls_names;
  char name[2 * ADDRESS_STRLEN];
  for (int i = 0; i < nls; i++)  /* every --tls listener shows, from 0 */
    if (ls[i].addr.tr == TR_TLS) name_index(t, ls[i].name);
  if (atomic_load_explicit(&t->state[0], memory_order_acquire) != NAME_SET)
    return;
  put(o, "# HELP luasrv_tls_handshakes_total TLS handshakes of clients, by "
      "listener and result.\n# TYPE luasrv_tls_handshakes_total counter\n");
  for (int w = 1; w <= n; w++)
    for (int i = 0; i < METRICS_TLS; i++) {
      if (atomic_load_explicit(&t->state[i], memory_order_acquire) != NAME_SET ||
          first_of(t, i) != i)
        continue;
      label(name, sizeof name, t->name[i]);
      for (int ok = 1; ok >= 0; ok--)
        put(o, "luasrv_tls_handshakes_total{worker=\"%d\",listener=\"%s\","
            "result=\"%s\"} %lu\n", w, name, ok ? "ok" : "failed",
            tls_count(&m[w], i, ok));
    }
}

/* }====================================================== */


static void shared_family (struct out *o, const char *name, const char *help,
                           size_t (*get) (struct shdict *)) {
  if (shdict_ndicts() == 0) return;
  put(o, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
  for (int i = 0; i < shdict_ndicts(); i++)
    put(o, "%s{dict=\"%s\"} %zu\n", name, shdict_name_at(i),
        get(shdict_at(i)));
}


long metrics_format (const struct mslot *m, int n, const struct listener *ls,
                     int nls, char *buf, size_t cap) {
  struct out o = {buf, cap, 0, 0};
  const char *h = "luasrv_request_duration_seconds";
  family(&o, m, n, "luasrv_connections_open", "gauge",
         "Stream connections open now.", offsetof(struct mslot, conn_open));
  family(&o, m, n, "luasrv_connections_total", "counter",
         "Stream connections accepted.", offsetof(struct mslot, conn_total));
  family(&o, m, n, "luasrv_requests_total", "counter",
         "Requests (connections or datagrams) served.",
         offsetof(struct mslot, requests));
  family(&o, m, n, "luasrv_request_errors_total", "counter",
         "Requests whose hooks raised an error.",
         offsetof(struct mslot, errors));
  family(&o, m, n, "luasrv_requests_refused_total", "counter",
         "Requests verify_request refused.", offsetof(struct mslot, refused));
  family(&o, m, n, "luasrv_received_bytes_total", "counter",
         "Bytes read from clients.", offsetof(struct mslot, bytes_in));
  family(&o, m, n, "luasrv_sent_bytes_total", "counter",
         "Bytes written to clients.", offsetof(struct mslot, bytes_out));
  put(&o, "# HELP %s Request durations.\n# TYPE %s histogram\n", h, h);
  for (int i = 1; i <= n; i++) {
    unsigned long cum = 0;
    for (int b = 0; b < METRICS_BUCKETS; b++) {
      cum += LOAD(m[i].dur_bucket[b]);
      put(&o, "%s_bucket{worker=\"%d\",le=\"%s\"} %lu\n", h, i,
          bound_names[b], cum);
    }
    put(&o, "%s_sum{worker=\"%d\"} %.6f\n", h, i,
        (double)LOAD(m[i].dur_usec) / 1e6);
    put(&o, "%s_count{worker=\"%d\"} %lu\n", h, i, cum);
  }
  family(&o, m, n, "luasrv_lua_memory_bytes", "gauge",
         "Bytes the worker's Lua state holds (at its last request).",
         offsetof(struct mslot, lua_bytes));
  put(&o, "# HELP luasrv_timers Timers (luasrv.timer) pending and running.\n"
      "# TYPE luasrv_timers gauge\n");
  for (int i = 1; i <= n; i++) {
    put(&o, "luasrv_timers{worker=\"%d\",state=\"pending\"} %lu\n", i,
        LOAD(m[i].timers_pending));
    put(&o, "luasrv_timers{worker=\"%d\",state=\"running\"} %lu\n", i,
        LOAD(m[i].timers_running));
  }
  family(&o, m, n, "luasrv_timer_runs_total", "counter",
         "Timer runs started (a premature one at a stop included).",
         offsetof(struct mslot, timer_runs));
  listener_families(&o, ls, nls);
  tls_family(&o, m, n, ls, nls);
  shared_family(&o, "luasrv_shared_bytes", "Size of the --shared "
                "dictionary's heap.", shdict_capacity);
  shared_family(&o, "luasrv_shared_free_bytes", "Bytes free in it.",
                shdict_free_space);
  shared_family(&o, "luasrv_shared_keys", "Items it holds (expired ones "
                "until their room is reused).", shdict_count);
  return o.full ? -1 : (long)o.len;
}
