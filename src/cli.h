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
  int max_timers;             /* luasrv.timer: pending + running per state */
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
  const char *log_file;       /* --log-file: the error log; NULL: stderr */
  double drain_delay;         /* --drain-delay: /readyz 503 before a stop */
  const char *admin;          /* --admin PATH: the console's socket */
  const char *config;         /* --config FILE, or NULL */
  char *config_text;          /* its text: the file's strings point into it */
  int activated;              /* main: systemd passed the listeners */
  int argc;                   /* as given: a reload re-reads them */
  char **argv;
  /* TLS (tls.c): certificate and key pairs, the first is the default */
  const char *tls_cert[CLI_MAX_CERTS], *tls_key[CLI_MAX_CERTS];
  int ntls_cert, ntls_key;
  const char *tls_client_ca;  /* --tls-client-ca */
  int tls_verify_client;      /* 0 none, 1 optional, 2 required */
  int tls_min_version;        /* 12 or 13 */
  const char *tls_ciphers;    /* TLS 1.2: SSL_CTX_set_cipher_list */
  const char *tls_ciphersuites;  /* TLS 1.3: SSL_CTX_set_ciphersuites */
  const char *tls_alpn;       /* "h2,http/1.1" */
  double tls_ticket_rotate;   /* seconds a ticket key is the current one */
};

enum cli_result { CLI_RUN, CLI_EXIT_OK, CLI_USAGE, CLI_CONFIG };

/*
** Fills cfg from argv, and from the file --config names first (the
** command line overrides it; a listener, --allow/--deny or --shared on
** the command line replaces the file's list of that kind). CLI_EXIT_OK:
** --help or --version was printed to stdout. CLI_USAGE: err holds the
** reason; the caller prints it and the usage to stderr and exits 2.
** CLI_CONFIG: the file cannot be read or has a bad line: err says
** "FILE:LINE: why"; no usage text.
*/
enum cli_result cli_parse (int argc, char **argv, struct config *cfg,
                           char *err, size_t errlen);

/*
** A reload: parses old's command line (and file) again into cfg. A
** server whose listeners systemd passed needs no listener option.
*/
enum cli_result cli_reparse (const struct config *old, struct config *cfg,
                             char *err, size_t errlen);

/*
** Parses the text of a configuration file (modified in place: cfg's
** strings point into it) on top of cfg; name is for the errors. 0, or -1
** with "NAME:LINE: why" in err.
*/
int cli_parse_text (const char *name, char *text, struct config *cfg,
                    char *err, size_t errlen);

/*
** After a reload: every option only a restart can change that differs in
** cfg gets old's value back, and changed(name) is called; returns how many.
*/
int cli_keep_restart_options (const struct config *old, struct config *cfg,
                              void (*changed) (const char *name, void *ud),
                              void *ud);

/* Frees what cli_parse allocated (the file's text). */
void cli_free (struct config *cfg);

const char *cli_usage_text (void);
const char *model_name (enum model_kind m);

#endif
