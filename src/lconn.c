/*
** lconn.c -- the request object ("luasrv.conn"), modelled on liolib's file
** handles: read formats, lines, recv, buffered write, flush, close,
** settimeout. Every method is written once for every model: an operation
** that would block goes through waitio() to sched_wait, which either
** blocks the thread or yields to the model's loop, and the continuation
** simply retries. Failures return nil, msg; only misuse raises.
*/
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "address.h"
#include "lsrv.h"
#include "log.h"

#define WRITE_HIGH   65536    /* flush when this much is buffered */
/*
** User values. A stream request has one, a datagram two; the fields
** table is made when first needed, and also caches client_address
** (under a light userdata key, which handler code cannot name): an idle
** connection should cost as little as possible.
*/
#define UV_FIELDS 1           /* fields table, or nil */
#define UV_DATA 2             /* datagram string */
#define ADDRESS_KEY ((void *)&lsrv_conn_tag)

char lsrv_conn_tag;
static char methods_key;  /* the registry holds the methods table here */



static int pushfail (lua_State *L, int rc) {
  luaL_pushfail(L);
  lua_pushstring(L, conn_strerror(rc));
  return 2;
}


static double conn_timeout (struct lconn *c) {
  return c->timeout >= 0 ? c->timeout : c->x->w->cfg->timeout;
}


/* The deadline of the operation in progress, 0 for none. */
static double deadline_of (struct lconn *c) {
  if (c->deadline < 0) {
    double t = conn_timeout(c);
    c->deadline = t > 0 ? monotonic_now() + t : 0;
  }
  return c->deadline;
}


/*
** Waits for c to be ready for ev, until the operation's deadline: the
** scheduler yields (the loop resumes the task into k, which reads the
** outcome with sched_result) or blocks and returns the outcome.
*/
static int waitio (lua_State *L, struct lconn *c, unsigned ev,
                   lua_KContext kc, lua_KFunction k) {
  return sched_wait(L, c, ev, deadline_of(c), kc, k);
}


/*
** The thread model's blocking wait for input (its sched_ops block): a
** handler thread waiting for input sleeps in the read itself (blocking
** socket, SO_RCVTIMEO) instead of poll + read, which saves a syscall per
** message. Only for an accepted stream whose timeout is the server's:
** SO_RCVTIMEO (set once) then ends the read no later than BLOCK_SLACK
** after the operation's deadline. A stop interrupts the read (the model
** signals its running threads: EINTR, since a timeout is set), and the
** wait then polls as before, up to the cut.
*/
#define BLOCK_SLACK 0.01
#define BLOCK_NOTIMEOUT 3600  /* --timeout 0: SO_RCVTIMEO so that EINTR */

