/* Verbs that make, name and show layers. */
#define _GNU_SOURCE
#include "cli.h"
#include "../tart/tart.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int parse_chunk_size(const char *s, uint32_t *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*end == 'K' || *end == 'k')
        v <<= 10, end++;
    else if (*end == 'M' || *end == 'm')
        v <<= 20, end++;
    if (*end || v < 4096 || v > (64ul << 20) || (v & (v - 1)))
        return cli_fail("--chunk-size %s: a power of two from 4K to 64M", s);
    *out = (uint32_t)v;
    return 0;
}

static void print_commit(const store_commit_result *r, int verbose)
{
    char a[32], b[32];
    if (verbose)
        fprintf(stderr, "strata: read %s; %" PRIu64 " chunks known unchanged from extent maps; %s added\n",
                cli_human(r->bytes_read, a, sizeof a), r->chunks_reused, cli_human(r->bytes_added, b, sizeof b));
    if (r->existed)
        fprintf(stderr, "strata: the same content is already layer %.12s\n", r->id.hex);
    if (!r->reflinked)
        fprintf(stderr, "strata: this filesystem can't share blocks, so the layer holds a "
                        "full copy of its data\n");
    printf("%s\n", r->id.hex);
}

static int cmd_import(int argc, char **argv)
{
    if (cli_import_is_archive(argc, argv)) /* FILE.tar.zst, -, or --from-tart DIR */
        return cli_archive_import(argc, argv);
    const char *chunk = NULL;
    int restore = 0, verbose = 0;
    cli_opt opts[] = {{"--include-restore-image", 0, NULL, &restore},
                  {"--chunk-size", 1, &chunk, NULL}, {"-v", 0, NULL, &verbose}};
    char *pos[2];
    int n;
    if (cli_parse(argc, argv, opts, 3, pos, 2, &n, "import") || cli_need(n, 1, "import"))
        return 1;
    cli_progress_state ps = {.tty = isatty(2)};
    store_commit_opts o = {.tag = n > 1 ? pos[1] : NULL, .include_restore_image = restore,
                           .progress = cli_progress, .progress_ctx = &ps, .note = cli_note,
                           .message = "import"};
    if (chunk && parse_chunk_size(chunk, &o.chunk_size))
        return 1;
    store *st;
    if (cli_open_store(&st))
        return 1;
    store_commit_result r;
    int rc = store_import(st, pos[0], &o, &r);
    store_close(st);
    if (rc)
        return cli_failed(rc);
    print_commit(&r, verbose);
    return 0;
}

static int cmd_commit(int argc, char **argv)
{
    const char *msg = NULL, *tag = NULL;
    int verbose = 0;
    cli_opt opts[] = {{"-m", 1, &msg, NULL}, {"-t", 1, &tag, NULL}, {"-v", 0, NULL, &verbose}};
    char *pos[1];
    int n;
    if (cli_parse(argc, argv, opts, 3, pos, 1, &n, "commit") || cli_need(n, 1, "commit"))
        return 1;
    cli_progress_state ps = {.tty = isatty(2)};
    store_commit_opts o = {.tag = tag, .message = msg, .progress = cli_progress, .progress_ctx = &ps,
                           .note = cli_note};
    store *st;
    if (cli_open_store(&st))
        return 1;
    store_commit_result r;
    int rc = store_commit(st, pos[0], &o, &r);
    store_close(st);
    if (rc)
        return cli_failed(rc);
    print_commit(&r, verbose);
    return 0;
}

static int cmd_clone(int argc, char **argv)
{
    char *pos[2];
    int n, with_state = 0, tart = 0;
    cli_opt opts[] = {{"--with-state", 0, NULL, &with_state}, {"--tart", 0, NULL, &tart}};
    if (cli_parse(argc, argv, opts, 2, pos, 2, &n, "clone") || cli_need(n, 2, "clone"))
        return 1;
    if (tart && with_state)
        return cli_fail("clone: --with-state with --tart: a tart VM directory carries no saved "
                        "state strata made");
    store *st;
    if (cli_open_store(&st))
        return 1;
    int reflinked = 0;
    store_id id;
    if (cli_resolve(st, pos[0], &id)) {
        store_close(st);
        return 1;
    }
    if (tart) {
        int trc = tart_vm_write(st, id.hex, pos[1]);
        store_close(st);
        return trc ? cli_failed(trc) : 0;
    }
    int rc = (with_state ? store_clone_saved_state : store_clone)(st, id.hex, pos[1], &reflinked);
    store_close(st);
    if (rc)
        return cli_failed(rc);
    if (!reflinked)
        fprintf(stderr, "strata: copied, since this filesystem can't share blocks (holes kept)\n");
    return 0;
}

