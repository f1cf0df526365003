/*
 * Which input frames make up the temporal window of each output frame: the padding rules at the
 * clip's ends and the scene bounds read from frame properties (vsedvr/filter/windows.py is the same
 * rule in Python; tests compare them).
 */
#include "frame_window.h"

const char *const paddingNames[PADDING_COUNT] = { "reflection_circle", "replicate", "reflection", "circle" };

/*
 * Frame number for window position i (i may lie outside [first, last]) for centre c, window
 * length t, and a sequence (clip or scene) that runs from first to last. These are the
 * reference test-time rules (mmediting GenerateFrameIndiceswithPadding, BasicSR
 * generate_frame_indices) with the clip's ends moved to the scene's ends. Where a rule still
 * lands outside the sequence (sequences shorter than the window) the edge frame is used.
 */
int windowFrame(Padding padding, int i, int c, int t, int first, int last) {
    const int half = t / 2;
    int j = i;
    if (i < first) {
        switch (padding) {
        case PadReflectionCircle: j = first + (c - first) + half - (i - first); break;
        case PadReplicate: j = first; break;
        case PadReflection: j = first - (i - first); break;
        case PadCircle: j = first + t + (i - first); break;
        default: break;
        }
    } else if (i > last) {
        switch (padding) {
        case PadReflectionCircle: j = first + (c - first) - half - (i - last); break;
        case PadReplicate: j = last; break;
        case PadReflection: j = 2 * last - i; break;
        case PadCircle: j = i - t; break;
        default: break;
        }
    }
    return j < first ? first : (j > last ? last : j);
}

static int readFlag(const VSMap *props, const char *key, const VSAPI *vsapi) {
    int err = 0;
    if (vsapi->mapGetType(props, key) != ptInt)
        return 0; /* absent, or not an integer (documented: ignored) */
    return vsapi->mapGetInt(props, key, 0, &err) != 0 && !err;
}

/* First and last frame of the scene that holds frame n, looking at most t-1 frames away. */
void sceneBounds(int n, int numFrames, const VSFrame *const *frames, int lo, int hi, int *first, int *last,
                 const VSAPI *vsapi) {
    *first = 0;
    *last = numFrames - 1;
    /* A cut found nowhere in reach leaves the clip's end: the window stays inside the reach. */
    for (int k = n; k >= lo; k--) {
        const VSMap *props = vsapi->getFramePropertiesRO(frames[k - lo]);
        if (k < n && readFlag(props, "_SceneChangeNext", vsapi)) { *first = k + 1; break; }
        if (readFlag(props, "_SceneChangePrev", vsapi)) { *first = k; break; }
    }
    for (int k = n; k <= hi; k++) {
        const VSMap *props = vsapi->getFramePropertiesRO(frames[k - lo]);
        if (k > n && readFlag(props, "_SceneChangePrev", vsapi)) { *last = k - 1; break; }
        if (readFlag(props, "_SceneChangeNext", vsapi)) { *last = k; break; }
    }
}
