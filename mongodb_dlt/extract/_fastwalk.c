/* The converter's common case in C: raw BSON documents -> the per-table column lists bson_arrow._Walker builds.
 *
 * walk(raw, max_depth, classify, cache, cache_limit) reads the concatenated documents of one server reply and
 * returns (keys, tables), exactly what bson_arrow's Python walk over bson.decode_all's dicts produces for them,
 * or None when the batch holds anything outside the common case. The caller then converts the batch in Python,
 * which knows every case; this module never decides how a value lands, it only takes the path the Python walk
 * would take, faster. The common case:
 *
 *   - values: double, string, document, array, ObjectId, boolean, date within years 1..9999, null, undefined,
 *     int32, int64, and Decimal128 that DECIMAL(38, 9) holds exactly (not a negative zero);
 *   - no sub-document or array deeper than max_depth, no data-keyed map, no key twice in one document, no
 *     sub-document with a $ref key (bson may decode it as a DBRef): classify says; an _id that is an ObjectId,
 *     an integer, a string, null or missing;
 *   - well-formed BSON with valid UTF-8 (anything else: the Python decoder raises the error users see).
 *
 * keys: the identity text of each document's _id (bson_arrow.identity). tables: a list, in the order the Python
 * walk creates them, of (table_path, rows, slots, parent_rows, root_rows, list_index) where slots is
 * {(prefix, key): {tag: [values]}} in first-seen order, as _TableBuilder holds them.
 *
 * inspect(raw) finds, for the batches left to the Python walk, what bson's decoder would not keep: a repeated key
 * (the document fails) and Symbols (bson would read them as strings); bson_arrow.inspect_batch is its twin.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define BAIL 1
#define FAIL (-1)
#define VALUE 2   /* scalar(): a value to put */
#define ELEMENT 3 /* next_element(): an element read */
#define FLAG_DATA_MAP 1
#define FLAG_REPEATED_KEY 2
#define FLAG_DBREF 4 /* a $ref key: bson may decode the document as a DBRef */
#define SUBDOCUMENT_FLAGS (FLAG_DATA_MAP | FLAG_REPEATED_KEY | FLAG_DBREF)

static const int64_t MIN_DATE_MS = -62135596800000LL;
static const int64_t MAX_DATE_MS = 253402300799999LL;

static PyObject *TAG_STRING, *TAG_INT64, *TAG_DOUBLE, *TAG_BOOL, *TAG_DATE, *TAG_OBJECTID, *TAG_DECIMAL;
static PyObject *ELEMENT_KEY, *LIST_LEVEL_KEY, *EMPTY_TUPLE;

/* A node is one prefix inside one table: a list [prefix tuple, slots {key: {tag: list}}, sub-documents
 * {key: node}, arrays {key: table index}]. */
enum { NODE_PREFIX, NODE_SLOTS, NODE_SUBNODES, NODE_ARRAYS, NODE_SIZE };

typedef struct {
    Py_ssize_t rows;
    PyObject *path;   /* TablePath tuple */
    PyObject *root;   /* node of prefix () */
    PyObject *flat;   /* {(prefix, key): slot} in first-seen order */
    PyObject *parent_rows, *root_rows, *list_index;
} Table;

typedef struct {
    Table *tables;
    Py_ssize_t count, capacity;
    long long max_depth;
    PyObject *classify, *cache;
    Py_ssize_t cache_limit;
} Walker;

typedef struct {
    unsigned char type;
    const char *key;
    Py_ssize_t key_length;
    const char *value;
    Py_ssize_t value_length;
} Element;

static int32_t read_int32(const char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return (int32_t)v; /* BSON is little-endian, as every platform this builds on */
}

static int64_t read_int64(const char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return (int64_t)v;
}

/* The next element of the document doc[0:length] from *position: ELEMENT with *element filled, 0 at the end,
 * BAIL on anything malformed or outside the common case. */
