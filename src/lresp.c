/*
** lresp.c -- require "luasrv.respc": the inner loop of luasrv.resp's
** serve, in C. command(req, argv, reply) queues the reply of the last
** command on the connection and reads the next command into argv, from
** what the connection buffered, waiting (yield or block, as any read)
** only when no whole command is there. The parsing is resp.c's; the
** dispatch, the encoders and the error replies stay Lua (resp.lua).
*/
#include <errno.h>

#include <lauxlib.h>
#include <lua.h>

#include "lsrv.h"
#include "resp.h"

int luaopen_luasrv_respc (lua_State *L);

#define OUT_HIGH 65536        /* replies queued before they must go out */
#define PROTOCOL "ERR Protocol error: "

/*
** A wait's context: CTX_FLUSH when replies were being sent. The array
** being read (its count n, -1 for none, and its next element i) is kept
** on the stack, above argv, across a wait: the elements read so far are
** in argv and gone from the input.
*/
#define CTX_FLUSH 1


/* The request at argument 1 (lconn.c's tolconn: the tag, then the name). */
static struct lconn *checkconn (lua_State *L) {
  struct lconn *c = lua_touserdata(L, 1);
  if (c != NULL && lua_rawlen(L, 1) >= LCONN_SIZE(0) &&
      c->tag == &lsrv_conn_tag)
    return c;
  return luaL_checkudata(L, 1, LCONN_MT);
}


struct words {
  lua_State *L;
  lua_Integer n;
};

/* resp_inline's callback: the next word into argv (argument 2). */
static void add_word (void *ud, const char *p, size_t n) {
  struct words *w = ud;
  lua_pushlstring(w->L, p, n);
  lua_rawseti(w->L, 2, ++w->n);
}


/* Clears argv[n + 1 ..] (left by a longer command); returns n. */
static int done (lua_State *L, long n) {
  for (lua_Integer k = n + 1; lua_rawgeti(L, 2, k) != LUA_TNIL; k++) {
    lua_pop(L, 1);
    lua_pushnil(L);
    lua_rawseti(L, 2, k);
  }
  lua_pop(L, 1);
  lua_pushinteger(L, n);
  return 1;
}


static int fail (lua_State *L, const char *msg) {
  luaL_pushfail(L);
  lua_pushstring(L, msg);
  return 2;
}


static int refuse (lua_State *L, int err, char found) {
  luaL_pushfail(L);
  if (err == RESP_E_DOLLAR)
    lua_pushfstring(L, PROTOCOL "expected '$', got '%c'", found);
  else
    lua_pushfstring(L, PROTOCOL "%s", resp_strerror(err));
  return 2;
}


/*
** Parses what c buffered: returns n >= 1 (a command's n words are in
** argv), 0 (more input needed: *need bytes in all, when known), or -1
** (refused: *err, *found). *n and *i carry an array across calls.
*/
static int parse (lua_State *L, struct lconn *c, long *n, long *i,
                  size_t *need, int *err, char *found) {
  struct buf *in = &c->io.in;
  *need = 0;
  for (;;) {
    char *p = in->data + in->start;
    size_t len = buf_len(in);
    long r;
    if (len == 0) return 0;
    if (*n < 0) {  /* a new command */
      if (p[0] == '*') {
        r = resp_array(p, len, n, err);
        if (r <= 0) return (int)r;
        buf_consume(in, (size_t)r);
        if (*n == 0) *n = -1;  /* "*0": nothing, no reply */
        else *i = 1;
        continue;
      }
      struct words w = {L, 0};
      long nw = 0;
      r = resp_inline(p, len, c->x->w->cfg->max_line, add_word, &w, &nw, err);
      if (r <= 0) return (int)r;
      buf_consume(in, (size_t)r);
      if (nw > 0) return (int)(*n = nw);
      continue;  /* an empty line */
    }
    while (*i <= *n) {
      size_t off, dlen;
      p = in->data + in->start;
      len = buf_len(in);
      r = resp_bulk(p, len, &off, &dlen, need, err);
      if (r <= 0) {
        if (r < 0) *found = p[0];
        return (int)r;
      }
      lua_pushlstring(L, p + off, dlen);
      lua_rawseti(L, 2, *i);
      buf_consume(in, (size_t)r);
      (*i)++;
    }
    return 1;
  }
}


static int command_k (lua_State *L, int status, lua_KContext ctx);

/* Waits for ev with the array in progress kept (see CTX_FLUSH). */
static int wait_more (lua_State *L, struct lconn *c, unsigned ev, long n,
                      long i, lua_KContext ctx) {
  int rc;
  lua_settop(L, 2);
  lua_pushinteger(L, n);
  lua_pushinteger(L, i);
  rc = lconn_waitio(L, c, ev, ctx, command_k);  /* a yield goes to k */
  lua_settop(L, 2);
  return rc;
}


