/*
** lngxsock.c -- ngx.socket.tcp's object in C: OpenResty's cosocket
** (connect, send, receive, receiveany, setkeepalive, settimeout(s),
** getreusedtimes, close) on a luasrv connection, and the join of a
** driver's request. luasrv.ngx (lua/luasrv/ngx.lua) adds the methods
** that are rare on a driver's path (sslhandshake, receiveuntil's
** iterator over scan below, setoption) and the argument formatting of
** send for what is not a string or an array of strings and integers.
**
** A driver calls four or five of these per command; as Lua wrappers over
** the connection's methods they cost about a third of an HTTP request
** that does one Redis GET (30k instructions of 77k). Here a method is one
** C call on the socket: reads are cut straight from the connection's
** input buffer (the socket keeps no buffer of its own), an array to send
** is copied straight into its output buffer, the timeouts are set on the
** connection as each operation starts, and connect takes an idle
** connection of its pool without making a URL or an options table. With
** them that request costs 51k instructions (nginx with its Lua module:
** 48k). A taken connection still gets a new connection object: keeping
** the objects of pooled connections for reuse saved nothing measurable
** (the collector's work only moved), so the pool stays as it is.
**
** The socket is a userdata whose user value holds the connection object
** while it is connected. Failures return nil, err as ngx does (lower
** case; reads add the bytes received so far, which are dropped); a
** timeout leaves the connection open, any other failure closes it.
** Misuse raises with ngx's messages.
*/
#include <ctype.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lsrv.h"

#define SOCK_MT "ngx.socket.tcp"
#define DEFAULT_POOL_SIZE 30
#define UV_CONN 1             /* user value: the connection, or nil */
#define KEYS_MAX 1024         /* hosts whose pool names are kept */

static const char sock_tag = 0;   /* tells a socket from other userdata */
static char format_key;           /* registry: luasrv.ngx's send formatter */
static char keys_key;             /* registry: pool names by host and port */

/* Read modes; a continuation's context is (count << 2) | mode. */
enum { R_LINE, R_COUNT, R_ANY, R_ALL };

struct sock {
  const char *tag;            /* &sock_tag */
  struct lconn *c;            /* NULL: not connected */
  double ct, st, rt;          /* connect, send, read timeouts (ms); 0:
                                 luasrv's --timeout */
  lua_Integer pool_size;      /* connect's pool_size; 0: not given */
  int req;                    /* ngx.req.socket(): the request itself */
};


static struct sock *sock_check (lua_State *L) {
  struct sock *s = lua_touserdata(L, 1);
  if (s != NULL && lua_rawlen(L, 1) == sizeof *s && s->tag == &sock_tag)
    return s;
  return luaL_checkudata(L, 1, SOCK_MT);
}


/* The socket (index 1) gets connection object idx. */
static void attach (lua_State *L, struct sock *s, int idx) {
  lua_pushvalue(L, idx);
  lua_setiuservalue(L, 1, UV_CONN);
  s->c = lua_touserdata(L, idx);
}


static void detach (lua_State *L, struct sock *s) {
  s->c = NULL;
  lua_pushnil(L);
  lua_setiuservalue(L, 1, UV_CONN);
}


/* The timeout of an operation on c: ms (0: the server's). */
static void apply (struct lconn *c, double ms) {
  c->timeout = ms > 0 ? ms / 1000 : -1;
  lconn_start_op(c);
}


/* Pushes rc's text as ngx words it: in lower case. */
static void push_err (lua_State *L, int rc) {
  char msg[128];
  const char *e = conn_strerror(rc);
  size_t i = 0;
  for (; e[i] != '\0' && i < sizeof msg - 1; i++)
    msg[i] = (char)tolower((unsigned char)e[i]);
  lua_pushlstring(L, msg, i);
}


/*
** An operation on c failed with rc: nil, err. A timeout leaves the
** connection open; anything else closes it and the socket lets it go
** (unless the socket was connected elsewhere meanwhile).
*/
static int fail (lua_State *L, struct sock *s, struct lconn *c, int rc) {
  luaL_pushfail(L);
  push_err(L, rc);
  if (rc != ERR_TIMEOUT) {
    lconn_abort(c);
    if (s->c == c) detach(L, s);
  }
  return 2;
}


