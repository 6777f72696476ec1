/*
** fuzz_reader.c -- the request object's readers (src/lconn.c) through the
** real code: a Lua state made by lstate_new as the server makes it, a
** request made by lconn_new on one end of a socketpair, the input's data
** written into the other end, and req:read / req:lines / req:recv called
** through the Lua API, their results compared with a model of the formats.
**
** Two ways to deliver the data, as the server's models wait:
**   sync:  the blocking wait ops (main.c's check(), model_sync.c): all the
**          data is written and the write side shut before the first read;
**          a read that finds the buffer empty polls (worker_block).
**   event: wait ops that yield (model_event.c's contract): each call runs
**          in a coroutine; whenever it yields to wait, the harness writes
**          the next chunk (sizes from the input; 0 = a wake-up with no
**          data), flags the connection readable (and RDHUP with the last
**          chunk, when the write side is shut), and resumes it, so
**          lines, formats and counts are split across reads at every
**          offset and the continuations (read_k, recv_k) run.
**
** Input layout:
**   byte 0       bit 0: event mode; bit 1: max_line 65536 (else byte 1);
**                bits 2-4: the peer address kind
**   byte 1       max_line - 1 (1..256) unless bit 1
**   byte 2       P, the program length; byte 3: S, the schedule length
**   P bytes      the program (operations below)
**   S bytes      the chunk schedule (event mode)
**   the rest     the data the client sends (at most 64 KiB)
**
** Operations (program byte % 8; some take the bytes after them):
**   0 read("l")  1 read("L")  2 read("a")  3 read(n)  4 recv(max)
**   5 read(f1, ..., fk), k 1..4, formats l L a n *l *L *a or an invalid one
**   6 for ... in req:lines(formats) (0..3 formats), at most len+3 rounds
**   7 one of: read() (default "l"), req:close(), client_address and
**     tostring (the peer formatting), lines() with no format
**
** The model: "l"/"L" give the bytes up to the next newline (without/with
** it), or the rest at EOF without one, nil at EOF; "line too long" when
** the newline (or the rest, at EOF) lies more than max_line bytes ahead,
** consuming nothing. "a": the rest ("" at EOF). n: min(n, rest) bytes,
** nil at EOF; 0 gives "" unless at EOF. recv(max): 1..min(max, rest)
** bytes that are the next ones, nil at EOF. After close: nil, "closed".
** A multi-format read stops at the first nil (values so far, nil) or
** failure (values so far, nil, message). The lines iterator raises the
** failures. So the concatenation of what "L" returns is the input.
**
** FUZZ_TRACE=1 in the environment prints each read and its results.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <lauxlib.h>
#include <lua.h>

#include "cli.h"
#include "lsrv.h"
#include "worker.h"
#include "fuzz_common.h"

#define MAX_DATA 65536
#define MAX_OPS 64
#define PAINT 0xA5

static struct config cfg;
static struct worker w;
static struct lctx *X;
static lua_State *L;
static struct task T;          /* the task event-mode calls run as */
static int armed;

static void ev_arm (struct task *t, struct lconn *c, unsigned ev,
                    double deadline) {
  (void)deadline;
  CHECK(t == &T, "armed for another task");
  CHECK(c != NULL && ev == EV_READ, "unexpected wait (c %p, ev %u)",
        (void *)c, ev);
  armed = 1;
}

#define sync_ops sched_blocking
static const struct sched_ops event_ops = {
  .name = "fuzz-event",
  .block = sched_block,
  .arm = ev_arm,
};


static char script[64];

static void remove_script (void) {
  unlink(script);
}


int LLVMFuzzerInitialize (int *argc, char ***argv) {
  char err[1024];
  char *args[] = {(char *)"luasrv", script, (char *)"--tcp", (char *)":0",
                  NULL};
  FILE *f;
  (void)argc;
  (void)argv;
  snprintf(script, sizeof script, "/tmp/luasrv-fuzz-reader-%d.lua",
           (int)getpid());
  f = fopen(script, "w");
  CHECK(f != NULL, "cannot write %s", script);
  fputs("return { handle = function (req) end }\n", f);
  fclose(f);
  atexit(remove_script);
  CHECK(cli_parse(4, args, &cfg, err, sizeof err) == CLI_RUN, "%s", err);
  cfg.timeout = 0;  /* a hang is a bug: libFuzzer's -timeout reports it */
  CHECK(worker_init(&w, &cfg, NULL, 0, 1) == 0, "worker_init");
  return 0;
}


