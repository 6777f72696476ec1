/*
** cli.c -- the command line, table-driven: each option names its kind of
** value and where it goes. "--opt VALUE" and "--opt=VALUE" both work.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl.h"
#include "cli.h"
#include "log.h"

static const char usage_text[] =
"usage: luasrv SCRIPT [OPTIONS]\n"
"       luasrv --check SCRIPT\n"
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
"  --tls-alpn LIST        protocols accepted, in order, e.g. h2,http/1.1\n"
"  --tls-ticket-rotate SECS  a new session ticket key this often; sessions\n"
"                         resume across one rotation (default 43200, 0 = never)\n"
"\n"
"Concurrency and limits:\n"
"  --model MODEL          sync, fork, thread or event (default event)\n"
"  --workers N            worker processes (default 1)\n"
"  --max-children N       fork: children alive at once (default 40)\n"
"  --max-threads N        thread: handler threads at once (default 256)\n"
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
"  --reuse-port           set SO_REUSEPORT on inet listeners\n"
"  --unix-mode MODE       octal mode for Unix socket files (e.g. 660)\n"
"  --user USER[:GROUP]    drop privileges to USER after binding\n"
"  --pidfile PATH         write the server's pid to PATH\n"
"  --log-format FMT       text or json (default text)\n"
"  --proxy-protocol       stream clients come through a proxy that sends a PROXY\n"
"                         protocol header (v1 or v2) first: it is required\n"
"  --access-log           log a line per request (client, bytes, time, outcome)\n"
"  --metrics [HOST]:PORT  serve Prometheus metrics there (the master answers)\n"
"  --log-level LEVEL      error, warn, info or debug (default info)\n"
"  --quiet                same as --log-level warn\n"
"\n"
"  --check SCRIPT         load SCRIPT, check its hooks, exit 0 or 1\n"
"  --help, --version\n";

enum kind { K_FLAG, K_INT, K_SECS, K_SIZE, K_STR, K_LISTEN, K_MODEL, K_MODE,
            K_LOGFMT, K_LOGLEVEL, K_QUIET, K_ACL, K_SHARED, K_CERT,
            K_VERIFY, K_TLSVER };

struct option {
  const char *name;
  enum kind kind;
  size_t off;                 /* offsetof(struct config, field) */
  long min, max;              /* for K_INT */
  int tr;                     /* for K_LISTEN */
};

#define F(field) offsetof(struct config, field)

static const struct option options[] = {
  {"tcp", K_LISTEN, 0, 0, 0, TR_TCP},
  {"udp", K_LISTEN, 0, 0, 0, TR_UDP},
  {"unix", K_LISTEN, 0, 0, 0, TR_UNIX},
  {"unixgram", K_LISTEN, 0, 0, 0, TR_UNIXGRAM},
  {"tls", K_LISTEN, 0, 0, 0, TR_TLS},
  {"tls-cert", K_CERT, 0, 0, 0, 0},
  {"tls-key", K_CERT, 0, 0, 0, 1},
  {"tls-client-ca", K_STR, F(tls_client_ca), 0, 0, 0},
  {"tls-verify-client", K_VERIFY, F(tls_verify_client), 0, 0, 0},
  {"tls-min-version", K_TLSVER, F(tls_min_version), 0, 0, 0},
  {"tls-ciphers", K_STR, F(tls_ciphers), 0, 0, 0},
  {"tls-alpn", K_STR, F(tls_alpn), 0, 0, 0},
  {"tls-ticket-rotate", K_SECS, F(tls_ticket_rotate), 0, 0, 0},
  {"model", K_MODEL, F(model), 0, 0, 0},
  {"workers", K_INT, F(workers), 1, 1024, 0},
  {"max-children", K_INT, F(max_children), 1, 100000, 0},
  {"max-threads", K_INT, F(max_threads), 1, 100000, 0},
  {"max-connections", K_INT, F(max_connections), 1, 10000000, 0},
  {"timeout", K_SECS, F(timeout), 0, 0, 0},
  {"max-line", K_SIZE, F(max_line), 0, 0, 0},
  {"grace", K_SECS, F(grace), 0, 0, 0},
  {"backlog", K_INT, F(backlog), 1, 1000000, 0},
  {"once", K_FLAG, F(once), 0, 0, 0},
  {"memory-limit", K_SIZE, F(memory_limit), 0, 0, 0},
  {"cpu-limit", K_SECS, F(cpu_limit), 0, 0, 0},
  {"max-per-source", K_INT, F(max_per_source), 1, 10000000, 0},
  {"metrics", K_STR, F(metrics), 0, 0, 0},
  {"access-log", K_FLAG, F(access_log), 0, 0, 0},
  {"proxy-protocol", K_FLAG, F(proxy_protocol), 0, 0, 0},
  {"shared", K_SHARED, 0, 0, 0, 0},
  {"allow", K_ACL, 0, 0, 0, 1},
  {"deny", K_ACL, 0, 0, 0, 0},
  {"reuse-port", K_FLAG, F(reuse_port), 0, 0, 0},
  {"unix-mode", K_MODE, F(unix_mode), 0, 0, 0},
  {"user", K_STR, F(user), 0, 0, 0},
  {"pidfile", K_STR, F(pidfile), 0, 0, 0},
  {"log-format", K_LOGFMT, F(log_json), 0, 0, 0},
  {"log-level", K_LOGLEVEL, F(log_level), 0, 0, 0},
  {"quiet", K_QUIET, F(log_level), 0, 0, 0},
  {"check", K_FLAG, F(check), 0, 0, 0},
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
        0, 0, 0};
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


