/*
** main.c -- luasrv's entry point: parse the command line, open the
** listeners, run the master and its workers, and map outcomes to exit codes (0 clean,
** 1 cannot start or run, 2 usage).
*/
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "ctl.h"
#include "listener.h"
#include "log.h"
#include "master.h"
#include "lsrv.h"
#include "shdict.h"
#include "sslmem.h"
#include "tls.h"
#include "worker.h"


static int check (const struct config *cfg) {
  struct worker w;
  char err[1024];
  struct lctx *x;
  if (worker_init(&w, cfg, NULL, 0, 1) < 0) {
    log_error("error: cannot create pipes");
    return 1;
  }
  x = lstate_new(&w, cfg->script, &sched_blocking, err, sizeof err);
  worker_close(&w);
  if (x == NULL) {
    log_error("error: %s", err);
    return 1;
  }
  lstate_close(x);
  log_msg(LOG_WARN, "%s: ok", cfg->script);
  return 0;
}


/*
** systemd's socket activation: how many listening sockets it passed us,
** from descriptor 3 on. The variables are removed so that no worker or
** program a handler runs takes them for its own.
*/
static int activation_fds (void) {
  const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
  int n = 0;
  if (pid != NULL && fds != NULL && atoi(pid) == (int)getpid()) n = atoi(fds);
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  return n < 0 ? 0 : n > CLI_MAX_LISTEN ? CLI_MAX_LISTEN : n;
}


/*
** Does passed socket fd serve listener option a? The same transport and
** address; a port 0 option (any free port) takes the passed socket's, so
** an upgraded binary (SIGUSR2) keeps the port its predecessor was given.
*/
static int passed_matches (int fd, const struct address *a) {
  struct address any = *a;
  struct sockaddr_storage sa;
  socklen_t len = sizeof sa;
  struct sockaddr_in *in = (struct sockaddr_in *)&any.sa;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&any.sa;
  if (listener_matches(fd, a)) return 1;
  if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 ||
      sa.ss_family != any.sa.ss_family)
    return 0;
  if (sa.ss_family == AF_INET && in->sin_port == 0)
    in->sin_port = ((struct sockaddr_in *)&sa)->sin_port;
  else if (sa.ss_family == AF_INET6 && in6->sin6_port == 0)
    in6->sin6_port = ((struct sockaddr_in6 *)&sa)->sin6_port;
  else return 0;
  return listener_matches(fd, &any);
}


/*
** Opens the listeners; returns how many, or -1. A listener option that
** names a socket systemd (or the binary before this one, on SIGUSR2)
** passed uses it instead of binding; with no listener option, every
** passed socket is served as it is. A Unix socket file an upgrade passed
** is this server's to remove at exit; systemd's stays systemd's.
*/
static int open_listeners (struct config *cfg, struct listener *ls) {
  struct listen_opts o = {cfg->backlog, cfg->reuse_port, cfg->unix_mode};
  char err[512];
  int upgrade = getenv("LUASRV_UPGRADE_FD") != NULL;
  /* an upgrade: which passed Unix socket files the old binary created */
  const char *owned = upgrade && getenv("LUASRV_OWNED") != NULL ?
                      getenv("LUASRV_OWNED") : "";
  int nfds = activation_fds(), used[CLI_MAX_LISTEN] = {0}, n = 0;
  cfg->activated = nfds > 0;
  for (int i = 0; i < cfg->nlisten; i++, n++) {
    struct address a;
    int j = 0, rc;
    if (address_parse(cfg->listen[i].tr, cfg->listen[i].text, &a, err,
                      sizeof err) < 0)
      goto fail;
    while (j < nfds && (used[j] || !passed_matches(3 + j, &a))) j++;
    if (j < nfds) {
      used[j] = 1;
      rc = listener_adopt(&ls[i], 3 + j, err, sizeof err);
      if (rc == 0 && upgrade)
        ls[i].created_path = j < (int)strlen(owned) && owned[j] == '1';
      if (rc == 0 && a.tr == TR_TLS) {  /* systemd passed a TCP socket */
        ls[i].addr.tr = TR_TLS;
        address_format(&ls[i].addr, ls[i].name, sizeof ls[i].name);
      }
    }
    else rc = listener_open(&ls[i], &a, &o, err, sizeof err);
    if (rc < 0) goto fail;
  }
  for (int j = 0; j < nfds; j++) {
    if (used[j]) continue;
    if (cfg->nlisten > 0) {
      log_warn("socket activation: descriptor %d matches no listener "
               "option; closing it", 3 + j);
      close(3 + j);
    }
    else if (listener_adopt(&ls[n], 3 + j, err, sizeof err) < 0) goto fail;
    else n++;
  }
  unsetenv("LUASRV_OWNED");
  return n;
fail:
  log_error("error: %s", err);
  while (n-- > 0) listener_close(&ls[n]);
  return -1;
}