static int next_element(const char *doc, Py_ssize_t length, Py_ssize_t *position, Element *element) {
    Py_ssize_t p = *position;
    if (p >= length) return BAIL;
    unsigned char type = (unsigned char)doc[p];
    if (type == 0) return p == length - 1 ? 0 : BAIL;
    p++;
    const char *key = doc + p;
    const char *nul = memchr(key, 0, (size_t)(length - p));
    if (nul == NULL) return BAIL;
    Py_ssize_t key_length = nul - key;
    p += key_length + 1;
    Py_ssize_t size;
    switch (type) {
    case 0x01: case 0x09: case 0x12: size = 8; break;
    case 0x07: size = 12; break;
    case 0x08: size = 1; break;
    case 0x10: size = 4; break;
    case 0x13: size = 16; break;
    case 0x06: case 0x0A: size = 0; break;
    case 0x02:
        if (length - p < 4) return BAIL;
        size = (Py_ssize_t)read_int32(doc + p) + 4;
        if (size < 5 || size > length - p || doc[p + size - 1] != 0) return BAIL;
        break;
    case 0x03: case 0x04:
        if (length - p < 4) return BAIL;
        size = read_int32(doc + p);
        if (size < 5 || size > length - p || doc[p + size - 1] != 0) return BAIL;
        break;
    default:
        return BAIL;
    }
    if (size > length - 1 - p) return BAIL; /* the document's own terminator must follow */
    if (type == 0x08 && doc[p] != 0 && doc[p] != 1) return BAIL;
    element->type = type;
    element->key = key;
    element->key_length = key_length;
    element->value = doc + p;
    element->value_length = size;
    *position = p + size;
    return ELEMENT;
}

/* The document's keys as a tuple of str, or NULL with *status BAIL (bad UTF-8, malformed) or FAIL. */
static PyObject *document_keys(const char *doc, Py_ssize_t length, int *status) {
    PyObject *keys = PyList_New(0);
    if (keys == NULL) { *status = FAIL; return NULL; }
    Py_ssize_t position = 4;
    Element element;
    int found;
    while ((found = next_element(doc, length, &position, &element)) == ELEMENT) {
        PyObject *key = PyUnicode_DecodeUTF8(element.key, element.key_length, NULL);
        if (key == NULL) { PyErr_Clear(); Py_DECREF(keys); *status = BAIL; return NULL; }
        int appended = PyList_Append(keys, key);
        Py_DECREF(key);
        if (appended < 0) { Py_DECREF(keys); *status = FAIL; return NULL; }
    }
    if (found != 0) { Py_DECREF(keys); *status = BAIL; return NULL; }
    PyObject *tuple = PyList_AsTuple(keys);
    Py_DECREF(keys);
    if (tuple == NULL) *status = FAIL;
    return tuple;
}

/* classify(keys) through the cache: FLAG_* bits, or -1 with an error set. */
static long classify_keys(Walker *w, PyObject *keys) {
    PyObject *cached = PyDict_GetItemWithError(w->cache, keys);
    if (cached != NULL) return PyLong_AsLong(cached);
    if (PyErr_Occurred()) return -1;
    PyObject *flags = PyObject_CallOneArg(w->classify, keys);
    if (flags == NULL) return -1;
    long value = PyLong_AsLong(flags);
    if (PyDict_GET_SIZE(w->cache) < w->cache_limit && PyDict_SetItem(w->cache, keys, flags) < 0) value = -1;
    Py_DECREF(flags);
    return value;
}

static PyObject *new_node(PyObject *prefix) {
    PyObject *node = PyList_New(NODE_SIZE);
    if (node == NULL) return NULL;
    Py_INCREF(prefix);
    PyList_SET_ITEM(node, NODE_PREFIX, prefix);
    for (int i = NODE_SLOTS; i < NODE_SIZE; i++) {
        PyObject *d = PyDict_New();
        if (d == NULL) { Py_DECREF(node); return NULL; }
        PyList_SET_ITEM(node, i, d);
    }
    return node;
}

/* Index of a new table at path, or -1. */
static Py_ssize_t new_table(Walker *w, PyObject *path) {
    if (w->count == w->capacity) {
        Py_ssize_t capacity = w->capacity ? w->capacity * 2 : 8;
        Table *tables = PyMem_Realloc(w->tables, (size_t)capacity * sizeof(Table));
        if (tables == NULL) { PyErr_NoMemory(); return -1; }
        w->tables = tables;
        w->capacity = capacity;
    }
    Table *t = &w->tables[w->count];
    memset(t, 0, sizeof(Table));
    Py_INCREF(path);
    t->path = path;
    t->root = new_node(EMPTY_TUPLE);
    t->flat = PyDict_New();
    t->parent_rows = PyList_New(0);
    t->root_rows = PyList_New(0);
    t->list_index = PyList_New(0);
    w->count++; /* counted even when incomplete, so the walker frees it */
    if (!t->root || !t->flat || !t->parent_rows || !t->root_rows || !t->list_index) return -1;
    return w->count - 1;
}

