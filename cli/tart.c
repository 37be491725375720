/*
 * The `tart` command: strata driven as tart is, by the fleet tools that run
 * `tart` from the PATH (Orchard's worker, gitlab-tart-executor, Buildkite's
 * plugin). `strata tart SUBCOMMAND ...`, or strata run through a link named
 * tart. Subcommands, flags, output and exit codes follow tart's own
 * (Sources/tart/Commands/, one Swift file per subcommand): 0, 1 for a failure, 2 for a VM that
 * does not exist, is not running or already runs, 64 for a usage error.
 * Each flag strata can't honour is either ignored with a note on stderr or
 * refused with one line naming it (docs/tart.md, "The `tart` command").
 * The VMs are boot/'s (boot.h, "tart-compatible VMs").
 */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TART_USAGE 64 /* ArgumentParser's exit code for a usage error (EX_USAGE) */
#define TART_NO_VM 2  /* tart's for a VM that does not exist, is not running, already runs */

/* ---------- arguments, as tart's ArgumentParser takes them ---------- */

typedef enum { T_USE, T_IGNORE, T_REFUSE } t_fate;

typedef struct {
    const char *name, *alias; /* "--timeout", "-t" (alias may be NULL) */
    int takes_value;
    t_fate fate;
    const char *why;     /* T_IGNORE, T_REFUSE: the note or the reason */
    const char **value;  /* T_USE with a value: the last one given */
    int *flag;           /* T_USE without one: set to 1 */
    const char **list;   /* T_USE, repeatable (--dir): every value, up to T_LIST_MAX */
    size_t *nlist;
} t_opt;

#define T_LIST_MAX 32

static int usage_error(const char *sub, const char *fmt, const char *arg)
{
    fprintf(stderr, "strata: tart %s: ", sub);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return TART_USAGE;
}

static int take_value(const t_opt *o, const char *v, const char *sub)
{
    if (o->list) {
        if (*o->nlist == T_LIST_MAX)
            return usage_error(sub, "%s is given too many times", o->name);
        o->list[(*o->nlist)++] = v;
    } else if (o->value) {
        *o->value = v;
    }
    return 0;
}

/* 0, or the exit code after printing why */
static int t_parse(int argc, char **argv, const t_opt *opts, size_t nopts, char **pos, int maxpos,
                   int *npos, const char *sub)
{
    *npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1] || !strcmp(a, "--")) {
            if (!strcmp(a, "--") && ++i >= argc)
                break;
            if (*npos == maxpos)
                return usage_error(sub, "unexpected argument '%s'", argv[i]);
            pos[(*npos)++] = argv[i];
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const t_opt *o = NULL;
        for (size_t k = 0; k < nopts && !o; k++)
            if ((strlen(opts[k].name) == len && !strncmp(a, opts[k].name, len)) ||
                (opts[k].alias && strlen(opts[k].alias) == len && !strncmp(a, opts[k].alias, len)))
                o = &opts[k];
        if (!o)
            return usage_error(sub, "unknown option '%s'", a);
        const char *v = NULL;
        if (o->takes_value) {
            if (eq)
                v = eq + 1;
            else if (i + 1 < argc)
                v = argv[++i];
            else
                return usage_error(sub, "%s needs a value", o->name);
        } else if (eq) {
            return usage_error(sub, "%s takes no value", o->name);
        }
        if (o->fate == T_REFUSE) {
            fprintf(stderr, "strata: tart %s: %s is not supported: %s\n", sub, o->name, o->why);
            return 1;
        }
        if (o->fate == T_IGNORE) {
            fprintf(stderr, "strata: tart %s: %s ignored: %s\n", sub, o->name, o->why);
            continue;
        }
        int rc = o->takes_value ? take_value(o, v, sub) : 0;
        if (rc)
            return rc;
        if (!o->takes_value && o->flag)
            *o->flag = 1;
    }
    return 0;
}

static int need(int npos, int min, const char *sub, const char *usage)
{
    if (npos >= min)
        return 0;
    fprintf(stderr, "strata: tart %s: missing argument\nusage: tart %s\n", sub, usage);
    return TART_USAGE;
}

/* a whole number from 0 to max; the exit code on a bad one */
static int t_uint(const char *sub, const char *flag, const char *s, unsigned long max,
                  unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = s ? strtoul(s, &end, 10) : 0;
    if (!s)
        return 0;
    if (errno || *end || !*s || *s == '-' || v > max) {
        fprintf(stderr, "strata: tart %s: %s %s: a whole number from 0 to %lu\n", sub, flag, s, max);
        return TART_USAGE;
    }
    *out = v;
    return 0;
}