/*
** A timeout argument as ngx reads it (lua_tonumber): a number, or a
** string of one; anything else is 0, the default, without an error.
*/
static double check_ms (lua_State *L, int arg, const char *fname) {
  int isnum;
  lua_Number ms = lua_tonumberx(L, arg, &isnum);
  if (!isnum) return 0;
  if (ms >= 2147483648.0)
    return luaL_error(L, "bad argument #%d to '%s' (bad timeout value)",
                      arg - 1, fname);
  return ms > 0 ? (double)ms : 0;
}


/* Pushes a socket, not connected, with the metatable at mt. */
static struct sock *push_sock (lua_State *L, int mt) {
  struct sock *s;
  mt = lua_absindex(L, mt);
  s = lua_newuserdatauv(L, sizeof *s, 1);
  memset(s, 0, sizeof *s);
  s->tag = &sock_tag;
  lua_pushvalue(L, mt);
  lua_setmetatable(L, -2);
  return s;
}


/* ngx.socket.tcp(): upvalue 1 is the metatable */
static int sock_new (lua_State *L) {
  push_sock(L, lua_upvalueindex(1));
  return 1;
}


static int sock_settimeout (lua_State *L) {
  struct sock *s = sock_check(L);
  s->ct = s->st = s->rt = check_ms(L, 2, "settimeout");
  return 0;
}


static int sock_settimeouts (lua_State *L) {
  struct sock *s = sock_check(L);
  s->ct = check_ms(L, 2, "settimeouts");
  s->st = check_ms(L, 3, "settimeouts");
  s->rt = check_ms(L, 4, "settimeouts");
  return 0;
}


/* {====================================================== connect */

/* v's decimal text, ending at end; returns where it starts. */
static char *int_text (lua_Integer v, char *end) {
  unsigned long long u = v < 0 ? 0ull - (unsigned long long)v
                               : (unsigned long long)v;
  do *--end = (char)('0' + u % 10); while ((u /= 10) != 0);
  if (v < 0) *--end = '-';
  return end;
}


/* Stack: sock, key, url, then luasrv.connect's results. */
static int connect_k (lua_State *L, int status, lua_KContext ctx) {
  struct sock *s = lua_touserdata(L, 1);
  (void)status;
  (void)ctx;
  if (lua_type(L, 4) != LUA_TUSERDATA) {
    const char *e = lua_tostring(L, 5);
    luaL_pushfail(L);
    if (e == NULL) lua_pushliteral(L, "closed");
    else {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      for (; *e != '\0'; e++) luaL_addchar(&b, (char)tolower((unsigned char)*e));
      luaL_pushresult(&b);
    }
    return 2;
  }
  if (s->c != NULL) lconn_abort(s->c);  /* connected meanwhile: as ngx */
  attach(L, s, 4);
  lua_pushinteger(L, 1);
  return 1;
}


/* Pushes a new table of pool names, the registry's from now on. */
static void new_keys (lua_State *L) {
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &keys_key);
}


/*
** Pushes the default pool name of host (index 2) and port, "HOST:PORT"
** (pd: the port's text), made once per address: keys[host][port] in the
** registry; keys[0] counts the hosts, forgotten all past KEYS_MAX.
*/
static void push_key (lua_State *L, lua_Integer port, const char *pd) {
  int keys, ports;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &keys_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    new_keys(L);
  }
  keys = lua_gettop(L);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, keys) != LUA_TTABLE) {
    lua_Integer n;
    lua_pop(L, 1);
    lua_rawgeti(L, keys, 0);
    n = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (n >= KEYS_MAX) {
      new_keys(L);
      lua_replace(L, keys);
      n = 0;
    }
    lua_pushinteger(L, n + 1);
    lua_rawseti(L, keys, 0);
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, keys);
  }
  ports = lua_gettop(L);
  if (lua_rawgeti(L, ports, port) != LUA_TSTRING) {
    lua_pop(L, 1);
    lua_pushvalue(L, 2);
    lua_pushliteral(L, ":");
    lua_pushstring(L, pd);
    lua_concat(L, 3);
    lua_pushvalue(L, -1);
    lua_rawseti(L, ports, port);
  }
  lua_replace(L, keys);
  lua_settop(L, keys);
}


/* A size argument n (a pool's): its integer part, at most COUNT_MAX; 0 if < 1. */
#define COUNT_MAX 1000000000

