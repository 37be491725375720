/* Unit tests of boot/: Settings.json parsing and validation, MACs, config
 * hashes and bindings. Each test's files are under $TEST_DIR (default: a
 * fresh mkdtemp under /var/tmp). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "../boot/boot.h"
#include "testutil.h"

static char dir[256];

static int setup(void **state)
{
    (void)state;
    if (test_root_make(dir, sizeof dir, "test_boot") < 0)
        return -1;
    char p[512];
    snprintf(p, sizeof p, "%s/vmlinuz", dir);
    put_file(p, "kernel", 6);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return test_root_remove(dir);
}

#define LINUX_OK                                                                                  \
    "{\"version\":1,\"os\":\"linux\",\"cpus\":2,\"memory_mib\":512,\"mac\":\"52:54:00:12:34:56\"," \
    "\"boot\":{\"loader\":\"linux\",\"kernel\":\"vmlinuz\",\"cmdline\":\"console=ttyS0\"}}"

static int parse(const char *json, boot_settings *s)
{
    return boot_settings_parse(json, strlen(json), dir, s);
}

static void expect_bad(const char *json, const char *text)
{
    boot_settings s;
    int rc = parse(json, &s);
    if (rc == 0 || !strstr(boot_error(), text))
        fail_msg("for %s\n  rc %d, error '%s', wanted '%s'", json, rc, boot_error(), text);
}

static void test_valid(void **state)
{
    (void)state;
    boot_settings s;
    assert_int_equal(parse(LINUX_OK, &s), 0);
    assert_int_equal(s.os, BOOT_OS_LINUX);
    assert_int_equal(s.cpus, 2);
    assert_int_equal(s.memory_mib, 512);
    assert_string_equal(s.mac, "52:54:00:12:34:56");
    assert_int_equal(s.loader, BOOT_LOADER_LINUX);
    assert_string_equal(s.kernel, "vmlinuz");
    assert_null(s.initrd);
    assert_string_equal(s.cmdline, "console=ttyS0");
    assert_int_equal(s.disk_caching, BOOT_CACHE_CACHED); /* Linux's default (UTM #4840) */
    boot_settings_free(&s);

    const char *mac = "{\"version\":1,\"os\":\"macos\",\"shared_folders\":[{\"tag\":\"src\","
                      "\"path\":\"/Users/me/src\",\"read_only\":true},{\"tag\":\"out\",\"path\":"
                      "\"/tmp\"}],\"disk\":{\"caching\":\"uncached\",\"sync\":\"fsync\"}}";
    assert_int_equal(parse(mac, &s), 0);
    assert_int_equal(s.loader, BOOT_LOADER_MACOS);
    assert_int_equal(s.memory_mib, 4096);
    assert_int_equal(s.display_width, 1920); /* macOS guests always get a display */
    assert_int_equal(s.nshares, 2);
    assert_string_equal(s.shares[0].tag, "src");
    assert_true(s.shares[0].read_only);
    assert_false(s.shares[1].read_only);
    assert_int_equal(s.disk_caching, BOOT_CACHE_UNCACHED);
    assert_int_equal(s.disk_sync, BOOT_SYNC_FSYNC);
    boot_settings_free(&s);
}