/* The slot {tag: list} of key in node, created (and registered in first-seen order) when missing; borrowed. */
static PyObject *get_slot(Walker *w, Py_ssize_t table, PyObject *node, PyObject *key) {
    PyObject *slots = PyList_GET_ITEM(node, NODE_SLOTS);
    PyObject *slot = PyDict_GetItemWithError(slots, key);
    if (slot != NULL || PyErr_Occurred()) return slot;
    slot = PyDict_New();
    if (slot == NULL) return NULL;
    PyObject *flat_key = PyTuple_Pack(2, PyList_GET_ITEM(node, NODE_PREFIX), key);
    int failed = flat_key == NULL || PyDict_SetItem(slots, key, slot) < 0 ||
                 PyDict_SetItem(w->tables[table].flat, flat_key, slot) < 0;
    Py_XDECREF(flat_key);
    Py_DECREF(slot); /* both dicts hold it */
    return failed ? NULL : slot;
}

/* slot[tag], padded with None up to row, gets value (a new reference, always consumed). */
static int put(Walker *w, Py_ssize_t table, PyObject *node, PyObject *key, PyObject *tag, Py_ssize_t row,
               PyObject *value) {
    if (value == NULL) return FAIL;
    PyObject *slot = get_slot(w, table, node, key);
    if (slot == NULL) { Py_DECREF(value); return FAIL; }
    PyObject *column = PyDict_GetItemWithError(slot, tag);
    if (column == NULL) {
        if (PyErr_Occurred() || (column = PyList_New(0)) == NULL) { Py_DECREF(value); return FAIL; }
        int set = PyDict_SetItem(slot, tag, column);
        Py_DECREF(column);
        if (set < 0) { Py_DECREF(value); return FAIL; }
    }
    Py_ssize_t size = PyList_GET_SIZE(column);
    if (size > row) { Py_DECREF(value); return BAIL; } /* written twice in one row: not the common case */
    for (; size < row; size++) {
        if (PyList_Append(column, Py_None) < 0) { Py_DECREF(value); return FAIL; }
    }
    int appended = PyList_Append(column, value);
    Py_DECREF(value);
    return appended < 0 ? FAIL : 0;
}

/* Decimal128 as the integer value * 10**9 when DECIMAL(38, 9) holds it exactly (bson_arrow.decimal_unscaled);
 * NULL with *status BAIL when it does not. */
static PyObject *decimal_unscaled(const char *bid, int *status) {
    uint64_t low = (uint64_t)read_int64(bid), high = (uint64_t)read_int64(bid + 8);
    const uint64_t infinity_mask = 0x78ULL << 56, large_form_mask = 3ULL << 61;
    int negative = (int)(high >> 63);
    if ((high & infinity_mask) == infinity_mask) { *status = BAIL; return NULL; }
    /* zero (a non-canonical large form reads as zero): a negative zero is no DECIMAL value, it lands as text */
    if ((high & large_form_mask) == large_form_mask) {
        if (negative) { *status = BAIL; return NULL; }
        return PyLong_FromLong(0);
    }
    long exponent = (long)((high >> 49) & 0x3FFF) - 6176;
    unsigned __int128 coefficient = ((unsigned __int128)(high & ((1ULL << 49) - 1)) << 64) | low;
    if (coefficient == 0) {
        if (negative) { *status = BAIL; return NULL; }
        return PyLong_FromLong(0);
    }
    long shift = exponent + 9;
    if (shift > 38 || shift < -38) { *status = BAIL; return NULL; }
    unsigned __int128 power = 1, limit = 1;
    for (int i = 0; i < 38; i++) limit *= 10;
    for (long i = 0; i < (shift < 0 ? -shift : shift); i++) power *= 10;
    unsigned __int128 unscaled;
    if (shift < 0) {
        if (coefficient % power != 0) { *status = BAIL; return NULL; }
        unscaled = coefficient / power;
    } else {
        if (coefficient > (limit - 1) / power) { *status = BAIL; return NULL; }
        unscaled = coefficient * power;
    }
    if (unscaled >= limit) { *status = BAIL; return NULL; }
    if (unscaled <= (unsigned __int128)INT64_MAX) {
        long long v = (long long)unscaled;
        return PyLong_FromLongLong(negative ? -v : v);
    }
    PyObject *high_part = PyLong_FromUnsignedLongLong((unsigned long long)(unscaled >> 64));
    PyObject *sixty_four = PyLong_FromLong(64);
    PyObject *shifted = high_part && sixty_four ? PyNumber_Lshift(high_part, sixty_four) : NULL;
    PyObject *low_part = PyLong_FromUnsignedLongLong((unsigned long long)unscaled);
    PyObject *value = shifted && low_part ? PyNumber_Or(shifted, low_part) : NULL;
    Py_XDECREF(high_part); Py_XDECREF(sixty_four); Py_XDECREF(shifted); Py_XDECREF(low_part);
    if (value != NULL && negative) {
        PyObject *negated = PyNumber_Negative(value);
        Py_DECREF(value);
        value = negated;
    }
    return value;
}

