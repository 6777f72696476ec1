/*
** lws.c -- the C half of luasrv.websocket, added to luasrv.ngxc: a whole
** client frame taken from a connection's input buffer (its header
** checked, its payload unmasked in place and checked as UTF-8 as each
** fragment comes), and a server frame written into its output buffer in
** one piece. The message logic (fragments, pings, the close handshake)
** stays in lua/luasrv/websocket.lua; wsframe.c has the byte rules. Each
** call crosses from Lua once: in Lua, the frames of a 64-byte echo cost
** more than the rest of the server.
*/
#include <errno.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lsrv.h"
#include "wsframe.h"

void lws_open (lua_State *L);


static int pushfail (lua_State *L, int rc) {
  luaL_pushfail(L);
  lua_pushstring(L, conn_strerror(rc));
  return 2;
}


/* {====================================================== recv */


/*
** The frame f, whole at the front of the input buffer after its h
** header bytes: unmasked in place, checked as UTF-8 when it is text
** (state: the message's so far), pushed and consumed. Pushes payload,
** opcode, fin, the new UTF-8 state; or false, 1007 and why.
*/
static int push_frame (lua_State *L, struct lconn *c, const struct wsframe *f,
                       size_t h, unsigned kind, unsigned state) {
  unsigned char *p = (unsigned char *)buf_head(&c->io.in) + h;
  size_t n = (size_t)f->len;
  wsframe_mask(p, n, f->key);
  if (f->opcode == WS_TEXT || (f->opcode == WS_CONT && kind == WS_TEXT)) {
    state = utf8_step(state, p, n);
    if (state == UTF8_REJECT || (f->fin && state != UTF8_ACCEPT)) {
      buf_consume(&c->io.in, h + n);
      lua_pushboolean(L, 0);
      lua_pushinteger(L, 1007);
      lua_pushliteral(L, "text not UTF-8");
      return 3;
    }
  }
  lua_pushlstring(L, (const char *)p, n);
  buf_consume(&c->io.in, h + n);
  c->io.scan = 0;
  lua_pushinteger(L, f->opcode);
  lua_pushboolean(L, f->fin);
  lua_pushinteger(L, state);
  return 4;
}


/* Argument i of ws_recv, an integer (checked on its first call). */
static lua_Integer intarg (lua_State *L, int i) {
  int isnum;
  lua_Integer v = lua_tointegerx(L, i, &isnum);
  return isnum ? v : luaL_checkinteger(L, i);
}


static int recv_k (lua_State *L, int status, lua_KContext ctx);

/*
** A wait's context holds recv_run's state, so that the continuation
** need not read its arguments again: got (bit 0), kind (bits 1-2), the
** UTF-8 state (bits 3-6), max (from bit 7: at most 2^56 - 1, more than
** any buffer holds).
*/
#define CTX_MAX ((UINT64_C(1) << 56) - 1)

static lua_KContext pack (int got, uint64_t max, unsigned kind,
                          unsigned state) {
  if (max > CTX_MAX) max = CTX_MAX;
  return (lua_KContext)(max << 7 | (uint64_t)state << 3 | kind << 1 |
                        (unsigned)got);
}


/*
** The loop of ws_recv: rc, the outcome of the wait so far; got, whether
** a byte came during the call. The timeout counts from the last byte
** that came, as for recv: a big frame that keeps coming is not cut.
*/
static int recv_run (lua_State *L, struct lconn *c, int rc, int got,
                     uint64_t max, unsigned kind, unsigned state) {
  if (c->io.flags & LC_CLOSED) rc = ERR_CLOSED;
  while (rc >= 0) {
    struct wsframe f;
    const char *why;
    size_t have = buf_len(&c->io.in), want;
    int h = wsframe_parse((const unsigned char *)buf_head(&c->io.in), have,
                          kind, max, &f, &why);
    if (h < 0) {
      lua_pushboolean(L, 0);
      lua_pushinteger(L, -h);
      lua_pushstring(L, why);
      return 3;
    }
    if (h > 0 && have - (size_t)h >= f.len)
      return push_frame(L, c, &f, (size_t)h, kind, state);
    want = h > 0 ? (size_t)h + (size_t)f.len - have : 14;
    if ((rc = conn_fill(&c->io, want)) > 0) {
      got = 1;
      c->deadline = -1;   /* a byte came: the wait starts again */
      continue;
    }
    if (rc == 0) {
      rc = ERR_CLOSED;
      break;
    }
    if (!conn_wants(rc)) break;
    if (have == 0) conn_release_in(&c->io);  /* idle: no read buffer */
    if ((rc = lconn_read_wait(c, rc)) < 0) break;
    rc = lconn_waitio(L, c, (unsigned)rc, pack(got, max, kind, state),
                      recv_k);  /* may yield */
  }
  pushfail(L, rc);
  lua_pushboolean(L, got);
  return 3;
}


/* Continuation of ws_recv; ctx: what recv_run waits with (unpacked). */
static int recv_k (lua_State *L, int status, lua_KContext ctx) {
  uint64_t v = (uint64_t)ctx;
  return recv_run(L, lconn_check(L), sched_result(L, status), (int)(v & 1),
                  v >> 7, (unsigned)(v >> 1) & 3, (unsigned)(v >> 3) & 15);
}


