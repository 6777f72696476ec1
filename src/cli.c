/*
** cli.c -- the command line, table-driven: each option names its kind of
** value and where it goes. "--opt VALUE" and "--opt=VALUE" both work.
*/
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl.h"
#include "cli.h"
#include "log.h"

static const char usage_text[] =
"usage: luasrv SCRIPT [OPTIONS]\n"
"       luasrv --config FILE [SCRIPT] [OPTIONS]\n"
"       luasrv --check SCRIPT | --check --config FILE\n"
"       luasrv ctl SOCKET status|workers|connections|shared [NAME [KEY]]|\n"
"                         eval WORKER CODE|reload|drain\n"
"       luasrv --help | --version\n"
"\n"
"Listeners (repeatable, at least one):\n"
"  --tcp [HOST]:PORT      TCP; [::1]:PORT for IPv6; PORT 0 = any free port;\n"
"                         PORT or :PORT alone listens on every interface\n"
"                         (0.0.0.0): 127.0.0.1:PORT serves this machine only\n"
"  --udp [HOST]:PORT      UDP, same forms\n"
"  --unix PATH            Unix stream socket\n"
"  --unixgram PATH        Unix datagram socket\n"
"  --tls [HOST]:PORT      TLS over TCP, same forms as --tcp (needs --tls-cert)\n"
"\n"
"TLS (see doc/tls.md):\n"
"  --tls-cert FILE        certificate chain, PEM (repeatable, in pairs with\n"
"                         --tls-key; the client's SNI name picks the one that\n"
"                         names it, the first is the default)\n"
"  --tls-key FILE         its private key, PEM (read before --user applies)\n"
"  --tls-client-ca FILE   CA certificates that client certificates must chain to\n"
"  --tls-verify-client M  required or optional (default optional with\n"
"                         --tls-client-ca)\n"
"  --tls-min-version V    1.2 or 1.3 (default 1.2)\n"
"  --tls-ciphers LIST     OpenSSL cipher list for TLS 1.2\n"
"  --tls-ciphersuites LIST  TLS 1.3 cipher suites, in order, separated by ':'\n"
"  --tls-alpn LIST        protocols accepted, in order, e.g. h2,http/1.1\n"
"  --tls-ticket-rotate SECS  a new session ticket key this often; sessions\n"
"                         resume across one rotation (default 43200, 0 = never)\n"
"\n"
"Concurrency and limits:\n"
"  --model MODEL          sync, fork, thread or event (default event)\n"
"  --workers N            worker processes (default 1)\n"
"  --max-children N       fork: children alive at once (default 40)\n"
"  --max-threads N        thread: handler threads at once (default 256)\n"
"  --max-timers N         timers pending or running per state (default 1024)\n"
"  --max-connections N    event: open connections per worker (default 10000)\n"
"  --timeout SECS         read/write timeout, 0 = never (default 60)\n"
"  --max-line BYTES       longest line a read accepts (default 65536)\n"
"  --grace SECS           shutdown: time in-flight requests get (default 10)\n"
"  --backlog N            listen backlog (default 511)\n"
"  --once                 serve one request (connection or datagram), then exit\n"
"  --memory-limit BYTES   memory each Lua state may use (k, m, g suffixes; default: none)\n"
"  --max-per-source N     connections one client IP may hold per worker\n"
"  --cpu-limit SECS       CPU time a request may use (default: none)\n"
"  --shared NAME:SIZE     a dictionary in shared memory, luasrv.shared.NAME\n"
"                         (repeatable; SIZE with k or m, e.g. 10m)\n"
"  --allow CIDR           accept clients from CIDR (repeatable; first match wins)\n"
"  --deny CIDR            refuse clients from CIDR (\"all\" matches any address)\n"
"\n"
"Operations:\n"
"  --config FILE          read options from FILE, one a line as on the command\n"
"                         line (\"workers 4\", \"script /srv/app.lua\", # comments);\n"
"                         the command line overrides it; SIGHUP re-reads it\n"
"  --log-file FILE        the error log (and --access-log lines) go to FILE,\n"
"                         not stderr; SIGUSR1 reopens it (log rotation)\n"
"  --admin PATH           a Unix socket (mode 0600) for \"luasrv ctl PATH ...\":\n"
"                         whoever can open it controls the server\n"
"  --drain-delay SECS     on SIGTERM, answer 503 on /readyz for SECS before\n"
"                         the workers stop (default 0)\n"
"  --reuse-port           set SO_REUSEPORT on inet listeners\n"
"  --unix-mode MODE       octal mode for Unix socket files (e.g. 660)\n"
"  --user USER[:GROUP]    drop privileges to USER after binding\n"
"  --pidfile PATH         write the server's pid to PATH\n"
"  --log-format FMT       text or json (default text)\n"
"  --proxy-protocol       stream clients come through a proxy that sends a PROXY\n"
"                         protocol header (v1 or v2) first: it is required\n"
"  --access-log           log a line per request (client, bytes, time, outcome)\n"
"  --metrics [HOST]:PORT  the master serves /metrics (Prometheus), /healthz,\n"
"                         /readyz and /status (JSON) there\n"
"  --log-level LEVEL      error, warn, info or debug (default info)\n"
"  --quiet                same as --log-level warn\n"
"\n"
"  --check SCRIPT         load SCRIPT, check its hooks, exit 0 or 1\n"
"  --help, --version\n";

