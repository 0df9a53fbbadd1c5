/*
 * The record walk: the one step of reading a capture that cannot be vectorized.
 *
 * pcap records and pcapng blocks are a chain of length-prefixed items; finding
 * where each starts is inherently sequential. This helper follows the chain over
 * a buffer and writes the offsets into an int64 output buffer. Everything else
 * (field extraction, decoding) is done by numpy over the offsets.
 *
 * walk(buf, start, lenpos, add, big_endian, minlen, maxlen, align, stop_type, out
 *      [, section_type, trailer]) -> (count, next_offset, status)
 * item length = add + u32(buf[off+lenpos]); an item is complete when it fits.
 * status: 0 = stopped at the end of the buffer (next_offset: first byte not walked),
 *         1 = impossible length at next_offset, 2 = item of type stop_type at next_offset
 *         (pcapng section header: its byte order may change), 3 = output buffer full.
 * section_type >= 0 (pcapng): an item of that type is a section header; its byte-order
 *   magic (u32 at +8, 0x1A2B3C4D) sets the byte order of the walk from there on (the
 *   header needs 28 bytes at least); one with no valid magic stops the walk with
 *   status 2. Each offset written then carries the byte order of its item in bit 62
 *   (1: big-endian). So a whole chunk is one call, whatever its sections.
 * trailer (pcapng): the u32 at (off + len - 4) must equal len, else status 1 at off.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define BYTE_ORDER_MAGIC 0x1A2B3C4Du
#define SECTION_MINLEN 28

static inline uint32_t rd32(const unsigned char *p, int big) {
    if (big)
        return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

static PyObject *walk(PyObject *self, PyObject *args) {
    Py_buffer in, out;
    Py_ssize_t start, lenpos, add, minlen, maxlen, align;
    int big, trailer = 0;
    long long stop_type, section_type = -1;
    if (!PyArg_ParseTuple(args, "y*nnnpnnnLw*|Lp", &in, &start, &lenpos, &add, &big,
                          &minlen, &maxlen, &align, &stop_type, &out, &section_type, &trailer))
        return NULL;
    const unsigned char *b = (const unsigned char *)in.buf;
    Py_ssize_t n = in.len, off = start, count = 0;
    Py_ssize_t cap = out.len / (Py_ssize_t)sizeof(int64_t);
    int64_t *o = (int64_t *)out.buf;
    int status = 0;
    Py_BEGIN_ALLOW_THREADS
    while (off + lenpos + 4 <= n) {
        uint32_t type = rd32(b + off, big);
        int section = 0;
        if (section_type >= 0 && type == (uint32_t)section_type) {
            if (off + 12 > n)
                break; /* its byte-order magic is not in this buffer yet */
            if (rd32(b + off + 8, big) != BYTE_ORDER_MAGIC) {
                if (rd32(b + off + 8, !big) != BYTE_ORDER_MAGIC) {
                    status = 2;
                    break;
                }
                big = !big;
            }
            section = 1;
        } else if (stop_type >= 0 && type == (uint32_t)stop_type) {
            status = 2;
            break;
        }
        Py_ssize_t len = (Py_ssize_t)rd32(b + off + lenpos, big) + add;
        if (len < minlen || len > maxlen || (align > 1 && len % align) ||
            (section && len < SECTION_MINLEN)) {
            status = 1;
            break;
        }
        if (off + len > n)
            break;
        if (trailer && (Py_ssize_t)rd32(b + off + len - 4, big) != len) {
            status = 1;
            break;
        }
        if (count == cap) {
            status = 3;
            break;
        }
        o[count++] = section_type >= 0 ? (int64_t)off | ((int64_t)big << 62) : (int64_t)off;
        off += len;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    return Py_BuildValue("nni", count, off, status);
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, "Follow a chain of length-prefixed records; see the source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_walk", NULL, -1, methods};

PyMODINIT_FUNC PyInit__walk(void) { return PyModule_Create(&module); }
