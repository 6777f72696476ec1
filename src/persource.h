/*
** persource.h -- --max-per-source: how many connections each client IP
** address holds open in a worker (as xinetd's per_source and systemd's
** MaxConnectionsPerSource). A hash table of address -> count, locked, so
** the thread model's handler threads may leave it while the main thread
** enters it.
*/
#ifndef LUASRV_PERSOURCE_H
#define LUASRV_PERSOURCE_H

#include <pthread.h>
#include <stddef.h>
#include <sys/socket.h>

/* An IPv6 address; IPv4 clients as IPv4-mapped (::ffff:a.b.c.d). */
struct srckey {
  unsigned char b[16];
};

struct srcent;

struct srctab {
  pthread_mutex_t mu;
  struct srcent *ents;
  size_t cap;                 /* a power of 2 */
  size_t used;                /* slots holding a key, counted or not */
  int limit;
};

int srctab_init (struct srctab *t, int limit);
void srctab_free (struct srctab *t);

/* The key of sa; 0, or -1 when sa is not an IP address (Unix: no limit). */
int srckey_of (const struct sockaddr *sa, struct srckey *k);

/*
** Counts a new connection from k: 1 when under the limit, 0 when k holds
** the limit already (not counted). Out of memory, it admits uncounted (-1).
*/
int srctab_enter (struct srctab *t, const struct srckey *k);

/* A connection from k ended. */
void srctab_leave (struct srctab *t, const struct srckey *k);

/* The connections k holds (for tests). */
int srctab_count (struct srctab *t, const struct srckey *k);

#endif
