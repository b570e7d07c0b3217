/* Hot loops of the one-time-pad mode, in C: the Wegman-Carter polynomial hash over
 * GF(2^32-5) and GF(2^64-59), and XOR of a payload with pad bytes.
 *
 * The pure-Python reference in qphone/core/otp.py defines the results; tests check that both
 * agree on random inputs. Built as an optional extension: without it qphone falls back to the
 * Python code (slower, same output).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static const uint64_t P64 = 18446744073709551557ULL; /* 2^64 - 59 */
static const uint64_t P32 = 4294967291ULL;           /* 2^32 - 5 */

static uint64_t poly_hash(const unsigned char *p, Py_ssize_t len, uint64_t key, unsigned int bits) {
    const Py_ssize_t bs = bits / 8 - 1;
    const uint64_t prime = bits == 64 ? P64 : P32;
    uint64_t h = 0;
    Py_ssize_t i = 0;
    do {
        Py_ssize_t n = len - i < bs ? len - i : bs;
        uint64_t c = 0;
        for (Py_ssize_t j = n - 1; j >= 0; j--) c = (c << 8) | p[i + j];
        c |= (uint64_t)1 << (8 * n);
        if (bits == 64) {
            unsigned __int128 s = (unsigned __int128)h + c;
            if (s >= prime) s -= prime;
            h = (uint64_t)((s * key) % prime);
        } else {
            uint64_t s = (h + c) % prime;
            h = (s * key) % prime;
        }
        i += bs;
    } while (i < len);
    return h;
}

/* tag = (poly + s) mod 2^bits, s = big-endian pad bytes; written big-endian to out */
static void put_tag(unsigned char *out, uint64_t poly, const unsigned char *pad, unsigned int bits) {
    int tl = bits / 8;
    uint64_t s = 0;
    for (int j = 0; j < tl; j++) s = (s << 8) | pad[j];
    uint64_t t = poly + s;
    if (bits == 32) t &= 0xFFFFFFFFULL;
    for (int j = tl - 1; j >= 0; j--) { out[j] = (unsigned char)(t & 0xFF); t >>= 8; }
}

static int check_args(unsigned long long key, unsigned int bits) {
    if (bits != 32 && bits != 64) {
        PyErr_SetString(PyExc_ValueError, "tag_bits must be 32 or 64");
        return 0;
    }
    if (key >= (bits == 64 ? P64 : P32)) {
        PyErr_SetString(PyExc_ValueError, "key must be reduced modulo p");
        return 0;
    }
    return 1;
}

/* seal(header, payload, pad, key, tag_bits) -> header || payload^pad[t:] || tag
 * pad holds t/8 tag-mask bytes then len(payload) bytes. */
static PyObject *seal(PyObject *self, PyObject *args) {
    Py_buffer hd, pl, pad;
    unsigned long long key;
    unsigned int bits;
    if (!PyArg_ParseTuple(args, "y*y*y*KI", &hd, &pl, &pad, &key, &bits)) return NULL;
    PyObject *out = NULL;
    Py_ssize_t tl = bits / 8;
    if (!check_args(key, bits)) goto done;
    if (pad.len != tl + pl.len) {
        PyErr_SetString(PyExc_ValueError, "pad must be tag length + payload length");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, hd.len + pl.len + tl);
    if (out == NULL) goto done;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    const unsigned char *pp = pad.buf, *x = pl.buf;
    memcpy(o, hd.buf, hd.len);
    for (Py_ssize_t i = 0; i < pl.len; i++) o[hd.len + i] = x[i] ^ pp[tl + i];
    put_tag(o + hd.len + pl.len, poly_hash(o, hd.len + pl.len, key, bits), pp, bits);
done:
    PyBuffer_Release(&hd);
    PyBuffer_Release(&pl);
    PyBuffer_Release(&pad);
    return out;
}

/* open(frame, header_len, pad, key, tag_bits) -> payload, or None if the tag is wrong.
 * The tag is compared in constant time. */
static PyObject *open_frame(PyObject *self, PyObject *args) {
    Py_buffer fr, pad;
    Py_ssize_t hlen;
    unsigned long long key;
    unsigned int bits;
    if (!PyArg_ParseTuple(args, "y*ny*KI", &fr, &hlen, &pad, &key, &bits)) return NULL;
    PyObject *out = NULL;
    Py_ssize_t tl = bits / 8;
    if (!check_args(key, bits)) goto done;
    Py_ssize_t n = fr.len - hlen - tl;
    if (hlen < 0 || n < 0 || pad.len != tl + n) {
        PyErr_SetString(PyExc_ValueError, "frame, header length and pad do not fit");
        goto done;
    }
    const unsigned char *f = fr.buf, *pp = pad.buf;
    unsigned char expect[8];
    put_tag(expect, poly_hash(f, hlen + n, key, bits), pp, bits);
    unsigned char diff = 0;
    for (Py_ssize_t j = 0; j < tl; j++) diff |= expect[j] ^ f[hlen + n + j];
    if (diff) {
        Py_INCREF(Py_None);
        out = Py_None;
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL) goto done;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) o[i] = f[hlen + i] ^ pp[tl + i];
done:
    PyBuffer_Release(&fr);
    PyBuffer_Release(&pad);
    return out;
}

/* seal_at(header, payload, stream, start, key, tag_bits) -> frame, as seal() with the pad read
 * from the writable stream at [start, start + t/8 + len(payload)), which is then zeroed: the
 * pad is taken and erased in one step, with no copy of it left behind. */