/* --format text|json; the exit code on another */
static int t_format(const char *sub, const char *s, int *json)
{
    *json = s && !strcmp(s, "json");
    if (s && !*json && strcmp(s, "text"))
        return usage_error(sub, "--format '%s' must be text or json", s);
    return 0;
}

/* ---------- failures, with tart's exit codes ---------- */

/* a library failure: one line; 2 where tart gives 2 (no such VM, not
 * running, already running), else 1 */
static int t_failed(int rc)
{
    cli_failed(rc);
    return rc == -ENOENT || rc == -ESRCH || rc == -EALREADY ? TART_NO_VM : 1;
}

static int open_store(store **st)
{
    return cli_open_store(st) ? 1 : 0;
}

/* the VM name; prints and returns the exit code if there is none */
static int find_vm(store *st, const char *name, boot_tart_vm *vm)
{
    int rc = boot_tart_find(st, name, vm);
    return rc ? t_failed(rc) : 0;
}

/* tart takes registry credentials from these; strata from docker's config */
static void note_tart_credentials(void)
{
    if (getenv("TART_REGISTRY_USERNAME") || getenv("TART_REGISTRY_PASSWORD"))
        fprintf(stderr, "strata: TART_REGISTRY_USERNAME/PASSWORD ignored: strata takes registry "
                        "credentials from docker's config.json (strata login)\n");
}

/* ---------- pull, clone ---------- */

/* pull remote through `strata pull`'s own call, and remember it for list */
static int pull_remote(store *st, const char *remote, const char *concurrency, int insecure)
{
    unsigned long jobs = 0;
    int rc = t_uint("pull", "--concurrency", concurrency, 64, &jobs);
    if (rc)
        return rc;
    note_tart_credentials();
    store_id pulled;
    if (cli_pull_remote(st, remote, NULL, (unsigned)jobs, insecure, 0, 0, NULL, &pulled))
        return 1;
    rc = boot_tart_remember_pull(st, remote);
    return rc ? t_failed(rc) : 0;
}

static const char *const no_dedup = "strata stores what two images share once, always";

static int t_pull(int argc, char **argv)
{
    const char *concurrency = NULL;
    int insecure = 0;
    t_opt opts[] = {{"--insecure", NULL, 0, T_USE, NULL, NULL, &insecure, NULL, NULL},
                    {"--concurrency", NULL, 1, T_USE, NULL, &concurrency, NULL, NULL, NULL},
                    {"--deduplicate", NULL, 0, T_IGNORE, no_dedup, NULL, NULL, NULL, NULL}};
    char *pos[1];
    int n, rc = t_parse(argc, argv, opts, 3, pos, 1, &n, "pull");
    if (rc || (rc = need(n, 1, "pull", "pull REMOTE_NAME [--insecure] [--concurrency N]")))
        return rc;
    if (!strchr(pos[0], '/'))
        return cli_fail("tart pull: '%s' is not a remote name (HOST/REPO:TAG)", pos[0]);
    store *st;
    if (open_store(&st))
        return 1;
    rc = pull_remote(st, pos[0], concurrency, insecure);
    store_close(st);
    return rc;
}

static int t_clone(int argc, char **argv)
{
    const char *concurrency = NULL;
    int insecure = 0;
    t_opt opts[] = {{"--insecure", NULL, 0, T_USE, NULL, NULL, &insecure, NULL, NULL},
                    {"--concurrency", NULL, 1, T_USE, NULL, &concurrency, NULL, NULL, NULL},
                    {"--deduplicate", NULL, 0, T_IGNORE, no_dedup, NULL, NULL, NULL, NULL},
                    {"--prune-limit", NULL, 1, T_IGNORE,
                     "strata never prunes to make room: a clone costs nothing until written",
                     NULL, NULL, NULL, NULL}};
    char *pos[2];
    int n, rc = t_parse(argc, argv, opts, 4, pos, 2, &n, "clone");
    if (rc || (rc = need(n, 2, "clone", "clone SOURCE_NAME NEW_NAME [--insecure] [--concurrency N]")))
        return rc;
    if ((rc = boot_tart_name_check(pos[1]))) {
        cli_failed(rc);
        return TART_USAGE;
    }
    store *st;
    if (open_store(&st))
        return 1;
    /* a remote name the store lacks is pulled first, as tart clone does */
    boot_ref r;
    boot_tart_vm vm;
    int local = !strchr(pos[0], '/') && !boot_tart_name_check(pos[0]) && !boot_tart_find(st, pos[0], &vm);
    rc = local ? 0 : boot_resolve(st, pos[0], &r);
    if (rc == -ENOENT && r.kind == BOOT_REF_REGISTRY)
        rc = pull_remote(st, pos[0], concurrency, insecure);
    else if (rc)
        rc = t_failed(rc);
    else if (!rc && !local && r.kind == BOOT_REF_REGISTRY && (rc = boot_tart_remember_pull(st, pos[0])))
        rc = t_failed(rc); /* pulled before, by strata pull: listed from now on */
    if (!rc && (rc = boot_tart_clone(st, pos[0], pos[1], cli_note, NULL)))
        rc = t_failed(rc); /* a missing source is 2, as tart's VMDoesNotExist */
    store_close(st);
    return rc;
}