static lua_Integer to_count (lua_Number n) {
  if (!(n >= 1)) return 0;
  return n > COUNT_MAX ? COUNT_MAX : (lua_Integer)n;
}


/* The port argument (index 3) as ngx takes it: an integer 0..65535. */
static lua_Integer check_port (lua_State *L) {
  int isnum;
  lua_Number p = lua_tonumberx(L, 3, &isnum);
  if (!isnum || !(p >= 0 && p <= 65535) || p != (lua_Number)(lua_Integer)p)
    return luaL_error(L, "bad argument #2 to 'connect' (bad port number: %s)",
                      luaL_tolstring(L, 3, NULL));
  return (lua_Integer)p;
}


/* opts (index o): pool (pushed as the key, else nothing) and pool_size. */
static int read_opts (lua_State *L, struct sock *s, int o) {
  int key = 0;
  if (lua_isnoneornil(L, o)) return 0;
  if (!lua_istable(L, o))
    return luaL_error(L, "bad argument #3 to 'connect' (table expected, got %s)",
                      luaL_typename(L, o));
  if (lua_getfield(L, o, "pool_size") != LUA_TNIL) {
    int isnum;
    lua_Number n = lua_tonumberx(L, -1, &isnum);
    if (!isnum || to_count(n) < 1)
      return luaL_error(L, "bad argument #3 to 'connect' "
                        "(bad \"pool_size\" option value)");
    s->pool_size = to_count(n);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, o, "pool") != LUA_TNIL) {
    luaL_tolstring(L, -1, NULL);
    lua_remove(L, -2);
    key = 1;
  }
  else lua_pop(L, 1);
  return key;
}


/*
** sock:connect(host, port [, opts]) | sock:connect("unix:PATH" [, opts]):
** an idle connection of the pool (default name HOST:PORT or unix:PATH)
** when there is one, else luasrv.connect.
*/
static int sock_connect (lua_State *L) {
  struct sock *s = sock_check(L);
  size_t hl;
  const char *host;
  int unix_ = 0, haskey;
  lua_Integer port = 0;
  char digits[24], *pd = digits + sizeof digits - 1;
  if (lua_type(L, 2) != LUA_TSTRING)
    return luaL_error(L, "bad argument #1 to 'connect' (string expected, "
                      "got %s)", luaL_typename(L, 2));
  host = lua_tolstring(L, 2, &hl);
  if (hl > 5 && memcmp(host, "unix:", 5) == 0) {
    unix_ = 1;
    lua_settop(L, 3);
    lua_pushnil(L);
    lua_insert(L, 3);  /* sock, host, nil, opts */
  }
  else {
    lua_settop(L, 4);
    port = check_port(L);
    *pd = '\0';
    pd = int_text(port, pd);
  }
  haskey = read_opts(L, s, 4);  /* the pool name: 5 */
  if (!haskey) {
    if (unix_) lua_pushvalue(L, 2);
    else push_key(L, port, pd);
  }
  if (s->c != NULL) {  /* ngx closes the connection it had */
    lconn_abort(s->c);
    detach(L, s);
  }
  if (lconnect_pool_take(L, lsrv_ctx(L), 5)) {
    attach(L, s, -1);
    lua_pushinteger(L, 1);
    return 1;
  }
  /* a new connection: luasrv.connect(url, opts); stack: sock, key, url */
  if (unix_)
    lua_pushvalue(L, 2);  /* the path given is the url */
  else if (memchr(host, ':', hl) != NULL && host[0] != '[')
    lua_pushfstring(L, "tcp://[%s]:%s", host, pd);
  else
    lua_pushfstring(L, "tcp://%s:%s", host, pd);
  lua_replace(L, 3);
  lua_replace(L, 2);
  lua_settop(L, 3);
  lua_pushcfunction(L, luasrv_connect);
  lua_pushvalue(L, 3);
  lua_createtable(L, 0, 2);
  if (s->ct > 0) {
    lua_pushnumber(L, s->ct / 1000);
    lua_setfield(L, -2, "timeout");
  }
  lua_pushvalue(L, 2);
  lua_setfield(L, -2, "pool");
  lua_callk(L, 2, 2, 0, connect_k);
  return connect_k(L, LUA_OK, 0);
}

/* }====================================================== */


/* {====================================================== send */

