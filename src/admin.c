/*
** admin.c -- the worker's side of the console. The master passes each
** "connections" or "eval" request with the ctl client's descriptor over
** a SOCK_SEQPACKET pair made at fork (struct worker's admin_fd); the
** skeleton's loop (model.c) reads it between requests, so a blocking
** model's worker busy with a request answers when that request ends.
** Answers go straight to the client, at most ADMIN_MAX bytes, under a
** send timeout: a stuck client never holds the worker.
**
** eval runs its chunk as a detached light thread (lspawn_detached), as a
** timer runs: a task of its own in the event model, which may sleep,
** connect and use the shared dictionaries; elsewhere run to its end at
** once. Whoever can open the --admin socket can run code here.
*/
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "address.h"
#include "admin.h"
#include "evloop.h"
#include "log.h"
#include "lsrv.h"
#include "model.h"

#define ADMIN_MAX 65536       /* bytes of an answer at most */
#define ADMIN_REQ 8192        /* bytes of a request at most */
#define EVAL_LIMIT 5          /* seconds an eval may run (ctl waits 10) */
#define EVAL_COUNT 10000      /* instructions between looks at the clock */

struct admin_out {
  char buf[ADMIN_MAX];
  size_t len;
  int n;                      /* connections listed */
  int cut;                    /* some did not fit */
  double now;
  struct worker *w;
};


static void reply (int fd, const char *s, size_t len) {
  struct timeval tv = {2, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  while (len > 0) {
    ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
    if (n <= 0) break;
    s += n;
    len -= (size_t)n;
  }
  close(fd);
}


static void outf (struct admin_out *o, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));

static void outf (struct admin_out *o, const char *fmt, ...) {
  va_list ap;
  int k;
  if (o->cut) return;
  va_start(ap, fmt);
  k = vsnprintf(o->buf + o->len, sizeof o->buf - o->len, fmt, ap);
  va_end(ap);
  if (k < 0 || (size_t)k >= sizeof o->buf - o->len - 64) {
    o->buf[o->len] = '\0';
    o->cut = 1;
    return;
  }
  o->len += (size_t)k;
}


void admin_conn (struct admin_out *o, const struct lconn *c,
                 const char *waits) {
  char peer[ADDRESS_STRLEN];
  const char *ls = c->lindex >= 0 && c->lindex < o->w->nls ?
                   o->w->ls[c->lindex].name : "-";
  address_format_peer((const struct sockaddr *)&c->peer, c->peerlen, peer,
                      sizeof peer);
  outf(o, "%-28s %-28s %8.1f %10llu %10llu %s\n", peer[0] ? peer : "-", ls,
       o->now - c->born, __atomic_load_n(&c->io.nin, __ATOMIC_RELAXED),
       __atomic_load_n(&c->io.nout, __ATOMIC_RELAXED), waits);
  if (!o->cut) o->n++;
}


static void connections (struct mloop *ml, int fd) {
  static struct admin_out o;
  o.len = 0;
  o.n = o.cut = 0;
  o.now = monotonic_now();
  o.w = ml->w;
  outf(&o, "%-28s %-28s %8s %10s %10s %s\n", "CLIENT", "LISTENER", "AGE",
       "IN", "OUT", "WAITS");
  if (ml->conns != NULL) ml->conns(ml, &o);
  if (o.cut) outf(&o, "(more not shown)\n");
  o.cut = 0;
  outf(&o, "worker %d (pid %d, %s): %d connection%s%s\n", ml->w->id,
       (int)getpid(), model_name(ml->w->cfg->model), o.n, o.n == 1 ? "" : "s",
       ml->note != NULL ? ml->note(ml) : "");
  reply(fd, o.buf, o.len);
}


/* {====================================================== eval */

static const char EVAL_BODY[] =
  "local code, answer, traceback, arm = ...\n"
  "local fn, err = load(code, '=eval', 't')\n"
  "if not fn then return answer(false, err) end\n"
  "arm(true)\n"
  "local r = table.pack(xpcall(fn, traceback))\n"
  "arm(false)\n"
  "if not r[1] then return answer(false, r[2]) end\n"
  "local out = {}\n"
  "for i = 2, r.n do out[#out + 1] = tostring(r[i]) end\n"
  "return answer(true, table.concat(out, '\\t'))\n";


static int traceback (lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) msg = luaL_tolstring(L, 1, NULL);
  const char *tb, *wrapper;
  luaL_traceback(L, L, msg, 1);
  tb = lua_tostring(L, -1);  /* the console's own frames end it: cut them */
  if ((wrapper = strstr(tb, "\n\t[C]: in function 'xpcall'")) != NULL)
    lua_pushlstring(L, tb, (size_t)(wrapper - tb));
  return 1;
}


/* The chunk's coroutine has run past EVAL_LIMIT: stop it. */
static void overrun (lua_State *L, lua_Debug *ar) {
  double until;
  (void)ar;
  lua_rawgetp(L, LUA_REGISTRYINDEX, (void *)L);
  until = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (until > 0 && monotonic_now() > until)
    luaL_error(L, "eval stopped: it ran past %d s", EVAL_LIMIT);
}


