/*
** fuzz_persource.c -- srctab_enter/leave/count against a model.
**
** Input: byte 0 is the limit (1..8); then two-byte operations: the first
** byte's low bit is enter (0) or leave (1), bit 1 asks for the key as
** IPv4 (through srckey_of on a sockaddr_in) rather than IPv6, and its
** upper bits with the second byte choose one of 16,384 keys (many keys:
** the table must rebuild and grow; few key bytes differ, so probes
** collide). Checked after each operation: enter's result (1 under the
** limit, 0 at it) and every touched key's count equal the model's, which
** never exceeds the limit; an IPv4 client and its IPv4-mapped IPv6 form
** are one key.
*/
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "persource.h"
#include "fuzz_common.h"

#define NKEYS 16384

static int model[NKEYS];
static int touched[NKEYS], ntouched;
static unsigned char istouched[NKEYS];


static void make_key (int id, int v4, struct srckey *k) {
  if (v4) {  /* through srckey_of, as the server does */
    struct sockaddr_in in;
    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(0x0a000000u | (unsigned)id);
    CHECK(srckey_of((struct sockaddr *)&in, k) == 0, "srckey_of v4");
    /* the same client seen on an IPv6 socket */
    struct sockaddr_in6 in6;
    struct srckey k6;
    memset(&in6, 0, sizeof in6);
    in6.sin6_family = AF_INET6;
    in6.sin6_addr.s6_addr[10] = in6.sin6_addr.s6_addr[11] = 0xff;
    memcpy(in6.sin6_addr.s6_addr + 12, &in.sin_addr, 4);
    CHECK(srckey_of((struct sockaddr *)&in6, &k6) == 0, "srckey_of v6");
    CHECK(memcmp(k, &k6, sizeof k6) == 0, "v4 and mapped keys differ");
  }
  else {
    memset(k, 0, sizeof *k);
    k->b[0] = 0x20;
    k->b[1] = 0x01;
    k->b[14] = (unsigned char)(id >> 8);
    k->b[15] = (unsigned char)id;
  }
}


int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  struct srctab t;
  int limit;
  if (size < 1) return 0;
  limit = 1 + data[0] % 8;
  CHECK(srctab_init(&t, limit) == 0, "init");
  for (int i = 0; i < ntouched; i++) model[touched[i]] = istouched[touched[i]] = 0;
  ntouched = 0;
  for (size_t i = 1; i + 1 < size; i += 2) {
    int leave = data[i] & 1, v4 = (data[i] >> 1) & 1;
    /* v4 and v6 keys live in separate halves of the model */
    int id = ((data[i] >> 2) << 8 | data[i + 1]) % (NKEYS / 2);
    int mid = id + (v4 ? NKEYS / 2 : 0);
    struct srckey k;
    make_key(id, v4, &k);
    if (!istouched[mid]) {
      istouched[mid] = 1;
      touched[ntouched++] = mid;
    }
    if (leave) {
      srctab_leave(&t, &k);
      if (model[mid] > 0) model[mid]--;
    }
    else {
      int rc = srctab_enter(&t, &k), want = model[mid] < limit;
      CHECK(rc == want, "enter -> %d, model says %d (count %d, limit %d)",
            rc, want, model[mid], limit);
      if (want) model[mid]++;
    }
    CHECK(model[mid] <= limit, "model over the limit");
    CHECK(srctab_count(&t, &k) == model[mid], "count %d, model %d",
          srctab_count(&t, &k), model[mid]);
    CHECK((t.cap & (t.cap - 1)) == 0 && t.used < t.cap, "table cap %zu used %zu",
          t.cap, t.used);
  }
  /* every key touched still has the model's count */
  for (int j = 0; j < ntouched; j++) {
    struct srckey k;
    int mid = touched[j];
    make_key(mid % (NKEYS / 2), mid >= NKEYS / 2, &k);
    CHECK(srctab_count(&t, &k) == model[mid], "final count of key %d: %d, "
          "model %d", mid, srctab_count(&t, &k), model[mid]);
  }
  srctab_free(&t);
  return 0;
}