static PyObject *seal_at(PyObject *self, PyObject *args) {
    Py_buffer hd, pl, st;
    Py_ssize_t start;
    unsigned long long key;
    unsigned int bits;
    if (!PyArg_ParseTuple(args, "y*y*w*nKI", &hd, &pl, &st, &start, &key, &bits)) return NULL;
    PyObject *out = NULL;
    Py_ssize_t tl = bits / 8;
    if (!check_args(key, bits)) goto done;
    if (start < 0 || start > st.len - tl - pl.len) {
        PyErr_SetString(PyExc_ValueError, "pad range lies outside the stream");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, hd.len + pl.len + tl);
    if (out == NULL) goto done;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    unsigned char *pp = (unsigned char *)st.buf + start;
    const unsigned char *x = pl.buf;
    memcpy(o, hd.buf, hd.len);
    for (Py_ssize_t i = 0; i < pl.len; i++) o[hd.len + i] = x[i] ^ pp[tl + i];
    put_tag(o + hd.len + pl.len, poly_hash(o, hd.len + pl.len, key, bits), pp, bits);
    memset(pp, 0, (size_t)(tl + pl.len));
done:
    PyBuffer_Release(&hd);
    PyBuffer_Release(&pl);
    PyBuffer_Release(&st);
    return out;
}

/* open_at(frame, header_len, stream, start, key, tag_bits) -> payload or None, as open() with
 * the pad read from the writable stream at start; on success the pad is zeroed there, on a bad
 * tag (compared in constant time) the stream is left as it was. */
static PyObject *open_at(PyObject *self, PyObject *args) {
    Py_buffer fr, st;
    Py_ssize_t hlen, start;
    unsigned long long key;
    unsigned int bits;
    if (!PyArg_ParseTuple(args, "y*nw*nKI", &fr, &hlen, &st, &start, &key, &bits)) return NULL;
    PyObject *out = NULL;
    Py_ssize_t tl = bits / 8;
    if (!check_args(key, bits)) goto done;
    Py_ssize_t n = fr.len - hlen - tl;
    if (hlen < 0 || n < 0 || start < 0 || start > st.len - tl - n) {
        PyErr_SetString(PyExc_ValueError, "frame, header length and pad range do not fit");
        goto done;
    }
    const unsigned char *f = fr.buf;
    unsigned char *pp = (unsigned char *)st.buf + start;
    unsigned char expect[8];
    put_tag(expect, poly_hash(f, hlen + n, key, bits), pp, bits);
    unsigned char diff = 0;
    for (Py_ssize_t j = 0; j < tl; j++) diff |= expect[j] ^ f[hlen + n + j];
    if (diff) {
        Py_INCREF(Py_None);
        out = Py_None;
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, n);
    if (out == NULL) goto done;
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) o[i] = f[hlen + i] ^ pp[tl + i];
    memset(pp, 0, (size_t)(tl + n));
done:
    PyBuffer_Release(&fr);
    PyBuffer_Release(&st);
    return out;
}

/* polyhash(message: bytes, key: int, tag_bits: 32|64) -> int
 * Blocks of tag_bits/8 - 1 bytes, each read little-endian with a 0x01 byte appended above it;
 * h = (h + c) * key mod p for every block (an empty message hashes one empty block). */
static PyObject *polyhash(PyObject *self, PyObject *args) {
    Py_buffer msg;
    unsigned long long key;
    unsigned int bits;
    if (!PyArg_ParseTuple(args, "y*KI", &msg, &key, &bits)) return NULL;
    PyObject *out = NULL;
    if (check_args(key, bits))
        out = PyLong_FromUnsignedLongLong(poly_hash(msg.buf, msg.len, key, bits));
    PyBuffer_Release(&msg);
    return out;
}

/* xor(a: bytes, b: bytes) -> bytes, len(b) >= len(a); result has len(a) bytes */
static PyObject *xor_bytes(PyObject *self, PyObject *args) {
    Py_buffer a, b;
    if (!PyArg_ParseTuple(args, "y*y*", &a, &b)) return NULL;
    if (b.len < a.len) {
        PyBuffer_Release(&a);
        PyBuffer_Release(&b);
        PyErr_SetString(PyExc_ValueError, "pad shorter than data");
        return NULL;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, a.len);
    if (out != NULL) {
        unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
        const unsigned char *x = a.buf, *y = b.buf;
        for (Py_ssize_t i = 0; i < a.len; i++) o[i] = x[i] ^ y[i];
    }
    PyBuffer_Release(&a);
    PyBuffer_Release(&b);
    return out;
}

static PyMethodDef methods[] = {
    {"polyhash", polyhash, METH_VARARGS, "Wegman-Carter polynomial hash (32/64-bit field)."},
    {"xor", xor_bytes, METH_VARARGS, "XOR data with pad bytes."},
    {"seal", seal, METH_VARARGS, "Encrypt and tag one OTP frame."},
    {"open", open_frame, METH_VARARGS, "Verify and decrypt one OTP frame (None: bad tag)."},
    {"seal_at", seal_at, METH_VARARGS, "seal() with the pad taken from a stream and erased."},
    {"open_at", open_at, METH_VARARGS, "open() with the pad taken from a stream and erased."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_otpfast", NULL, -1, methods};

PyMODINIT_FUNC PyInit__otpfast(void) { return PyModule_Create(&module); }
