/*
 * remote_get: fetch a blob, or a byte range of it, with remote_blob_get and
 * write it to stdout, so tests/remote.sh can check Range handling (206,
 * 200 with the whole blob, redirects) and digest checks against real
 * registries and proxies. A test tool, not installed.
 *
 * usage: remote_get [--insecure] HOST/REPO sha256:HEX [OFFSET LENGTH]
 */
#include "../remote/remote.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int to_stdout(void *ctx, const void *data, size_t len)
{
    (void)ctx;
    return fwrite(data, 1, len, stdout) == len ? 0 : -5;
}

int main(int argc, char **argv)
{
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
