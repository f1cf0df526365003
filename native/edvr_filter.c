/*
 * edvr.Restore: the native VapourSynth side of vsedvr.
 *
 * This library does the VapourSynth work (validation of the clip, frame requests for the
 * temporal window, clip-end and scene-cut handling by remapping frame numbers, output
 * allocation with the centre frame's properties) and hands only the tensor work to Python
 * (`vsedvr.filter.plugin`) through the Python bridge (python_bridge.c), which finds Python in the host
 * process at run time. exit_guard.c stops frames when a host exits with frames in flight;
 * frame_window.c holds the temporal window rules; platform.h is the little the plugin needs from the
 * operating system.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "VapourSynth4.h"
#include "exit_guard.h"
#include "python_bridge.h"
#include "frame_window.h"

#define STRINGIFY(x) #x
#define EXPANDED_STRING(x) STRINGIFY(x)
#define VSEDVR_VERSION EXPANDED_STRING(VSEDVR_VERSION_TOKENS) /* setup.py: the package's version */
#define FILTER_NAME "Restore"
#define MAX_FRAMES 15 /* longest temporal window accepted from the Python side */

/* ---------------------------------------------------------------- the filter */

typedef struct {
    VSNode *node;
    VSVideoInfo vi;      /* output */
    int inWidth, inHeight, numInputFrames;
    int t;               /* window length */
    Padding padding;
    int sceneChange;
    PyObject *restorer;  /* vsedvr.filter.plugin.Restorer */
    PyObject *process;   /* restorer.process: the network */
    PyObject *write;     /* restorer.write: the result into the output frame */
} RestoreData;

static PyObject *planeViews(const VSFrame *f, int writable, const VSAPI *vsapi) {
    PyObject *tuple = py.Tuple_New(4);
    if (!tuple)
        return NULL;
    const VSVideoFormat *fmt = vsapi->getVideoFrameFormat(f);
    ptrdiff_t stride = vsapi->getStride(f, 0);
    Py_ssize_t size = (Py_ssize_t)stride * vsapi->getFrameHeight(f, 0);
    /* a NULL item (out of memory) must not reach Python: the error is set, the tuple dropped */
    for (int p = 0; p < fmt->numPlanes; p++) {
        char *ptr = writable ? (char *)vsapi->getWritePtr((VSFrame *)f, p) : (char *)vsapi->getReadPtr(f, p);
        PyObject *view = py.MemoryView_FromMemory(ptr, size, writable ? PYBUF_WRITE : PYBUF_READ);
        if (!view || py.Tuple_SetItem(tuple, p, view) != 0) {
            pyDecRef(tuple);
            return NULL;
        }
    }
    PyObject *strideObject = py.Long_FromLongLong(stride);
    if (!strideObject || py.Tuple_SetItem(tuple, 3, strideObject) != 0) {
        pyDecRef(tuple);
        return NULL;
    }
    return tuple;
}

/* Takes the GIL for one call of the restorer: 0 (err filled, nothing taken) when Python cannot run. */
static int enterRestorer(int n, PyGILState_STATE *gil, char *err, size_t errSize) {
    if (!enterPython()) {
        snprintf(err, errSize, "the process is exiting; frame %d was not computed", n);
        return 0;
    }
    if (!pyUsable()) {
        leavePython();
        snprintf(err, errSize, "the Python interpreter is shutting down; frame %d was not computed", n);
        return 0;
    }
    *gil = py.GILState_Ensure();
    return 1;
}

static void leaveRestorer(PyGILState_STATE gil) {
    py.GILState_Release(gil);
    leavePython();
    guardExitAfterFirstFrame();
}

/* Runs restorer.process(n, window, sources): the network, before the output frame exists (a frame
   waiting for the network holds no output memory). 0 and err on failure. */
