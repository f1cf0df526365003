/* The exit guard: stops the frames in flight when a host ends the process (exit_guard.c). */
#ifndef VSEDVR_EXIT_GUARD_H
#define VSEDVR_EXIT_GUARD_H

/* Registers the exit handler (again): when a Restore is created. */
void guardExit(void);
/* guardExit once per process, after its first frame. */
void guardExitAfterFirstFrame(void);
/* Counts a frame into Python; 0 when the process is exiting. */
int enterPython(void);
void leavePython(void);
/* 0 while the process is not exiting. Once it is, parks: no frame, and no error, goes back to the
   host until the exit has outlived its bound and no exit handler is waiting or ending the process.
   Then, with exit()'s status, ends the process; without it, returns 1 and the frame must fail (a
   host still exiting then waits for this thread). */
int parkIfExiting(void);
/* The flag the Python side watches (vsedvr.filter.shutdown.watch_native_exit). */
volatile int *exitFlag(void);

#endif