static void test_invalid(void **state)
{
    (void)state;
    expect_bad("not json", "Settings.json: not valid JSON");
    expect_bad("[]", "must be a JSON object");
    expect_bad("{\"version\":2,\"os\":\"linux\"}", "version must be a whole number from 1 to 1");
    expect_bad("{\"version\":1,\"os\":\"windows\"}", "os 'windows' must be linux or macos");
    expect_bad("{\"version\":1,\"os\":\"linux\",\"cpus\":0}", "cpus must be a whole number from 1 to 64");
    expect_bad("{\"version\":1,\"os\":\"linux\",\"cpus\":65}", "cpus must be a whole number from 1 to 64");
    expect_bad("{\"version\":1,\"os\":\"linux\",\"cpus\":\"2\"}", "cpus must be a whole number");
    expect_bad("{\"version\":1,\"os\":\"linux\",\"memory_mib\":32}", "memory_mib must be a whole number from 64");
    expect_bad("{\"version\":1,\"os\":\"linux\",\"mac\":\"52:54:00:12:34\"}", "mac '52:54:00:12:34' is not a unicast MAC address");
    expect_bad("{\"version\":1,\"os\":\"linux\",\"mac\":\"52-54-00-12-34-56\"}", "is not a unicast MAC address");
    expect_bad("{\"version\":1,\"os\":\"linux\",\"mac\":\"01:00:5e:00:00:01\"}", "is not a unicast MAC address");
    expect_bad("{\"version\":1,\"os\":\"linux\",\"mac\":\"zz:54:00:12:34:56\"}", "is not a unicast MAC address");
    expect_bad("{\"version\":1,\"os\":\"linux\"}", "boot.kernel is missing");
    expect_bad("{\"version\":1,\"os\":\"linux\",\"boot\":{\"kernel\":\"bzImage\"}}", "boot.kernel 'bzImage' is not in the bundle");
    expect_bad("{\"version\":1,\"os\":\"linux\",\"boot\":{\"kernel\":\"../etc/passwd\"}}", "must be a file name in the bundle");
    expect_bad("{\"version\":1,\"os\":\"linux\",\"boot\":{\"kernel\":\"vmlinuz\",\"initrd\":\"nope\"}}", "boot.initrd 'nope' is not in the bundle");
    expect_bad("{\"version\":1,\"os\":\"linux\",\"boot\":{\"loader\":\"efi\"}}", "boot.variable_store is missing");
    expect_bad("{\"version\":1,\"os\":\"linux\",\"boot\":{\"loader\":\"macos\"}}", "boot.loader macos is for os macos");
    expect_bad("{\"version\":1,\"os\":\"linux\",\"cpu\":2}", "unknown field 'cpu'");
    expect_bad("{\"version\":1,\"os\":\"linux\",\"boot\":{\"kernal\":\"x\"}}", "unknown field 'boot.kernal'");
    expect_bad("{\"version\":1,\"version\":1,\"os\":\"linux\"}", "not valid JSON");
    expect_bad("{\"version\":1,\"os\":\"macos\",\"shared_folders\":[{\"tag\":\"a b\",\"path\":\"/x\"}]}", "tag 'a b' must be 1-36 of");
    expect_bad("{\"version\":1,\"os\":\"macos\",\"shared_folders\":[{\"tag\":\"a\",\"path\":\"rel\"}]}", "path 'rel' must be absolute");
    expect_bad("{\"version\":1,\"os\":\"macos\",\"disk\":{\"caching\":\"fast\"}}", "disk.caching 'fast' must be automatic, cached or uncached");
}

static void test_mac(void **state)
{
    (void)state;
    char m[18], m2[18];
    boot_mac_random(m);
    boot_mac_random(m2);
    assert_true(boot_mac_valid(m));
    assert_string_not_equal(m, m2);
    unsigned first = (unsigned)strtoul(m, NULL, 16);
    assert_true(first & 2);    /* locally administered */
    assert_false(first & 1);   /* unicast */
    assert_true(boot_mac_valid("AA:bb:CC:dd:EE:f0"));
    assert_false(boot_mac_valid("aa:bb:cc:dd:ee:f"));
}

static void test_hash_and_save(void **state)
{
    (void)state;
    boot_settings s, t;
    char h1[65], h2[65], h3[65];
    assert_int_equal(parse(LINUX_OK, &s), 0);
    boot_settings_config_hash(&s, h1);
    strcpy(s.mac, "02:00:00:00:00:09");
    boot_settings_config_hash(&s, h2);
    assert_string_equal(h1, h2); /* the MAC is bound on its own */
    s.cpus = 3;
    boot_settings_config_hash(&s, h3);
    assert_string_not_equal(h1, h3);
    assert_int_equal(boot_settings_save(dir, &s), 0);
    assert_int_equal(boot_settings_load(dir, &t), 0);
    assert_int_equal(t.cpus, 3);
    assert_string_equal(t.mac, "02:00:00:00:00:09");
    assert_string_equal(t.cmdline, "console=ttyS0");
    boot_settings_config_hash(&t, h2);
    assert_string_equal(h2, h3);

    boot_binding *b;
    size_t n;
    assert_int_equal(boot_bindings_now("qemu", dir, &t, &b, &n), 0);
    assert_int_equal(n, 7);
    for (size_t i = 1; i < n; i++)
        assert_true(strcmp(b[i - 1].key, b[i].key) < 0); /* sorted, as manifests need */
    assert_string_equal(b[0].key, "config-hash");
    assert_string_equal(b[0].value, h3);
    assert_string_equal(b[1].value, "qemu");
    assert_string_equal(b[3].value, "02:00:00:00:00:09");
    assert_string_equal(b[4].value, "none");
    boot_bindings_free(b, n);
    setenv("STRATA_HOST_ID", "ci-host-7", 1);
    assert_int_equal(boot_bindings_now("qemu", dir, &t, &b, &n), 0);
    assert_string_equal(b[2].key, "host");
    assert_string_equal(b[2].value, "ci-host-7");
    unsetenv("STRATA_HOST_ID");
    boot_bindings_free(b, n);
    boot_settings_free(&s);
    boot_settings_free(&t);
}

