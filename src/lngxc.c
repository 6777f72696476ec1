/*
** lngxc.c -- require "luasrv.ngxc": the few functions luasrv.ngx needs
** that Lua cannot do well by itself: digests and HMAC from OpenSSL's
** libcrypto (md5, sha1, hmac_sha1), CRC-32, base64 as nginx does it, the
** wall clock with microseconds, getpid, whether the worker is stopping
** (ngx.worker.exiting), the null light userdata and LuaJIT's
** table.new; lngxsock.c adds
** ngx.socket.tcp's object and lws.c luasrv.websocket's frames.
** Everything else of the ngx API is Lua, in lua/luasrv/ngx.lua. Misuse raises; decode_base64 of
** bad input returns nil, as ngx.decode_base64 does.
*/
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <lauxlib.h>
#include <lua.h>

#include "lsrv.h"

int luaopen_luasrv_ngxc (lua_State *L);
void lws_open (lua_State *L);  /* lws.c: the WebSocket frames */


/* {====================================================== digests */

static int digest (lua_State *L, const EVP_MD *md) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!EVP_Digest(s, len, out, &n, md, NULL))
    return luaL_error(L, "digest failed");
  lua_pushlstring(L, (const char *)out, n);
  return 1;
}


static int ngx_md5_bin (lua_State *L) { return digest(L, EVP_md5()); }
static int ngx_sha1_bin (lua_State *L) { return digest(L, EVP_sha1()); }
static int ngx_sha256_bin (lua_State *L) { return digest(L, EVP_sha256()); }


/* ngx.md5: the digest in lower-case hexadecimal. */
static int ngx_md5 (lua_State *L) {
  static const char hex[] = "0123456789abcdef";
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned char out[EVP_MAX_MD_SIZE];
  char txt[2 * EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!EVP_Digest(s, len, out, &n, EVP_md5(), NULL))
    return luaL_error(L, "digest failed");
  for (unsigned int i = 0; i < n; i++) {
    txt[2 * i] = hex[out[i] >> 4];
    txt[2 * i + 1] = hex[out[i] & 15];
  }
  lua_pushlstring(L, txt, 2 * n);
  return 1;
}


static int ngx_hmac_sha1 (lua_State *L) {
  size_t klen, len;
  const char *key = luaL_checklstring(L, 1, &klen);
  const char *s = luaL_checklstring(L, 2, &len);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (HMAC(EVP_sha1(), key, (int)klen, (const unsigned char *)s, len, out,
           &n) == NULL)
    return luaL_error(L, "hmac failed");
  lua_pushlstring(L, (const char *)out, n);
  return 1;
}


/* CRC-32 (IEEE 802.3, zlib's), as ngx.crc32_short and ngx.crc32_long. */
static int ngx_crc32 (lua_State *L) {
  static uint32_t table[256];
  size_t len;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
  uint32_t crc = 0xffffffffu;
  if (table[1] == 0) {  /* filled once; the same values whoever races */
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
  }
  for (size_t i = 0; i < len; i++)
    crc = table[(crc ^ s[i]) & 0xff] ^ (crc >> 8);
  lua_pushinteger(L, (lua_Integer)(crc ^ 0xffffffffu));
  return 1;
}

/* }====================================================== */


/* {====================================================== base64 */

static const char b64[] =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";


