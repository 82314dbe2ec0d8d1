/*
 * skt_delay.c: a test-only LD_PRELOAD library that widens a race window of
 * a skolsync process by delaying two calls, so that a test can put one
 * thread's action inside another's window every time instead of once in
 * hundreds of runs. Each delay is off unless its variable is set:
 *
 *   SKT_DELAY_SETNAME=NAME:MS   pthread_setname_np(self, NAME) sleeps MS first
 *   SKT_DELAY_MAIN_READ_MS=MS   an 8-byte read() by the main thread (an eventfd
 *                               notice) sleeps MS first
 *
 * Not part of the daemon: built only with the tests (tests/CMakeLists.txt).
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static char setname_name[16];
static long setname_ms;
static long main_read_ms;

__attribute__((constructor)) static void skt_delay_init(void)
{
    const char *s = getenv("SKT_DELAY_SETNAME");
    const char *colon = s ? strrchr(s, ':') : NULL;
    if (colon && (size_t)(colon - s) < sizeof(setname_name)) {
        memcpy(setname_name, s, (size_t)(colon - s));
        setname_ms = atol(colon + 1);
    }
    const char *r = getenv("SKT_DELAY_MAIN_READ_MS");
    main_read_ms = r ? atol(r) : 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

int pthread_setname_np(pthread_t thread, const char *name)
{
    static int (*real)(pthread_t, const char *);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "pthread_setname_np");
    if (setname_ms > 0 && pthread_equal(thread, pthread_self()) &&
        strcmp(name, setname_name) == 0)
        sleep_ms(setname_ms);
    return real(thread, name);
}

ssize_t read(int fd, void *buf, size_t count)
{
    static ssize_t (*real)(int, void *, size_t);
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "read");
    if (main_read_ms > 0 && count == 8 && gettid() == getpid())
        sleep_ms(main_read_ms);
    return real(fd, buf, count);
}
