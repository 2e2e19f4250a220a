/*
 * The text-format tokenizer of tracker, part of the tracker._unescape
 * extension module (see tracker/store/textformat.py for the format and the
 * pure-Python definition it must equal).
 *
 * Why C: readers (tracker cat, the warehouse's Arrow decoder) must tokenize
 * well under a second per GB, about a nanosecond per byte for everything.
 * Fields are scanned 16 bytes at a time with SSE2 (compare with TAB, LF and
 * backslash, take the first hit from the bitmask), copying the 16 bytes to
 * the column's data unconditionally and then keeping only the part before
 * the hit; the output is Arrow's large_binary layout, so a decoder wraps it
 * without another pass.  The work runs without the GIL, so decompression in
 * another thread overlaps it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#define HAVE_SSE2 1
#endif

enum { TF_OK = 0, TF_FIELDS = 1, TF_PARTIAL = 2, TF_LONE_BACKSLASH = 3, TF_NOMEM = 4 };

static unsigned char tf_escape_map[256];

void
tracker_textformat_init(void)
{
    for (int i = 0; i < 256; i++)
        tf_escape_map[i] = (unsigned char)i;
    tf_escape_map['0'] = 0;
    tf_escape_map['b'] = 8;
    tf_escape_map['n'] = 10;
    tf_escape_map['r'] = 13;
    tf_escape_map['t'] = 9;
    tf_escape_map['Z'] = 26;
}

/* First unescaped LF at or after frm, or -1.  buf[start] begins a row, so a
 * run of backslashes ending at an LF begins at an escape start: the LF is
 * data exactly when the run is odd. */
static Py_ssize_t
tf_find_row_end(const unsigned char *buf, Py_ssize_t start, Py_ssize_t frm, Py_ssize_t len)
{
    while (frm < len) {
        const unsigned char *lf = memchr(buf + frm, '\n', (size_t)(len - frm));
        if (!lf)
            return -1;
        Py_ssize_t at = (Py_ssize_t)(lf - buf), j = at;
        while (j > start && buf[j - 1] == '\\')
            j--;
        if (((at - j) & 1) == 0)
            return at;
        frm = at + 1;
    }
    return -1;
}

static int
tf_odd_trailing_backslashes(const unsigned char *buf, Py_ssize_t start, Py_ssize_t end)
{
    Py_ssize_t j = end;
    while (j > start && buf[j - 1] == '\\')
        j--;
    return (int)((end - j) & 1);
}

/* Data and offsets are built in bytes objects that become the result
 * (shrunk at the end), so nothing is copied after parsing; growing them
 * takes the GIL back for a moment (a few times per block). */
typedef struct {
    PyObject *dobj, *oobj;     /* bytes: the data and the offsets */
    unsigned char *data;       /* PyBytes_AS_STRING(dobj) */
    Py_ssize_t dlen, dcap;
    int64_t *offsets;          /* PyBytes_AS_STRING(oobj); rows + 1 entries used */
    unsigned char *valid;      /* malloc'd; NULL until the first NULL value */
    Py_ssize_t nulls;
} tf_column;

typedef struct {
    tf_column *cols;
    unsigned char *row_null;   /* per column: NULL in the row being parsed */
    Py_ssize_t ncols;
    Py_ssize_t ocap;           /* entries allocated in every offsets array */
    Py_ssize_t bound;          /* no column's data can outgrow this (the input left, plus slack) */
    PyThreadState *ts;         /* saved while parsing without the GIL */
} tf_block;

static int
tf_resize(tf_block *b, PyObject **obj, Py_ssize_t size)
{
    int rc;
    if (b->ts)
        PyEval_RestoreThread(b->ts);
    rc = _PyBytes_Resize(obj, size);
    if (rc < 0)
        PyErr_Clear();   /* reported as TF_NOMEM */
    if (b->ts)
        b->ts = PyEval_SaveThread();
    return rc;
}

