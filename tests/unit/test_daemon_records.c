/*
 * kilnd's records: sandboxes and processes written, ended (the first reason
 * wins), listed per tenant newest first, fetched with their processes,
 * hidden from other tenants, marked daemon-stopped, and still there after a
 * reopen; open failures with a one-line reason; several threads at once.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "daemon/records.h"

#define T0 1796569445123LL /* 2026-12-06T15:04:05.123Z */

static char dir[] = "/tmp/kiln-records-XXXXXX";
static char path[sizeof(dir) + 32];

static const char *const meta =
	"{\"note\": \"say \\\"hi\\\" \\u2014 \u00fcn\u00efc\u00f8d\u00e9 \u2713 \U0001F680\","
	" \"sql\": \"'; DROP TABLE sandboxes; --\", \"n\": [1, 2.5, null, true]}";
static const char *const allow = "[\"example.com:443\", \"10.0.0.0/8\"]";
static const char *const argv1 = "[\"sh\", \"-c\", \"echo \\\"hi\\\" 'there'\"]";

static void remove_db(void)
{
	char p[sizeof(path) + 8];

	unlink(path);
	snprintf(p, sizeof(p), "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", path);
	unlink(p);
}

static int setup(void **state)
{
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/kilnd.db", dir);
	return 0;
}

static int teardown(void **state)
{
	remove_db();
	return rmdir(dir);
}

static struct records *open_ok(void)
{
	struct records *r = NULL;
	char err[256] = "";

	if (records_open(path, &r, err, sizeof(err)))
		fail_msg("records_open: %s", err);
	assert_non_null(r);
	return r;
}

static void start(struct records *r, const char *id, const char *tenant, int64_t created,
		  const char *metadata)
{
	struct records_sandbox s = {
		.id = id, .tenant = tenant, .image = "base", .cpus = 2, .memory_mib = 512,
		.disk_mib = 1024, .timeout_s = 600, .allow_json = "[]",
		.metadata_json = metadata ? metadata : "{}", .audit_path = NULL,
		.created_ms = created,
	};

	assert_int_equal(records_sandbox_start(r, &s), 0);
}

static const char *str(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);

	assert_true(json_is_string(v));
	return json_string_value(v);
}

static json_int_t num(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);

	assert_true(json_is_integer(v));
	return json_integer_value(v);
}

static void is_null(const json_t *o, const char *key)
{
	assert_true(json_is_null(json_object_get(o, key)));
}

static void json_eq_text(const json_t *v, const char *text)
{
	json_t *want = json_loads(text, 0, NULL);

	assert_non_null(want);
	assert_true(json_equal(v, want));
	json_decref(want);
}

