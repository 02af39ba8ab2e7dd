/* vsrtel._speedups: the read-only view of an event's payload, made in C.
 *
 * Optional: built when a C compiler is present (see setup.py), used through vsrtel/_views.py,
 * which falls back to types.MappingProxyType when this module is absent or VSRTEL_PURE_PYTHON
 * is set. Both make the same object: a `mappingproxy` of the caller's mapping.
 *
 * Why: calling types.MappingProxyType goes through type.__call__, which packs the argument into
 * a tuple and parses it as if it could be a keyword. PyDictProxy_New is the constructor behind
 * it, with the same mapping check and the same TypeError, minus that parsing; a METH_O function
 * is called through vectorcall, with no tuple built. That halves the cost of a view. (A
 * two-view function returning a pair measured slower than two calls of this one: the pair is
 * built and unpacked again.)
 *
 * Built against the stable ABI of CPython 3.10 (one binary for every later CPython) except on
 * free-threaded builds, which have no stable ABI; this module keeps no state, so it runs
 * without the GIL there.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

PyDoc_STRVAR(view_doc,
"view(mapping, /)\n--\n\n"
"A read-only view of mapping: the same as types.MappingProxyType(mapping).");

static PyObject *
view(PyObject *module, PyObject *mapping)
{
    return PyDictProxy_New(mapping);
}

static PyMethodDef methods[] = {
    {"view", (PyCFunction)view, METH_O, view_doc},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "vsrtel._speedups",
    .m_doc = "Read-only views of an event's payload, made in C (optional; see vsrtel._views).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&module);
}