static int runNetwork(RestoreData *d, int n, const int *window, const VSFrame *const *frames, int lo,
                      char *err, size_t errSize, const VSAPI *vsapi) {
    PyGILState_STATE gil;
    if (!enterRestorer(n, &gil, err, errSize))
        return 0;
    int ok = 0;
    PyObject *windowTuple = py.Tuple_New(d->t);
    PyObject *sources = py.Tuple_New(d->t); /* the planes of window[i] */
    if (windowTuple && sources) {
        ok = 1;
        for (int i = 0; i < d->t && ok; i++) {
            PyObject *views = planeViews(frames[window[i] - lo], 0, vsapi);
            ok = views != NULL;
            py.Tuple_SetItem(windowTuple, i, py.Long_FromLongLong(window[i]));
            if (ok)
                py.Tuple_SetItem(sources, i, views);
        }
    }
    if (ok) {
        PyObject *args = py.Tuple_New(3);
        if (args) {
            py.Tuple_SetItem(args, 0, py.Long_FromLongLong(n));
            py.Tuple_SetItem(args, 1, windowTuple);
            py.Tuple_SetItem(args, 2, sources);
            windowTuple = sources = NULL; /* stolen */
        }
        ok = pyCallChecked(d->process, args, NULL, err, errSize);
    } else {
        pyTakeError(err, errSize);
    }
    pyDecRef(windowTuple);
    pyDecRef(sources);
    leaveRestorer(gil);
    return ok;
}

/* Runs restorer.write(n, output) on the thread that ran runNetwork for n. 0 and err on failure. */
static int runWrite(RestoreData *d, int n, VSFrame *dst, char *err, size_t errSize, const VSAPI *vsapi) {
    PyGILState_STATE gil;
    if (!enterRestorer(n, &gil, err, errSize))
        return 0;
    int ok = 0;
    PyObject *output = planeViews(dst, 1, vsapi);
    PyObject *args = output ? py.Tuple_New(2) : NULL;
    if (args) {
        py.Tuple_SetItem(args, 0, py.Long_FromLongLong(n));
        py.Tuple_SetItem(args, 1, output);
        output = NULL; /* stolen */
        ok = pyCallChecked(d->write, args, NULL, err, errSize);
    } else {
        pyTakeError(err, errSize);
    }
    pyDecRef(output);
    leaveRestorer(gil);
    return ok;
}

static const VSFrame *VS_CC restoreGetFrame(int n, int activationReason, void *instanceData, void **frameData,
                                            VSFrameContext *frameCtx, VSCore *core, const VSAPI *vsapi) {
    (void)frameData;
    RestoreData *d = (RestoreData *)instanceData;
    if (parkIfExiting()) { /* nothing goes back to a host that is exiting, until its exit outlives the bound */
        vsapi->setFilterError(FILTER_NAME ": the process is exiting; frame not computed", frameCtx);
        return NULL;
    }
    /* Frames up to t-1 away: reflection_circle reaches that far, and scene props are read there. */
    const int reach = d->t - 1;
    int lo = n - reach < 0 ? 0 : n - reach;
    int hi = n + reach > d->numInputFrames - 1 ? d->numInputFrames - 1 : n + reach;

    if (activationReason == arInitial) {
        for (int k = lo; k <= hi; k++)
            vsapi->requestFrameFilter(k, d->node, frameCtx);
        return NULL;
    }
    if (activationReason != arAllFramesReady)
        return NULL;

    const VSFrame *frames[4 * MAX_FRAMES];
    for (int k = lo; k <= hi; k++)
        frames[k - lo] = vsapi->getFrameFilter(k, d->node, frameCtx);

    int first = 0, last = d->numInputFrames - 1;
    if (d->sceneChange)
        sceneBounds(n, d->numInputFrames, frames, lo, hi, &first, &last, vsapi);
    int window[MAX_FRAMES];
    for (int i = 0; i < d->t; i++) {
        window[i] = windowFrame(d->padding, n - d->t / 2 + i, n, d->t, first, last);
        if (window[i] < lo || window[i] > hi) { /* cannot happen by the rules; never read outside */
            for (int k = lo; k <= hi; k++)
                vsapi->freeFrame(frames[k - lo]);
            vsapi->setFilterError(FILTER_NAME ": internal error: window frame outside the requested range", frameCtx);
            return NULL;
        }
    }

    char err[16384];
    VSFrame *dst = NULL;
    int ok = runNetwork(d, n, window, frames, lo, err, sizeof err, vsapi);
    if (ok) {
        dst = vsapi->newVideoFrame(&d->vi.format, d->vi.width, d->vi.height, frames[n - lo], core);
        ok = runWrite(d, n, dst, err, sizeof err, vsapi);
    }
    if (parkIfExiting()) { /* the frame was stopped, or finished while the process began to exit */
        ok = 0;
        snprintf(err, sizeof err, "the process is exiting; frame %d was not computed", n);
    }
    for (int k = lo; k <= hi; k++)
        vsapi->freeFrame(frames[k - lo]);
    if (!ok) {
        char msg[16500];
        snprintf(msg, sizeof msg, FILTER_NAME ": frame %d: %s", n, err);
        vsapi->setFilterError(msg, frameCtx);
        if (dst)
            vsapi->freeFrame(dst);
        return NULL;
    }
    return dst;
}

