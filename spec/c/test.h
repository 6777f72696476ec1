/*
** test.h -- a tiny TAP harness for the C unit tests, after libuv's
** TEST_IMPL/ASSERT: each TEST is a function, RUN prints "ok N - name" or
** "not ok N - name" with the failed assertion.
*/
#ifndef LUASRV_TEST_H
#define LUASRV_TEST_H

#include <stdio.h>
#include <string.h>

static int test_failed_;
static int test_count_;
static int test_bad_;

#define ASSERT(cond) do { \
    if (!(cond)) { \
      printf("# %s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
      test_failed_ = 1; \
      return; \
    } \
  } while (0)

#define ASSERT_EQ(a, b) ASSERT((a) == (b))
#define ASSERT_STR(a, b) do { \
    const char *a_ = (a), *b_ = (b); \
    if (strcmp(a_, b_) != 0) { \
      printf("# %s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__, a_, b_); \
      test_failed_ = 1; \
      return; \
    } \
  } while (0)

#define TEST(name) static void test_##name (void)
#define RUN(name) do { \
    test_failed_ = 0; \
    test_##name(); \
    printf("%s %d - %s\n", test_failed_ ? "not ok" : "ok", ++test_count_, #name); \
    test_bad_ += test_failed_; \
  } while (0)
#define DONE() (printf("1..%d\n", test_count_), test_bad_ ? 1 : 0)

#endif