static int
tf_grow_data(tf_block *b, tf_column *col, Py_ssize_t need)
{
    if (col->dlen + need <= col->dcap)
        return 0;
    /* A column that outgrows its share of the block goes straight to the
       bound: one copy instead of a chain of doublings, and only the pages
       written become resident; the result is shrunk to size at the end. */
    Py_ssize_t cap = col->dcap ? col->dcap * 2 : 256;
    if (cap < b->bound)
        cap = b->bound;
    if (cap < col->dlen + need)
        cap = col->dlen + need;
    if (tf_resize(b, &col->dobj, cap) < 0)
        return -1;
    col->data = (unsigned char *)PyBytes_AS_STRING(col->dobj);
    col->dcap = cap;
    return 0;
}

/* Room for offsets[rows + 1] and validity bit `rows` in every column. */
static int
tf_grow_rows(tf_block *b, Py_ssize_t rows)
{
    if (rows + 2 <= b->ocap)
        return 0;
    Py_ssize_t cap = b->ocap ? b->ocap * 2 : 1024;
    while (cap < rows + 2)
        cap *= 2;
    for (Py_ssize_t c = 0; c < b->ncols; c++) {
        tf_column *col = &b->cols[c];
        if (tf_resize(b, &col->oobj, cap * (Py_ssize_t)sizeof(int64_t)) < 0)
            return -1;
        col->offsets = (int64_t *)PyBytes_AS_STRING(col->oobj);
        if (col->valid) {
            unsigned char *v = realloc(col->valid, (size_t)(cap + 7) / 8);
            if (!v)
                return -1;
            col->valid = v;
        }
    }
    b->ocap = cap;
    return 0;
}

static int
tf_mark_null(tf_block *b, tf_column *col, Py_ssize_t row)
{
    if (!col->valid) {
        col->valid = malloc((size_t)(b->ocap + 7) / 8);
        if (!col->valid)
            return -1;
        memset(col->valid, 0xFF, (size_t)(b->ocap + 7) / 8);
    }
    col->valid[row >> 3] &= (unsigned char)~(1u << (row & 7));
    col->nulls++;
    return 0;
}

/* Count the fields of a row from p (just after a field's TAB) to its LF:
 * returns the number of further fields, or -1 when the data ends first. */
static Py_ssize_t
tf_count_rest(const unsigned char *p, const unsigned char *end)
{
    Py_ssize_t fields = 1;
    while (p < end) {
        if (*p == '\\') {
            if (p + 1 >= end)
                return -1;
            p += 2;
        } else if (*p == '\t') {
            fields++;
            p++;
        } else if (*p == '\n') {
            return fields;
        } else {
            p++;
        }
    }
    return -1;
}

/* Scan one field's value from *pp into col; returns the separator byte
 * (TAB or LF) or -1 when the data ends first, -2 when out of memory.
 * The output position lives in locals (the compiler cannot keep col's
 * fields in registers across the byte stores) and is written back on exit
 * and around growth. */
static int
tf_scan_field(tf_block *b, const unsigned char **pp, const unsigned char *end, tf_column *col)
{
    const unsigned char *p = *pp;
    unsigned char *out = col->data + col->dlen, *out_end = col->data + col->dcap;
    int sep;
#define TF_ROOM(n)                                                   \
    if (out_end - out < (n)) {                                      \
        col->dlen = out - col->data;                                \
        if (tf_grow_data(b, col, (n)) < 0) {                        \
            sep = -2;                                               \
            goto done;                                              \
        }                                                           \
        out = col->data + col->dlen;                                \
        out_end = col->data + col->dcap;                            \
    }
#ifdef HAVE_SSE2
    const __m128i tab = _mm_set1_epi8('\t'), lf = _mm_set1_epi8('\n'), bs = _mm_set1_epi8('\\');
#endif
    for (;;) {
#ifdef HAVE_SSE2
        while (end - p >= 16) {
            TF_ROOM(16)
            __m128i v = _mm_loadu_si128((const __m128i *)p);
            _mm_storeu_si128((__m128i *)out, v);
            unsigned mask = (unsigned)_mm_movemask_epi8(_mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, tab), _mm_cmpeq_epi8(v, lf)), _mm_cmpeq_epi8(v, bs)));
            if (!mask) {
                p += 16;
                out += 16;
                continue;
            }
            unsigned k = (unsigned)__builtin_ctz(mask);
            p += k;
            out += k;
            goto special;
        }
