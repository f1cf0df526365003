/* The platform layer on Windows x64 (MinGW-w64 or MSVC): SRW locks, condition variables, and the
   loaded python3XY.dll found through the module list. Only kernel32 is used. */
#ifdef _WIN32
#include <stdio.h>
#include <string.h>
#include <wchar.h>
#include <wctype.h>

#include "platform.h"
#include <tlhelp32.h>

void plMutexLock(PlMutex *m) { AcquireSRWLockExclusive(m); }
void plMutexUnlock(PlMutex *m) { ReleaseSRWLockExclusive(m); }
void plCondInit(PlCond *c) { (void)c; /* CONDITION_VARIABLE_INIT is all it needs */ }
void plCondWait(PlCond *c, PlMutex *m) { SleepConditionVariableSRW(c, m, INFINITE, 0); }
void plCondBroadcast(PlCond *c) { WakeAllConditionVariable(c); }
uint64_t plMonotonicMs(void) { return GetTickCount64(); }

int plCondWaitUntil(PlCond *c, PlMutex *m, uint64_t deadlineMs) {
    uint64_t now = GetTickCount64();
    if (now >= deadlineMs)
        return 0;
    /* a wake-up without a timeout counts as one: the caller re-checks its condition and the time */
    SleepConditionVariableSRW(c, m, (DWORD)(deadlineMs - now), 0);
    return GetTickCount64() < deadlineMs;
}

static BOOL CALLBACK runOnce(PINIT_ONCE once, PVOID init, PVOID *context) {
    (void)once; (void)context;
    ((void (*)(void))init)();
    return TRUE;
}

void plOnce(PlOnce *flag, void (*init)(void)) {
    InitOnceExecuteOnce(flag, runOnce, (PVOID)init, NULL);
}

static DWORD WINAPI flushAll(LPVOID unused) {
    (void)unused;
    fflush(NULL);
    return 0;
}

void plFlushStdio(uint64_t waitMs) {
    HANDLE flusher = CreateThread(NULL, 0, flushAll, NULL, 0, NULL);
    if (!flusher)
        return;
    WaitForSingleObject(flusher, waitMs > 0xFFFFFFFEu ? 0xFFFFFFFEu : (DWORD)waitMs);
    CloseHandle(flusher);
}

/* python3XY.dll (or python3XY_d.dll), not python3.dll: the stable-ABI forwarder lacks some of
   the symbols the bridge needs (_Py_IsFinalizing). Wide names: the same whether or not UNICODE is
   defined. */
static int isVersionedPythonDll(const wchar_t *name) {
    if (_wcsnicmp(name, L"python3", 7) != 0 || !iswdigit(name[7]))
        return 0;
    const wchar_t *dot = wcsrchr(name, L'.');
    return dot && _wcsicmp(dot, L".dll") == 0;
}

static HMODULE loadedPython(void) {
    static HMODULE python; /* the interpreter stays loaded while the process runs Python */
    if (python)
        return python;
    HANDLE snapshot = CreateToolhelp32Snapshot(TH32CS_SNAPMODULE, 0);
    if (snapshot == INVALID_HANDLE_VALUE)
        return NULL;
    MODULEENTRY32W entry;
    entry.dwSize = sizeof entry;
    for (BOOL more = Module32FirstW(snapshot, &entry); more && !python; more = Module32NextW(snapshot, &entry))
        if (isVersionedPythonDll(entry.szModule) && GetProcAddress(entry.hModule, "Py_IsInitialized"))
            python = entry.hModule;
    CloseHandle(snapshot);
    return python;
}

void *plPythonSymbol(const char *name) {
    HMODULE python = loadedPython();
    return python ? (void *)GetProcAddress(python, name) : NULL;
}

/* The process-wide exit() table of the Universal CRT, the one an executable's atexit uses. A
   DLL's own atexit runs only at DLL_PROCESS_DETACH, after ExitProcess has terminated every other
   thread: too late to stop a frame, and waiting there, under the loader lock, waits for threads
   that are gone. */
static int (__cdecl *processAtExit)(void (__cdecl *)(void));

int plOtherThreadsEnded(void) {
    /* ntdll's, documented in winternl.h: true while DLL_PROCESS_DETACH runs at process exit, after
       ExitProcess has terminated every other thread. A host that does not exit through the Universal
       CRT's exit() (its own static CRT) runs the table the handler is in only then. */
    static BOOLEAN (NTAPI *shutdownInProgress)(void);
    if (!shutdownInProgress) {
        FARPROC found = GetProcAddress(GetModuleHandleA("ntdll.dll"), "RtlDllShutdownInProgress");
        if (!found)
            return 0;
        memcpy(&shutdownInProgress, &found, sizeof found);
    }
    return shutdownInProgress() != 0;
}

static int atProcessExit(void (*handler)(void)) {
    return processAtExit(handler);
}

PlExitHooks plExitHooks(void) {
    /* the handler only sets the flag: the executable's exit table runs with every thread alive,
       but PyTorch's teardown comes at DLL detach, after ExitProcess has ended the frames' threads;
       a wait there would hold the CRT's exit lock, which a frame's first-use static needs */
    PlExitHooks hooks = { NULL, NULL, NULL, 1 };
    HMODULE ucrt = GetModuleHandleA("ucrtbase.dll");
    HMODULE self = NULL;
    FARPROC found = ucrt ? GetProcAddress(ucrt, "_crt_atexit") : NULL;
    memcpy(&processAtExit, &found, sizeof found);
    /* the handler lives in this DLL: pin it, as the core unloads plugins when it is freed */
    if (processAtExit && GetModuleHandleExA(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_PIN,
                                            (LPCSTR)(void *)plExitHooks, &self))
        hooks.withoutStatus = atProcessExit;
    return hooks;
}
#endif
