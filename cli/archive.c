/* Verbs that move layers as single files: export, and import of archives
 * and tart VMs (import of a bundle directory stays in layers.c). */
#define _GNU_SOURCE
#include "../archive/archive.h"
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int tty;
    double start, last;
    int shown;
} progress;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* bytes and rate on a terminal, four times a second; nothing when piped */
static void show_progress(void *ctx, const char *what, uint64_t done, uint64_t total)
{
    progress *p = ctx;
    double t = now();
    if (!p->tty || t - p->last < 0.25)
        return;
    p->last = t;
    p->shown = 1;
    char a[32], b[32], r[32];
    double secs = t - p->start > 0.001 ? t - p->start : 0.001;
    if (total)
        fprintf(stderr, "\r\033[K%s: %s of %s, %s/s", what, cli_human(done, a, sizeof a),
                cli_human(total, b, sizeof b), cli_human((uint64_t)((double)done / secs), r, sizeof r));
    else
        fprintf(stderr, "\r\033[K%s: %s, %s/s", what, cli_human(done, a, sizeof a),
                cli_human((uint64_t)((double)done / secs), r, sizeof r));
}

static void summary(progress *p, const char *what, const archive_stats *s, int exported)
{
    if (p->shown)
        fputc('\n', stderr);
    char a[32], b[32];
    double secs = now() - p->start;
    uint64_t data = exported ? s->bytes_in : s->bytes_out;
    uint64_t packed = exported ? s->bytes_out : s->bytes_in;
    fprintf(stderr, "strata: %s %.12s: %s of data %s %s (ratio %.2f), %zu layer%s, %.1f s\n", what,
            s->id.hex, cli_human(data, a, sizeof a), exported ? "into" : "from",
            cli_human(packed, b, sizeof b), packed ? (double)data / (double)packed : 0.0,
            s->layers, s->layers == 1 ? "" : "s", secs);
    if (s->host_bound)
        fprintf(stderr, "strata: it holds a saved state: resumable only on the host that made it\n");
}

/* NAME for NAME.bundle: the output file's name without .tar.zst, or the ref */
static char *default_name(const char *out, const char *ref)
{
    char *copy = strdup(strcmp(out, "-") ? out : ref);
    if (!copy)
        return NULL;
    char *name = strdup(strcmp(out, "-") ? basename(copy) : copy);
    free(copy);
    if (!name)
        return NULL;
    static const char *const ext[] = {".tar.zst", ".tzst", ".tar", ".zst"};
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++) {
        size_t n = strlen(name), e = strlen(ext[i]);
        if (n > e && !strcmp(name + n - e, ext[i])) {
            name[n - e] = 0;
            break;
        }
    }
    for (char *c = name; *c; c++)
        if (*c == ':' || *c == '/')
            *c = '-';
    return name;
}

/* Write to a temporary name beside out, then fsync and rename: a failed or
 * killed export never leaves a file that looks whole. */
static int export_to(store *st, const char *ref, const char *out, archive_export_opts *o,
                     archive_stats *s)
{
    if (!strcmp(out, "-")) {
        if (isatty(1))
            return cli_fail("export: refusing to write an archive to a terminal (redirect it, or "
                            "give a file)");
        int rc = archive_export(st, ref, 1, o, s);
        return rc ? cli_failed(rc) : 0;
    }
    atomic_file f;
    int rc = atomic_file_open(&f, out, 0644, 0);
    if (rc)
        return cli_failed(rc);
    if ((rc = archive_export(st, ref, f.fd, o, s))) {
        atomic_file_abort(&f);
        return cli_failed(rc);
    }
    rc = atomic_file_commit(&f);
    return rc ? cli_failed(rc) : 0;
}