/*
** A fresh state for each input, closed after it: no input depends on
** the ones before, and what a run allocates it frees, so LeakSanitizer
** (run after any input that allocated more than it freed) stays quiet
** and fast unless something really leaks.
*/
static void state_open (void) {
  char err[1024];
  X = lstate_new(&w, script, &sync_ops, err, sizeof err);
  CHECK(X != NULL, "lstate_new: %s", err);
  L = lsrv_L(X);
  memset(&T, 0, sizeof T);
  T.x = X;
  T.ref = LUA_NOREF;
  timer_init(&T.timer, NULL, &T);
}


struct run {
  const uint8_t *prog, *sched, *d;
  size_t nprog, ip, nsched, si, n;
  size_t fed;                 /* bytes written into the socket */
  int shut;                   /* our side shut down */
  size_t pos;                 /* model: bytes consumed */
  int closed;
  int event;
  size_t maxline;
  int fd;                     /* our end */
  struct lconn *c;
  struct sockaddr_storage peer;  /* the client address given to lconn_new */
  socklen_t peerlen;
};


static unsigned next (struct run *r) {
  return r->ip < r->nprog ? r->prog[r->ip++] : 0;
}


static void write_n (struct run *r, size_t len) {
  while (len > 0) {
    ssize_t k = write(r->fd, r->d + r->fed, len);
    CHECK(k > 0, "harness: write: %s", k < 0 ? strerror(errno) : "0");
    r->fed += (size_t)k;
    len -= (size_t)k;
  }
}


/* Event mode: the task waits; deliver the next chunk and wake it. */
static void feed (struct run *r) {
  CHECK(armed, "yielded without arming a wait");
  armed = 0;
  CHECK(!r->shut, "waits for input after the peer's EOF was delivered");
  if (r->si < r->nsched) {
    unsigned k = r->sched[r->si++];
    size_t len = k & 0x80 ? (size_t)(k & 0x7f) * 256 : k;
    if (len > r->n - r->fed) len = r->n - r->fed;
    write_n(r, len);
  }
  else {
    write_n(r, r->n - r->fed);
    shutdown(r->fd, SHUT_WR);
    r->shut = 1;
    r->c->io.flags |= LC_RDHUP;
  }
  r->c->io.flags |= LC_READABLE;
  T.wait_rc = 0;
}


/*
** Calls the function and nargs arguments on the top of L. Returns the
** status; the results (or the error) are on *S from index *base + 1.
*/
static int invoke (struct run *r, int nargs, lua_State **S, int *base) {
  if (!r->event) {
    *S = L;
    *base = lua_gettop(L) - nargs - 1;
    return lua_pcall(L, nargs, LUA_MULTRET, 0);
  }
  lua_State *co = lua_newthread(L);
  int st, nres;
  lsrv_settask(co, &T);
  T.co = co;
  lua_insert(L, -(nargs + 2));  /* the thread below function and args */
  lua_xmove(L, co, nargs + 1);
  armed = 0;
  for (;;) {
    st = lua_resume(co, L, nargs, &nres);
    if (st != LUA_YIELD) break;
    CHECK(nres > 0 && lua_touserdata(co, -1) == &lsrv_yield_token,
          "a yield that is not a wait");
    lua_pop(co, nres);
    feed(r);
    nargs = 0;
  }
  CHECK(!armed, "armed a wait and did not yield");
  *S = co;
  *base = 0;
  if (st == LUA_OK) CHECK(lua_gettop(co) == nres, "stack %d, nres %d",
                          lua_gettop(co), nres);
  return st;
}


/* {================================================== the model */

enum { F_L, F_LL, F_A, F_N, F_BAD };
struct fmt { int kind; size_t n; int style; };
enum { E_VAL, E_NIL, E_ERR };
struct expect { int kind; size_t off, len, adv; const char *err; };