static const char *binding_of(const store_layer *l, const char *key)
{
    for (size_t i = 0; i < l->nbindings; i++)
        if (!strcmp(l->bindings[i].key, key))
            return l->bindings[i].value;
    return "?";
}

/* "saved state (host, driver): " for a layer with bindings, else "" */
static void saved_state_label(const store_layer *l, char *out, size_t n)
{
    out[0] = 0;
    if (l->nbindings)
        snprintf(out, n, "saved state (%s, %s): ", binding_of(l, "host"), binding_of(l, "driver"));
}

static int cmd_log(int argc, char **argv)
{
    int json = 0;
    char *pos[1];
    int n;
    if (cli_parse_json_only(argc, argv, pos, 1, &n, &json, "log") || cli_need(n, 1, "log"))
        return 1;
    store *st;
    store_id id;
    if (cli_open_store(&st))
        return 1;
    if (cli_resolve(st, pos[0], &id)) {
        store_close(st);
        return 1;
    }
    int rc = 0;
    json_t *all = json ? json_array() : NULL;
    for (;;) {
        store_layer *l;
        int lrc = store_layer_load(st, &id, &l);
        if (lrc) {
            rc = cli_failed(lrc);
            break;
        }
        char d[32], b[32];
        if (json) {
            json_t *one = cli_json_layer_head(l);
            if (l->nbindings)
                json_object_set_new(one, "saved_state",
                                    json_pack("{s:o, s:o}", "host", cli_json_text(binding_of(l, "host")),
                                              "driver", cli_json_text(binding_of(l, "driver"))));
            json_array_append_new(all, one);
        } else {
            char what[300] = "";
            saved_state_label(l, what, sizeof what);
            printf("%.12s  %s  %10s  %s%s\n", l->id.hex, cli_date_of(l->created, d, sizeof d),
                   cli_human(l->bytes_added, b, sizeof b), what, l->message);
        }
        int more = l->has_parent;
        id = l->parent;
        store_layer_free(l);
        if (!more)
            break;
    }
    store_close(st);
    if (json && !rc)
        return cli_json_print(all);
    json_decref(all);
    return rc;
}

static int cmd_diff(int argc, char **argv)
{
    int json = 0;
    char *pos[2];
    int n;
    if (cli_parse_json_only(argc, argv, pos, 2, &n, &json, "diff") || cli_need(n, 2, "diff"))
        return 1;
    store *st;
    store_id a, b;
    if (cli_open_store(&st))
        return 1;
    store_diff_entry *d = NULL;
    size_t nd = 0;
    int rc = cli_resolve(st, pos[0], &a) || cli_resolve(st, pos[1], &b);
    if (!rc && (rc = store_diff(st, &a, &b, &d, &nd)))
        rc = cli_failed(rc);
    store_close(st);
    if (rc)
        return 1;
    json_t *all = json ? json_array() : NULL;
    for (size_t i = 0; i < nd; i++) {
        const store_diff_entry *e = &d[i];
        const char *state = !e->in_a ? "added" : !e->in_b ? "removed"
                                   : e->chunks_changed ? "modified" : "same";
        if (json) {
            json_array_append_new(all, json_pack("{s:o, s:s, s:o, s:o, s:o, s:o}", "file",
                                                 cli_json_text(e->name), "state", state,
                                                 "chunks_changed", cli_json_u64(e->chunks_changed),
                                                 "bytes_changed", cli_json_u64(e->bytes_changed),
                                                 "size_a", cli_json_u64(e->size_a),
                                                 "size_b", cli_json_u64(e->size_b)));
        } else if (e->chunks_changed || !e->in_a || !e->in_b) {
            char h[32];
            printf("%-9s %-24s %8" PRIu64 " chunks  %10s\n", state, e->name, e->chunks_changed,
                   cli_human(e->bytes_changed, h, sizeof h));
        }
    }
    store_diff_free(d, nd);
    return json ? cli_json_print(all) : 0;
}

