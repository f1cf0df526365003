/*
 * The Python C API, reached at run time: the plugin never links libpython (or python3XY.dll).
 * Every symbol is looked up in the host process (plPythonSymbol), so one build serves every
 * Python 3 version, and in a host without Python Restore fails with a clear error instead of the
 * plugin failing to load.
 */
#ifndef VSEDVR_PYTHON_BRIDGE_H
#define VSEDVR_PYTHON_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct _object PyObject;
typedef intptr_t Py_ssize_t;
typedef int PyGILState_STATE;

typedef struct {
    int ok;
    int (*IsInitialized)(void);
    int (*IsFinalizing)(void);
    PyGILState_STATE (*GILState_Ensure)(void);
    void (*GILState_Release)(PyGILState_STATE);
    int (*GILState_Check)(void);
    PyObject *(*Import_ImportModule)(const char *);
    PyObject *(*Object_GetAttrString)(PyObject *, const char *);
    PyObject *(*Object_CallObject)(PyObject *, PyObject *);
    PyObject *(*Object_Str)(PyObject *);
    PyObject *(*Tuple_New)(Py_ssize_t);
    int (*Tuple_SetItem)(PyObject *, Py_ssize_t, PyObject *);
    PyObject *(*Dict_New)(void);
    int (*Dict_SetItemString)(PyObject *, const char *, PyObject *);
    PyObject *(*Long_FromLongLong)(long long);
    long long (*Long_AsLongLong)(PyObject *);
    PyObject *(*Float_FromDouble)(double);
    PyObject *(*Unicode_FromStringAndSize)(const char *, Py_ssize_t);
    const char *(*Unicode_AsUTF8AndSize)(PyObject *, Py_ssize_t *);
    PyObject *(*MemoryView_FromMemory)(char *, Py_ssize_t, int);
    PyObject *(*Err_Occurred)(void);
    void (*Err_Fetch)(PyObject **, PyObject **, PyObject **);
    void (*Err_Clear)(void);
    void (*DecRef)(PyObject *);
    PyObject *None;
} PythonApi;

extern PythonApi py;

#define PYBUF_READ 0x100
#define PYBUF_WRITE 0x200

/* Looks the Python C API up in the host process; returns 0 when there is no usable Python. */
int pyResolve(void);
/* True when Python calls are safe: resolved, initialised, not shutting down. */
int pyUsable(void);
void pyDecRef(PyObject *o);
/* Copies str(o) into buf; used for results and for exceptions raised outside vsedvr's handlers. */
void pyStrInto(PyObject *o, char *buf, size_t size);
/* Takes the pending Python exception (if any) into buf as "Type: message". */
void pyTakeError(char *buf, size_t size);
/* vsedvr.filter.plugin.<name>, a new reference, or NULL with the error in buf. */
PyObject *pyFilterFunction(const char *name, char *err, size_t errSize);
/* Calls fn(*args) (args: a tuple, stolen). The Python side returns None on success or a str with
   a complete, formatted message (traceback included for unexpected errors). Returns 0 on
   success, else fills err. With result, the result is handed back instead of checked. */
int pyCallChecked(PyObject *fn, PyObject *args, PyObject **result, char *err, size_t errSize);

#endif