/*
** The loop of command: queued replies out when there are many, then the
** next command, or a wait for input (replies go out first, as before
** any read that waits).
*/
static int command_run (lua_State *L, struct lconn *c, int rc, int flush,
                        long n, long i) {
  if (c->io.flags & LC_CLOSED) rc = ERR_CLOSED;
  if (flush) {
    while (rc >= 0 && conn_wants(rc = conn_flush(&c->io)))
      rc = wait_more(L, c, conn_want_event(rc), n, i, CTX_FLUSH);
  }
  while (rc >= 0) {
    size_t need;
    int err = 0, k;
    char found = 0;
    k = parse(L, c, &n, &i, &need, &err, &found);
    c->io.scan = 0;  /* input consumed: read_line searches afresh */
    if (k > 0) return done(L, n);
    if (k < 0) return refuse(L, err, found);
    size_t have = buf_len(&c->io.in);
    if ((rc = conn_fill(&c->io, need > have ? need - have : 0)) > 0) continue;
    if (rc == 0) {  /* EOF: between commands the end, else a cut */
      if (n < 0 && buf_len(&c->io.in) == 0) {
        luaL_pushfail(L);
        return 1;
      }
      return fail(L, conn_strerror(ERR_CLOSED));
    }
    if (!conn_wants(rc)) break;
    if (buf_len(&c->io.in) == 0) conn_release_in(&c->io);
    if (buf_len(&c->io.out) > 0) {  /* the replies before the wait */
      int frc = conn_flush(&c->io);
      if (conn_wants(frc)) rc = frc;
      else if (frc < 0) { rc = frc; break; }
    }
    rc = wait_more(L, c, conn_want_event(rc), n, i, 0);
  }
  return fail(L, conn_strerror(rc));
}


static int command_k (lua_State *L, int status, lua_KContext ctx) {
  long n = (long)lua_tointeger(L, 3), i = (long)lua_tointeger(L, 4);
  lua_settop(L, 2);
  return command_run(L, lua_touserdata(L, 1), sched_result(L, status),
                     (int)(ctx & CTX_FLUSH), n, i);
}


/* Queues the reply s on c (as req:write, without its flush). */
static int queue (struct lconn *c, const char *s, size_t len) {
  size_t sent = 0;
  if (!(c->io.flags & (LC_DGRAM | LC_UDP)))
    sent = conn_write_direct(&c->io, s, len);
  return buf_append(&c->io.out, s + sent, len - sent, &c->x->pool);
}


/*
** command(req, argv, reply): queues reply (the bytes of the previous
** command's reply; false before the first command) and reads the next
** command's words into argv[1 .. n] (a longer command's leftovers
** cleared). Returns n >= 1; nil at EOF
** before a command starts; nil, err on a failure ("closed", "timeout",
** ...) or a protocol error ("ERR Protocol error: ...", to be answered).
*/
static int resp_command (lua_State *L) {
  struct lconn *c = checkconn(L);
  int flush = 0;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (c->io.flags & LC_CLOSED) return fail(L, conn_strerror(ERR_CLOSED));
  if (lua_type(L, 3) != LUA_TBOOLEAN || lua_toboolean(L, 3)) {
    size_t len;
    const char *s;
    if (lua_type(L, 3) != LUA_TSTRING)
      return luaL_error(L, "resp.serve: dispatch returned %s, not a string",
                        luaL_typename(L, 3));
    s = lua_tolstring(L, 3, &len);
    if (queue(c, s, len) < 0) return fail(L, conn_strerror(-ENOMEM));
    if (buf_len(&c->io.out) >= OUT_HIGH && !(c->io.flags & (LC_DGRAM | LC_UDP)))
      flush = 1;
  }
  lua_settop(L, 2);
  c->deadline = -1;  /* an operation starts (lconn.c's start_op) */
  c->io.flags &= ~LC_BLOCKRD;
  return command_run(L, c, 0, flush, -1, 0);
}


static const luaL_Reg funcs[] = {
  {"command", resp_command},
  {NULL, NULL}
};


int luaopen_luasrv_respc (lua_State *L) {
  luaL_newlib(L, funcs);
  lua_pushinteger(L, RESP_MAX_ARGS);
  lua_setfield(L, -2, "MAX_ARGS");
  lua_pushinteger(L, RESP_MAX_BULK);
  lua_setfield(L, -2, "MAX_BULK");
  return 1;
}
