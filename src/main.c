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
#include "listener.h"
#include "log.h"
#include "master.h"
#include "lsrv.h"
#include "shdict.h"
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
** Opens the listeners; returns how many, or -1. A listener option that
** names a socket systemd passed uses it instead of binding; with no
** listener option, every passed socket is served as it is.
*/
static int open_listeners (const struct config *cfg, struct listener *ls) {
  struct listen_opts o = {cfg->backlog, cfg->reuse_port, cfg->unix_mode};
  char err[512];
  int nfds = activation_fds(), used[CLI_MAX_LISTEN] = {0}, n = 0;
  for (int i = 0; i < cfg->nlisten; i++, n++) {
    struct address a;
    int j = 0, rc;
    if (address_parse(cfg->listen[i].tr, cfg->listen[i].text, &a, err,
                      sizeof err) < 0)
      goto fail;
    while (j < nfds && (used[j] || !listener_matches(3 + j, &a))) j++;
    if (j < nfds) {
      used[j] = 1;
      rc = listener_adopt(&ls[i], 3 + j, err, sizeof err);
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
  switch (cli_parse(argc, argv, &cfg, err, sizeof err)) {
    case CLI_EXIT_OK: return 0;
    case CLI_USAGE:
      fprintf(stderr, "luasrv: %s\n%s", err, cli_usage_text());
      return 2;
    case CLI_RUN: break;
  }
  log_setup((enum log_level)cfg.log_level, cfg.log_json);
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
  rc = master_run(&cfg, ls, nls);
out:
  if (wrote_pid) unlink(cfg.pidfile);  /* never another server's */
  for (int i = 0; i < nls; i++) listener_close(&ls[i]);
  return rc;
}
