/* Unit tests of reaching a guest: the macOS DHCP lease file and `arp -an`
 * parsers (boot/leases.c) on recorded files in fixtures/dhcpd_leases/, the
 * ssh_user setting, and the PPM to PNG conversion for old qemus. */
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

#include <zlib.h>

#include "../boot/internal.h"
#include "testutil.h"

static char *fixture(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/dhcpd_leases/%s", FIXTURES, name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 16);
    assert_non_null(buf);
    assert_true(fread(buf, 1, (1 << 16) - 1, f) > 0);
    fclose(f);
    return buf;
}

#define NOW 1800000000LL /* after the 1.7e9 lease expired, before the 2e9 ones */

static void expect_lease(const char *text, const char *mac, long long now, const char *want)
{
    char ip[64] = "";
    unsigned duid = 99;
    assert_int_equal(boot_lease_find(text, mac, now, ip, sizeof ip, &duid), 0);
    assert_string_equal(ip, want);
    assert_int_equal(duid, 1);
}

static void test_lease_macs(void **state)
{
    (void)state;
    char *t = fixture("leases");
    /* the file writes bytes unpadded ("b" for 0b): any spelling matches */
    expect_lease(t, "a2:0b:c3:04:e5:f6", NOW, "192.168.64.9");
    expect_lease(t, "a2:b:c3:4:e5:f6", NOW, "192.168.64.9");
    expect_lease(t, "A2:0B:C3:04:E5:F6", NOW, "192.168.64.9");
    /* a file that padded them is read too */
    expect_lease(t, "0a:0b:0c:0d:0e:0f", NOW, "192.168.64.3");
    expect_lease(t, "a:b:c:d:e:f", NOW, "192.168.64.3");
    free(t);
}

static void test_lease_expiry(void **state)
{
    (void)state;
    char *t = fixture("leases");
    char ip[64] = "";
    /* two unexpired leases for one MAC: the one that expires last, though
     * an older one comes after it in the file */
    expect_lease(t, "a2:b:c3:4:e5:f6", 1600000000LL, "192.168.64.9");
    /* every lease expired: none, whatever the file says */
    assert_int_equal(boot_lease_find(t, "a2:b:c3:4:e5:f6", 2100000000LL, ip, sizeof ip, NULL), -ENOENT);
    /* a lease that expired exactly now is gone */
    assert_int_equal(boot_lease_find(t, "a2:b:c3:4:e5:f6", 2000000000LL, ip, sizeof ip, NULL), -ENOENT);
    /* 52:54:0:12:34:56's only lease expired long ago */
    assert_int_equal(boot_lease_find(t, "52:54:00:12:34:56", NOW, ip, sizeof ip, NULL), -ENOENT);
    free(t);
}

static void test_lease_duid(void **state)
{
    (void)state;
    char *t = fixture("leases");
    char ip[64] = "";
    unsigned duid = 0;
    /* a guest keyed by a DUID never matches a MAC, even one whose bytes
     * start its identifier; the count lets ip explain why */
    assert_int_equal(boot_lease_find(t, "f1:f5:dd:7f:00:02", NOW, ip, sizeof ip, &duid), -ENOENT);
    assert_int_equal(duid, 1);
    assert_string_equal(ip, "");
    /* no blocks at all, and junk */
    assert_int_equal(boot_lease_find("", "a2:b:c3:4:e5:f6", NOW, ip, sizeof ip, &duid), -ENOENT);
    assert_int_equal(duid, 0);
    assert_int_equal(boot_lease_find("{ ip_address=1.2.3.4\nhw_address=1,zz\nlease=0x77359400 }",
                                     "a2:b:c3:4:e5:f6", NOW, ip, sizeof ip, &duid), -ENOENT);
    assert_int_equal(boot_lease_find("{\n ip_address=1.2.3.4\n hw_address=1,a2:b:c3:4:e5:f6\n", /* unclosed */
                                     "a2:b:c3:4:e5:f6", NOW, ip, sizeof ip, NULL), -ENOENT);
    /* a bad MAC to look for is an error, not "not found" */
    assert_int_equal(boot_lease_find(t, "a2:b:c3:4:e5", NOW, ip, sizeof ip, NULL), -EINVAL);
    assert_int_equal(boot_lease_find(t, "a2:b:c3:4:e5:f6:7", NOW, ip, sizeof ip, NULL), -EINVAL);
    assert_int_equal(boot_lease_find(t, "a2:bcd:c3:4:e5:f6", NOW, ip, sizeof ip, NULL), -EINVAL);
    free(t);
}

static void test_arp(void **state)
{
    (void)state;
    char *t = fixture("arp");
    char ip[64] = "";
    assert_int_equal(boot_arp_find(t, "a2:0b:c3:04:e5:f6", ip, sizeof ip), 0);
    assert_string_equal(ip, "192.168.64.9");
    assert_int_equal(boot_arp_find(t, "3e:22:fb:9a:01:64", ip, sizeof ip), 0);
    assert_string_equal(ip, "192.168.64.1");
    assert_int_equal(boot_arp_find(t, "52:54:00:12:34:56", ip, sizeof ip), -ENOENT);
    assert_int_equal(boot_arp_find(t, "nope", ip, sizeof ip), -EINVAL);
    free(t);
}

