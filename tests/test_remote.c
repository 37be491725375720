/*
 * Unit tests of remote/ that need no registry: reference parsing, base64,
 * the deterministic cut into packs and the chunk index layout. The
 * registry-facing parts are tested by tests/remote.sh against real
 * registries.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../remote/pack.h"

static void ref_ok(const char *text, const char *host, const char *repo, const char *tag,
                   const char *digest)
{
    remote_ref r;
    assert_int_equal(remote_ref_parse(text, 0, &r), 0);
    assert_string_equal(r.host, host);
    assert_string_equal(r.repo, repo);
    if (tag)
        assert_string_equal(r.tag, tag);
    else
        assert_null(r.tag);
    if (digest)
        assert_string_equal(r.digest, digest);
    else
        assert_null(r.digest);
    remote_ref_free(&r);
}

static void ref_bad(const char *text, const char *words)
{
    remote_ref r;
    assert_int_equal(remote_ref_parse(text, 0, &r), -22);
    assert_non_null(strstr(remote_error(), words));
    assert_null(strchr(remote_error(), '\n'));
}

#define D64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_refs(void **state)
{
    (void)state;
    ref_ok("localhost:5000/x:y", "localhost:5000", "x", "y", NULL);
    ref_ok("localhost/x", "localhost", "x", NULL, NULL);
    ref_ok("ghcr.io/acme/macos:xcode16", "ghcr.io", "acme/macos", "xcode16", NULL);
    ref_ok("127.0.0.1:5000/a/b-c__d.e", "127.0.0.1:5000", "a/b-c__d.e", NULL, NULL);
    ref_ok("reg.local/ci@sha256:" D64, "reg.local", "ci", NULL, "sha256:" D64);
    ref_ok("reg.local/ci:warm@sha256:" D64, "reg.local", "ci", "warm", "sha256:" D64);
    ref_ok("[::1]:5000/x:y", "[::1]:5000", "x", "y", NULL);
    ref_bad("vm:v1", "not a remote reference");
    ref_bad("macos/base:v1", "not a remote reference"); /* no default registry */
    ref_bad("ghcr.io/Acme/x:y", "repository name");
    ref_bad("ghcr.io/a//b", "repository name");
    ref_bad("ghcr.io/a-/b", "repository name");
    ref_bad("ghcr.io/a___b", "repository name");
    ref_bad("ghcr.io/x:-bad", "not a valid tag");
    ref_bad("ghcr.io/x@sha256:abc", "digest");
    ref_bad("ghcr.io/", "repository name");
    remote_ref r;
    assert_int_equal(remote_ref_parse("ghcr.io/x:y", 1, &r), -22);
    assert_non_null(strstr(remote_error(), "without a tag"));
    assert_int_equal(remote_ref_parse("ghcr.io/x", 1, &r), 0);
    remote_ref_free(&r);
}

static void local_tag_is(const char *text, const char *want)
{
    remote_ref r;
    char out[160];
    assert_int_equal(remote_ref_parse(text, 0, &r), 0);
    assert_int_equal(remote_ref_local_tag(&r, out, sizeof out), 0);
    assert_string_equal(out, want);
    assert_true(store_tag_valid(out));
    remote_ref_free(&r);
}

static void test_local_tags(void **state)
{
    (void)state;
    local_tag_is("ghcr.io/acme/macos:xcode16", "ghcr.io_acme_macos:xcode16");
    local_tag_is("127.0.0.1:5000/vm:v1", "127.0.0.1_5000_vm:v1");
    local_tag_is("[::1]:5000/a/b:T_1", "1__5000_a_b:T_1");
    local_tag_is("Registry.Example.COM/x:y", "registry.example.com_x:y");
    remote_ref r;
    char out[160];
    assert_int_equal(remote_ref_parse("ghcr.io/x@sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", 0, &r), 0);
    assert_int_equal(remote_ref_local_tag(&r, out, sizeof out), -EINVAL);
    assert_non_null(strstr(remote_error(), "-t"));
    remote_ref_free(&r);
}

