/* A VapourSynth host with no Python, built for Linux (gcc) and for Windows (MinGW-w64, run under
   wine) by tests/test_windows_plugin.py, so that both builds of the plugin report the same, and by
   tests/test_native_host.py (Restore's error in a host without Python):
   creates a core (which autoloads the plugins folder next to libvapoursynth), prints the edvr
   plugin's namespace and each function with its argument string, calls Restore on a BlankClip
   and prints the error, frees the core and prints what the core logged while it was freed.
   Plain C11 and VapourSynth4.h: the same source on every platform. */
#include <stdio.h>
#include <string.h>

#include "VapourSynth4.h"

static int freeing; /* messages logged while the core is freed: leaks, mostly */

static void VS_CC logMessage(int msgType, const char *msg, void *userData) {
    (void)userData;
    if (freeing && msgType >= mtWarning)
        printf("log while freeing: %s\n", msg);
}

int main(void) {
    const VSAPI *vsapi = getVapourSynthAPI(VAPOURSYNTH_API_VERSION);
    if (!vsapi)
        return 3;
    VSCore *core = vsapi->createCore(0);
    vsapi->addLogHandler(logMessage, NULL, NULL, core);
    VSPlugin *edvr = vsapi->getPluginByID("io.github.vsedvr", core);
    if (!edvr) {
        printf("plugin not loaded\n");
        return 2;
    }
    printf("namespace: %s\n", vsapi->getPluginNamespace(edvr));
    for (VSPluginFunction *f = vsapi->getNextPluginFunction(NULL, edvr); f; f = vsapi->getNextPluginFunction(f, edvr))
        printf("function: %s(%s) -> %s\n", vsapi->getPluginFunctionName(f), vsapi->getPluginFunctionArguments(f),
               vsapi->getPluginFunctionReturnType(f));
    VSMap *args = vsapi->createMap();
    vsapi->mapSetInt(args, "width", 16, maReplace);
    vsapi->mapSetInt(args, "height", 16, maReplace);
    vsapi->mapSetInt(args, "format", vsapi->queryVideoFormatID(cfRGB, stFloat, 32, 0, 0, core), maReplace);
    VSMap *blank = vsapi->invoke(vsapi->getPluginByID("com.vapoursynth.std", core), "BlankClip", args);
    vsapi->clearMap(args);
    vsapi->mapConsumeNode(args, "clip", vsapi->mapGetNode(blank, "clip", 0, NULL), maReplace);
    VSMap *restored = vsapi->invoke(edvr, "Restore", args);
    const char *error = vsapi->mapGetError(restored);
    printf("Restore: %s\n", error ? error : "no error");
    vsapi->freeMap(restored);
    vsapi->freeMap(blank);
    vsapi->freeMap(args);
    freeing = 1;
    vsapi->freeCore(core);
    printf("core freed\n");
    fflush(stdout);
    return 0;
}