static int ls_unreachable(store *st, int json)
{
    store_unreachable_entry *v = NULL;
    size_t n = 0;
    int rc = store_unreachable(st, &v, &n);
    if (rc)
        return cli_failed(rc);
    json_t *all = json ? json_array() : NULL;
    if (!json)
        printf("%-64s  %s\n", "LAYER", "UNREACHABLE SINCE");
    for (size_t i = 0; i < n; i++) {
        char d[32];
        const char *since = v[i].since ? cli_date_of(v[i].since, d, sizeof d) : NULL;
        if (json)
            json_array_append_new(all, json_pack("{s:s, s:s?}", "id", v[i].id.hex, "since", since));
        else
            printf("%s  %s\n", v[i].id.hex, since ? since : "(not yet seen by gc)");
    }
    free(v);
    return json ? cli_json_print(all) : 0;
}

/* one layer of ls; a layer that can't be read is listed with why */
static int ls_layer(store *st, const store_id *id, const store_tag_entry *tags, size_t ntags,
                    json_t *all)
{
    store_layer *l = NULL;
    int rc = store_layer_load(st, id, &l);
    char tagline[512] = "";
    size_t at = 0;
    for (size_t t = 0; t < ntags; t++)
        if (!strcmp(tags[t].id.hex, id->hex) && at < sizeof tagline)
            at += (size_t)snprintf(tagline + at, sizeof tagline - at, "%s%s", at ? "," : "",
                                   tags[t].name);
    uint64_t size = 0;
    for (size_t f = 0; l && f < l->nfiles; f++)
        size += l->files[f].size;
    if (all) {
        json_t *one = rc ? json_pack("{s:s, s:o}", "id", id->hex, "error",
                                     cli_json_text(err_message_for(rc)))
                         : cli_json_layer_head(l);
        if (!rc)
            json_object_set_new(one, "size", cli_json_u64(size));
        json_t *names = json_array();
        for (size_t t = 0; t < ntags; t++)
            if (!strcmp(tags[t].id.hex, id->hex))
                json_array_append_new(names, cli_json_text(tags[t].name));
        json_object_set_new(one, "tags", names);
        json_array_append_new(all, one);
    } else if (rc) {
        printf("%.12s  %-20s  %10s  %-24s  %s\n", id->hex, "?", "?", at ? tagline : "-",
               "(can't be read; see strata fsck)");
    } else {
        char d[32], h[32];
        printf("%.12s  %-20s  %10s  %-24s  %s\n", l->id.hex, cli_date_of(l->created, d, sizeof d),
               cli_human(size, h, sizeof h), at ? tagline : "-", l->message);
    }
    store_layer_free(l);
    return rc;
}

static int cmd_ls(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--remote"))
            return cli_remote_ls(argc, argv);
    int json = 0, unreachable = 0;
    cli_opt opts[] = {{"--json", 0, NULL, &json}, {"--unreachable", 0, NULL, &unreachable}};
    char *pos[1];
    int n;
    if (cli_parse(argc, argv, opts, 2, pos, 0, &n, "ls"))
        return 1;
    store *st;
    if (cli_open_store(&st))
        return 1;
    if (unreachable) {
        int rc = ls_unreachable(st, json);
        store_close(st);
        return rc;
    }
    store_id *ids = NULL;
    size_t nids = 0, ntags = 0;
    store_tag_entry *tags = NULL;
    int rc = store_layers(st, &ids, &nids);
    if (!rc)
        rc = store_tags(st, &tags, &ntags);
    if (rc) {
        free(ids);
        store_close(st);
        return cli_failed(rc);
    }
    json_t *all = json ? json_array() : NULL;
    if (!json)
        printf("%-12s  %-20s  %10s  %-24s  %s\n", "LAYER", "CREATED", "SIZE", "TAGS", "MESSAGE");
    char why[ERR_MESSAGE_MAX] = "";
    size_t bad = 0;
    for (size_t i = 0; i < nids; i++) {
        int lrc = ls_layer(st, &ids[i], tags, ntags, all);
        if (lrc && !bad++)
            snprintf(why, sizeof why, "%s", err_message_for(lrc));
    }
    if (json)
        rc = cli_json_print(all);
    fflush(stdout);
    free(ids);
    store_tags_free(tags, ntags);
    store_close(st);
    if (bad > 1)
        return cli_fail("%s (and %zu more layers can't be read)", why, bad - 1);
    return bad ? cli_fail("%s", why) : rc;
}

