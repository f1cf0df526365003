/* The exit guard.

A host may end the process with frames still being computed: vsedit closing mid-render, or any
VSScript host that returns from main (or calls exit()) without freeing its script. libvsscript
never finalises Python, so Python's atexit (vsedvr/filter/shutdown.py's _finish_at_exit) never runs there, and
Py_IsFinalizing() stays false. exit() then runs the C atexit handlers and the shared libraries'
static destructors (libtorch's, OpenMP's) while VapourSynth's worker threads are still inside
PyTorch: a crash in the middle of a convolution.

So the plugin runs its own handler first. atexit handlers and static destructors run in the
reverse order of their registration, so it must be registered after libtorch's: it is registered
when a Restore is created (PyTorch is loaded by then, and vsedvr.filter.plugin has run one tiny
window through the network, so that what PyTorch creates at its first use exists already) and
again after the process's first frame. What a frame uses for the first time (each of PyTorch's
Python bindings builds its argument parser at its first call) would still register later; so, on
the main thread (the one that returns from main), it is also a thread_local destructor, which
exit() runs before every atexit handler: with glibc it registers a fresh on_exit entry, which
exit() then runs first, with the status. The handler
 - sets `exiting`: no new frame enters Python, and the Python side reads the same flag
   (vsedvr.filter.shutdown.watch_native_exit) and stops a running frame at its next feature
   encoding, as it does after Python's own atexit;
 - waits until no frame is inside Python, holding no lock and not the GIL (a running frame needs
   the GIL to finish). One deadline for the whole process, EXIT_WAIT_SECONDS after the first
   handler started, however many times the handler is registered and runs. No wait where this
   thread holds the GIL (the frames could not leave), nor on Windows (below);
 - if a frame is still inside Python at the deadline and exit()'s status is known (glibc), flushes
   stdio without blocking on a held stream (plFlushStdio) and ends the process there with that
   status (_Exit: the teardown would run under that frame). It is the only code that ends the
   process, and it does so once. What that skips (the host's older exit handlers, static
   destructors, the libraries' fini code) is listed in docs/hosts.md.
A frame stopped at exit is not handed back to the core: its thread parks (parkIfExiting). The host
may have deleted the receiver of its frames already (vsedit deletes its script processor with
frames in process, then returns from main): a frame or an error returned to the core then calls the
host's callback on a deleted object. A host that just quits is gone long before the deadline. One
still exiting at the deadline may be waiting for those very threads (it frees its core in an exit
handler or a static destructor: the core waits for an idle thread pool). Once the deadline has
passed and no handler is waiting or ending the process, a parked thread therefore ends the
process, flushed, with exit()'s status where a handler has seen it (glibc); without the status
(macOS, musl, Windows) its frame fails instead. Either way a host is never held longer than the
bound because of Restore.
on_exit handlers are not removed when their library is unloaded, so the plugin pins itself in the
process first.
Where Python itself is finalising or finalised (a plain Python script), its atexit guard has
already stopped the frames, and threads may be parked forever on the GIL: no wait there.
What differs per platform is in plExitHooks (platform_posix.c, platform_windows.c); macOS and C
libraries other than glibc get atexit only (no status, no thread_local hook), as the tests get on
Linux with VSEDVR_EXIT_WITHOUT_STATUS=1.

Windows (docs/hosts.md): ExitProcess terminates every other thread before any DLL_PROCESS_DETACH,
and the DLLs' own atexit handlers and static destructors (PyTorch's, OpenMP's) run at their
detach, so PyTorch is never torn down under a running frame there. What runs while the frames
still run is the executable's exit() table: the handler goes there (the Universal CRT's
_crt_atexit, the plugin pinned), and only sets the flag, without waiting: the frames stop and
park, ExitProcess then ends their threads. (A wait there would hold the CRT's exit lock, which a
frame's first-use static needs.) */

#include <stdio.h>
#include <stdlib.h>

#include "exit_guard.h"
#include "platform.h"
#include "python_bridge.h"

#define EXIT_WAIT_SECONDS 10 /* longest wait, in all, at process exit for frames being computed */
#define FLUSH_WAIT_MS 1000   /* longest wait for stdio's flush when the guard ends the process itself */

static PlMutex exitMutex = PL_MUTEX_INIT;
static PlCond exitIdle = PL_COND_INIT;       /* signalled when a frame leaves Python after `exiting` */
static PlCond parkedMayLeave = PL_COND_INIT; /* signalled when an exit handler stops waiting */
static volatile int exiting;                 /* read by the Python side through its address */
static uint64_t exitDeadline;                /* set when `exiting` is: the one bound for the whole exit */
static int handlersBusy;    /* exit handlers waiting for frames, or ending the process: nothing leaves parking */
static int ending;          /* a thread is ending the process: the only one that does */
static int exitStatus, exitStatusSeen; /* exit()'s status, once a handler has seen it (glibc) */
static int framesInPython;
static int firstFrameSeen;
static PL_THREAD_LOCAL int inPythonHere; /* this thread is inside runPython (exit() called from a frame) */
static PlOnce guardInitOnce = PL_ONCE_INIT;
static PlExitHooks hooks;

volatile int *exitFlag(void) {
    return &exiting;
}