#endif
        for (;;) {
            if (p >= end) {
                sep = -1;
                goto done;
            }
            unsigned char ch = *p;
            if (ch == '\t' || ch == '\n' || ch == '\\')
                break;
            TF_ROOM(1)
            *out++ = ch;
            p++;
        }
#ifdef HAVE_SSE2
    special:
#endif
        if (*p != '\\') {
            sep = *p++;
            goto done;
        }
        if (p + 1 >= end) {
            sep = -1;
            goto done;
        }
        TF_ROOM(1)
        *out++ = tf_escape_map[p[1]];
        p += 2;
    }
#undef TF_ROOM
done:
    col->dlen = out - col->data;
    *pp = p;
    return sep;
}

typedef struct {
    Py_ssize_t end, rows;
    int code;
    Py_ssize_t err_row, err_fields, err_start;
} tf_result;

/* Parse rows of buf[pos:len] into b until a row brings the block to
 * max_bytes; the rules of textformat.py's py_parse_block. */
static void
tf_parse(const unsigned char *buf, Py_ssize_t pos, Py_ssize_t len, tf_block *b,
         Py_ssize_t max_bytes, int final, tf_result *r)
{
    const unsigned char *p = buf + pos, *end = buf + len;
    Py_ssize_t rows = 0, ncols = b->ncols;
    r->code = TF_OK;
    r->err_row = r->err_fields = r->err_start = 0;
    if (tf_grow_rows(b, 0) < 0) {
        r->code = TF_NOMEM;
        goto done;
    }
    for (Py_ssize_t c = 0; c < ncols; c++)
        b->cols[c].offsets[0] = 0;
    while (p < end) {
        const unsigned char *row_start = p;
        Py_ssize_t c;
        int sep = 0;
        if (tf_grow_rows(b, rows) < 0) {
            r->code = TF_NOMEM;
            break;
        }
        for (c = 0; c < ncols; c++) {
            tf_column *col = &b->cols[c];
            b->row_null[c] = 0;
            if (end - p >= 3 && p[0] == '\\' && p[1] == 'N' && (p[2] == '\t' || p[2] == '\n')) {
                if (tf_mark_null(b, col, rows) < 0) {
                    sep = -2;
                    break;
                }
                b->row_null[c] = 1;
                sep = p[2];
                p += 3;
            } else {
                sep = tf_scan_field(b, &p, end, col);
                if (sep < 0)
                    break;
                if (col->valid)
                    col->valid[rows >> 3] |= (unsigned char)(1u << (rows & 7));
            }
            col->offsets[rows + 1] = col->dlen;
            if (sep == '\t' && c == ncols - 1) {
                Py_ssize_t rest = tf_count_rest(p, end);
                if (rest < 0) {
                    sep = -1;
                    break;
                }
                r->code = TF_FIELDS;
                r->err_fields = ncols + rest;
                break;
            }
            if (sep == '\n' && c < ncols - 1) {
                r->code = TF_FIELDS;
                r->err_fields = c + 1;
                break;
            }
        }
        if (sep < 0 || r->code != TF_OK) {
            /* Undo the row: columns 0..c appended after offsets[rows]. */
            for (Py_ssize_t k = 0; k <= c && k < ncols; k++) {
                b->cols[k].dlen = (Py_ssize_t)b->cols[k].offsets[rows];
                if (b->row_null[k])
                    b->cols[k].nulls--;
            }
            if (sep == -2)
                r->code = TF_NOMEM;
            else if (sep == -1 && final)
                r->code = tf_odd_trailing_backslashes(buf, row_start - buf, len)
                    ? TF_LONE_BACKSLASH : TF_PARTIAL;
            r->err_row = rows;
            r->err_start = row_start - buf;
            p = row_start;
            break;
        }
        rows++;
        if (p - (buf + pos) >= max_bytes)
            break;
    }
done:
    r->end = p - buf;
    r->rows = rows;
}

