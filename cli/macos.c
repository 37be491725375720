/*
 * create macos NAME --ipsw FILE|latest [--disk-size N] [--cpus N] [--memory M]
 *
 * A macOS VM from a restore image (vz driver, Apple silicon): `latest`
 * asks the framework for the newest image this Mac supports and downloads
 * it once into the store's cache (resumable). The bundle is made in a
 * scratch directory of the store, macOS is installed into it, and it
 * becomes a root layer tagged NAME; on any failure nothing is left.
 */
#define _GNU_SOURCE
#include "cli.h"

#include "../remote/remote.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_DISK "64G"

/* "80G", "512M", "1T" (binary units, "GiB" too), or bytes */
static int parse_disk_size(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        int shift;
    } units[] = {{"", 0},  {"K", 10},   {"M", 20},   {"G", 30},   {"T", 40},
                 {"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40}};
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    int shift = -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0] && shift < 0; i++)
        if (!strcasecmp(end, units[i].suffix))
            shift = units[i].shift;
    if (errno || end == s || *s == '-' || shift < 0 || v == 0 || (shift && v > (UINT64_MAX >> shift)))
        return cli_fail("--disk-size %s: a size such as 80G, 512M or 1T", s);
    *out = (uint64_t)v << shift;
    return 0;
}

/* a bar on a terminal, nothing when piped */
static void install_bar(void *ctx, const char *what, uint64_t done, uint64_t total)
{
    cli_progress_state *p = ctx;
    if (!p->tty || !total)
        return;
    int pct = (int)(done * 100 / total), fill = pct / 5;
    char bar[21];
    for (int i = 0; i < 20; i++)
        bar[i] = i < fill ? '#' : '-';
    bar[20] = 0;
    fprintf(stderr, "\r\033[K%s [%s] %3d%%", what, bar, pct);
    if (done >= total)
        fputc('\n', stderr);
}

/* the cache file for url: its last path component, if it is a plain name */
static char *cache_path(store *st, const char *url)
{
    char *dir = boot_cache_dir(st), *path = NULL;
    if (!dir) {
        cli_failed(err_pass());
        return NULL;
    }
    size_t n = strcspn(url, "?#");
    const char *base = url + n;
    while (base > url && base[-1] != '/')
        base--;
    size_t len = (size_t)(url + n - base);
    int plain = len > 0 && len < 200 && base[0] != '.';
    for (size_t i = 0; plain && i < len; i++)
        plain = isalnum((unsigned char)base[i]) || strchr("._-", base[i]);
    if (!plain)
        cli_fail("%s: the URL ends in no file name to keep the download under in the cache", url);
    else if (asprintf(&path, "%s/%.*s", dir, (int)len, base) < 0)
        path = NULL;
    free(dir);
    return path;
}

/* --ipsw latest: the newest image this Mac supports, downloaded once */
static char *latest_ipsw(store *st, const char *driver)
{
    char *url = NULL;
    int rc = boot_macos_latest(driver, &url);
    if (rc) {
        cli_failed(rc);
        return NULL;
    }
    char *path = cache_path(st, url);
    if (path) {
        int cached = access(path, F_OK) == 0;
        cli_progress_state ps = {.tty = isatty(2)};
        if (ps.tty) /* progress, like the bars: quiet when piped */
            fprintf(stderr, "strata: latest macOS for this Mac: %s%s\n", url,
                    cached ? " (in the cache)" : "");
        if ((rc = remote_download(url, path, cli_progress, &ps))) {
            cli_failed(rc);
            free(path);
            path = NULL;
        }
    }
    free(url);
    return path;
}

typedef struct {
    const char *name, *ipsw, *disk, *cpus, *memory, *driver, *message;
} macos_args;

static int parse_args(int argc, char **argv, macos_args *a, boot_macos_opts *o)
{
    cli_opt opts[] = {{"--ipsw", 1, &a->ipsw, NULL},       {"--disk-size", 1, &a->disk, NULL},
                      {"--cpus", 1, &a->cpus, NULL},       {"--memory", 1, &a->memory, NULL},
                      {"--driver", 1, &a->driver, NULL},   {"-m", 1, &a->message, NULL}};
    char *pos[1];
    int n;
    if (cli_parse(argc, argv, opts, sizeof opts / sizeof opts[0], pos, 1, &n, "create") ||
        cli_need(n, 1, "create"))
        return 1;
    a->name = pos[0];
    if (!a->ipsw)
        return cli_fail("create macos %s: --ipsw FILE or --ipsw latest is needed", a->name);
    if (!store_tag_valid(a->name))
        return cli_fail("create macos: '%s' is not a valid tag name", a->name);
    unsigned long cpus = 0;
    if (a->cpus && cli_parse_uint("--cpus", a->cpus, 64, &cpus))
        return 1;
    o->cpus = (unsigned)cpus;
    if (a->memory && cli_parse_memory(a->memory, &o->memory_mib))
        return 1;
    return parse_disk_size(a->disk ? a->disk : DEFAULT_DISK, &o->disk_bytes);
}

/* install into a scratch bundle, then import it as a root layer tagged NAME */
static int install_and_import(store *st, const macos_args *a, boot_macos_opts *o)
{
    store_scratch *sc = NULL;
    char *bundle = NULL;
    int rc = store_scratch_make(st, "create-macos", &sc);
    if (rc)
        rc = cli_failed(rc);
    if (!rc && (asprintf(&bundle, "%s/bundle", store_scratch_path(sc)) < 0 || mkdir(bundle, 0755) < 0))
        rc = cli_fail("%s: %s", store_scratch_path(sc), strerror(errno));
    cli_progress_state ps = {.tty = isatty(2)};
    o->bundle_dir = bundle;
    o->progress = install_bar;
    o->note = ps.tty ? cli_note : NULL; /* which build it is: progress, quiet when piped */
    o->ctx = &ps;
    if (!rc && (rc = boot_create_macos(o)))
        rc = cli_failed(rc);
    cli_progress_state ips = {.tty = isatty(2)};
    store_commit_opts co = {.tag = a->name, .message = a->message ? a->message : "create macos",
                            .progress = cli_progress, .progress_ctx = &ips, .note = cli_note};
    store_commit_result r;
    if (!rc && (rc = store_import(st, bundle, &co, &r)))
        rc = cli_failed(rc);
    if (!rc)
        printf("%s\n", r.id.hex);
    free(bundle);
    store_scratch_drop(sc);
    return rc;
}

int cli_create_macos(int argc, char **argv)
{
    macos_args a = {0};
    boot_macos_opts o = {0};
    if (parse_args(argc, argv, &a, &o))
        return 1;
    o.driver = a.driver;
    store *st;
    if (cli_open_store(&st))
        return 1;
    store_id existing;
    int rc = 0;
    if (store_resolve(st, a.name, &existing) == 0)
        rc = cli_fail("create macos: tag %s already names layer %.12s; untag it or pick another name",
                      a.name, existing.hex);
    char *ipsw = NULL;
    if (!rc && !strcmp(a.ipsw, "latest") && !(ipsw = latest_ipsw(st, a.driver)))
        rc = 1;
    o.ipsw = ipsw ? ipsw : a.ipsw;
    if (!rc)
        rc = install_and_import(st, &a, &o);
    free(ipsw);
    store_close(st);
    return rc;
}
