/*
 * The replicator's one hot loop in C: DynamoDB stream images -> columns of their wire texts.
 *
 * Optional. replicator/columns.py works without it (the same extraction in Python, column by column) and
 * uses it only when it was built; the tests run both and compare. It only extracts: which texts are
 * valid values, and what they become, stays in Python (sql.records.COLUMN_SPECS).
 *
 * Why C: the Python extraction reads attribute by attribute across 1,000 images (~10 MB of small dicts),
 * which misses the CPU cache on nearly every value. This reads each image once, in memory order.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

PyDoc_STRVAR(wire_texts_doc,
"wire_texts(images, column_of, tags) -> (columns, absent) | None\n\n"
"images: list of dicts (NewImages); column_of: dict attribute name -> column index; tags: list of the\n"
"wire tag each column expects ('S' or 'N'). Returns one list per column holding each image's text (None\n"
"where the attribute is absent) and the number absent per column; or None when any image is not a dict,\n"
"holds an attribute no column reads, or a wire that is not exactly {tag: str}. The caller then takes its\n"
"exact path for these images.");

static PyObject *
wire_texts(PyObject *module, PyObject *args)
{
    PyObject *images, *column_of, *tags;
    if (!PyArg_ParseTuple(args, "O!O!O!:wire_texts", &PyList_Type, &images, &PyDict_Type, &column_of,
                          &PyList_Type, &tags)) {
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(images);
    Py_ssize_t width = PyList_GET_SIZE(tags);
    Py_ssize_t *present = PyMem_Calloc(width > 0 ? width : 1, sizeof(Py_ssize_t));
    PyObject *columns = PyList_New(width);
    if (present == NULL || columns == NULL) {
        PyMem_Free(present);
        Py_XDECREF(columns);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t c = 0; c < width; c++) {
        PyObject *column = PyList_New(count);
        if (column == NULL) {
            goto error;
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            PyList_SET_ITEM(column, i, Py_NewRef(Py_None));
        }
        PyList_SET_ITEM(columns, c, column);
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *image = PyList_GET_ITEM(images, i);
        if (!PyDict_CheckExact(image)) {
            goto irregular;
        }
        Py_ssize_t position = 0;
        PyObject *name, *wire;
        while (PyDict_Next(image, &position, &name, &wire)) {
            PyObject *index = PyDict_GetItemWithError(column_of, name);
            if (index == NULL) {
                if (PyErr_Occurred()) {
                    goto error;
                }
                goto irregular;  /* an attribute no column reads */
            }
            Py_ssize_t c = PyLong_AsSsize_t(index);
            if (c < 0 || c >= width) {
                if (!PyErr_Occurred()) {
                    PyErr_SetString(PyExc_ValueError, "column index out of range");
                }
                goto error;
            }
            if (!PyDict_CheckExact(wire) || PyDict_GET_SIZE(wire) != 1) {
                goto irregular;
            }
            PyObject *text = PyDict_GetItemWithError(wire, PyList_GET_ITEM(tags, c));
            if (text == NULL) {
                if (PyErr_Occurred()) {
                    goto error;
                }
                goto irregular;  /* another tag */
            }
            if (!PyUnicode_CheckExact(text)) {
                goto irregular;
            }
            PyObject *column = PyList_GET_ITEM(columns, c);
            PyObject *previous = PyList_GET_ITEM(column, i);
            PyList_SET_ITEM(column, i, Py_NewRef(text));
            Py_DECREF(previous);
            present[c]++;
        }
    }
    PyObject *absent = PyList_New(width);
    if (absent == NULL) {
        goto error;
    }
    for (Py_ssize_t c = 0; c < width; c++) {
        PyObject *number = PyLong_FromSsize_t(count - present[c]);
        if (number == NULL) {
            Py_DECREF(absent);
            goto error;
        }
        PyList_SET_ITEM(absent, c, number);
    }
    PyMem_Free(present);
    return Py_BuildValue("(NN)", columns, absent);

irregular:
    PyMem_Free(present);
    Py_DECREF(columns);
    Py_RETURN_NONE;

error:
    PyMem_Free(present);
    Py_DECREF(columns);
    return NULL;
}

static PyMethodDef speedups_methods[] = {
    {"wire_texts", wire_texts, METH_VARARGS, wire_texts_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "replicator._speedups",
    "The replicator's hot loop in C (optional; replicator/columns.py has the same in Python).", -1,
    speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&speedups_module);
}