static void
tf_free(tf_block *b)
{
    if (b->cols) {
        for (Py_ssize_t c = 0; c < b->ncols; c++) {
            Py_XDECREF(b->cols[c].dobj);
            Py_XDECREF(b->cols[c].oobj);
            free(b->cols[c].valid);
        }
        free(b->cols);
    }
    free(b->row_null);
}

/* (offsets, data, validity or None, null_count) of one column; takes over
 * its bytes objects. */
static PyObject *
tf_column_tuple(tf_block *b, tf_column *col, Py_ssize_t rows)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (Py_ssize_t i = 0; i <= rows; i++)
        col->offsets[i] = (int64_t)__builtin_bswap64((uint64_t)col->offsets[i]);
#endif
    if (tf_resize(b, &col->oobj, (rows + 1) * (Py_ssize_t)sizeof(int64_t)) < 0
        || tf_resize(b, &col->dobj, col->dlen) < 0)
        return PyErr_NoMemory();
    PyObject *validity;
    if (col->nulls && col->valid) {
        /* Filled after creation: a 1-byte bytes made from a string is
           CPython's shared singleton and must not be written to. */
        Py_ssize_t nbytes = (rows + 7) / 8;
        validity = PyBytes_FromStringAndSize(NULL, nbytes);
        if (!validity)
            return NULL;
        unsigned char *v = (unsigned char *)PyBytes_AS_STRING(validity);
        memcpy(v, col->valid, (size_t)nbytes);
        if (rows & 7)   /* Arrow wants the padding bits clear */
            v[nbytes - 1] &= (unsigned char)((1u << (rows & 7)) - 1);
    } else {
        validity = Py_NewRef(Py_None);
    }
    PyObject *t = Py_BuildValue("(OONn)", col->oobj, col->dobj, validity, col->nulls);
    return t;
}

/* parse_block(buffer, pos, ncols, max_bytes, final) -> (end, rows, columns, error) */
static PyObject *
parse_block(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos, ncols, max_bytes;
    int final;
    if (!PyArg_ParseTuple(args, "y*nnnp", &view, &pos, &ncols, &max_bytes, &final))
        return NULL;
    if (pos < 0 || pos > view.len || ncols < 1) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "pos or ncols out of range");
        return NULL;
    }
    tf_block b = {0};
    tf_result r = {0};
    b.ncols = ncols;
    b.cols = calloc((size_t)ncols, sizeof(tf_column));
    b.row_null = calloc((size_t)ncols, 1);
    if (!b.cols || !b.row_null) {
        tf_free(&b);
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    /* A first guess at each column's size: its share of the block. */
    Py_ssize_t guess = (view.len - pos < max_bytes ? view.len - pos : max_bytes) / ncols + 64;
    for (Py_ssize_t c = 0; c < ncols; c++) {
        tf_column *col = &b.cols[c];
        col->dobj = PyBytes_FromStringAndSize(NULL, guess);
        col->oobj = PyBytes_FromStringAndSize(NULL, 64 * (Py_ssize_t)sizeof(int64_t));
        if (!col->dobj || !col->oobj) {
            tf_free(&b);
            PyBuffer_Release(&view);
            return NULL;
        }
        col->data = (unsigned char *)PyBytes_AS_STRING(col->dobj);
        col->dcap = guess;
        col->offsets = (int64_t *)PyBytes_AS_STRING(col->oobj);
    }
    b.ocap = 64;
    b.bound = view.len - pos + 16;
    b.ts = PyEval_SaveThread();
    tf_parse((const unsigned char *)view.buf, pos, view.len, &b, max_bytes, final, &r);
    PyEval_RestoreThread(b.ts);
    b.ts = NULL;
    PyBuffer_Release(&view);
    PyObject *result = NULL, *columns = NULL;
    if (r.code == TF_NOMEM) {
        PyErr_NoMemory();
        goto out;
    }
    columns = PyList_New(0);
    if (!columns)
        goto out;
    if (r.code == TF_OK) {
        for (Py_ssize_t c = 0; c < ncols; c++) {
            PyObject *t = tf_column_tuple(&b, &b.cols[c], r.rows);
            if (!t || PyList_Append(columns, t) < 0) {
                Py_XDECREF(t);
                goto out;
            }
            Py_DECREF(t);
        }
        result = Py_BuildValue("(nnOO)", r.end, r.rows, columns, Py_None);
    } else {
        result = Py_BuildValue("(nnO(innn))", r.end, r.rows, columns,
                               r.code, r.err_row, r.err_fields, r.err_start);
    }
out:
    Py_XDECREF(columns);
    tf_free(&b);
    return result;
}

