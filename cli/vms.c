/* Verbs that run VMs: run, suspend, stop, ps. */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void started(void *ctx, const char *name)
{
    (void)ctx;
    fprintf(stderr, "strata: instance %s is running (strata suspend %s / strata stop %s)\n", name,
            name, name);
}

/* HOST/REPO:TAG the store lacks: pull it first (--no-lazy), then run */
static int pull_then_run(store *st, boot_run_opts *o)
{
    char note[600];
    store_id pulled;
    snprintf(note, sizeof note, "strata: %s is not in the store: pulling it", o->target);
    if (cli_pull_remote(st, o->target, NULL, 0, 0, 0, 0, note, &pulled))
        return -1;
    o->target = pulled.hex;
    o->lazy_ref = NULL;
    int rc = boot_run(st, o);
    return rc ? cli_failed(rc) : 0;
}

/* HOST/REPO:TAG the store lacks, run lazily (lazy: 1 asked for, -1 the
 * default); the default falls back to pull_then_run, saying why, where
 * the driver has no NBD disk or the layer can't be served lazily */
static int lazy_run(store *st, boot_run_opts *o, int lazy)
{
    int rc = boot_driver_nbd_ok(o->driver), refused = rc != 0;
    if (!rc) {
        o->lazy_ref = o->target;
        o->lazy_refused = &refused;
        rc = boot_run(st, o);
    }
    if (!rc)
        return 0;
    if (!refused || lazy > 0)
        return cli_failed(rc);
    fprintf(stderr, "strata: can't run %s lazily (%s): pulling it whole first\n", o->target,
            err_last()->message);
    return pull_then_run(st, o) ? 1 : 0;
}

/* run's options past parsing: check the values, pull a remote target the
 * store lacks (or run it lazily), run; the exit code */
static int run_checked(boot_run_opts *o, const char *cpus, const char *mem, int lazy)
{
    if (o->accel && strcmp(o->accel, "kvm") && strcmp(o->accel, "tcg") && strcmp(o->accel, "auto"))
        return cli_fail("--accel '%s' must be kvm, tcg or auto", o->accel);
    unsigned long c = 0;
    if (cpus && cli_parse_uint("--cpus", cpus, 64, &c))
        return 1;
    o->cpus = (unsigned)c;
    if (mem && cli_parse_memory(mem, &o->memory_mib))
        return 1;
    store *st;
    if (cli_open_store(&st))
        return 1;
    /* HOST/REPO:TAG is pulled first if the store lacks it; any other
     * failure to resolve is boot_run's to report, after its own checks */
    boot_ref r;
    int rc = boot_resolve(st, o->target, &r);
    if (lazy < 0 && (o->resume || o->disk_nbd))
        lazy = 0; /* a saved state resumes, and an export serves, only from the store */
    if (rc == -ENOENT && r.kind == BOOT_REF_REGISTRY) {
        /* a pull refuses before any pack, in one line, if this host can't
         * run its guest; a lazy run asks the same before any file */
        rc = lazy ? lazy_run(st, o, lazy) : pull_then_run(st, o) ? 1 : 0;
        store_close(st);
        return rc;
    }
    if (!rc && r.kind == BOOT_REF_REGISTRY)
        o->target = r.tag; /* pulled before: its local tag names the instance */
    rc = boot_run(st, o);
    store_close(st);
    return rc ? cli_failed(rc) : 0;
}