static int cmd_export(int argc, char **argv)
{
    const char *since = NULL, *level = NULL, *threads = NULL, *name = NULL;
    int with_state = 0;
    cli_opt opts[] = {{"--since", 1, &since, NULL},     {"--with-state", 0, NULL, &with_state},
                      {"--level", 1, &level, NULL},     {"--threads", 1, &threads, NULL},
                      {"--name", 1, &name, NULL}};
    char *pos[2];
    int n;
    if (cli_parse(argc, argv, opts, 5, pos, 2, &n, "export") || cli_need(n, 2, "export"))
        return 1;
    unsigned long lv = 0, th = 0;
    if ((level && cli_parse_uint("--level", level, 19, &lv)) ||
        (threads && cli_parse_uint("--threads", threads, 256, &th)))
        return 1;
    if (level && lv < 1)
        return cli_fail("--level %s: zstd levels are 1 to 19", level);
    progress p = {.tty = isatty(2), .start = now()};
    char *dname = name ? NULL : default_name(pos[1], pos[0]);
    archive_export_opts o = {.name = name ? name : dname, .since = since, .with_state = with_state,
                             .level = (int)lv, .threads = (int)th, .progress = show_progress,
                             .ctx = &p, .note = cli_note};
    store *st;
    if (cli_open_store(&st)) {
        free(dname);
        return 1;
    }
    archive_stats s;
    int rc = export_to(st, pos[0], pos[1], &o, &s);
    store_close(st);
    free(dname);
    if (!rc)
        summary(&p, "exported", &s, 1);
    return rc;
}

int cli_import_is_archive(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--from-tart"))
            return 1;
        if (!strcmp(argv[i], "--chunk-size")) {
            i++;
            continue;
        }
        if (!strcmp(argv[i], "--"))
            continue;
        if (argv[i][0] == '-' && argv[i][1])
            continue;
        struct stat s; /* the first positional: a directory is a bundle */
        return !strcmp(argv[i], "-") || (stat(argv[i], &s) == 0 && !S_ISDIR(s.st_mode));
    }
    return 0;
}

static int import_tart(store *st, const char *dir, const archive_import_opts *o)
{
    store_commit_result r;
    int rc = archive_import_tart(st, dir, o, &r);
    if (rc)
        return cli_failed(rc);
    if (!r.reflinked)
        fprintf(stderr, "strata: note: this filesystem can't share blocks; the disk was copied\n");
    printf("%s\n", r.id.hex);
    return 0;
}

int cli_archive_import(int argc, char **argv)
{
    const char *tart = NULL;
    cli_opt opts[] = {{"--from-tart", 1, &tart, NULL}};
    char *pos[2];
    int n;
    if (cli_parse(argc, argv, opts, 1, pos, 2, &n, "import"))
        return 1;
    if (!tart && cli_need(n, 1, "import"))
        return 1;
    if (tart && n > 1)
        return cli_fail("import --from-tart takes one tag at most (import --from-tart DIR [TAG])");
    progress p = {.tty = isatty(2), .start = now()};
    archive_import_opts o = {.tag = tart ? (n ? pos[0] : NULL) : (n > 1 ? pos[1] : NULL),
                             .progress = show_progress, .ctx = &p, .note = cli_note};
    if (o.tag && !store_tag_valid(o.tag))
        return cli_fail("bad tag name '%s' (see 'strata help tag')", o.tag);
    store *st;
    if (cli_open_store(&st))
        return 1;
    int rc;
    if (tart) {
        rc = import_tart(st, tart, &o);
    } else {
        int fd = strcmp(pos[0], "-") ? open(pos[0], O_RDONLY | O_CLOEXEC) : 0;
        archive_stats s;
        if (fd < 0)
            rc = cli_fail("%s: %s", pos[0], strerror(errno));
        else if (fd == 0 && isatty(0))
            rc = cli_fail("import -: stdin is a terminal; pipe an archive into it");
        else if ((rc = archive_import(st, fd, &o, &s)))
            rc = cli_failed(rc);
        else {
            summary(&p, "imported", &s, 0);
            if (s.existed)
                fprintf(stderr, "strata: layer %.12s was already in the store\n", s.id.hex);
            printf("%s\n", s.id.hex);
        }
        if (fd > 0)
            close(fd);
    }
    store_close(st);
    return rc;
}

const cli_verb cli_archive_verbs[] = {
    {"export", cmd_export,
     "export REF FILE|- [--since REF] [--with-state] [--level N] [--threads N] [--name NAME]",
     "Write layer REF as one zstd-compressed pax tar (FILE, or - for stdout). GNU tar or\n"
     "bsdtar alone unpack it into NAME.bundle/, sparse; `strata import` restores the very\n"
     "same layer, checking every chunk. The layer's ancestors travel too, as differences.\n"
     "--since REF carries only what differs from REF (NAME.strata-delta/: for strata\n"
     "import only, which needs REF). A saved state is left out (its parent is exported)\n"
     "unless --with-state; it resumes only on the host that made it. --level (zstd, 1-19,\n"
     "default 3) and --threads (default: every core). NAME defaults to FILE's name.\n"
     "Format: docs/archive.md."},
    {NULL, NULL, NULL, NULL},
};