/*
** join(t): the array t of strings and integers (a driver's request, such
** as resty.redis's) as one string, integers in decimal; nil when t holds
** anything else, which luasrv.ngx then formats as ngx does. One call for
** what was a type check per element in Lua, and table.concat's number
** formatting (snprintf) per integer. Up to JOIN_PIECES pieces are
** measured first and copied once (the strings stay in t meanwhile); more
** go through a luaL_Buffer.
*/
#define JOIN_PIECES 64
#define JOIN_DIGITS 21        /* an integer's decimal text, its sign too */

/* join of n pieces of t (at idx), any number: 1 (pushed) or 0 */
static int join_buffer (lua_State *L, int idx, lua_Integer n) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (lua_Integer i = 1; i <= n; i++) {
    int t = lua_rawgeti(L, idx, i);
    if (t == LUA_TSTRING)
      luaL_addvalue(&b);
    else if (t == LUA_TNUMBER && lua_isinteger(L, -1)) {
      char d[JOIN_DIGITS], *end = d + sizeof d, *p;
      p = int_text(lua_tointeger(L, -1), end);
      lua_pop(L, 1);
      luaL_addlstring(&b, p, (size_t)(end - p));
    }
    else
      return 0;
  }
  luaL_pushresult(&b);
  return 1;
}


/*
** The strings and integers of array idx, measured: pointers and lengths
** (an integer's text in digits), while the array keeps the strings. 1, or
** 0 when it holds anything else or more than JOIN_PIECES pieces.
*/
struct pieces {
  const char *p[JOIN_PIECES];
  size_t len[JOIN_PIECES], total;
  int n;
  char digits[JOIN_PIECES * JOIN_DIGITS];
};

static int measure (lua_State *L, int idx, struct pieces *ps) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  char *d = ps->digits;
  if (n > JOIN_PIECES) return 0;
  ps->n = (int)n;
  ps->total = 0;
  for (int i = 0; i < ps->n; i++) {
    int t = lua_rawgeti(L, idx, i + 1);
    if (t == LUA_TSTRING)
      ps->p[i] = lua_tolstring(L, -1, &ps->len[i]);  /* the array keeps it */
    else if (t == LUA_TNUMBER && lua_isinteger(L, -1)) {
      char *end = d + JOIN_DIGITS;
      ps->p[i] = int_text(lua_tointeger(L, -1), end);
      ps->len[i] = (size_t)(end - ps->p[i]);
      d = end;
    }
    else {
      lua_pop(L, 1);
      return 0;
    }
    lua_pop(L, 1);
    ps->total += ps->len[i];
  }
  return 1;
}

/* Copies the pieces to out (room for ps->total bytes). */
static void copy_pieces (const struct pieces *ps, char *out) {
  for (int i = 0; i < ps->n; i++) {
    memcpy(out, ps->p[i], ps->len[i]);
    out += ps->len[i];
  }
}


/* Pushes the join of table idx and returns 1, or returns 0 (pushes nothing). */
static int join (lua_State *L, int idx) {
  struct pieces ps;
  luaL_Buffer b;
  if ((lua_Integer)lua_rawlen(L, idx) > JOIN_PIECES) {
    int top = lua_gettop(L);
    if (join_buffer(L, idx, (lua_Integer)lua_rawlen(L, idx))) return 1;
    lua_settop(L, top);
    return 0;
  }
  if (!measure(L, idx, &ps)) return 0;  /* nothing: luasrv.ngx formats it */
  copy_pieces(&ps, luaL_buffinitsize(L, &b, ps.total));
  luaL_pushresultsize(&b, ps.total);
  return 1;
}


/* luasrv.ngxc.join(t) */
static int ngx_join (lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (!join(L, 1)) return 0;
  return 1;
}


/* Stack: sock, the bytes, conn. ctx: their length. */
static int send_k (lua_State *L, int status, lua_KContext ctx) {
  struct sock *s = lua_touserdata(L, 1);
  struct lconn *c = lua_touserdata(L, 3);
  int rc = sched_result(L, status);
  if (c->io.flags & LC_CLOSED) rc = ERR_CLOSED;
  while (rc >= 0 && conn_wants(rc = conn_flush(&c->io)))
    rc = lconn_waitio(L, c, conn_want_event(rc), ctx, send_k);
  if (rc < 0) return fail(L, s, c, rc);
  lua_pushinteger(L, (lua_Integer)ctx);
  return 1;
}