static int cmd_run(int argc, char **argv)
{
    const char *name = NULL, *cpus = NULL, *mem = NULL, *driver = NULL, *accel = NULL;
    int cold = 0, resume = 0, ephemeral = 0, console = 0, new_id = 0, dup = 0, fallback = 0, gui = 0;
    int lazy = 0, no_lazy = 0;
    boot_run_opts o_dev = {0}; /* the device options, copied into o below */
    cli_opt opts[] = {{"--name", 1, &name, NULL},         {"--cpus", 1, &cpus, NULL},
                  {"--memory", 1, &mem, NULL},        {"--driver", 1, &driver, NULL},
                  {"--cold", 0, NULL, &cold},         {"--resume", 0, NULL, &resume},
                  {"--ephemeral", 0, NULL, &ephemeral}, {"--console", 0, NULL, &console},
                  {"--new-identity", 0, NULL, &new_id}, {"--allow-duplicate", 0, NULL, &dup},
                  {"--fallback-cold", 0, NULL, &fallback}, {"--accel", 1, &accel, NULL},
                  {"--gui", 0, NULL, &gui}, {"--disk-cache", 1, &o_dev.disk_caching, NULL},
                  {"--disk-sync", 1, &o_dev.disk_sync, NULL}, {"--disk-bus", 1, &o_dev.disk_bus, NULL},
                  {"--disk-nbd", 1, &o_dev.disk_nbd, NULL}, {"--rosetta", 1, &o_dev.rosetta, NULL},
                  {"--display-reconfigure", 1, &o_dev.display_reconfigure, NULL},
                  {"--lazy", 0, NULL, &lazy}, {"--no-lazy", 0, NULL, &no_lazy}};
    char *pos[1];
    int n;
    boot_share *shares = NULL; /* run --share TAG=PATH[:ro], any number */
    size_t nshares = 0;
    if (cli_take_shares(&argc, argv, "--share", &shares, &nshares) ||
        cli_parse(argc, argv, opts, sizeof opts / sizeof *opts, pos, 1, &n, "run") || cli_need(n, 1, "run")) {
        cli_free_shares(shares, nshares);
        return 1;
    }
    boot_run_opts o = {.target = pos[0], .name = name, .driver = driver, .accel = accel, .cold = cold,
                       .resume = resume, .ephemeral = ephemeral, .console = console,
                       .new_identity = new_id, .allow_duplicate = dup, .fallback_cold = fallback,
                       .gui = gui, .note = cli_note, .started = started,
                       .shares = shares, .nshares = nshares,
                       .disk_caching = o_dev.disk_caching, .disk_sync = o_dev.disk_sync,
                       .disk_bus = o_dev.disk_bus, .disk_nbd = o_dev.disk_nbd,
                       .rosetta = o_dev.rosetta, .display_reconfigure = o_dev.display_reconfigure};
    int rc = lazy && no_lazy ? cli_fail("--lazy and --no-lazy contradict each other")
                             : run_checked(&o, cpus, mem, no_lazy ? 0 : lazy ? 1 : -1);
    cli_free_shares(shares, nshares);
    return rc;
}

static int cmd_suspend(int argc, char **argv)
{
    const char *tag = NULL, *msg = NULL;
    cli_opt opts[] = {{"-t", 1, &tag, NULL}, {"-m", 1, &msg, NULL}};
    char *pos[1];
    int n;
    if (cli_parse(argc, argv, opts, 2, pos, 1, &n, "suspend") || cli_need(n, 1, "suspend"))
        return 1;
    store *st;
    if (cli_open_store(&st))
        return 1;
    store_id id;
    int rc = boot_suspend(st, pos[0], tag, msg, &id);
    store_close(st);
    if (rc)
        return cli_failed(rc);
    printf("%s\n", id.hex);
    return 0;
}

static int cmd_stop(int argc, char **argv)
{
    const char *timeout = NULL;
    int force = 0;
    cli_opt opts[] = {{"--timeout", 1, &timeout, NULL}, {"--force", 0, NULL, &force}};
    char *pos[1];
    int n;
    if (cli_parse(argc, argv, opts, 2, pos, 1, &n, "stop") || cli_need(n, 1, "stop"))
        return 1;
    unsigned long t = 30;
    if (timeout && cli_parse_uint("--timeout", timeout, 3600, &t))
        return 1;
    store *st;
    if (cli_open_store(&st))
        return 1;
    int forced = 0;
    int rc = boot_stop(st, pos[0], force ? 0 : (int)t, &forced);
    store_close(st);
    if (rc)
        return cli_failed(rc);
    if (forced)
        fprintf(stderr, "strata: %s ignored the request to shut down for %lu s; it was forced off\n",
                pos[0], t);
    return 0;
}

/* "HOST:PORT", or "-" where there is none */
static const char *endpoint(char *buf, size_t n, const char *host, unsigned port)
{
    if (port)
        snprintf(buf, n, "%s:%u", host, port);
    else
        snprintf(buf, n, "-");
    return buf;
}