/* encode_base64(s [, no_padding]) */
static int ngx_encode_base64 (lua_State *L) {
  size_t len, i;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
  int pad = !lua_toboolean(L, 2);
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, (len + 2) / 3 * 4);
  char *q = p;
  for (i = 0; i + 2 < len; i += 3) {
    *q++ = b64[s[i] >> 2];
    *q++ = b64[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
    *q++ = b64[((s[i + 1] & 15) << 2) | (s[i + 2] >> 6)];
    *q++ = b64[s[i + 2] & 63];
  }
  if (i < len) {
    *q++ = b64[s[i] >> 2];
    if (i + 1 < len) {
      *q++ = b64[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
      *q++ = b64[(s[i + 1] & 15) << 2];
    }
    else *q++ = b64[(s[i] & 3) << 4];
    if (pad) {
      if (i + 1 >= len) *q++ = '=';
      *q++ = '=';
    }
  }
  luaL_pushresultsize(&b, (size_t)(q - p));
  return 1;
}


static int b64val (unsigned char c) {
  const char *p = c ? strchr(b64, c) : NULL;
  return p ? (int)(p - b64) : -1;
}


/*
** decode_base64(s): padding is optional, as in nginx; any other byte
** outside the alphabet, or a length that cannot be base64, gives nil.
*/
static int ngx_decode_base64 (lua_State *L) {
  size_t len, n = 0;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
  while (len > 0 && s[len - 1] == '=' && n < 2) { len--; n++; }
  if (len % 4 == 1) { luaL_pushfail(L); return 1; }
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, len / 4 * 3 + 3);
  char *q = p;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < len; i++) {
    int v = b64val(s[i]);
    if (v < 0) { luaL_pushfail(L); return 1; }
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      *q++ = (char)((acc >> bits) & 0xff);
    }
  }
  luaL_pushresultsize(&b, (size_t)(q - p));
  return 1;
}

/* }====================================================== */


/* The wall clock in seconds, a float with microseconds. */
static int ngx_now (lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}


static int ngx_getpid (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}


/*
** exiting(): is the worker stopping (SIGTERM, a reload's old generation,
** server:shutdown())? The state luasrv.timer's "process exiting" comes
** from. worker_signals turns a stop signal the loop has not seen yet into
** the stop; a fork-model request's child hears of its worker's stop by
** its own SIGTERM (worker_signals_child).
*/
static int ngx_exiting (lua_State *L) {
  struct worker *w = lsrv_ctx(L)->w;
  worker_signals(w);
  lua_pushboolean(L, worker_stopping(w));
  return 1;
}


/*
** mask(data, key): data XORed with the 4-byte key repeated, as WebSocket
** frames are masked (RFC 6455 5.3; luasrv.websocket). In Lua it costs
** about 4 us for 64 bytes and runs at 60 MB/s.
*/
static int ngx_mask (lua_State *L) {
  size_t len, klen;
  const char *s = luaL_checklstring(L, 1, &len);
  const unsigned char *key = (const unsigned char *)luaL_checklstring(L, 2,
    &klen);
  luaL_argcheck(L, klen == 4, 2, "a 4-byte key is expected");
  luaL_Buffer b;
  unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, len);
  for (size_t i = 0; i < len; i++)
    out[i] = (unsigned char)s[i] ^ key[i & 3];
  luaL_pushresultsize(&b, len);
  return 1;
}


/*
** table_new(narr, nrec): LuaJIT's table.new, a table with room for narr
** array items and nrec others made at once (lua_createtable). Past
** TABLE_PRESIZE each is only a hint that is not taken: a table grows.
** resty.redis builds each command's request in one (11 items for a GET),
** which grew four times from {}.
*/
#define TABLE_PRESIZE 65536

static int presize (lua_State *L, int arg) {
  lua_Integer n = luaL_optinteger(L, arg, 0);
  return n < 0 || n > TABLE_PRESIZE ? 0 : (int)n;
}


static int ngx_table_new (lua_State *L) {
  lua_createtable(L, presize(L, 1), presize(L, 2));
  return 1;
}


static const luaL_Reg funcs[] = {
  {"mask", ngx_mask},
  {"md5", ngx_md5},
  {"md5_bin", ngx_md5_bin},
  {"sha1_bin", ngx_sha1_bin},
  {"sha256_bin", ngx_sha256_bin},
  {"hmac_sha1", ngx_hmac_sha1},
  {"crc32", ngx_crc32},
  {"encode_base64", ngx_encode_base64},
  {"decode_base64", ngx_decode_base64},
  {"now", ngx_now},
  {"getpid", ngx_getpid},
  {"table_new", ngx_table_new},
  {"exiting", ngx_exiting},
  {NULL, NULL}
};


int luaopen_luasrv_ngxc (lua_State *L) {
  luaL_newlib(L, funcs);
  lws_open(L);  /* ws_recv, ws_send, ws_unread, utf8_valid */
  lngxsock_open(L);  /* tcp, its methods, join, scan */
  lua_pushlightuserdata(L, NULL);  /* ngx.null: the same value as cjson.null */
  lua_setfield(L, -2, "null");
  return 1;
}