/*
** Appends the strings and integers of array idx (a driver's request) to
** c's output, their total length in *total: 1, or 0 with nothing appended
** when the array holds anything else (or more than JOIN_PIECES pieces),
** or -ENOMEM. No string is made of the whole: the pieces are measured,
** then copied once (the strings stay in the array meanwhile).
*/
static int append_join (lua_State *L, struct lconn *c, int idx,
                        size_t *total) {
  struct pieces ps;
  struct buf *out = &c->io.out;
  if (!measure(L, idx, &ps)) return 0;
  if (buf_space(out) < ps.total &&
      buf_reserve(out, ps.total, &c->x->pool) < 0)
    return -ENOMEM;
  copy_pieces(&ps, buf_tail(out));
  out->end += ps.total;
  *total = ps.total;
  return 1;
}


/* sock:send(data) -> bytes sent | nil, err */
static int sock_send (lua_State *L) {
  struct sock *s = sock_check(L);
  struct lconn *c = s->c;
  size_t len, sent;
  const char *p;
  lua_settop(L, 2);
  if (c != NULL && !(c->io.flags & LC_CLOSED) && lua_istable(L, 2)) {
    int rc = append_join(L, c, 2, &len);
    if (rc != 0) {
      lua_getiuservalue(L, 1, UV_CONN);
      if (rc < 0) return fail(L, s, c, rc);
      apply(c, s->st);
      return send_k(L, LUA_OK, (lua_KContext)len);
    }
  }
  if (lua_type(L, 2) != LUA_TSTRING &&
      !(lua_type(L, 2) == LUA_TTABLE && join(L, 2))) {
    /* numbers, booleans, ngx.null, nested tables: luasrv.ngx formats */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &format_key);
    lua_pushvalue(L, 2);
    lua_call(L, 1, 1);
  }
  if (lua_gettop(L) > 2) lua_replace(L, 2);
  if ((c = s->c) == NULL) {
    luaL_pushfail(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  lua_getiuservalue(L, 1, UV_CONN);
  if (c->io.flags & LC_CLOSED) return fail(L, s, c, ERR_CLOSED);
  p = lua_tolstring(L, 2, &len);
  apply(c, s->st);
  sent = conn_write_direct(&c->io, p, len);
  if (buf_append(&c->io.out, p + sent, len - sent, &c->x->pool) < 0)
    return fail(L, s, c, -ENOMEM);
  return send_k(L, LUA_OK, (lua_KContext)len);
}

/* }====================================================== */


/* {====================================================== receive */

/* Pushes n bytes from the front of c's input and drops them. */
static void push_front (lua_State *L, struct lconn *c, size_t n) {
  lua_pushlstring(L, buf_head(&c->io.in), n);
  buf_consume(&c->io.in, n);
  c->io.scan = 0;
}


/*
** Pushes what a read in mode (count n) returns when c's input holds it:
** 1, else 0. A line loses every \r, as in ngx.
*/
static int take (lua_State *L, struct lconn *c, int mode, size_t n) {
  struct buf *in = &c->io.in;
  const char *p = buf_head(in);
  size_t have = buf_len(in);
  long nl;
  switch (mode) {
    case R_COUNT:
      if (have < n) return 0;
      push_front(L, c, n);
      return 1;
    case R_ANY:
      if (have == 0) return 0;
      push_front(L, c, have < n ? have : n);
      return 1;
    case R_ALL:
      return 0;  /* at the end only */
    default:
      break;
  }
  if ((nl = buf_findnl(in, c->io.scan)) < 0) {
    c->io.scan = have;
    return 0;
  }
  n = (size_t)nl;
  if (n > 0 && p[n - 1] == '\r' && memchr(p, '\r', n - 1) == NULL)
    lua_pushlstring(L, p, n - 1);  /* the usual CRLF */
  else if (memchr(p, '\r', n) == NULL)
    lua_pushlstring(L, p, n);
  else {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i++)
      if (p[i] != '\r') luaL_addchar(&b, p[i]);
    luaL_pushresult(&b);
  }
  buf_consume(in, n + 1);
  c->io.scan = 0;
  return 1;
}