static void test_ssh_user(void **state)
{
    (void)state;
    const char *base = "{\"version\":1,\"os\":\"linux\",\"boot\":{\"kernel\":\"vmlinuz\"}";
    char json[512];
    boot_settings s, plain;
    snprintf(json, sizeof json, "%s}", base);
    assert_int_equal(boot_settings_parse(json, strlen(json), NULL, &plain), 0);
    assert_null(plain.ssh_user);
    snprintf(json, sizeof json, "%s,\"ssh_user\":\"admin\"}", base);
    assert_int_equal(boot_settings_parse(json, strlen(json), NULL, &s), 0);
    assert_string_equal(s.ssh_user, "admin");
    /* how to log in is not what a saved state depends on */
    char h1[65], h2[65];
    boot_settings_config_hash(&s, h1);
    boot_settings_config_hash(&plain, h2);
    assert_string_equal(h1, h2);
    boot_settings_free(&s);
    boot_settings_free(&plain);
    static const char *const badv[] = {"\"\"", "\"-oProxyCommand=x\"", "\"a b\"", "\"me@host\"", "7",
                                       "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""};
    for (size_t i = 0; i < sizeof badv / sizeof *badv; i++) {
        snprintf(json, sizeof json, "%s,\"ssh_user\":%s}", base, badv[i]);
        assert_int_equal(boot_settings_parse(json, strlen(json), NULL, &s), -EINVAL);
        assert_non_null(strstr(boot_error(), "ssh_user"));
    }
}

static void test_ssh_user_saved(void **state)
{
    (void)state;
    char dir[512];
    assert_int_equal(test_root_make(dir, sizeof dir, "test_reach"), 0);
    const char *json = "{\"version\":1,\"os\":\"linux\",\"boot\":{\"kernel\":\"vmlinuz\"},\"ssh_user\":\"root\"}";
    boot_settings s, back;
    assert_int_equal(boot_settings_parse(json, strlen(json), NULL, &s), 0);
    assert_int_equal(boot_settings_save(dir, &s), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/vmlinuz", dir);
    FILE *f = fopen(path, "w");
    fclose(f);
    assert_int_equal(boot_settings_load(dir, &back), 0);
    assert_string_equal(back.ssh_user, "root");
    boot_settings_free(&s);
    boot_settings_free(&back);
    assert_int_equal(test_root_remove(dir), 0);
}

/* an old qemu's PPM screen dump comes out as a PNG with the same pixels */
static void test_ppm_to_png(void **state)
{
    (void)state;
    char dir[512], ppm[600], png[600];
    assert_int_equal(test_root_make(dir, sizeof dir, "test_reach-ppm"), 0);
    snprintf(ppm, sizeof ppm, "%s/s.ppm", dir);
    snprintf(png, sizeof png, "%s/s.png", dir);
    unsigned char px[2 * 3 * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (unsigned char)(i * 13);
    FILE *f = fopen(ppm, "wb");
    fprintf(f, "P6\n# qemu\n3 2\n255\n");
    fwrite(px, 1, sizeof px, f);
    fclose(f);
    assert_int_equal(boot_ppm_to_png(ppm, png), 0);
    unsigned char buf[4096];
    f = fopen(png, "rb");
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_memory_equal(buf, "\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x03\0\0\0\x02\x08\x02\0\0\0", 29);
    /* every chunk's CRC holds, and IDAT inflates to the rows, filter 0 each */
    size_t pos = 8;
    unsigned char rows[64];
    uLongf rlen = sizeof rows;
    while (pos + 12 <= n) {
        uint32_t len = (uint32_t)buf[pos] << 24 | buf[pos + 1] << 16 | buf[pos + 2] << 8 | buf[pos + 3];
        uLong c = crc32(0, buf + pos + 4, 4 + len);
        const unsigned char *cp = buf + pos + 8 + len;
        assert_int_equal((uint32_t)c, (uint32_t)cp[0] << 24 | cp[1] << 16 | cp[2] << 8 | cp[3]);
        if (!memcmp(buf + pos + 4, "IDAT", 4))
            assert_int_equal(uncompress(rows, &rlen, buf + pos + 8, len), Z_OK);
        pos += 12 + len;
    }
    assert_int_equal(pos, n);
    assert_memory_equal(buf + n - 12, "\0\0\0\0IEND\xae\x42\x60\x82", 12);
    assert_int_equal(rlen, 2 * (1 + 9));
    assert_int_equal(rows[0], 0);
    assert_memory_equal(rows + 1, px, 9);
    assert_int_equal(rows[10], 0);
    assert_memory_equal(rows + 11, px + 9, 9);
    /* not a PPM: refused, naming it */
    f = fopen(ppm, "wb");
    fputs("P3\n3 2\n255\n", f);
    fclose(f);
    assert_int_equal(boot_ppm_to_png(ppm, png), -EINVAL);
    assert_non_null(strstr(boot_error(), "s.ppm: not an 8-bit PPM"));
    assert_int_equal(test_root_remove(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lease_macs),     cmocka_unit_test(test_lease_expiry),
        cmocka_unit_test(test_lease_duid),     cmocka_unit_test(test_arp),
        cmocka_unit_test(test_ssh_user),       cmocka_unit_test(test_ssh_user_saved),
        cmocka_unit_test(test_ppm_to_png),
    };
    return cmocka_run_group_tests_name("reach", tests, NULL, NULL);
}