enum kind { K_FLAG, K_INT, K_SECS, K_SIZE, K_STR, K_LISTEN, K_MODEL, K_MODE,
            K_LOGFMT, K_LOGLEVEL, K_QUIET, K_ACL, K_SHARED, K_CONFIG,
            K_CERT, K_VERIFY, K_TLSVER };

/* What a reload (SIGHUP re-reading --config) can change of an option. */
enum { R_YES, R_RESTART, R_NEVER };

struct option {
  const char *name;
  enum kind kind;
  size_t off;                 /* offsetof(struct config, field) */
  long min, max;              /* for K_INT */
  int tr;                     /* for K_LISTEN */
  int reload;                 /* R_YES: a reload applies it */
};

#define F(field) offsetof(struct config, field)

static const struct option options[] = {
  {"tcp", K_LISTEN, 0, 0, 0, TR_TCP, R_YES},
  {"udp", K_LISTEN, 0, 0, 0, TR_UDP, R_YES},
  {"unix", K_LISTEN, 0, 0, 0, TR_UNIX, R_YES},
  {"unixgram", K_LISTEN, 0, 0, 0, TR_UNIXGRAM, R_YES},
  {"tls", K_LISTEN, 0, 0, 0, TR_TLS, R_YES},
  {"tls-cert", K_CERT, 0, 0, 0, 0, R_YES},
  {"tls-key", K_CERT, 0, 0, 0, 1, R_YES},
  {"tls-client-ca", K_STR, F(tls_client_ca), 0, 0, 0, R_YES},
  {"tls-verify-client", K_VERIFY, F(tls_verify_client), 0, 0, 0, R_YES},
  {"tls-min-version", K_TLSVER, F(tls_min_version), 0, 0, 0, R_YES},
  {"tls-ciphers", K_STR, F(tls_ciphers), 0, 0, 0, R_YES},
  {"tls-ciphersuites", K_STR, F(tls_ciphersuites), 0, 0, 0, R_YES},
  {"tls-alpn", K_STR, F(tls_alpn), 0, 0, 0, R_YES},
  {"tls-ticket-rotate", K_SECS, F(tls_ticket_rotate), 0, 0, 0, R_RESTART},
  {"model", K_MODEL, F(model), 0, 0, 0, R_RESTART},
  {"workers", K_INT, F(workers), 1, 1024, 0, R_RESTART},
  {"max-children", K_INT, F(max_children), 1, 100000, 0, R_YES},
  {"max-threads", K_INT, F(max_threads), 1, 100000, 0, R_YES},
  {"max-timers", K_INT, F(max_timers), 1, 10000000, 0, R_YES},
  {"max-connections", K_INT, F(max_connections), 1, 10000000, 0, R_YES},
  {"timeout", K_SECS, F(timeout), 0, 0, 0, R_YES},
  {"max-line", K_SIZE, F(max_line), 0, 0, 0, R_YES},
  {"grace", K_SECS, F(grace), 0, 0, 0, R_YES},
  {"backlog", K_INT, F(backlog), 1, 1000000, 0, R_RESTART},
  {"once", K_FLAG, F(once), 0, 0, 0, R_YES},
  {"memory-limit", K_SIZE, F(memory_limit), 0, 0, 0, R_YES},
  {"cpu-limit", K_SECS, F(cpu_limit), 0, 0, 0, R_YES},
  {"max-per-source", K_INT, F(max_per_source), 1, 10000000, 0, R_YES},
  {"metrics", K_STR, F(metrics), 0, 0, 0, R_RESTART},
  {"access-log", K_FLAG, F(access_log), 0, 0, 0, R_YES},
  {"proxy-protocol", K_FLAG, F(proxy_protocol), 0, 0, 0, R_YES},
  {"shared", K_SHARED, 0, 0, 0, 0, R_RESTART},
  {"allow", K_ACL, 0, 0, 0, 1, R_YES},
  {"deny", K_ACL, 0, 0, 0, 0, R_YES},
  {"reuse-port", K_FLAG, F(reuse_port), 0, 0, 0, R_RESTART},
  {"unix-mode", K_MODE, F(unix_mode), 0, 0, 0, R_RESTART},
  {"user", K_STR, F(user), 0, 0, 0, R_RESTART},
  {"pidfile", K_STR, F(pidfile), 0, 0, 0, R_RESTART},
  {"log-format", K_LOGFMT, F(log_json), 0, 0, 0, R_YES},
  {"log-level", K_LOGLEVEL, F(log_level), 0, 0, 0, R_YES},
  {"quiet", K_QUIET, F(log_level), 0, 0, 0, R_YES},
  {"log-file", K_STR, F(log_file), 0, 0, 0, R_YES},
  {"drain-delay", K_SECS, F(drain_delay), 0, 0, 0, R_YES},
  {"admin", K_STR, F(admin), 0, 0, 0, R_RESTART},
  {"config", K_CONFIG, F(config), 0, 0, 0, R_NEVER},
  {"check", K_FLAG, F(check), 0, 0, 0, R_NEVER},
};