/* ---------- set ---------- */

/* --display WIDTHxHEIGHT[px|pt]: 0 keeps that side (as tart) */
static int parse_display(const char *s, unsigned *w, unsigned *h)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%s", s);
    size_t len = strlen(buf);
    if (len > 2 && (!strcmp(buf + len - 2, "px") || !strcmp(buf + len - 2, "pt")))
        buf[len - 2] = 0;
    char *x = strchr(buf, 'x'), *end1, *end2;
    if (!x)
        return usage_error("set", "--display '%s' must be WIDTHxHEIGHT", s);
    *x = 0;
    unsigned long a = strtoul(buf, &end1, 10), b = strtoul(x + 1, &end2, 10);
    if (*end1 || *end2 || a > 16384 || b > 16384)
        return usage_error("set", "--display '%s' must be WIDTHxHEIGHT", s);
    *w = (unsigned)a;
    *h = (unsigned)b;
    return 0;
}

static int t_set(int argc, char **argv)
{
    const char *cpu = NULL, *memory = NULL, *display = NULL, *disk_size = NULL;
    int random_mac = 0, random_serial = 0;
    t_opt opts[] = {
        {"--cpu", NULL, 1, T_USE, NULL, &cpu, NULL, NULL, NULL},
        {"--memory", NULL, 1, T_USE, NULL, &memory, NULL, NULL, NULL},
        {"--display", NULL, 1, T_USE, NULL, &display, NULL, NULL, NULL},
        {"--display-refit", NULL, 0, T_IGNORE, "strata's display-reconfigure is set by strata set",
         NULL, NULL, NULL, NULL},
        {"--no-display-refit", NULL, 0, T_IGNORE,
         "strata's display-reconfigure is set by strata set", NULL, NULL, NULL, NULL},
        {"--random-mac", NULL, 0, T_USE, NULL, NULL, &random_mac, NULL, NULL},
        {"--random-serial", NULL, 0, T_USE, NULL, NULL, &random_serial, NULL, NULL},
        {"--disk", NULL, 1, T_REFUSE,
         "replacing a VM's disk with a host file is not offered; strata set --add-disk adds one",
         NULL, NULL, NULL, NULL},
        {"--disk-size", NULL, 1, T_USE, NULL, &disk_size, NULL, NULL, NULL}};
    char *pos[1];
    int n, rc = t_parse(argc, argv, opts, sizeof opts / sizeof *opts, pos, 1, &n, "set");
    if (rc || (rc = need(n, 1, "set", "set NAME [--cpu N] [--memory MB] [--display WxH] "
                                      "[--random-mac] [--random-serial] [--disk-size GB]")))
        return rc;
    unsigned long cpus = 0, mem = 0, gb = 0;
    unsigned w = 0, h = 0;
    if ((rc = t_uint("set", "--cpu", cpu, 64, &cpus)) || (rc = t_uint("set", "--memory", memory, 1u << 20, &mem)) ||
        (rc = t_uint("set", "--disk-size", disk_size, 65535, &gb)) ||
        (display && (rc = parse_display(display, &w, &h))))
        return rc;
    store *st;
    if (open_store(&st))
        return 1;
    boot_tart_vm vm;
    if ((rc = find_vm(st, pos[0], &vm))) {
        store_close(st);
        return rc;
    }
    boot_set_opts so = {.target = vm.dir, .cpus = (unsigned)cpus, .memory_mib = mem,
                        .disk_bytes = (uint64_t)gb * 1000000000ull, /* tart's GB are decimal */
                        .mac = random_mac ? "auto" : NULL, .note = cli_note};
    if (display) { /* a side given as 0 keeps its size */
        so.display_width = w ? w : vm.display_width;
        so.display_height = h ? h : vm.display_height;
    }
    int made, changed;
    store_id unused;
    rc = boot_set(st, &so, &made, &unused);
    /* a Linux VM has no serial number: tart leaves it as it is too */
    if (!rc && random_serial)
        rc = boot_tart_random_serial(st, pos[0], &changed);
    store_close(st);
    return rc ? t_failed(rc) : 0;
}

/* ---------- run ---------- */

/* --dir [NAME:]PATH[:ro][,tag=TAG] (tart's DirectoryShare) as a share for
 * this run; the exit code on one strata can't open */
