/* Verbs that talk to OCI registries: login, logout, push, ls --remote. */
#define _GNU_SOURCE
#include "cli.h"
#include "../remote/remote.h"
#include "../tart/tart.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <termios.h>
#include <unistd.h>

static void wipe(void *p, size_t n) /* explicit_bzero is not on macOS */
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

/* one line of stdin, without its newline; echo off when it is a terminal */
static int read_line(const char *prompt, int secret, char *buf, size_t n)
{
    int tty = isatty(0);
    struct termios old, quiet;
    if (tty) {
        fprintf(stderr, "%s", prompt);
        if (secret && !tcgetattr(0, &old)) {
            quiet = old;
            quiet.c_lflag &= ~(tcflag_t)ECHO;
            tcsetattr(0, TCSAFLUSH, &quiet);
        } else
            secret = 0;
    }
    char *got = fgets(buf, (int)n, stdin);
    if (tty && secret) {
        tcsetattr(0, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    if (!got)
        return -1;
    size_t len = strcspn(buf, "\r\n");
    int next = !buf[len] && len + 1 == n ? getc(stdin) : EOF;
    if (next != EOF && next != '\n' && next != '\r')
        return -2; /* longer than the buffer: never used cut short */
    buf[len] = 0;
    return 0;
}

static int cmd_login(int argc, char **argv)
{
    const char *user = NULL;
    int password_stdin = 0, insecure = 0;
    cli_opt opts[] = {{"-u", 1, &user, NULL}, {"--username", 1, &user, NULL},
                      {"--password-stdin", 0, NULL, &password_stdin}, {"--insecure", 0, NULL, &insecure}};
    char *pos[1];
    int n;
    if (cli_parse(argc, argv, opts, 4, pos, 1, &n, "login") || cli_need(n, 1, "login"))
        return 1;
    if (strchr(pos[0], '/'))
        return cli_fail("login: '%s' is not a registry host (HOST[:PORT])", pos[0]);
    char ubuf[256], pbuf[1024];
    if (!user) {
        int got = read_line("Username: ", 0, ubuf, sizeof ubuf);
        if (got == -2)
            return cli_fail("login: the user name is longer than %zu bytes", sizeof ubuf - 1);
        if (got || !*ubuf)
            return cli_fail("login: no user name given (-u USER, or on stdin)");
        user = ubuf;
    }
    (void)password_stdin; /* the password is always read from stdin, never taken as an argument */
    int got = read_line("Password: ", 1, pbuf, sizeof pbuf);
    if (got == -2) {
        wipe(pbuf, sizeof pbuf);
        return cli_fail("login: the password is longer than %zu bytes", sizeof pbuf - 1);
    }
    if (got || !*pbuf)
        return cli_fail("login: no password was given on stdin");
    remote_opts o = {.insecure = insecure};
    int rc = remote_login(pos[0], user, pbuf, &o);
    wipe(pbuf, sizeof pbuf);
    if (rc)
        return cli_failed(rc);
    fprintf(stderr, "strata: logged in to %s as %s\n", pos[0], user);
    return 0;
}

static int cmd_logout(int argc, char **argv)
{
    char *pos[1];
    int n;
    if (cli_parse(argc, argv, NULL, 0, pos, 1, &n, "logout") || cli_need(n, 1, "logout"))
        return 1;
    remote_opts o = {0};
    int rc = remote_logout(pos[0], &o);
    if (rc)
        return cli_failed(rc);
    fprintf(stderr, "strata: logged out of %s\n", pos[0]);
    return 0;
}

typedef struct {
    int tty, finished;
    double start, last;
    const char *verb; /* "push", "pull" */
} push_progress;

static void show_progress(void *ctx, uint64_t done, uint64_t total)
{
    push_progress *p = ctx;
    double t = now_s();
    if (!p->tty || !total || p->finished || (t - p->last < 0.25 && done < total))
        return;
    p->last = t;
    char a[32], b[32], rate[32];
    double secs = t - p->start > 0.001 ? t - p->start : 0.001;
    cli_human((uint64_t)((double)done / secs), rate, sizeof rate);
    int width = 30, fill = (int)(done * (uint64_t)width / total);
    fprintf(stderr, "\r\033[K%s [%.*s%*s] %s of %s, %s/s", p->verb, fill,
            "##############################", width - fill, "", cli_human(done, a, sizeof a), cli_human(total, b, sizeof b), rate);
    if (done >= total) {
        fputc('\n', stderr);
        p->finished = 1;
    }
}

static int print_push(const remote_ref *dst, const remote_push_result *r, double secs, int json)
{
    char up[32], data[32];
    if (json)
        return cli_json_print(json_pack(
            "{s:o, s:o, s:o, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "remote",
            cli_json_text(dst->host), "repository", cli_json_text(dst->repo), "tag",
            cli_json_text(dst->tag), "layer", r->pushed.hex, "digest", cli_json_text(r->digest),
            "blobs_uploaded", cli_json_u64(r->blobs_uploaded), "bytes_uploaded",
            cli_json_u64(r->bytes_uploaded), "blobs_present", cli_json_u64(r->blobs_present),
            "chunks_uploaded", cli_json_u64(r->chunks_uploaded), "chunks_present",
            cli_json_u64(r->chunks_present), "chunk_bytes", cli_json_u64(r->chunk_bytes),
            "seconds", cli_json_seconds(secs)));
    printf("pushed %s/%s:%s (layer %.12s, %s): uploaded %s in %" PRIu64 " blobs (%" PRIu64
           " chunks); %" PRIu64 " chunks already present (%" PRIu64 " blobs); %s of chunk data; %.1f s\n",
           dst->host, dst->repo, dst->tag, r->pushed.hex, r->digest,
           cli_human(r->bytes_uploaded, up, sizeof up), r->blobs_uploaded, r->chunks_uploaded,
           r->chunks_present, r->blobs_present, cli_human(r->chunk_bytes, data, sizeof data), secs);
    return 0;
}

static int print_tart_push(const char *ref, const remote_ref *dst, const tart_push_result *r,
                           double secs, int json)
{
    char up[32];
    if (json)
        return cli_json_print(json_pack(
            "{s:o, s:o, s:o, s:s, s:o, s:o, s:I, s:o, s:o, s:o, s:o}", "remote",
            cli_json_text(dst->host), "repository", cli_json_text(dst->repo), "tag",
            cli_json_text(dst->tag), "format", "tart", "ref", cli_json_text(ref), "digest",
            cli_json_text(r->digest), "layers", (json_int_t)r->layers, "blobs_uploaded",
            cli_json_u64(r->blobs_uploaded), "bytes_uploaded", cli_json_u64(r->bytes_uploaded),
            "blobs_present", cli_json_u64(r->blobs_present), "seconds", cli_json_seconds(secs)));
    printf("pushed %s/%s:%s as a tart image (%s, %zu layers): uploaded %s in %" PRIu64
           " blobs; %" PRIu64 " blobs already present; %.1f s\n",
           dst->host, dst->repo, dst->tag, r->digest, r->layers,
           cli_human(r->bytes_uploaded, up, sizeof up), r->blobs_uploaded, r->blobs_present, secs);
    return 0;
}

/* push --format tart: what `tart pull` reads (docs/tart.md) */
static int push_tart(store *st, const char *id, const char *ref, const remote_ref *dst,
                     unsigned jobs, uint64_t chunk_size, int json, int insecure)
{
    push_progress pp = {.tty = isatty(2) && !json, .start = now_s(), .verb = "push"};
    tart_push_opts po = {.jobs = jobs, .chunk_size = chunk_size, .progress = show_progress,
                         .progress_ctx = &pp, .note = cli_note};
    remote_opts o = {.insecure = insecure};
    tart_push_result res;
    int rc = tart_push(st, id, dst, &o, &po, &res);
    if (rc)
        return cli_failed(rc);
    return print_tart_push(ref, dst, &res, now_s() - pp.start, json);
}

static int cmd_push(int argc, char **argv)
{
    const char *jobs_s = NULL, *chunk_s = NULL, *format = NULL;
    int with_state = 0, json = 0, insecure = 0;
    cli_opt opts[] = {{"--jobs", 1, &jobs_s, NULL}, {"--with-state", 0, NULL, &with_state},
                      {"--json", 0, NULL, &json}, {"--insecure", 0, NULL, &insecure},
                      {"--chunk-size", 1, &chunk_s, NULL}, {"--format", 1, &format, NULL}};
    char *pos[2];
    int n;
    if (cli_parse(argc, argv, opts, 6, pos, 2, &n, "push") || cli_need(n, 2, "push"))
        return 1;
    int tart = format && !strcmp(format, "tart");
    if (format && !tart && strcmp(format, "strata"))
        return cli_fail("push: --format '%s' is neither strata nor tart", format);
    if (tart && with_state)
        return cli_fail("push: --with-state with --format tart: a tart image never carries a "
                        "saved state");
    unsigned long jobs = 0, chunk_kib = 0;
    if (jobs_s && cli_parse_uint("--jobs", jobs_s, 64, &jobs))
        return 1;
    /* KiB, so tests can go small; 0: no chunks, one PUT per blob */
    if (chunk_s && strcmp(chunk_s, "0") && cli_parse_uint("--chunk-size", chunk_s, 1ul << 20, &chunk_kib))
        return 1;
    uint64_t chunk_size = !chunk_s ? 0 : chunk_kib ? (uint64_t)chunk_kib << 10 : REMOTE_CHUNK_MONOLITHIC;
    remote_ref dst;
    int rc = remote_ref_parse(pos[1], 0, &dst);
    if (rc)
        return cli_failed(rc);
    if (!dst.tag) {
        remote_ref_free(&dst);
        return cli_fail("push: '%s' needs a tag (HOST/REPO:TAG)", pos[1]);
    }
    store *st;
    store_id id;
    if (cli_open_store(&st)) {
        remote_ref_free(&dst);
        return 1;
    }
    rc = cli_resolve(st, pos[0], &id);
    if (tart) {
        rc = rc ? rc : push_tart(st, id.hex, pos[0], &dst, (unsigned)jobs, chunk_size, json, insecure);
        store_close(st);
        remote_ref_free(&dst);
        return rc;
    }
    push_progress pp = {.tty = isatty(2) && !json, .start = now_s(), .verb = "push"};
    remote_push_opts po = {.with_state = with_state, .jobs = (unsigned)jobs,
                           .chunk_size = chunk_size, .progress = show_progress,
                           .progress_ctx = &pp, .note = cli_note};
    remote_opts o = {.insecure = insecure};
    remote_push_result res;
    if (!rc && (rc = remote_push(st, &id, &dst, &o, &po, &res)))
        rc = cli_failed(rc);
    else if (!rc)
        rc = print_push(&dst, &res, now_s() - pp.start, json);
    store_close(st);
    remote_ref_free(&dst);
    return rc;
}

/* boot's view of what the manifest says the guest needs */
static int runs_here(const char *what, const remote_guest *g)
{
    boot_guest_needs need = {g->os, g->arch, g->macos_min, g->macos_data_rep};
    return boot_guest_runs_here(what, &need);
}

/* "macos/arm64, macOS 13.0.0+", "linux/amd64", "linux", or "" if unknown */
static const char *guest_text(const remote_guest *g, char *buf, size_t n)
{
    snprintf(buf, n, "%s%s%s%s%s%s", g->os, g->arch[0] ? "/" : "", g->arch,
             g->macos_min[0] ? ", macOS " : "", g->macos_min, g->macos_min[0] ? "+" : "");
    return buf;
}

static json_t *guest_json(const remote_guest *g)
{
    json_t *o = json_object();
    if (g->os[0])
        json_object_set_new(o, "os", cli_json_text(g->os));
    if (g->arch[0])
        json_object_set_new(o, "arch", cli_json_text(g->arch));
    if (g->macos_min[0])
        json_object_set_new(o, "macos_minimum", cli_json_text(g->macos_min));
    if (g->macos_data_rep)
        json_object_set_new(o, "macos_data_representation", json_integer(g->macos_data_rep));
    return o;
}

static int print_list(const remote_tag_info *t, size_t n, int json)
{
    json_t *all = json ? json_array() : NULL;
    if (!json)
        printf("%-24s  %-12s  %10s  %10s  %-24s  %s\n", "TAG", "LAYER", "SIZE", "PULL", "GUEST",
               "NOTE");
    for (size_t i = 0; i < n; i++) {
        char a[32], b[32], g[96];
        int runs = t[i].strata && !runs_here(t[i].tag, &t[i].guest);
        if (json) {
            json_t *one = json_pack("{s:o, s:o, s:b}", "tag", cli_json_text(t[i].tag), "digest",
                                    cli_json_text(t[i].digest), "strata", t[i].strata);
            if (t[i].strata)
                json_object_update_new(one, json_pack("{s:s, s:o, s:o, s:I, s:b}", "layer",
                                                  t[i].layer.hex, "size", cli_json_u64(t[i].size),
                                                  "pull_bytes", cli_json_u64(t[i].pull_bytes),
                                                  "chain", (json_int_t)t[i].chain, "host_bound",
                                                  t[i].host_bound));
            if (t[i].strata)
                json_object_update_new(one, json_pack("{s:o, s:b}", "guest", guest_json(&t[i].guest),
                                                      "runs_here", runs));
            json_array_append_new(all, one);
        } else if (t[i].strata) {
            guest_text(&t[i].guest, g, sizeof g);
            printf("%-24s  %.12s  %10s  %10s  %-24s  %s%s%s\n", t[i].tag, t[i].layer.hex,
                   cli_human(t[i].size, a, sizeof a), cli_human(t[i].pull_bytes, b, sizeof b),
                   g[0] ? g : "-", t[i].host_bound ? "saved state (host-bound)" : "",
                   t[i].host_bound && !runs ? "; " : "", runs ? "" : "not for this host");
        } else
            printf("%-24s  %-12s  %10s  %10s  %-24s  not a strata layer\n", t[i].tag, "-", "-", "-",
                   "-");
    }
    return json ? cli_json_print(all) : 0;
}

int cli_remote_ls(int argc, char **argv)
{
    const char *repo_s = NULL;
    int json = 0, insecure = 0;
    cli_opt opts[] = {{"--remote", 1, &repo_s, NULL}, {"--json", 0, NULL, &json},
                      {"--insecure", 0, NULL, &insecure}};
    char *pos[1];
    int n;
    if (cli_parse(argc, argv, opts, 3, pos, 0, &n, "ls"))
        return 1;
    remote_ref repo;
    int rc = remote_ref_parse(repo_s, 1, &repo);
    if (rc)
        return cli_failed(rc);
    remote_opts o = {.insecure = insecure};
    remote_tag_info *t;
    size_t nt;
    rc = remote_list(&repo, &o, &t, &nt);
    if (rc)
        rc = cli_failed(rc);
    else {
        rc = print_list(t, nt, json);
        remote_list_free(t, nt);
    }
    remote_ref_free(&repo);
    return rc;
}

/* what a pull's manifest said of its guest, and whether to let it through */
typedef struct {
    const char *ref;
    int any_host; /* pull --any-host: to re-push or export, not to run here */
    const char *note; /* printed once the guest is accepted */
    remote_guest guest;
} guest_check;

/* remote_pull_opts.check_guest: before any blob is fetched */
static int check_guest(void *ctx, const remote_guest *g)
{
    guest_check *c = ctx;
    c->guest = *g;
    int rc = runs_here(c->ref, g);
    if (!rc && c->note)
        fprintf(stderr, "%s\n", c->note);
    if (!rc)
        return 0;
    char why[ERR_MESSAGE_MAX];
    snprintf(why, sizeof why, "%s", err_last()->message);
    if (c->any_host) {
        fprintf(stderr, "strata: %s; pulling it anyway (--any-host)\n", why);
        return 0;
    }
    return err_set(ERR_CLI, -rc, "%s (pull --any-host fetches it anyway, to push or export it)", why);
}

static int print_pull(const remote_ref *src, const char *tag, const remote_pull_result *r,
                      const remote_guest *g, double secs, int json)
{
    char got[32], gt[96];
    if (json)
        return cli_json_print(json_pack(
            "{s:o, s:o, s:o?, s:s, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:b, s:b, s:o, s:o}", "remote",
            cli_json_text(src->host), "repository", cli_json_text(src->repo), "tag",
            tag ? cli_json_text(tag) : NULL, "layer", r->pulled.hex, "layers_received",
            (json_int_t)r->layers_received, "chunks_fetched", cli_json_u64(r->chunks_fetched),
            "chunks_present", cli_json_u64(r->chunks_present), "chunks_local",
            cli_json_u64(r->chunks_local), "chunks_resumed", cli_json_u64(r->chunks_resumed),
            "bytes_fetched", cli_json_u64(r->bytes_fetched), "requests", cli_json_u64(r->requests),
            "whole_packs", r->whole_packs, "boot_profile", r->profile, "guest", guest_json(g),
            "seconds", cli_json_seconds(secs)));
    printf("%s\n", r->pulled.hex);
    if (guest_text(g, gt, sizeof gt)[0])
        fprintf(stderr, "strata: guest %s\n", gt);
    fprintf(stderr, "pulled %s/%s%s%s (layer %.12s%s%s): downloaded %s in %" PRIu64 " chunks (%" PRIu64
            " requests%s); %" PRIu64 " chunks already present (%" PRIu64 " from an interrupted "
            "pull), %" PRIu64 " copied from elsewhere in the store; %zu layers new; %.1f s\n",
            src->host, src->repo, src->digest ? "@" : ":", src->digest ? src->digest : src->tag,
            r->pulled.hex, tag ? ", tagged " : "", tag ? tag : "",
            cli_human(r->bytes_fetched, got, sizeof got), r->chunks_fetched, r->requests,
            r->whole_packs ? ", whole packs: the registry refused Range" : "", r->chunks_present,
            r->chunks_resumed, r->chunks_local, r->layers_received, secs);
    return 0;
}

static int print_tart_pull(const remote_ref *src, const char *tag, const tart_pull_result *r,
                           const remote_guest *g, double secs, int json)
{
    char got[32], gt[96], disk[32];
    if (json)
        return cli_json_print(json_pack(
            "{s:s, s:o, s:o, s:o?, s:s, s:b, s:b, s:I, s:I, s:I, s:o, s:o, s:o, s:o}", "format", "tart",
            "remote", cli_json_text(src->host), "repository", cli_json_text(src->repo), "tag",
            tag ? cli_json_text(tag) : NULL, "layer", r->pulled.hex, "existed", r->existed,
            "cached", r->cached, "layers_fetched", (json_int_t)r->layers_fetched,
            "layers_resumed", (json_int_t)r->layers_resumed, "layers_copied",
            (json_int_t)r->layers_copied, "bytes_fetched",
            cli_json_u64(r->bytes_fetched), "disk_size", cli_json_u64(r->disk_size), "guest",
            guest_json(g), "seconds", cli_json_seconds(secs)));
    printf("%s\n", r->pulled.hex);
    if (guest_text(g, gt, sizeof gt)[0])
        fprintf(stderr, "strata: guest %s\n", gt);
    fprintf(stderr, "pulled tart image %s/%s%s%s (layer %.12s%s%s): %s; downloaded %s in %zu "
            "layers, %zu kept from an interrupted pull, %zu copied from images pulled before; "
            "disk %s; %.1f s\n",
            src->host, src->repo, src->digest ? "@" : ":", src->digest ? src->digest : src->tag,
            r->pulled.hex, tag ? ", tagged " : "", tag ? tag : "",
            r->cached ? "pulled before, only the manifest fetched"
                      : r->existed ? "the store had the layer" : "a new layer",
            cli_human(r->bytes_fetched, got, sizeof got), r->layers_fetched, r->layers_resumed,
            r->layers_copied, cli_human(r->disk_size, disk, sizeof disk), secs);
    return 0;
}

/* tart_pull_opts.note */
static void print_note(void *ctx, const char *line)
{
    (void)ctx;
    fprintf(stderr, "strata: %s\n", line);
}

/* src is a tart image (its manifest m, as remote_pull read it): pulled as
 * one (tart_pull), printed as a pull */
static int pull_tart(store *st, const remote_ref *src, const remote_opts *o,
                     const remote_manifest *m, const char *tag, unsigned jobs, push_progress *pp,
                     guest_check *gc, int json, store_id *pulled)
{
    tart_pull_opts tpo = {.tag = tag, .jobs = jobs, .progress = show_progress, .progress_ctx = pp,
                          .check_guest = check_guest, .check_ctx = gc, .note = print_note,
                          .manifest = m};
    tart_pull_result res;
    int rc = tart_pull(st, src, o, &tpo, &res);
    if (rc)
        return cli_failed(rc);
    rc = print_tart_pull(src, tag, &res, &gc->guest, now_s() - pp->start, json);
    if (!tag)
        fprintf(stderr, "strata: the layer has no tag here; `strata tag %.12s NAME` keeps it\n",
                res.pulled.hex);
    if (pulled)
        *pulled = res.pulled;
    return rc;
}

int cli_pull_remote(store *st, const char *ref, const char *tag, unsigned jobs, int insecure,
                    int json, int any_host, const char *note, store_id *pulled)
{
    remote_ref src;
    int rc = remote_ref_parse(ref, 0, &src);
    if (rc)
        return cli_failed(rc);
    char local[160];
    if (!src.tag && !src.digest)
        rc = cli_fail("pull: '%s' needs a tag or digest (HOST/REPO:TAG)", ref);
    else if (!tag && src.tag && (rc = remote_ref_local_tag(&src, local, sizeof local)))
        rc = cli_failed(rc);
    else if (!tag && src.tag)
        tag = local; /* the remote name, as docker and tart name what they pull */
    push_progress pp = {.tty = isatty(2) && !json, .start = now_s(), .verb = "pull"};
    guest_check gc = {.ref = ref, .any_host = any_host, .note = note};
    remote_manifest other = {0}; /* a tart image's, read once */
    remote_pull_opts po = {.tag = tag, .jobs = jobs, .progress = show_progress, .progress_ctx = &pp,
                           .check_guest = check_guest, .check_ctx = &gc, .note = cli_note,
                           .other = &other};
    remote_opts o = {.insecure = insecure};
    remote_pull_result res;
    int said = rc != 0; /* a failure above was printed */
    if (!rc && (rc = remote_pull(st, &src, &o, &po, &res)) == -EPROTOTYPE) /* not a strata layer */
        rc = pull_tart(st, &src, &o, &other, tag, jobs, &pp, &gc, json, pulled);
    else if (rc && !said)
        rc = cli_failed(rc);
    else if (!rc) {
        rc = print_pull(&src, tag, &res, &gc.guest, now_s() - pp.start, json);
        if (!tag)
            fprintf(stderr, "strata: the layer has no tag here; `strata tag %.12s NAME` keeps it\n",
                    res.pulled.hex);
        if (pulled)
            *pulled = res.pulled;
    }
    free(other.body);
    remote_ref_free(&src);
    return rc;
}

static int cmd_pull(int argc, char **argv)
{
    const char *tag = NULL, *jobs_s = NULL;
    int json = 0, insecure = 0, any_host = 0;
    cli_opt opts[] = {{"--tag", 1, &tag, NULL}, {"-t", 1, &tag, NULL}, {"--jobs", 1, &jobs_s, NULL},
                      {"--json", 0, NULL, &json}, {"--insecure", 0, NULL, &insecure},
                      {"--any-host", 0, NULL, &any_host}};
    char *pos[1];
    int n;
    if (cli_parse(argc, argv, opts, 6, pos, 1, &n, "pull") || cli_need(n, 1, "pull"))
        return 1;
    if (tag && !store_tag_valid(tag))
        return cli_fail("--tag %s: not a valid tag name", tag);
    unsigned long jobs = 0;
    if (jobs_s && cli_parse_uint("--jobs", jobs_s, 64, &jobs))
        return 1;
    store *st;
    if (cli_open_store(&st))
        return 1;
    int rc = cli_pull_remote(st, pos[0], tag, (unsigned)jobs, insecure, json, any_host, NULL, NULL);
    store_close(st);
    return rc;
}

const cli_verb cli_remote_verbs[] = {
    {"login", cmd_login, "login REGISTRY [-u USER] [--password-stdin] [--insecure]",
     "Check a user and password (read from stdin, never from the command line) against a\n"
     "registry and keep them where docker does: the credential helper ~/.docker/config.json\n"
     "names for it, else that file's auths (mode 0600). $DOCKER_CONFIG moves the directory.\n"
     "Docker Hub (docker.io) is checked at registry-1.docker.io and kept, as docker keeps\n"
     "it, under https://index.docker.io/v1/."},
    {"logout", cmd_logout, "logout REGISTRY", "Forget the credentials kept for a registry."},
    {"push", cmd_push,
     "push REF HOST/REPO:TAG [--with-state] [--jobs N] [--chunk-size KIB] [--json] [--insecure]\n"
     "       [--format strata|tart]",
     "Push a layer and its chain to an OCI registry (docs/remote.md). Only blobs the registry\n"
     "lacks are sent. A saved state is pushed only with --with-state (marked host-bound);\n"
     "without it its parent is pushed. Plain HTTP is used for loopback hosts, or any host\n"
     "with --insecure. Ends with a summary line (--json: one JSON object).\n"
     "--format tart pushes the layer as a tart image that `tart pull` reads (docs/tart.md):\n"
     "its config, its disk in 512 MiB slices each compressed with Apple's LZ4 framing\n"
     "(--jobs at once, default 4), its NVRAM; never a saved state (its disk goes instead).\n"
     "Blobs go up in chunks (PATCH) of --chunk-size KiB, default 4096 (8192 for ECR; none for\n"
     "gcr.io and *-docker.pkg.dev), adapted when a registry refuses a size; 0 sends each blob\n"
     "in one PUT. A chunk cut off is resumed where the registry says the upload stands.\n"
     "--jobs uploads run at once (default: twice the cores, 4 to 16): at 20 Mbit/s shared by\n"
     "16, a 4 MiB chunk takes under 30 s, far inside registries' 10-minute request limits.\n"
     "Docker Hub is docker.io (or index.docker.io), reached at registry-1.docker.io; a\n"
     "one-part name is under library/ as in docker (docker.io/vm:v1 is library/vm).\n"
     "Credentials are docker's (see login): a helper's, or config.json's password,\n"
     "identitytoken or registrytoken; they and the tokens got with them are fetched\n"
     "again when they expire or are refused during a push."},
    {"pull", cmd_pull,
     "pull HOST/REPO:TAG|HOST/REPO@DIGEST [-t NAME] [--jobs N] [--json] [--insecure] [--any-host]",
     "Pull a layer and the part of its chain the store lacks from an OCI registry. Only\n"
     "chunks no local layer has at the same place are downloaded, --jobs at a time; every\n"
     "blob and chunk is checked, and on any failure nothing is added (chunks already\n"
     "received are kept under the store's tmp/ for the next pull of that layer). The\n"
     "local tag is -t NAME, else the remote name with '/' and ':' of HOST/REPO as '_'\n"
     "(ghcr.io/acme/macos:xcode16 -> ghcr.io_acme_macos:xcode16). Prints the layer id.\n"
     "A layer whose manifest says its guest can't run on this host (a macOS guest off a\n"
     "Mac with Apple silicon or one too old, a Linux guest of another architecture) is\n"
     "refused before any pack is downloaded; --any-host pulls it anyway, to push or export.\n"
     "Docker Hub's names and credentials are read as by push (docker.io/vm:v1 is\n"
     "library/vm there, tagged docker.io_library_vm:v1 here).\n"
     "A tart image (what `tart push` writes) is pulled too, into one layer: its disk\n"
     "layers --jobs at a time (default 4), each checked against both its digests, an\n"
     "interrupted pull resumed, slices an image pulled before had copied, and the\n"
     "same image pulled again fetches only its manifest (docs/tart.md)."},
    {NULL, NULL, NULL, NULL},
};
