/* Verbs that reach a running VM: ip, ssh, screenshot. */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --wait N: 0 (don't wait) to an hour */
static int parse_wait(const char *s, int *out)
{
    unsigned long v = 0;
    if (s && strcmp(s, "0") && cli_parse_uint("--wait", s, 3600, &v))
        return 1;
    *out = (int)v;
    return 0;
}

static int parse_resolver(const char *s, boot_resolver *out)
{
    *out = BOOT_RESOLVER_DEFAULT;
    if (!s)
        return 0;
    if (!strcmp(s, "lease"))
        *out = BOOT_RESOLVER_LEASE;
    else if (!strcmp(s, "arp"))
        *out = BOOT_RESOLVER_ARP;
    else
        return cli_fail("--resolver '%s' must be lease or arp", s);
    return 0;
}

static int cmd_ip(int argc, char **argv)
{
    const char *wait = NULL, *resolver = NULL;
    int json = 0;
    cli_opt opts[] = {{"--wait", 1, &wait, NULL}, {"--resolver", 1, &resolver, NULL},
                      {"--json", 0, NULL, &json}};
    char *pos[1];
    int n, wait_s;
    boot_resolver how;
    if (cli_parse(argc, argv, opts, 3, pos, 1, &n, "ip") || cli_need(n, 1, "ip") ||
        parse_wait(wait, &wait_s) || parse_resolver(resolver, &how))
        return 1;
    store *st;
    if (cli_open_store(&st))
        return 1;
    boot_address a;
    int rc = boot_ip(st, pos[0], how, wait_s, &a);
    store_close(st);
    if (rc)
        return cli_failed(rc);
    if (json) {
        return cli_json_print(json_pack("{s:o, s:o, s:I, s:o}", "name", cli_json_text(pos[0]),
                                        "address", cli_json_text(a.address), "port",
                                        (json_int_t)a.port, "source", cli_json_text(a.source)));
    } else if (a.port == 22) {
        printf("%s\n", a.address);
    } else {
        printf("%s:%u\n", a.address, a.port);
    }
    return 0;
}

/* the index of the first "--", or argc */
static int dashdash(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--"))
            return i;
    return argc;
}

static int cmd_ssh(int argc, char **argv)
{
    const char *wait = NULL, *user = NULL, *identity = NULL, *resolver = NULL;
    cli_opt opts[] = {{"--wait", 1, &wait, NULL},          {"--user", 1, &user, NULL},
                      {"--identity", 1, &identity, NULL},  {"-i", 1, &identity, NULL},
                      {"--resolver", 1, &resolver, NULL}};
    int k = dashdash(argc, argv);
    char *pos[1];
    int n;
    boot_ssh_opts o = {.identity = NULL};
    if (cli_parse(k, argv, opts, 5, pos, 1, &n, "ssh") || cli_need(n, 1, "ssh") ||
        parse_wait(wait, &o.wait_s) || parse_resolver(resolver, &o.resolver))
        return 255;
    o.name = pos[0];
    o.user = user;
    o.identity = identity;
    if (k < argc) {
        o.command = argv + k + 1;
        o.ncommand = (size_t)(argc - k - 1);
    }
    store *st;
    if (cli_open_store(&st))
        return 255;
    char **args;
    int rc = boot_ssh_argv(st, &o, &args);
    store_close(st);
    if (rc) {
        cli_failed(rc);
        return 255;
    }
    fflush(stdout);
    execvp(args[0], args);
    cli_fail("can't run %s: %s", args[0], strerror(errno));
    boot_argv_free(args);
    return 255;
}

static int cmd_screenshot(int argc, char **argv)
{
    char *pos[2];
    int n;
    if (cli_parse(argc, argv, NULL, 0, pos, 2, &n, "screenshot") || cli_need(n, 2, "screenshot"))
        return 1;
    store *st;
    if (cli_open_store(&st))
        return 1;
    int rc = boot_screenshot(st, pos[0], pos[1]);
    store_close(st);
    return rc ? cli_failed(rc) : 0;
}

const cli_verb cli_reach_verbs[] = {
    {"ip", cmd_ip, "ip NAME|DIR [--wait SECONDS] [--resolver lease|arp] [--json]",
     "The address to reach running instance NAME at. qemu: the loopback address and port\n"
     "forwarded to the guest's ssh port, printed ADDRESS:PORT. vz: the guest's own\n"
     "address, from the newest unexpired lease for its MAC in /var/db/dhcpd_leases;\n"
     "--resolver arp looks in the ARP cache instead (opt-in: ARP can be spoofed).\n"
     "--wait waits up to SECONDS for the instance to run and its address to be known\n"
     "(`strata run vm --name x & strata ip x --wait 60`); without it, an instance that\n"
     "isn't running fails at once. --json: name, address, port, source."},
    {"ssh", cmd_ssh,
     "ssh NAME|DIR [--wait SECONDS] [--user U] [-i|--identity KEY] [--resolver lease|arp] "
     "[-- COMMAND...]",
     "Log in to running instance NAME with the system's ssh, or run COMMAND there.\n"
     "--wait waits for the address and for the guest's ssh server to answer. The user is\n"
     "--user, else the bundle's Settings.json ssh_user, else ssh's own default. Host keys\n"
     "are kept in the instance's .known_hosts (new keys accepted, changed ones refused),\n"
     "so a fresh clone never meets another instance's key. Exits with the remote\n"
     "command's status, or 255 when it can't connect, as ssh does."},
    {"screenshot", cmd_screenshot, "screenshot NAME|DIR FILE.png",
     "Save running instance NAME's screen as a PNG (qemu: an instance run with --gui)."},
    {NULL, NULL, NULL, NULL},
};