static int dir_share(const char *spec, boot_share *out)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", spec);
    int ro = 0;
    const char *tag = BOOT_MACOS_AUTOMOUNT_TAG; /* tart's default mount tag */
    char *last = strrchr(buf, ':');
    if (last) { /* options, if the last part holds any */
        int found = 0;
        char opts[256];
        snprintf(opts, sizeof opts, "%s", last + 1);
        static char tagbuf[128];
        for (char *o = strtok(opts, ","); o; o = strtok(NULL, ","))
            if (!strcmp(o, "ro"))
                ro = found = 1;
            else if (!strncmp(o, "tag=", 4)) {
                snprintf(tagbuf, sizeof tagbuf, "%s", o + 4);
                tag = tagbuf;
                found = 1;
            }
        if (found)
            *last = 0;
    }
    if (!strncmp(buf, "http:", 5) || !strncmp(buf, "https:", 6))
        return cli_fail("tart run: --dir %s: a share from a URL (an archive to download) is not "
                        "supported", spec);
    char *path = buf, *colon = strchr(buf, ':');
    if (colon) /* NAME:PATH: the name of a directory within tart's one automount share */
        path = colon + 1;
    int rc = boot_share_make(tag, path, ro, out);
    return rc ? cli_fail("tart run: --dir %s: %s", spec, err_message_for(rc)) : 0;
}

/* --root-disk-opts ro|sync=..|caching=.. onto the run's device options */
static int root_disk_opts(const char *s, boot_run_opts *o)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *opt = strtok(buf, ","); opt; opt = strtok(NULL, ","))
        if (!strncmp(opt, "sync=", 5))
            o->disk_sync = opt + 5;
        else if (!strncmp(opt, "caching=", 8))
            o->disk_caching = opt + 8;
        else if (!strcmp(opt, "ro"))
            return cli_fail("tart run: --root-disk-opts ro is not supported: an instance's disk is "
                            "its own clone, always writable");
        else
            return cli_fail("tart run: --root-disk-opts: unknown option '%s'", opt);
    return 0;
}

static void started(void *ctx, const char *name)
{
    (void)ctx;
    fprintf(stderr, "strata: VM running as instance %s (tart stop or tart suspend it)\n", name);
}

