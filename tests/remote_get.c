/*
 * remote_get: fetch a blob, or a byte range of it, with remote_blob_get and
 * write it to stdout, so tests/remote.sh can check Range handling (206,
 * 200 with the whole blob, redirects) and digest checks against real
 * registries and proxies. A test tool, not installed.
 *
 * usage: remote_get [--insecure] HOST/REPO sha256:HEX [OFFSET LENGTH]
 *        remote_get --verify HOST/REPO TAG
 *
 * --verify reads the tag's manifest as a puller would (remote_artifact_parse,
 * every layer's blobs, index and every chunk by range, each checked against
 * its id) and prints "N layers, N chunks verified".
 */
#include "../remote/pack.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int to_stdout(void *ctx, const void *data, size_t len)
{
    (void)ctx;
    return fwrite(data, 1, len, stdout) == len ? 0 : -5;
}

static int verify_layer(remote *r, const remote_artifact *a, size_t i, uint64_t *chunks)
{
    const remote_artifact_layer *L = &a->layers[i];
    char *m = NULL, *info = NULL, *ix = NULL;
    size_t ml, il, xl;
    pk_index x = {0};
    int rc = remote_blob_read(r, L->manifest, L->manifest_size, &m, &ml);
    if (!rc)
        rc = remote_blob_read(r, L->info, L->info_size, &info, &il);
    if (!rc)
        rc = remote_blob_read(r, L->index, L->index_size, &ix, &xl);
    if (!rc)
        rc = pk_index_parse(ix, xl, 1u << 23, 64u << 20, &x);
    if (!rc && x.npacks != L->npacks)
        rc = -74;
    static char buf[64 << 20];
    for (size_t c = 0; !rc && c < x.nchunks; c++) {
        const pk_entry *e = &x.chunks[c];
        rc = remote_chunk_get(r, a->packs[L->first_pack + e->pack], e->offset, e->clen, e->ulen,
                              e->digest, buf);
        (*chunks)++;
    }
    pk_index_free(&x);
    free(m), free(info), free(ix);
    return rc;
}

static int verify(remote *r, const char *tag)
{
    char *body = NULL, digest[72];
    size_t len;
    remote_artifact a = {0};
    int rc = remote_manifest_get(r, tag, &body, &len, digest);
    if (!rc)
        rc = remote_artifact_parse(body, len, &a);
    uint64_t chunks = 0;
    for (size_t i = 0; !rc && i < a.nlayers; i++)
        rc = verify_layer(r, &a, i, &chunks);
    if (!rc)
        printf("%zu layers, %llu chunks verified, top %s\n", a.nlayers, (unsigned long long)chunks,
               a.top.hex);
    remote_artifact_free(&a);
    free(body);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--verify")) {
        remote_ref ref;
        remote *r = NULL;
        remote_opts o = {0};
        int rc = remote_ref_parse(argv[2], 1, &ref);
        if (!rc && !(rc = remote_open(&ref, &o, 0, &r)))
            rc = verify(r, argv[3]);
        if (rc)
            fprintf(stderr, "remote_get: %s\n", remote_error());
        remote_close(r);
        if (!rc || ref.host)
            remote_ref_free(&ref);
        return rc ? 1 : 0;
    }
    remote_opts o = {0};
    if (argc > 1 && !strcmp(argv[1], "--insecure")) {
        o.insecure = 1;
        argv++, argc--;
    }
    if (argc != 3 && argc != 5) {
        fprintf(stderr, "usage: remote_get [--insecure] HOST/REPO sha256:HEX [OFFSET LENGTH]\n");
        return 2;
    }
    remote_ref ref;
    remote *r = NULL;
    uint64_t off = argc == 5 ? strtoull(argv[3], NULL, 10) : 0;
    uint64_t len = argc == 5 ? strtoull(argv[4], NULL, 10) : 0;
    int rc = remote_ref_parse(argv[1], 1, &ref);
    if (!rc)
        rc = remote_open(&ref, &o, 0, &r);
    if (!rc)
        rc = remote_blob_get(r, argv[2], off, len, 1ull << 32, to_stdout, NULL);
    if (rc)
        fprintf(stderr, "remote_get: %s\n", remote_error());
    remote_close(r);
    if (ref.host)
        remote_ref_free(&ref);
    return rc ? 1 : 0;
}