static const char *const model_names[] = {"sync", "fork", "thread", "event"};


const char *cli_usage_text (void) {
  return usage_text;
}


const char *model_name (enum model_kind m) {
  return model_names[m];
}


static void defaults (struct config *c) {
  memset(c, 0, sizeof *c);
  c->model = MODEL_EVENT;
  c->workers = 1;
  c->max_children = 40;
  c->max_threads = 256;
  c->max_timers = 1024;
  c->max_connections = 10000;
  c->timeout = 60;
  c->max_line = 65536;
  c->grace = 10;
  c->backlog = 511;
  c->unix_mode = -1;
  c->log_level = LOG_INFO;
  c->tls_ticket_rotate = 43200;
}


static const struct option *find (const char *name, size_t n) {
  for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
    if (strlen(options[i].name) == n && memcmp(options[i].name, name, n) == 0)
      return &options[i];
  return NULL;
}


/*
** What a bad value of kind k should look like, for the error line; "" when
** the value itself says enough.
*/
static void expected (const struct option *o, char *buf, size_t len) {
  switch (o->kind) {
    case K_INT:
      snprintf(buf, len, " (expected a whole number from %ld to %ld)", o->min,
               o->max);
      return;
    case K_SECS:
      snprintf(buf, len, " (expected seconds, e.g. 30 or 0.5)");
      return;
    case K_SIZE:
      snprintf(buf, len, " (expected bytes, with k, m or g, e.g. 64m)");
      return;
    case K_SHARED:
      snprintf(buf, len, " (expected NAME:SIZE, e.g. --shared cache:10m)");
      return;
    case K_MODEL:
      snprintf(buf, len, " (expected sync, fork, thread or event)");
      return;
    case K_MODE:
      snprintf(buf, len, " (expected an octal mode, e.g. 660)");
      return;
    case K_LOGFMT:
      snprintf(buf, len, " (expected text or json)");
      return;
    case K_LOGLEVEL:
      snprintf(buf, len, " (expected error, warn, info or debug)");
      return;
    case K_VERIFY:
      snprintf(buf, len, " (expected required or optional)");
      return;
    case K_TLSVER:
      snprintf(buf, len, " (expected 1.2 or 1.3)");
      return;
    default:
      buf[0] = '\0';
  }
}