static struct expect model_one (struct run *r, const struct fmt *f) {
  struct expect e = {E_VAL, r->pos, 0, 0, NULL};
  size_t rem = r->n - r->pos;
  if (r->closed) {
    e.kind = E_ERR;
    e.err = "closed";
    return e;
  }
  switch (f->kind) {
    case F_L: case F_LL: {
      const uint8_t *nl = memchr(r->d + r->pos, '\n', rem);
      if (nl != NULL) {
        size_t k = (size_t)(nl - (r->d + r->pos));
        if (k > r->maxline) {
          e.kind = E_ERR;
          e.err = "line too long";
        }
        else {
          e.len = k + (f->kind == F_LL);
          e.adv = k + 1;
        }
      }
      else if (rem > r->maxline) {
        e.kind = E_ERR;
        e.err = "line too long";
      }
      else if (rem == 0) e.kind = E_NIL;
      else e.len = e.adv = rem;
      break;
    }
    case F_A:
      e.len = e.adv = rem;
      break;
    case F_N:
      if (rem == 0) e.kind = E_NIL;
      else e.len = e.adv = f->n < rem ? f->n : rem;
      break;
    default:
      CHECK(0, "harness: format kind %d", f->kind);
  }
  return e;
}


static void push_fmt (const struct fmt *f) {
  static const char *const styles[3][3] = {
    {"l", "*l", "l"}, {"L", "*L", "L"}, {"a", "*a", "a"}};
  static const char *const bad[] = {"x", "ll", "", "*", "n", "*x", "aL"};
  switch (f->kind) {
    case F_N: lua_pushinteger(L, (lua_Integer)f->n); break;
    case F_BAD:
      switch (f->style % 10) {
        case 7: lua_pushinteger(L, -1 - (lua_Integer)f->n); break;
        case 8: lua_pushnumber(L, 1.5); break;
        case 9: lua_newtable(L); break;
        default: lua_pushstring(L, bad[f->style % 10]);
      }
      break;
    default: lua_pushstring(L, styles[f->kind][f->style % 3]);
  }
}


static size_t pick_size (unsigned b) {
  return b < 128 ? b : (size_t)(b - 128) * 512;
}


static struct fmt pick_fmt (struct run *r) {
  unsigned b = next(r);
  struct fmt f = {F_L, 0, (int)(b >> 3)};
  switch (b % 8) {
    case 0: case 5: f.kind = F_L; break;
    case 1: case 6: f.kind = F_LL; break;
    case 2: f.kind = F_A; break;
    case 3: case 4: f.kind = F_N; f.n = pick_size(next(r)); break;
    case 7: f.kind = F_BAD; f.n = b >> 3; break;
  }
  return f;
}


static const char *str_at (lua_State *S, int i, size_t *len) {
  CHECK(lua_type(S, i) == LUA_TSTRING, "result %d is a %s, not a string", i,
        luaL_typename(S, i));
  return lua_tolstring(S, i, len);
}


