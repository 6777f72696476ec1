/*
** ltls.c -- TLS for Lua: the request flow's handshake step on a --tls
** listener, req:starttls / conn:starttls, the client side of
** luasrv.connect("tls://..."), and req.tls. The handshake waits through
** sched_wait like any read: the event model yields, the others block,
** bounded by the connection's timeout. A client whose handshake fails
** (plaintext, garbage, a stall) is closed with one log line, at most one
** a second, and no hook runs for it.
*/
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "address.h"
#include "listener.h"
#include "log.h"
#include "lsrv.h"
#include "metrics.h"
#include "tls.h"

#define CTX_MT "luasrv.tlsctx"
#define SRV_MT "luasrv.tlsserver"

/* What a handshake is for (the continuation's context, above the index). */
enum { HS_ACCEPT, HS_CONNECT, HS_STARTTLS, HS_FLUSH };
#define HS_CTX(mode, idx) ((lua_KContext)((mode) << 8 | (idx)))

static char ctxcache_key;     /* registry: client contexts by their options */
static char hosts_key;        /* registry: host names of outbound connections */


/* The deadline of the operation in progress (as lconn.c's), 0 for none. */
static double deadline (struct lconn *c) {
  if (c->deadline < 0) {
    double t = c->timeout >= 0 ? c->timeout : c->x->w->cfg->timeout;
    c->deadline = t > 0 ? monotonic_now() + t : 0;
  }
  return c->deadline;
}


/* Gives c's descriptor back, as lconn_abort does. */
static void drop (struct lconn *c) {
  if (c->io.flags & LC_CLOSED) return;
  if (c->io.fd >= 0) sched_detach(c);
  conn_close(&c->io);
}


/* A failed handshake of a client: one line a second at most. */
static void log_refused (struct lconn *c, const char *why) {
  char peer[ADDRESS_STRLEN];
  long n;
  if (!tls_log_allowed(&n)) return;
  address_format_peer((struct sockaddr *)&c->peer, c->peerlen, peer,
                      sizeof peer);
  if (n > 0)
    log_warn("closed a connection from %s: TLS handshake failed: %s "
             "(%ld more not logged)", peer, why, n);
  else
    log_warn("closed a connection from %s: TLS handshake failed: %s", peer, why);
}


static int handshake_k (lua_State *L, int status, lua_KContext ctx);


/* A client's handshake ended: its listener's count on /metrics. */
static void count (struct lconn *c, int mode, int ok) {
  struct worker *w = c->x->w;
  if (w->mslot != NULL && mode != HS_CONNECT && c->lindex >= 0)
    metrics_tls(w->mslot, w->ls[c->lindex].name, ok);
}


static int fail (lua_State *L, struct lconn *c, int mode, int rc) {
  const char *why = rc == ERR_TLS ? tls_error() : conn_strerror(rc);
  if (mode == HS_ACCEPT) {
    log_refused(c, why);
    drop(c);
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushstring(L, why);
  drop(c);
  luaL_pushfail(L);
  lua_insert(L, -2);
  return 2;
}


/* Runs c's handshake (conn at index idx) to its end; may yield. */
static int handshake (lua_State *L, struct lconn *c, int rc, lua_KContext ctx) {
  int mode = (int)(ctx >> 8), idx = (int)(ctx & 0xff);
  if (c->io.flags & LC_CLOSED) rc = ERR_CLOSED;
  if (mode == HS_FLUSH) {  /* req:starttls: what was written goes first */
    void **srv = lua_touserdata(L, idx + 2);  /* opts.cert's, or NULL */
    size_t alen = 0;
    const char *alpn = lua_tolstring(L, idx + 3, &alen);  /* or NULL */
    while (rc >= 0 && conn_wants(rc = conn_flush(&c->io)))
      rc = sched_wait(L, c, conn_want_event(rc), deadline(c), ctx, handshake_k);
    if (rc < 0) return fail(L, c, HS_STARTTLS, rc);
    if ((rc = tls_server_start_with(&c->io, srv ? *srv : NULL,
                                    (const unsigned char *)alpn, alen)) < 0) {
      drop(c);
      lua_pushnil(L);
      lua_pushstring(L, rc == -ENOENT ? "no certificate (--tls-cert)"
                                      : conn_strerror(rc));
      return 2;
    }
    ctx = HS_CTX(HS_STARTTLS, idx);
    mode = HS_STARTTLS;
  }
  while (rc >= 0) {
    rc = tls_handshake(&c->io);
    if (rc == 0) {
      count(c, mode, 1);
      if (mode == HS_ACCEPT) lua_pushboolean(L, 1);
      else lua_pushvalue(L, idx);
      return 1;
    }
    if (!conn_wants(rc)) break;
    rc = sched_wait(L, c, conn_want_event(rc), deadline(c), ctx, handshake_k);
  }
  count(c, mode, 0);
  return fail(L, c, mode, rc);
}


static int handshake_k (lua_State *L, int status, lua_KContext ctx) {
  struct lconn *c = lua_touserdata(L, (int)(ctx & 0xff));
  return handshake(L, c, sched_result(L, status), ctx);
}


int ltls_accept (lua_State *L) {
  struct lconn *c = luaL_testudata(L, 1, LCONN_MT);
  if (c == NULL || (c->io.flags & LC_CLOSED) ||
      c->io.tls != NULL || c->lindex < 0 ||
      c->x->w->ls[c->lindex].addr.tr != TR_TLS) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_settop(L, 1);
  c->deadline = -1;  /* the handshake has the server's timeout */
  if (tls_server_start(&c->io) < 0) return fail(L, c, HS_ACCEPT, -ENOMEM);
  return handshake(L, c, 0, HS_CTX(HS_ACCEPT, 1));
}


/* {====================================================== client side */

static int ctx_gc (lua_State *L) {
  void **p = luaL_checkudata(L, 1, CTX_MT);
  if (*p != NULL) tls_client_ctx_free(*p);
  *p = NULL;
  return 0;
}


static const char *optstring (lua_State *L, int opts, const char *k) {
  const char *s = NULL;
  if (opts == 0) return NULL;
  if (lua_getfield(L, opts, k) != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "bad option '%s' (a string expected)", k);
    s = lua_tostring(L, -1);
  }
  lua_pop(L, 1);  /* opts holds it */
  return s;
}


