/*
 * One-pass, in-place NUL un-escaper for tracker (see tracker/unescape.py for
 * the format and the pure-Python definition it must equal).
 *
 * Why C: the pure-Python version needs three bytes.replace passes, about
 * 5-8 ms per MiB of escaped binary data on the target machines, which is as
 * much CPU as the server spends producing the data.  This loop skips with
 * memchr to the next escape character and compacts in place, so it costs
 * well under a millisecond per MiB and allocates nothing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#define HAVE_X86_CRC 1
#endif

/* The transform over src[0:length] into dst, returning the output length.
 * dst may equal src (in place: the output is never longer), else it must
 * hold length bytes.  The data must not end inside an escape pair (the
 * callers hold or leave a trailing lone escape for the next chunk). */
static Py_ssize_t
unescape_core(const char *src, Py_ssize_t length, char *dst)
{
    Py_ssize_t read = 0, write = 0;

    if (src == dst) {
        /* In place, nothing moves until the first escaped NUL: only look. */
        for (;;) {
            const char *hit = memchr(src + read, '\\', (size_t)(length - read));
            if (!hit || hit + 1 >= src + length)
                return length;
            read = (Py_ssize_t)(hit - src);
            if (hit[1] == '0')
                break;
            read += 2;
        }
        write = read;
    }
    /* Runs of escape pairs (dense in binary data) are handled in one tight
       loop; plain stretches between them are found with memchr and moved
       with memmove. */
    while (read < length) {
        while (read + 1 < length && src[read] == '\\') {
            char next = src[read + 1];
            if (next == '0') {
                dst[write++] = '\0';
            } else {
                dst[write++] = '\\';
                dst[write++] = next;
            }
            read += 2;
        }
        if (read >= length)
            break;
        if (read + 1 == length) {          /* malformed: lone escape at end */
            dst[write++] = src[read++];
            break;
        }
        const char *hit = memchr(src + read + 1, '\\', (size_t)(length - read - 1));
        Py_ssize_t stop = hit ? (Py_ssize_t)(hit - src) : length;
        memmove(dst + write, src + read, (size_t)(stop - read));
        write += stop - read;
        read = stop;
    }
    return write;
}

/* unescape_inplace(buffer, length) -> new_length */
static PyObject *
unescape_inplace(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t length, written;
    if (!PyArg_ParseTuple(args, "w*n", &view, &length))
        return NULL;
    if (length < 0 || length > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "length out of range");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    written = unescape_core((const char *)view.buf, length, (char *)view.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(written);
}

/* unescape_into(source, length, destination) -> written
 *
 * Reads a read-only buffer (a memory map of the file the server writes) and
 * writes the result into a reused buffer: the copy out of the page cache and
 * the un-escape are one pass instead of two. */
static PyObject *
unescape_into(PyObject *self, PyObject *args)
{
    Py_buffer src, dst;
    Py_ssize_t length, written;
    if (!PyArg_ParseTuple(args, "y*nw*", &src, &length, &dst))
        return NULL;
    if (length < 0 || length > src.len || length > dst.len) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&dst);
        PyErr_SetString(PyExc_ValueError, "length out of range");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    written = unescape_core((const char *)src.buf, length, (char *)dst.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return PyLong_FromSsize_t(written);
}

/* CRC-32C (Castagnoli), the checksum of stored objects.
 *
 * Why here: zlib's CRC-32 costs ~0.45 s/GB on the target machines, a tenth
 * of tracker's whole budget; CRC-32C has an instruction on x86 (SSE4.2) and
 * runs at memory speed.  S3 and most storage tools support CRC-32C too.  A
 * table-driven version serves other processors. */
static uint32_t crc32c_table[256];

static void
crc32c_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_table[i] = c;
    }
}

static uint32_t
crc32c_soft(uint32_t crc, const unsigned char *p, size_t n)
{
    while (n--)
        crc = crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#ifdef HAVE_X86_CRC
__attribute__((target("sse4.2")))
static uint32_t
crc32c_hard(uint32_t crc, const unsigned char *p, size_t n)
{
    uint64_t c = crc;
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = _mm_crc32_u64(c, word);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return (uint32_t)c;
}
#endif

static int crc32c_has_hardware = 0;

/* crc32c(data, value=0) -> int, chained like zlib.crc32 */
static PyObject *
crc32c(PyObject *self, PyObject *args)
{
    Py_buffer view;
    unsigned long value = 0;
    if (!PyArg_ParseTuple(args, "y*|k", &view, &value))
        return NULL;
    uint32_t crc = ~(uint32_t)value;
    Py_BEGIN_ALLOW_THREADS
#ifdef HAVE_X86_CRC
    if (crc32c_has_hardware)
        crc = crc32c_hard(crc, view.buf, (size_t)view.len);
    else
#endif
        crc = crc32c_soft(crc, view.buf, (size_t)view.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(~crc);
}

/* The text-format tokenizer lives in _textformat.c (same module). */
extern PyMethodDef tracker_textformat_methods[];
void tracker_textformat_init(void);

static PyMethodDef methods[] = {
    {"unescape_inplace", unescape_inplace, METH_VARARGS,
     "unescape_inplace(buffer, length) -> new_length: NUL un-escape in place."},
    {"crc32c", crc32c, METH_VARARGS,
     "crc32c(data, value=0) -> int: CRC-32C, chained like zlib.crc32."},
    {"unescape_into", unescape_into, METH_VARARGS,
     "unescape_into(source, length, destination) -> written: NUL un-escape while copying."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tracker._unescape",
    "C accelerators: the NUL un-escaper (tracker.unescape), CRC-32C (tracker.checksum) and the text-format tokenizer (tracker.store.textformat).", -1, methods,
};

PyMODINIT_FUNC
PyInit__unescape(void)
{
    crc32c_init();
    tracker_textformat_init();
#ifdef HAVE_X86_CRC
    __builtin_cpu_init();
    crc32c_has_hardware = __builtin_cpu_supports("sse4.2");
#endif
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddFunctions(m, tracker_textformat_methods) < 0)
        Py_CLEAR(m);
    return m;
}