/*
** Compares the results of reading formats f[0..k) (on S from base + 1;
** raised: the lines iterator) with the model, and advances it. Returns 1
** if the first value is nil (a lines loop ends).
*/
static int check_read (struct run *r, const struct fmt *f, int k, int st,
                       lua_State *S, int base, int raised) {
  int nres = lua_gettop(S) - base;
  if (getenv("FUZZ_TRACE")) {
    fprintf(stderr, "read of %d formats (raised %d) at pos %zu: status %d,"
            " %d results:", k, raised, r->pos, st, nres);
    for (int j = 0; j < k; j++) fprintf(stderr, " f%d=%d/%zu", j, f[j].kind, f[j].n);
    for (int j = 1; j <= nres; j++)
      fprintf(stderr, " [%s %zu]", luaL_typename(S, base + j),
              lua_type(S, base + j) == LUA_TSTRING ? (size_t)lua_rawlen(S, base + j) : 0);
    if (st != LUA_OK) fprintf(stderr, " error: %s", lua_tostring(S, -1));
    fputc('\n', stderr);
  }
  for (int j = 0; j < k; j++)
    if (f[j].kind == F_BAD) {  /* argument errors come before any read */
      CHECK(st != LUA_OK, "an invalid format was accepted");
      return 1;
    }
  /* A lines iterator raises a failure at any format: the values read
  ** before it are consumed, but not returned. */
  if (raised) {
    size_t save = r->pos;
    for (int j = 0; j < k; j++) {
      struct expect e = model_one(r, &f[j]);
      if (e.kind == E_NIL) break;
      if (e.kind == E_ERR) {
        const char *msg = lua_tostring(S, -1);
        CHECK(st != LUA_OK, "lines: '%s' at format %d expected to raise",
              e.err, j + 1);
        CHECK(msg != NULL && strstr(msg, e.err) != NULL,
              "lines raised '%s', expected '%s'", msg ? msg : "?", e.err);
        return 1;
      }
      r->pos += e.adv;
    }
    r->pos = save;
  }
  for (int j = 0; j < k; j++) {
    struct expect e = model_one(r, &f[j]);
    CHECK(st == LUA_OK, "read raised: %s (format %d of %d, pos %zu)",
          lua_tostring(S, -1), j + 1, k, r->pos);
    if (e.kind == E_VAL) {
      size_t len;
      const char *s;
      CHECK(j < nres, "%d results, expected more (format %d)", nres, j + 1);
      s = str_at(S, base + 1 + j, &len);
      CHECK(len == e.len && memcmp(s, r->d + e.off, len) == 0,
            "format %d (kind %d, n %zu) at pos %zu, max_line %zu: got %zu "
            "bytes, expected %zu", j + 1, f[j].kind, f[j].n, r->pos,
            r->maxline, len, e.len);
      r->pos += e.adv;
      continue;
    }
    CHECK(lua_isnil(S, base + 1 + j), "format %d: expected nil (%s), got a %s",
          j + 1, e.kind == E_NIL ? "EOF" : e.err,
          luaL_typename(S, base + 1 + j));
    if (e.kind == E_NIL) {
      CHECK(nres == j + 1, "EOF at format %d: %d results", j + 1, nres);
    }
    else {
      size_t len;
      const char *msg;
      CHECK(nres == j + 2, "failure at format %d: %d results", j + 1, nres);
      msg = str_at(S, base + j + 2, &len);
      CHECK(strcmp(msg, e.err) == 0, "message '%s', expected '%s'", msg, e.err);
    }
    return j == 0;
  }
  CHECK(nres == k, "%d results for %d formats", nres, k);
  return 0;
}

/* }================================================== */


static void op_read (struct run *r, const struct fmt *f, int k, int dflt) {
  lua_State *S;
  int base, top = lua_gettop(L), st;
  struct fmt deflt = {F_L, 0, 0};
  lua_getfield(L, 1, "read");
  lua_pushvalue(L, 1);
  for (int j = 0; j < k; j++) push_fmt(&f[j]);
  st = invoke(r, k + 1, &S, &base);
  check_read(r, dflt ? &deflt : f, dflt ? 1 : k, st, S, base, 0);
  lua_settop(L, top);
}


static void op_recv (struct run *r, size_t max) {
  lua_State *S;
  int base, top = lua_gettop(L), st, nres;
  size_t rem = r->n - r->pos;
  lua_getfield(L, 1, "recv");
  lua_pushvalue(L, 1);
  lua_pushinteger(L, (lua_Integer)max);
  st = invoke(r, 2, &S, &base);
  CHECK(st == LUA_OK, "recv raised: %s", lua_tostring(S, -1));
  nres = lua_gettop(S) - base;
  if (r->closed) {
    CHECK(nres == 2 && lua_isnil(S, base + 1) &&
          strcmp(lua_tostring(S, base + 2), "closed") == 0, "recv after close");
  }
  else if (rem == 0) {
    CHECK(nres == 1 && lua_isnil(S, base + 1), "recv at EOF: %d results, %s",
          nres, luaL_typename(S, base + 1));
  }
  else {
    size_t len;
    const char *s;
    CHECK(nres == 1, "recv: %d results", nres);
    s = str_at(S, base + 1, &len);
    CHECK(len >= 1 && len <= max && len <= rem, "recv(%zu) gave %zu bytes "
          "(%zu left)", max, len, rem);
    CHECK(memcmp(s, r->d + r->pos, len) == 0, "recv gave other bytes");
    r->pos += len;
  }
  lua_settop(L, top);
}