int lconn_block_read (struct lconn *c) {
  const struct config *cfg = c->x->w->cfg;
  double d, t = cfg->timeout > 0 ? cfg->timeout : BLOCK_NOTIMEOUT;
  if (c->io.tr != &conn_stream || c->timeout >= 0 ||
      (c->io.flags & (LC_EOF | LC_CLOSED)) || worker_stopping(c->x->w))
    return 0;  /* not an accepted stream (a lookup waits on an eventfd) */
  if ((d = deadline_of(c)) > 0 && d < monotonic_now() + t - BLOCK_SLACK)
    return 0;  /* a later wait of the operation: poll for the rest */
  if (!(c->io.flags & LC_BLOCKING)) {
    struct timeval tv;
    int fl = fcntl(c->io.fd, F_GETFL);
    tv.tv_sec = (time_t)t;
    tv.tv_usec = (suseconds_t)((t - (double)tv.tv_sec) * 1e6);
    if (fl < 0 ||
        setsockopt(c->io.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
        fcntl(c->io.fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
      return 0;
    c->io.flags |= LC_BLOCKING;
  }
  c->io.flags |= LC_BLOCKRD | LC_READABLE;
  return 1;
}


int lconn_waitio (lua_State *L, struct lconn *c, unsigned ev,
                  lua_KContext kc, lua_KFunction k) {
  return waitio(L, c, ev, kc, k);
}


/* Gives the descriptor back; the object stays, closed. */
static void close_fd (struct lconn *c) {
  if (c->io.flags & LC_CLOSED) return;
  if (c->io.fd >= 0 && !(c->io.flags & LC_DGRAM)) sched_detach(c);
  conn_close(&c->io);
}


void lconn_abort (struct lconn *c) {
  close_fd(c);
}


/* {====================================================== reading */

/* Pushes n bytes from the front of c->io.in and drops them. */
static void push_bytes (lua_State *L, struct lconn *c, size_t n) {
  lua_pushlstring(L, buf_head(&c->io.in), n);
  buf_consume(&c->io.in, n);
  c->io.scan = 0;
}


/*
** One read format. Returns 1 (a value pushed), 0 (EOF: nothing pushed),
** CONN_WANT_* (wait, then again), or a failure code.
*/
static int read_line (lua_State *L, struct lconn *c, int keep) {
  size_t max = c->x->w->cfg->max_line;
  for (;;) {
    long nl = buf_findnl(&c->io.in, c->io.scan);
    int rc;
    if (nl >= 0) {
      if ((size_t)nl > max) return ERR_LINE;
      lua_pushlstring(L, buf_head(&c->io.in), (size_t)nl + (keep ? 1 : 0));
      buf_consume(&c->io.in, (size_t)nl + 1);
      c->io.scan = 0;
      return 1;
    }
    c->io.scan = buf_len(&c->io.in);
    if (c->io.scan > max) return ERR_LINE;
    if ((rc = conn_fill(&c->io, 0)) < 0) return rc;
    if (rc == 0) {  /* EOF: the last line may lack its newline */
      if (buf_len(&c->io.in) == 0) return 0;
      push_bytes(L, c, buf_len(&c->io.in));
      return 1;
    }
  }
}


static int read_all (lua_State *L, struct lconn *c) {
  int rc;
  while ((rc = conn_fill(&c->io, buf_len(&c->io.in))) > 0)
    ;
  if (rc < 0) return rc;
  push_bytes(L, c, buf_len(&c->io.in));  /* "" at EOF, never nil */
  return 1;
}


static int read_count (lua_State *L, struct lconn *c, size_t n) {
  int rc = 1;
  while (buf_len(&c->io.in) < (n ? n : 1) && (rc = conn_fill(&c->io, n - buf_len(&c->io.in))) > 0)
    ;
  if (rc < 0) return rc;
  if (buf_len(&c->io.in) == 0) return 0;  /* EOF */
  push_bytes(L, c, n < buf_len(&c->io.in) ? n : buf_len(&c->io.in));
  return 1;
}


static int read_one (lua_State *L, struct lconn *c, int arg) {
  if (lua_type(L, arg) == LUA_TNUMBER)
    return read_count(L, c, (size_t)lua_tointeger(L, arg));
  const char *p = lua_tostring(L, arg);
  if (*p == '*') p++;  /* accept Lua 5.1's "*l" */
  switch (*p) {
    case 'l': return read_line(L, c, 0);
    case 'L': return read_line(L, c, 1);
    default: return read_all(L, c);  /* 'a', checked before */
  }
}


static void check_formats (lua_State *L, int first, int last) {
  for (int i = first; i <= last; i++) {
    if (lua_type(L, i) == LUA_TNUMBER) {
      luaL_argcheck(L, lua_isinteger(L, i) && lua_tointeger(L, i) >= 0, i,
                    "invalid format");
      continue;
    }
    const char *p = luaL_checkstring(L, i);
    if (*p == '*') p++;
    luaL_argcheck(L, (*p == 'l' || *p == 'L' || *p == 'a') && p[1] == '\0',
                  i, "invalid format");
  }
}


/*
** What to wait for after a read that could not go on (rc: CONN_WANT_*):
** pending output goes out first, so the event is EV_WRITE while output
** is stuck, or what the transport wants. Returns it, or a failure.
*/
static int read_wait_event (struct lconn *c, int rc) {
  if (buf_len(&c->io.out) > 0) {
    int frc = conn_flush(&c->io);
    if (conn_wants(frc)) return (int)conn_want_event(frc);
    if (frc < 0) return frc;
  }
  return (int)conn_want_event(rc);
}


/* In read_k's context: called by a lines iterator, which raises errors. */
#define READ_LINES 0x10000

/*
** Continuation of read: ctx is the argument index of the next format
** (plus READ_LINES); the values already read are on the stack above the
** formats.
*/
static int read_k (lua_State *L, int status, lua_KContext ctx);

/*
** A lines loop that fails before a byte of the next line came: the
** client stayed idle past its timeout or went away. That is how most
** connections end, not a handler error: the loop ends (returns 1) and
** one info line says why. A partial line or a line too long still
** raise; req:read returns every failure.
*/
static int lines_idle_end (struct lconn *c, int rc) {
  char peer[ADDRESS_STRLEN];
  const char *why;
  if (buf_len(&c->io.in) > 0) return 0;
  if (rc == ERR_TIMEOUT) why = "idle past its timeout";
  else if (rc == ERR_CLOSED && !(c->io.flags & LC_CLOSED))  /* conn_errno */
    why = "reset by the client";
  else if (rc == ERR_CUT) why = "idle when the shutdown grace ended";
  else return 0;
  if (log_enabled(LOG_INFO)) {
    address_format_peer((struct sockaddr *)&c->peer, c->peerlen, peer,
                        sizeof peer);
    log_info("connection from %s ended: %s", peer, why);
  }
  return 1;
}

static int read_run (lua_State *L, struct lconn *c, int rc,
                     lua_KContext ctx) {
  int lines = (int)(ctx & READ_LINES);
  int i = (int)(ctx & ~(lua_KContext)READ_LINES);
  int nfmt = lua_gettop(L) - (i - 2) - 1;  /* formats are args 2..nfmt+1 */
  if (c->io.flags & LC_CLOSED) rc = ERR_CLOSED;
  while (rc >= 0 && i <= nfmt + 1) {
    rc = read_one(L, c, i);
    if (rc == 1) {
      i++;
      continue;
    }
    if (rc == 0) {  /* EOF: nil for this format, stop */
      luaL_pushfail(L);
      return i - 1;
    }
    if (!conn_wants(rc)) break;
    if (buf_len(&c->io.in) == 0) conn_release_in(&c->io);  /* idle: no read buffer */
    if ((rc = read_wait_event(c, rc)) < 0) break;
    rc = waitio(L, c, (unsigned)rc, i | lines, read_k);
  }
  if (rc < 0) {
    if (lines && i == 2 && lines_idle_end(c, rc)) {
      luaL_pushfail(L);  /* ends the loop */
      return 1;
    }
    if (lines) return luaL_error(L, "%s", conn_strerror(rc));
    luaL_pushfail(L);
    lua_pushstring(L, conn_strerror(rc));
    return i - 2 + 2;
  }
  return nfmt;
}


static int read_k (lua_State *L, int status, lua_KContext ctx) {
  return read_run(L, lconn_check(L), sched_result(L, status), ctx);
}


static int req_read (lua_State *L) {
  struct lconn *c = lconn_check(L);
  int n = lua_gettop(L);
  if (n == 1) {
    lua_pushliteral(L, "l");
    n = 2;
  }
  check_formats(L, 2, n);
  if (c->io.flags & LC_CLOSED) return pushfail(L, ERR_CLOSED);
  lconn_start_op(c);
  return read_run(L, c, 0, 2);
}


/* In recv_k's context: recv was given a continuation (fn, state); an
** expected string (argument 5). */
#define RECV_PARK ((lua_KContext)1 << 40)
#define RECV_SAME ((lua_KContext)1 << 41)

/*
** recv's wait was ended with ERR_PARK (model_event.c): the continuation
** (arguments 3 and 4) is kept in the task, and recv returns the token,
** which the handler returns to the flow.
*/
static int recv_parked (lua_State *L) {
  struct task *t = lsrv_task(L);
  lua_pushvalue(L, 3);
  t->park_fn = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 4);
  t->park_state = luaL_ref(L, LUA_REGISTRYINDEX);
  t->parking = PARK_ASKED;
  lua_pushlightuserdata(L, &lsrv_park_token);
  return 1;
}


static int recv_k (lua_State *L, int status, lua_KContext ctx) {
  struct lconn *c = lconn_check(L);
  size_t max = (size_t)(ctx & ~(RECV_PARK | RECV_SAME));
  int rc = sched_result(L, status);
  if (c->io.flags & LC_CLOSED) rc = ERR_CLOSED;
  if (rc == ERR_PARK) return recv_parked(L);
  while (rc >= 0 && buf_len(&c->io.in) == 0) {
    unsigned ev;
    rc = conn_fill(&c->io, max);
    if (rc == 0) {
      luaL_pushfail(L);
      return 1;
    }
    if (!conn_wants(rc)) break;
    conn_release_in(&c->io);
    if ((rc = read_wait_event(c, rc)) < 0) break;
    ev = (unsigned)rc;
    if ((ctx & RECV_PARK) && ev == EV_READ)  /* (not a TLS read that sends) */
      ev |= EV_IDLEWAIT;
    rc = waitio(L, c, ev, ctx, recv_k);
  }
  if (rc < 0) return pushfail(L, rc);
  if (ctx & RECV_SAME) {  /* exactly the expected bytes: true, no string */
    size_t n;
    const char *s = lua_tolstring(L, 5, &n);
    if (n == buf_len(&c->io.in) && n <= max &&
        memcmp(buf_head(&c->io.in), s, n) == 0) {
      buf_consume(&c->io.in, n);
      c->io.scan = 0;
      lua_pushboolean(L, 1);
      return 1;
    }
  }
  push_bytes(L, c, max < buf_len(&c->io.in) ? max : buf_len(&c->io.in));
  return 1;
}


/*
** req:recv([max [, fn, state [, same]]]). With fn, the wait is an idle
** one (EV_IDLEWAIT): a stop ends it, and in the event model one that
** lasts parks the request (recv_parked). With same (a string), bytes
** that are exactly it are consumed and returned as true: a client that
** sends the same message again costs no new string (luasrv.http passes
** a connection's last request head).
*/
static int req_recv (lua_State *L) {
  struct lconn *c = lconn_check(L);
  lua_Integer max = luaL_optinteger(L, 2, BUF_CHUNK);
  lua_KContext ctx;
  luaL_argcheck(L, max > 0 && max < (lua_Integer)RECV_PARK, 2,
                "must be positive");
  ctx = (lua_KContext)max;
  if (lua_type(L, 3) == LUA_TFUNCTION)
    ctx |= RECV_PARK;
  else if (lua_toboolean(L, 3))
    luaL_typeerror(L, 3, "function");
  if (lua_type(L, 5) == LUA_TSTRING)
    ctx |= RECV_SAME;
  else if (lua_toboolean(L, 5))
    luaL_typeerror(L, 5, "string");
  lua_settop(L, (ctx & RECV_SAME) ? 5 : (ctx & RECV_PARK) ? 4 : 1);
  if (c->io.flags & LC_CLOSED) return pushfail(L, ERR_CLOSED);
  lconn_start_op(c);
  return recv_k(L, LUA_OK, ctx);
}


/*
** The lines iterator: a read of the stored formats that raises its
** failures (as io.lines does). Upvalues: the connection, the number of
** formats, the formats. It runs read_run itself rather than req_read
** through a call, for this is the inner loop of most stream handlers.
*/
static int lines_aux (lua_State *L) {
  struct lconn *c = lua_touserdata(L, lua_upvalueindex(1));
  int nfmt = (int)lua_tointeger(L, lua_upvalueindex(2));
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(1));
  for (int i = 1; i <= nfmt; i++)
    lua_pushvalue(L, lua_upvalueindex(2 + i));
  if (c->io.flags & LC_CLOSED) return luaL_error(L, "%s", conn_strerror(ERR_CLOSED));
  lconn_start_op(c);
  return read_run(L, c, 0, 2 | READ_LINES);
}


/*
** lines("l") and lines("L"), the usual case, have the connection as their
** one upvalue, and return a line already buffered at once.
*/
static int lines_fast (lua_State *L, int keep) {
  struct lconn *c = lua_touserdata(L, lua_upvalueindex(1));
  if (!(c->io.flags & LC_CLOSED)) {
    long nl = buf_findnl(&c->io.in, c->io.scan);
    if (nl >= 0 && (size_t)nl <= c->x->w->cfg->max_line) {
      lua_pushlstring(L, buf_head(&c->io.in), (size_t)nl + (size_t)keep);
      buf_consume(&c->io.in, (size_t)nl + 1);
      c->io.scan = 0;
      return 1;
    }
  }
  lua_settop(L, 0);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushstring(L, keep ? "L" : "l");
  if (c->io.flags & LC_CLOSED) return luaL_error(L, "%s", conn_strerror(ERR_CLOSED));
  lconn_start_op(c);
  return read_run(L, c, 0, 2 | READ_LINES);
}

static int lines_l (lua_State *L) { return lines_fast(L, 0); }
static int lines_L (lua_State *L) { return lines_fast(L, 1); }


static int req_lines (lua_State *L) {
  int n = lua_gettop(L) - 1;
  lconn_check(L);
  if (n == 0) {
    lua_pushliteral(L, "l");
    n = 1;
  }
  check_formats(L, 2, n + 1);
  luaL_argcheck(L, n <= 250, n + 1, "too many arguments");
  lua_pushinteger(L, n);
  lua_insert(L, 2);  /* conn, n, formats... */
  if (n == 1 && lua_type(L, 3) == LUA_TSTRING) {
    const char *p = lua_tostring(L, 3);
    if (*p == '*') p++;
    if (*p == 'l' || *p == 'L') {
      lua_pushvalue(L, 1);
      lua_pushcclosure(L, *p == 'l' ? lines_l : lines_L, 1);
      return 1;
    }
  }
  lua_pushcclosure(L, lines_aux, n + 2);
  return 1;
}

/* }====================================================== */


/* {====================================================== writing */

static int flush_k (lua_State *L, int status, lua_KContext ctx) {
  struct lconn *c = lconn_check(L);
  int rc = sched_result(L, status);
  if (c->io.flags & LC_CLOSED) rc = ERR_CLOSED;
  while (rc >= 0 && conn_wants(rc = conn_flush(&c->io)))
    rc = waitio(L, c, conn_want_event(rc), ctx, flush_k);
  if (rc < 0) return pushfail(L, rc);
  lua_settop(L, 1);
  return 1;  /* the connection, for chaining */
}


static int req_write (lua_State *L) {
  struct lconn *c = lconn_check(L);
  int n = lua_gettop(L);
  if (n == 2 && lua_type(L, 2) == LUA_TSTRING &&  /* the common case */
      (c->io.flags & (LC_CLOSED | LC_DGRAM | LC_UDP)) == 0) {
    size_t len, sent;
    const char *s = lua_tolstring(L, 2, &len);
    sent = conn_write_direct(&c->io, s, len);
    if (buf_append(&c->io.out, s + sent, len - sent, &c->x->pool) < 0)
      return pushfail(L, -ENOMEM);
    lua_pop(L, 1);
    if (buf_len(&c->io.out) < WRITE_HIGH) return 1;
    lconn_start_op(c);
    return flush_k(L, LUA_OK, 0);
  }
  for (int i = 2; i <= n; i++)
    luaL_checklstring(L, i, NULL);  /* argument errors before any output */
  if (c->io.flags & LC_CLOSED) return pushfail(L, ERR_CLOSED);
  for (int i = 2; i <= n; i++) {
    size_t len, sent = 0;
    const char *s = lua_tolstring(L, i, &len);
    sent = conn_write_direct(&c->io, s, len);
    if (buf_append(&c->io.out, s + sent, len - sent, &c->x->pool) < 0)
      return pushfail(L, -ENOMEM);
  }
  lua_settop(L, 1);
  /* a UDP connection's output waits for flush: it is one datagram */
  if ((c->io.flags & (LC_DGRAM | LC_UDP)) || buf_len(&c->io.out) < WRITE_HIGH)
    return 1;
  lconn_start_op(c);
  return flush_k(L, LUA_OK, 0);
}


static int req_flush (lua_State *L) {
  struct lconn *c = lconn_check(L);
  lua_settop(L, 1);
  if (c->io.flags & LC_CLOSED) return pushfail(L, ERR_CLOSED);
  if (c->io.flags & LC_DGRAM) return 1;  /* the reply goes out after finish */
  lconn_start_op(c);
  return flush_k(L, LUA_OK, 0);
}


/*
** req:sendfile's state between waits sits on its stack: 2 the file
** object, 3 the offset reached, 4 the bytes left. ctx: 1 when the call
** opened the file itself (from a path) and closes it at the end. The
** timeout counts from the last byte that went: a download that goes on
** slowly is not cut, a client that takes nothing for that long is.
*/
static int sendfile_k (lua_State *L, int status, lua_KContext ctx) {
  struct lconn *c = lconn_check(L);
  int rc = sched_result(L, status), fd = lfile_check(L, 2);
  off_t off = (off_t)lua_tointeger(L, 3), left = (off_t)lua_tointeger(L, 4);
  if (c->io.flags & LC_CLOSED || fd < 0) rc = ERR_CLOSED;
  while (rc >= 0) {
    unsigned long long sent = c->io.nout;
    rc = conn_sendfile(&c->io, fd, &off, &left);
    if (!conn_wants(rc)) break;
    if (c->io.nout > sent) c->deadline = -1;  /* progress: a fresh timeout */
    lua_pushinteger(L, (lua_Integer)off);
    lua_replace(L, 3);
    lua_pushinteger(L, (lua_Integer)left);
    lua_replace(L, 4);
    rc = waitio(L, c, conn_want_event(rc), ctx, sendfile_k);
  }
  /* cut in the middle: what is buffered is part of a broken answer, and
  ** the connection can only end; its close must not wait to send it */
  if (rc < 0) buf_consume(&c->io.out, buf_len(&c->io.out));
  if (ctx) {  /* ours: closed now, not at the next collection */
    lua_getfield(L, 2, "close");
    lua_pushvalue(L, 2);
    lua_call(L, 1, 0);
  }
  if (rc < 0) return pushfail(L, rc);
  lua_settop(L, 1);
  return 1;  /* the connection, for chaining */
}


/*
** req:sendfile(file [, offset [, length]]): file is a luasrv.openfile
** object or a path. The bytes go from the file to the socket, never
** through a Lua string.
*/
static int req_sendfile (lua_State *L) {
  struct lconn *c = lconn_check(L);
  lua_Integer off = luaL_optinteger(L, 3, 0), len = luaL_optinteger(L, 4, -1);
  int fd, opened = lua_type(L, 2) == LUA_TSTRING;
  struct stat st;
  luaL_argcheck(L, off >= 0, 3, "must be >= 0");
  luaL_argcheck(L, lua_isnoneornil(L, 4) || len >= 0, 4, "must be >= 0");
  if (!opened) fd = lfile_check(L, 2);
  lua_settop(L, 2);
  if (c->io.flags & LC_CLOSED) return pushfail(L, ERR_CLOSED);
  if (c->io.flags & (LC_DGRAM | LC_UDP)) {
    luaL_pushfail(L);
    lua_pushliteral(L, "not a stream");
    return 2;
  }
  if (opened) {
    const char *path = lua_tostring(L, 2);
    if ((fd = lfile_push(L, path, 0)) < 0) {
      luaL_pushfail(L);
      lua_pushfstring(L, "%s: %s", path, strerror(-fd));
      return 2;
    }
    lua_replace(L, 2);
  }
  if (fd < 0) return pushfail(L, ERR_CLOSED);
  if (fstat(fd, &st) < 0) return pushfail(L, -errno);
  if (!S_ISREG(st.st_mode)) {
    luaL_pushfail(L);
    lua_pushliteral(L, "not a regular file");
    return 2;
  }
  if (len < 0) len = st.st_size > off ? (lua_Integer)st.st_size - off : 0;
  else if (off + len > (lua_Integer)st.st_size)
    return pushfail(L, ERR_SHORT);  /* nothing sent: the caller may answer */
  lua_pushinteger(L, off);
  lua_pushinteger(L, len);
  lconn_start_op(c);
  return sendfile_k(L, LUA_OK, opened);
}


static int close_k (lua_State *L, int status, lua_KContext ctx) {
  struct lconn *c = lconn_check(L);
  int rc = sched_result(L, status);
  (void)ctx;
  if (c->io.flags & LC_CLOSED) return pushfail(L, ERR_CLOSED);
  if (c->io.flags & LC_DGRAM)
    rc = conn_reply(&c->io, c->x->dgq, (struct sockaddr *)&c->peer, c->peerlen);
  else {
    c->io.flags |= LC_LAST;
    while (rc >= 0 && conn_wants(rc = conn_flush(&c->io)))
      rc = waitio(L, c, conn_want_event(rc), 0, close_k);
  }
  close_fd(c);
  if (rc < 0) return pushfail(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}


static int req_close (lua_State *L) {
  struct lconn *c = lconn_check(L);
  lua_settop(L, 1);
  if (c->io.flags & LC_CLOSED) return pushfail(L, ERR_CLOSED);
  lconn_start_op(c);
  return close_k(L, LUA_OK, 0);
}

/* }====================================================== */


static int req_settimeout (lua_State *L) {
  struct lconn *c = lconn_check(L);
  if (lua_isnoneornil(L, 2)) c->timeout = -1;
  else {
    lua_Number t = luaL_checknumber(L, 2);
    luaL_argcheck(L, t >= 0, 2, "must be >= 0");
    c->timeout = (double)t;
  }
  lua_settop(L, 1);
  return 1;
}


static int req_gc (lua_State *L) {
  struct lconn *c = lconn_check(L);
  close_fd(c);
  return 0;
}


static int req_tostring (lua_State *L) {
  struct lconn *c = lconn_check(L);
  char peer[ADDRESS_STRLEN];
  if (c->io.flags & LC_CLOSED) {
    lua_pushliteral(L, "luasrv.conn (closed)");
    return 1;
  }
  address_format_peer((struct sockaddr *)&c->peer, c->peerlen, peer,
                      sizeof peer);
  lua_pushfstring(L, "luasrv.conn (%s)", peer);
  return 1;
}


/* {====================================================== fields */

static int addr_tostring (lua_State *L) {
  lua_getfield(L, 1, "path");
  if (!lua_isnil(L, -1)) {
    lua_pushfstring(L, "unix:%s", lua_tostring(L, -1));
    return 1;
  }
  lua_getfield(L, 1, "host");
  lua_getfield(L, 1, "port");
  const char *host = luaL_optstring(L, -2, "");
  lua_Integer port = lua_tointeger(L, -1);
  if (strchr(host, ':') != NULL)
    lua_pushfstring(L, "[%s]:%I", host, port);
  else
    lua_pushfstring(L, "%s:%I", host, port);
  return 1;
}


void lconn_push_address (lua_State *L, struct lconn *c) {
  char host[ADDRESS_STRLEN];
  int port;
  const struct sockaddr *sa = (const struct sockaddr *)&c->peer;
  lua_createtable(L, 2, 2);
  if (address_host_port(sa, host, sizeof host, &port) == 0) {
    lua_pushstring(L, host);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "host");
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, port);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "port");
    lua_rawseti(L, -2, 2);
  }
  else if (sa->sa_family == AF_UNIX &&
           c->peerlen > (socklen_t)offsetof(struct sockaddr_un, sun_path)) {
    char peer[ADDRESS_STRLEN];
    address_format_peer(sa, c->peerlen, peer, sizeof peer);
    lua_pushstring(L, peer + 5);  /* past "unix:" */
    lua_setfield(L, -2, "path");
  }
  else {  /* an unnamed Unix client: no address at all */
    lua_pushliteral(L, "");
    lua_setfield(L, -2, "path");
  }
  luaL_setmetatable(L, LADDR_MT);
}


