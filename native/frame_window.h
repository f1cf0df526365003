/* The temporal window rules (frame_window.c). */
#ifndef VSEDVR_FRAME_WINDOW_H
#define VSEDVR_FRAME_WINDOW_H

#include "VapourSynth4.h"

/* In the order of vsedvr.filter.windows.PADDINGS (tests/test_options.py compares the names). */
typedef enum { PadReflectionCircle, PadReplicate, PadReflection, PadCircle, PADDING_COUNT } Padding;

extern const char *const paddingNames[PADDING_COUNT];

/* Frame number for window position i (may lie outside [first, last]) of centre c, window length t. */
int windowFrame(Padding padding, int i, int c, int t, int first, int last);

/* First and last frame of the scene that holds frame n (frames[k - lo] is frame k, lo <= k <= hi). */
void sceneBounds(int n, int numFrames, const VSFrame *const *frames, int lo, int hi, int *first, int *last,
                 const VSAPI *vsapi);

#endif
