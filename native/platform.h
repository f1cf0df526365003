/*
 * The platform layer: everything the plugin needs from the operating system beyond C11, one
 * implementation per platform (platform_posix.c: Linux and macOS; platform_windows.c: Windows
 * x64, MinGW-w64 or MSVC). Each file compiles to nothing on the other platforms, so a build
 * compiles every .c file of native/.
 */
#ifndef VSEDVR_PLATFORM_H
#define VSEDVR_PLATFORM_H

#include <stdint.h>

#ifdef _WIN32
#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  include <windows.h>
typedef SRWLOCK PlMutex;
typedef CONDITION_VARIABLE PlCond;
typedef INIT_ONCE PlOnce;
#  define PL_MUTEX_INIT SRWLOCK_INIT
#  define PL_COND_INIT CONDITION_VARIABLE_INIT
#  define PL_ONCE_INIT INIT_ONCE_STATIC_INIT
#else
#  include <pthread.h>
typedef pthread_mutex_t PlMutex;
typedef pthread_cond_t PlCond;
typedef pthread_once_t PlOnce;
#  define PL_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#  define PL_COND_INIT PTHREAD_COND_INITIALIZER
#  define PL_ONCE_INIT PTHREAD_ONCE_INIT
#endif

#ifdef _MSC_VER
#  define PL_THREAD_LOCAL __declspec(thread)
#else
#  define PL_THREAD_LOCAL _Thread_local
#endif

void plMutexLock(PlMutex *m);
void plMutexUnlock(PlMutex *m);
/* Condition variables, statically initialised with PL_COND_INIT; plCondInit must run once before
   the first wait (POSIX: a monotonic clock for the timed wait). */
void plCondInit(PlCond *c);
void plCondWait(PlCond *c, PlMutex *m);
/* Waits until deadline (plMonotonicMs's clock); returns 0 once the deadline has passed. */
int plCondWaitUntil(PlCond *c, PlMutex *m, uint64_t deadlineMs);
void plCondBroadcast(PlCond *c);
/* Runs init once per flag (statically initialised with PL_ONCE_INIT), whatever the number of
   threads calling. */
void plOnce(PlOnce *flag, void (*init)(void));
uint64_t plMonotonicMs(void);
/* fflush(NULL) on a thread of its own, waited for up to waitMs: every stream whose lock is free is
   flushed, and a stream another thread holds (a writer blocked on a full pipe) cannot block the
   caller past the bound. For a caller about to end the process. */
void plFlushStdio(uint64_t waitMs);

/* The address of a symbol of the Python C API in this process (the interpreter that runs the
   host: its executable or its libpython / python3XY.dll), or NULL. Never links Python. */
void *plPythonSymbol(const char *name);

/* How the process's exit can be seen from a plugin (see exit_guard.c). */
typedef struct {
    /* exit(status) calls handler(status) while other threads still run (glibc's on_exit) */
    int (*withStatus)(void (*handler)(int status, void *arg));
    /* exit() calls handler() while other threads still run, without the status (atexit) */
    int (*withoutStatus)(void (*handler)(void));
    /* exit() from the calling thread, when it is the main thread, runs handler() before every
       exit handler; 0 where there is no such hook or this is not the main thread */
    int (*onMainThreadExit)(void (*handler)(void *arg));
    /* 1 where the libraries' own teardown (PyTorch's) runs only after exit has ended every other
       thread (Windows: ExitProcess, then DLL_PROCESS_DETACH): no frame can run under it */
    int teardownAfterThreadsEnd;
} PlExitHooks;

/* True once the process's other threads have been ended for good by the system (Windows: in
   ExitProcess's DLL detach phase); an exit handler must not wait for them then. */
int plOtherThreadsEnded(void);

/* The hooks this platform has; a NULL member is a hook it lacks. Pins the plugin in the process
   first where a hook would outlive an unloaded plugin (on_exit). */
PlExitHooks plExitHooks(void);

#endif