/* Pushes the fields table of the request at index 1, made if need be. */
static void push_fields (lua_State *L) {
  if (lua_getiuservalue(L, 1, UV_FIELDS) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, UV_FIELDS);
  }
}


static void push_dgram (lua_State *L, struct lconn *c);

/* Pushes field k of request c (index 1); returns 0 if k is not built in. */
static int builtin_field (lua_State *L, struct lconn *c, const char *k) {
  if (strcmp(k, "request") == 0) {  /* first: a datagram handler's field */
    if (c->io.flags & LC_DGRAM) push_dgram(L, c);
    else lua_pushvalue(L, 1);
    return 1;
  }
  if (strcmp(k, "client_address") == 0) {
    push_fields(L);
    if (lua_rawgetp(L, -1, ADDRESS_KEY) == LUA_TNIL) {
      lua_pop(L, 1);
      lconn_push_address(L, c);
      lua_pushvalue(L, -1);
      lua_rawsetp(L, -3, ADDRESS_KEY);  /* cache it */
    }
    return 1;
  }
  if (strcmp(k, "server") == 0) {
    if (c->io.flags & LC_OUTBOUND) return 0;  /* no listener: nil */
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->x->servers_ref);
    lua_rawgeti(L, -1, c->lindex + 1);
    return 1;
  }
  if (strcmp(k, "tls") == 0) {
    ltls_push_info(L, c);
    return 1;
  }
  return 0;
}