/* installer media: a bundle file, parsed, checked, saved, and part of the
 * configuration a saved state is bound to (it is a device) */
static void test_installer(void **state)
{
    (void)state;
    const char *efi = "{\"version\":1,\"os\":\"linux\",\"boot\":{\"loader\":\"efi\","
                      "\"variable_store\":\"vmlinuz\"},\"installer\":\"%s\"}";
    char json[300];
    boot_settings s, t;
    snprintf(json, sizeof json, efi, "Installer.iso");
    expect_bad(json, "installer 'Installer.iso' is not in the bundle");
    snprintf(json, sizeof json, efi, "../x.iso");
    expect_bad(json, "installer '../x.iso' must be a file name in the bundle");
    expect_bad("{\"version\":1,\"os\":\"macos\",\"installer\":\"vmlinuz\"}", "installer media is for Linux guests");
    snprintf(json, sizeof json, efi, "vmlinuz");
    assert_int_equal(parse(json, &s), 0);
    assert_string_equal(s.installer, "vmlinuz");
    char with[65], without[65];
    boot_settings_config_hash(&s, with);
    assert_int_equal(boot_settings_save(dir, &s), 0);
    assert_int_equal(boot_settings_load(dir, &t), 0);
    assert_string_equal(t.installer, "vmlinuz");
    boot_settings_free(&t);
    free(s.installer);
    s.installer = NULL;
    boot_settings_config_hash(&s, without);
    assert_string_not_equal(with, without);
    assert_int_equal(boot_settings_save(dir, &s), 0);
    assert_int_equal(boot_settings_load(dir, &t), 0);
    assert_null(t.installer);
    boot_settings_free(&t);
    boot_settings_free(&s);
}

/* qemu's fresh EFI variable store: OVMF's template, byte for byte */
static void test_qemu_efi_vars(void **state)
{
    (void)state;
    const char *tpl = "/usr/share/OVMF/OVMF_VARS_4M.fd";
    if (access(tpl, R_OK) != 0 && access((tpl = "/usr/share/OVMF/OVMF_VARS.fd"), R_OK) != 0) {
        skip_because("no OVMF variable store template here (Debian package ovmf)\n");
    }
    const boot_driver *q = boot_driver_find("qemu");
    assert_non_null(q->create_efi_vars);
    char path[600], cmd[1400];
    snprintf(path, sizeof path, "%s/NVRAM", dir);
    assert_int_equal(q->create_efi_vars(path), 0);
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", tpl, path);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/no-such-dir/NVRAM", dir);
    assert_true(q->create_efi_vars(path) < 0);
    assert_non_null(strstr(boot_error(), "no-such-dir"));
}

