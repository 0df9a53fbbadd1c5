/*
 * The common packet, decoded in one pass: Ethernet (untagged), IPv4 (not a fragment, a
 * non-zero total length), TCP or UDP (not a tunnel port), whole headers captured.
 *
 * Most packets of a node capture are exactly that; the numpy decoders (link.py, ip.py,
 * transport.py) read each field of a batch in its own pass over memory, this reads a
 * packet's fields while its bytes are in cache. It is a shortcut, not a second decoder:
 * a packet it does not fully accept is left untouched for the numpy decoders, which
 * give every skip reason; for a packet it accepts it must write exactly what they
 * would (tests/capture/test_fastpath.py compares the two on every kind of packet).
 *
 * decode(buf, off, caplen, linktype, bad, done, values, valid) -> number decoded
 *   buf: the chunk's bytes (uint8, with capture.buffer.PAD zero bytes after the data);
 *   off, caplen: int64 per record; linktype: int32; bad: bool; done: bool, written;
 *   values, valid: sequences of COLUMNS' arrays (fastpath.COLUMNS: names, dtypes, order).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define HASH_BYTES 32
#define READ_PAST HASH_BYTES /* the payload hash's last word, from a start at the end */
#define MUL 0x9E3779B97F4A7C15ull
#define MIX 0xBF58476D1CE4E5B9ull

/* COLUMNS in fastpath.py, in this order, with these item sizes. */
enum { IP_VERSION, IP_ID, TTL, PROTO, IP_LEN, SRC_HI, SRC_LO, DST_HI, DST_LO, SPORT, DPORT,
       TCP_FLAGS, SEQ, ACK, WINDOW, TSVAL, TSECR, PAYLOAD_LEN, PAYLOAD_HASH, NCOLS };
static const int SIZES[NCOLS] = {1, 4, 2, 2, 8, 8, 8, 8, 8, 4, 4, 2, 8, 8, 4, 8, 8, 8, 8};

typedef struct {
    void *v[NCOLS];
    unsigned char *ok[NCOLS];
} Out;

static inline uint32_t be16(const unsigned char *p) { return ((uint32_t)p[0] << 8) | p[1]; }
static inline uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t le64(const unsigned char *p) {
    uint64_t x = 0;
    for (int k = 7; k >= 0; k--)
        x = (x << 8) | p[k];
    return x;
}

static inline void put(Out *o, int col, Py_ssize_t i, int64_t x) {
    switch (SIZES[col]) {
    case 1: ((int8_t *)o->v[col])[i] = (int8_t)x; break;
    case 2: ((int16_t *)o->v[col])[i] = (int16_t)x; break;
    case 4: ((int32_t *)o->v[col])[i] = (int32_t)x; break;
    default: ((int64_t *)o->v[col])[i] = x; break;
    }
    o->ok[col][i] = 1;
}

/* transport.payload_hash: avail (1..32) bytes at p, mixed with the count. */
static uint64_t payload_hash(const unsigned char *p, int64_t avail) {
    uint64_t h = (uint64_t)avail * MUL;
    for (int word = 0; word < HASH_BYTES / 8; word++) {
        int64_t nbytes = avail - word * 8;
        nbytes = nbytes < 0 ? 0 : (nbytes > 8 ? 8 : nbytes);
        uint64_t mask = nbytes >= 8 ? ~0ull : ((1ull << (nbytes * 8)) - 1);
        h = (h ^ (le64(p + word * 8) & mask)) * MIX;
        h ^= h >> 31;
    }
    return h;
}

/* transport.payload: the length from the headers, the hash of the first captured bytes. */
static void payload(Out *o, Py_ssize_t i, const unsigned char *b, int64_t start, int64_t length,
                    int64_t end) {
    if (length < 0)
        length = 0;
    put(o, PAYLOAD_LEN, i, length);
    int64_t stop = end < start + length ? end : start + length;
    int64_t avail = stop - start < HASH_BYTES ? stop - start : HASH_BYTES;
    if (avail > 0)
        ((uint64_t *)o->v[PAYLOAD_HASH])[i] = payload_hash(b + start, avail), o->ok[PAYLOAD_HASH][i] = 1;
}

/* transport.timestamps: the first timestamp option (kind 8, length 10) among the options. */
static void timestamps(Out *o, Py_ssize_t i, const unsigned char *b, int64_t cur, int64_t end) {
    for (int step = 0; step < 40 && cur < end; step++) {
        int kind = b[cur];
        int64_t length = kind == 1 ? 1 : b[cur + 1];
        if (kind == 8 && length == 10 && cur + 10 <= end) {
            put(o, TSVAL, i, be32(b + cur + 2));
            put(o, TSECR, i, be32(b + cur + 6));
            return;
        }
        if (kind == 0 || length < 1 || (kind != 1 && length < 2) || cur + length >= end)
            return;
        cur += length;
    }
}