/* Field k of request 1 that is not a method (see index_src). */
static int req_field (lua_State *L) {
  struct lconn *c = lconn_check(L);
  lua_settop(L, 2);
  if (lua_type(L, 2) == LUA_TSTRING &&
      builtin_field(L, c, lua_tostring(L, 2)))
    return 1;
  if (lua_getiuservalue(L, 1, UV_FIELDS) != LUA_TTABLE) return 1;  /* nil */
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}


/*
** __index, in Lua: each req:write(...) looks a method up here. A Lua
** function costs a little more per call than a C one, but its frame
** takes a few stack slots where a C function reserves LUA_MINSTACK (20)
** above the caller's whole frame: that was enough to double the stack
** of a coroutine waiting in a "for line in req:lines()" loop, 640 bytes
** per idle connection for good (Lua shrinks a stack only when it is
** more than three times what is in use).
*/
static const char index_src[] =
  "local methods, field = ...\n"
  "return function(req, k)\n"
  "  local m = methods[k]\n"
  "  if m ~= nil then return m end\n"
  "  return field(req, k)\n"
  "end\n";


static int req_newindex (lua_State *L) {
  lconn_check(L);
  if (lua_type(L, 2) == LUA_TSTRING) {
    const char *k = lua_tostring(L, 2);
    if (strcmp(k, "client_address") == 0 || strcmp(k, "server") == 0 ||
        strcmp(k, "request") == 0 || strcmp(k, "tls") == 0)
      return luaL_error(L, "field '%s' of a request is read-only", k);
  }
  lua_settop(L, 3);
  push_fields(L);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  return 0;
}

