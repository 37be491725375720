/*
 * cli: the strata command. It parses arguments, calls the modules and
 * prints; nothing below it prints. Each verb group is a file of its own
 * (git's builtin/) with a table of its verbs; main.c puts the tables
 * together. This header holds what those files share.
 */
#ifndef STRATA_CLI_H
#define STRATA_CLI_H

#include "../base/error.h"
#include "../base/file.h"
#include "../boot/boot.h"
#include "../store/store.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

typedef struct {
    const char *name; /* NULL ends a table */
    int (*run)(int argc, char **argv); /* argv[0] is the verb; returns the exit code */
    const char *usage;
    const char *help;
} cli_verb;

/* the verb tables, each ended by a NULL name */
extern const cli_verb cli_layer_verbs[];
extern const cli_verb cli_upkeep_verbs[];
extern const cli_verb cli_vm_verbs[];
extern const cli_verb cli_archive_verbs[];
extern const cli_verb cli_remote_verbs[];
extern const cli_verb cli_create_verbs[]; /* create, set (cli/create.c) */
extern const cli_verb cli_reach_verbs[];  /* ip, ssh, screenshot (cli/reach.c) */
extern const cli_verb cli_tart_verbs[];   /* tart SUBCOMMAND (cli/tart.c) */
/* the tart-compatible command (cli/tart.c): argv[0] is "tart", argv[1] the
 * subcommand; returns the exit code tart would */
int cli_tart(int argc, char **argv);
/* create macos NAME ... (cli/macos.c); argv[0] is "macos" */
int cli_create_macos(int argc, char **argv);
int cli_remote_ls(int argc, char **argv); /* ls --remote REPO (cli/remote.c) */
/* Take every "FLAG TAG=PATH[:ro]" (or FLAG=...) out of argv, each checked
 * by boot_share_make (cli/create.c); prints and returns 1 on a bad one. */
int cli_take_shares(int *argc, char **argv, const char *flag, boot_share **out, size_t *n);
void cli_free_shares(boot_share *v, size_t n);

/* archive.c: import of an archive (FILE or -) or a tart VM (--from-tart), which
 * layers.c's import hands over when its argument is not a bundle directory */
int cli_import_is_archive(int argc, char **argv);
int cli_archive_import(int argc, char **argv);

/* ---- output ---- */

/* "strata: <message>" on stderr; returns 1, the exit code of a failure */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* cli_fail with the message of the failure that returned rc (a negative
 * errno from any module): err_message_for(rc); returns 1 */
int cli_failed(int rc);
void cli_note(void *ctx, const char *line); /* a module's note, on stderr */

/* JSON goes through jansson: a verb builds its json_t and cli_json_print
 * prints it, compact, keys in the order they were set, with a newline. */
int cli_json_print(json_t *v); /* frees v; 0, or 1 after printing the error (v NULL: out of memory) */
json_t *cli_json_text(const char *s); /* a string; NULL is "", bytes that are not UTF-8 U+FFFD */
json_t *cli_json_u64(uint64_t v);     /* a number, exact up to 2^64-1 */
json_t *cli_json_seconds(double secs); /* a number of seconds, to the millisecond */
/* {"id":..,"parent":..,"created":..,"message":..,"bytes_added":N}, to add to */
json_t *cli_json_layer_head(const store_layer *l);
const char *cli_human(uint64_t bytes, char *buf, size_t n); /* "1.5 GiB" */
const char *cli_date_of(int64_t t, char *buf, size_t n);    /* ISO 8601, UTC */

/* progress on a terminal (tty set), nothing when piped */
typedef struct {
    int tty;
    time_t last;
    char what[256];
} cli_progress_state;
void cli_progress(void *ctx, const char *what, uint64_t done, uint64_t total);

/* ---- arguments ---- */

typedef struct {
    const char *name;    /* "--json" */
    int takes_value;
    const char **value;  /* set to the value, if takes_value */
    int *flag;           /* set to 1, if not */
} cli_opt;

/* Split argv into options (any position) and at most maxpos positionals;
 * "--" ends the options. Prints and returns 1 on a bad argument. */
int cli_parse(int argc, char **argv, const cli_opt *opts, size_t nopts, char **pos, int maxpos,
              int *npos, const char *verb_name);
/* the common case: a verb whose only option is --json */
int cli_parse_json_only(int argc, char **argv, char **pos, int maxpos, int *npos, int *json,
                        const char *verb_name);
/* main() names the verb it runs, whose usage cli_need prints */
void cli_running(const cli_verb *v);
/* print the verb's usage and return 1 unless npos >= min */
int cli_need(int npos, int min, const char *verb_name);
int cli_parse_uint(const char *flag, const char *s, unsigned long max, unsigned long *out);
/* "4096" (MiB), "512M", "4G" */
int cli_parse_memory(const char *s, uint64_t *mib);

/* ---- the store ---- */

int cli_open_store(store **st);
/* the layer a REF names (boot_resolve: a tag, id or prefix, clone directory
 * or pulled HOST/REPO:TAG); 0, or 1 after printing the error */
int cli_resolve(store *st, const char *ref, store_id *id);

/* ---- registries (remote.c) ---- */

/* Pull ref (HOST/REPO:TAG or @DIGEST) into st under tag (NULL: the remote
 * name as remote_ref_local_tag makes it), printing progress and the summary;
 * *pulled (may be NULL) gets the layer. A layer whose guest this host can't
 * run is refused before any pack, unless any_host. 0, or 1 after printing
 * the error. note (may be NULL) is printed once the manifest is read and
 * the guest accepted, before anything is fetched. */
int cli_pull_remote(store *st, const char *ref, const char *tag, unsigned jobs, int insecure,
                    int json, int any_host, const char *note, store_id *pulled);

#endif