static void test_base64(void **state)
{
    (void)state;
    const char *in[] = {"", "a", "ab", "abc", "user:pa:ss", "alice:s3cret-PW-42"};
    for (size_t i = 0; i < sizeof in / sizeof *in; i++) {
        char *e = base64_encode(in[i], strlen(in[i]));
        size_t n;
        char *d = (char *)base64_decode(e, &n);
        assert_non_null(d);
        assert_int_equal(n, strlen(in[i]));
        assert_memory_equal(d, in[i], n);
        free(e);
        free(d);
    }
    size_t n;
    char *e = base64_encode("alice:pw", 8);
    assert_string_equal(e, "YWxpY2U6cHc=");
    free(e);
    assert_null(base64_decode("abc", &n)); /* not a multiple of 4 */
    assert_null(base64_decode("ab!d", &n));
    assert_null(base64_decode("a=bc", &n)); /* padding only at the end */
    assert_null(base64_decode("ab==abcd", &n));
    assert_null(base64_decode("YWxp\nY2U=", &n)); /* no whitespace */
    unsigned char *d = base64_decode("YWxpY2U6cHc=", &n);
    assert_non_null(d);
    assert_int_equal(n, 8);
    assert_string_equal((char *)d, "alice:pw");
    free(d);
    assert_true(rm_host_loopback("127.0.0.1:5000"));
    assert_true(rm_host_loopback("localhost"));
    assert_true(rm_host_loopback("[::1]:80"));
    assert_false(rm_host_loopback("localhost.evil.com"));
    assert_false(rm_host_loopback("ghcr.io"));
}