/*
** --tcp and --udp: the form is checked here, so a missing or bad port is
** a usage error; the host is resolved when the listener opens.
*/
static int check_inet (const char *v, char *err, size_t errlen) {
  char host[256], port[8];
  return address_split(v, host, sizeof host, port, sizeof port, err, errlen);
}


/* Stores value for option o into cfg; returns 0 or -1 with err set. */
static int set (struct config *cfg, const struct option *o, const char *v,
                char *err, size_t errlen) {
  char *end;
  void *field = (char *)cfg + o->off;
  errno = 0;
  switch (o->kind) {
    case K_INT: {
      long n = strtol(v, &end, 10);
      if (*v == '\0' || *end != '\0' || errno || n < o->min || n > o->max)
        goto bad;
      *(int *)field = (int)n;
      return 0;
    }
    case K_SECS: {
      double d = strtod(v, &end);
      if (*v == '\0' || *end != '\0' || errno || !(d >= 0) || d > 1e9)
        goto bad;
      *(double *)field = d;
      return 0;
    }
    case K_SIZE: {  /* bytes, or with a k, m or g suffix (powers of 1024) */
      unsigned long long n = strtoull(v, &end, 10);
      int shift = 0;
      switch (*end) {
        case 'k': case 'K': shift = 10; end++; break;
        case 'm': case 'M': shift = 20; end++; break;
        case 'g': case 'G': shift = 30; end++; break;
        default: break;
      }
      if (*v == '\0' || *v == '-' || *end != '\0' || errno || n == 0 ||
          n > (~0ULL >> 1) >> shift)
        goto bad;
      *(size_t *)field = (size_t)(n << shift);
      return 0;
    }
    case K_STR:
      *(const char **)field = v;
      return 0;
    case K_LISTEN:
      if (cfg->nlisten == CLI_MAX_LISTEN) {
        snprintf(err, errlen, "too many listeners (at most %d)",
                 CLI_MAX_LISTEN);
        return -1;
      }
      if ((o->tr == TR_TCP || o->tr == TR_UDP || o->tr == TR_TLS) &&
          check_inet(v, err, errlen) < 0)
        return -1;
      cfg->listen[cfg->nlisten].tr = (enum transport)o->tr;
      cfg->listen[cfg->nlisten++].text = v;
      return 0;
    case K_MODEL:
      for (int m = 0; m < 4; m++)
        if (strcmp(v, model_names[m]) == 0) {
          cfg->model = (enum model_kind)m;
          return 0;
        }
      goto bad;
    case K_MODE: {
      long n = strtol(v, &end, 8);
      if (*v == '\0' || *end != '\0' || errno || n < 0 || n > 07777) goto bad;
      *(int *)field = (int)n;
      return 0;
    }
    case K_LOGFMT:
      if (strcmp(v, "text") != 0 && strcmp(v, "json") != 0) goto bad;
      cfg->log_json = strcmp(v, "json") == 0;
      return 0;
    case K_ACL:
      if (cfg->nacl == CLI_MAX_ACL) {
        snprintf(err, errlen, "too many --allow/--deny rules (at most %d)",
                 CLI_MAX_ACL);
        return -1;
      }
      if (acl_parse(v, o->tr, &cfg->acl[cfg->nacl], err, errlen) < 0)
        return -1;
      cfg->nacl++;
      return 0;
    case K_SHARED: {  /* NAME:SIZE; SIZE parsed as a K_SIZE */
      const char *colon = strchr(v, ':');
      struct shared_spec *sh = &cfg->shared[cfg->nshared];
      struct option so = {o->name, K_SIZE, F(shared) +
        (size_t)cfg->nshared * sizeof *sh + offsetof(struct shared_spec, size),
        0, 0, 0, R_RESTART};
      if (cfg->nshared == CLI_MAX_SHARED) {
        snprintf(err, errlen, "too many --shared (at most %d)", CLI_MAX_SHARED);
        return -1;
      }
      if (colon == NULL || colon == v || (size_t)(colon - v) >= sizeof sh->name)
        goto bad;
      memcpy(sh->name, v, (size_t)(colon - v));
      sh->name[colon - v] = '\0';
      if (set(cfg, &so, colon + 1, err, errlen) < 0) goto bad;
      cfg->nshared++;
      return 0;
    }
    case K_CERT: {  /* --tls-cert (tr 0) and --tls-key (tr 1) */
      int *n = o->tr ? &cfg->ntls_key : &cfg->ntls_cert;
      if (*n == CLI_MAX_CERTS) {
        snprintf(err, errlen, "too many --%s (at most %d)", o->name,
                 CLI_MAX_CERTS);
        return -1;
      }
      (o->tr ? cfg->tls_key : cfg->tls_cert)[(*n)++] = v;
      return 0;
    }
    case K_VERIFY:
      if (strcmp(v, "required") == 0) cfg->tls_verify_client = 2;
      else if (strcmp(v, "optional") == 0) cfg->tls_verify_client = 1;
      else goto bad;
      return 0;
    case K_TLSVER:
      if (strcmp(v, "1.2") == 0) cfg->tls_min_version = 12;
      else if (strcmp(v, "1.3") == 0) cfg->tls_min_version = 13;
      else goto bad;
      return 0;
    case K_LOGLEVEL: {
      enum log_level l;
      if (log_parse_level(v, &l) < 0) goto bad;
      cfg->log_level = (int)l;
      return 0;
    }
    default:
      return 0;
  }
bad: {
    char hint[96];
    expected(o, hint, sizeof hint);
    snprintf(err, errlen, "bad value '%s' for --%s%s", v, o->name, hint);
    return -1;
  }
}