/* Bytes held in data chunks of f: what it costs in the store. */
static uint64_t file_data_bytes(const store_file *f)
{
    uint64_t stored = 0;
    for (size_t k = 0; k < f->ndata; k++)
        stored += store_chunk_len(f, f->data[k].index);
    return stored;
}

static int inspect_json(const store_layer *l, const store_identity *ident)
{
    json_t *v = cli_json_layer_head(l), *files = json_array(), *bound = json_object();
    for (size_t i = 0; i < l->nfiles; i++) {
        const store_file *f = &l->files[i];
        char mode[16];
        snprintf(mode, sizeof mode, "%04o", (unsigned)f->mode);
        json_array_append_new(files, json_pack("{s:o, s:o, s:s, s:I, s:I, s:I, s:o}", "name",
                                               cli_json_text(f->name), "size", cli_json_u64(f->size),
                                               "mode", mode, "chunk_size", (json_int_t)f->chunk_size,
                                               "chunks", (json_int_t)f->nchunks, "data_chunks",
                                               (json_int_t)f->ndata, "data_bytes",
                                               cli_json_u64(file_data_bytes(f))));
    }
    json_object_set_new(v, "files", files);
    json_object_set_new(v, "hardware_model",
                        ident->has_hardware_model
                            ? json_pack("{s:I, s:I, s:o}", "DataRepresentationVersion",
                                        (json_int_t)ident->data_representation_version,
                                        "PlatformVersion", (json_int_t)ident->platform_version,
                                        "MinimumSupportedOS", cli_json_text(ident->minimum_supported_os))
                            : json_null());
    json_object_set_new(v, "machine_identifier",
                        ident->has_machine_identifier
                            ? json_pack("{s:o}", "ECID", cli_json_u64(ident->ecid))
                            : json_null());
    for (size_t i = 0; i < l->nbindings; i++)
        json_object_set_new(bound, l->bindings[i].key, cli_json_text(l->bindings[i].value));
    json_object_set_new(v, "saved_state", bound);
    return cli_json_print(v);
}

static int inspect_text(const store_layer *l, const store_identity *ident)
{
    char d[32], h[32];
    printf("layer       %s\nparent      %s\ncreated     %s\nmessage     %s\nbytes added "
           "%s\n",
           l->id.hex, l->has_parent ? l->parent.hex : "-", cli_date_of(l->created, d, sizeof d),
           l->message, cli_human(l->bytes_added, h, sizeof h));
    printf("files:\n");
    for (size_t i = 0; i < l->nfiles; i++) {
        const store_file *f = &l->files[i];
        printf("  %-24s %14" PRIu64 " bytes  %04o  %zu chunks of %" PRIu32 ", %zu"
               " with data (%s)\n",
               f->name, f->size, (unsigned)f->mode, f->nchunks, f->chunk_size, f->ndata,
               cli_human(file_data_bytes(f), h, sizeof h));
    }
    if (ident->has_hardware_model)
        printf("hardware model: PlatformVersion %" PRId64 ", MinimumSupportedOS %s, "
               "DataRepresentationVersion %" PRId64 "\n",
               ident->platform_version, ident->minimum_supported_os,
               ident->data_representation_version);
    if (ident->has_machine_identifier)
        printf("machine identifier: ECID %" PRIu64 "\n", ident->ecid);
    if (l->nbindings) {
        printf("saved state bound to:\n");
        for (size_t i = 0; i < l->nbindings; i++)
            printf("  %-16s %s\n", l->bindings[i].key, l->bindings[i].value);
    }
    return 0;
}

static int cmd_inspect(int argc, char **argv)
{
    int json = 0;
    char *pos[1];
    int n;
    if (cli_parse_json_only(argc, argv, pos, 1, &n, &json, "inspect") || cli_need(n, 1, "inspect"))
        return 1;
    store *st;
    store_id id;
    store_layer *l = NULL;
    store_identity ident;
    if (cli_open_store(&st))
        return 1;
    int rc = cli_resolve(st, pos[0], &id);
    if (!rc && (rc = store_layer_load(st, &id, &l)))
        rc = cli_failed(rc);
    if (!rc && (rc = store_layer_identity(st, &id, &ident)))
        rc = cli_failed(rc);
    store_close(st);
    if (!rc)
        rc = (json ? inspect_json : inspect_text)(l, &ident);
    store_layer_free(l);
    return rc ? 1 : 0;
}