static void unknown (const char *arg, size_t n, char *err, size_t errlen) {
  const char *near = nearest(arg + 2, n - 2);
  if (near != NULL)
    snprintf(err, errlen, "unknown option '%.*s' (did you mean --%s?)",
             (int)n, arg, near);
  else
    snprintf(err, errlen, "unknown option '%.*s'", (int)n, arg);
}


/* Handles argv[*i], an option; advances *i past its value. */
static int option (int argc, char **argv, int *i, struct config *cfg,
                   char *err, size_t errlen) {
  const char *arg = argv[*i] + 2, *eq = strchr(arg, '=');
  size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
  const struct option *o = find(arg, n);
  const char *v;
  if (o == NULL) {
    unknown(argv[*i], n + 2, err, errlen);
    return -1;
  }
  if (o->kind == K_FLAG || o->kind == K_QUIET) {
    if (eq) {
      snprintf(err, errlen, "option --%s takes no value", o->name);
      return -1;
    }
    if (o->kind == K_QUIET) cfg->log_level = LOG_WARN;
    else *(int *)((char *)cfg + o->off) = 1;
    return 0;
  }
  if (eq) v = eq + 1;
  else if (*i + 1 < argc) v = argv[++*i];
  else {
    snprintf(err, errlen, "option --%s needs a value", o->name);
    return -1;
  }
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


enum cli_result cli_parse (int argc, char **argv, struct config *cfg,
                           char *err, size_t errlen) {
  defaults(cfg);
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
      if (option(argc, argv, &i, cfg, err, errlen) < 0) return CLI_USAGE;
    }
    else if (a[0] == '-' && a[1] != '\0') {
      snprintf(err, errlen, "unknown option '%s'", a);
      return CLI_USAGE;
    }
    else if (cfg->script == NULL) cfg->script = a;
    else {
      snprintf(err, errlen, "unexpected argument '%s' (one script only)", a);
      return CLI_USAGE;
    }
  }
  if (cfg->script == NULL) {
    snprintf(err, errlen, "no script given");
    return CLI_USAGE;
  }
  if (check_tls(cfg, err, errlen) < 0) return CLI_USAGE;
  if (!cfg->check && cfg->nlisten == 0 && getenv("LISTEN_FDS") == NULL) {
    snprintf(err, errlen, "no listener given (use --tcp, --tls, --udp, --unix "
             "or --unixgram)");
    return CLI_USAGE;
  }
  return CLI_RUN;
}