/* }====================================================== */


/*
** A request is allocated only up to the peer address it holds (peer is
** the last member): a sockaddr_storage is 128 bytes, an inet address at
** most 28, and every idle connection holds one.
*/
static struct lconn *newconn (lua_State *L, struct lctx *x, int lindex,
                              const struct sockaddr *peer, socklen_t peerlen,
                              int nuv) {
  struct lconn *c;
  size_t size;
  if (peerlen > sizeof c->peer) peerlen = sizeof c->peer;
  size = LCONN_SIZE(peerlen);
  c = lua_newuserdatauv(L, size, nuv);
  memset(c, 0, size);
  c->tag = &lsrv_conn_tag;
  c->io.fd = -1;
  c->io.flags = LC_CLOSED;  /* closed until it has a descriptor, as in liolib */
  c->io.pool = &x->pool;
  c->timeout = -1;
  c->x = x;
  c->born = monotonic_now();
  c->lindex = lindex;
  memcpy(&c->peer, peer, peerlen);
  c->peerlen = peerlen;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &lsrv_conn_tag);  /* the metatable */
  lua_setmetatable(L, -2);
  return c;
}


/* What a protected constructor of a request is given (see lconn_new). */
struct newreq {
  struct lctx *x;
  int fd;                     /* the connection; -1: a datagram */
  int lindex;
  const char *data;           /* the datagram */
  size_t len;
  const struct sockaddr *peer;
  socklen_t peerlen;
  struct lconn *c;            /* the result */
};


