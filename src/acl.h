/*
** acl.h -- --allow and --deny: client address rules checked in C, before
** any Lua runs. Rules are tried in the order given and the first that
** matches decides; when none matches, the client is refused if any
** --allow rule exists (a whitelist), else accepted. Unix clients always
** pass (the socket file's mode guards them).
*/
#ifndef LUASRV_ACL_H
#define LUASRV_ACL_H

#include <stddef.h>
#include <sys/socket.h>

struct acl_rule {
  int allow;                  /* 1: --allow, 0: --deny */
  int family;                 /* AF_INET, AF_INET6, or AF_UNSPEC for "all" */
  int prefix;                 /* bits that must match */
  unsigned char addr[16];
};

/*
** Parses "10.0.0.0/8", "192.168.1.7", "fe80::/10", "::1" or "all" into r.
** Returns 0, or -1 with the reason in err.
*/
int acl_parse (const char *text, int allow, struct acl_rule *r, char *err,
               size_t errlen);

/* 1 when the client at sa may connect under rules[0..n), else 0. */
int acl_allows (const struct acl_rule *rules, int n, const struct sockaddr *sa);

#endif