/* Levenshtein distance of a[0..n) and b, at most 63 bytes each. */
static size_t distance (const char *a, size_t n, const char *b) {
  size_t m = strlen(b), row[64];
  if (n >= sizeof row || m >= sizeof row) return (size_t)-1;
  for (size_t j = 0; j <= m; j++) row[j] = j;
  for (size_t i = 1; i <= n; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= m; j++) {
      size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      diag = up;
      row[j] = best;
    }
  }
  return row[m];
}


/*
** The option an unknown name was probably meant to be: the only one that
** starts with it (--max-conn), else the nearest within two edits
** (--worker, --timout); NULL when none is close.
*/
static const char *nearest (const char *name, size_t n) {
  const char *best = NULL;
  size_t bestd = 3, nprefix = 0, count = sizeof options / sizeof options[0];
  for (size_t i = 0; i < count; i++)
    nprefix += n >= 3 && strncmp(options[i].name, name, n) == 0;
  for (size_t i = 0; i < count; i++) {
    const char *o = options[i].name;
    size_t d = distance(name, n, o);
    if (nprefix == 1 && strncmp(o, name, n) == 0) d = 0;  /* the only one */
    if (d < bestd) {
      best = o;
      bestd = d;
    }
  }
  if (best == NULL) {  /* --help and --version are not in the table */
    if (distance(name, n, "help") <= 2) return "help";
    if (distance(name, n, "version") <= 2) return "version";
  }
  return best;
}


/* "unknown option '--NAME'", with the option it was probably meant to be. */
static void unknown (const char *name, size_t n, char *err, size_t errlen) {
  const char *near = nearest(name, n);
  if (near != NULL)
    snprintf(err, errlen, "unknown option '--%.*s' (did you mean --%s?)",
             (int)n, name, near);
  else
    snprintf(err, errlen, "unknown option '--%.*s'", (int)n, name);
}