static void VS_CC restoreFree(void *instanceData, VSCore *core, const VSAPI *vsapi) {
    (void)core;
    RestoreData *d = (RestoreData *)instanceData;
    /* While Python shuts down, or the process exits (a host freeing its core at exit, after
       PyTorch's own teardown may have run), its objects must not be touched (releasing then
       crashes): leak. */
    if (d->restorer && pyUsable() && !*exitFlag()) {
        PyGILState_STATE gil = py.GILState_Ensure();
        pyDecRef(d->process);
        pyDecRef(d->write);
        pyDecRef(d->restorer);
        py.GILState_Release(gil);
    }
    vsapi->freeNode(d->node);
    free(d);
}

/* The arguments of the call (all but clip) as a Python dict, so new Python-side options need
   no change here. NULL with the message in errText on failure. */
static PyObject *argumentDict(const VSMap *in, const VSAPI *vsapi, char *errText, size_t errSize) {
    PyObject *dict = py.Dict_New();
    if (!dict) {
        pyTakeError(errText, errSize);
        return NULL;
    }
    for (int k = 0; k < vsapi->mapNumKeys(in); k++) {
        const char *key = vsapi->mapGetKey(in, k);
        if (!strcmp(key, "clip"))
            continue;
        int count = vsapi->mapNumElements(in, key), err = 0;
        int type = vsapi->mapGetType(in, key);
        PyObject *value = NULL;
        if (type == ptInt || type == ptFloat) {
            /* a list unless registered as a single value; the Python side checks the shape */
            value = py.Tuple_New(count);
            for (int i = 0; value && i < count; i++)
                py.Tuple_SetItem(value, i, type == ptInt ? py.Long_FromLongLong(vsapi->mapGetInt(in, key, i, &err))
                                                         : py.Float_FromDouble(vsapi->mapGetFloat(in, key, i, &err)));
        } else if (type == ptData) {
            value = py.Unicode_FromStringAndSize(vsapi->mapGetData(in, key, 0, &err), vsapi->mapGetDataSize(in, key, 0, &err));
            if (!value) { /* bytes that are not UTF-8: name the argument instead of "UnicodeDecodeError" */
                py.Err_Clear();
                snprintf(errText, errSize, "\"%s\" must be text (UTF-8), got bytes that are not valid UTF-8", key);
                pyDecRef(dict);
                return NULL;
            }
        }
        if (!value || py.Dict_SetItemString(dict, key, value) != 0) {
            pyTakeError(errText, errSize);
            pyDecRef(value);
            pyDecRef(dict);
            return NULL;
        }
        pyDecRef(value);
    }
    return dict;
}

static int attrInt(PyObject *o, const char *name, int *out, char *err, size_t errSize) {
    PyObject *v = py.Object_GetAttrString(o, name);
    if (!v) {
        pyTakeError(err, errSize);
        return 0;
    }
    *out = (int)py.Long_AsLongLong(v);
    pyDecRef(v);
    if (py.Err_Occurred()) {
        pyTakeError(err, errSize);
        return 0;
    }
    return 1;
}