static int t_run(int argc, char **argv)
{
    const char *dirs[T_LIST_MAX], *rosetta = NULL, *disk_opts = NULL;
    size_t ndirs = 0;
    int gui = 0, console = 0, unused = 0, softnet = 0;
    int qemu = !strcmp(boot_default_driver(), "qemu");
    t_opt opts[] = {
        {"--no-graphics", NULL, 0, T_USE, NULL, NULL, &unused, NULL, NULL}, /* strata's default */
        {"--graphics", NULL, 0, T_USE, NULL, NULL, &gui, NULL, NULL},
        {"--vnc", NULL, 0, T_USE, NULL, NULL, &gui, NULL, NULL},
        {"--vnc-experimental", NULL, 0, T_USE, NULL, NULL, &gui, NULL, NULL},
        {"--serial", NULL, 0, T_USE, NULL, NULL, &console, NULL, NULL},
        {"--suspendable", NULL, 0, T_USE, NULL, NULL, &unused, NULL, NULL}, /* always, where it can be */
        {"--dir", NULL, 1, T_USE, NULL, NULL, NULL, dirs, &ndirs},
        {"--rosetta", NULL, 1, T_USE, NULL, &rosetta, NULL, NULL, NULL},
        {"--root-disk-opts", NULL, 1, T_USE, NULL, &disk_opts, NULL, NULL, NULL},
        {"--net-softnet", NULL, 0, qemu ? T_USE : T_REFUSE,
         "strata runs no Softnet; its vz VMs share macOS's NAT network", NULL, &softnet, NULL, NULL},
        {"--nested", NULL, 0, T_IGNORE, "strata's drivers don't offer nested virtualization", NULL,
         NULL, NULL, NULL},
        {"--no-audio", NULL, 0, T_IGNORE, "strata's VMs have no audio device", NULL, NULL, NULL, NULL},
        {"--no-clipboard", NULL, 0, T_IGNORE, "strata shares no clipboard", NULL, NULL, NULL, NULL},
        {"--no-trackpad", NULL, 0, T_IGNORE, "strata picks the input devices", NULL, NULL, NULL, NULL},
        {"--no-pointer", NULL, 0, T_IGNORE, "strata picks the input devices", NULL, NULL, NULL, NULL},
        {"--no-keyboard", NULL, 0, T_IGNORE, "strata picks the input devices", NULL, NULL, NULL, NULL},
        {"--capture-system-keys", NULL, 0, T_IGNORE, "strata's window passes no system keys", NULL,
         NULL, NULL, NULL},
        {"--serial-path", NULL, 1, T_REFUSE, "the console goes to the instance's .console.log", NULL,
         NULL, NULL, NULL},
        {"--recovery", NULL, 0, T_REFUSE, "strata does not boot macOS recovery", NULL, NULL, NULL, NULL},
        {"--disk", NULL, 1, T_REFUSE, "extra disks are part of the VM: strata set --add-disk", NULL,
         NULL, NULL, NULL},
        {"--net-bridged", NULL, 1, T_REFUSE, "strata's VMs use NAT networking only", NULL, NULL, NULL, NULL},
        {"--net-host", NULL, 0, T_REFUSE, "strata's VMs use NAT networking only", NULL, NULL, NULL, NULL},
        {"--net-softnet-allow", NULL, 1, T_REFUSE, "strata runs no Softnet to enforce it", NULL, NULL,
         NULL, NULL},
        {"--net-softnet-block", NULL, 1, T_REFUSE, "strata runs no Softnet to enforce it", NULL, NULL,
         NULL, NULL},
        {"--net-softnet-expose", NULL, 1, T_REFUSE, "strata runs no Softnet to enforce it", NULL, NULL,
         NULL, NULL}};
    char *pos[1];
    int n, rc = t_parse(argc, argv, opts, sizeof opts / sizeof *opts, pos, 1, &n, "run");
    if (rc || (rc = need(n, 1, "run", "run NAME [--no-graphics] [--dir [NAME:]PATH[:ro][,tag=TAG]] "
                                      "[--suspendable] [--root-disk-opts OPTS]")))
        return rc;
    if (softnet)
        fprintf(stderr, "strata: tart run: --net-softnet: qemu's user-mode network already gives "
                        "the VM a network of its own, unreachable from other VMs\n");
    boot_run_opts o = {.gui = gui, .console = console, .rosetta = rosetta, .note = cli_note,
                       .started = started};
    boot_share shares[T_LIST_MAX];
    size_t nshares = 0;
    for (size_t i = 0; !rc && i < ndirs; i++)
        if (!(rc = dir_share(dirs[i], &shares[nshares])))
            nshares++;
    if (!rc && disk_opts)
        rc = root_disk_opts(disk_opts, &o);
    o.shares = shares;
    o.nshares = nshares;
    store *st = NULL;
    boot_tart_vm vm;
    if (!rc && !(rc = open_store(&st)) && !(rc = find_vm(st, pos[0], &vm)) &&
        (rc = boot_tart_run(st, pos[0], &o)))
        rc = t_failed(rc);
    if (st)
        store_close(st);
    for (size_t i = 0; i < nshares; i++)
        free(shares[i].tag), free(shares[i].path);
    return rc;
}

/* ---------- ip, stop, suspend, delete ---------- */

static int t_ip(int argc, char **argv)
{
    const char *wait = NULL, *resolver = NULL;
    t_opt opts[] = {{"--wait", NULL, 1, T_USE, NULL, &wait, NULL, NULL, NULL},
                    {"--resolver", NULL, 1, T_USE, NULL, &resolver, NULL, NULL, NULL}};
    char *pos[1];
    int n, rc = t_parse(argc, argv, opts, 2, pos, 1, &n, "ip");
    if (rc || (rc = need(n, 1, "ip", "ip NAME [--wait SECONDS] [--resolver dhcp|arp]")))
        return rc;
    unsigned long wait_s = 0;
    if ((rc = t_uint("ip", "--wait", wait, 65535, &wait_s)))
        return rc;
    boot_resolver how = BOOT_RESOLVER_DEFAULT; /* dhcp: qemu's forward, vz's lease */
    if (resolver && !strcmp(resolver, "arp"))
        how = BOOT_RESOLVER_ARP;
    else if (resolver && !strcmp(resolver, "agent"))
        return cli_fail("tart ip: --resolver agent needs tart's guest agent, which strata does not "
                        "speak: use dhcp");
    else if (resolver && strcmp(resolver, "dhcp"))
        return usage_error("ip", "--resolver '%s' must be dhcp, arp or agent", resolver);
    store *st;
    if (open_store(&st))
        return 1;
    boot_tart_vm vm;
    boot_address a;
    char iname[BOOT_TART_NAME_MAX + 8];
    snprintf(iname, sizeof iname, "tart:%s", pos[0]);
    if (!(rc = find_vm(st, pos[0], &vm)) && (rc = boot_ip(st, iname, how, (int)wait_s, &a))) {
        fprintf(stderr, "strata: no IP address found%s (%s)\n",
                vm.state == BOOT_TART_RUNNING ? "" : ", is your VM running?", err_message_for(rc));
        rc = 1;
    }
    store_close(st);
    if (rc)
        return rc;
    /* qemu's user-mode network: the guest's ssh is a forwarded port on the
     * host, never port 22, so the port is printed too (a tool that appends
     * :22 then fails instead of reaching the host's own sshd) */
    if (a.port == 22)
        printf("%s\n", a.address);
    else
        printf("%s:%u\n", a.address, a.port);
    return 0;
}