/* new_request(a): pushes the request a describes (may raise). */
static int new_request (lua_State *L) {
  struct newreq *a = lua_touserdata(L, 1);
  struct lctx *x = a->x;
  struct lconn *c = newconn(L, x, a->lindex, a->peer, a->peerlen,
                            a->fd >= 0 ? 1 : 2);
  if (a->fd >= 0) {
    c->io.tr = &conn_stream;
    c->io.fd = a->fd;
    c->io.flags = LC_READABLE | LC_WRITABLE;  /* optimistic until told */
    if (x->w->cfg->proxy_protocol) c->io.flags |= LC_PROXY;
  }
  else {
    const char *s = lua_pushlstring(L, a->data, a->len);
    lua_setiuservalue(L, -2, UV_DATA);  /* keeps s alive: reads borrow it */
    c->io.tr = &conn_dgram;
    c->io.fd = x->w->ls[a->lindex].fd;
    c->io.flags = LC_DGRAM | LC_EOF | LC_BORROWED;
    c->io.in.data = (char *)s;
    c->io.in.end = c->io.in.cap = a->len;
  }
  a->c = c;
  return 1;
}


/*
** Runs new_request protected: a state at its --memory-limit (or a heap
** that is full) must not panic the worker for want of a request object.
*/
static struct lconn *protected_new (lua_State *L, struct newreq *a) {
  a->c = NULL;
  a->x->sys_oom = 0;
  lua_pushcfunction(L, new_request);
  lua_pushlightuserdata(L, a);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    lua_pop(L, 1);  /* the error: only memory can fail here */
    return NULL;
  }
  return a->c;
}