/* column_values(offsets, data, validity) -> list of bytes or None
 *
 * ColumnBlock.values() for pure-Python readers (tracker cat --format
 * jsonl): building the list here costs a tenth of slicing in a Python loop. */
static PyObject *
column_values(PyObject *self, PyObject *args)
{
    Py_buffer off, data, valid = {0};
    PyObject *valid_obj, *list = NULL;
    if (!PyArg_ParseTuple(args, "y*y*O", &off, &data, &valid_obj))
        return NULL;
    if (valid_obj != Py_None && PyObject_GetBuffer(valid_obj, &valid, PyBUF_SIMPLE) < 0)
        goto out;
    Py_ssize_t n = off.len / (Py_ssize_t)sizeof(int64_t) - 1;
    if (n < 0 || (valid.buf && valid.len * 8 < n)) {
        PyErr_SetString(PyExc_ValueError, "offsets or validity too short");
        goto out;
    }
    const unsigned char *ob = off.buf, *vb = valid.buf;
    list = PyList_New(n);
    if (!list)
        goto out;
    int64_t prev;
    memcpy(&prev, ob, sizeof prev);
    for (Py_ssize_t i = 0; i < n; i++) {
        int64_t next;
        memcpy(&next, ob + (i + 1) * (Py_ssize_t)sizeof(int64_t), sizeof next);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        next = (int64_t)__builtin_bswap64((uint64_t)next);
#endif
        PyObject *item;
        if (vb && !(vb[i >> 3] >> (i & 7) & 1)) {
            item = Py_NewRef(Py_None);
        } else if (prev < 0 || next < prev || next > data.len) {
            PyErr_SetString(PyExc_ValueError, "offsets out of range");
            Py_CLEAR(list);
            goto out;
        } else {
            item = PyBytes_FromStringAndSize((const char *)data.buf + prev, (Py_ssize_t)(next - prev));
            if (!item) {
                Py_CLEAR(list);
                goto out;
            }
        }
        PyList_SET_ITEM(list, i, item);
        prev = next;
    }
out:
    PyBuffer_Release(&off);
    PyBuffer_Release(&data);
    if (valid.buf)
        PyBuffer_Release(&valid);
    return list;
}

/* trailing_backslashes(buffer) -> how many backslashes the buffer ends with */
static PyObject *
trailing_backslashes(PyObject *self, PyObject *args)
{
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*", &view))
        return NULL;
    const unsigned char *b = view.buf;
    Py_ssize_t j = view.len;
    while (j > 0 && b[j - 1] == '\\')
        j--;
    Py_ssize_t run = view.len - j;
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(run);
}

/* find_row_end(buffer, start, frm) -> index of the first unescaped LF at or after frm, or -1 */
static PyObject *
find_row_end(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, frm, at;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &start, &frm))
        return NULL;
    if (start < 0 || frm < start) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "start or frm out of range");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    at = tf_find_row_end((const unsigned char *)view.buf, start, frm, view.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(at);
}

PyMethodDef tracker_textformat_methods[] = {
    {"parse_block", parse_block, METH_VARARGS,
     "parse_block(buffer, pos, ncols, max_bytes, final) -> (end, rows, columns, error): text-format rows to column buffers."},
    {"column_values", column_values, METH_VARARGS,
     "column_values(offsets, data, validity) -> list of bytes or None: one column block's values."},
    {"trailing_backslashes", trailing_backslashes, METH_VARARGS,
     "trailing_backslashes(buffer) -> how many backslashes the buffer ends with."},
    {"find_row_end", find_row_end, METH_VARARGS,
     "find_row_end(buffer, start, frm) -> index of the first unescaped LF at or after frm, or -1."},
    {NULL, NULL, 0, NULL},
};
