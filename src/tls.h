/*
** tls.h -- TLS as one more transport of the connection layer (conn_tls,
** on OpenSSL 3), with no Lua: the server's certificates (built by the
** master before any worker starts, inherited across fork), client
** contexts for outbound connections, starting TLS on a connection, the
** handshake step and what a handler may ask about the session.
*/
#ifndef LUASRV_TLS_H
#define LUASRV_TLS_H

#include <stddef.h>

#include "cli.h"
#include "conn.h"

extern const struct conn_ops conn_tls;

/*
** Builds the server side from the --tls-* options: every certificate
** and key read and checked now (the master, before --user takes its
** rights away). On success the new set serves the connections started
** from now on (a reload's generation); on failure the old one stays and
** err names the file. Returns 0, or -1.
*/
int tls_server_load (const struct config *cfg, char *err, size_t errlen);

/*
** A reload, in the master: builds the next generation's set as
** tls_server_load does, but the current one goes on serving every
** worker forked until the new generation serves: a child of the new
** generation calls tls_server_use_next, the master tls_server_commit
** once that generation serves, or tls_server_discard when it failed
** (the old generation keeps its certificates, respawned workers too).
*/
int tls_server_load_next (const struct config *cfg, char *err, size_t errlen);
void tls_server_use_next (void);
void tls_server_commit (void);
void tls_server_discard (void);

/*
** The master: makes a new session ticket key when --tls-ticket-rotate says
** (tickets of the one before still resume); returns the monotonic time of
** the next rotation, 0 for none.
*/
double tls_rotate (double now);

/* Are server certificates loaded (--tls-cert)? */
int tls_server_ready (void);

/*
** Starts TLS on stream c as the server (the listener's certificates):
** input c already buffered is the first the handshake reads. 0 or
** -ENOMEM; the handshake is tls_handshake's.
*/
int tls_server_start (struct conn *c);

/*
** req:starttls{cert = ..., key = ...}: a server context of its own for
** cert and key, with the --tls-* settings (read now, by the caller's
** process). NULL with the reason in err.
*/
void *tls_server_new (const struct config *cfg, const char *cert,
                      const char *key, char *err, size_t errlen);
void tls_server_free (void *s);

/*
** tls_server_start with the certificates of s (NULL: the listener's) and
** protocols alpn in wire form (NULL: --tls-alpn's; at most 255 bytes).
** A failure leaves c with TLS started or not; the caller closes it.
*/
int tls_server_start_with (struct conn *c, void *s, const unsigned char *alpn,
                           size_t alpnlen);

/*
** A client context: trust ca (NULL: the system's store) when verify,
** present cert/key (NULL: none). NULL with the reason in err.
*/
void *tls_client_ctx (const char *ca, const char *cert, const char *key,
                      int verify, char *err, size_t errlen);
void tls_client_ctx_free (void *ctx);

/*
** Starts TLS on c as a client of ctx: sni is sent (not an IP address)
** and, when verify, the certificate must name it; alpn is in wire form
** (or NULL). 0 or a failure code.
*/
int tls_client_start (struct conn *c, void *ctx, const char *sni, int verify,
                      const unsigned char *alpn, size_t alpnlen);

/* One step of c's handshake: 0 done, CONN_WANT_*, or ERR_TLS. */
int tls_handshake (struct conn *c);

/*
** The service tick's part: the heap holes a burst of handshakes left go
** back to the system once none is in flight (tls.c says why).
*/
void tls_service (void);

/* Why the last TLS call of this thread failed (OpenSSL's reason). */
const char *tls_error (void);

/*
** May a failed handshake be logged now? At most one line a second across
** all processes; quiet gets how many were not logged before it.
*/
int tls_log_allowed (long *quiet);

/* The connection object holding c's bytes moves: its TLS goes with it. */
void tls_move (struct conn *from, struct conn *to);

/* About an established session (c->tls not NULL). */
struct tls_info {
  const char *version, *cipher, *sni;  /* sni may be NULL */
  const unsigned char *alpn;
  unsigned alpnlen;
  int resumed;
  int has_peer;               /* a verified peer certificate */
  char subject[256], issuer[256], serial[80], fingerprint[100], expiry[40];
};
void tls_get_info (struct conn *c, struct tls_info *info);

#endif