/* Pushes the state's cache of TLS contexts (a table in the registry). */
static void push_ctxcache (lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &ctxcache_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ctxcache_key);
}


/*
** Pushes a new box for a context pointer, NULL until the caller makes
** the context; metatable mt's __gc (gc) frees it with the box.
*/
static void **new_box (lua_State *L, const char *mt, lua_CFunction gc) {
  void **p = lua_newuserdatauv(L, sizeof *p, 0);
  *p = NULL;
  if (luaL_newmetatable(L, mt)) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return p;
}


/*
** The client context for opts (a table at index opts, or 0): made once
** per state for each set of ca, cert, key and verify. Returns it, or
** NULL with the reason pushed.
*/
static void *client_ctx (lua_State *L, int opts, int verify) {
  const char *ca = optstring(L, opts, "ca"), *cert = optstring(L, opts, "cert"),
             *key = optstring(L, opts, "key");
  char err[400];
  void **p;
  push_ctxcache(L);
  lua_pushfstring(L, "%d\n%s\n%s\n%s", verify, ca ? ca : "", cert ? cert : "",
                  key ? key : "");
  lua_pushvalue(L, -1);
  if (lua_rawget(L, -3) == LUA_TUSERDATA) {
    p = lua_touserdata(L, -1);
    lua_pop(L, 3);
    return *p;
  }
  lua_pop(L, 1);
  p = new_box(L, CTX_MT, ctx_gc);
  if ((*p = tls_client_ctx(ca, cert, key, verify, err, sizeof err)) == NULL) {
    lua_pop(L, 3);
    lua_pushstring(L, err);
    return NULL;
  }
  lua_rawset(L, -3);  /* key, ctx */
  lua_pop(L, 1);
  return *p;
}


static int srv_gc (lua_State *L) {
  void **p = luaL_checkudata(L, 1, SRV_MT);
  if (*p != NULL) tls_server_free(*p);
  *p = NULL;
  return 0;
}