/* VALUE with a scalar element's tag (borrowed) and value (new reference); 0 for null/undefined (nothing to
 * put); BAIL or FAIL. Never called for documents or arrays. */
static int scalar(const Element *e, PyObject **tag, PyObject **value) {
    int status = FAIL;
    switch (e->type) {
    case 0x01: {
        double d;
        memcpy(&d, e->value, 8);
        *tag = TAG_DOUBLE; *value = PyFloat_FromDouble(d); break;
    }
    case 0x02:
        *value = PyUnicode_DecodeUTF8(e->value + 4, e->value_length - 5, NULL);
        if (*value == NULL) { PyErr_Clear(); return BAIL; }
        *tag = TAG_STRING; break;
    case 0x07: *tag = TAG_OBJECTID; *value = PyBytes_FromStringAndSize(e->value, 12); break;
    case 0x08: *tag = TAG_BOOL; *value = PyBool_FromLong(e->value[0]); break;
    case 0x09: {
        int64_t ms = read_int64(e->value);
        if (ms < MIN_DATE_MS || ms > MAX_DATE_MS) return BAIL;
        *tag = TAG_DATE; *value = PyLong_FromLongLong(ms); break;
    }
    case 0x10: *tag = TAG_INT64; *value = PyLong_FromLong(read_int32(e->value)); break;
    case 0x12: *tag = TAG_INT64; *value = PyLong_FromLongLong(read_int64(e->value)); break;
    case 0x13:
        *value = decimal_unscaled(e->value, &status);
        if (*value == NULL) return status == BAIL ? BAIL : FAIL;
        *tag = TAG_DECIMAL; break;
    case 0x06: case 0x0A: *value = NULL; return 0;
    default: return BAIL;
    }
    return *value == NULL ? FAIL : VALUE;
}

/* The _id's identity text (bson_arrow.identity) from its element, or NULL with *status BAIL or FAIL. */
static PyObject *identity(const Element *e, int *status) {
    static const char hex[] = "0123456789abcdef";
    switch (e->type) {
    case 0x07: {
        char text[2 + 24];
        text[0] = 'o'; text[1] = ':';
        for (int i = 0; i < 12; i++) {
            unsigned char b = (unsigned char)e->value[i];
            text[2 + 2 * i] = hex[b >> 4];
            text[3 + 2 * i] = hex[b & 15];
        }
        return PyUnicode_FromStringAndSize(text, sizeof text);
    }
    case 0x10: return PyUnicode_FromFormat("n:%ld", (long)read_int32(e->value));
    case 0x12: return PyUnicode_FromFormat("n:%lld", (long long)read_int64(e->value));
    case 0x02: {
        PyObject *text = PyUnicode_DecodeUTF8(e->value + 4, e->value_length - 5, NULL);
        if (text == NULL) { PyErr_Clear(); *status = BAIL; return NULL; }
        PyObject *prefixed = PyUnicode_FromFormat("s:%U", text);
        Py_DECREF(text);
        return prefixed;
    }
    case 0x06: case 0x0A: return PyUnicode_FromString("null");
    default: *status = BAIL; return NULL;
    }
}

/* A scalar element put at key of node, or nothing for null: 0, BAIL or FAIL. */
static int put_scalar(Walker *w, Py_ssize_t table, PyObject *node, PyObject *key, const Element *e,
                      Py_ssize_t row) {
    PyObject *tag, *value;
    int status = scalar(e, &tag, &value);
    if (status != VALUE) return status;
    return put(w, table, node, key, tag, row, value);
}

/* The keys of a sub-document or of a document in an array, or NULL with *status: BAIL when it lands as JSON (a
 * data-keyed map), may be a DBRef, or repeats a key; FAIL on an error. */
static PyObject *subdocument_keys(Walker *w, const Element *e, int *status) {
    PyObject *keys = document_keys(e->value, e->value_length, status);
    if (keys == NULL) return NULL;
    long flags = classify_keys(w, keys);
    if (flags < 0 || (flags & SUBDOCUMENT_FLAGS)) {
        *status = flags < 0 ? FAIL : BAIL;
        Py_DECREF(keys);
        return NULL;
    }
    return keys;
}

static int walk_array(Walker *w, Py_ssize_t table, PyObject *node, PyObject *key, const Element *e,
                      Py_ssize_t row, Py_ssize_t root_row, long long depth);