static void exitGuardInit(void) {
    plCondInit(&exitIdle);
    plCondInit(&parkedMayLeave);
    hooks = plExitHooks();
}

/* Under exitMutex: sets `exiting` and the deadline, the first time. */
static void startExiting(void) {
    if (exiting)
        return;
    exiting = 1;
    exitDeadline = plMonotonicMs() + 1000u * EXIT_WAIT_SECONDS;
}

/* Under exitMutex: flushes stdio without blocking on a held stream and ends the process with
   exit()'s status, the first time; a later caller waits for that end. */
static void endProcessOnce(int status) {
    if (!ending) {
        ending = 1;
        plMutexUnlock(&exitMutex);
        plFlushStdio(FLUSH_WAIT_MS);
        _Exit(status);
    }
    for (;;)
        plCondWait(&parkedMayLeave, &exitMutex);
}

/* The exit handler; known: whether status is exit()'s status. */
static void finishAtExit(int status, int known) {
    /* the frames' threads may be gone without a word (Windows, ExitProcess): nothing to wait for,
       and a lock they held is held for good */
    if (plOtherThreadsEnded())
        return;
    plMutexLock(&exitMutex);
    startExiting();
    if (known && !exitStatusSeen) {
        exitStatus = status;
        exitStatusSeen = 1;
    }
    int pythonGone = !py.ok || !py.IsInitialized() || py.IsFinalizing();
    /* No wait where the libraries' teardown comes only after every other thread is ended (Windows),
       nor where this thread holds the GIL (exit() from a C extension or a Python callback): the
       frames need it to leave Python, so waiting would only burn the bound. */
    int mayWait = !pythonGone && !hooks.teardownAfterThreadsEnd && !py.GILState_Check();
    handlersBusy++;
    while (mayWait && framesInPython > inPythonHere)
        if (!plCondWaitUntil(&exitIdle, &exitMutex, exitDeadline))
            break;
    if (!pythonGone && !hooks.teardownAfterThreadsEnd && framesInPython > inPythonHere && known)
        endProcessOnce(status); /* the teardown would run under that frame; handlersBusy stays raised */
    handlersBusy--;
    plCondBroadcast(&parkedMayLeave);
    plMutexUnlock(&exitMutex);
}

int parkIfExiting(void) {
    plMutexLock(&exitMutex);
    if (!exiting) {
        plMutexUnlock(&exitMutex);
        return 0;
    }
    /* Until the deadline, and for as long as an exit handler waits or ends the process. By then a
       host that just quits is gone; one still exiting may wait for these very threads (it frees
       its core at exit). With exit()'s status that exit is ended here, flushed, once; without it
       the frame fails instead of a hang. */
    while (handlersBusy || plMonotonicMs() < exitDeadline) {
        if (plMonotonicMs() < exitDeadline)
            plCondWaitUntil(&parkedMayLeave, &exitMutex, exitDeadline);
        else
            plCondWait(&parkedMayLeave, &exitMutex);
    }
    if (exitStatusSeen)
        endProcessOnce(exitStatus);
    plMutexUnlock(&exitMutex);
    return 1;
}

static void finishAtExitWithStatus(int status, void *unused) {
    (void)unused;
    finishAtExit(status, 1);
}

static void finishAtExitWithoutStatus(void) {
    finishAtExit(0, 0);
}

static void finishAtThreadExit(void *unused) {
    (void)unused;
    /* exit() walks its handler list from the newest entry once this returns: a fresh entry runs
       before every handler registered after the plugin's last one (PyTorch's, at a binding's first
       use), and it gets the status. The main thread merely ending (pthread_exit) stops nothing. */
    if (hooks.withStatus && hooks.withStatus(finishAtExitWithStatus) == 0)
        return;
    finishAtExit(0, 0);
}

void guardExit(void) {
    static PL_THREAD_LOCAL int guardedHere;
    plOnce(&guardInitOnce, exitGuardInit);
    if (hooks.withStatus)
        hooks.withStatus(finishAtExitWithStatus);
    else if (hooks.withoutStatus)
        hooks.withoutStatus(finishAtExitWithoutStatus);
    /* The thread that creates a Restore is the one that evaluates scripts: under VSScript usually
       the host's main thread, the one that returns from main. exit() runs its thread_local
       destructors first, before every atexit handler and static destructor, whenever they were
       registered (PyTorch's Python bindings create theirs at their first call, in the first frame). */
    if (!guardedHere && hooks.onMainThreadExit && hooks.onMainThreadExit(finishAtThreadExit))
        guardedHere = 1;
}

void guardExitAfterFirstFrame(void) {
    plMutexLock(&exitMutex);
    int first = !firstFrameSeen;
    firstFrameSeen = 1;
    plMutexUnlock(&exitMutex);
    if (first)
        guardExit();
}

int enterPython(void) {
    plMutexLock(&exitMutex);
    int ok = !exiting;
    if (ok) {
        framesInPython++;
        inPythonHere++;
    }
    plMutexUnlock(&exitMutex);
    return ok;
}

void leavePython(void) {
    plMutexLock(&exitMutex);
    framesInPython--;
    inPythonHere--;
    if (exiting)
        plCondBroadcast(&exitIdle);
    plMutexUnlock(&exitMutex);
}