static int t_stop(int argc, char **argv)
{
    const char *timeout = NULL;
    t_opt opts[] = {{"--timeout", "-t", 1, T_USE, NULL, &timeout, NULL, NULL, NULL}};
    char *pos[1];
    int n, rc = t_parse(argc, argv, opts, 1, pos, 1, &n, "stop");
    if (rc || (rc = need(n, 1, "stop", "stop NAME [--timeout SECONDS]")))
        return rc;
    unsigned long t = 30;
    if ((rc = t_uint("stop", "--timeout", timeout, 86400, &t)))
        return rc;
    store *st;
    if (open_store(&st))
        return 1;
    boot_tart_vm vm;
    int forced = 0;
    if (!(rc = find_vm(st, pos[0], &vm)) && (rc = boot_tart_stop(st, pos[0], (int)t, &forced)))
        rc = t_failed(rc);
    store_close(st);
    if (!rc && forced)
        fprintf(stderr, "strata: VM %s ignored the request to shut down for %lu s; it was forced off\n",
                pos[0], t);
    return rc;
}

static int t_suspend(int argc, char **argv)
{
    char *pos[1];
    int n, rc = t_parse(argc, argv, NULL, 0, pos, 1, &n, "suspend");
    if (rc || (rc = need(n, 1, "suspend", "suspend NAME")))
        return rc;
    store *st;
    if (open_store(&st))
        return 1;
    boot_tart_vm vm;
    store_id state;
    if (!(rc = find_vm(st, pos[0], &vm)) && (rc = boot_tart_suspend(st, pos[0], &state)))
        rc = t_failed(rc);
    store_close(st);
    if (!rc)
        fprintf(stderr, "strata: VM %s suspended into layer %.12s\n", pos[0], state.hex);
    return rc;
}

static int t_delete(int argc, char **argv)
{
    char *pos[64];
    int n, rc = t_parse(argc, argv, NULL, 0, pos, 64, &n, "delete");
    if (rc || (rc = need(n, 1, "delete", "delete NAME...")))
        return rc;
    store *st;
    if (open_store(&st))
        return 1;
    boot_tart_vm vm;
    for (int i = 0; i < n && !rc; i++) /* as tart: up to the first failure */
        if (!(rc = find_vm(st, pos[i], &vm)) && (rc = boot_tart_delete(st, pos[i])))
            rc = t_failed(rc);
    store_close(st);
    return rc;
}

/* ---------- list, get, fqn ---------- */

static const char *state_name(boot_tart_state s)
{
    return s == BOOT_TART_RUNNING ? "running" : s == BOOT_TART_SUSPENDED ? "suspended" : "stopped";
}

/* "3 minutes ago", as RelativeDateTimeFormatter's full style says it */
static const char *relative(int64_t t, char *buf, size_t n)
{
    int64_t d = (int64_t)time(NULL) - t;
    static const struct { int64_t secs; const char *unit; } units[] = {
        {365 * 86400, "year"}, {30 * 86400, "month"}, {7 * 86400, "week"},
        {86400, "day"}, {3600, "hour"}, {60, "minute"}, {1, "second"}};
    if (d < 0)
        d = 0;
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (d >= units[i].secs || units[i].secs == 1) {
            int64_t k = d / units[i].secs;
            snprintf(buf, n, "%" PRId64 " %s%s ago", k, units[i].unit, k == 1 ? "" : "s");
            break;
        }
    return buf;
}

/* rows of cells as tart's TextTable prints them (Style.plain): a header,
 * columns padded to their widest cell, one space apart, no trailing blanks */
static void print_table(char **cells, size_t rows, size_t cols)
{
    size_t width[16] = {0};
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++)
            if (strlen(cells[r * cols + c]) > width[c])
                width[c] = strlen(cells[r * cols + c]);
    for (size_t r = 0; r < rows; r++) {
        char line[4096];
        size_t len = 0;
        for (size_t c = 0; c < cols && len < sizeof line; c++)
            len += (size_t)snprintf(line + len, sizeof line - len, "%-*s%s", (int)width[c],
                                    cells[r * cols + c], c + 1 < cols ? " " : "");
        while (len > 0 && line[len - 1] == ' ')
            line[--len] = 0;
        printf("%s\n", line);
    }
}

/* JSON as tart prints it: pretty, fields in its struct's order */
static int print_pretty(json_t *v)
{
    char *text = v ? json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(v);
    if (!text)
        return cli_failed(-ENOMEM);
    puts(text);
    free(text);
    return 0;
}

