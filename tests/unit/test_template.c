/*
 * lib/template: names, the cache directory, template.json both ways and as
 * hostile input, staging/commit (never over an existing template), removal
 * that leaves foreign files alone, the sweep of dead creators' staging
 * directories, and the sparse copy of a disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/template.h"

static char g_tmp[PATH_MAX];

static int setup(void **state)
{
	snprintf(g_tmp, sizeof(g_tmp), "/tmp/test_template.XXXXXX");
	return mkdtemp(g_tmp) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_tmp);
	return system(cmd) == 0 ? 0 : -1;
}

static void sample(struct kiln_template_info *t)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "py-numpy_2");
	t->created = 1796647121;
	snprintf(t->kernel.path, sizeof(t->kernel.path), "/k/vmlinux");
	t->kernel.size = 1234;
	t->kernel.mtime_ns = 1796647121123456789LL;
	snprintf(t->initrd.path, sizeof(t->initrd.path), "/k/initrd");
	snprintf(t->image.path, sizeof(t->image.path), "/k/image \"quoted\".img");
	t->cpus = 2;
	t->mem_mib = 512;
	t->disk_mib = 1024;
	t->state_bytes = 18788;
	t->ram_bytes = 512ULL << 20;
	t->boot_ms = 1500;
	t->snapshot_ms = 280;
	snprintf(t->warmup, sizeof(t->warmup), "python3 -c import numpy");
}

static void test_names(void **state)
{
	char long_name[80];

	assert_true(kiln_template_name_ok("t1"));
	assert_true(kiln_template_name_ok("py_3-12"));
	assert_false(kiln_template_name_ok(""));
	assert_false(kiln_template_name_ok(NULL));
	assert_false(kiln_template_name_ok("-x"));
	assert_false(kiln_template_name_ok("a/b"));
	assert_false(kiln_template_name_ok(".."));
	assert_false(kiln_template_name_ok(".new-x"));
	assert_false(kiln_template_name_ok("Upper"));
	memset(long_name, 'a', sizeof(long_name));
	long_name[KILN_TEMPLATE_NAME_MAX] = 0;
	assert_true(kiln_template_name_ok(long_name));
	long_name[KILN_TEMPLATE_NAME_MAX] = 'a';
	long_name[KILN_TEMPLATE_NAME_MAX + 1] = 0;
	assert_false(kiln_template_name_ok(long_name));
}

static void test_dir(void **state)
{
	char buf[PATH_MAX];

	setenv("KILN_CACHE", "/c", 1);
	setenv("XDG_CACHE_HOME", "/x", 1);
	setenv("HOME", "/h", 1);
	assert_int_equal(kiln_template_dir(buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/c/templates");
	unsetenv("KILN_CACHE");
	assert_int_equal(kiln_template_dir(buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/x/kiln/templates");
	unsetenv("XDG_CACHE_HOME");
	assert_int_equal(kiln_template_dir(buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/h/.cache/kiln/templates");
	assert_int_equal(kiln_template_dir(buf, 8), -1); /* too long for the buffer */
	unsetenv("HOME");
	assert_int_equal(kiln_template_dir(buf, sizeof(buf)), -1);
}

static void test_json_round_trip(void **state)
{
	struct kiln_template_info a, b;
	char why[256];
	json_t *j;

	sample(&a);
	j = kiln_template_info_json(&a);
	assert_non_null(j);
	assert_int_equal(kiln_template_info_parse(j, &b, why, sizeof(why)), 0);
	assert_string_equal(b.name, a.name);
	assert_int_equal(b.created, a.created);
	assert_string_equal(b.kernel.path, a.kernel.path);
	assert_int_equal(b.kernel.size, a.kernel.size);
	assert_int_equal(b.kernel.mtime_ns, a.kernel.mtime_ns);
	assert_string_equal(b.image.path, a.image.path);
	assert_int_equal(b.cpus, 2);
	assert_int_equal(b.mem_mib, 512);
	assert_int_equal(b.disk_mib, 1024);
	assert_int_equal(b.state_bytes, 18788);
	assert_int_equal(b.ram_bytes, 512ULL << 20);
	assert_string_equal(b.warmup, a.warmup);
	json_decref(j);
}

/* j with key set to v (stolen), parsed: must fail with why containing want. */
static void refuse(const char *key, json_t *v, const char *want)
{
	struct kiln_template_info a, b;
	char why[256] = "";
	json_t *j;

	sample(&a);
	j = kiln_template_info_json(&a);
	if (v)
		json_object_set_new(j, key, v);
	else
		json_object_del(j, key);
	assert_int_equal(kiln_template_info_parse(j, &b, why, sizeof(why)), -1);
	if (!strstr(why, want))
		fail_msg("%s: why '%s' lacks '%s'", key, why, want);
	json_decref(j);
}

