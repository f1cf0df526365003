/* A VSScript4 host as previewers (vsedit and the like) are: it evaluates a script through
   libvsscript, which embeds Python and never finalises it, and asks for frames with
   getFrameAsync. Built and run by tests/test_native_host.py.

   host exit SCRIPT N [MS]    requests frames 0..N-1, waits MS ms (200 unless given), prints "exiting" and
                              returns from main while they are in flight (nothing freed: a host that
                              just quits)
   host exit-thread SCRIPT N [MS]  the same, but another thread calls exit(0)
   host exit-free SCRIPT N [MS]  the same as exit, but an atexit handler registered first (so run last)
                              frees the script and its core: the core waits for its worker threads
   host exit-free-late SCRIPT N [MS]  the same as exit-free, but the handler that frees the script is
                              registered after the first frame has arrived (after the plugin's own
                              registrations: it runs first), MS ms after that main returns
   host exit-wait SCRIPT N [MS]  the same as exit, but an atexit handler registered first asks for frame
                              N with a synchronous getFrame (a host that waits for a frame while it
                              exits) and prints what it got; main returns MS ms after the first
                              frame arrived
   Every exit mode registers, before anything else, an atexit handler that prints "host atexit work
   done" (the host's earlier exit work), and prints 100 lines "line K" after "exiting" without
   flushing them: exit() must flush them (stdout is fully buffered when it is a pipe).
   host close SCRIPT N MS     closes as vsedit does during playback: N frames in flight, the next one
                              requested as each arrives; after MS ms the frames in flight are marked
                              discarded, the receiver is deleted although they are still in process
                              (vsedit's finalize() returns early then, and its window deletes the
                              script processor anyway), and main returns. A frame handed back after
                              that reaches a deleted receiver: reported, then abort() (vsedit: SIGSEGV)
   host log SCRIPT N          renders frames 0..N-1 one by one, then prints the messages its log handler
                              received ("messages: K", then one per line)
   host frames SCRIPT N       renders frames 0..N-1 of outputs 0 and 1 together (all requests in flight
                              at once) and writes each frame's planes to stdout: output 0's frame 0,
                              output 1's frame 0, output 0's frame 1, ...
   host frames-apart SCRIPT N the same frames, written in the same order, but output 0's all rendered
                              before output 1's are requested

   Exit status: 0 when everything asked for happened, 1 on a script or frame error (printed). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "VSScript4.h"

static const VSAPI *vsapi;

static pthread_mutex_t arrivedMutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t arrivedCond = PTHREAD_COND_INITIALIZER;
static int arrived; /* frames (or errors) handed back so far */

static void VS_CC dropFrame(void *userData, const VSFrame *f, int n, VSNode *node, const char *errorMsg) {
    (void)userData; (void)n; (void)node; (void)errorMsg;
    if (f)
        vsapi->freeFrame(f);
    pthread_mutex_lock(&arrivedMutex);
    arrived++;
    pthread_cond_broadcast(&arrivedCond);
    pthread_mutex_unlock(&arrivedMutex);
}

/* The host's own exit work, registered before everything else: it runs last. */
static void hostExitWork(void) {
    printf("host atexit work done\n");
}

/* vsedit's script processor, as far as frames reach it: what is in flight, and whether it is gone. */
typedef struct {
    VSNode *node;
    int next, last;   /* the next frame to request, the clip's last */
    int inFlight;
    int discard;      /* vsedit's flushFrameTicketsQueue: frames still in process are discarded */
} Receiver;

static pthread_mutex_t receiverMutex = PTHREAD_MUTEX_INITIALIZER;
static int receiverDeleted;

/* vsedit's frameReady hands every frame, or error, to its processor (QMetaObject::invokeMethod). */
static void VS_CC frameReady(void *userData, const VSFrame *f, int n, VSNode *node, const char *errorMsg) {
    (void)node;
    pthread_mutex_lock(&receiverMutex);
    if (receiverDeleted) {
        fprintf(stderr, "frame %d returned to the deleted receiver (%s)\n", n, f ? "a frame" : errorMsg);
        abort();
    }
    Receiver *r = (Receiver *)userData;
    r->inFlight--;
    if (f)
        vsapi->freeFrame(f);
    int request = -1;
    if (!r->discard && r->next <= r->last) { /* playback: the next frame */
        r->inFlight++;
        request = r->next++;
    }
    VSNode *source = r->node;
    pthread_mutex_unlock(&receiverMutex);
    if (request >= 0) /* outside the lock: the core may call back on this thread */
        vsapi->getFrameAsync(request, source, frameReady, r);
}

