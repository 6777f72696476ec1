/*
** address.h -- parse and format listener and peer addresses.
** "[HOST]:PORT" for inet transports (names are resolved), a path for Unix
** ones. No sockets are opened here, so it can be tested alone.
*/
#ifndef LUASRV_ADDRESS_H
#define LUASRV_ADDRESS_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

enum transport { TR_TCP, TR_UDP, TR_UNIX, TR_UNIXGRAM, TR_TLS };  /* TLS: over TCP */

struct address {
  enum transport tr;
  struct sockaddr_storage sa;   /* AF_INET, AF_INET6 or AF_UNIX */
  socklen_t salen;
};

/* Longest Unix socket path we accept (sun_path minus the terminator). */
#define ADDRESS_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

/* Room for any formatted address. */
#define ADDRESS_STRLEN 160

const char *transport_name (enum transport tr);
int transport_is_stream (enum transport tr);

/*
** Splits "[HOST]:PORT", "HOST:PORT", ":PORT" or "PORT" into host and port.
** Brackets are removed; an empty host stays empty. Returns 0 or -1 with a
** reason in err.
*/
int address_split (const char *text, char *host, size_t hostlen,
                   char *port, size_t portlen, char *err, size_t errlen);

/*
** Fills out from text for transport tr. Inet hosts are resolved with
** getaddrinfo (the first result is used); an empty host means 0.0.0.0.
** Returns 0 or -1 with a one-line reason in err.
*/
int address_parse (enum transport tr, const char *text, struct address *out,
                   char *err, size_t errlen);

/* "tcp://127.0.0.1:80", "udp://[::1]:53", "unix:/run/x.sock". */
void address_format (const struct address *a, char *buf, size_t len);

/* A peer as users see it: "127.0.0.1:5000", "[::1]:5000", "unix:PATH". */
void address_format_peer (const struct sockaddr *sa, socklen_t salen,
                          char *buf, size_t len);

/* Numeric host and port of an inet address; returns -1 for other families. */
int address_host_port (const struct sockaddr *sa, char *host, size_t hostlen,
                       int *port);

#endif
