/*
 * The manifest's canonical text form (docs/manifest.md). A manifest is only
 * accepted if formatting what was parsed gives back the very same bytes:
 * one content, one encoding, one id.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>


void st_sha256(const void *data, size_t len, unsigned char out[32])
{
    SHA256(data, len, out);
}

int st_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 255 || !strcmp(name, ".") || !strcmp(name, ".."))
        return 0;
    return strchr(name, '/') == NULL;
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

int st_manifest_format(const store_layer *l, st_buf *out)
{
    st_buf_printf(out, "strata-layer 1\n");
    if (l->has_parent)
        st_buf_printf(out, "parent %s\n", l->parent.hex);
    for (size_t i = 0; i < l->nbindings; i++) {
        char *v = st_encode(l->bindings[i].value);
        if (!v)
            return -ENOMEM;
        st_buf_printf(out, "bind %s %s\n", l->bindings[i].key, v);
        free(v);
    }
    for (size_t i = 0; i < l->nfiles; i++) {
        const store_file *f = &l->files[i];
        char *name = st_encode(f->name);
        if (!name)
            return -ENOMEM;
        st_buf_printf(out, "file %s %" PRIu64 " %04o %" PRIu32 "\n", name, f->size,
                      (unsigned)f->mode, f->chunk_size);
        free(name);
        for (size_t c = 0; c < f->nchunks;) {
            if (!f->chunks[c].data) {
                size_t run = 0;
                while (c < f->nchunks && !f->chunks[c].data)
                    run++, c++;
                st_buf_printf(out, "zero %zu\n", run);
            } else {
                char hex[65];
                st_hex(f->chunks[c].digest, 32, hex);
                st_buf_printf(out, "%s\n", hex);
                c++;
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
        free(l->files[i].chunks);
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

int st_manifest_parse(const char *data, size_t len, store_layer *l)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, data, len);
    copy[len] = 0;
    char *cur = copy, *end = copy + len, *line;
    size_t cap_files = 0, cap_bind = 0;
    uint64_t total_chunks = 0;
    store_file *f = NULL;
    size_t filled = 0;
    int rc = -EINVAL;

    if (memchr(data, 0, len))
        goto bad;
    line = next_line(&cur, end);
    if (!line || strcmp(line, "strata-layer 1"))
        goto bad;
    int prev_zero = 0; /* 2 on a zero line, 1 on the line after it */
    while ((line = next_line(&cur, end))) {
        if (prev_zero)
            prev_zero--;
        if (!strncmp(line, "parent ", 7) && !l->has_parent && !l->nbindings && !l->nfiles) {
            if (!st_id_valid(line + 7))
                goto bad;
            memcpy(l->parent.hex, line + 7, 65);
            l->has_parent = 1;
        } else if (!strncmp(line, "bind ", 5) && !l->nfiles) {
            char *key = line + 5, *sp = strchr(key, ' ');
            if (!sp || l->nbindings >= ST_MAX_BINDINGS)
                goto bad;
            *sp = 0;
            if (!key_valid(key))
                goto bad;
            if (l->nbindings == cap_bind) {
                cap_bind = cap_bind ? cap_bind * 2 : 8;
                void *p = realloc(l->bindings, cap_bind * sizeof *l->bindings);
                if (!p)
                    goto oom;
                l->bindings = p;
            }
            store_binding *b = &l->bindings[l->nbindings];
            b->key = strdup(key);
            b->value = st_decode(sp + 1);
            l->nbindings++;
            if (!b->key || !b->value)
                goto bad;
        } else if (!strncmp(line, "file ", 5)) {
            if (f && filled != f->nchunks)
                goto bad;
            char *fields[4], *p = line + 5;
            for (int i = 0; i < 4; i++) {
                fields[i] = strsep(&p, " ");
                if (!fields[i])
                    goto bad;
            }
            if (p || l->nfiles >= ST_MAX_FILES)
                goto bad;
            if (l->nfiles == cap_files) {
                cap_files = cap_files ? cap_files * 2 : 8;
                void *np = realloc(l->files, cap_files * sizeof *l->files);
                if (!np)
                    goto oom;
                l->files = np;
            }
            f = &l->files[l->nfiles++];
            memset(f, 0, sizeof *f);
            uint64_t size, mode, cs;
            f->name = st_decode(fields[0]);
            if (!f->name || !st_name_valid(f->name) || parse_u64(fields[1], &size) ||
                size > ST_MAX_FILE_SIZE || strlen(fields[2]) != 4 ||
                strspn(fields[2], "01234567") != 4 || parse_u64(fields[3], &cs))
                goto bad;
            char *mend;
            mode = strtoul(fields[2], &mend, 8);
            if (*mend || mode > 0777 || cs < 4096 || cs > (64u << 20) || (cs & (cs - 1)))
                goto bad;
            f->size = size;
            f->mode = (uint32_t)mode;
            f->chunk_size = (uint32_t)cs;
            f->nchunks = (size_t)((size + cs - 1) / cs);
            total_chunks += f->nchunks;
            if (total_chunks > ST_MAX_CHUNKS)
                goto bad;
            f->chunks = calloc(f->nchunks ? f->nchunks : 1, sizeof *f->chunks);
            if (!f->chunks)
                goto oom;
            filled = 0;
        } else if (f && !strncmp(line, "zero ", 5)) {
            uint64_t run;
            if (parse_u64(line + 5, &run) || run == 0 || run > f->nchunks - filled)
                goto bad;
            if (prev_zero)
                goto bad; /* two zero lines in a row: not one maximal run */
            filled += run; /* calloc'd entries are zero chunks already */
            prev_zero = 2;
        } else if (f && strlen(line) == 64) {
            if (filled >= f->nchunks || st_unhex(line, 32, f->chunks[filled].digest))
                goto bad;
            f->chunks[filled++].data = 1;
        } else {
            goto bad;
        }
    }
    if (cur != end || (f && filled != f->nchunks))
        goto bad;

    /* Canonical: every line above was checked for its one encoding (plain
     * decimal, lowercase hex, canonical percent-encoding, maximal zero runs),
     * so sorted unique names and keys complete it, without formatting the
     * manifest again (which would touch every chunk of a mostly empty disk). */
    for (size_t i = 1; i < l->nfiles; i++)
        if (strcmp(l->files[i - 1].name, l->files[i].name) >= 0)
            goto bad;
    for (size_t i = 1; i < l->nbindings; i++)
        if (strcmp(l->bindings[i - 1].key, l->bindings[i].key) >= 0)
            goto bad;
    free(copy);
    return 0;
oom:
    rc = -ENOMEM;
bad:
    layer_clear(l);
    l->has_parent = 0;
    free(copy);
    return rc;
}

int st_info_format(const store_layer *l, st_buf *out)
{
    char *msg = st_encode(l->message ? l->message : "");
    if (!msg)
        return -ENOMEM;
    st_buf_printf(out, "created %" PRId64 "\nmessage %s\nbytes-added %" PRIu64 "\n", l->created,
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
