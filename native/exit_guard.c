/* The exit guard.

A host may end the process with frames still being computed: vsedit closing mid-render, or any
VSScript host that returns from main (or calls exit()) without freeing its script. libvsscript
never finalises Python, so Python's atexit (vsedvr/filter/shutdown.py's _finish_at_exit) never runs there, and
Py_IsFinalizing() stays false. exit() then runs the C atexit handlers and the shared libraries'
static destructors (libtorch's, OpenMP's) while VapourSynth's worker threads are still inside
PyTorch: a crash in the middle of a convolution.

So the plugin runs its own handler first. atexit handlers and static destructors run in the
reverse order of their registration, so it must be registered after libtorch's: it is registered
when a Restore is created (PyTorch is loaded by then, and vsedvr.filter.plugin has run one tiny window through
the network, so that what PyTorch creates at its first use exists already) and again after the
process's first frame. What a frame uses for the first time (each of PyTorch's Python bindings
builds its argument parser at its first call) would still register later; so, on the main thread
(the one that returns from main), it is also a thread_local destructor, which exit() runs before
every atexit handler. The handler
 - sets `exiting`: no new frame enters Python, and the Python side reads the same flag
   (vsedvr.filter.shutdown.watch_native_exit) and stops a running frame at its next feature encoding, as it
   does after Python's own atexit;
 - waits until no frame is inside Python, holding no lock and not the GIL (a running frame needs
   the GIL to finish). One deadline for the whole process, EXIT_WAIT_SECONDS after the first
   handler started, however many times the handler is registered and runs;
 - if a frame is still inside Python at the deadline, ends the process there with exit()'s
   status (_exit: the teardown would run under that frame). The exit never hangs and never
   tears PyTorch down under a frame.
A frame stopped at exit is never handed back to the core: its thread parks (parkIfExiting) until
the process is gone. The host may have deleted the receiver of its frames already (vsedit deletes
its script processor with frames in process, then returns from main): a frame or an error
returned to the core then calls the host's callback on a deleted object. Should the teardown
still be running at the deadline (a host waiting for those threads at exit), a parked thread ends
the process with exit()'s status.
exit()'s status is known to on_exit handlers (glibc) only; without it (the thread_local hook, other
C libraries) nothing is ended early, and a parked thread parks for good. on_exit handlers are not
removed when their library is unloaded, so the plugin pins itself in the process first.
Where Python itself is finalising or finalised (a plain Python script), its atexit guard has
already stopped the frames, and threads may be parked forever on the GIL: no wait there.
What differs per platform is in plExitHooks (platform_posix.c, platform_windows.c).

Windows (docs/hosts.md): ExitProcess terminates every other thread before any DLL_PROCESS_DETACH,
and the DLLs' own atexit handlers and static destructors (PyTorch's, OpenMP's) run at their
detach, so PyTorch is never torn down under a running frame there. What runs while the frames
still run is the executable's exit() table: the handler goes there (the Universal CRT's
_crt_atexit, the plugin pinned), without exit()'s status. It stops the frames and keeps them
from the host; ExitProcess then ends the parked threads. */

#include <stdio.h>
#include <stdlib.h>

#include "exit_guard.h"
#include "platform.h"
#include "python_bridge.h"

#define EXIT_WAIT_SECONDS 10 /* longest wait, in all, at process exit for frames being computed */

static PlMutex exitMutex = PL_MUTEX_INIT;
static PlCond exitIdle = PL_COND_INIT;        /* signalled when a frame leaves Python after `exiting` */
static PlCond exitStatusKnown = PL_COND_INIT; /* signalled when exit()'s status becomes known */
static volatile int exiting;                  /* read by the Python side through its address */
static uint64_t exitDeadline;                 /* set when `exiting` is: the one bound for the whole exit */
static int exitStatus, exitStatusSeen;        /* exit()'s status, once a handler has seen it */
static int framesInPython;
static PL_THREAD_LOCAL int inPythonHere; /* this thread is inside runPython (exit() called from a frame) */
static PlExitHooks hooks;

volatile int *exitFlag(void) {
    return &exiting;
}

static void exitGuardInit(void) {
    plCondInit(&exitIdle);
    plCondInit(&exitStatusKnown);
    hooks = plExitHooks();
}

/* Under exitMutex: sets `exiting` and the deadline, the first time. */
static void startExiting(void) {
    if (exiting)
        return;
    exiting = 1;
    exitDeadline = plMonotonicMs() + 1000u * EXIT_WAIT_SECONDS;
}

/* The exit handler; known: whether status is exit()'s status. */
static void finishAtExit(int status, int known) {
    plMutexLock(&exitMutex);
    startExiting();
    if (known && !exitStatusSeen) {
        exitStatus = status;
        exitStatusSeen = 1;
        plCondBroadcast(&exitStatusKnown);
    }
    /* the frames' threads may be gone without a word (Windows, ExitProcess): nothing to wait for */
    int pythonGone = !py.ok || !py.IsInitialized() || py.IsFinalizing() || plOtherThreadsEnded();
    while (!pythonGone && framesInPython > inPythonHere)
        if (!plCondWaitUntil(&exitIdle, &exitMutex, exitDeadline))
            break;
    int frameStuck = !pythonGone && framesInPython > inPythonHere;
    plMutexUnlock(&exitMutex);
    if (frameStuck && known) {
        fflush(NULL);
        _Exit(status); /* the teardown would run under that frame */
    }
}

void parkIfExiting(void) {
    plMutexLock(&exitMutex);
    if (!exiting) {
        plMutexUnlock(&exitMutex);
        return;
    }
    while (plCondWaitUntil(&exitStatusKnown, &exitMutex, exitDeadline))
        ;
    while (!exitStatusSeen)
        plCondWait(&exitStatusKnown, &exitMutex);
    _Exit(exitStatus); /* the process outlived the bound: its teardown waits, maybe for this thread */
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
    finishAtExit(0, 0);
}

void guardExit(void) {
    static PL_THREAD_LOCAL int guardedHere;
    plOnce(exitGuardInit);
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
