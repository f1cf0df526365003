/* The exit guard: stops the frames in flight when a host ends the process (exit_guard.c). */
#ifndef VSEDVR_EXIT_GUARD_H
#define VSEDVR_EXIT_GUARD_H

/* Registers the exit handler (again): when a Restore is created and after the first frame. */
void guardExit(void);
/* Counts a frame into Python; 0 when the process is exiting. */
int enterPython(void);
void leavePython(void);
/* Never returns once the process is exiting: no frame, and no error, goes back to the host. */
void parkIfExiting(void);
/* The flag the Python side watches (vsedvr.filter.shutdown.watch_native_exit). */
volatile int *exitFlag(void);

#endif
