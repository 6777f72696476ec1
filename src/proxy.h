/*
** proxy.h -- the PROXY protocol (HAProxy's, versions 1 and 2): the header
** a proxy sends first on a connection to say who the client really is.
** Pure parsing, no I/O: the request object feeds it what it has read.
*/
#ifndef LUASRV_PROXY_H
#define LUASRV_PROXY_H

#include <stddef.h>
#include <sys/socket.h>

#define PROXY_V1_MAX 107      /* the longest v1 line, CRLF included */
#define PROXY_V2_MAX (16 + 65535)

/*
** Parses the header at the start of buf[0..len). Returns the header's
** length once it is all there, with the client's address in *src
** (family AF_UNSPEC when the proxy speaks for itself: LOCAL or UNKNOWN,
** keep the connection's own peer); 0 when more bytes are needed; -1 when
** this is not a valid header, with the reason in err.
*/
long proxy_parse (const char *buf, size_t len, struct sockaddr_storage *src,
                  socklen_t *srclen, char *err, size_t errlen);

#endif