static void *exitNow(void *arg) {
    (void)arg;
    exit(0);
}

static const VSSCRIPTAPI *vssapi;
static VSScript *script;
static VSNode *outputNode;

static void freeAtExit(void) {
    vsapi->freeNode(outputNode);
    vssapi->freeScript(script);
}

static int lastFrame; /* exit-wait: the frame asked for at exit */

static void frameAtExit(void) {
    char error[1024] = "";
    const VSFrame *f = vsapi->getFrame(lastFrame, outputNode, error, sizeof error);
    printf("frame %d at exit: %s\n", lastFrame, f ? "a frame" : error);
    vsapi->freeFrame(f);
}

static pthread_mutex_t logMutex = PTHREAD_MUTEX_INITIALIZER;
static int messages;
static char logged[64][1024];

static void VS_CC onLog(int msgType, const char *msg, void *userData) {
    (void)msgType; (void)userData;
    pthread_mutex_lock(&logMutex);
    if (messages < 64)
        snprintf(logged[messages], sizeof logged[0], "%s", msg);
    messages++;
    pthread_mutex_unlock(&logMutex);
}

static pthread_cond_t doneCond = PTHREAD_COND_INITIALIZER;
static const VSFrame *results[2][256];
static int pending, failed;

static void VS_CC keepFrame(void *userData, const VSFrame *f, int n, VSNode *node, const char *errorMsg) {
    (void)node;
    pthread_mutex_lock(&logMutex);
    results[(int)(intptr_t)userData][n] = f;
    if (!f) {
        fprintf(stderr, "output %d frame %d: %s\n", (int)(intptr_t)userData, n, errorMsg);
        failed = 1;
    }
    if (--pending == 0)
        pthread_cond_signal(&doneCond);
    pthread_mutex_unlock(&logMutex);
}