struct lconn *lconn_new (lua_State *L, struct lctx *x, int fd, int lindex,
                         const struct sockaddr *peer, socklen_t peerlen) {
  struct newreq a = {x, fd, lindex, NULL, 0, peer, peerlen, NULL};
  return protected_new(L, &a);
}


struct lconn *lconn_renew_dgram (lua_State *L, struct lctx *x, int lindex,
                                 const char *data, size_t len,
                                 const struct sockaddr *peer,
                                 socklen_t peerlen) {
  struct lconn *c = lua_touserdata(L, 1);
  if (c == NULL || c->tag != &lsrv_conn_tag || !(c->io.flags & LC_CLOSED) ||
      !(c->io.flags & LC_DGRAM) || lua_rawlen(L, 1) < LCONN_SIZE(peerlen))
    return NULL;
  memset(&c->io, 0, sizeof c->io);
  c->io.tr = &conn_dgram;
  c->io.pool = &x->pool;
  c->io.fd = x->w->ls[lindex].fd;
  c->io.flags = LC_DGRAM | LC_EOF | LC_BORROWED | LC_DGRAW;
  c->io.in.data = (char *)data;
  c->io.in.end = c->io.in.cap = len;
  c->timeout = -1;
  c->deadline = 0;
  c->x = x;
  c->lindex = lindex;
  c->waiter = c->wwaiter = NULL;
  c->wait_ev = c->reused = 0;
  memcpy(&c->peer, peer, peerlen);
  c->peerlen = peerlen;
  /* the last request's string and fields go: setting nil cannot raise */
  lua_pushnil(L);
  lua_setiuservalue(L, 1, UV_DATA);
  lua_pushnil(L);
  lua_setiuservalue(L, 1, UV_FIELDS);
  return c;
}