/* {"host":..,"port":N}, or null where there is none */
static json_t *endpoint_json(const char *host, unsigned port)
{
    return port ? json_pack("{s:o, s:I}", "host", cli_json_text(host), "port", (json_int_t)port)
                : json_null();
}

/* a lazy run's fill: {"state", "chunks", "chunks_here", "fill_done", "fill_total"}, or null */
static json_t *fill_json(const boot_instance *x)
{
    if (!x->lazy_state[0])
        return json_null();
    return json_pack("{s:s, s:o, s:o, s:o, s:o}", "state", x->lazy_state, "chunks",
                     cli_json_u64(x->lazy_chunks), "chunks_here", cli_json_u64(x->lazy_chunks_here),
                     "fill_done", cli_json_u64(x->lazy_fill_done), "fill_total",
                     cli_json_u64(x->lazy_fill_total));
}

/* "filling 37% (95/256 chunks here)", or "-" for a run that is not lazy */
static const char *fill_text(const boot_instance *x, char *buf, size_t n)
{
    if (!x->lazy_state[0])
        snprintf(buf, n, "-");
    else if (x->lazy_fill_total)
        snprintf(buf, n, "%s %" PRIu64 "%% (%" PRIu64 "/%" PRIu64 " chunks here)", x->lazy_state,
                 x->lazy_fill_done * 100 / x->lazy_fill_total, x->lazy_chunks_here, x->lazy_chunks);
    else
        snprintf(buf, n, "%s (%" PRIu64 "/%" PRIu64 " chunks here)", x->lazy_state,
                 x->lazy_chunks_here, x->lazy_chunks);
    return buf;
}

static int cmd_ps(int argc, char **argv)
{
    int json = 0;
    char *pos[1];
    int n;
    if (cli_parse_json_only(argc, argv, pos, 0, &n, &json, "ps"))
        return 1;
    store *st;
    if (cli_open_store(&st))
        return 1;
    boot_instance *v;
    size_t nv;
    int rc = boot_ps(st, &v, &nv);
    store_close(st);
    if (rc)
        return cli_failed(rc);
    json_t *all = json ? json_array() : NULL;
    if (!json)
        printf("%-24s  %-12s  %-6s  %8s  %-10s  %-12s  %-32s  %-21s  %s\n", "NAME", "LAYER", "DRIVER",
               "PID", "STATE", "RESUMED FROM", "LAZY FILL", "SSH", "VNC");
    for (size_t i = 0; i < nv; i++) {
        if (json) {
            json_array_append_new(
                all, json_pack("{s:o, s:o, s:o, s:o, s:i, s:i, s:o, s:o?, s:o, s:o, s:o}", "name",
                               cli_json_text(v[i].name), "dir", cli_json_text(v[i].dir), "layer",
                               cli_json_text(v[i].layer), "driver", cli_json_text(v[i].driver),
                               "pid", v[i].pid, "vm_pid", v[i].vm_pid, "state",
                               cli_json_text(v[i].state), "resumed_from",
                               *v[i].resumed_from ? cli_json_text(v[i].resumed_from) : NULL, "ssh",
                               endpoint_json(v[i].ep.ssh_host, v[i].ep.ssh_port), "vnc",
                               endpoint_json(v[i].ep.vnc_host, v[i].ep.vnc_port), "lazy",
                               fill_json(&v[i])));
        } else {
            char ssh[96], vnc[96], fill[96];
            printf("%-24s  %.12s  %-6s  %8d  %-10s  %-12.12s  %-32s  %-21s  %s\n", v[i].name, v[i].layer,
                   v[i].driver, v[i].pid, v[i].state, *v[i].resumed_from ? v[i].resumed_from : "-",
                   fill_text(&v[i], fill, sizeof fill),
                   endpoint(ssh, sizeof ssh, v[i].ep.ssh_host, v[i].ep.ssh_port),
                   endpoint(vnc, sizeof vnc, v[i].ep.vnc_host, v[i].ep.vnc_port));
        }
    }
    boot_ps_free(v, nv);
    return json ? cli_json_print(all) : 0;
}