/*
** Pushes the server context of req:starttls{cert = cert, key = key},
** made once per state for each pair (the worker reads the files), or
** nil and the reason: returns 1 or 2.
*/
static int push_server (lua_State *L, struct lctx *x, const char *cert,
                        const char *key) {
  char err[400];
  void **p;
  push_ctxcache(L);
  lua_pushfstring(L, "server\n%s\n%s", cert, key);
  lua_pushvalue(L, -1);
  if (lua_rawget(L, -3) == LUA_TUSERDATA) {
    lua_replace(L, -3);
    lua_pop(L, 1);
    return 1;
  }
  lua_pop(L, 1);
  p = new_box(L, SRV_MT, srv_gc);
  if ((*p = tls_server_new(x->w->cfg, cert, key, err, sizeof err)) == NULL) {
    lua_pop(L, 3);
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushvalue(L, -1);
  lua_insert(L, -4);  /* ctx, cache, key, ctx */
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return 1;
}


/* Raises for a key of opts (index 2) that is not one of known. */
static void check_keys (lua_State *L, const char *const known[]) {
  lua_pushnil(L);
  while (lua_next(L, 2) != 0) {
    int i = 0;
    lua_pop(L, 1);  /* the value */
    if (lua_type(L, -1) == LUA_TSTRING)
      while (known[i] != NULL && strcmp(known[i], lua_tostring(L, -1)) != 0)
        i++;
    if (lua_type(L, -1) != LUA_TSTRING || known[i] == NULL)
      luaL_error(L, "bad option '%s' to 'starttls'", luaL_tolstring(L, -1, NULL));
  }
}


/* Pushes opts.alpn ("h2,http/1.1" or {"h2", "http/1.1"}) in wire form. */
static void push_alpn (lua_State *L, int opts) {
  luaL_Buffer b;
  int t;
  if (opts == 0 || lua_getfield(L, opts, "alpn") == LUA_TNIL) {
    if (opts != 0) lua_pop(L, 1);
    lua_pushliteral(L, "");
    return;
  }
  t = lua_gettop(L);
  if (lua_type(L, t) == LUA_TSTRING) {  /* the list's names in a table */
    const char *s = lua_tostring(L, t);
    int n = 0;
    lua_newtable(L);
    while (*s) {
      const char *comma = strchr(s, ',');
      size_t k = comma ? (size_t)(comma - s) : strlen(s);
      lua_pushlstring(L, s, k);
      lua_rawseti(L, -2, ++n);
      s += k + (comma ? 1 : 0);
    }
    lua_replace(L, t);
  }
  if (!lua_istable(L, t)) luaL_error(L, "bad option 'alpn' (a string or a table expected)");
  luaL_buffinit(L, &b);
  for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, t); i++) {
    size_t k;
    const char *s;
    lua_rawgeti(L, t, i);
    s = lua_tolstring(L, -1, &k);
    lua_pop(L, 1);  /* the table keeps it */
    if (s == NULL || k == 0 || k > 255) luaL_error(L, "bad option 'alpn'");
    luaL_addchar(&b, (char)k);
    luaL_addlstring(&b, s, k);
  }
  luaL_pushresult(&b);
  lua_replace(L, t);
}


/*
** Starts the client side of TLS on outbound c (at idx) with opts (a
** table at index opts, or 0) and host (the default name), then its
** handshake: pushes c, or nil and the reason. May yield.
*/
int ltls_client (lua_State *L, struct lconn *c, int idx, int opts,
                 const char *host) {
  int verify = 1, rc;
  const char *sni;
  size_t alpnlen;
  const char *alpn;
  void *ctx;
  if (opts != 0 && lua_getfield(L, opts, "verify") != LUA_TNIL)
    verify = lua_toboolean(L, -1);
  if (opts != 0) lua_pop(L, 1);
  sni = optstring(L, opts, "sni");
  if (sni == NULL) sni = host;
  if ((ctx = client_ctx(L, opts, verify)) == NULL) {
    drop(c);
    luaL_pushfail(L);
    lua_insert(L, -2);
    return 2;
  }
  push_alpn(L, opts);
  alpn = lua_tolstring(L, -1, &alpnlen);
  rc = tls_client_start(&c->io, ctx, sni, verify,
                        (const unsigned char *)alpn, alpnlen);
  lua_pop(L, 1);
  if (rc < 0) return fail(L, c, HS_CONNECT, rc);
  lua_settop(L, idx);
  return handshake(L, c, 0, HS_CTX(HS_CONNECT, idx));
}

/* }====================================================== */


/* {====================================================== host names */

/* Pushes the weak-keyed table of connections' host names. */
static void push_hosts (lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &hosts_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &hosts_key);
}


void ltls_set_host (lua_State *L, int idx, const char *host) {
  unsigned char ip[16];
  if (host == NULL || inet_pton(AF_INET, host, ip) == 1 ||
      inet_pton(AF_INET6, host, ip) == 1)
    return;  /* the peer's address says it already */
  idx = lua_absindex(L, idx);
  push_hosts(L);
  lua_pushvalue(L, idx);
  lua_pushstring(L, host);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  ((struct lconn *)lua_touserdata(L, idx))->io.flags |= LC_HOSTNAME;
}


