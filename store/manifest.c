/*
 * The manifest's canonical text form (docs/manifest.md). A manifest is only
 * accepted if formatting what was parsed gives back the very same bytes:
 * one content, one encoding, one id.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

void st_sha256(const void *data, size_t len, unsigned char out[32])
{
    SHA256(data, len, out);
}

/* Dot names are refused everywhere: `.strata` marks a clone, and dot names
 * are what strata's own temporary and hidden files use. */
int st_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > ST_MAX_NAME || name[0] == '.')
        return 0;
    return strchr(name, '/') == NULL;
}

/*
 * SHA-256 of len zero bytes. A hostile manifest could make a reader hash
 * up to 64 MiB of zeros for each of 4096 short last chunks, so the hash
 * states after each 64 KiB of zeros are kept (built once, up to the longest
 * length asked): any length then costs at most 64 KiB of hashing.
 */
#define ZERO_STEP (64u << 10)
#define ZERO_MARKS ((64u << 20) / ZERO_STEP + 1)

static const unsigned char zero_block[ZERO_STEP];
static EVP_MD_CTX *zero_mark[ZERO_MARKS]; /* [i]: after i * ZERO_STEP zeros */
static pthread_mutex_t zero_mu = PTHREAD_MUTEX_INITIALIZER;

static int zero_digest(uint64_t len, unsigned char out[32])
{
    size_t i = (size_t)(len / ZERO_STEP);
    if (i >= ZERO_MARKS)
        return -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL;
    pthread_mutex_lock(&zero_mu);
    if (ok && !zero_mark[0] && (zero_mark[0] = EVP_MD_CTX_new()))
        ok = EVP_DigestInit_ex(zero_mark[0], EVP_sha256(), NULL);
    size_t have = 0;
    while (have + 1 < ZERO_MARKS && zero_mark[have + 1])
        have++;
    for (; ok && have < i; have++) {
        EVP_MD_CTX *next = EVP_MD_CTX_new();
        ok = next && EVP_MD_CTX_copy_ex(next, zero_mark[have]) &&
             EVP_DigestUpdate(next, zero_block, ZERO_STEP);
        if (ok)
            zero_mark[have + 1] = next;
        else
            EVP_MD_CTX_free(next);
    }
    ok = ok && zero_mark[i] && EVP_MD_CTX_copy_ex(ctx, zero_mark[i]);
    pthread_mutex_unlock(&zero_mu);
    ok = ok && EVP_DigestUpdate(ctx, zero_block, (size_t)(len % ZERO_STEP)) &&
         EVP_DigestFinal_ex(ctx, out, NULL);
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : -1;
}

int st_digest_is_zero(const unsigned char digest[32], uint64_t len)
{
    /* full chunks (a power of two) are most lines: their digest is cached */
    static unsigned char full[27][32];
    static int have[27];
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    unsigned char d[32];
    int shift = len && !(len & (len - 1)) ? __builtin_ctzll(len) : -1;
    int ok;
    if (shift >= 12 && shift <= 26) {
        pthread_mutex_lock(&mu);
        if (!have[shift])
            have[shift] = zero_digest(len, full[shift]) == 0;
        ok = have[shift];
        memcpy(d, full[shift], 32);
        pthread_mutex_unlock(&mu);
    } else {
        ok = zero_digest(len, d) == 0;
    }
    /* a failure to hash (out of memory) can't call data zeros: it passes */
    return ok && memcmp(d, digest, 32) == 0;
}