/*
** ws_recv(conn, max, kind, state): the next whole frame a client sent
** on conn, inside a message of type kind (0: none begun; 1 text or 2
** binary: its fragments go on) whose data frames may still carry max
** bytes, state the UTF-8 state of its text so far (0 at its start).
** Returns payload (unmasked), opcode, fin, the UTF-8 state after it; or
** false, the close code the connection must fail with (1002, 1007,
** 1009), why; or nil, "timeout", "closed" or the error, and whether a
** byte came meanwhile (the peer is alive). Waits as recv does.
*/
static int lws_recv (lua_State *L) {
  struct lconn *c = lconn_check(L);
  lua_Integer max = intarg(L, 2), kind = intarg(L, 3), state = intarg(L, 4);
  luaL_argcheck(L, max >= 0, 2, "must be >= 0");
  luaL_argcheck(L, kind >= 0 && kind <= 2, 3, "not a message type");
  luaL_argcheck(L, state >= 0 && state <= 8, 4, "not a UTF-8 state");
  if (c->io.flags & (LC_CLOSED | LC_DGRAM)) {
    luaL_argcheck(L, !(c->io.flags & LC_DGRAM), 1, "not a stream");
    return pushfail(L, ERR_CLOSED);
  }
  lua_settop(L, 4);
  lconn_start_op(c);
  return recv_run(L, c, 0, 0, (uint64_t)max, (unsigned)kind,
                  (unsigned)state);
}


/*
** ws_unread(conn, s): puts s back in front of conn's input (what the
** HTTP reader had read past the handshake). true, or nil and an error.
*/
static int lws_unread (lua_State *L) {
  struct lconn *c = lconn_check(L);
  size_t n, have;
  const char *s = luaL_checklstring(L, 2, &n);
  char *head;
  luaL_argcheck(L, !(c->io.flags & LC_DGRAM), 1, "not a stream");
  if (c->io.flags & LC_CLOSED) return pushfail(L, ERR_CLOSED);
  if (n > 0) {
    have = buf_len(&c->io.in);
    if (buf_reserve(&c->io.in, n, &c->x->pool) < 0)
      return pushfail(L, -ENOMEM);
    head = c->io.in.data + c->io.in.start;
    memmove(head + n, head, have);
    memcpy(head, s, n);
    c->io.in.end += n;
    c->io.scan = 0;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* }====================================================== */


/* {====================================================== send */

static int send_k (lua_State *L, int status, lua_KContext ctx);

static int send_run (lua_State *L, struct lconn *c, int rc) {
  if (c->io.flags & LC_CLOSED) rc = ERR_CLOSED;
  while (rc >= 0 && conn_wants(rc = conn_flush(&c->io)))
    rc = lconn_waitio(L, c, conn_want_event(rc), 0, send_k);
  if (rc < 0) return pushfail(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}


static int send_k (lua_State *L, int status, lua_KContext ctx) {
  (void)ctx;
  return send_run(L, lconn_check(L), sched_result(L, status));
}


/*
** ws_send(conn, opcode, payload [, fin]): one server frame (unmasked),
** its header and payload queued together, then sent before it returns
** (waiting as flush does). true, or nil and the error.
*/
static int lws_send (lua_State *L) {
  struct lconn *c = lconn_check(L);
  lua_Integer op = intarg(L, 2);
  size_t len, hn;
  const char *s = luaL_optlstring(L, 3, "", &len);
  int fin = lua_isnoneornil(L, 4) || lua_toboolean(L, 4);
  unsigned char head[WSFRAME_HEAD_MAX];
  struct buf *out = &c->io.out;
  luaL_argcheck(L, op >= 0 && op <= 15, 2, "not an opcode");
  if (c->io.flags & (LC_CLOSED | LC_DGRAM)) {
    luaL_argcheck(L, !(c->io.flags & LC_DGRAM), 1, "not a stream");
    return pushfail(L, ERR_CLOSED);
  }
  hn = wsframe_head(head, (unsigned)op, fin, len);
  if (buf_space(out) < hn + len && buf_reserve(out, hn + len, &c->x->pool) < 0)
    return pushfail(L, -ENOMEM);
  memcpy(buf_tail(out), head, hn);
  memcpy(buf_tail(out) + hn, s, len);
  out->end += hn + len;
  lconn_start_op(c);
  return send_run(L, c, 0);
}

/* }====================================================== */


/* utf8_valid(s): is s whole, valid UTF-8 (no surrogates, <= U+10FFFF)? */
static int lws_utf8_valid (lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_pushboolean(L, utf8_step(UTF8_ACCEPT, (const unsigned char *)s, n) ==
                     UTF8_ACCEPT);
  return 1;
}


static const luaL_Reg funcs[] = {
  {"ws_recv", lws_recv},
  {"ws_unread", lws_unread},
  {"ws_send", lws_send},
  {"utf8_valid", lws_utf8_valid},
  {NULL, NULL}
};


/* Adds the functions to the table on top of L (luasrv.ngxc's). */
void lws_open (lua_State *L) {
  luaL_setfuncs(L, funcs, 0);
}