static int t_list(int argc, char **argv)
{
    const char *format = NULL, *source = NULL;
    int quiet = 0, json;
    t_opt opts[] = {{"--format", NULL, 1, T_USE, NULL, &format, NULL, NULL, NULL},
                    {"--source", NULL, 1, T_USE, NULL, &source, NULL, NULL, NULL},
                    {"--quiet", "-q", 0, T_USE, NULL, NULL, &quiet, NULL, NULL}};
    char *pos[1];
    int n, rc = t_parse(argc, argv, opts, 3, pos, 0, &n, "list");
    if (rc || (rc = t_format("list", format, &json)))
        return rc;
    if (source && strcmp(source, "local") && strcmp(source, "oci"))
        return usage_error("list", "'%s' is not a valid <source>", source);
    store *st;
    if (open_store(&st))
        return 1;
    boot_tart_vm *v;
    size_t nv;
    rc = boot_tart_list(st, &v, &nv);
    store_close(st);
    if (rc)
        return t_failed(rc);
    json_t *all = json_array();
    char **cells = calloc((nv + 1) * 6, sizeof *cells);
    size_t rows = 1;
    const char *head[] = {"Source", "Name", "Disk", "Size", "Accessed", "State"};
    for (size_t c = 0; cells && c < 6; c++)
        cells[c] = strdup(head[c]);
    for (size_t i = 0; i < nv && all && cells; i++) {
        if (source && strcmp(source, v[i].oci ? "oci" : "local"))
            continue;
        if (quiet) {
            printf("%s\n", v[i].name);
            continue;
        }
        char when[64];
        const char *src = v[i].oci ? "OCI" : "local";
        uint64_t disk_gb = v[i].disk_bytes / 1000000000ull, size_gb = v[i].allocated_bytes / 1000000000ull;
        if (json) {
            json_array_append_new(all, json_pack("{s:s, s:o, s:o, s:o, s:s, s:b, s:s}", "Source", src,
                                                 "Name", cli_json_text(v[i].name), "Disk",
                                                 cli_json_u64(disk_gb), "Size", cli_json_u64(size_gb),
                                                 "Accessed", cli_date_of(v[i].accessed, when, sizeof when),
                                                 "Running", v[i].state == BOOT_TART_RUNNING, "State",
                                                 state_name(v[i].state)));
        } else {
            char **row = cells + rows++ * 6;
            row[0] = strdup(src);
            row[1] = strdup(v[i].name);
            asprintf(&row[2], "%" PRIu64, disk_gb);
            asprintf(&row[3], "%" PRIu64, size_gb);
            row[4] = strdup(relative(v[i].accessed, when, sizeof when));
            row[5] = strdup(state_name(v[i].state));
        }
    }
    free(v);
    int ok = all && cells;
    for (size_t k = 0; ok && k < rows * 6; k++)
        ok = cells[k] != NULL;
    if (!ok)
        rc = cli_failed(-ENOMEM);
    else if (json && !quiet)
        rc = print_pretty(json_incref(all));
    else if (!quiet && rows > 1)
        print_table(cells, rows, 6);
    else if (!quiet)
        putchar('\n'); /* tart prints its empty table: an empty line */
    json_decref(all);
    for (size_t k = 0; cells && k < rows * 6; k++)
        free(cells[k]);
    free(cells);
    return rc;
}

static int t_get(int argc, char **argv)
{
    const char *format = NULL;
    int json;
    t_opt opts[] = {{"--format", NULL, 1, T_USE, NULL, &format, NULL, NULL, NULL}};
    char *pos[1];
    int n, rc = t_parse(argc, argv, opts, 1, pos, 1, &n, "get");
    if (rc || (rc = need(n, 1, "get", "get NAME [--format text|json]")) ||
        (rc = t_format("get", format, &json)))
        return rc;
    store *st;
    if (open_store(&st))
        return 1;
    boot_tart_vm vm;
    rc = find_vm(st, pos[0], &vm);
    store_close(st);
    if (rc)
        return rc;
    char size[32], display[48], cpu[16], mem[32], disk[32];
    snprintf(size, sizeof size, "%.3f", (double)vm.allocated_bytes / 1e9);
    if (vm.display_width)
        snprintf(display, sizeof display, "%ux%u", vm.display_width, vm.display_height);
    else
        display[0] = 0;
    const char *os = vm.os_macos ? "darwin" : "linux"; /* tart's names */
    uint64_t disk_gb = vm.disk_bytes / 1000000000ull;
    if (json)
        return print_pretty(json_pack("{s:s, s:I, s:o, s:o, s:s, s:s, s:s, s:b, s:s}", "OS", os, "CPU",
                                      (json_int_t)vm.cpus, "Memory", cli_json_u64(vm.memory_mib),
                                      "Disk", cli_json_u64(disk_gb), "DiskFormat", "raw", "Size",
                                      size, "Display", display, "Running",
                                      vm.state == BOOT_TART_RUNNING, "State", state_name(vm.state)));
    snprintf(cpu, sizeof cpu, "%u", vm.cpus);
    snprintf(mem, sizeof mem, "%" PRIu64, vm.memory_mib);
    snprintf(disk, sizeof disk, "%" PRIu64, disk_gb);
    char *cells[] = {"OS", "CPU", "Memory", "Disk", "DiskFormat", "Size", "Display", "State",
                     (char *)os, cpu, mem, disk, "raw", size, display, (char *)state_name(vm.state)};
    print_table(cells, 2, 8);
    return 0;
}

