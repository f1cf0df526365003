/* The Python bridge: see python_bridge.h. */
#include <stdio.h>

#include "platform.h"
#include "python_bridge.h"

PythonApi py;

int pyResolve(void) {
    if (py.ok)
        return 1;
#define RESOLVE(field, name) if (!(*(void **)&py.field = plPythonSymbol(name))) return 0
    RESOLVE(IsInitialized, "Py_IsInitialized");
    RESOLVE(GILState_Ensure, "PyGILState_Ensure");
    RESOLVE(GILState_Release, "PyGILState_Release");
    RESOLVE(GILState_Check, "PyGILState_Check");
    RESOLVE(Import_ImportModule, "PyImport_ImportModule");
    RESOLVE(Object_GetAttrString, "PyObject_GetAttrString");
    RESOLVE(Object_CallObject, "PyObject_CallObject");
    RESOLVE(Object_Str, "PyObject_Str");
    RESOLVE(Tuple_New, "PyTuple_New");
    RESOLVE(Tuple_SetItem, "PyTuple_SetItem");
    RESOLVE(Dict_New, "PyDict_New");
    RESOLVE(Dict_SetItemString, "PyDict_SetItemString");
    RESOLVE(Long_FromLongLong, "PyLong_FromLongLong");
    RESOLVE(Long_AsLongLong, "PyLong_AsLongLong");
    RESOLVE(Float_FromDouble, "PyFloat_FromDouble");
    RESOLVE(Unicode_FromStringAndSize, "PyUnicode_FromStringAndSize");
    RESOLVE(Unicode_AsUTF8AndSize, "PyUnicode_AsUTF8AndSize");
    RESOLVE(MemoryView_FromMemory, "PyMemoryView_FromMemory");
    RESOLVE(Err_Occurred, "PyErr_Occurred");
    RESOLVE(Err_Fetch, "PyErr_Fetch");
    RESOLVE(Err_Clear, "PyErr_Clear");
    RESOLVE(DecRef, "Py_DecRef");
    RESOLVE(None, "_Py_NoneStruct");
#undef RESOLVE
    /* renamed in 3.13; one of the two exists in every supported version */
    *(void **)&py.IsFinalizing = plPythonSymbol("Py_IsFinalizing");
    if (!py.IsFinalizing)
        *(void **)&py.IsFinalizing = plPythonSymbol("_Py_IsFinalizing");
    if (!py.IsFinalizing)
        return 0;
    py.ok = 1;
    return 1;
}

/* True when Python calls are safe: resolved, initialised, not shutting down. */
int pyUsable(void) {
    return pyResolve() && py.IsInitialized() && !py.IsFinalizing();
}

void pyDecRef(PyObject *o) {
    if (o)
        py.DecRef(o);
}

/* Copies str(o) into buf; used for results and for exceptions raised outside vsedvr's handlers. */
void pyStrInto(PyObject *o, char *buf, size_t size) {
    PyObject *s = o ? py.Object_Str(o) : NULL;
    Py_ssize_t len = 0;
    const char *utf8 = s ? py.Unicode_AsUTF8AndSize(s, &len) : NULL;
    snprintf(buf, size, "%s", utf8 ? utf8 : "unknown Python error");
    pyDecRef(s);
    if (py.Err_Occurred())
        py.Err_Clear();
}

/* Takes the pending Python exception (if any) into buf as "Type: message". */
void pyTakeError(char *buf, size_t size) {
    PyObject *type = NULL, *value = NULL, *tb = NULL;
    py.Err_Fetch(&type, &value, &tb);
    char typeName[128] = "";
    PyObject *name = type ? py.Object_GetAttrString(type, "__name__") : NULL;
    if (name)
        pyStrInto(name, typeName, sizeof typeName);
    if (py.Err_Occurred())
        py.Err_Clear();
    char message[4096];
    pyStrInto(value, message, sizeof message);
    snprintf(buf, size, "%s%s%s", typeName, *typeName ? ": " : "", message);
    pyDecRef(name);
    pyDecRef(type);
    pyDecRef(value);
    pyDecRef(tb);
}

/* vsedvr.filter.plugin.<name>, a new reference, or NULL with the error in buf. */
PyObject *pyFilterFunction(const char *name, char *err, size_t errSize) {
    PyObject *module = py.Import_ImportModule("vsedvr.filter.plugin");
    if (!module) {
        char why[4096];
        pyTakeError(why, sizeof why);
        snprintf(err, errSize, "cannot import the vsedvr Python package in this Python (%s)", why);
        return NULL;
    }
    PyObject *fn = py.Object_GetAttrString(module, name);
    pyDecRef(module);
    if (!fn)
        pyTakeError(err, errSize);
    return fn;
}

/* Calls fn(*args) (args: a tuple, stolen). The Python side returns None on success or a
   str with a complete, formatted message (traceback included for unexpected errors). Returns 0
   on success, else fills err. */
int pyCallChecked(PyObject *fn, PyObject *args, PyObject **result, char *err, size_t errSize) {
    PyObject *r = args ? py.Object_CallObject(fn, args) : NULL;
    pyDecRef(args);
    if (!r) {
        pyTakeError(err, errSize);
        return 0;
    }
    if (result) {
        *result = r;
        return 1;
    }
    if (r != py.None) {
        pyStrInto(r, err, errSize);
        pyDecRef(r);
        return 0;
    }
    pyDecRef(r);
    return 1;
}

