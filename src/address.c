/*
** address.c -- parse and format listener and peer addresses.
** Pure functions over sockaddr structures; name resolution is the only
** thing here that can touch the network.
*/
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"

static const char *const tr_names[] = {"tcp", "udp", "unix", "unixgram", "tls"};


const char *transport_name (enum transport tr) {
  return tr_names[tr];
}


int transport_is_stream (enum transport tr) {
  return tr == TR_TCP || tr == TR_UNIX || tr == TR_TLS;
}


static int copy (char *dst, size_t cap, const char *src, size_t n) {
  if (n >= cap) return -1;
  memcpy(dst, src, n);
  dst[n] = '\0';
  return 0;
}


int address_split (const char *text, char *host, size_t hostlen,
                   char *port, size_t portlen, char *err, size_t errlen) {
  const char *colon, *p;
  size_t hn;
  if (text[0] == '[') {  /* [v6]:port */
    const char *close = strchr(text, ']');
    if (close == NULL || close[1] != ':') {
      snprintf(err, errlen, "bad address '%s' (expected [HOST]:PORT)", text);
      return -1;
    }
    if (copy(host, hostlen, text + 1, (size_t)(close - text - 1)) < 0)
      goto toolong;
    p = close + 2;
  }
  else if ((colon = strrchr(text, ':')) != NULL) {
    hn = (size_t)(colon - text);
    if (memchr(text, ':', hn) != NULL) {  /* v6 literal without brackets */
      snprintf(err, errlen, "bad address '%s' (write IPv6 as [HOST]:PORT)",
               text);
      return -1;
    }
    if (copy(host, hostlen, text, hn) < 0) goto toolong;
    p = colon + 1;
  }
  else {  /* a bare port */
    host[0] = '\0';
    p = text;
    if (*p != '\0' && strspn(p, "0123456789") != strlen(p)) {
      snprintf(err, errlen, "missing port in address '%s' (expected "
               "HOST:PORT, e.g. %s:9000)", text, text);
      return -1;
    }
  }
  if (*p == '\0') {
    snprintf(err, errlen, "missing port in address '%s' (expected "
             "HOST:PORT)", text);
    return -1;
  }
  if (strspn(p, "0123456789") != strlen(p) || atol(p) > 65535
      || strlen(p) > 5) {
    snprintf(err, errlen, "bad port in address '%s' (expected 0-65535)", text);
    return -1;
  }
  return copy(port, portlen, p, strlen(p));
toolong:
  snprintf(err, errlen, "host name too long in '%s'", text);
  return -1;
}


static int parse_inet (const char *text, struct address *out,
                       char *err, size_t errlen) {
  char host[256], port[8];
  struct addrinfo hints, *res;
  int rc;
  if (address_split(text, host, sizeof host, port, sizeof port,
                    err, errlen) < 0)
    return -1;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = out->tr == TR_TCP || out->tr == TR_TLS ? SOCK_STREAM : SOCK_DGRAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  rc = getaddrinfo(host[0] ? host : "0.0.0.0", port, &hints, &res);
  if (rc != 0) {
    snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
    return -1;
  }
  memcpy(&out->sa, res->ai_addr, res->ai_addrlen);
  out->salen = res->ai_addrlen;
  freeaddrinfo(res);
  return 0;
}


static int parse_unix (const char *text, struct address *out,
                       char *err, size_t errlen) {
  struct sockaddr_un *sun = (struct sockaddr_un *)&out->sa;
  size_t n = strlen(text);
  if (n == 0) {
    snprintf(err, errlen, "empty Unix socket path");
    return -1;
  }
  if (n > ADDRESS_PATH_MAX) {
    snprintf(err, errlen, "Unix socket path too long (%zu bytes, at most %zu): %s",
             n, ADDRESS_PATH_MAX, text);
    return -1;
  }
  memset(sun, 0, sizeof *sun);
  sun->sun_family = AF_UNIX;
  memcpy(sun->sun_path, text, n);
  out->salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  return 0;
}


int address_parse (enum transport tr, const char *text, struct address *out,
                   char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  out->tr = tr;
  if (tr == TR_TCP || tr == TR_UDP || tr == TR_TLS)
    return parse_inet(text, out, err, errlen);
  return parse_unix(text, out, err, errlen);
}


int address_host_port (const struct sockaddr *sa, char *host, size_t hostlen,
                       int *port) {
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    inet_ntop(AF_INET, &in->sin_addr, host, (socklen_t)hostlen);
    *port = ntohs(in->sin_port);
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &in6->sin6_addr, host, (socklen_t)hostlen);
    *port = ntohs(in6->sin6_port);
    return 0;
  }
  return -1;
}


/* The path of a Unix address; "" for unnamed sockets. */
static void unix_path (const struct sockaddr *sa, socklen_t salen,
                       char *buf, size_t len) {
  const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
  size_t off = offsetof(struct sockaddr_un, sun_path);
  size_t n = salen > off ? salen - off : 0;
  if (n > 0 && sun->sun_path[0] == '\0') n = 0;  /* abstract: not shown */
  n = strnlen(sun->sun_path, n);
  if (n >= len) n = len - 1;
  memcpy(buf, sun->sun_path, n);
  buf[n] = '\0';
}


void address_format_peer (const struct sockaddr *sa, socklen_t salen,
                          char *buf, size_t len) {
  char host[INET6_ADDRSTRLEN], path[ADDRESS_PATH_MAX + 1];
  int port;
  if (address_host_port(sa, host, sizeof host, &port) == 0)
    snprintf(buf, len, sa->sa_family == AF_INET6 ? "[%s]:%d" : "%s:%d",
             host, port);
  else if (sa->sa_family == AF_UNIX) {
    unix_path(sa, salen, path, sizeof path);
    snprintf(buf, len, "unix:%s", path);
  }
  else
    snprintf(buf, len, "?");
}


void address_format (const struct address *a, char *buf, size_t len) {
  char peer[ADDRESS_STRLEN];
  address_format_peer((const struct sockaddr *)&a->sa, a->salen,
                      peer, sizeof peer);
  if (a->tr == TR_TCP || a->tr == TR_UDP || a->tr == TR_TLS)
    snprintf(buf, len, "%s://%s", transport_name(a->tr), peer);
  else  /* "unix:PATH" -> "unixgram:PATH" as needed */
    snprintf(buf, len, "%s:%s", transport_name(a->tr), peer + 5);
}