char *ltls_dup_host (lua_State *L, int idx) {
  char *host = NULL;
  struct lconn *c = lua_touserdata(L, idx);
  if (!(c->io.flags & LC_HOSTNAME)) return NULL;  /* the usual: none */
  idx = lua_absindex(L, idx);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &hosts_key) == LUA_TTABLE) {
    lua_pushvalue(L, idx);
    if (lua_rawget(L, -2) == LUA_TSTRING) host = strdup(lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return host;
}


/*
** The name outbound c (at index 1) verifies by default: the host given
** to luasrv.connect, or the peer's address when that was one (an IP
** address is checked against the certificate's IP names). In buf.
*/
static const char *default_name (lua_State *L, struct lconn *c, char *buf,
                                  size_t len) {
  int port;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &hosts_key) == LUA_TTABLE) {
    lua_pushvalue(L, 1);
    if (lua_rawget(L, -2) == LUA_TSTRING) {
      snprintf(buf, len, "%s", lua_tostring(L, -1));
      lua_pop(L, 2);
      return buf;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (address_host_port((struct sockaddr *)&c->peer, buf, len, &port) < 0 ||
      buf[0] == '\0')
    return NULL;
  return buf;
}

/* }====================================================== */


/*
** req:starttls{...}: before anything is flushed, pushes its server
** context (or nil: the listener's) and its protocols in wire form (or
** nil: --tls-alpn's) above conn and opts; 0, or 2 with nil, msg pushed.
*/
static int server_opts (lua_State *L, struct lconn *c) {
  const char *cert = NULL, *key;
  int opts = lua_istable(L, 2) ? 2 : 0;
  if (opts) {
    cert = optstring(L, opts, "cert");
    key = optstring(L, opts, "key");
    if (key != NULL && cert == NULL)
      luaL_error(L, "bad option 'key' to 'starttls' (it goes with 'cert')");
  }
  if (cert == NULL) lua_pushnil(L);
  else if (push_server(L, c->x, cert, key ? key : cert) == 2) {
    drop(c);
    return 2;
  }
  if (opts == 0 || lua_getfield(L, opts, "alpn") == LUA_TNIL) {
    if (opts == 0) lua_pushnil(L);  /* else getfield's nil: none */
    return 0;
  }
  lua_pop(L, 1);
  push_alpn(L, opts);
  if (lua_rawlen(L, -1) > 255)
    luaL_error(L, "bad option 'alpn' to 'starttls' (too long)");
  return 0;
}


/* req:starttls([opts]) and conn:starttls([opts]) */
int ltls_starttls (lua_State *L) {
  static const char *const client_keys[] = {"verify", "ca", "cert", "key",
                                            "sni", "alpn", NULL};
  static const char *const server_keys[] = {"cert", "key", "alpn", NULL};
  struct lconn *c = luaL_checkudata(L, 1, LCONN_MT);
  char host[256];
  luaL_argcheck(L, lua_isnoneornil(L, 2) || lua_istable(L, 2), 2,
                "table expected");
  lua_settop(L, 2);
  if (lua_istable(L, 2))  /* misuse raises before anything happens */
    check_keys(L, c->lindex < 0 ? client_keys : server_keys);  /* outbound? */
  if (c->io.flags & LC_CLOSED) {
    luaL_pushfail(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  if (c->io.tls != NULL || (c->io.flags & (LC_DGRAM | LC_UDP)) ||
      (c->io.tr != &conn_stream && c->io.tr != &conn_outbound)) {
    luaL_pushfail(L);
    lua_pushstring(L, c->io.tls ? "already TLS" : "not a stream");
    return 2;
  }
  c->deadline = -1;
  if (c->io.flags & LC_OUTBOUND)
    return ltls_client(L, c, 1, lua_istable(L, 2) ? 2 : 0,
                       default_name(L, c, host, sizeof host));
  if (server_opts(L, c) != 0) return 2;
  return handshake(L, c, 0, HS_CTX(HS_FLUSH, 1));
}


void ltls_push_info (lua_State *L, struct lconn *c) {
  struct tls_info in;
  if (c->io.tls == NULL || (c->io.flags & LC_CLOSED)) {
    lua_pushnil(L);
    return;
  }
  tls_get_info(&c->io, &in);
  lua_createtable(L, 0, 6);
  lua_pushstring(L, in.version);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, in.cipher);
  lua_setfield(L, -2, "cipher");
  if (in.sni != NULL) {
    lua_pushstring(L, in.sni);
    lua_setfield(L, -2, "sni");
  }
  if (in.alpnlen > 0) {
    lua_pushlstring(L, (const char *)in.alpn, in.alpnlen);
    lua_setfield(L, -2, "alpn");
  }
  lua_pushboolean(L, in.resumed);
  lua_setfield(L, -2, "resumed");
  if (in.has_peer) {
    lua_createtable(L, 0, 5);
    lua_pushstring(L, in.subject);
    lua_setfield(L, -2, "subject");
    lua_pushstring(L, in.issuer);
    lua_setfield(L, -2, "issuer");
    lua_pushstring(L, in.serial);
    lua_setfield(L, -2, "serial");
    lua_pushstring(L, in.fingerprint);
    lua_setfield(L, -2, "fingerprint");
    lua_pushstring(L, in.expiry);
    lua_setfield(L, -2, "expiry");
    lua_setfield(L, -2, "peer");
  }
}