static int t_fqn(int argc, char **argv)
{
    char *pos[1];
    int n, rc = t_parse(argc, argv, NULL, 0, pos, 1, &n, "fqn");
    if (rc || (rc = need(n, 1, "fqn", "fqn NAME")))
        return rc;
    if (strchr(pos[0], '/'))
        return cli_fail("tart fqn: strata keeps no manifest digest for %s: its pull made a strata "
                        "layer, named by its own id (strata ls)", pos[0]);
    printf("%s\n", pos[0]); /* a local name is its own fully qualified name, as in tart */
    return 0;
}

/* ---------- what strata does not offer through this entry ---------- */

static int t_exec(int argc, char **argv)
{
    (void)argc, (void)argv;
    return cli_fail("tart exec is not supported: it needs tart's guest agent, which strata does not "
                    "speak; run commands over ssh (tart ip NAME)");
}

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *instead; /* for a subcommand refused: where strata offers it */
} t_sub;

static const t_sub subs[] = {
    {"pull", t_pull, NULL},       {"clone", t_clone, NULL},     {"set", t_set, NULL},
    {"run", t_run, NULL},         {"ip", t_ip, NULL},           {"stop", t_stop, NULL},
    {"suspend", t_suspend, NULL}, {"delete", t_delete, NULL},   {"list", t_list, NULL},
    {"get", t_get, NULL},         {"fqn", t_fqn, NULL},         {"exec", t_exec, NULL},
    {"create", NULL, "strata create linux|macos"},
    {"login", NULL, "strata login"},
    {"logout", NULL, "strata logout"},
    {"push", NULL, "strata push --format tart"},
    {"import", NULL, "strata import --from-tart"},
    {"export", NULL, "strata export"},
    {"prune", NULL, "strata gc"},
    {"rename", NULL, "tart clone and tart delete"},
};

static void tart_usage(FILE *out)
{
    fprintf(out, "usage: tart SUBCOMMAND [ARGS] (strata's tart-compatible entry point, "
                 "docs/tart.md)\n\nsubcommands:");
    for (size_t i = 0; i < sizeof subs / sizeof *subs; i++)
        if (subs[i].run && strcmp(subs[i].name, "exec"))
            fprintf(out, " %s", subs[i].name);
    fputc('\n', out);
}

int cli_tart(int argc, char **argv)
{
    if (argc < 2) {
        tart_usage(stderr);
        return TART_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        tart_usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof subs / sizeof *subs; i++) {
        if (strcmp(subs[i].name, argv[1]))
            continue;
        if (!subs[i].run)
            return cli_fail("tart %s is not supported through the tart entry point: use %s",
                            argv[1], subs[i].instead);
        for (int k = 2; k < argc && strcmp(argv[k], "--"); k++)
            if (!strcmp(argv[k], "--help") || !strcmp(argv[k], "-h")) {
                tart_usage(stdout); /* each subcommand's flags: docs/tart.md */
                return 0;
            }
        return subs[i].run(argc - 1, argv + 1);
    }
    fprintf(stderr, "strata: tart: unknown subcommand '%s' (tart --help lists them)\n", argv[1]);
    return TART_USAGE;
}

static int cmd_tart(int argc, char **argv)
{
    return cli_tart(argc, argv);
}

const cli_verb cli_tart_verbs[] = {
    {"tart", cmd_tart, "tart SUBCOMMAND [ARGS]",
     "tart's command line, for the fleet tools that drive tart (Orchard, gitlab-tart-executor,\n"
     "Buildkite's plugin): pull, clone, set, run, ip, stop, suspend, delete, list, get, fqn,\n"
     "with tart's flags, output and exit codes. The same as running strata through a link\n"
     "named tart. Its VMs live in STORE/tart/vms and run as instances tart:NAME. What has\n"
     "no strata meaning is ignored with a note or refused in one line: docs/tart.md."},
    {NULL, NULL, NULL, NULL},
};