/*
** Repeatable options (listeners, --allow/--deny, --shared, --tls-cert
** and --tls-key) given on the command line replace the file's list of
** that kind as a whole: the bit of a kind is set while the file's list
** still stands.
*/
#define RESET_LISTEN 1u
#define RESET_ACL 2u
#define RESET_SHARED 4u
#define RESET_CERT 8u

static void reset_repeatable (struct config *cfg, enum kind k,
                              unsigned *reset) {
  unsigned bit = k == K_LISTEN ? RESET_LISTEN : k == K_ACL ? RESET_ACL :
                 k == K_SHARED ? RESET_SHARED : k == K_CERT ? RESET_CERT : 0;
  if ((*reset & bit) == 0) return;
  *reset &= ~bit;
  if (bit == RESET_LISTEN) cfg->nlisten = 0;
  if (bit == RESET_ACL) cfg->nacl = 0;
  if (bit == RESET_SHARED) cfg->nshared = 0;
  if (bit == RESET_CERT) cfg->ntls_cert = cfg->ntls_key = 0;
}


/*
** Applies option o with value v (NULL: none given), from the command line
** or a file line.
*/
static int apply (struct config *cfg, const struct option *o, const char *v,
                  unsigned *reset, char *err, size_t errlen) {
  if (o->kind == K_FLAG || o->kind == K_QUIET) {
    if (v != NULL) {
      snprintf(err, errlen, "option --%s takes no value", o->name);
      return -1;
    }
    if (o->kind == K_QUIET) cfg->log_level = LOG_WARN;
    else *(int *)((char *)cfg + o->off) = 1;
    return 0;
  }
  if (v == NULL) {
    snprintf(err, errlen, "option --%s needs a value", o->name);
    return -1;
  }
  if (o->kind == K_CONFIG) return 0;  /* read before the command line */
  reset_repeatable(cfg, o->kind, reset);
  return set(cfg, o, v, err, errlen);
}


/* The --tls-* options make sense together. */
static int check_tls (const struct config *cfg, char *err, size_t errlen) {
  int tls = 0;
  for (int i = 0; i < cfg->nlisten; i++) tls |= cfg->listen[i].tr == TR_TLS;
  if (cfg->ntls_cert != cfg->ntls_key)
    snprintf(err, errlen, "--tls-cert and --tls-key come in pairs (%d "
             "certificates, %d keys)", cfg->ntls_cert, cfg->ntls_key);
  else if (tls && cfg->ntls_cert == 0)
    snprintf(err, errlen, "--tls needs a certificate (--tls-cert FILE "
             "--tls-key FILE)");
  else if (cfg->tls_verify_client && cfg->tls_client_ca == NULL)
    snprintf(err, errlen, "--tls-verify-client needs --tls-client-ca FILE");
  else return 0;
  return -1;
}


/* Handles argv[*i], an option; advances *i past its value. */
static int option (int argc, char **argv, int *i, struct config *cfg,
                   unsigned *reset, char *err, size_t errlen) {
  const char *arg = argv[*i] + 2, *eq = strchr(arg, '=');
  size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
  const struct option *o = find(arg, n);
  const char *v = NULL;
  if (o == NULL) {
    unknown(arg, n, err, errlen);
    return -1;
  }
  if (eq) v = eq + 1;
  else if (o->kind != K_FLAG && o->kind != K_QUIET && *i + 1 < argc)
    v = argv[++*i];
  return apply(cfg, o, v, reset, err, errlen);
}