int lconn_keep_dgram (struct lconn *c) {
  char *p;
  if (!(c->io.flags & LC_DGRAW)) return 0;
  c->io.flags &= ~LC_DGRAW;
  if (c->io.in.data == NULL) return 0;  /* closed */
  if ((p = malloc(c->io.in.cap > 0 ? c->io.in.cap : 1)) == NULL)
    return -ENOMEM;
  memcpy(p, c->io.in.data, c->io.in.cap);
  c->io.in.data = p;  /* now the connection's: conn_close frees it */
  c->io.flags &= ~LC_BORROWED;
  return 0;
}


/*
** Pushes req.request of datagram request c (index 1): the datagram, made
** into a string the first time (a renewed request's reads borrowed it).
*/
static void push_dgram (lua_State *L, struct lconn *c) {
  const char *s;
  if (lua_getiuservalue(L, 1, UV_DATA) == LUA_TSTRING) return;
  lua_pop(L, 1);
  if (c->io.in.data == NULL) {  /* closed before it was asked for */
    lua_pushliteral(L, "");
    return;
  }
  s = lua_pushlstring(L, c->io.in.data, c->io.in.cap);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, 1, UV_DATA);  /* keeps s alive: reads borrow it */
  if (c->io.flags & LC_DGRAW) {
    c->io.in.data = (char *)s;
    c->io.flags &= ~LC_DGRAW;
  }
}


struct lconn *lconn_new_out (lua_State *L, struct lctx *x) {
  struct sockaddr_storage none;
  memset(&none, 0, sizeof none);
  return newconn(L, x, -1, (struct sockaddr *)&none, sizeof none, 2);
}


struct lconn *lconn_new_dgram (lua_State *L, struct lctx *x, int lindex,
                               const char *data, size_t len,
                               const struct sockaddr *peer, socklen_t peerlen) {
  struct newreq a = {x, -1, lindex, data, len, peer, peerlen, NULL};
  return protected_new(L, &a);
}


static const luaL_Reg methods[] = {
  {"read", req_read},
  {"lines", req_lines},
  {"recv", req_recv},
  {"write", req_write},
  {"flush", req_flush},
  {"sendfile", req_sendfile},
  {"close", req_close},
  {"settimeout", req_settimeout},
  {"starttls", ltls_starttls},
  {NULL, NULL}
};

static const luaL_Reg metamethods[] = {
  {"__newindex", req_newindex},
  {"__gc", req_gc},
  {"__close", req_gc},
  {"__tostring", req_tostring},
  {NULL, NULL}
};


int luaopen_lconn (lua_State *L) {
  lfile_register(L);  /* req:sendfile(path) makes file objects */
  luaL_newmetatable(L, LCONN_MT);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &lsrv_conn_tag);  /* for newconn */
  luaL_setfuncs(L, metamethods, 0);
  if (luaL_loadbuffer(L, index_src, sizeof index_src - 1, "=req") != LUA_OK)
    return lua_error(L);
  luaL_newlib(L, methods);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &methods_key);  /* lconn_add_methods */
  lua_pushcfunction(L, req_field);
  lua_call(L, 2, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newmetatable(L, LADDR_MT);
  lua_pushcfunction(L, addr_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  return 0;
}


void lconn_add_methods (lua_State *L, const luaL_Reg *l) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &methods_key);
  luaL_setfuncs(L, l, 0);
  lua_pop(L, 1);
}