/* bson_arrow._Walker.fields over the document doc[0:length], whose keys are given. */
static int walk_fields(Walker *w, Py_ssize_t table, PyObject *node, const char *doc, Py_ssize_t length,
                       PyObject *keys, Py_ssize_t row, Py_ssize_t root_row, long long depth) {
    Py_ssize_t position = 4, index = 0;
    Element e;
    int found;
    while ((found = next_element(doc, length, &position, &e)) == ELEMENT) {
        PyObject *key = PyTuple_GET_ITEM(keys, index);
        index++;
        int status;
        if (e.type == 0x03) {
            /* subdocument: deeper than the nesting allows or a data-keyed map lands as JSON: not here */
            if (depth + 1 > w->max_depth) return BAIL;
            PyObject *sub_keys = subdocument_keys(w, &e, &status);
            if (sub_keys == NULL) return status;
            PyObject *subnodes = PyList_GET_ITEM(node, NODE_SUBNODES);
            PyObject *sub = PyDict_GetItemWithError(subnodes, key);
            if (sub == NULL) {
                if (PyErr_Occurred()) { Py_DECREF(sub_keys); return FAIL; }
                PyObject *one = PyTuple_Pack(1, key);
                PyObject *sub_prefix = one ? PySequence_Concat(PyList_GET_ITEM(node, NODE_PREFIX), one) : NULL;
                Py_XDECREF(one);
                sub = sub_prefix ? new_node(sub_prefix) : NULL;
                Py_XDECREF(sub_prefix);
                if (sub == NULL || PyDict_SetItem(subnodes, key, sub) < 0) {
                    Py_XDECREF(sub); Py_DECREF(sub_keys); return FAIL;
                }
                Py_DECREF(sub); /* the dict holds it */
            }
            status = walk_fields(w, table, sub, e.value, e.value_length, sub_keys, row, root_row, depth + 1);
            Py_DECREF(sub_keys);
            if (status != 0) return status;
        } else if (e.type == 0x04) {
            status = walk_array(w, table, node, key, &e, row, root_row, depth + 1);
            if (status != 0) return status;
        } else {
            status = put_scalar(w, table, node, key, &e, row);
            if (status != 0) return status;
        }
    }
    return found == 0 ? 0 : BAIL;
}

/* bson_arrow._Walker.array: the array e (at key of node in table) becomes rows of a child table. */
static int walk_array(Walker *w, Py_ssize_t table, PyObject *node, PyObject *key, const Element *e,
                      Py_ssize_t row, Py_ssize_t root_row, long long depth) {
    if (depth > w->max_depth) return BAIL; /* stored as JSON */
    PyObject *arrays = PyList_GET_ITEM(node, NODE_ARRAYS);
    PyObject *found_index = PyDict_GetItemWithError(arrays, key);
    Py_ssize_t child;
    if (found_index != NULL) {
        child = PyLong_AsSsize_t(found_index);
    } else {
        if (PyErr_Occurred()) return FAIL;
        PyObject *one = PyTuple_Pack(1, key);
        PyObject *field_path = one ? PySequence_Concat(PyList_GET_ITEM(node, NODE_PREFIX), one) : NULL;
        PyObject *wrapped = field_path ? PyTuple_Pack(1, field_path) : NULL;
        PyObject *path = wrapped ? PySequence_Concat(w->tables[table].path, wrapped) : NULL;
        Py_XDECREF(one); Py_XDECREF(field_path); Py_XDECREF(wrapped);
        if (path == NULL) return FAIL;
        child = new_table(w, path);
        Py_DECREF(path);
        if (child < 0) return FAIL;
        PyObject *index = PyLong_FromSsize_t(child);
        int set = index ? PyDict_SetItem(arrays, key, index) : -1;
        Py_XDECREF(index);
        if (set < 0) return FAIL;
    }
    PyObject *child_root = w->tables[child].root;
    if (get_slot(w, child, child_root, ELEMENT_KEY) == NULL) return FAIL;
    Py_ssize_t position = 4, list_index = 0;
    Element item;
    int found;
    while ((found = next_element(e->value, e->value_length, &position, &item)) == ELEMENT) {
        Table *t = &w->tables[child];
        Py_ssize_t child_row = t->rows++;
        PyObject *numbers[3] = {PyLong_FromSsize_t(row), PyLong_FromSsize_t(root_row), PyLong_FromSsize_t(list_index)};
        PyObject *lists[3] = {t->parent_rows, t->root_rows, t->list_index};
        int failed = 0;
        for (int i = 0; i < 3; i++) {
            if (numbers[i] == NULL || PyList_Append(lists[i], numbers[i]) < 0) failed = 1;
            Py_XDECREF(numbers[i]);
        }
        if (failed) return FAIL;
        list_index++;
        int status;
        if (item.type == 0x03) {
            PyObject *item_keys = subdocument_keys(w, &item, &status);
            if (item_keys == NULL) return status;
            status = walk_fields(w, child, w->tables[child].root, item.value, item.value_length, item_keys,
                                 child_row, root_row, depth);
            Py_DECREF(item_keys);
            if (status != 0) return status;
        } else if (item.type == 0x04) {
            status = walk_array(w, child, w->tables[child].root, LIST_LEVEL_KEY, &item, child_row, root_row,
                                depth + 1);
            if (status != 0) return status;
        } else {
            status = put_scalar(w, child, w->tables[child].root, ELEMENT_KEY, &item, child_row);
            if (status != 0) return status;
        }
    }
    return found == 0 ? 0 : BAIL;
}

