/*
** metrics.h -- counters every worker (and its forked children and
** threads) updates in memory shared with the master, which serves them in
** Prometheus's text format on --metrics ADDR and logs an access line per
** request with --access-log. One slot per worker number: a worker that
** is replaced or reloaded goes on counting in its slot, so counters only
** ever grow.
*/
#ifndef LUASRV_METRICS_H
#define LUASRV_METRICS_H

#include <stdatomic.h>
#include <stddef.h>

#define METRICS_BUCKETS 9     /* request duration histogram, last is +Inf */
#define METRICS_TLS 64        /* listener names TLS handshakes are counted for */

struct mnames;                /* those names, one table all slots share */

struct mslot {
  atomic_ulong conn_open, conn_total;
  atomic_ulong requests, errors, refused;
  atomic_ulong bytes_in, bytes_out;
  atomic_ulong dur_bucket[METRICS_BUCKETS];  /* not cumulative */
  atomic_ulong dur_usec;      /* sum of durations, microseconds */
  atomic_ulong lua_bytes;     /* the worker's Lua state, at its last request */
  atomic_ulong timers_pending, timers_running;  /* luasrv.timer, now */
  atomic_ulong timer_runs;    /* runs started */
  atomic_ulong tls_ok[METRICS_TLS], tls_failed[METRICS_TLS];  /* by name */
  struct mnames *tls_names;   /* the index of tls_ok and tls_failed */
};

/* A gauge or counter of slot s (NULL: no --metrics) moves by v. */
#define METRICS_ADD(s, field, v) do { if ((s) != NULL) \
  atomic_fetch_add_explicit(&(s)->field, (unsigned long)(v), \
                            memory_order_relaxed); } while (0)

/* Shared memory for n workers (slots 1..n); NULL on failure. */
struct mslot *metrics_new (int n);
void metrics_free (struct mslot *m, int n);

/* A request ended: outcome 0 ok, 1 error, 2 refused (verify_request). */
void metrics_request (struct mslot *s, int outcome, unsigned long long in,
                      unsigned long long out, double secs);

/*
** A client's TLS handshake on the listener named listener ended, ok or
** failed. Its name gets a place in the shared table the first time; past
** METRICS_TLS names in the server's life, further ones are not counted.
*/
void metrics_tls (struct mslot *s, const char *listener, int ok);

/*
** No process of slot s's worker number is left (the master reaped the
** last): its gauges that only those processes move are 0 again, whatever
** a worker that died with clients connected or timers pending left in
** them.
*/
void metrics_gone (struct mslot *s);

struct listener;

/*
** Writes the Prometheus text exposition of slots 1..n into buf, then the
** listeners' connections (from the kernel's socket tables, whichever
** process holds them: TCP's accepted or queued, Unix's accepted), the TLS
** handshakes per listener (every --tls one, and any other a worker
** counted for: STARTTLS on a plain one, one a reload removed) and the
** --shared dictionaries' use; returns its length (at most cap - 1), or
** -1 when buf is too small.
*/
long metrics_format (const struct mslot *m, int n, const struct listener *ls,
                     int nls, char *buf, size_t cap);

#endif