static void test_json_refusals(void **state)
{
	struct kiln_template_info t;
	char why[256], big[5000];

	assert_int_equal(kiln_template_info_parse(json_array(), &t, why, sizeof(why)), -1);
	refuse("format", json_integer(2), "format 2");
	refuse("format", NULL, "\"format\"");
	refuse("name", json_string("../etc"), "not a template name");
	refuse("name", json_integer(1), "\"name\"");
	refuse("cpus", json_integer(0), "\"cpus\" is 0");
	refuse("cpus", json_integer(256), "\"cpus\"");
	refuse("mem_mib", json_integer(-1), "\"mem_mib\"");
	refuse("mem_mib", json_string("512"), "\"mem_mib\"");
	refuse("created", json_real(1.5), "\"created\"");
	refuse("kernel", json_string("/k"), "\"kernel\"");
	refuse("image", json_pack("{s:s, s:i}", "path", "/i", "size", 1), "\"mtime_ns\"");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	refuse("warmup", json_string(big), "too long");
	refuse("warmup", json_stringn("a\0b", 3), "\"warmup\"");
}

static void put(const char *dir, const char *name, const char *text)
{
	char p[PATH_MAX];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_stage_commit_remove(void **state)
{
	struct kiln_template_info t, back;
	char dir[PATH_MAX], stage[PATH_MAX], stage2[PATH_MAX], p[PATH_MAX], why[256];

	snprintf(dir, sizeof(dir), "%s/cache/templates", g_tmp);
	sample(&t);
	assert_int_equal(kiln_template_stage(dir, "bad/name", stage, sizeof(stage), why, sizeof(why)), -1);
	assert_int_equal(kiln_template_stage(dir, t.name, stage, sizeof(stage), why, sizeof(why)), 0);
	put(stage, "state", "s");
	put(stage, "mem", "m");
	assert_int_equal(kiln_template_commit(stage, dir, &t, why, sizeof(why)), 0);
	snprintf(p, sizeof(p), "%s/%s/mem", dir, t.name);
	assert_int_equal(access(p, F_OK), 0);
	assert_int_equal(access(stage, F_OK), -1);
	assert_int_equal(kiln_template_info_load(dir, t.name, &back, why, sizeof(why)), 0);
	assert_int_equal(back.mem_mib, t.mem_mib);
	assert_int_equal(kiln_template_info_load(dir, "nope", &back, why, sizeof(why)), -ENOENT);
	assert_int_equal(kiln_template_info_load(dir, "../x", &back, why, sizeof(why)), -1);

	/* A second one of the same name is refused and its staging kept for the caller. */
	assert_int_equal(kiln_template_stage(dir, t.name, stage2, sizeof(stage2), why, sizeof(why)), 0);
	assert_int_equal(kiln_template_commit(stage2, dir, &t, why, sizeof(why)), -EEXIST);
	assert_non_null(strstr(why, "exists"));
	assert_int_equal(kiln_template_remove_dir(stage2), 0);
	assert_int_equal(access(stage2, F_OK), -1);

	/* A name in template.json that is not the directory's. */
	snprintf(p, sizeof(p), "%s/%s", dir, "other");
	assert_int_equal(rename((snprintf(stage, sizeof(stage), "%s/%s", dir, t.name), stage), p), 0);
	assert_int_equal(kiln_template_info_load(dir, "other", &back, why, sizeof(why)), -1);
	assert_non_null(strstr(why, "names template"));

	/* Foreign files stop the removal. */
	put(p, "mine.txt", "x");
	assert_int_equal(kiln_template_remove_dir(p), -ENOTEMPTY);
	snprintf(stage, sizeof(stage), "%s/mine.txt", p);
	unlink(stage);
	assert_int_equal(kiln_template_remove_dir(p), 0);
	assert_int_equal(kiln_template_remove_dir(p), -ENOENT);
}

static void test_sweep(void **state)
{
	char dir[PATH_MAX], dead[PATH_MAX], mine[PATH_MAX], odd[PATH_MAX], why[256];

	snprintf(dir, sizeof(dir), "%s/sweep", g_tmp);
	assert_int_equal(kiln_template_stage(dir, "t", mine, sizeof(mine), why, sizeof(why)), 0);
	snprintf(dead, sizeof(dead), "%s/.new-t.2147483646.abcdef", dir);
	assert_int_equal(mkdir(dead, 0700), 0);
	put(dead, "mem", "m");
	snprintf(odd, sizeof(odd), "%s/.new-t.notapid.abcdef", dir);
	assert_int_equal(mkdir(odd, 0700), 0);
	kiln_template_sweep(dir);
	assert_int_equal(access(dead, F_OK), -1); /* its creator is gone */
	assert_int_equal(access(mine, F_OK), 0);  /* this process is alive */
	assert_int_equal(access(odd, F_OK), 0);   /* not ours to judge */
}

static void test_copy_sparse(void **state)
{
	char a[PATH_MAX], b[PATH_MAX], buf[4096], got[4096];
	int in, out;
	struct stat st;

	snprintf(a, sizeof(a), "%s/disk", g_tmp);
	snprintf(b, sizeof(b), "%s/copy", g_tmp);
	in = open(a, O_RDWR | O_CREAT, 0600);
	out = open(b, O_RDWR | O_CREAT, 0600);
	assert_true(in >= 0 && out >= 0);
	assert_int_equal(ftruncate(in, 64 << 20), 0);
	memset(buf, 0xa5, sizeof(buf));
	assert_int_equal(pwrite(in, buf, sizeof(buf), 0), sizeof(buf));
	memset(buf, 0x5a, sizeof(buf));
	assert_int_equal(pwrite(in, buf, sizeof(buf), 32 << 20), sizeof(buf));
	assert_int_equal(pwrite(out, "junk", 4, 48 << 20), 4); /* replaced */
	assert_int_equal(kiln_copy_sparse(in, out), 0);
	assert_int_equal(fstat(out, &st), 0);
	assert_int_equal(st.st_size, 64 << 20);
	assert_true(st.st_blocks * 512 < (8 << 20)); /* holes stayed holes */
	assert_int_equal(pread(out, got, sizeof(got), 32 << 20), sizeof(got));
	assert_memory_equal(got, buf, sizeof(buf));
	memset(buf, 0xa5, sizeof(buf));
	assert_int_equal(pread(out, got, sizeof(got), 0), sizeof(got));
	assert_memory_equal(got, buf, sizeof(buf));
	memset(buf, 0, sizeof(buf));
	assert_int_equal(pread(out, got, sizeof(got), 48 << 20), sizeof(got));
	assert_memory_equal(got, buf, sizeof(buf));
	close(in);
	close(out);
	/* Not a regular file. */
	in = open("/dev/null", O_RDONLY);
	out = open(b, O_RDWR);
	assert_int_equal(kiln_copy_sparse(in, out), -EINVAL);
	close(in);
	close(out);
}

static void test_file_current(void **state)
{
	struct kiln_template_file f;
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s/k", g_tmp);
	put(g_tmp, "k", "kernel");
	assert_int_equal(kiln_template_file_stat(&f, p), 0);
	assert_string_equal(f.path, p);
	assert_true(kiln_template_file_current(&f));
	/* Its own path again (what kiln_template_save does). */
	assert_int_equal(kiln_template_file_stat(&f, f.path), 0);
	assert_string_equal(f.path, p);
	put(g_tmp, "k", "kernel2");
	assert_false(kiln_template_file_current(&f));
	unlink(p);
	assert_false(kiln_template_file_current(&f));
	assert_int_equal(kiln_template_file_stat(&f, p), -ENOENT);
}

/* The automatic template's name: the same machine, the same name; a
 * rebuilt file (mtime) or another vCPU/memory/disk count, another name. */
static void test_auto_name(void **state)
{
	char k[PATH_MAX + 8], i[PATH_MAX + 8], img[PATH_MAX + 8];
	char a[64], b[64], c[64];
	struct timespec ts[2] = { { .tv_sec = 1000000000, .tv_nsec = 0 },
				  { .tv_sec = 1000000000, .tv_nsec = 0 } };
	const char *const files[3] = { k, i, img };

	snprintf(k, sizeof(k), "%s/vmlinux", g_tmp);
	snprintf(i, sizeof(i), "%s/initrd", g_tmp);
	snprintf(img, sizeof(img), "%s/img", g_tmp);
	for (unsigned n = 0; n < 3; n++) {
		FILE *f = fopen(files[n], "w");

		assert_non_null(f);
		fputs("x", f);
		fclose(f);
		assert_int_equal(utimensat(AT_FDCWD, files[n], ts, 0), 0);
	}
	assert_int_equal(kiln_template_auto_name(k, i, img, 1, 128, 64, a, sizeof(a)), 0);
	assert_int_equal(strlen(a), 5 + 16);
	assert_int_equal(strncmp(a, "auto-", 5), 0);
	assert_true(kiln_template_name_ok(a));
	assert_int_equal(kiln_template_auto_name(k, i, img, 1, 128, 64, b, sizeof(b)), 0);
	assert_string_equal(a, b);
	assert_int_equal(kiln_template_auto_name(k, i, img, 2, 128, 64, c, sizeof(c)), 0);
	assert_string_not_equal(a, c);
	assert_int_equal(kiln_template_auto_name(k, i, img, 1, 256, 64, c, sizeof(c)), 0);
	assert_string_not_equal(a, c);
	assert_int_equal(kiln_template_auto_name(k, i, img, 1, 128, 0, c, sizeof(c)), 0);
	assert_string_not_equal(a, c);
	ts[1].tv_nsec = 1; /* the image rebuilt: another mtime */
	assert_int_equal(utimensat(AT_FDCWD, img, ts, 0), 0);
	assert_int_equal(kiln_template_auto_name(k, i, img, 1, 128, 64, c, sizeof(c)), 0);
	assert_string_not_equal(a, c);
	assert_int_equal(kiln_template_auto_name(k, i, "/nonexistent/img", 1, 128, 64, c, sizeof(c)),
			 -ENOENT);
	assert_int_equal(kiln_template_auto_name(k, i, img, 1, 128, 64, c, 8), -ENAMETOOLONG);
	for (unsigned n = 0; n < 3; n++)
		unlink(files[n]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_dir),
		cmocka_unit_test(test_json_round_trip),
		cmocka_unit_test(test_json_refusals),
		cmocka_unit_test_setup_teardown(test_stage_commit_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sweep, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_sparse, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_current, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auto_name, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
