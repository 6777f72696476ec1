/*
** persource.c -- per-source connection counts (see persource.h): open
** addressing with linear probing. A key whose count drops to zero keeps
** its slot (a tombstone that a new key may reuse) until the table is
** rebuilt, which happens when slots in use pass 3/4 of the table.
*/
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "persource.h"

struct srcent {
  struct srckey key;
  int count;                  /* 0: a tombstone (when in use) */
  int inuse;
};

#define MIN_CAP 64


int srctab_init (struct srctab *t, int limit) {
  memset(t, 0, sizeof *t);
  t->limit = limit;
  t->cap = MIN_CAP;
  if ((t->ents = calloc(t->cap, sizeof *t->ents)) == NULL) return -1;
  pthread_mutex_init(&t->mu, NULL);
  return 0;
}


void srctab_free (struct srctab *t) {
  free(t->ents);
  t->ents = NULL;
  pthread_mutex_destroy(&t->mu);
}


int srckey_of (const struct sockaddr *sa, struct srckey *k) {
  memset(k, 0, sizeof *k);
  if (sa->sa_family == AF_INET) {
    k->b[10] = k->b[11] = 0xff;
    memcpy(k->b + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    memcpy(k->b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    return 0;
  }
  return -1;
}


static size_t hash (const struct srckey *k) {  /* FNV-1a */
  uint64_t h = 1469598103934665603ULL;
  for (int i = 0; i < 16; i++) {
    h ^= k->b[i];
    h *= 1099511628211ULL;
  }
  return (size_t)h;
}


/* The slot of k, or NULL; *free_slot: the first reusable slot seen. */
static struct srcent *find (struct srctab *t, const struct srckey *k,
                            struct srcent **free_slot) {
  size_t mask = t->cap - 1;
  *free_slot = NULL;
  for (size_t i = hash(k) & mask;; i = (i + 1) & mask) {
    struct srcent *e = &t->ents[i];
    if (!e->inuse) {
      if (*free_slot == NULL) *free_slot = e;
      return NULL;
    }
    if (memcmp(&e->key, k, sizeof *k) == 0) return e;
    if (e->count == 0 && *free_slot == NULL) *free_slot = e;
  }
}


/* Rebuilds the table with the counted keys only, growing if needed. */
static int rebuild (struct srctab *t) {
  size_t live = 0, cap = MIN_CAP;
  struct srcent *old = t->ents, *ents;
  size_t oldcap = t->cap;
  for (size_t i = 0; i < oldcap; i++) live += old[i].inuse && old[i].count > 0;
  while (cap < live * 2 + 2) cap *= 2;
  if ((ents = calloc(cap, sizeof *ents)) == NULL) return -1;
  t->ents = ents;
  t->cap = cap;
  t->used = 0;
  for (size_t i = 0; i < oldcap; i++) {
    struct srcent *slot;
    if (!old[i].inuse || old[i].count == 0) continue;
    find(t, &old[i].key, &slot);
    *slot = old[i];
    t->used++;
  }
  free(old);
  return 0;
}


int srctab_enter (struct srctab *t, const struct srckey *k) {
  struct srcent *e, *slot;
  int rc = 1;
  pthread_mutex_lock(&t->mu);
  if ((e = find(t, k, &slot)) != NULL) {
    if (e->count >= t->limit) rc = 0;
    else e->count++;
    goto out;
  }
  if ((t->used + 1) * 4 > t->cap * 3) {
    if (rebuild(t) < 0) {
      rc = -1;
      goto out;
    }
    find(t, k, &slot);
  }
  if (!slot->inuse) t->used++;
  slot->key = *k;
  slot->inuse = 1;
  slot->count = 1;
out:
  pthread_mutex_unlock(&t->mu);
  return rc;
}


void srctab_leave (struct srctab *t, const struct srckey *k) {
  struct srcent *e, *slot;
  pthread_mutex_lock(&t->mu);
  if ((e = find(t, k, &slot)) != NULL && e->count > 0) e->count--;
  pthread_mutex_unlock(&t->mu);
}


int srctab_count (struct srctab *t, const struct srckey *k) {
  struct srcent *e, *slot;
  int n;
  pthread_mutex_lock(&t->mu);
  n = (e = find(t, k, &slot)) != NULL ? e->count : 0;
  pthread_mutex_unlock(&t->mu);
  return n;
}