const cli_verb cli_vm_verbs[] = {
    {"run", cmd_run,
     "run REF|DIR [--name N] [--cpus N] [--memory MiB] [--driver vz|qemu] [--cold|--resume] "
     "[--fallback-cold] [--ephemeral] [--console] [--new-identity] [--allow-duplicate] "
     "[--accel kvm|tcg|auto] [--gui] [--share TAG=PATH[:ro]]... "
     "[--disk-cache automatic|cached|uncached] [--disk-sync full|fsync|none] [--disk-bus virtio|nvme] "
     "[--disk-nbd URL] [--rosetta TAG|none] [--display-reconfigure on|off|auto] [--lazy|--no-lazy]",
     "Run a VM in a fresh instance cloned from layer REF (or in the clone directory DIR),\n"
     "and supervise it until it stops. The layer is never written. --resume restores the\n"
     "layer's saved state (checked first against this host, user, driver, configuration,\n"
     "MAC and machine identifier); --fallback-cold boots fresh if the hypervisor refuses\n"
     "it. A new instance that is not a resume gets a fresh MAC; --new-identity also a fresh\n"
     "machine identifier. --ephemeral deletes the instance when it stops. --console puts\n"
     "the serial console on this terminal; otherwise it is logged in the instance's\n"
     ".console.log. The default driver is vz on macOS, qemu elsewhere.\n"
     "qemu's --accel: auto (the default) uses KVM only once a probe guest has run under\n"
     "it on this host (checked once per host boot), and restarts emulated a guest that\n"
     "writes nothing to its console or disk under KVM in 30 s (STRATA_KVM_PROGRESS_SECONDS);\n"
     "kvm insists, and fails in that case; tcg is software emulation.\n"
     "--gui shows the VM's display: vz in a window; qemu serves it as VNC on a loopback\n"
     "port that ps shows. The display device is part of a saved state, so a state saved\n"
     "with --gui resumes only with --gui. qemu forwards a loopback port to the guest's ssh (strata ip, ssh).\n"

     "--share opens a host folder for this run (replacing the layer's folder of that tag):\n"
     "the only folders a layer from an archive or a registry gets.\n"
     "--disk-cache, --disk-sync, --disk-bus, --rosetta and --display-reconfigure change the\n"
     "instance's devices as set does (written into its Settings.json; not with --resume).\n"
     "--disk-nbd boots this run from an NBD export instead of Disk.img, without writing it\n"
     "down; such a VM can't be suspended. A layer from outside opens its own disk.nbd only\n"
     "when named so.\n"
     "REF may be a registry name HOST/REPO:TAG. If the store lacks it, the VM starts at once\n"
     "by default (lazily): its small files are fetched, its disk is served over NBD from a\n"
     "socket in the instance, each chunk fetched (and checked) on first read, while the\n"
     "layer is pulled behind it; once the pull is published (tagged as pull would) the\n"
     "instance is an ordinary clone of it. ps shows the fill; suspend waits for it; a\n"
     "strata killed meanwhile leaves an instance that `run NAME` serves again, fetching\n"
     "only what is missing. --no-lazy pulls the whole layer first; --lazy insists (an\n"
     "error where it can't). Without either, a driver with no NBD disk (vz before macOS\n"
     "14) or a layer that can't be served so (a saved state, a tart image) is pulled\n"
     "first, with a note saying why. The instance's lazy log is beside it (.NAME.lazy.log)."},
    {"suspend", cmd_suspend, "suspend NAME|DIR [-t TAG] [-m MESSAGE]",
     "Pause instance NAME (a name or its directory), save its state, and commit two layers:\n"
     "D with the disk, aux storage and settings, and its child S adding the state, bound\n"
     "to this host. The instance stops. TAG names S; prints S's id."},
    {"stop", cmd_stop, "stop NAME|DIR [--timeout SECONDS] [--force]",
     "Ask the guest to shut down, and force it off after the timeout (30 s)."},
    {"ps", cmd_ps, "ps [--json]",
     "Running instances, in the store or run from a clone directory: name, layer,\n"
     "driver, pid, state, a lazy run's fill (its state, percent done and chunks already\n"
     "in the instance; JSON: lazy), the loopback ports of qemu's ssh forward and VNC\n"
     "display (--json adds the directory)."},
    {NULL, NULL, NULL, NULL},
};