/* a layer of one file whose chunks carry digests numbered from seeds (0: zero chunk) */
static store_layer *fake_layer(uint64_t size, uint32_t chunk, const int *seeds)
{
    store_layer *l = calloc(1, sizeof *l);
    l->nfiles = 1;
    l->files = calloc(1, sizeof *l->files);
    store_file *f = &l->files[0];
    f->name = strdup("Disk.img");
    f->size = size;
    f->mode = 0644;
    f->chunk_size = chunk;
    f->nchunks = (size + chunk - 1) / chunk;
    f->data = calloc(f->nchunks, sizeof *f->data);
    for (size_t i = 0; i < f->nchunks; i++)
        if (seeds[i]) {
            store_chunk *c = &f->data[f->ndata++];
            c->index = i;
            memset(c->digest, seeds[i], 32);
        }
    return l;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void test_plan_and_index(void **state)
{
    (void)state;
    uint32_t big = 64u << 20; /* 64 MiB chunks: 9 of them pass the 512 MiB pack bound */
    int base_seeds[12] = {1, 2, 0, 3, 4, 5, 6, 7, 8, 9, 10, 1}; /* seed 1 twice */
    int child_seeds[12] = {1, 2, 0, 3, 4, 5, 6, 7, 8, 9, 11, 12};
    store_layer *chain[2] = {fake_layer(12ull * big - 100, big, base_seeds),
                             fake_layer(12ull * big - 100, big, child_seeds)};
    pk_plan p;
    assert_int_equal(pk_plan_make(chain, 2, &p), 0);
    /* base: 10 distinct data chunks (the zero one and the repeat skipped) */
    assert_int_equal(p.layers[0].nchunks, 10);
    assert_int_equal(p.layers[0].npacks, 2); /* 8 x 64 MiB fill 512 MiB exactly */
    assert_int_equal(p.packs[0].count, 8);
    assert_int_equal(p.packs[1].count, 2);
    /* child: only 11 and 12 are new; 12 is the short tail */
    assert_int_equal(p.layers[1].nchunks, 2);
    assert_int_equal(p.layers[1].npacks, 1);
    assert_int_equal(p.layers[1].chunks[0].chunk, 10);
    assert_int_equal(p.layers[1].chunks[1].ulen, big - 100);
    assert_int_equal(p.data_chunks, 12);

    /* the index of the child, with made-up compressed sizes */
    p.layers[1].chunks[0].clen = 1000;
    p.layers[1].chunks[1].clen = 2000;
    p.packs[2].csize = 3000;
    memset(p.packs[2].digest, 0xab, 32);
    sbuf b = {0};
    assert_int_equal(pk_index_make(&p, 1, &b), 0);
    assert_int_equal(b.len, INDEX_HEADER + INDEX_PACK_ENTRY + 2 * INDEX_CHUNK_ENTRY);
    const unsigned char *u = (const unsigned char *)b.data;
    assert_memory_equal(u, "STRATACI", 8);
    assert_int_equal(get32(u + 8), 1);
    assert_int_equal(get32(u + 12), 1);
    assert_int_equal(get64(u + 16), 2);
    assert_int_equal(u[24], 0xab);
    assert_int_equal(get64(u + 24 + 32), 3000);
    const unsigned char *c = u + INDEX_HEADER + INDEX_PACK_ENTRY;
    assert_int_equal(c[0], 11);
    assert_int_equal(get32(c + 32), 0);        /* pack */
    assert_int_equal(get32(c + 36), big);      /* ulen */
    assert_int_equal(get64(c + 40), 0);        /* offset */
    assert_int_equal(get32(c + 48), 1000);     /* clen */
    c += INDEX_CHUNK_ENTRY;
    assert_int_equal(c[0], 12);
    assert_int_equal(get64(c + 40), 1000);
    assert_int_equal(get32(c + 48), 2000);
    free(b.data);

    /* the same chain cut again gives the same plan */
    store_layer *again[2] = {fake_layer(12ull * big - 100, big, base_seeds),
                             fake_layer(12ull * big - 100, big, child_seeds)};
    pk_plan q;
    assert_int_equal(pk_plan_make(again, 2, &q), 0);
    assert_int_equal(q.npacks, p.npacks);
    for (size_t i = 0; i < q.npacks; i++)
        assert_int_equal(q.packs[i].count, p.packs[i].count);
    pk_plan_free(&q);
    pk_plan_free(&p);
}

/* an index for two packs of chunks (pack sizes follow the clens) */
static void make_index(sbuf *b, pk_plan *p)
{
    int seeds[4] = {1, 2, 3, 4};
    store_layer *chain[1] = {fake_layer(4ull << 20, 1u << 20, seeds)};
    assert_int_equal(pk_plan_make(chain, 1, p), 0);
    /* force two packs by hand: 3 chunks, then 1 */
    p->packs[0].count = 3;
    pk_pack extra = {.layer = 0, .first = 3, .count = 1};
    p->packs = realloc(p->packs, 2 * sizeof *p->packs);
    p->packs[1] = extra;
    p->npacks = 2;
    p->layers[0].npacks = 2;
    for (size_t i = 0; i < 4; i++)
        p->layers[0].chunks[i].clen = 100 + (uint32_t)i;
    p->packs[0].csize = 100 + 101 + 102;
    p->packs[1].csize = 103;
    assert_int_equal(pk_index_make(p, 0, b), 0);
}

static void bad_index(const sbuf *good, size_t at, unsigned char value, uint64_t max_chunks)
{
    unsigned char *copy = malloc(good->len);
    memcpy(copy, good->data, good->len);
    copy[at] = value;
    pk_index x;
    assert_int_equal(pk_index_parse(copy, good->len, max_chunks, 1u << 20, &x), -74 /* EBADMSG */);
    assert_non_null(strstr(remote_error(), "chunk index"));
    free(copy);
}

static void test_index_parse(void **state)
{
    (void)state;
    sbuf b = {0};
    pk_plan p;
    make_index(&b, &p);
    pk_index x;
    assert_int_equal(pk_index_parse(b.data, b.len, 4, 1u << 20, &x), 0);
    assert_int_equal(x.npacks, 2);
    assert_int_equal(x.nchunks, 4);
    assert_int_equal(x.pack_size[0], 303);
    assert_int_equal(x.chunks[2].offset, 201);
    assert_int_equal(x.chunks[3].pack, 1);
    assert_int_equal(x.chunks[3].offset, 0);
    assert_int_equal(x.chunks[3].digest[0], 4);
    pk_index_free(&x);
    /* the cache path applies it back onto the same plan */
    assert_int_equal(pk_index_apply(&p, 0, b.data, b.len), 0);
    assert_true(p.packs[1].known);

    size_t chunks = INDEX_HEADER + 2 * INDEX_PACK_ENTRY;
    bad_index(&b, 0, 'X', 4);                            /* magic */
    bad_index(&b, 8, 2, 4);                              /* version */
    bad_index(&b, 16, 5, 4);                             /* more chunks than the size holds */
    bad_index(&b, 24 + 32, 0, 4);                        /* first pack's size */
    bad_index(&b, chunks + 32, 1, 4);                    /* first chunk in pack 1 */
    bad_index(&b, chunks + INDEX_CHUNK_ENTRY + 40, 7, 4); /* an offset gap */
    bad_index(&b, chunks + 38, 0x20, 4);                 /* ulen over the chunk size */
    bad_index(&b, chunks + 48, 0, 4);                    /* clen 0 ... */
    bad_index(&b, chunks + 51, 0x7f, 4);                 /* ... and absurd */
    pk_index x2;
    assert_int_equal(pk_index_parse(b.data, b.len, 3, 1u << 20, &x2), -74); /* layer has 3 */
    assert_int_equal(pk_index_parse(b.data, b.len - 1, 4, 1u << 20, &x2), -74); /* truncated */
    assert_int_equal(pk_index_parse(b.data, 10, 4, 1u << 20, &x2), -74);
    free(b.data);
    pk_plan_free(&p);
}

#define DA "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define DB "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define DC "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
#define DESC(mt, d, n) "{\"mediaType\":\"" mt "\",\"digest\":\"" d "\",\"size\":" #n "}"
#define HEAD_OK "{\"schemaVersion\":2,\"mediaType\":\"" REMOTE_MT_OCI "\",\"artifactType\":\"" \
    REMOTE_ARTIFACT_TYPE "\",\"config\":" DESC(REMOTE_MT_MANIFEST, DB, 10) ",\"layers\":["
#define GROUP(d) DESC(REMOTE_MT_MANIFEST, d, 10) "," DESC(REMOTE_MT_INFO, DA, 5) "," \
    DESC(REMOTE_MT_INDEX, DA, 24)

static void artifact_bad(const char *text, const char *words)
{
    remote_artifact a;
    assert_int_equal(remote_artifact_parse(text, strlen(text), &a), -74);
    assert_non_null(strstr(remote_error(), words));
}

static void test_artifact_parse(void **state)
{
    (void)state;
    const char *ok = HEAD_OK GROUP(DA) "," DESC(REMOTE_MT_PACK, DA, 100) "," GROUP(DB) ","
        DESC(REMOTE_MT_PACK, DB, 7) "," DESC(REMOTE_MT_PACK, DC, 8) "]}";
    remote_artifact a;
    assert_int_equal(remote_artifact_parse(ok, strlen(ok), &a), 0);
    assert_int_equal(a.nlayers, 2);
    assert_int_equal(a.npacks, 3);
    assert_int_equal(a.layers[0].npacks, 1);
    assert_int_equal(a.layers[1].first_pack, 1);
    assert_int_equal(a.layers[1].npacks, 2);
    assert_int_equal(a.pack_sizes[2], 8);
    assert_string_equal(a.top.hex, DB + 7);
    assert_false(a.host_bound);
    assert_string_equal(a.guest.os, ""); /* no annotations: nothing known, nothing refused */
    remote_artifact_free(&a);

    /* the guest annotations */
    const char *mac = HEAD_OK GROUP(DB) "],\"annotations\":{\"" REMOTE_ANN_OS "\":\"macos\",\""
        REMOTE_ANN_ARCH "\":\"arm64\",\"" REMOTE_ANN_MACOS_MIN "\":\"13.0.0\",\""
        REMOTE_ANN_MACOS_DATA_REP "\":\"1\"}}";
    assert_int_equal(remote_artifact_parse(mac, strlen(mac), &a), 0);
    assert_string_equal(a.guest.os, "macos");
    assert_string_equal(a.guest.arch, "arm64");
    assert_string_equal(a.guest.macos_min, "13.0.0");
    assert_int_equal(a.guest.macos_data_rep, 1);
    remote_artifact_free(&a);
    artifact_bad(HEAD_OK GROUP(DB) "],\"annotations\":{\"" REMOTE_ANN_OS "\":\"Mac OS\"}}", "malformed");
    artifact_bad(HEAD_OK GROUP(DB) "],\"annotations\":{\"" REMOTE_ANN_MACOS_MIN "\":\"13-beta\"}}",
                 "not a version");
    artifact_bad(HEAD_OK GROUP(DB) "],\"annotations\":{\"" REMOTE_ANN_MACOS_DATA_REP "\":\"0\"}}",
                 "not a version number");
    /* repeats a hostile registry could serve: a cycle, a pack twice */
    artifact_bad(HEAD_OK GROUP(DB) "," GROUP(DA) "," GROUP(DB) "]}", "a layer is listed twice");
    artifact_bad(HEAD_OK GROUP(DA) "," DESC(REMOTE_MT_PACK, DC, 5) "," GROUP(DB) ","
                 DESC(REMOTE_MT_PACK, DC, 5) "]}", "a pack is listed twice");

    artifact_bad("{", "not JSON");
    artifact_bad("{\"schemaVersion\":2,\"mediaType\":\"" REMOTE_MT_OCI "\",\"layers\":[]}",
                 "artifactType");
    artifact_bad(HEAD_OK GROUP(DA) "]}", "the last layer is not the config");
    artifact_bad(HEAD_OK DESC(REMOTE_MT_PACK, DA, 1) "," GROUP(DB) "]}", "pack comes before");
    artifact_bad(HEAD_OK DESC(REMOTE_MT_MANIFEST, DB, 10) "," DESC(REMOTE_MT_INDEX, DA, 5) ","
                 DESC(REMOTE_MT_INFO, DA, 24) "]}", "followed by its info and index");
    artifact_bad(HEAD_OK GROUP(DB) "," DESC(REMOTE_MT_PACK, DA, 0) "]}", "size is out of bounds");
    artifact_bad(HEAD_OK GROUP(DB) "," DESC(REMOTE_MT_PACK, "sha256:xyz", 5) "]}", "descriptor");
    artifact_bad(HEAD_OK GROUP(DB) ",{\"mediaType\":\"x\"}]}", "descriptor");
}

/* the chunk size a push starts from, per registry (docs/remote.md "Transport") */
static void test_upload_plan(void **state)
{
    (void)state;
    remote_upload_plan p;
    struct {
        const char *host;
        uint64_t chunk;
    } cases[] = {
        {"ghcr.io", 4u << 20},
        {"registry.example.com:5000", 4u << 20},
        {"123456789012.dkr.ecr.eu-west-1.amazonaws.com", 8u << 20},
        {"gcr.io", 0},
        {"eu.gcr.io", 0},
        {"europe-west1-docker.pkg.dev", 0},
        {"notgcr.io", 4u << 20},      /* a suffix, not a domain */
        {"gcr.io.example.com", 4u << 20},
        {"x.dkr.ecr.example.com", 4u << 20},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        remote_upload_plan_init(&p, cases[i].host, 0);
        if (p.chunk != cases[i].chunk || p.fixed)
            fail_msg("%s: chunk %llu, fixed %d", cases[i].host, (unsigned long long)p.chunk, p.fixed);
    }
    remote_upload_plan_init(&p, "gcr.io", 1 << 20); /* the user's size wins, and stays */
    assert_int_equal(p.chunk, 1 << 20);
    assert_true(p.fixed);
    remote_upload_plan_init(&p, "ghcr.io", REMOTE_CHUNK_MONOLITHIC);
    assert_int_equal(p.chunk, 0);
    assert_true(p.fixed);
}

/* loopback is a literal 127.0.0.0/8 address, [::1] or localhost, with an
 * optional port (and a URL's path): never a name that merely starts so */
static void test_loopback(void **state)
{
    (void)state;
    const char *yes[] = {"127.0.0.1", "127.0.0.1:5000", "127.1.2.3", "127.255.255.255:1",
                         "localhost", "localhost:5000", "LOCALHOST", "[::1]", "[::1]:5000",
                         "127.0.0.1:5000/token", "localhost/token", "localhost:5000?service=x"};
    const char *no[] = {"127.example.com", "127.0.0.1.example.com", "127.0.0.1.nip.io:80",
                        "localhost.evil.com", "localhost.evil.com:5000", "localhostx",
                        "127.1", "127.0.0", "127.0.0.256", "127.0.0.1:", "127.0.0.1:5000x",
                        "127.0.0.1@evil.com", "127.0.0.1:80@evil.com", "128.0.0.1",
                        "1127.0.0.1", "[::1].evil.com", "[::2]", "ghcr.io", "", "::1",
                        "0x7f.0.0.1", "127.0.0.1:123456"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        if (!rm_host_loopback(yes[i]))
            fail_msg("'%s' should be loopback", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof *no; i++)
        if (rm_host_loopback(no[i]))
            fail_msg("'%s' should not be loopback", no[i]);
}

/* Docker Hub's names as docker reads them: the API host, library/ for a
 * one-part name, docker's key for the credentials, docker.io in local tags */
static void test_hub_refs(void **state)
{
    (void)state;
    ref_ok("docker.io/acme/vm:v1", "registry-1.docker.io", "acme/vm", "v1", NULL);
    ref_ok("docker.io/vm:v1", "registry-1.docker.io", "library/vm", "v1", NULL);
    ref_ok("index.docker.io/vm", "registry-1.docker.io", "library/vm", NULL, NULL);
    ref_ok("registry-1.docker.io/library/vm:v1", "registry-1.docker.io", "library/vm", "v1", NULL);
    ref_ok("docker.io/a/b/c:t", "registry-1.docker.io", "a/b/c", "t", NULL);
    /* only Docker Hub gets library/ */
    ref_ok("ghcr.io/vm:v1", "ghcr.io", "vm", "v1", NULL);
    ref_ok("mirror.docker.io.example/vm:v1", "mirror.docker.io.example", "vm", "v1", NULL);
    local_tag_is("docker.io/vm:v1", "docker.io_library_vm:v1");
    local_tag_is("index.docker.io/acme/vm:v1", "docker.io_acme_vm:v1");
    local_tag_is("registry-1.docker.io/acme/vm:v1", "docker.io_acme_vm:v1");
    assert_string_equal(rm_cred_server("docker.io"), "https://index.docker.io/v1/");
    assert_string_equal(rm_cred_server("registry-1.docker.io"), "https://index.docker.io/v1/");
    assert_string_equal(rm_cred_server("ghcr.io"), "ghcr.io");
    assert_string_equal(rm_api_host("index.docker.io"), "registry-1.docker.io");
    assert_string_equal(rm_api_host("127.0.0.1:5000"), "127.0.0.1:5000");
}

/* a config.json in a new directory; the directory, malloc'd */
static char *config_dir(const char *json)
{
    char tmpl[] = "/tmp/strata-test-creds.XXXXXX", *path = NULL;
    assert_non_null(mkdtemp(tmpl));
    assert_true(asprintf(&path, "%s/config.json", tmpl) > 0);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(json, f);
    fclose(f);
    free(path);
    return strdup(tmpl);
}

static void config_drop(char *dir)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/config.json", dir) > 0);
    unlink(path);
    rmdir(dir);
    free(path);
    free(dir);
}

static void cred_is(const char *dir, const char *host, int kind, const char *user, const char *secret)
{
    remote_opts o = {.docker_dir = dir};
    rm_cred c;
    assert_int_equal(rm_cred_lookup(host, &o, &c), 0);
    assert_int_equal(c.kind, kind);
    assert_string_equal(c.user, user);
    assert_string_equal(c.secret, secret);
    rm_cred_clear(&c);
}

/* every kind of credential docker's config.json holds, each for what it is */
static void test_cred_kinds(void **state)
{
    (void)state;
    char *dir = config_dir(
        "{\"auths\": {"
        "\"https://index.docker.io/v1/\": {\"auth\": \"Ym9iOnB3\"},"                 /* bob:pw */
        "\"idt.example\": {\"auth\": \"Ym9iOg==\", \"identitytoken\": \"rt-1\"},"    /* bob: */
        "\"https://rt.example\": {\"registrytoken\": \"bearer-1\", \"identitytoken\": \"rt-2\"},"
        "\"bad.example\": {\"auth\": \"bm9jb2xvbg==\"}}}");                           /* nocolon */
    cred_is(dir, "docker.io", RM_CRED_PASSWORD, "bob", "pw");
    cred_is(dir, "registry-1.docker.io", RM_CRED_PASSWORD, "bob", "pw");
    cred_is(dir, "idt.example", RM_CRED_IDENTITY_TOKEN, "<token>", "rt-1");
    cred_is(dir, "rt.example", RM_CRED_REGISTRY_TOKEN, "", "bearer-1");
    remote_opts o = {.docker_dir = dir};
    rm_cred c;
    assert_int_equal(rm_cred_lookup("none.example", &o, &c), -ENOENT);
    assert_int_equal(rm_cred_lookup("bad.example", &o, &c), -EINVAL);
    assert_null(strstr(remote_error(), "nocolon"));
    config_drop(dir);
}

/* packs for a chain whose layers add sizes[] bytes, under pk_pack_limit */
static uint64_t chain_packs(const uint64_t *sizes, size_t n)
{
    uint64_t d = 0, packs = 0;
    for (size_t i = 0; i < n; i++) {
        d += sizes[i];
        uint64_t s = pk_pack_limit(d);
        packs += (sizes[i] + s - 1) / s;
    }
    return packs;
}

/* the pack size grows with the chain's data only past 32 GiB, to 8 GiB, and
 * a 1 TiB chain of up to 61 layers lists at most 500 descriptors */
static void test_pack_limit(void **state)
{
    (void)state;
    const uint64_t MiB = 1ull << 20, GiB = 1ull << 30, TiB = 1ull << 40;
    assert_int_equal(pk_pack_limit(0), 512 * MiB);
    assert_int_equal(pk_pack_limit(32 * GiB), 512 * MiB); /* as every push before */
    assert_int_equal(pk_pack_limit(32 * GiB + 1), 1 * GiB);
    assert_int_equal(pk_pack_limit(100 * GiB), 2 * GiB);
    assert_int_equal(pk_pack_limit(512 * GiB), 8 * GiB);
    assert_int_equal(pk_pack_limit(4 * TiB), 8 * GiB); /* 8.6 GB compressed at most: < 10 GB */
    uint64_t one[] = {TiB};
    assert_true(3 + chain_packs(one, 1) <= 131);
    /* 61 layers cut at random, and the worst even cut, of 1 TiB */
    uint64_t sizes[61], left = TiB;
    srand(20);
    for (int t = 0; t < 200; t++) {
        left = TiB;
        for (size_t i = 0; i < 60; i++) { /* on average an even share of what is left */
            uint64_t r = (uint64_t)rand() << 31 | (uint64_t)rand();
            sizes[i] = r % (2 * left / (61 - i) + 1);
            sizes[i] = sizes[i] > left ? left : sizes[i];
            left -= sizes[i];
        }
        sizes[60] = left;
        assert_true(3 * 61 + chain_packs(sizes, 61) <= 500);
    }
    for (size_t i = 0; i < 32; i++)
        sizes[i] = 32 * GiB; /* every layer a whole number of packs: 256 */
    assert_int_equal(chain_packs(sizes, 32), 256);
}

/* boot profiles: reads become runs in first-read order; the blob round-trips
 * and every bound of decode holds */
static void test_profile_format(void **state)
{
    (void)state;
    store_id id;
    memset(id.hex, 'a', STORE_ID_HEX);
    id.hex[STORE_ID_HEX] = 0;
    const uint64_t reads[] = {5, 6, 7, 6, 100, 101, 0, 7, 8, 1, 2};
    remote_profile p, q;
    assert_int_equal(remote_profile_from_reads(&id, 128, 1234, reads, 11, &p), 0);
    /* 5-7, 100-101, 0, 8, 1-2: a chunk read again adds nothing, 8 follows 0 so starts a run */
    assert_int_equal(p.nruns, 5);
    assert_true(p.runs[0].first == 5 && p.runs[0].count == 3);
    assert_true(p.runs[1].first == 100 && p.runs[1].count == 2);
    assert_true(p.runs[2].first == 0 && p.runs[2].count == 1);
    assert_true(p.runs[3].first == 8 && p.runs[3].count == 1);
    assert_true(p.runs[4].first == 1 && p.runs[4].count == 2);
    char *blob;
    size_t len;
    assert_int_equal(remote_profile_encode(&p, &blob, &len), 0);
    assert_int_equal(len, 64 + 5 * 2);
    assert_int_equal(remote_profile_decode(blob, len, &id, 128, &q), 0);
    assert_int_equal(q.nruns, 5);
    assert_int_equal(q.ready_ms, 1234);
    assert_memory_equal(q.runs, p.runs, 5 * sizeof *p.runs);
    remote_profile_free(&q);
    assert_int_equal(remote_profile_decode(blob, len, NULL, 128, &q), 0); /* any layer */
    remote_profile_free(&q);
    assert_int_equal(remote_profile_decode(blob, len, &id, 129, &q), -EBADMSG);
    assert_int_equal(remote_profile_decode(blob, len - 1, &id, 128, &q), -EBADMSG);
    assert_int_equal(remote_profile_decode(blob, 63, &id, 128, &q), -EBADMSG);
    blob[10] = 1; /* flags */
    assert_int_equal(remote_profile_decode(blob, len, &id, 128, &q), -EBADMSG);
    free(blob);
    remote_profile_free(&p);
    const uint64_t past[] = {3, 128};
    assert_int_equal(remote_profile_from_reads(&id, 128, 0, past, 2, &p), -EINVAL);
    /* the largest index of a 64-bit disk: ten LEB128 bytes, decoded back */
    const uint64_t big[] = {UINT64_MAX - 1};
    assert_int_equal(remote_profile_from_reads(&id, UINT64_MAX, 0, big, 1, &p), 0);
    assert_int_equal(remote_profile_encode(&p, &blob, &len), 0);
    assert_int_equal(len, 64 + 10 + 1);
    assert_int_equal(remote_profile_decode(blob, len, &id, UINT64_MAX, &q), 0);
    assert_true(q.runs[0].first == UINT64_MAX - 1 && q.runs[0].count == 1);
    remote_profile_free(&q);
    remote_profile_free(&p);
    free(blob);
    /* more runs than the bound: refused when made */
    uint64_t *many = malloc((REMOTE_PROFILE_RUNS_MAX + 1) * sizeof *many);
    for (size_t i = 0; i <= REMOTE_PROFILE_RUNS_MAX; i++)
        many[i] = 2 * i;
    assert_int_equal(remote_profile_from_reads(&id, 1u << 20, 0, many, REMOTE_PROFILE_RUNS_MAX + 1, &p), -E2BIG);
    free(many);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upload_plan),
        cmocka_unit_test(test_refs),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_local_tags),
        cmocka_unit_test(test_plan_and_index),
        cmocka_unit_test(test_index_parse),
        cmocka_unit_test(test_artifact_parse),
        cmocka_unit_test(test_loopback),
        cmocka_unit_test(test_hub_refs),
        cmocka_unit_test(test_cred_kinds),
        cmocka_unit_test(test_pack_limit),
        cmocka_unit_test(test_profile_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
