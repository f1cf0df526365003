/* The platform layer on Linux (glibc, other C libraries) and macOS: pthreads and dlfcn. */
#ifndef _WIN32
#define _GNU_SOURCE /* dladdr, RTLD_NODELETE, RTLD_DEFAULT, on_exit, syscall */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#include "platform.h"

void plMutexLock(PlMutex *m) { pthread_mutex_lock(m); }
void plMutexUnlock(PlMutex *m) { pthread_mutex_unlock(m); }
void plCondWait(PlCond *c, PlMutex *m) { pthread_cond_wait(c, m); }
void plCondBroadcast(PlCond *c) { pthread_cond_broadcast(c); }

void plCondInit(PlCond *c) {
#ifdef __APPLE__
    (void)c; /* macOS has no pthread_condattr_setclock: plCondWaitUntil waits a relative time */
#else
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(c, &attr);
    pthread_condattr_destroy(&attr);
#endif
}

uint64_t plMonotonicMs(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

int plCondWaitUntil(PlCond *c, PlMutex *m, uint64_t deadlineMs) {
#ifdef __APPLE__
    uint64_t now = plMonotonicMs();
    if (now >= deadlineMs)
        return 0;
    struct timespec wait = { (time_t)((deadlineMs - now) / 1000), (long)((deadlineMs - now) % 1000) * 1000000L };
    return pthread_cond_timedwait_relative_np(c, m, &wait) != ETIMEDOUT;
#else
    struct timespec until = { (time_t)(deadlineMs / 1000), (long)(deadlineMs % 1000) * 1000000L };
    return pthread_cond_timedwait(c, m, &until) != ETIMEDOUT;
#endif
}

void plOnce(PlOnce *flag, void (*init)(void)) { pthread_once(flag, init); }

static PlMutex flushMutex = PL_MUTEX_INIT;
static PlCond flushDone = PL_COND_INIT;
static int flushed;

static void *flushAll(void *unused) {
    (void)unused;
    fflush(NULL);
    plMutexLock(&flushMutex);
    flushed = 1;
    plCondBroadcast(&flushDone);
    plMutexUnlock(&flushMutex);
    return NULL;
}

static void initFlushDone(void) {
    plCondInit(&flushDone);
}

void plFlushStdio(uint64_t waitMs) {
    static PlOnce initOnce = PL_ONCE_INIT;
    plOnce(&initOnce, initFlushDone);
    pthread_t flusher;
    if (pthread_create(&flusher, NULL, flushAll, NULL) != 0)
        return;
    pthread_detach(flusher);
    uint64_t until = plMonotonicMs() + waitMs;
    plMutexLock(&flushMutex);
    while (!flushed && plCondWaitUntil(&flushDone, &flushMutex, until))
        ;
    plMutexUnlock(&flushMutex);
}

void *plPythonSymbol(const char *name) {
    return dlsym(RTLD_DEFAULT, name);
}

#ifdef __GLIBC__
static int onExitPinned(void (*handler)(int, void *)) {
    return on_exit(handler, NULL);
}

/* glibc's (and libstdc++'s) registration of a thread_local destructor; exit() runs the calling
   thread's before any atexit handler. */
extern int __cxa_thread_atexit_impl(void (*func)(void *), void *obj, void *dsoSymbol) __attribute__((weak));
extern void *__dso_handle;

static int onMainThreadExit(void (*handler)(void *)) {
    /* Only on the main thread: another thread's thread_local destructors also run when that thread
       merely ends, and the main thread's run only when the process exits. */
    if (!__cxa_thread_atexit_impl || syscall(SYS_gettid) != getpid())
        return 0;
    return __cxa_thread_atexit_impl(handler, NULL, &__dso_handle) == 0;
}
#endif

int plOtherThreadsEnded(void) {
    return 0; /* exit() ends them only after every handler has returned */
}

static int atExit(void (*handler)(void)) {
    return atexit(handler);
}

PlExitHooks plExitHooks(void) {
    PlExitHooks hooks = { NULL, atExit, NULL, 0 };
#ifdef __GLIBC__
    /* the tests' way to run, on Linux, the guard macOS and musl get: atexit only, no status */
    const char *withoutStatus = getenv("VSEDVR_EXIT_WITHOUT_STATUS");
    if (withoutStatus && *withoutStatus && *withoutStatus != '0')
        return hooks;
    /* on_exit handlers are not removed when their library is unloaded: pin the plugin first */
    static int pinned = -1;
    if (pinned < 0) {
        Dl_info self;
        pinned = dladdr((void *)plExitHooks, &self) && self.dli_fname &&
                 dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE) != NULL;
    }
    if (pinned)
        hooks.withStatus = onExitPinned;
    hooks.onMainThreadExit = onMainThreadExit;
#endif
    return hooks;
}
#endif