static int pragma_int(const char *pragma)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int v = -1;

	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, pragma, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static void test_lifecycle(void **state)
{
	struct records_sandbox full = {
		.id = "a1", .tenant = "a", .image = "img \"quoted\"", .cpus = 4,
		.memory_mib = 2048, .disk_mib = 4096, .timeout_s = 3600, .allow_json = allow,
		.metadata_json = meta, .audit_path = "/state/audit/a1.jsonl", .created_ms = T0,
	};
	struct records *r = open_ok();
	int64_t row1 = 0, row2 = 0, row3 = 0, row4 = 0;
	json_t *list = NULL, *one = NULL, *e, *procs, *p;
	unsigned n = 99;

	/* Two sandboxes for a (a2 the newer), one for b in between. */
	assert_int_equal(records_sandbox_start(r, &full), 0);
	start(r, "b1", "b", T0 + 500, NULL);
	start(r, "a2", "a", T0 + 1000, NULL);
	assert_int_equal(records_sandbox_start(r, &full), -EEXIST);
	full.id = "";
	assert_int_equal(records_sandbox_start(r, &full), -EINVAL);
	full.id = "a1";
	full.tenant = NULL;
	assert_int_equal(records_sandbox_start(r, &full), -EINVAL);
	full.tenant = "a";

	assert_int_equal(records_sandbox_booted(r, "a1", 123), 0);
	assert_int_equal(records_sandbox_booted(r, "a2", 95), 0);
	assert_int_equal(records_sandbox_booted(r, "nope", 1), -ENOENT);

	assert_int_equal(records_process_start(r, "a1", argv1, T0 + 10, &row1), 0);
	assert_int_equal(records_process_start(r, "a1", "[\"true\"]", T0 + 20, &row2), 0);
	assert_int_equal(records_process_start(r, "a2", "[\"sleep\", \"9\"]", T0 + 1010, &row3), 0);
	assert_int_equal(records_process_start(r, "b1", "[\"id\"]", T0 + 510, &row4), 0);
	assert_true(row1 > 0 && row2 > row1 && row3 > row2 && row4 > row3);
	assert_int_equal(records_process_start(r, "nope", "[]", T0, &row4), -ENOENT);
	assert_int_equal(row4, 0);

	assert_int_equal(records_process_end(r, row1, 0, 0, 3, T0 + 15), 0);
	/* A second end changes nothing. */
	assert_int_equal(records_process_end(r, row1, 7, 9, 100, T0 + 99), 0);
	assert_int_equal(records_process_end(r, 999999, 0, 0, 0, T0), -ENOENT);
	assert_int_equal(records_process_end(r, 0, 0, 0, 0, T0), -EINVAL);

	/* End a1 twice: the first reason and time stay; its open process is closed. */
	assert_int_equal(records_sandbox_end(r, "a1", "deleted", T0 + 30), 0);
	assert_int_equal(records_sandbox_end(r, "a1", "timeout", T0 + 40), 0);
	assert_int_equal(records_sandbox_end(r, "nope", "deleted", T0), -ENOENT);
	assert_int_equal(records_sandbox_end(r, "a2", "no such reason", T0), -EINVAL);
	assert_int_equal(records_sandbox_end(r, "a2", "", T0), -EINVAL);
	assert_int_equal(records_sandbox_end(r, "a2", NULL, T0), -EINVAL);

	/* a's list: a2 then a1, b's sandbox not there. */
	assert_int_equal(records_list(r, "a", 10, &list), 0);
	assert_true(json_is_array(list));
	assert_int_equal(json_array_size(list), 2);
	e = json_array_get(list, 0);
	assert_string_equal(str(e, "id"), "a2");
	assert_string_equal(str(e, "image"), "base");
	assert_int_equal(num(e, "cpus"), 2);
	assert_int_equal(num(e, "memory_mib"), 512);
	assert_int_equal(num(e, "disk_mib"), 1024);
	assert_int_equal(num(e, "timeout_s"), 600);
	json_eq_text(json_object_get(e, "allow"), "[]");
	json_eq_text(json_object_get(e, "metadata"), "{}");
	assert_string_equal(str(e, "created_at"), "2026-12-06T15:04:06.123Z");
	is_null(e, "ended_at");
	is_null(e, "end_reason");
	assert_int_equal(num(e, "boot_ms"), 95);
	is_null(e, "audit");
	assert_int_equal(num(e, "processes"), 1);
	assert_null(json_object_get(e, "tenant"));
	assert_int_equal(json_object_size(e), 14);

	e = json_array_get(list, 1);
	assert_string_equal(str(e, "id"), "a1");
	assert_string_equal(str(e, "image"), "img \"quoted\"");
	assert_int_equal(num(e, "cpus"), 4);
	assert_int_equal(num(e, "memory_mib"), 2048);
	assert_int_equal(num(e, "disk_mib"), 4096);
	assert_int_equal(num(e, "timeout_s"), 3600);
	json_eq_text(json_object_get(e, "allow"), allow);
	json_eq_text(json_object_get(e, "metadata"), meta);
	assert_string_equal(str(e, "created_at"), "2026-12-06T15:04:05.123Z");
	assert_string_equal(str(e, "ended_at"), "2026-12-06T15:04:05.153Z");
	assert_string_equal(str(e, "end_reason"), "deleted");
	assert_int_equal(num(e, "boot_ms"), 123);
	assert_string_equal(str(e, "audit"), "/state/audit/a1.jsonl");
	assert_int_equal(num(e, "processes"), 2);
	json_decref(list);

	/* The limit, and its range. */
	assert_int_equal(records_list(r, "a", 1, &list), 0);
	assert_int_equal(json_array_size(list), 1);
	assert_string_equal(str(json_array_get(list, 0), "id"), "a2");
	json_decref(list);
	assert_int_equal(records_list(r, "a", 0, &list), -EINVAL);
	assert_null(list);
	assert_int_equal(records_list(r, "a", 1001, &list), -EINVAL);
	assert_int_equal(records_list(r, "b", 1000, &list), 0);
	assert_int_equal(json_array_size(list), 1);
	assert_string_equal(str(json_array_get(list, 0), "id"), "b1");
	json_decref(list);
	assert_int_equal(records_list(r, "nobody", 5, &list), 0);
	assert_int_equal(json_array_size(list), 0);
	json_decref(list);

	/* One record with its processes, oldest first. */
	assert_int_equal(records_get(r, "a", "a1", &one), 0);
	assert_string_equal(str(one, "id"), "a1");
	assert_string_equal(str(one, "end_reason"), "deleted");
	json_eq_text(json_object_get(one, "metadata"), meta);
	procs = json_object_get(one, "processes");
	assert_true(json_is_array(procs));
	assert_int_equal(json_array_size(procs), 2);
	p = json_array_get(procs, 0);
	json_eq_text(json_object_get(p, "argv"), argv1);
	assert_string_equal(str(p, "started_at"), "2026-12-06T15:04:05.133Z");
	assert_string_equal(str(p, "ended_at"), "2026-12-06T15:04:05.138Z");
	assert_int_equal(num(p, "exit_code"), 0);
	assert_int_equal(num(p, "signal"), 0);
	assert_int_equal(num(p, "bytes_out"), 3);
	assert_int_equal(json_object_size(p), 6);
	p = json_array_get(procs, 1);
	json_eq_text(json_object_get(p, "argv"), "[\"true\"]");
	assert_string_equal(str(p, "ended_at"), "2026-12-06T15:04:05.153Z"); /* the sandbox's end */
	assert_int_equal(num(p, "exit_code"), -1);
	assert_int_equal(num(p, "signal"), 0);
	is_null(p, "bytes_out");
	json_decref(one);

	/* Another tenant's id is as good as none. */
	assert_int_equal(records_get(r, "a", "b1", &one), -ENOENT);
	assert_null(one);
	assert_int_equal(records_get(r, "b", "a1", &one), -ENOENT);
	assert_int_equal(records_get(r, "a", "nope", &one), -ENOENT);

	/* Start-up: a2 and b1 are still open, and so are their processes. */
	assert_int_equal(records_mark_stopped(r, T0 + 5000, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(records_mark_stopped(r, T0 + 6000, &n), 0);
	assert_int_equal(n, 0);
	records_close(r);

	/* Reopen: everything is still there. */
	r = open_ok();
	assert_int_equal(records_get(r, "a", "a2", &one), 0);
	assert_string_equal(str(one, "end_reason"), "daemon-stopped");
	assert_string_equal(str(one, "ended_at"), "2026-12-06T15:04:10.123Z");
	p = json_array_get(json_object_get(one, "processes"), 0);
	assert_non_null(p);
	assert_string_equal(str(p, "ended_at"), "2026-12-06T15:04:10.123Z");
	assert_int_equal(num(p, "exit_code"), -1);
	json_decref(one);
	assert_int_equal(records_get(r, "b", "b1", &one), 0);
	assert_string_equal(str(one, "end_reason"), "daemon-stopped");
	assert_int_equal(num(json_array_get(json_object_get(one, "processes"), 0), "exit_code"), -1);
	json_decref(one);
	assert_int_equal(records_get(r, "a", "a1", &one), 0);
	assert_string_equal(str(one, "end_reason"), "deleted"); /* not overwritten */
	json_eq_text(json_object_get(one, "metadata"), meta);
	assert_string_equal(str(one, "image"), "img \"quoted\"");
	json_decref(one);
	records_close(r);
	records_close(NULL);

	assert_int_equal(pragma_int("PRAGMA user_version"), 1);
	remove_db();
}

/* Text stored that is not JSON comes back as null; times before 1970 are fine. */
static void test_odd_values(void **state)
{
	struct records_sandbox s = {
		.id = "x", .tenant = "t", .image = NULL, .cpus = 1, .memory_mib = 1,
		.disk_mib = 1, .timeout_s = 1, .allow_json = NULL, .metadata_json = "{not json",
		.audit_path = NULL, .created_ms = -1,
	};
	struct records *r = open_ok();
	json_t *one = NULL;
	int64_t row = 0;

	assert_int_equal(records_sandbox_start(r, &s), 0);
	assert_int_equal(records_process_start(r, "x", NULL, 0, &row), 0);
	assert_int_equal(records_process_end(r, row, 0, 9, 0, 1), 0);
	assert_int_equal(records_get(r, "t", "x", &one), 0);
	is_null(one, "image");
	json_eq_text(json_object_get(one, "allow"), "[]");
	is_null(one, "metadata");
	assert_string_equal(str(one, "created_at"), "1969-12-31T23:59:59.999Z");
	is_null(one, "boot_ms");
	is_null(json_array_get(json_object_get(one, "processes"), 0), "argv");
	assert_string_equal(str(json_array_get(json_object_get(one, "processes"), 0),
				"started_at"),
			    "1970-01-01T00:00:00.000Z");
	assert_int_equal(num(json_array_get(json_object_get(one, "processes"), 0), "signal"), 9);
	json_decref(one);
	records_close(r);
	remove_db();
}

static void open_fails(const char *p, const char *word)
{
	struct records *r = (struct records *)1;
	char err[512];

	memset(err, 'x', sizeof(err));
	assert_int_equal(records_open(p, &r, err, sizeof(err)), -EIO);
	assert_null(r);
	assert_non_null(memchr(err, 0, sizeof(err)));
	assert_null(strchr(err, '\n'));
	assert_non_null(strstr(err, p));
	if (!strstr(err, word))
		fail_msg("\"%s\" lacks \"%s\"", err, word);
}

static void test_open_errors(void **state)
{
	char p[sizeof(dir) + 32];
	struct records *r;
	FILE *f;

	snprintf(p, sizeof(p), "%s/no/such/dir.db", dir);
	open_fails(p, "unable to open");

	/* Not a database. */
	f = fopen(path, "w");
	assert_non_null(f);
	for (int i = 0; i < 200; i++)
		fputs("this is not an sqlite database\n", f);
	fclose(f);
	open_fails(path, "not a database");
	remove_db();

	/* A newer schema. */
	r = open_ok();
	records_close(r);
	assert_int_equal(pragma_int("PRAGMA user_version=2"), -1);
	assert_int_equal(pragma_int("PRAGMA user_version"), 2);
	open_fails(path, "schema version 2 is newer");
	remove_db();
}

#define THREADS	    4
#define PER_THREAD 25

static void *worker(void *arg)
{
	struct records *r = arg;
	char id[32];
	int64_t row;
	static int fails;

	for (int i = 0; i < PER_THREAD; i++) {
		struct records_sandbox s = {
			.id = id, .tenant = "many", .cpus = 1, .allow_json = "[]",
			.metadata_json = "{}", .created_ms = T0 + i,
		};

		snprintf(id, sizeof(id), "t%lx-%d", (unsigned long)pthread_self(), i);
		if (records_sandbox_start(r, &s) || records_process_start(r, id, "[]", T0, &row) ||
		    records_process_end(r, row, 0, 0, 1, T0 + 1) ||
		    records_sandbox_end(r, id, "deleted", T0 + 2))
			__atomic_add_fetch(&fails, 1, __ATOMIC_RELAXED);
	}
	return __atomic_load_n(&fails, __ATOMIC_RELAXED) ? arg : NULL;
}

static void test_threads(void **state)
{
	struct records *r = open_ok();
	pthread_t th[THREADS];
	json_t *list = NULL;
	unsigned n = 99;
	void *res;

	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, worker, r), 0);
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(th[i], &res), 0);
		assert_null(res);
	}
	assert_int_equal(records_list(r, "many", 1000, &list), 0);
	assert_int_equal(json_array_size(list), THREADS * PER_THREAD);
	json_decref(list);
	assert_int_equal(records_mark_stopped(r, T0, &n), 0);
	assert_int_equal(n, 0);
	records_close(r);
	remove_db();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lifecycle),
		cmocka_unit_test(test_odd_values),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_threads),
	};

	return cmocka_run_group_tests_name("daemon_records", tests, setup, teardown);
}