/* Builds the Python restorer and reads back what the VapourSynth side needs from it. */
static int createRestorer(RestoreData *d, const VSMap *in, const VSVideoInfo *vi, char *err, size_t errSize,
                          const VSAPI *vsapi) {
    PyGILState_STATE gil = py.GILState_Ensure();
    int ok = 0, scale = 0, padding = 0;
    /* the Python side reads the exit flag itself (see finishAtExit) */
    PyObject *watch = pyFilterFunction("watch_native_exit", err, errSize);
    PyObject *watchArgs = watch ? py.Tuple_New(1) : NULL;
    if (watchArgs)
        py.Tuple_SetItem(watchArgs, 0, py.Long_FromLongLong((long long)(intptr_t)exitFlag()));
    int watching = watchArgs && pyCallChecked(watch, watchArgs, NULL, err, errSize);
    pyDecRef(watch);
    if (!watching) {
        py.GILState_Release(gil);
        return 0;
    }
    PyObject *create = pyFilterFunction("create", err, errSize);
    PyObject *options = create ? argumentDict(in, vsapi, err, errSize) : NULL;
    PyObject *args = options ? py.Tuple_New(5) : NULL;
    PyObject *result = NULL;
    if (args) {
        py.Tuple_SetItem(args, 0, options);
        py.Tuple_SetItem(args, 1, py.Long_FromLongLong(vi->width));
        py.Tuple_SetItem(args, 2, py.Long_FromLongLong(vi->height));
        py.Tuple_SetItem(args, 3, py.Long_FromLongLong(vi->format.bitsPerSample));
        py.Tuple_SetItem(args, 4, py.Long_FromLongLong(vi->numFrames));
        options = NULL;
    }
    /* create() returns a Restorer, or a str with the message when the arguments are wrong */
    if (create && args && pyCallChecked(create, args, &result, err, errSize)) {
        PyObject *errorText = py.Object_GetAttrString(result, "error");
        if (errorText && errorText != py.None) {
            pyStrInto(errorText, err, errSize);
        } else if (!errorText) {
            pyTakeError(err, errSize);
        } else if (attrInt(result, "num_frames", &d->t, err, errSize) && attrInt(result, "scale", &scale, err, errSize) &&
                   attrInt(result, "padding_index", &padding, err, errSize) &&
                   attrInt(result, "scenechange", &d->sceneChange, err, errSize)) {
            d->process = py.Object_GetAttrString(result, "process");
            d->write = d->process ? py.Object_GetAttrString(result, "write") : NULL;
            if (!d->process || !d->write) {
                pyTakeError(err, errSize);
            } else if (d->t < 1 || d->t > MAX_FRAMES || scale < 1 || padding < 0 || padding > PadCircle) {
                snprintf(err, errSize, "the model's window (%d frames) or scale (%d) is not supported", d->t, scale);
            } else {
                d->restorer = result;
                result = NULL;
                d->padding = (Padding)padding;
                d->vi.width = vi->width * scale;
                d->vi.height = vi->height * scale;
                ok = 1;
            }
        }
        pyDecRef(errorText);
    }
    if (!ok) {
        pyDecRef(d->process);
        pyDecRef(d->write);
        d->process = d->write = NULL;
    }
    pyDecRef(result);
    pyDecRef(options);
    pyDecRef(create);
    py.GILState_Release(gil);
    return ok;
}