const store_chunk *store_file_chunk(const store_file *f, uint64_t c)
{
    size_t lo = 0, hi = f->ndata;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (f->data[mid].index == c)
            return &f->data[mid];
        if (f->data[mid].index < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

uint64_t store_chunk_len(const store_file *f, uint64_t c)
{
    uint64_t off = c * f->chunk_size;
    return f->size - off < f->chunk_size ? f->size - off : f->chunk_size;
}

static int key_valid(const char *k)
{
    if (!*k || strlen(k) > 64)
        return 0;
    for (; *k; k++)
        if (!((*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') || *k == '.' || *k == '-'))
            return 0;
    return 1;
}

int st_chunk_size_valid(uint64_t cs)
{
    return cs >= 4096 && cs <= (64u << 20) && !(cs & (cs - 1));
}

/* What a reader would refuse is never written (the files changed since
 * import or commit checked them, or a caller made the layer itself). */
static int check_bounds(const store_layer *l)
{
    uint64_t chunks = 0, data = 0;
    for (size_t i = 0; i < l->nfiles; i++) {
        const store_file *f = &l->files[i];
        chunks += f->nchunks;
        data += f->ndata;
        if (!st_name_valid(f->name) || f->size > ST_MAX_FILE_SIZE || f->mode > 0777 ||
            !st_chunk_size_valid(f->chunk_size) ||
            f->nchunks != (f->size + f->chunk_size - 1) / f->chunk_size)
            return st_fail(EINVAL, "%s: not a file a layer can hold", f->name);
    }
    if (l->nfiles > ST_MAX_FILES || l->nbindings > ST_MAX_BINDINGS || chunks > ST_MAX_CHUNKS ||
        data > ST_MAX_DATA_CHUNKS)
        return st_fail(E2BIG,
                       "%zu files, %" PRIu64 " chunks, %" PRIu64 " of them data: a layer holds at "
                       "most %d, %llu, %llu (use a larger --chunk-size)",
                       l->nfiles, chunks, data, ST_MAX_FILES, (unsigned long long)ST_MAX_CHUNKS,
                       (unsigned long long)ST_MAX_DATA_CHUNKS);
    return 0;
}

int st_manifest_format(const store_layer *l, sbuf *out)
{
    int rc = check_bounds(l);
    if (rc)
        return rc;
    sbuf_printf(out, "strata-layer 1\n");
    if (l->has_parent)
        sbuf_printf(out, "parent %s\n", l->parent.hex);
    for (size_t i = 0; i < l->nbindings; i++) {
        if (!key_valid(l->bindings[i].key) || strlen(l->bindings[i].value) > ST_MAX_BIND_VALUE)
            return st_fail(EINVAL, "binding %s: a key is 1-64 of [a-z0-9.-], a value 0-%d bytes",
                           l->bindings[i].key, ST_MAX_BIND_VALUE);
        char *v = st_encode(l->bindings[i].value);
        if (!v)
            return -ENOMEM;
        sbuf_printf(out, "bind %s %s\n", l->bindings[i].key, v);
        free(v);
    }
    for (size_t i = 0; i < l->nfiles; i++) {
        const store_file *f = &l->files[i];
        char *name = st_encode(f->name);
        if (!name)
            return -ENOMEM;
        sbuf_printf(out, "file %s %" PRIu64 " %04o %" PRIu32 "\n", name, f->size,
                      (unsigned)f->mode, f->chunk_size);
        free(name);
        /* the gaps between data chunks are the zero runs */
        uint64_t next = 0;
        for (size_t k = 0; k <= f->ndata; k++) {
            uint64_t at = k < f->ndata ? f->data[k].index : f->nchunks;
            if (at < next || (k < f->ndata && at >= f->nchunks))
                return st_fail(EINVAL, "%s: chunks unsorted or past its end", f->name);
            if (at > next)
                sbuf_printf(out, "zero %" PRIu64 "\n", at - next);
            if (k < f->ndata) {
                char hex[65];
                hex_encode(f->data[k].digest, 32, hex);
                sbuf_printf(out, "%s\n", hex);
                next = at + 1;
            }
        }
    }
    return out->oom ? -ENOMEM : 0;
}

/* next line without its '\n'; NULL at the end or if the last line has none */
static char *next_line(char **cur, char *end)
{
    if (*cur >= end)
        return NULL;
    char *nl = memchr(*cur, '\n', (size_t)(end - *cur));
    if (!nl)
        return NULL;
    *nl = 0;
    char *line = *cur;
    *cur = nl + 1;
    return line;
}

static int parse_u64(const char *s, uint64_t *v)
{
    if (!*s || (s[0] == '0' && s[1]) || strlen(s) > 20)
        return -1;
    uint64_t x = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        uint64_t d = (uint64_t)(*s - '0');
        if (x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    *v = x;
    return 0;
}

static void layer_clear(store_layer *l)
{
    for (size_t i = 0; i < l->nfiles; i++) {
        free(l->files[i].name);
        free(l->files[i].data);
    }
    free(l->files);
    for (size_t i = 0; i < l->nbindings; i++) {
        free(l->bindings[i].key);
        free(l->bindings[i].value);
    }
    free(l->bindings);
    free(l->message);
    l->files = NULL;
    l->bindings = NULL;
    l->message = NULL;
    l->nfiles = l->nbindings = 0;
}

void store_layer_free(store_layer *l)
{
    if (!l)
        return;
    layer_clear(l);
    free(l);
}

/* The parser's state: where it is, and why it stopped. */
typedef struct {
    store_layer *l;
    store_file *f;      /* the file whose chunks come next */
    uint64_t filled;    /* chunks of f seen so far */
    size_t cap_data;    /* entries allocated in f->data */
    size_t cap_files, cap_bind;
    uint64_t total_chunks, total_data;
    int after_zero;     /* the previous line was a zero run */
    size_t lineno;
    const char *why;
} parser;

static int grow(void **v, size_t *cap, size_t n, size_t size, size_t first)
{
    if (n < *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : first;
    void *p = realloc(*v, nc * size);
    if (!p)
        return -ENOMEM;
    *v = p;
    *cap = nc;
    return 0;
}

static int bad(parser *p, const char *why)
{
    p->why = why;
    return -EINVAL;
}

static int parse_bind(parser *p, char *line)
{
    store_layer *l = p->l;
    char *key = line + 5, *sp = strchr(key, ' ');
    if (!sp || l->nbindings >= ST_MAX_BINDINGS)
        return bad(p, sp ? "more than 64 bindings" : "a bind line needs a key and a value");
    *sp = 0;
    if (!key_valid(key))
        return bad(p, "a binding key is 1-64 of [a-z0-9.-]");
    if (grow((void **)&l->bindings, &p->cap_bind, l->nbindings, sizeof *l->bindings, 8))
        return -ENOMEM;
    store_binding *b = &l->bindings[l->nbindings++];
    b->key = strdup(key);
    b->value = st_decode(sp + 1);
    if (!b->key)
        return -ENOMEM;
    if (!b->value || strlen(b->value) > ST_MAX_BIND_VALUE)
        return bad(p, "a binding value is 1024 bytes at most, percent-encoded canonically");
    return 0;
}

static int parse_file(parser *p, char *line)
{
    store_layer *l = p->l;
    if (p->f && p->filled != p->f->nchunks)
        return bad(p, "the file before has fewer chunks than its size needs");
    char *fields[4], *rest = line + 5;
    for (int i = 0; i < 4; i++)
        if (!(fields[i] = strsep(&rest, " ")))
            return bad(p, "a file line is: file <name> <size> <mode> <chunk size>");
    if (rest)
        return bad(p, "a file line is: file <name> <size> <mode> <chunk size>");
    if (l->nfiles >= ST_MAX_FILES)
        return bad(p, "more than 4096 files");
    if (grow((void **)&l->files, &p->cap_files, l->nfiles, sizeof *l->files, 8))
        return -ENOMEM;
    store_file *f = p->f = &l->files[l->nfiles++];
    memset(f, 0, sizeof *f);
    p->filled = p->cap_data = 0;
    p->after_zero = 0;
    uint64_t size, cs;
    f->name = st_decode(fields[0]);
    if (!f->name || !st_name_valid(f->name))
        return bad(p, "a file name is 1-255 bytes, percent-encoded canonically, without '/', "
                      "not starting with '.'");
    if (parse_u64(fields[1], &size) || size > ST_MAX_FILE_SIZE)
        return bad(p, "a file size is a plain decimal of at most 4 TiB");
    if (strlen(fields[2]) != 4 || strspn(fields[2], "01234567") != 4 || fields[2][0] != '0')
        return bad(p, "a mode is four octal digits, at most 0777");
    if (parse_u64(fields[3], &cs) || !st_chunk_size_valid(cs))
        return bad(p, "a chunk size is a power of two from 4096 to 67108864");
    f->size = size;
    f->mode = (uint32_t)strtoul(fields[2], NULL, 8);
    f->chunk_size = (uint32_t)cs;
    f->nchunks = (size_t)((size + cs - 1) / cs);
    /* counted, not allocated: zero chunks cost nothing */
    p->total_chunks += f->nchunks;
    if (p->total_chunks > ST_MAX_CHUNKS)
        return bad(p, "more than 2^23 chunks in all files");
    return 0;
}

static int parse_zero(parser *p, const char *arg)
{
    uint64_t run;
    if (parse_u64(arg, &run) || run == 0 || run > p->f->nchunks - p->filled)
        return bad(p, "a zero run is 1 or more, up to the file's last chunk");
    if (p->after_zero)
        return bad(p, "two zero lines in a row: a run must be one maximal line");
    p->filled += run;
    p->after_zero = 1;
    return 0;
}

static int parse_data(parser *p, const char *hex)
{
    store_file *f = p->f;
    unsigned char digest[32];
    if (p->filled >= f->nchunks)
        return bad(p, "more chunks than the file's size holds");
    if (hex_decode(hex, 32, digest))
        return bad(p, "a chunk digest is 64 lowercase hex digits");
    if (st_digest_is_zero(digest, store_chunk_len(f, p->filled)))
        return bad(p, "a chunk of all zeros must be written as a zero run, not hashed");
    if (++p->total_data > ST_MAX_DATA_CHUNKS)
        return bad(p, "more than 2^22 data chunks in all files");
    if (grow((void **)&f->data, &p->cap_data, f->ndata, sizeof *f->data, 16))
        return -ENOMEM;
    store_chunk *ch = &f->data[f->ndata++];
    ch->index = p->filled++;
    memcpy(ch->digest, digest, 32);
    p->after_zero = 0;
    return 0;
}

static int parse_line(parser *p, char *line)
{
    store_layer *l = p->l;
    if (!strncmp(line, "parent ", 7) && !l->has_parent && !l->nbindings && !l->nfiles) {
        if (!st_id_valid(line + 7))
            return bad(p, "a parent is 64 lowercase hex digits");
        memcpy(l->parent.hex, line + 7, 65);
        l->has_parent = 1;
        return 0;
    }
    if (!strncmp(line, "bind ", 5) && !l->nfiles)
        return parse_bind(p, line);
    if (!strncmp(line, "file ", 5))
        return parse_file(p, line);
    if (p->f && !strncmp(line, "zero ", 5))
        return parse_zero(p, line + 5);
    if (p->f && strlen(line) == 64)
        return parse_data(p, line);
    return bad(p, "not a line of this format, or out of its place");
}

int st_manifest_parse(const char *data, size_t len, store_layer *l)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return st_fail(ENOMEM, "manifest: out of memory");
    memcpy(copy, data, len);
    copy[len] = 0;
    char *cur = copy, *end = copy + len, *line;
    parser p = {.l = l};
    int rc = 0;

    p.lineno = 1;
    if (memchr(data, 0, len))
        rc = bad(&p, "a NUL byte");
    else if (!(line = next_line(&cur, end)) || strcmp(line, "strata-layer 1"))
        rc = bad(&p, "the first line must be: strata-layer 1");
    while (!rc && (line = next_line(&cur, end))) {
        p.lineno++;
        rc = parse_line(&p, line);
    }
    if (!rc && cur != end)
        p.lineno++, rc = bad(&p, "the last line has no newline");
    if (!rc && p.f && p.filled != p.f->nchunks)
        rc = bad(&p, "the last file has fewer chunks than its size needs");

    /* Canonical: every line above was checked for its one encoding (plain
     * decimal, lowercase hex, canonical percent-encoding, maximal zero runs),
     * so sorted unique names and keys complete it, without formatting the
     * manifest again. */
    for (size_t i = 1; !rc && i < l->nfiles; i++)
        if (strcmp(l->files[i - 1].name, l->files[i].name) >= 0)
            rc = bad(&p, "file names must be sorted bytewise and unique"), p.lineno = 0;
    for (size_t i = 1; !rc && i < l->nbindings; i++)
        if (strcmp(l->bindings[i - 1].key, l->bindings[i].key) >= 0)
            rc = bad(&p, "binding keys must be sorted and unique"), p.lineno = 0;
    free(copy);
    if (!rc)
        return 0;
    layer_clear(l);
    l->has_parent = 0;
    if (rc == -ENOMEM)
        return st_fail(ENOMEM, "manifest: out of memory");
    if (p.lineno)
        return st_fail(EINVAL, "manifest line %zu: %s", p.lineno, p.why);
    return st_fail(EINVAL, "manifest: %s", p.why);
}

int st_info_format(const store_layer *l, sbuf *out)
{
    char *msg = st_encode(l->message ? l->message : "");
    if (!msg)
        return -ENOMEM;
    sbuf_printf(out, "created %" PRId64 "\nmessage %s\nbytes-added %" PRIu64 "\n", l->created,
                  msg, l->bytes_added);
    free(msg);
    return out->oom ? -ENOMEM : 0;
}

int st_info_parse(const char *data, size_t len, store_layer *l)
{
    char *copy = strndup(data, len);
    if (!copy)
        return -ENOMEM;
    char *cur = copy, *end = copy + strlen(copy), *line;
    int seen = 0, rc = -EINVAL;
    while ((line = next_line(&cur, end))) {
        uint64_t v;
        if (!strncmp(line, "created ", 8) && !parse_u64(line + 8, &v) && v < (1ULL << 62)) {
            l->created = (int64_t)v;
            seen |= 1;
        } else if (!strncmp(line, "message ", 8) && !(seen & 2)) {
            free(l->message);
            if (!(l->message = st_decode(line + 8)))
                goto out;
            seen |= 2;
        } else if (!strncmp(line, "bytes-added ", 12) && !parse_u64(line + 12, &v)) {
            l->bytes_added = v;
            seen |= 4;
        } /* unknown lines are later additions: ignore */
    }
    rc = seen == 7 ? 0 : -EINVAL;
out:
    free(copy);
    return rc;
}