/* One line of a file, its comment and blank lines skipped by the caller. */
static int file_line (char *s, struct config *cfg, char *err, size_t errlen) {
  unsigned none = 0;
  size_t n;
  char *v;
  const struct option *o;
  if (s[0] == '-' && s[1] == '-') s += 2;
  n = strcspn(s, " \t=");
  v = s + n;
  if (*v == '=') v++;
  else {
    while (*v == ' ' || *v == '\t') v++;
    if (*v == '\0') v = NULL;
  }
  s[n] = '\0';
  if (strcmp(s, "script") == 0) {
    if (v == NULL || *v == '\0') {
      snprintf(err, errlen, "script needs a path (script /srv/app.lua)");
      return -1;
    }
    cfg->script = v;
    return 0;
  }
  if ((o = find(s, n)) == NULL) {
    unknown(s, n, err, errlen);
    if (strchr(s, '/') != NULL || strchr(s, '.') != NULL)
      snprintf(err + strlen(err), errlen - strlen(err),
               " (a script is written 'script PATH')");
    return -1;
  }
  if (o->reload == R_NEVER) {
    snprintf(err, errlen, "--%s belongs on the command line, not in a file",
             o->name);
    return -1;
  }
  return apply(cfg, o, v, &none, err, errlen);
}


int cli_parse_text (const char *name, char *text, struct config *cfg,
                    char *err, size_t errlen) {
  int line = 0;
  char *p = text;
  while (p != NULL && *p != '\0') {
    char *eol = strchr(p, '\n'), *s = p, *e;
    char why[400];
    line++;
    if (eol != NULL) *eol++ = '\0';
    p = eol;
    while (*s == ' ' || *s == '\t') s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
      *--e = '\0';
    if (*s == '\0' || *s == '#') continue;
    if (file_line(s, cfg, why, sizeof why) < 0) {
      snprintf(err, errlen, "%s:%d: %s", name, line, why);
      return -1;
    }
  }
  return 0;
}


#define MAX_FILE (1 << 20)    /* a configuration is a few hundred bytes */

/* Reads path whole into a fresh, terminated buffer; NULL with err set. */
static char *read_file (const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  char *buf = NULL;
  size_t n = 0;
  if (f == NULL) {
    snprintf(err, errlen, "--config %s: %s", path, strerror(errno));
    return NULL;
  }
  if ((buf = malloc(MAX_FILE + 1)) != NULL) {
    n = fread(buf, 1, MAX_FILE + 1, f);
    if (ferror(f))
      snprintf(err, errlen, "--config %s: %s", path, strerror(errno));
    else if (n > MAX_FILE) snprintf(err, errlen, "%s: larger than 1 MiB", path);
    else if (memchr(buf, '\0', n) != NULL)
      snprintf(err, errlen, "%s: not a text file (it holds a NUL byte)", path);
    else {
      buf[n] = '\0';
      fclose(f);
      return buf;
    }
  }
  else snprintf(err, errlen, "--config %s: out of memory", path);
  free(buf);
  fclose(f);
  return NULL;
}


/* The --config FILE of argv, or NULL; -1 when given twice or bare. */
static int find_config (int argc, char **argv, const char **path) {
  *path = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *p = NULL;
    if (strcmp(a, "--config") == 0 && i + 1 < argc) p = argv[++i];
    else if (strncmp(a, "--config=", 9) == 0) p = a + 9;
    else continue;
    if (*path != NULL) return -1;
    *path = p;
  }
  return 0;
}