/* One root document at doc[0:length]: its fields, and its _id's identity appended to ids. */
static int walk_document(Walker *w, const char *doc, Py_ssize_t length, PyObject *ids) {
    int status = BAIL;
    PyObject *keys = document_keys(doc, length, &status);
    if (keys == NULL) return status;
    long flags = classify_keys(w, keys);
    if (flags < 0 || (flags & FLAG_REPEATED_KEY)) { Py_DECREF(keys); return flags < 0 ? FAIL : BAIL; }
    PyObject *id = NULL;
    Py_ssize_t position = 4;
    Element e;
    while (next_element(doc, length, &position, &e) == ELEMENT) {
        if (e.key_length == 3 && memcmp(e.key, "_id", 3) == 0) {
            status = BAIL;
            id = identity(&e, &status);
            if (id == NULL) { Py_DECREF(keys); return status; }
            break;
        }
    }
    if (id == NULL && (id = PyUnicode_FromString("null")) == NULL) { Py_DECREF(keys); return FAIL; }
    int appended = PyList_Append(ids, id);
    Py_DECREF(id);
    if (appended < 0) { Py_DECREF(keys); return FAIL; }
    Py_ssize_t row = w->tables[0].rows++;
    status = walk_fields(w, 0, w->tables[0].root, doc, length, keys, row, row, 0);
    Py_DECREF(keys);
    return status;
}

static void free_walker(Walker *w) {
    for (Py_ssize_t i = 0; i < w->count; i++) {
        Table *t = &w->tables[i];
        Py_XDECREF(t->path); Py_XDECREF(t->root); Py_XDECREF(t->flat);
        Py_XDECREF(t->parent_rows); Py_XDECREF(t->root_rows); Py_XDECREF(t->list_index);
    }
    PyMem_Free(w->tables);
}

static PyObject *walk(PyObject *module, PyObject *args) {
    Py_buffer raw;
    Walker w = {0};
    if (!PyArg_ParseTuple(args, "y*LOO!n", &raw, &w.max_depth, &w.classify, &PyDict_Type, &w.cache, &w.cache_limit))
        return NULL;
    PyObject *ids = PyList_New(0), *result = NULL;
    int status = ids == NULL || new_table(&w, EMPTY_TUPLE) < 0 ? FAIL : 0;
    const char *data = raw.buf;
    Py_ssize_t offset = 0, size = raw.len;
    while (status == 0 && offset < size) {
        if (size - offset < 5) { status = BAIL; break; }
        Py_ssize_t length = read_int32(data + offset);
        if (length < 5 || length > size - offset || data[offset + length - 1] != 0) { status = BAIL; break; }
        status = walk_document(&w, data + offset, length, ids);
        offset += length;
    }
    if (status == 0) {
        PyObject *tables = PyList_New(w.count);
        for (Py_ssize_t i = 0; tables != NULL && i < w.count; i++) {
            Table *t = &w.tables[i];
            PyObject *entry = Py_BuildValue("(OnOOOO)", t->path, t->rows, t->flat, t->parent_rows, t->root_rows,
                                            t->list_index);
            if (entry == NULL) { Py_CLEAR(tables); break; }
            PyList_SET_ITEM(tables, i, entry);
        }
        if (tables != NULL) {
            result = PyTuple_Pack(2, ids, tables);
            Py_DECREF(tables);
        }
    } else if (status == BAIL) {
        result = Py_NewRef(Py_None);
    }
    Py_XDECREF(ids);
    free_walker(&w);
    PyBuffer_Release(&raw);
    return result;
}

/* ---- inspect(raw): what bson's decoder would not keep (bson_arrow.inspect_batch, the same in Python) ---- */

typedef struct {
    const char *key;
    Py_ssize_t length, index;
} KeyRef;