/* A read failed: nil, err, the bytes received so far (dropped). */
static int read_fail (lua_State *L, struct sock *s, struct lconn *c, int rc) {
  struct buf *in = &c->io.in;
  luaL_pushfail(L);
  push_err(L, rc);
  lua_pushlstring(L, buf_len(in) > 0 ? buf_head(in) : "", buf_len(in));
  if (buf_len(in) > 0) buf_consume(in, buf_len(in));
  c->io.scan = 0;
  if (rc != ERR_TIMEOUT) {
    lconn_abort(c);
    if (s->c == c) detach(L, s);
  }
  return 3;
}


/* Stack: sock, conn. ctx: (count << 2) | mode. */
static int receive_k (lua_State *L, int status, lua_KContext ctx) {
  struct sock *s = lua_touserdata(L, 1);
  struct lconn *c = lua_touserdata(L, 2);
  int mode = (int)(ctx & 3);
  size_t n = (size_t)ctx >> 2;
  int rc = sched_result(L, status);
  if (c->io.flags & LC_CLOSED) rc = ERR_CLOSED;
  while (rc >= 0) {
    size_t have = buf_len(&c->io.in);
    if (take(L, c, mode, n)) return 1;
    rc = conn_fill(&c->io, mode == R_COUNT && n > have ? n - have : 0);
    if (rc == 0) {  /* the end */
      if (mode != R_ALL) rc = ERR_CLOSED;
      else {
        push_front(L, c, buf_len(&c->io.in));
        return 1;
      }
    }
    else if (conn_wants(rc)) {
      if (buf_len(&c->io.in) == 0) conn_release_in(&c->io);
      if ((rc = lconn_read_wait(c, rc)) >= 0)
        rc = lconn_waitio(L, c, (unsigned)rc, ctx, receive_k);
    }
  }
  return read_fail(L, s, c, rc);
}


/* Starts a read in mode (count n) on s, connected; stack: sock. */
static int start_read (lua_State *L, struct sock *s, int mode, size_t n) {
  struct lconn *c = s->c;
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, UV_CONN);
  apply(c, s->rt);
  return receive_k(L, LUA_OK, (lua_KContext)((n << 2) | (size_t)mode));
}


static int closed (lua_State *L) {
  luaL_pushfail(L);
  lua_pushliteral(L, "closed");
  return 2;
}


static int bad_pattern (lua_State *L) {
  return luaL_error(L, "bad argument #1 to 'receive' (bad pattern argument: %s)",
                    luaL_tolstring(L, 2, NULL));
}


/* sock:receive([pattern | size]): "*l" (default), "*a" or a count */
static int sock_receive (lua_State *L) {
  struct sock *s = sock_check(L);
  int t = lua_type(L, 2);
  if (t == LUA_TNUMBER || (t == LUA_TSTRING && lua_isnumber(L, 2))) {
    lua_Number n = lua_tonumber(L, 2);
    if (n < 0)
      return luaL_error(L, "bad argument #1 to 'receive' (bad pattern argument)");
    if (s->c == NULL) return closed(L);
    if (n < 1) {  /* 0 bytes, as ngx floors the count */
      lua_pushliteral(L, "");
      return 1;
    }
    if (!(n <= (lua_Number)(SIZE_MAX >> 3))) return bad_pattern(L);
    return start_read(L, s, R_COUNT, (size_t)n);
  }
  if (t <= LUA_TNIL) {
    if (s->c == NULL) return closed(L);
    return start_read(L, s, R_LINE, 0);
  }
  if (t == LUA_TSTRING) {
    const char *p = lua_tostring(L, 2);
    if (p[0] == '*') p++;
    if (strcmp(p, "l") == 0 || strcmp(p, "a") == 0) {
      if (s->c == NULL) return closed(L);
      return start_read(L, s, p[0] == 'l' ? R_LINE : R_ALL, 0);
    }
  }
  return bad_pattern(L);
}


/* sock:receiveany(max): what is there, up to max bytes */
static int sock_receiveany (lua_State *L) {
  struct sock *s = sock_check(L);
  int isnum;
  lua_Number n = lua_tonumberx(L, 2, &isnum);
  if (!isnum || !(n >= 1))
    return luaL_error(L, "bad argument #1 to 'receiveany' (bad max argument)");
  if (s->c == NULL) return closed(L);
  if (!(n <= (lua_Number)(SIZE_MAX >> 3))) n = (lua_Number)(SIZE_MAX >> 3);
  return start_read(L, s, R_ANY, (size_t)n);
}


