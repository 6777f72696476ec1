/*
** metrics.c -- shared counters and their Prometheus text format (see
** metrics.h). Updates are relaxed atomic adds: each counter only needs
** to be exact on its own, not consistent with the others at one instant.
*/
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "metrics.h"

static const double bounds[METRICS_BUCKETS - 1] = {
  0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5
};
static const char *const bound_names[METRICS_BUCKETS] = {
  "0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"
};


struct mslot *metrics_new (int n) {
  void *p = mmap(NULL, (size_t)(n + 1) * sizeof(struct mslot),
                 PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;  /* zero-filled */
}


void metrics_free (struct mslot *m, int n) {
  if (m != NULL) munmap(m, (size_t)(n + 1) * sizeof(struct mslot));
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


long metrics_format (const struct mslot *m, int n, char *buf, size_t cap) {
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
  return o.full ? -1 : (long)o.len;
}