static int compare_keys(const void *a, const void *b) {
    const KeyRef *x = a, *y = b;
    Py_ssize_t shorter = x->length < y->length ? x->length : y->length;
    int order = memcmp(x->key, y->key, (size_t)shorter);
    if (order != 0) return order;
    if (x->length != y->length) return x->length < y->length ? -1 : 1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

/* The size of the value of any BSON type at v, with available bytes left before the document's terminator, or
 * -1 when it does not fit or the type is unknown (bson's decoder has read the batch already: never here). */
static Py_ssize_t any_value_size(unsigned char type, const char *v, Py_ssize_t available) {
    Py_ssize_t size;
    switch (type) {
    case 0x01: case 0x09: case 0x11: case 0x12: size = 8; break;
    case 0x07: size = 12; break;
    case 0x08: size = 1; break;
    case 0x10: size = 4; break;
    case 0x13: size = 16; break;
    case 0x06: case 0x0A: case 0x7F: case 0xFF: size = 0; break;
    case 0x02: case 0x0D: case 0x0E: case 0x0C:
        if (available < 4) return -1;
        size = (Py_ssize_t)read_int32(v) + 4 + (type == 0x0C ? 12 : 0);
        break;
    case 0x03: case 0x04: case 0x0F:
        if (available < 4) return -1;
        size = read_int32(v);
        break;
    case 0x05:
        if (available < 4) return -1;
        size = (Py_ssize_t)read_int32(v) + 5;
        break;
    case 0x0B: {
        const char *first = memchr(v, 0, (size_t)available);
        const char *second = first ? memchr(first + 1, 0, (size_t)(available - (first + 1 - v))) : NULL;
        if (second == NULL) return -1;
        size = second + 1 - v;
        break;
    }
    default: return -1;
    }
    return size < 0 || size > available ? -1 : size;
}

/* The (sub-)document at doc[0:length]: sets *symbol when it holds a Symbol at any depth, and *repeated (when still
 * NULL) to the path of its first repeated key, its own keys before its children's; an array's keys (positions,
 * decoded in order whatever they are) are not checked. path: the keys down to it. 0, or -1 with an error set. */
static int inspect_document(const char *doc, Py_ssize_t length, int is_array, PyObject *path, PyObject **repeated,
                            int *symbol) {
    if (length < 5) return 0;
    Py_ssize_t count = 0, p = 4, end = length - 1;
    KeyRef *keys = NULL;
    int status = 0;
    for (int pass = 0; pass < 2 && status == 0; pass++) {
        count = 0;
        p = 4;
        while (p < end) {
            unsigned char type = (unsigned char)doc[p];
            const char *key = doc + p + 1;
            const char *nul = memchr(key, 0, (size_t)(end - p - 1));
            if (nul == NULL) break;
            const char *value = nul + 1;
            Py_ssize_t size = any_value_size(type, value, end - (value - doc));
            if (size < 0) break;
            if (pass == 1) {
                keys[count].key = key;
                keys[count].length = nul - key;
                keys[count].index = count;
            }
            count++;
            p = value - doc + size;
        }
        if (pass == 0) {
            if (count == 0) return 0;
            keys = PyMem_Malloc((size_t)count * sizeof(KeyRef));
            if (keys == NULL) { PyErr_NoMemory(); return -1; }
        }
    }
    if (!is_array && *repeated == NULL && count > 1) {
        KeyRef *sorted = PyMem_Malloc((size_t)count * sizeof(KeyRef));
        if (sorted == NULL) { PyMem_Free(keys); PyErr_NoMemory(); return -1; }
        memcpy(sorted, keys, (size_t)count * sizeof(KeyRef));
        qsort(sorted, (size_t)count, sizeof(KeyRef), compare_keys);
        Py_ssize_t first = -1; /* the repeated key that comes first in the document */
        for (Py_ssize_t i = 1; i < count; i++) {
            if (sorted[i].length == sorted[i - 1].length &&
                memcmp(sorted[i].key, sorted[i - 1].key, (size_t)sorted[i].length) == 0 &&
                (i < 2 || sorted[i - 2].length != sorted[i - 1].length ||
                 memcmp(sorted[i - 2].key, sorted[i - 1].key, (size_t)sorted[i - 1].length) != 0) &&
                (first < 0 || sorted[i - 1].index < first))
                first = sorted[i - 1].index; /* the first of its run: sorted by index within equal keys */
        }
        PyMem_Free(sorted);
        if (first >= 0) {
            PyObject *key = PyUnicode_DecodeUTF8(keys[first].key, keys[first].length, "replace");
            PyObject *found = key ? PyList_GetSlice(path, 0, PyList_GET_SIZE(path)) : NULL;
            if (found != NULL && PyList_Append(found, key) == 0) *repeated = PyList_AsTuple(found);
            Py_XDECREF(key);
            Py_XDECREF(found);
            if (*repeated == NULL) status = -1;
        }
    }
    for (Py_ssize_t i = 0; i < count && status == 0; i++) {
        const char *key = keys[i].key;
        unsigned char type = (unsigned char)key[-1];
        const char *value = key + keys[i].length + 1;
        Py_ssize_t available = end - (value - doc);
        if (type == 0x0E) {
            *symbol = 1;
            continue;
        }
        const char *child;
        Py_ssize_t child_length;
        if (type == 0x03 || type == 0x04) {
            child = value;
            child_length = read_int32(value);
        } else if (type == 0x0F) { /* int32 total, the code string, the scope document */
            if (available < 8) continue;
            Py_ssize_t code_size = (Py_ssize_t)read_int32(value + 4) + 4;
            if (code_size < 4 || code_size > available - 8) continue;
            child = value + 4 + code_size;
            child_length = read_int32(child);
        } else {
            continue;
        }
        if (child_length < 5 || child_length > available - (child - value)) continue;
        PyObject *name = PyUnicode_DecodeUTF8(key, keys[i].length, "replace");
        Py_ssize_t depth = PyList_GET_SIZE(path);
        if (name == NULL || PyList_Append(path, name) < 0) { Py_XDECREF(name); status = -1; break; }
        Py_DECREF(name);
        if (type == 0x0F) {
            PyObject *scope = PyUnicode_FromString("$scope");
            if (scope == NULL || PyList_Append(path, scope) < 0) status = -1;
            Py_XDECREF(scope);
        }
        if (status == 0) status = inspect_document(child, child_length, type == 0x04, path, repeated, symbol);
        if (PyList_SetSlice(path, depth, PyList_GET_SIZE(path), NULL) < 0) status = -1;
    }
    PyMem_Free(keys);
    return status;
}

/* inspect(raw) -> (repeated, with_symbols): repeated is None or (document number, key path tuple) of the first
 * repeated key; with_symbols the numbers of the documents holding a Symbol. */
static PyObject *inspect(PyObject *module, PyObject *args) {
    Py_buffer raw;
    if (!PyArg_ParseTuple(args, "y*", &raw)) return NULL;
    PyObject *with_symbols = PyList_New(0), *path = PyList_New(0), *repeated = NULL, *result = NULL;
    const char *data = raw.buf;
    Py_ssize_t offset = 0, number = 0;
    int status = with_symbols && path ? 0 : -1;
    while (status == 0 && raw.len - offset >= 5) {
        Py_ssize_t length = read_int32(data + offset);
        if (length < 5 || length > raw.len - offset) break;
        PyObject *found = NULL;
        int symbol = 0;
        status = inspect_document(data + offset, length, 0, path, &found, &symbol);
        if (status == 0 && found != NULL && repeated == NULL) {
            repeated = Py_BuildValue("(nO)", number, found);
            if (repeated == NULL) status = -1;
        }
        Py_XDECREF(found);
        if (status == 0 && symbol) {
            PyObject *index = PyLong_FromSsize_t(number);
            if (index == NULL || PyList_Append(with_symbols, index) < 0) status = -1;
            Py_XDECREF(index);
        }
        offset += length;
        number++;
    }
    if (status == 0) result = Py_BuildValue("(OO)", repeated ? repeated : Py_None, with_symbols);
    Py_XDECREF(repeated);
    Py_XDECREF(with_symbols);
    Py_XDECREF(path);
    PyBuffer_Release(&raw);
    return result;
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS,
     "walk(raw, max_depth, classify, cache, cache_limit) -> (keys, tables) or None; see bson_arrow."},
    {"inspect", inspect, METH_VARARGS,
     "inspect(raw) -> (repeated key or None, documents holding a Symbol); see bson_arrow.inspect_batch."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT, .m_name = "mongodb_dlt.extract._fastwalk", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__fastwalk(void) {
    TAG_STRING = PyUnicode_InternFromString("string");
    TAG_INT64 = PyUnicode_InternFromString("int64");
    TAG_DOUBLE = PyUnicode_InternFromString("double");
    TAG_BOOL = PyUnicode_InternFromString("bool");
    TAG_DATE = PyUnicode_InternFromString("date");
    TAG_OBJECTID = PyUnicode_InternFromString("objectid");
    TAG_DECIMAL = PyUnicode_InternFromString("decimal");
    ELEMENT_KEY = PyUnicode_FromStringAndSize("\0element", 8);
    LIST_LEVEL_KEY = PyUnicode_FromStringAndSize("\0list", 5);
    EMPTY_TUPLE = PyTuple_New(0);
    if (!TAG_STRING || !TAG_INT64 || !TAG_DOUBLE || !TAG_BOOL || !TAG_DATE || !TAG_OBJECTID || !TAG_DECIMAL ||
        !ELEMENT_KEY || !LIST_LEVEL_KEY || !EMPTY_TUPLE)
        return NULL;
    return PyModule_Create(&module);
}