/*
** Stack: sock, conn, pattern, inclusive, size (0: none). What the next
** call of receiveuntil's iterator returns, but for the end of a sized
** read (the iterator keeps that): the bytes before the pattern (with it
** when inclusive) and true, or with a size, size bytes that cannot start
** the pattern and false. Waits for more input until one of them is there.
*/
static int scan_k (lua_State *L, int status, lua_KContext ctx) {
  struct sock *s = lua_touserdata(L, 1);
  struct lconn *c = lua_touserdata(L, 2);
  size_t plen, size = (size_t)lua_tointeger(L, 5);
  const char *pat = lua_tolstring(L, 3, &plen);
  int inclusive = lua_toboolean(L, 4);
  int rc = sched_result(L, status);
  if (c->io.flags & LC_CLOSED) rc = ERR_CLOSED;
  while (rc >= 0) {
    const char *p = buf_head(&c->io.in);
    size_t have = buf_len(&c->io.in);
    const char *hit = have > 0 ? memmem(p, have, pat, plen) : NULL;
    if (hit != NULL) {
      size_t off = (size_t)(hit - p);
      if (size > 0 && off > size) {
        push_front(L, c, size);
        lua_pushboolean(L, 0);
        return 2;
      }
      lua_pushlstring(L, p, inclusive ? off + plen : off);
      buf_consume(&c->io.in, off + plen);
      c->io.scan = 0;
      lua_pushboolean(L, 1);
      return 2;
    }
    if (size > 0 && have >= plen - 1 && have - (plen - 1) >= size) {
      push_front(L, c, size);  /* none of it can start the pattern */
      lua_pushboolean(L, 0);
      return 2;
    }
    rc = conn_fill(&c->io, 0);
    if (rc == 0) rc = ERR_CLOSED;
    else if (conn_wants(rc)) {
      if (have == 0) conn_release_in(&c->io);
      if ((rc = lconn_read_wait(c, rc)) >= 0)
        rc = lconn_waitio(L, c, (unsigned)rc, ctx, scan_k);
    }
  }
  return read_fail(L, s, c, rc);
}


/* luasrv.ngxc.scan(sock, pattern, inclusive, size) */
static int ngx_scan (lua_State *L) {
  struct sock *s = sock_check(L);
  luaL_optinteger(L, 4, 0);
  luaL_checkstring(L, 2);
  if (s->c == NULL) return closed(L);
  lua_settop(L, 4);
  lua_getiuservalue(L, 1, UV_CONN);
  lua_insert(L, 2);  /* sock, conn, pattern, inclusive, size */
  apply(s->c, s->rt);
  return scan_k(L, LUA_OK, 0);
}

/* }====================================================== */


/* {====================================================== keep-alive, close */

/* Stack: conn, idle, size. */
static int keepalive_k (lua_State *L, int status, lua_KContext ctx) {
  int rc = lconnect_keepalive_step(L, lua_touserdata(L, 1), status,
                                   keepalive_k);
  (void)ctx;
  if (rc < 0) {
    luaL_pushfail(L);
    if (rc == LCONNECT_ERR_UNREAD) lua_pushliteral(L, "unread data in buffer");
    else push_err(L, rc);
    return 2;
  }
  lua_pushinteger(L, 1);
  return 1;
}


/* sock:setkeepalive([timeout_ms [, size]]) -> 1 | nil, err */
static int sock_setkeepalive (lua_State *L) {
  struct sock *s = sock_check(L);
  double idle = 60;  /* the pool's default */
  lua_Integer size = s->pool_size > 0 ? s->pool_size : DEFAULT_POOL_SIZE;
  if (!lua_isnoneornil(L, 2)) idle = check_ms(L, 2, "setkeepalive") / 1000;
  if (s->c == NULL) return closed(L);
  if (s->req) {
    luaL_pushfail(L);
    lua_pushliteral(L, "not supported on the request's socket");
    return 2;
  }
  if (!lua_isnoneornil(L, 3)) {
    int isnum;
    lua_Number n = lua_tonumberx(L, 3, &isnum);
    size = isnum ? to_count(n) : 0;
    if (size < 1)
      return luaL_error(L, "bad argument #2 to 'setkeepalive' (bad pool size)");
  }
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, UV_CONN);
  detach(L, s);
  lua_replace(L, 1);
  lua_pushnumber(L, idle);
  lua_pushinteger(L, size);
  lconn_start_op(lua_touserdata(L, 1));  /* the flush's timeout starts now */
  return keepalive_k(L, LUA_OK, 0);
}