static int writeFrame(const VSFrame *f) {
    const VSVideoFormat *fmt = vsapi->getVideoFrameFormat(f);
    for (int p = 0; p < fmt->numPlanes; p++) {
        const uint8_t *row = vsapi->getReadPtr(f, p);
        size_t width = (size_t)vsapi->getFrameWidth(f, p) * fmt->bytesPerSample;
        for (int y = 0; y < vsapi->getFrameHeight(f, p); y++, row += vsapi->getStride(f, p))
            if (fwrite(row, 1, width, stdout) != width)
                return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    int closing = argc > 1 && !strcmp(argv[1], "close");
    if (closing ? argc != 5 : argc != 4 && !(argc == 5 && !strncmp(argv[1], "exit", 4)))
        return 2;
    const char *mode = argv[1], *path = argv[2];
    int frames = lastFrame = atoi(argv[3]);
    vssapi = getVSScriptAPI(VSSCRIPT_API_VERSION);
    if (!vssapi) {
        printf("no VSScript (is Python configured? vapoursynth config)\n");
        return 3;
    }
    vsapi = vssapi->getVSAPI(VAPOURSYNTH_API_VERSION);
    VSCore *core = vsapi->createCore(0);
    vsapi->addLogHandler(onLog, NULL, NULL, core);
    int exiting = !strncmp(mode, "exit", 4);
    if (exiting)
        atexit(hostExitWork);
    if (!strcmp(mode, "exit-free"))
        atexit(freeAtExit);
    if (!strcmp(mode, "exit-wait"))
        atexit(frameAtExit);
    script = vssapi->createScript(core);
    if (vssapi->evaluateFile(script, path)) {
        printf("script error: %s\n", vssapi->getError(script));
        vssapi->freeScript(script);
        return 1;
    }
    VSNode *node = outputNode = vssapi->getOutputNode(script, 0);
    if (!node) {
        printf("no output 0\n");
        return 1;
    }
    if (exiting) {
        for (int n = 0; n < frames; n++)
            vsapi->getFrameAsync(n, node, dropFrame, NULL);
        printf("requested %d\n", frames);
        fflush(stdout);
        if (!strcmp(mode, "exit-free-late") || !strcmp(mode, "exit-wait")) {
            pthread_mutex_lock(&arrivedMutex);
            while (!arrived)
                pthread_cond_wait(&arrivedCond, &arrivedMutex);
            pthread_mutex_unlock(&arrivedMutex);
            if (!strcmp(mode, "exit-free-late")) /* after the first frame: after the plugin's registrations */
                atexit(freeAtExit);
        }
        usleep((argc == 5 ? atoi(argv[4]) : 200) * 1000); /* the first frames are being computed now */
        printf("exiting\n");
        fflush(stdout);
        for (int k = 0; k < 100; k++)
            printf("line %d\n", k);
        if (!strcmp(mode, "exit-thread")) {
            pthread_t t;
            pthread_create(&t, NULL, exitNow, NULL);
            for (;;)
                pause();
        }
        return 0; /* node, script and core not freed here: a host that just quits */
    }
    if (closing) {
        Receiver *r = calloc(1, sizeof *r);
        r->node = node;
        r->last = vsapi->getVideoInfo(node)->numFrames - 1;
        for (int n = 0; n < frames && n <= r->last; n++) {
            pthread_mutex_lock(&receiverMutex);
            r->next = n + 1;
            r->inFlight++;
            pthread_mutex_unlock(&receiverMutex);
            vsapi->getFrameAsync(n, node, frameReady, r);
        }
        printf("requested %d\n", frames);
        fflush(stdout);
        usleep(atoi(argv[4]) * 1000);
        pthread_mutex_lock(&receiverMutex);
        r->discard = 1;
        printf("closed with %d in flight after %d requested\n", r->inFlight, r->next);
        fflush(stdout);
        receiverDeleted = 1;
        free(r);
        pthread_mutex_unlock(&receiverMutex);
        return 0; /* script and core never freed: finalize() gave up while frames were in process */
    }
    int ok = 1;
    char error[1024];
    if (!strcmp(mode, "log")) {
        for (int n = 0; n < frames && ok; n++) {
            const VSFrame *f = vsapi->getFrame(n, node, error, sizeof error);
            if (!f) {
                printf("frame %d: %s\n", n, error);
                ok = 0;
            }
            vsapi->freeFrame(f);
        }
        pthread_mutex_lock(&logMutex);
        printf("messages: %d\n", messages);
        for (int i = 0; i < messages && i < 64; i++)
            printf("%s\n", logged[i]);
        pthread_mutex_unlock(&logMutex);
    } else if (!strcmp(mode, "frames") || !strcmp(mode, "frames-apart")) {
        VSNode *other = vssapi->getOutputNode(script, 1);
        if (!other) {
            printf("no output 1\n");
            return 1;
        }
        if (frames > 256)
            return 2;
        VSNode *both[2] = { node, other };
        int together = !strcmp(mode, "frames");
        for (int k = 0; k < 2; k += together ? 2 : 1) {
            /* together: both filters' frames all requested before any has arrived */
            pthread_mutex_lock(&logMutex);
            pending = together ? 2 * frames : frames;
            pthread_mutex_unlock(&logMutex);
            for (int n = 0; n < frames; n++)
                for (int j = k; j < (together ? 2 : k + 1); j++)
                    vsapi->getFrameAsync(n, both[j], keepFrame, (void *)(intptr_t)j);
            pthread_mutex_lock(&logMutex);
            while (pending)
                pthread_cond_wait(&doneCond, &logMutex);
            pthread_mutex_unlock(&logMutex);
        }
        ok = !failed;
        for (int n = 0; n < frames; n++)
            for (int k = 0; k < 2; k++) {
                ok = ok && writeFrame(results[k][n]);
                vsapi->freeFrame(results[k][n]);
            }
        vsapi->freeNode(other);
    } else {
        return 2;
    }
    vsapi->freeNode(node);
    vssapi->freeScript(script);
    return ok ? 0 : 1;
}