static enum cli_result parse (int argc, char **argv, struct config *cfg,
                              int need_listener, char *err, size_t errlen) {
  unsigned reset = 0;
  int script_given = 0;
  defaults(cfg);
  cfg->argc = argc;
  cfg->argv = argv;
  if (find_config(argc, argv, &cfg->config) < 0) {
    snprintf(err, errlen, "--config given twice (one file only)");
    return CLI_USAGE;
  }
  if (cfg->config != NULL) {
    if ((cfg->config_text = read_file(cfg->config, err, errlen)) == NULL ||
        cli_parse_text(cfg->config, cfg->config_text, cfg, err, errlen) < 0)
      return CLI_CONFIG;
    reset = RESET_LISTEN | RESET_ACL | RESET_SHARED | RESET_CERT;
  }
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      fputs(usage_text, stdout);
      return CLI_EXIT_OK;
    }
    if (strcmp(a, "--version") == 0 || strcmp(a, "-v") == 0) {
      printf("luasrv %s (%s)\n", LUASRV_VERSION, "Lua 5.4");
      return CLI_EXIT_OK;
    }
    if (a[0] == '-' && a[1] == '-' && a[2] != '\0') {
      if (option(argc, argv, &i, cfg, &reset, err, errlen) < 0)
        return CLI_USAGE;
    }
    else if (a[0] == '-' && a[1] != '\0') {
      snprintf(err, errlen, "unknown option '%s'", a);
      return CLI_USAGE;
    }
    else if (!script_given) {  /* it replaces the file's script */
      cfg->script = a;
      script_given = 1;
    }
    else {
      snprintf(err, errlen, "unexpected argument '%s' (one script only)", a);
      return CLI_USAGE;
    }
  }
  if (cfg->script == NULL) {
    snprintf(err, errlen, cfg->config != NULL ? "no script given (write "
             "'script PATH' in %s or give it on the command line)" :
             "no script given", cfg->config);
    return CLI_USAGE;
  }
  if (check_tls(cfg, err, errlen) < 0) return CLI_USAGE;
  if (!cfg->check && cfg->nlisten == 0 && need_listener) {
    snprintf(err, errlen, "no listener given (use --tcp, --tls, --udp, --unix "
             "or --unixgram)");
    return CLI_USAGE;
  }
  return CLI_RUN;
}


enum cli_result cli_parse (int argc, char **argv, struct config *cfg,
                           char *err, size_t errlen) {
  return parse(argc, argv, cfg, getenv("LISTEN_FDS") == NULL, err, errlen);
}


enum cli_result cli_reparse (const struct config *old, struct config *cfg,
                             char *err, size_t errlen) {
  enum cli_result r = parse(old->argc, old->argv, cfg, old->nlisten > 0, err,
                            errlen);
  if (r != CLI_RUN) return r;
  cfg->activated = old->activated;
  cfg->setuser = old->setuser;
  cfg->uid = old->uid;
  cfg->gid = old->gid;
  return r;
}


void cli_free (struct config *cfg) {
  free(cfg->config_text);
  cfg->config_text = NULL;
}


/* Does option o hold the same value in a and b? */
static int same (const struct option *o, const struct config *a,
                 const struct config *b) {
  const char *fa = (const char *)a + o->off, *fb = (const char *)b + o->off;
  switch (o->kind) {
    case K_SECS: return *(const double *)fa == *(const double *)fb;
    case K_SIZE: return *(const size_t *)fa == *(const size_t *)fb;
    case K_STR: {
      const char *sa = *(const char *const *)fa, *sb = *(const char *const *)fb;
      return sa == sb || (sa != NULL && sb != NULL && strcmp(sa, sb) == 0);
    }
    case K_SHARED:
      if (a->nshared != b->nshared) return 0;
      for (int i = 0; i < a->nshared; i++)
        if (strcmp(a->shared[i].name, b->shared[i].name) != 0 ||
            a->shared[i].size != b->shared[i].size)
          return 0;
      return 1;
    default: return *(const int *)fa == *(const int *)fb;  /* int-sized */
  }
}


int cli_keep_restart_options (const struct config *old, struct config *cfg,
                              void (*changed) (const char *name, void *ud),
                              void *ud) {
  int n = 0;
  for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
    const struct option *o = &options[i];
    if (o->reload != R_RESTART || same(o, old, cfg)) continue;
    if (o->kind == K_SHARED) {
      memcpy(cfg->shared, old->shared, sizeof cfg->shared);
      cfg->nshared = old->nshared;
    }
    else if (o->kind == K_SECS) *(double *)((char *)cfg + o->off) =
        *(const double *)((const char *)old + o->off);
    else if (o->kind == K_STR) *(const char **)((char *)cfg + o->off) =
        *(const char *const *)((const char *)old + o->off);
    else *(int *)((char *)cfg + o->off) =
        *(const int *)((const char *)old + o->off);
    changed(o->name, ud);
    n++;
  }
  return n;
}