/*
** Writes the master's pid to path (--pidfile) through a temporary file
** and rename(2), so a reader never sees a half-written file.
*/
static int write_pidfile (const char *path) {
  char tmp[4096];
  FILE *f;
  if (snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid()) >=
      (int)sizeof tmp) {
    log_error("error: pid file name too long");
    return -1;
  }
  f = fopen(tmp, "w");
  if (f != NULL && fprintf(f, "%d\n", (int)getpid()) < 0) {
    fclose(f);
    f = NULL;
  }
  if (f == NULL || fclose(f) != 0 || rename(tmp, path) < 0) {
    log_error("error: cannot write pid file %s: %s", path, strerror(errno));
    unlink(tmp);
    return -1;
  }
  return 0;
}


/*
** --user USER[:GROUP]: resolved here, where a typo can still stop the
** start; the workers switch to it after fork, so the master keeps the
** rights to remove socket files and start workers, as nginx's does.
*/
static int resolve_user (struct config *cfg) {
  char name[256];
  const char *spec = cfg->user, *colon = strchr(spec, ':');
  struct passwd *pw;
  snprintf(name, sizeof name, "%.*s",
           (int)(colon ? (size_t)(colon - spec) : strlen(spec)), spec);
  if ((pw = getpwnam(name)) == NULL) {
    log_error("error: --user: no user '%s'", name);
    return -1;
  }
  cfg->uid = pw->pw_uid;
  cfg->gid = pw->pw_gid;
  if (colon != NULL) {
    struct group *gr = getgrnam(colon + 1);
    if (gr == NULL) {
      log_error("error: --user: no group '%s'", colon + 1);
      return -1;
    }
    cfg->gid = gr->gr_gid;
  }
  if (geteuid() != 0 && cfg->uid != geteuid()) {
    log_error("error: --user %s: only root can switch users", spec);
    return -1;
  }
  cfg->setuser = 1;
  return 0;
}


/*
** The Unix socket files luasrv created belong to --user: its workers and
** its group's clients (with --unix-mode 660) can use them.
*/
static int chown_sockets (const struct config *cfg, struct listener *ls,
                          int nls) {
  for (int i = 0; i < nls; i++) {
    const char *path;
    if (!ls[i].created_path) continue;
    path = ((const struct sockaddr_un *)&ls[i].addr.sa)->sun_path;
    if (chown(path, (uid_t)cfg->uid, (gid_t)cfg->gid) < 0) {
      log_error("error: --user: cannot give %s to %s: %s", path, cfg->user,
                strerror(errno));
      return -1;
    }
  }
  return 0;
}


int main (int argc, char **argv) {
  static struct config cfg;
  static struct listener ls[CLI_MAX_LISTEN];
  char err[512];
  int rc = 1, wrote_pid = 0, nls = 0;
  sslmem_init();  /* before OpenSSL allocates anything */
  if (argc >= 2 && strcmp(argv[1], "ctl") == 0)
    return ctl_main(argc - 1, argv + 1);
  switch (cli_parse(argc, argv, &cfg, err, sizeof err)) {
    case CLI_EXIT_OK: return 0;
    case CLI_USAGE:
      fprintf(stderr, "luasrv: %s\n%s", err, cli_usage_text());
      return 2;
    case CLI_CONFIG:  /* FILE:LINE says enough: no usage text */
      fprintf(stderr, "luasrv: %s\n", err);
      return 2;
    case CLI_RUN: break;
  }
  log_setup((enum log_level)cfg.log_level, cfg.log_json);
  /* --check answers on stderr, whatever the file says */
  if (cfg.log_file != NULL && !cfg.check &&
      (rc = log_open(cfg.log_file)) < 0) {
    log_error("error: --log-file %s: %s", cfg.log_file, strerror(-rc));
    return 1;
  }
  rc = 1;
  /* --shared: mapped before any fork, so every worker, generation and
  ** child shares it (data survives reloads and worker crashes) */
  for (int i = 0; i < cfg.nshared; i++)
    if (shdict_define(cfg.shared[i].name, cfg.shared[i].size, err,
                      sizeof err) < 0) {
      log_error("error: --shared %s: %s", cfg.shared[i].name, err);
      return 1;
    }
  if (cfg.check) return check(&cfg);
  /* the keys are read now, by the master, before --user applies: the
  ** workers inherit the contexts and never open a key file */
  if (tls_server_load(&cfg, err, sizeof err) < 0) {
    log_error("error: %s", err);
    return 1;
  }
  if ((nls = open_listeners(&cfg, ls)) < 0) return 1;
  if (nls == 0) {
    log_error("error: no listener: systemd passed no socket");
    return 1;
  }
  if (cfg.pidfile != NULL) {
    if (write_pidfile(cfg.pidfile) < 0) goto out;
    wrote_pid = 1;
  }
  if (cfg.user != NULL && (resolve_user(&cfg) < 0 ||
                           chown_sockets(&cfg, ls, nls) < 0))
    goto out;
  if (cfg.setuser) log_owner((int)cfg.uid, (int)cfg.gid);
  rc = master_run(&cfg, ls, &nls);
out:
  /* never another server's: after an upgrade, the pid file is the new
  ** binary's (master.c clears cfg.pidfile then) */
  if (wrote_pid && cfg.pidfile != NULL) unlink(cfg.pidfile);
  for (int i = 0; i < nls; i++) listener_close(&ls[i]);
  return rc;
}
