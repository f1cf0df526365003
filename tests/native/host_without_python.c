/* A VapourSynth host with no Python in the process: creates a core (which autoloads the
   plugins folder next to libvapoursynth), then calls edvr.Restore on a BlankClip and prints the
   error it gets. Built and run by tests/test_native_host.py. */
#include <stdio.h>

#include "VapourSynth4.h"

int main(void) {
    const VSAPI *vsapi = getVapourSynthAPI(VAPOURSYNTH_API_VERSION);
    if (!vsapi)
        return 3;
    VSCore *core = vsapi->createCore(0);
    VSPlugin *edvr = vsapi->getPluginByID("io.github.vsedvr", core);
    if (!edvr) {
        printf("plugin not loaded\n");
        return 2;
    }
    VSMap *args = vsapi->createMap();
    vsapi->mapSetInt(args, "width", 16, maReplace);
    vsapi->mapSetInt(args, "height", 16, maReplace);
    vsapi->mapSetInt(args, "format", vsapi->queryVideoFormatID(cfRGB, stFloat, 32, 0, 0, core), maReplace);
    VSMap *blank = vsapi->invoke(vsapi->getPluginByID("com.vapoursynth.std", core), "BlankClip", args);
    vsapi->clearMap(args);
    vsapi->mapConsumeNode(args, "clip", vsapi->mapGetNode(blank, "clip", 0, NULL), maReplace);
    VSMap *restored = vsapi->invoke(edvr, "Restore", args);
    const char *error = vsapi->mapGetError(restored);
    printf("%s\n", error ? error : "no error");
    vsapi->freeMap(restored);
    vsapi->freeMap(blank);
    vsapi->freeMap(args);
    vsapi->freeCore(core);
    return 0;
}
