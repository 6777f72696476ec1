/*
** lproxy.c -- reading the PROXY protocol header (--proxy-protocol) at the
** start of a stream request, through the request object's own reads and
** waits, so it yields in the event model like any read. The request flow
** runs it before verify_request: client_address is then the client the
** proxy speaks for. A connection that does not start with a valid
** header is closed with one log line; no hook runs for it.
*/
#include <errno.h>
#include <string.h>
#include <sys/un.h>

#include <lauxlib.h>
#include <lua.h>

#include "evloop.h"
#include "log.h"
#include "lsrv.h"
#include "proxy.h"


/* Takes the header's source address as the client's, if it fits. */
static void take_source (struct lconn *c, const struct sockaddr_storage *src,
                         socklen_t len) {
  /* what the object was allocated to hold (it has not changed yet) */
  size_t room = LCONN_SIZE(c->peerlen) - offsetof(struct lconn, peer);
  if (src->ss_family == AF_UNSPEC || len == 0) return;  /* LOCAL, UNKNOWN */
  if (len > room) {  /* a v2 Unix path longer than the object holds */
    log_debug("PROXY header: a source address of %u bytes kept out", len);
    return;
  }
  memcpy(&c->peer, src, len);
  c->peerlen = len;
}


static int refuse (lua_State *L, struct lconn *c, const char *why) {
  char peer[ADDRESS_STRLEN];
  address_format_peer((struct sockaddr *)&c->peer, c->peerlen, peer,
                      sizeof peer);
  log_warn("closed a connection from %s: %s", peer, why);
  lconn_abort(c);
  lua_pushboolean(L, 0);
  return 1;
}


static int proxy_k (lua_State *L, int status, lua_KContext ctx) {
  struct lconn *c = lua_touserdata(L, 1);
  int rc = sched_result(L, status);
  char err[160];
  (void)ctx;
  while (rc >= 0) {
    struct sockaddr_storage src;
    socklen_t srclen = 0;
    long n = proxy_parse(buf_head(&c->io.in), buf_len(&c->io.in), &src, &srclen,
                         err, sizeof err);
    if (n < 0) return refuse(L, c, err);
    if (n > 0) {
      buf_consume(&c->io.in, (size_t)n);
      c->io.scan = 0;
      take_source(c, &src, srclen);
      c->io.flags &= ~LC_PROXY;
      lua_pushboolean(L, 1);
      return 1;
    }
    if ((rc = conn_fill(&c->io, 512)) > 0) continue;
    if (rc == 0)
      return refuse(L, c, "no PROXY protocol header (the client closed first)");
    if (!conn_wants(rc)) break;
    rc = lconn_waitio(L, c, conn_want_event(rc), 0, proxy_k);
  }
  snprintf(err, sizeof err, "no PROXY protocol header: %s", conn_strerror(rc));
  return refuse(L, c, err);
}


/*
** proxy(req) for the flow: true when the request may go on (no header
** expected, or a valid one read), false when it was refused and closed.
*/
int lconn_proxy (lua_State *L) {
  struct lconn *c = lua_touserdata(L, 1);
  if (c == NULL || c->tag != &lsrv_conn_tag || !(c->io.flags & LC_PROXY)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_settop(L, 1);
  c->deadline = -1;  /* the header's wait has the server's timeout */
  return proxy_k(L, LUA_OK, 0);
}