/* boot's directories sit in the store's home, made on first use */
static void test_dirs(void **state)
{
    (void)state;
    char home[600], want[700];
    snprintf(home, sizeof home, "%s/store", dir);
    store *st;
    assert_int_equal(store_open(home, &st), 0);
    char *vms = boot_instances_dir(st), *running = boot_running_dir(st), *cache = boot_cache_dir(st);
    snprintf(want, sizeof want, "%s/vms", home);
    assert_string_equal(vms, want);
    snprintf(want, sizeof want, "%s/running", home);
    assert_string_equal(running, want);
    snprintf(want, sizeof want, "%s/cache", home);
    assert_string_equal(cache, want);
    struct stat sb;
    assert_int_equal(stat(vms, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(stat(cache, &sb), 0);
    /* a home where the directory can't be made: NULL and a message naming it */
    free(running);
    assert_int_equal(rmdir(running = boot_running_dir(st)), 0);
    char blocker[700];
    snprintf(blocker, sizeof blocker, "%s/running", home);
    FILE *f = fopen(blocker, "w");
    fclose(f);
    free(running);
    char *none = boot_running_dir(st);
    assert_null(none);
    assert_non_null(strstr(boot_error(), blocker));
    free(vms), free(cache);
    store_close(st);
}

static void test_drivers(void **state)
{
    (void)state;
    assert_non_null(boot_driver_find("qemu"));
    assert_string_equal(boot_driver_find("qemu")->state_file, "SaveFile.qemustate");
    /* issue 12: the RAM file is a state file, and kinds are checked */
    const boot_driver *q = boot_driver_find("qemu");
    assert_non_null(q->state_files);
    assert_string_equal(q->state_files[0], "SaveFile.qemustate");
    assert_string_equal(q->state_files[1], "SaveFile.qemuram");
    assert_null(q->state_files[2]);
    unsetenv("STRATA_QEMU_SAVE");
    assert_int_equal(q->can_restore(NULL), 0);
    assert_int_equal(q->can_restore("classic"), 0);
    assert_int_equal(q->can_restore("ram-file"), 0);
    assert_int_equal(q->can_restore("pages"), -EINVAL);
    assert_non_null(strstr(boot_error(), "of kind 'pages', which this strata can't resume"));
    setenv("STRATA_QEMU_SAVE", "classic", 1);
    assert_int_equal(q->can_restore("classic"), 0);
    assert_int_equal(q->can_restore(NULL), 0);
    assert_int_equal(q->can_restore("ram-file"), -EINVAL);
    assert_non_null(strstr(boot_error(), "a classic resume can't use (STRATA_QEMU_SAVE=classic)"));
    unsetenv("STRATA_QEMU_SAVE");
    assert_null(boot_driver_find("xen"));
    assert_non_null(strstr(boot_error(), "unknown driver 'xen'"));
#ifndef __APPLE__
    assert_null(boot_driver_find("vz"));
    assert_non_null(strstr(boot_error(), "needs macOS"));
    assert_string_equal(boot_default_driver(), "qemu");
#endif
}

/* what a registry manifest says a guest needs, against this host */
static void test_guest_runs_here(void **state)
{
    (void)state;
    struct utsname u;
    assert_int_equal(uname(&u), 0);
    const char *here = !strcmp(u.machine, "x86_64") ? "amd64" : "arm64";
    const char *other = !strcmp(here, "amd64") ? "arm64" : "amd64";
    boot_guest_needs unsaid = {"", "", "", 0}, same = {"linux", here, "", 0},
                     foreign = {"linux", other, "", 0}, windows = {"windows", "", "", 0},
                     mac99 = {"macos", "arm64", "99.0.0", 1}, mac_rep = {"macos", "arm64", "", 2};
    assert_int_equal(boot_guest_runs_here("t:unsaid", &unsaid), 0); /* an old manifest */
    assert_int_equal(boot_guest_runs_here("t:same", &same), 0);
    assert_int_equal(boot_guest_runs_here("t:foreign", &foreign), -ENOTSUP);
    assert_non_null(strstr(boot_error(), "t:foreign is a Linux guest for"));
    assert_int_equal(boot_guest_runs_here("t:win", &windows), -ENOTSUP);
    assert_non_null(strstr(boot_error(), "'windows'"));
    /* no Mac can run macOS 99, and no strata knows data representation 2 */
    assert_int_equal(boot_guest_runs_here("t:mac99", &mac99), -ENOTSUP);
    assert_non_null(strstr(boot_error(), "t:mac99 is a macOS guest"));
    assert_int_equal(boot_guest_runs_here("t:rep", &mac_rep), -ENOTSUP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid, setup, teardown),
        cmocka_unit_test(test_mac),
        cmocka_unit_test_setup_teardown(test_hash_and_save, setup, teardown),
        cmocka_unit_test(test_drivers),
        cmocka_unit_test_setup_teardown(test_dirs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_installer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qemu_efi_vars, setup, teardown),
        cmocka_unit_test(test_guest_runs_here),
    };
    return cmocka_run_group_tests_name("boot", tests, NULL, NULL);
}