/*
** arm(on): from now on, the chunk stops with an error once EVAL_LIMIT
** seconds have passed (checked every EVAL_COUNT instructions), so that
** a runaway eval gives its worker back; arm(false) ends that.
*/
static int arm (lua_State *L) {
  int on = lua_toboolean(L, 1);
  if (on) lua_pushnumber(L, monotonic_now() + EVAL_LIMIT);
  else lua_pushnil(L);
  lua_rawsetp(L, LUA_REGISTRYINDEX, (void *)L);
  lua_sethook(L, on ? overrun : NULL, on ? LUA_MASKCOUNT : 0, EVAL_COUNT);
  return 0;
}


/* answer(ok, text): sends the result to the client (once). */
static int answer (lua_State *L) {
  int fd = (int)lua_tointeger(L, lua_upvalueindex(1));
  int ok = lua_toboolean(L, 1);
  size_t len;
  const char *s = luaL_tolstring(L, 2, &len);
  luaL_Buffer b;
  if (fd < 0) return 0;
  lua_pushinteger(L, -1);
  lua_replace(L, lua_upvalueindex(1));
  luaL_buffinit(L, &b);
  if (!ok) luaL_addstring(&b, "error: ");
  if (len > ADMIN_MAX - 64) {
    luaL_addlstring(&b, s, ADMIN_MAX - 64);
    luaL_addstring(&b, "\n(cut at 64 KiB)");
  }
  else luaL_addlstring(&b, s, len);
  luaL_addchar(&b, '\n');
  luaL_pushresult(&b);
  s = lua_tolstring(L, -1, &len);
  reply(fd, s, len);
  return 0;
}


void admin_eval (struct lctx *x, int fd, const char *code) {
  lua_State *L = lsrv_L(x);
  if (luaL_loadbuffer(L, EVAL_BODY, sizeof EVAL_BODY - 1, "=console") !=
      LUA_OK) {
    lua_pop(L, 1);
    reply(fd, "error: out of memory\n", 21);
    return;
  }
  lua_pushstring(L, code);
  lua_pushinteger(L, fd);
  lua_pushcclosure(L, answer, 1);
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, arm);
  if (lspawn_detached(L, 4) < 0)
    reply(fd, "error: out of memory\n", 21);
}


static void eval (struct mloop *ml, int fd, const char *code) {
  if (ml->eval != NULL) ml->eval(ml, fd, code);
  else if (ml->x != NULL) admin_eval(ml->x, fd, code);
  else reply(fd, "error: this worker has no state for eval\n", 41);
}


void admin_reply (int fd, const char *text) {
  reply(fd, text, strlen(text));
}

/* }====================================================== */


/* Receives one request and the client's descriptor; -1: none. */
static int receive (int afd, char *req, size_t cap, int *cfd) {
  char cbuf[CMSG_SPACE(sizeof(int))];
  struct iovec iov = {req, cap - 1};
  struct msghdr mh = {0};
  struct cmsghdr *cm;
  ssize_t n;
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = cbuf;
  mh.msg_controllen = sizeof cbuf;
  *cfd = -1;
  if ((n = recvmsg(afd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC)) <= 0)
    return (int)n;
  req[n] = '\0';
  cm = CMSG_FIRSTHDR(&mh);
  if (cm != NULL && cm->cmsg_level == SOL_SOCKET &&
      cm->cmsg_type == SCM_RIGHTS)
    memcpy(cfd, CMSG_DATA(cm), sizeof *cfd);
  return *cfd >= 0 ? 1 : -1;
}


static char req[ADMIN_REQ];   /* the worker's one thread reads requests */
static int held_fd = -1;      /* the client of a held eval */


/* The master is gone: the channel leaves the loop. */
static void gone (struct mloop *ml) {
  evloop_del(ml->loop, ml->w->admin_fd);
  close(ml->w->admin_fd);
  ml->w->admin_fd = -1;
}


static void blocked_hook (struct worker *w, const char *waits) {
  struct mloop *ml = w->admin_ud;
  int cfd, rc = receive(w->admin_fd, req, sizeof req, &cfd);
  if (rc == 0 && cfd < 0) gone(ml);
  if (rc <= 0) return;
  if (strcmp(req, "connections") == 0) {
    ml->blocked = waits;
    connections(ml, cfd);
    ml->blocked = NULL;
  }
  else if (strncmp(req, "eval ", 5) == 0) {  /* after the request */
    memmove(req, req + 5, strlen(req + 5) + 1);
    held_fd = cfd;
    w->admin_held = 1;
  }
  else reply(cfd, "error: unknown worker request\n", 30);
}


void admin_watch_blocking (struct mloop *ml) {
  ml->w->admin_ud = ml;
  ml->w->admin_hook = blocked_hook;
}


void admin_pending (struct mloop *ml) {
  if (!ml->w->admin_held) return;
  ml->w->admin_held = 0;
  eval(ml, held_fd, req);
  held_fd = -1;
}


void admin_request (struct mloop *ml) {
  int cfd, rc;
  admin_pending(ml);
  rc = receive(ml->w->admin_fd, req, sizeof req, &cfd);
  if (rc == 0 && cfd < 0) gone(ml);
  if (rc <= 0) return;
  if (strcmp(req, "connections") == 0) connections(ml, cfd);
  else if (strncmp(req, "eval ", 5) == 0) eval(ml, cfd, req + 5);
  else reply(cfd, "error: unknown worker request\n", 30);
}