static void VS_CC restoreCreate(const VSMap *in, VSMap *out, void *userData, VSCore *core, const VSAPI *vsapi) {
    (void)userData;
    char err[16384];
    VSNode *node = vsapi->mapGetNode(in, "clip", 0, NULL);
    const VSVideoInfo *vi = vsapi->getVideoInfo(node);
    const VSVideoFormat *fmt = &vi->format;

    int rgbFloat = fmt->colorFamily == cfRGB && fmt->sampleType == stFloat &&
                   (fmt->bitsPerSample == 32 || fmt->bitsPerSample == 16);
    if (!rgbFloat || vi->width == 0 || vi->height == 0) {
        /* Each message ends with the conversion to paste (tests/test_suggested_fixes.py pastes them):
         * RGB needs no matrix (zimg refuses one for RGB input), YUV needs one and the way back, a
         * variable size needs width and height. */
        char name[32] = "a variable format";
        if (fmt->colorFamily != cfUndefined)
            vsapi->getVideoFormatName(fmt, name);
        const char *fixed = vi->width == 0 || vi->height == 0
            ? "width=clip.get_frame(0).width, height=clip.get_frame(0).height, format=vs.RGBS" : "format=vs.RGBS";
        const char *size = vi->width == 0 || vi->height == 0 ? " of variable size" : "";
        if (fmt->colorFamily == cfRGB)
            snprintf(err, sizeof err,
                     FILTER_NAME ": \"clip\" must be RGBS or RGBH with a constant format and size, got %s%s; "
                     "convert first (RGB needs no matrix): `clip = core.resize.Bicubic(clip, %s)`", name, size, fixed);
        else if (fmt->colorFamily == cfUndefined)
            snprintf(err, sizeof err,
                     FILTER_NAME ": \"clip\" must be RGBS or RGBH with a constant format and size, got %s%s; "
                     "convert every frame to RGBS first: `clip = core.resize.Bicubic(clip, %s, matrix_in_s=\"709\")` "
                     "when the frames are YUV (\"170m\" for SD), `clip = core.resize.Bicubic(clip, %s)` when they are RGB",
                     name, size, fixed, fixed);
        else /* the round trip a script needs: y4m and most encoders take YUV, not RGBS */
            snprintf(err, sizeof err,
                     FILTER_NAME ": \"clip\" must be RGBS or RGBH with a constant format and size, got %s%s; "
                     "convert to RGBS with the source's matrix (\"170m\" for SD), restore, and convert back for "
                     "output: `clip = core.resize.Bicubic(clip, %s, matrix_in_s=\"709\")`, "
                     "`clip = core.edvr.Restore(clip)`, "
                     "`clip = core.resize.Bicubic(clip, format=vs.YUV420P10, matrix_s=\"709\")`", name, size, fixed);
        vsapi->mapSetError(out, err);
        vsapi->freeNode(node);
        return;
    }
    if (vi->numFrames < 1) {
        vsapi->mapSetError(out, FILTER_NAME ": \"clip\" has no frames");
        vsapi->freeNode(node);
        return;
    }
    if (!pyResolve() || !py.IsInitialized()) {
        vsapi->mapSetError(out, FILTER_NAME ": needs a Python interpreter in the host process (vspipe, vsedit or a "
                                "Python script with vsedvr installed); none is loaded here");
        vsapi->freeNode(node);
        return;
    }

    RestoreData *d = (RestoreData *)calloc(1, sizeof *d);
    d->node = node;
    d->vi = *vi;
    d->inWidth = vi->width;
    d->inHeight = vi->height;
    d->numInputFrames = vi->numFrames;
    if (!createRestorer(d, in, vi, err, sizeof err, vsapi)) {
        char msg[16500];
        snprintf(msg, sizeof msg, FILTER_NAME ": %s", err);
        vsapi->mapSetError(out, msg);
        vsapi->freeNode(node);
        free(d);
        return;
    }
    guardExit();
    VSFilterDependency deps[] = { { d->node, rpGeneral } };
    /* fmParallel: frames of this filter run on several threads at once. The network stays serial
       (the engine's lock); what overlaps is the rest of a frame, around that lock: the transfer of
       frame n's result to the host, and its copy into the output, while frame n+1 computes. */
    VSNode *filter = vsapi->createVideoFilter2(FILTER_NAME, &d->vi, restoreGetFrame, restoreFree, fmParallel,
                                               deps, 1, d, core);
    if (!filter) {
        vsapi->mapSetError(out, FILTER_NAME ": the core refused to create the filter");
        return; /* the core has called restoreFree */
    }
    vsapi->mapConsumeNode(out, "clip", filter, maAppend);
}

static void VS_CC versionCreate(const VSMap *in, VSMap *out, void *userData, VSCore *core, const VSAPI *vsapi) {
    (void)in; (void)core;
    VSPlugin *plugin = (VSPlugin *)userData;
    vsapi->mapSetData(out, "version", VSEDVR_VERSION, -1, dtUtf8, maReplace);
    vsapi->mapSetData(out, "path", vsapi->getPluginPath(plugin), -1, dtUtf8, maReplace);
    for (int i = 0; i < PADDING_COUNT; i++)
        vsapi->mapSetData(out, "paddings", paddingNames[i], -1, dtUtf8, maAppend);
}

VS_EXTERNAL_API(void) VapourSynthPluginInit2(VSPlugin *plugin, const VSPLUGINAPI *vspapi) {
    vspapi->configPlugin("io.github.vsedvr", "edvr", "EDVR video restoration (super-resolution, deblurring)",
                         VS_MAKE_VERSION(VSEDVR_VERSION_MAJOR, VSEDVR_VERSION_MINOR), VAPOURSYNTH_API_VERSION, 0, plugin);
    vspapi->registerFunction(FILTER_NAME,
                             "clip:vnode;model:data:opt;device:data:opt;padding:data:opt;scenechange:int:opt;"
                             "tile:float[]:opt;tile_overlap:float:opt;precision:data:opt;compile:int:opt;",
                             "clip:vnode;", restoreCreate, NULL, plugin);
    vspapi->registerFunction("Version", "", "version:data;path:data;paddings:data[];", versionCreate, plugin, plugin);
}