static int sock_getreusedtimes (lua_State *L) {
  struct sock *s = sock_check(L);
  if (s->c == NULL) return closed(L);
  lua_pushinteger(L, (lua_Integer)s->c->reused);
  return 1;
}


static int close_k (lua_State *L, int status, lua_KContext ctx) {
  (void)L;
  (void)status;
  (void)ctx;
  lua_pushinteger(L, 1);
  return 1;
}


/*
** sock:close(): at once, as ngx does; the request's own socket closes
** the request as req:close() does (its output is sent first).
*/
static int sock_close (lua_State *L) {
  struct sock *s = sock_check(L);
  struct lconn *c = s->c;
  if (c == NULL) return closed(L);
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, UV_CONN);
  detach(L, s);
  if (!s->req) {
    lconn_abort(c);
    lua_pushinteger(L, 1);
    return 1;
  }
  s->req = 0;
  lua_getfield(L, 2, "close");
  lua_insert(L, 2);
  lua_callk(L, 1, 0, 0, close_k);
  return close_k(L, LUA_OK, 0);
}


static int sock_tostring (lua_State *L) {
  struct sock *s = sock_check(L);
  if (s->c == NULL) {
    lua_pushliteral(L, "ngx.socket.tcp (closed)");
    return 1;
  }
  lua_getiuservalue(L, 1, UV_CONN);
  lua_pushfstring(L, "ngx.socket.tcp (%s)", luaL_tolstring(L, -1, NULL));
  return 1;
}

/* }====================================================== */


/* {====================================================== for luasrv.ngx */

/* state(sock) -> conn | false, connect timeout (ms) | false, is_req */
static int ngx_sock_state (lua_State *L) {
  struct sock *s = sock_check(L);
  if (s->c != NULL) lua_getiuservalue(L, 1, UV_CONN);
  else lua_pushboolean(L, 0);
  if (s->ct > 0) lua_pushnumber(L, s->ct);
  else lua_pushboolean(L, 0);
  lua_pushboolean(L, s->req);
  return 3;
}


/* drop(sock): the socket lets its connection go (closed by a failure) */
static int ngx_sock_drop (lua_State *L) {
  struct sock *s = sock_check(L);
  detach(L, s);
  return 0;
}


/* req_socket(req): a socket on the request itself (ngx.req.socket) */
static int ngx_req_socket (lua_State *L) {
  struct sock *s;
  lconn_check(L);
  lua_settop(L, 1);
  luaL_getmetatable(L, SOCK_MT);
  s = push_sock(L, -1);
  lua_remove(L, -2);
  lua_insert(L, 1);  /* sock, req */
  attach(L, s, 2);
  s->req = 1;
  lua_settop(L, 1);
  return 1;
}


/* sock_format(fn): send's formatter of what is not a string or a join */
static int ngx_sock_format (lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &format_key);
  return 0;
}

/* }====================================================== */


void lngxsock_open (lua_State *L) {
  static const luaL_Reg methods[] = {
    {"connect", sock_connect},
    {"send", sock_send},
    {"receive", sock_receive},
    {"receiveany", sock_receiveany},
    {"settimeout", sock_settimeout},
    {"settimeouts", sock_settimeouts},
    {"setkeepalive", sock_setkeepalive},
    {"getreusedtimes", sock_getreusedtimes},
    {"close", sock_close},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"join", ngx_join},
    {"scan", ngx_scan},
    {"sock_state", ngx_sock_state},
    {"sock_drop", ngx_sock_drop},
    {"sock_format", ngx_sock_format},
    {"req_socket", ngx_req_socket},
    {NULL, NULL}
  };
  luaL_setfuncs(L, funcs, 0);   /* into luasrv.ngxc, on top */
  if (luaL_newmetatable(L, SOCK_MT)) {
    lua_pushcfunction(L, sock_tostring);
    lua_setfield(L, -2, "__tostring");
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
  }
  lua_getfield(L, -1, "__index");
  lua_setfield(L, -3, "tcp_methods");  /* luasrv.ngx adds the rest */
  lua_pushcclosure(L, sock_new, 1);
  lua_setfield(L, -2, "tcp");
}