/* One record: 1 when decoded (and written), 0 when left to the numpy decoders. */
static int one(Out *o, Py_ssize_t i, const unsigned char *b, int64_t p, int64_t end) {
    if (p + 14 > end || be16(b + p + 12) != 0x0800)
        return 0;
    p += 14;
    if (p + 20 > end || (b[p] >> 4) != 4)
        return 0;
    int64_t ihl = (int64_t)(b[p] & 0x0F) * 4, total = be16(b + p + 2);
    if (ihl < 20 || total == 0 || total < ihl || p + ihl > end || (be16(b + p + 6) & 0x3FFF))
        return 0;
    int proto = b[p + 9];
    int64_t t = p + ihl, ip_end = p + total;
    if (proto == 6) {
        if (t + 20 > end)
            return 0;
        int64_t doff = (int64_t)(b[t + 12] >> 4) * 4;
        if (doff < 20 || t + doff > ip_end)
            return 0;
        put(o, SEQ, i, be32(b + t + 4));
        put(o, ACK, i, be32(b + t + 8));
        put(o, TCP_FLAGS, i, ((b[t + 12] & 1) << 8) | b[t + 13]);
        put(o, WINDOW, i, be16(b + t + 14));
        payload(o, i, b, t + doff, ip_end - t - doff, end);
        timestamps(o, i, b, t + 20, t + doff < end ? t + doff : end);
    } else if (proto == 17) {
        if (t + 8 > end)
            return 0;
        int64_t ulen = be16(b + t + 4);
        uint32_t dport = be16(b + t + 2);
        if (ulen == 0)
            ulen = ip_end - t;
        if (ulen < 8 || t + ulen > ip_end || dport == 4789 || dport == 8472 || dport == 6081)
            return 0; /* malformed, or a tunnel: tunnel.py decides */
        payload(o, i, b, t + 8, ulen - 8, end);
    } else {
        return 0;
    }
    put(o, SPORT, i, be16(b + t));
    put(o, DPORT, i, be16(b + t + 2));
    put(o, IP_VERSION, i, 4);
    put(o, IP_ID, i, be16(b + p + 4));
    put(o, TTL, i, b[p + 8]);
    put(o, PROTO, i, proto);
    put(o, IP_LEN, i, total);
    put(o, SRC_HI, i, 0);
    put(o, DST_HI, i, 0);
    put(o, SRC_LO, i, be32(b + p + 12));
    put(o, DST_LO, i, be32(b + p + 16));
    return 1;
}

static int columns(PyObject *seq, Py_buffer *views, Py_ssize_t n, int valid) {
    PyObject *fast = PySequence_Fast(seq, "values and valid must be sequences of arrays");
    if (fast == NULL)
        return -1;
    if (PySequence_Fast_GET_SIZE(fast) != NCOLS) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "wrong number of columns");
        return -1;
    }
    for (int c = 0; c < NCOLS; c++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fast, c), &views[c], PyBUF_WRITABLE) < 0) {
            for (int k = 0; k < c; k++)
                PyBuffer_Release(&views[k]);
            Py_DECREF(fast);
            return -1;
        }
        if (views[c].len != n * (valid ? 1 : SIZES[c])) {
            for (int k = 0; k <= c; k++)
                PyBuffer_Release(&views[k]);
            Py_DECREF(fast);
            PyErr_Format(PyExc_ValueError, "column %d has the wrong size", c);
            return -1;
        }
    }
    Py_DECREF(fast);
    return 0;
}

static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer buf, off, caplen, linktype, bad, done, values[NCOLS], valid[NCOLS];
    PyObject *vseq, *okseq;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*w*OO", &buf, &off, &caplen, &linktype, &bad, &done,
                          &vseq, &okseq))
        return NULL;
    Py_ssize_t n = off.len / 8, decoded = 0;
    int ok = caplen.len == n * 8 && linktype.len == n * 4 && bad.len == n && done.len == n;
    if (!ok)
        PyErr_SetString(PyExc_ValueError, "per-record arrays differ in length");
    if (ok && columns(vseq, values, n, 0) < 0)
        ok = 0;
    else if (ok && columns(okseq, valid, n, 1) < 0) {
        for (int c = 0; c < NCOLS; c++)
            PyBuffer_Release(&values[c]);
        ok = 0;
    }
    if (ok) {
        Out o;
        for (int c = 0; c < NCOLS; c++)
            o.v[c] = values[c].buf, o.ok[c] = (unsigned char *)valid[c].buf;
        const unsigned char *b = (const unsigned char *)buf.buf;
        const int64_t *of = (const int64_t *)off.buf, *cl = (const int64_t *)caplen.buf;
        const int32_t *lt = (const int32_t *)linktype.buf;
        const unsigned char *bd = (const unsigned char *)bad.buf;
        unsigned char *dn = (unsigned char *)done.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t end = of[i] + cl[i];
            /* every read stays within buf: at most READ_PAST bytes past a record's end */
            dn[i] = !bd[i] && lt[i] == 1 && of[i] >= 0 && end + READ_PAST <= buf.len && one(&o, i, b, of[i], end);
            decoded += dn[i];
        }
        Py_END_ALLOW_THREADS
        for (int c = 0; c < NCOLS; c++) {
            PyBuffer_Release(&values[c]);
            PyBuffer_Release(&valid[c]);
        }
    }
    PyBuffer_Release(&buf);
    PyBuffer_Release(&off);
    PyBuffer_Release(&caplen);
    PyBuffer_Release(&linktype);
    PyBuffer_Release(&bad);
    PyBuffer_Release(&done);
    return ok ? PyLong_FromSsize_t(decoded) : NULL;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS, "Decode the common Ethernet/IPv4/TCP|UDP packets; see the source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ipv4", NULL, -1, methods};

PyMODINIT_FUNC PyInit__ipv4(void) { return PyModule_Create(&module); }
