/*
** cli.h -- the command line: argv to struct config, and the usage text.
** Nothing here opens sockets or loads scripts.
*/
#ifndef LUASRV_CLI_H
#define LUASRV_CLI_H

#include <stddef.h>
#include "address.h"
#include "acl.h"

#define LUASRV_VERSION "0.1.0"
#define CLI_MAX_LISTEN 64
#define CLI_MAX_ACL 64
#define CLI_MAX_SHARED 64
#define CLI_MAX_CERTS 16

enum model_kind { MODEL_SYNC, MODEL_FORK, MODEL_THREAD, MODEL_EVENT };

struct listen_spec {
  enum transport tr;
  const char *text;           /* as given, e.g. "127.0.0.1:0" */
};

struct shared_spec {          /* --shared NAME:SIZE */
  char name[64];
  size_t size;
};

struct config {
  const char *script;
  int check;                  /* --check: load, validate, exit */
  struct listen_spec listen[CLI_MAX_LISTEN];
  int nlisten;
  enum model_kind model;
  int workers;
  int max_children;
  int max_threads;
  int max_connections;
  double timeout;             /* seconds; 0 = never */
  size_t max_line;
  double grace;
  int backlog;
  int once;
  size_t memory_limit;        /* per Lua state; 0 = none */
  double cpu_limit;           /* CPU seconds per request; 0 = none */
  int max_per_source;         /* connections per client IP; 0 = no limit */
  const char *metrics;        /* --metrics ADDR: Prometheus endpoint */
  int access_log;             /* --access-log: a line per request */
  int proxy_protocol;         /* stream clients start with a PROXY header */
  struct acl_rule acl[CLI_MAX_ACL];  /* --allow, --deny in order */
  int nacl;
  struct shared_spec shared[CLI_MAX_SHARED];  /* --shared */
  int nshared;
  int reuse_port;
  int unix_mode;              /* -1 = leave to the umask */
  const char *user;
  int setuser;                /* main resolved --user into uid, gid */
  unsigned uid, gid;
  const char *pidfile;
  int log_json;
  int log_level;              /* enum log_level */
  /* TLS (tls.c): certificate and key pairs, the first is the default */
  const char *tls_cert[CLI_MAX_CERTS], *tls_key[CLI_MAX_CERTS];
  int ntls_cert, ntls_key;
  const char *tls_client_ca;  /* --tls-client-ca */
  int tls_verify_client;      /* 0 none, 1 optional, 2 required */
  int tls_min_version;        /* 12 or 13 */
  const char *tls_ciphers;
  const char *tls_alpn;       /* "h2,http/1.1" */
  double tls_ticket_rotate;   /* seconds a ticket key is the current one */
};

enum cli_result { CLI_RUN, CLI_EXIT_OK, CLI_USAGE };

/*
** Fills cfg from argv. CLI_EXIT_OK: --help or --version was printed to
** stdout. CLI_USAGE: err holds the reason; the caller prints it and the
** usage to stderr and exits 2.
*/
enum cli_result cli_parse (int argc, char **argv, struct config *cfg,
                           char *err, size_t errlen);

const char *cli_usage_text (void);
const char *model_name (enum model_kind m);

#endif