static void op_lines (struct run *r, const struct fmt *f, int k) {
  lua_State *S;
  int base, top = lua_gettop(L), st, nf = k ? k : 1;
  struct fmt deflt = {F_L, 0, 0};
  int bad = 0;
  for (int j = 0; j < k; j++) bad |= f[j].kind == F_BAD;
  lua_getfield(L, 1, "lines");
  lua_pushvalue(L, 1);
  for (int j = 0; j < k; j++) push_fmt(&f[j]);
  st = lua_pcall(L, k + 1, 1, 0);
  if (bad) {
    CHECK(st != LUA_OK, "lines accepted an invalid format");
    lua_settop(L, top);
    return;
  }
  CHECK(st == LUA_OK, "lines: %s", lua_tostring(L, -1));
  for (size_t round = 0; round < r->n + 3; round++) {
    int itop = lua_gettop(L);
    lua_pushvalue(L, -1);
    st = invoke(r, 0, &S, &base);
    if (check_read(r, k ? f : &deflt, nf, st, S, base, 1) || st != LUA_OK) {
      lua_settop(L, itop);
      break;
    }
    lua_settop(L, itop);
  }
  lua_settop(L, top);
}


static void op_close (struct run *r) {
  int top = lua_gettop(L);
  lua_getfield(L, 1, "close");
  lua_pushvalue(L, 1);
  CHECK(lua_pcall(L, 1, 2, 0) == LUA_OK, "close raised");
  if (r->closed)
    CHECK(lua_isnil(L, -2), "a second close succeeded");
  else
    CHECK(lua_toboolean(L, -2), "close failed: %s", lua_tostring(L, -1));
  r->closed = 1;
  lua_settop(L, top);
}


/* Fills stack below us with PAINT, so uninitialised reads show. */
static __attribute__((noinline)) void paint_stack (void) {
  volatile char junk[32768];
  memset((char *)junk, PAINT, sizeof junk);
}


/*
** A path in client_address can only be made of the peer address's own
** bytes: a prefix of sun_path within peerlen ("" when there are none).
*/
static void check_path (struct run *r, const char *s, size_t len) {
  size_t off = offsetof(struct sockaddr_un, sun_path);
  size_t have = r->peerlen > off ? r->peerlen - off : 0;
  const char *known = getenv("LUASRV_FUZZ_KNOWN");
  /* a known bug (see fuzz/README): fuzz on past it when asked to */
  if (known != NULL && strstr(known, "peer-path") != NULL &&
      r->peer.ss_family != AF_UNIX)
    return;
  CHECK(len <= ADDRESS_PATH_MAX, "client_address.path of %zu bytes", len);
  CHECK(len <= have && memcmp(s, (const char *)&r->peer + off, len) == 0,
        "client_address.path is %zu bytes that are not the peer's (peer "
        "family %d, length %u): uninitialised memory", len,
        r->peer.ss_family, (unsigned)r->peerlen);
}


static void op_address (struct run *r) {
  int top = lua_gettop(L);
  const char *s;
  size_t len;
  paint_stack();
  lua_getfield(L, 1, "client_address");
  CHECK(lua_istable(L, -1), "client_address is a %s", luaL_typename(L, -1));
  lua_getfield(L, -1, "path");
  if (lua_isstring(L, -1)) {
    s = lua_tolstring(L, -1, &len);
    check_path(r, s, len);
  }
  lua_pop(L, 1);
  s = luaL_tolstring(L, -1, &len);  /* addr_tostring */
  CHECK(s != NULL, "tostring(client_address)");
  lua_pop(L, 2);
  paint_stack();
  s = luaL_tolstring(L, 1, &len);   /* req_tostring */
  CHECK(s != NULL && strncmp(s, "luasrv.conn (", 13) == 0, "tostring(req)");
  /* and lconn_push_address straight after the paint, so what its
  ** locals hold before it writes them is PAINT, every time */
  paint_stack();
  lconn_push_address(L, r->c);
  lua_getfield(L, -1, "path");
  if (lua_isstring(L, -1)) {
    s = lua_tolstring(L, -1, &len);
    check_path(r, s, len);
  }
  lua_settop(L, top);
}


