/* test_fileopen.c -- opening files to send: symbolic links refused anywhere in the path, both ways (openat2 and the walk). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include "fileopen.h"
#include "test.h"

static char dir[64];
static char path[256];

static const char *at (const char *rel) {
  snprintf(path, sizeof path, "%s/%s", dir, rel);
  return path;
}

static void setup (void) {
  FILE *f;
  snprintf(dir, sizeof dir, "/tmp/luasrv-fileopen-XXXXXX");
  if (mkdtemp(dir) == NULL) abort();
  mkdir(at("d"), 0755);
  f = fopen(at("d/file"), "w");
  fputs("hello", f);
  fclose(f);
  if (symlink("file", at("d/link")) < 0 || symlink("d", at("dlink")) < 0 ||
      mkfifo(at("d/fifo"), 0600) < 0)
    abort();
}

static void teardown (void) {
  const char *rm[] = { "d/file", "d/link", "d/fifo", "dlink", "d" };
  for (int i = 0; i < 5; i++) {
    if (unlink(at(rm[i])) < 0) rmdir(at(rm[i]));
  }
  rmdir(dir);
}

/* the bytes of fd, closed after */
static int has_hello (int fd) {
  char b[8] = {0};
  ssize_t n = read(fd, b, sizeof b - 1);
  close(fd);
  return n == 5 && strcmp(b, "hello") == 0;
}

TEST(plain_paths) {
  ASSERT(has_hello(fileopen(at("d/file"), 1)));
  ASSERT(has_hello(fileopen_walk(at("d/file"))));
  ASSERT(has_hello(fileopen(at("d//./file"), 1)));
  ASSERT(has_hello(fileopen_walk(at("d//./file"))));
  ASSERT_EQ(fileopen(at("d/none"), 1), -ENOENT);
  ASSERT_EQ(fileopen_walk(at("d/none")), -ENOENT);
  ASSERT_EQ(fileopen_walk(at("d/file/x")), -ENOTDIR);
}

TEST(links_refused_anywhere) {
  ASSERT_EQ(fileopen(at("d/link"), 1), -ELOOP);
  ASSERT_EQ(fileopen_walk(at("d/link")), -ELOOP);
  ASSERT_EQ(fileopen(at("dlink/file"), 1), -ELOOP);
  ASSERT_EQ(fileopen_walk(at("dlink/file")), -ELOOP);
  /* followed when not asked to refuse them */
  ASSERT(has_hello(fileopen(at("dlink/link"), 0)));
}

TEST(fifo_does_not_block) {
  int fd = fileopen(at("d/fifo"), 1);
  ASSERT(fd >= 0);
  close(fd);
  fd = fileopen_walk(at("d/fifo"));
  ASSERT(fd >= 0);
  close(fd);
}

int main (void) {
  setup();
  RUN(plain_paths);
  RUN(links_refused_anywhere);
  RUN(fifo_does_not_block);
  teardown();
  return DONE();
}