static int cmd_tag(int argc, char **argv)
{
    char *pos[2];
    int n;
    if (cli_parse(argc, argv, NULL, 0, pos, 2, &n, "tag") || cli_need(n, 2, "tag"))
        return 1;
    store *st;
    if (cli_open_store(&st))
        return 1;
    int rc = store_tag(st, pos[0], pos[1]);
    store_close(st);
    return rc ? cli_failed(rc) : 0;
}

static int cmd_untag(int argc, char **argv)
{
    char *pos[1];
    int n;
    if (cli_parse(argc, argv, NULL, 0, pos, 1, &n, "untag") || cli_need(n, 1, "untag"))
        return 1;
    store *st;
    if (cli_open_store(&st))
        return 1;
    int rc = store_untag(st, pos[0]);
    store_close(st);
    return rc ? cli_failed(rc) : 0;
}

const cli_verb cli_layer_verbs[] = {
    {"import", cmd_import, "import BUNDLE|FILE|- [TAG] [--include-restore-image] [--chunk-size N] [-v]\n"
     "  strata import --from-tart DIR [TAG]",
     "Ingest a VZ bundle directory as a root layer, optionally tagged. Prints the layer id.\n"
     "A FILE (or - for stdin) is an archive made by export: the same layer id comes back,\n"
     "every chunk checked. --from-tart DIR makes a layer of a tart VM directory (disk cloned).\n"
     "RestoreImage.ipsw is skipped unless --include-restore-image is given. -v tells how\n"
     "much was read and stored."},
    {"clone", cmd_clone, "clone REF DIR [--with-state | --tart]",
     "Make DIR a writable bundle cloned from layer REF (copy-on-write where the filesystem\n"
     "can share blocks; holes are never filled). DIR must not exist and must be on the\n"
     "store's volume. DIR/.strata records the layer it came from. A saved state is cloned\n"
     "without its state (the disk it was saved with) unless --with-state, which keeps it\n"
     "for `run DIR --resume`.\n"
     "--tart writes DIR as a tart VM directory (config.json, disk.img, nvram.bin) that\n"
     "`tart run` opens; in ~/.tart/vms/NAME tart lists it. It is not a strata clone (no\n"
     "DIR/.strata): `import --from-tart DIR` makes a layer of it again (docs/tart.md)."},
    {"commit", cmd_commit, "commit DIR [-m MESSAGE] [-t TAG] [-v]",
     "Make a child layer of the clone DIR's layer from DIR's current files. Only chunks\n"
     "whose blocks changed since the clone are read. Prints the new layer id."},
    {"log", cmd_log, "log REF [--json]",
     "The chain of layers from REF to its root: id, date, bytes added, message."},
    {"diff", cmd_diff, "diff REF_A REF_B [--json]",
     "Per file: chunks and bytes that differ between two layers."},
    {"ls", cmd_ls, "ls [--json] [--unreachable] | ls --remote HOST/REPO [--json] [--insecure]",
     "Every layer, with its tags; a layer that can't be read is listed as such (with\n"
     "\"error\" in --json). --unreachable: the layers no tag or clone reaches, and since\n"
     "when; gc removes them after their grace period. --remote: the tags, layer ids and\n"
     "sizes in a registry's repository."},
    {"inspect", cmd_inspect, "inspect REF [--json]",
     "A layer's files, chunks, identity (HardwareModel, MachineIdentifier decoded) and\n"
     "saved-state binding."},
    {"tag", cmd_tag, "tag REF NAME",
     "Point tag NAME at layer REF (moving it if it exists). NAME is NAME or NAME:TAG:\n"
     "NAME of [a-z0-9._-] starting with a letter or digit, TAG of [A-Za-z0-9_.-] not\n"
     "starting with '.' or '-', 128 characters in all at most."},
    {"untag", cmd_untag, "untag NAME", "Remove a tag; the layer stays until gc."},
    {NULL, NULL, NULL, NULL},
};