/* The client address the request is made with (the input picks it). */
static socklen_t make_peer (unsigned kind, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof *ss);
  switch (kind) {
    case 0: {
      struct sockaddr_in *in = (void *)ss;
      in->sin_family = AF_INET;
      in->sin_port = htons(40000);
      in->sin_addr.s_addr = htonl(0x7f000001);
      return sizeof *in;
    }
    case 1: {
      struct sockaddr_in6 *in6 = (void *)ss;
      in6->sin6_family = AF_INET6;
      in6->sin6_port = htons(40001);
      in6->sin6_addr.s6_addr[15] = 1;
      return sizeof *in6;
    }
    case 2: {  /* a named Unix client */
      struct sockaddr_un *un = (void *)ss;
      un->sun_family = AF_UNIX;
      strcpy(un->sun_path, "/tmp/client.sock");
      return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 17);
    }
    case 3: {  /* an unnamed Unix client (accept on a Unix listener) */
      ss->ss_family = AF_UNIX;
      return sizeof(sa_family_t);
    }
    case 4:    /* no address at all: recvfrom from an unbound Unix
                  datagram socket reports a length of 0 */
      return 0;
    case 5: {  /* a full-length Unix path without its terminator */
      struct sockaddr_un *un = (void *)ss;
      un->sun_family = AF_UNIX;
      memset(un->sun_path, 'p', sizeof un->sun_path);
      return sizeof *un;
    }
    case 6: {  /* abstract Unix address */
      struct sockaddr_un *un = (void *)ss;
      un->sun_family = AF_UNIX;
      memcpy(un->sun_path, "\0abstract", 9);
      return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 9);
    }
    default:   /* a family luasrv does not know */
      ss->ss_family = AF_APPLETALK;
      return sizeof(struct sockaddr_in6);
  }
}


int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  struct run r;
  struct sockaddr_storage peer;
  socklen_t peerlen;
  int sv[2], sz = 1 << 20;
  unsigned hdr;
  if (size < 4) return 0;
  hdr = data[0];
  memset(&r, 0, sizeof r);
  r.event = data[0] & 1;
  r.maxline = data[0] & 2 ? 65536 : (size_t)data[1] + 1;
  r.nprog = data[2];
  r.nsched = data[3];
  data += 4;
  size -= 4;
  if (r.nprog > size) r.nprog = size;
  r.prog = data;
  data += r.nprog;
  size -= r.nprog;
  if (r.nsched > size) r.nsched = size;
  r.sched = data;
  r.d = data + r.nsched;
  r.n = size - r.nsched;
  if (r.n > MAX_DATA) return 0;
  peerlen = make_peer(hdr >> 2 & 7, &peer);

  cfg.max_line = r.maxline;
  state_open();
  X->ops = r.event ? &event_ops : &sync_ops;
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                   sv) == 0, "socketpair: %s", strerror(errno));
  setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
  setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  r.fd = sv[1];
  lua_settop(L, 0);
  r.peer = peer;
  r.peerlen = peerlen;
  r.c = lconn_new(L, X, sv[0], 0, (struct sockaddr *)&peer, peerlen);
  if (!r.event) {  /* all of it, then EOF */
    write_n(&r, r.n);
    shutdown(r.fd, SHUT_WR);
    r.shut = 1;
  }

  for (int ops = 0; ops < MAX_OPS && r.ip < r.nprog; ops++) {
    unsigned b = next(&r);
    struct fmt f[4];
    int k;
    switch (b % 8) {
      case 0: case 1: case 2:
        f[0].kind = (int)(b % 8);
        f[0].style = (int)(b >> 3);
        op_read(&r, f, 1, 0);
        break;
      case 3:
        f[0].kind = F_N;
        f[0].n = pick_size(next(&r));
        op_read(&r, f, 1, 0);
        break;
      case 4:
        op_recv(&r, 1 + pick_size(next(&r)));
        break;
      case 5:
        k = 1 + (int)(b >> 3) % 4;
        for (int j = 0; j < k; j++) f[j] = pick_fmt(&r);
        op_read(&r, f, k, 0);
        break;
      case 6:
        k = (int)(b >> 3) % 4;
        for (int j = 0; j < k; j++) f[j] = pick_fmt(&r);
        op_lines(&r, f, k);
        break;
      default:
        switch ((b >> 3) % 4) {
          case 0: op_read(&r, f, 0, 1); break;
          case 1: op_close(&r); break;
          case 2: op_address(&r); break;
          default: op_lines(&r, f, 0); break;
        }
    }
  }
  /* What "a" reads now is the rest, whatever came before. */
  {
    struct fmt a = {F_A, 0, 0};
    op_read(&r, &a, 1, 0);
    CHECK(r.closed || r.pos == r.n, "after 'a': pos %zu of %zu", r.pos, r.n);
  }
  lconn_abort(r.c);
  close(r.fd);
  lstate_close(X);
  X = NULL;
  L = NULL;
  return 0;
}
