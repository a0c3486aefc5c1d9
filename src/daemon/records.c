/*
 * kilnd's records in SQLite (see records.h).
 *
 * One connection (SQLITE_OPEN_FULLMUTEX) behind r->mu: every public call
 * holds the mutex from its first statement to its last, so the calls that
 * run several statements (an end and its processes, in one transaction) are
 * atomic with respect to each other. Every value reaches SQL as a bound
 * parameter of a prepared statement; the only SQL text built is constant.
 *
 * Schema version 1 (PRAGMA user_version). A database with a newer version
 * is refused. Besides the index on sandboxes(tenant, created_ms) there is one
 * on processes(sandbox_id), for the per-sandbox counts and lists and for the
 * foreign key.
 *
 * Inputs are bounded: ids, tenants and images at most RECORDS_NAME_MAX
 * bytes, JSON texts and paths at most RECORDS_TEXT_MAX, numbers at most
 * INT64_MAX; an end reason is 1 to 63 bytes of [a-z0-9-]. Anything else is
 * -EINVAL. A failing SQLite call is -EIO; a sandbox id that already exists
 * is -EEXIST; an id or process row that does not exist is -ENOENT. Ending
 * something already ended is 0 and changes nothing (the first end wins).
 *
 * records_mark_stopped closes every process without an end (not only those
 * of the sandboxes it ends): at start-up none of them is still running.
 * Processes closed by an end get exit_code -1, signal 0, bytes_out null.
 *
 * In the JSON answers a NULL column is null, "allow", "metadata" and "argv"
 * are parsed back from their text (null if that fails), and times are RFC
 * 3339 UTC with milliseconds ("2026-12-06T15:04:05.123Z").
 */
#include "daemon/records.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "sanitize.h"

#define RECORDS_VERSION	  1
#define RECORDS_NAME_MAX  256
#define RECORDS_TEXT_MAX  (1 << 20)
#define RECORDS_REASON_MAX 63
#define RECORDS_LIST_MAX  1000
#define RECORDS_PROCS_MAX 1000
#define RECORDS_BUSY_MS	  5000

struct records {
	sqlite3 *db;
	pthread_mutex_t mu;
};

enum records_kind { RK_TEXT, RK_INT, RK_JSON, RK_TIME };

struct records_col {
	const char *key;
	enum records_kind kind;
};

/* The sandbox columns of a SELECT, in the order of records_sandbox_cols. */
#define RECORDS_SANDBOX_SELECT                                                              \
	"SELECT id, image, cpus, memory_mib, disk_mib, timeout_s, allow, metadata, created_ms, " \
	"ended_ms, end_reason, boot_ms, audit"

static const struct records_col records_sandbox_cols[] = {
	{ "id", RK_TEXT },	   { "image", RK_TEXT },     { "cpus", RK_INT },
	{ "memory_mib", RK_INT },  { "disk_mib", RK_INT },   { "timeout_s", RK_INT },
	{ "allow", RK_JSON },	   { "metadata", RK_JSON },  { "created_at", RK_TIME },
	{ "ended_at", RK_TIME },   { "end_reason", RK_TEXT }, { "boot_ms", RK_INT },
	{ "audit", RK_TEXT },
};

static const struct records_col records_process_cols[] = {
	{ "argv", RK_JSON },	 { "started_at", RK_TIME }, { "ended_at", RK_TIME },
	{ "exit_code", RK_INT }, { "signal", RK_INT },	    { "bytes_out", RK_INT },
};

static const char records_schema[] =
	"CREATE TABLE IF NOT EXISTS sandboxes("
	" id TEXT PRIMARY KEY, tenant TEXT NOT NULL, image TEXT, cpus INTEGER,"
	" memory_mib INTEGER, disk_mib INTEGER, timeout_s INTEGER, allow TEXT,"
	" metadata TEXT, audit TEXT, created_ms INTEGER, ended_ms INTEGER,"
	" end_reason TEXT, boot_ms INTEGER);"
	"CREATE TABLE IF NOT EXISTS processes("
	" row INTEGER PRIMARY KEY, sandbox_id TEXT REFERENCES sandboxes(id), argv TEXT,"
	" started_ms INTEGER, ended_ms INTEGER, exit_code INTEGER, signal INTEGER,"
	" bytes_out INTEGER);"
	"CREATE INDEX IF NOT EXISTS sandboxes_tenant_created ON sandboxes(tenant, created_ms);"
	"CREATE INDEX IF NOT EXISTS processes_sandbox ON processes(sandbox_id);";

/* ---- small helpers (callers hold r->mu) ---- */

static bool records_str_ok(const char *s, size_t max)
{
	return s && strnlen(s, max + 1) <= max;
}

static bool records_reason_ok(const char *s)
{
	size_t len;

	if (!s)
		return false;
	len = strnlen(s, RECORDS_REASON_MAX + 1);
	if (len == 0 || len > RECORDS_REASON_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

static int records_prepare(struct records *r, const char *sql, sqlite3_stmt **st)
{
	*st = NULL;
	return sqlite3_prepare_v2(r->db, sql, -1, st, NULL) == SQLITE_OK ? 0 : -EIO;
}

/* Binds are checked once, at the step: a failed bind makes the step fail. */
static int records_bind_text(sqlite3_stmt *st, int i, const char *s)
{
	return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

/* Runs a statement that returns no rows. 0, -EEXIST or -ENOENT on a
 * constraint (as the caller says), or -EIO. */
static int records_done(sqlite3_stmt *st, int on_constraint)
{
	int rc = sqlite3_step(st);

	if (rc == SQLITE_DONE)
		return 0;
	return (rc & 0xff) == SQLITE_CONSTRAINT ? on_constraint : -EIO;
}

static int records_exec(struct records *r, const char *sql)
{
	return sqlite3_exec(r->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
}

/* Whether sql, with ?1 bound to text (or num when text is NULL), returns a
 * row: 0 (yes), -ENOENT (no) or -EIO. */
static int records_exists(struct records *r, const char *sql, const char *text, int64_t num)
{
	sqlite3_stmt *st = NULL;
	int ret, rc;

	ret = records_prepare(r, sql, &st);
	if (ret)
		goto out;
	if (text)
		sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
	else
		sqlite3_bind_int64(st, 1, num);
	rc = sqlite3_step(st);
	ret = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : -EIO;
out:
	sqlite3_finalize(st);
	return ret;
}

/* ms since the epoch as "YYYY-MM-DDTHH:MM:SS.mmmZ". */
static json_t *records_time(int64_t ms)
{
	int64_t sec = ms / 1000, rem = ms % 1000;
	char buf[64];
	struct tm tm;
	time_t t;
	size_t n;

	if (rem < 0) {
		rem += 1000;
		sec--;
	}
	t = (time_t)sec;
	if (!gmtime_r(&t, &tm))
		return json_null();
	n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	if (n == 0 || n + 6 > sizeof(buf))
		return json_null();
	snprintf(buf + n, sizeof(buf) - n, ".%03dZ", (int)rem);
	return json_string(buf);
}

/* Column i as JSON of the given kind; null for NULL or what cannot be shown. */
static json_t *records_value(sqlite3_stmt *st, int i, enum records_kind kind)
{
	const char *text;
	json_t *v = NULL;
	int len;

	if (sqlite3_column_type(st, i) == SQLITE_NULL)
		return json_null();
	switch (kind) {
	case RK_INT:
		v = json_integer(sqlite3_column_int64(st, i));
		break;
	case RK_TIME:
		v = records_time(sqlite3_column_int64(st, i));
		break;
	case RK_TEXT:
	case RK_JSON:
		text = (const char *)sqlite3_column_text(st, i);
		len = sqlite3_column_bytes(st, i);
		if (!text || len < 0)
			break;
		if (kind == RK_TEXT)
			v = json_stringn(text, (size_t)len);
		else
			v = json_loadb(text, (size_t)len, 0, NULL);
		break;
	}
	return v ? v : json_null();
}

/* cols[k] from column first + k of the current row into obj. 0 or -ENOMEM. */
static int records_put(json_t *obj, sqlite3_stmt *st, int first, const struct records_col *cols,
		       size_t n)
{
	for (size_t k = 0; k < n; k++) {
		if (json_object_set_new(obj, cols[k].key,
					records_value(st, first + (int)k, cols[k].kind)))
			return -ENOMEM;
	}
	return 0;
}

/* ---- open / close ---- */

/* A one-line reason: "records PATH: what: sqlite's message". */
static void records_err(char *err, size_t errlen, const char *path, const char *what,
			sqlite3 *db)
{
	char safe[128], msg[256];

	if (!err || errlen == 0)
		return;
	text_sanitize_str(safe, sizeof(safe), path);
	text_sanitize_str(msg, sizeof(msg), db ? sqlite3_errmsg(db) : "out of memory");
	snprintf(err, errlen, "records %s: %s: %s", safe, what, msg);
}

int records_open(const char *path, struct records **out, char *err, size_t errlen)
{
	struct records *r = NULL;
	sqlite3_stmt *st = NULL;
	bool in_tx = false, have_mu = false;
	const char *what = "cannot open", *mode;
	char safe[128], msg[64];
	int ret = -EIO, rc, version;

	*out = NULL;
	if (err && errlen)
		err[0] = 0;
	r = calloc(1, sizeof(*r));
	if (!r || pthread_mutex_init(&r->mu, NULL)) {
		free(r);
		r = NULL;
		ret = -ENOMEM;
		if (err && errlen)
			snprintf(err, errlen, "records: out of memory");
		goto out;
	}
	have_mu = true;
	rc = sqlite3_open_v2(path, &r->db,
			     SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
			     NULL);
	if (rc != SQLITE_OK)
		goto fail;
	what = "cannot set busy_timeout";
	if (sqlite3_busy_timeout(r->db, RECORDS_BUSY_MS) != SQLITE_OK ||
	    records_exec(r, "PRAGMA busy_timeout=5000"))
		goto fail;
	what = "cannot switch to WAL";
	if (records_prepare(r, "PRAGMA journal_mode=WAL", &st) || sqlite3_step(st) != SQLITE_ROW)
		goto fail;
	mode = (const char *)sqlite3_column_text(st, 0);
	if (!mode || sqlite3_stricmp(mode, "wal")) {
		if (err && errlen)
			snprintf(err, errlen, "records %s: journal_mode stays %s, not wal",
				 text_sanitize_str(safe, sizeof(safe), path),
				 text_sanitize_str(msg, sizeof(msg), mode ? mode : "?"));
		goto out;
	}
	sqlite3_finalize(st);
	st = NULL;
	what = "cannot set pragmas";
	if (records_exec(r, "PRAGMA synchronous=NORMAL") ||
	    records_exec(r, "PRAGMA foreign_keys=ON"))
		goto fail;
	what = "cannot create the schema";
	if (records_exec(r, "BEGIN IMMEDIATE"))
		goto fail;
	in_tx = true;
	if (records_prepare(r, "PRAGMA user_version", &st) || sqlite3_step(st) != SQLITE_ROW)
		goto fail;
	version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	st = NULL;
	if (version > RECORDS_VERSION) {
		if (err && errlen)
			snprintf(err, errlen,
				 "records %s: schema version %d is newer than this kilnd's %d",
				 text_sanitize_str(safe, sizeof(safe), path), version,
				 RECORDS_VERSION);
		goto out;
	}
	if (records_exec(r, records_schema))
		goto fail;
	if (version < RECORDS_VERSION && records_exec(r, "PRAGMA user_version=1"))
		goto fail;
	if (records_exec(r, "COMMIT"))
		goto fail;
	in_tx = false;
	*out = r;
	r = NULL;
	ret = 0;
	goto out;
fail:
	records_err(err, errlen, path, what, r->db);
out:
	sqlite3_finalize(st);
	if (r) {
		if (in_tx)
			records_exec(r, "ROLLBACK");
		sqlite3_close(r->db);
		if (have_mu)
			pthread_mutex_destroy(&r->mu);
		free(r);
	}
	return ret;
}

void records_close(struct records *r)
{
	if (!r)
		return;
	sqlite3_close(r->db);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

/* ---- writes ---- */

int records_mark_stopped(struct records *r, int64_t now_ms, unsigned *n)
{
	sqlite3_stmt *st = NULL;
	bool in_tx = false;
	int ret = -EINVAL;

	if (n)
		*n = 0;
	if (!r)
		return ret;
	pthread_mutex_lock(&r->mu);
	ret = records_exec(r, "BEGIN IMMEDIATE");
	if (ret)
		goto out;
	in_tx = true;
	ret = records_prepare(r,
			      "UPDATE processes SET ended_ms = ?1, exit_code = -1, signal = 0"
			      " WHERE ended_ms IS NULL",
			      &st);
	if (ret)
		goto out;
	sqlite3_bind_int64(st, 1, now_ms);
	ret = records_done(st, -EIO);
	if (ret)
		goto out;
	sqlite3_finalize(st);
	ret = records_prepare(r,
			      "UPDATE sandboxes SET ended_ms = ?1, end_reason = 'daemon-stopped'"
			      " WHERE ended_ms IS NULL",
			      &st);
	if (ret)
		goto out;
	sqlite3_bind_int64(st, 1, now_ms);
	ret = records_done(st, -EIO);
	if (ret)
		goto out;
	if (n)
		*n = (unsigned)sqlite3_changes(r->db);
	ret = records_exec(r, "COMMIT");
	if (!ret)
		in_tx = false;
out:
	sqlite3_finalize(st);
	if (in_tx) {
		records_exec(r, "ROLLBACK");
		if (n)
			*n = 0;
	}
	pthread_mutex_unlock(&r->mu);
	return ret;
}

int records_sandbox_start(struct records *r, const struct records_sandbox *s)
{
	sqlite3_stmt *st = NULL;
	int ret = -EINVAL;

	if (!r || !s || !records_str_ok(s->id, RECORDS_NAME_MAX) || !s->id[0] ||
	    !records_str_ok(s->tenant, RECORDS_NAME_MAX) ||
	    (s->image && !records_str_ok(s->image, RECORDS_NAME_MAX)) ||
	    (s->allow_json && !records_str_ok(s->allow_json, RECORDS_TEXT_MAX)) ||
	    (s->metadata_json && !records_str_ok(s->metadata_json, RECORDS_TEXT_MAX)) ||
	    (s->audit_path && !records_str_ok(s->audit_path, RECORDS_TEXT_MAX)) ||
	    s->memory_mib > INT64_MAX || s->disk_mib > INT64_MAX || s->timeout_s > INT64_MAX)
		return ret;
	pthread_mutex_lock(&r->mu);
	ret = records_prepare(r,
			      "INSERT INTO sandboxes(id, tenant, image, cpus, memory_mib, disk_mib,"
			      " timeout_s, allow, metadata, audit, created_ms)"
			      " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
			      &st);
	if (ret)
		goto out;
	records_bind_text(st, 1, s->id);
	records_bind_text(st, 2, s->tenant);
	records_bind_text(st, 3, s->image);
	sqlite3_bind_int64(st, 4, s->cpus);
	sqlite3_bind_int64(st, 5, (int64_t)s->memory_mib);
	sqlite3_bind_int64(st, 6, (int64_t)s->disk_mib);
	sqlite3_bind_int64(st, 7, (int64_t)s->timeout_s);
	records_bind_text(st, 8, s->allow_json ? s->allow_json : "[]");
	records_bind_text(st, 9, s->metadata_json ? s->metadata_json : "{}");
	records_bind_text(st, 10, s->audit_path);
	sqlite3_bind_int64(st, 11, s->created_ms);
	ret = records_done(st, -EEXIST);
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&r->mu);
	return ret;
}

int records_sandbox_booted(struct records *r, const char *id, uint64_t boot_ms)
{
	sqlite3_stmt *st = NULL;
	int ret = -EINVAL;

	if (!r || !records_str_ok(id, RECORDS_NAME_MAX) || boot_ms > INT64_MAX)
		return ret;
	pthread_mutex_lock(&r->mu);
	ret = records_prepare(r, "UPDATE sandboxes SET boot_ms = ?1 WHERE id = ?2", &st);
	if (ret)
		goto out;
	sqlite3_bind_int64(st, 1, (int64_t)boot_ms);
	records_bind_text(st, 2, id);
	ret = records_done(st, -EIO);
	if (!ret && sqlite3_changes(r->db) == 0)
		ret = -ENOENT;
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&r->mu);
	return ret;
}

int records_sandbox_end(struct records *r, const char *id, const char *reason, int64_t ended_ms)
{
	sqlite3_stmt *st = NULL;
	bool in_tx = false;
	int ret = -EINVAL;

	if (!r || !records_str_ok(id, RECORDS_NAME_MAX) || !records_reason_ok(reason))
		return ret;
	pthread_mutex_lock(&r->mu);
	ret = records_exec(r, "BEGIN IMMEDIATE");
	if (ret)
		goto out;
	in_tx = true;
	ret = records_prepare(r,
			      "UPDATE sandboxes SET ended_ms = ?1, end_reason = ?2"
			      " WHERE id = ?3 AND ended_ms IS NULL",
			      &st);
	if (ret)
		goto out;
	sqlite3_bind_int64(st, 1, ended_ms);
	records_bind_text(st, 2, reason);
	records_bind_text(st, 3, id);
	ret = records_done(st, -EIO);
	if (ret)
		goto out;
	if (sqlite3_changes(r->db) == 0) {
		/* Already ended (0: the first reason stays) or not there. */
		ret = records_exists(r, "SELECT 1 FROM sandboxes WHERE id = ?1", id, 0);
		if (ret)
			goto out;
	}
	sqlite3_finalize(st);
	ret = records_prepare(r,
			      "UPDATE processes SET ended_ms = ?1, exit_code = -1, signal = 0"
			      " WHERE sandbox_id = ?2 AND ended_ms IS NULL",
			      &st);
	if (ret)
		goto out;
	sqlite3_bind_int64(st, 1, ended_ms);
	records_bind_text(st, 2, id);
	ret = records_done(st, -EIO);
	if (ret)
		goto out;
	ret = records_exec(r, "COMMIT");
	if (!ret)
		in_tx = false;
out:
	sqlite3_finalize(st);
	if (in_tx)
		records_exec(r, "ROLLBACK");
	pthread_mutex_unlock(&r->mu);
	return ret;
}

int records_process_start(struct records *r, const char *sandbox_id, const char *argv_json,
			  int64_t started_ms, int64_t *row)
{
	sqlite3_stmt *st = NULL;
	int ret = -EINVAL;

	if (row)
		*row = 0;
	if (!r || !row || !records_str_ok(sandbox_id, RECORDS_NAME_MAX) ||
	    (argv_json && !records_str_ok(argv_json, RECORDS_TEXT_MAX)))
		return ret;
	pthread_mutex_lock(&r->mu);
	ret = records_prepare(r,
			      "INSERT INTO processes(sandbox_id, argv, started_ms)"
			      " VALUES(?1, ?2, ?3)",
			      &st);
	if (ret)
		goto out;
	records_bind_text(st, 1, sandbox_id);
	records_bind_text(st, 2, argv_json);
	sqlite3_bind_int64(st, 3, started_ms);
	/* The foreign key: no such sandbox. */
	ret = records_done(st, -ENOENT);
	if (!ret)
		*row = sqlite3_last_insert_rowid(r->db);
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&r->mu);
	return ret;
}

int records_process_end(struct records *r, int64_t row, int code, int signal, uint64_t bytes_out,
			int64_t ended_ms)
{
	sqlite3_stmt *st = NULL;
	int ret = -EINVAL;

	if (!r || row <= 0 || bytes_out > INT64_MAX)
		return ret;
	pthread_mutex_lock(&r->mu);
	ret = records_prepare(r,
			      "UPDATE processes SET ended_ms = ?1, exit_code = ?2, signal = ?3,"
			      " bytes_out = ?4 WHERE row = ?5 AND ended_ms IS NULL",
			      &st);
	if (ret)
		goto out;
	sqlite3_bind_int64(st, 1, ended_ms);
	sqlite3_bind_int(st, 2, code);
	sqlite3_bind_int(st, 3, signal);
	sqlite3_bind_int64(st, 4, (int64_t)bytes_out);
	sqlite3_bind_int64(st, 5, row);
	ret = records_done(st, -EIO);
	if (!ret && sqlite3_changes(r->db) == 0)
		ret = records_exists(r, "SELECT 1 FROM processes WHERE row = ?1", NULL, row);
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&r->mu);
	return ret;
}

/* ---- reads ---- */

int records_list(struct records *r, const char *tenant, unsigned limit, json_t **out)
{
	const size_t ncols = sizeof(records_sandbox_cols) / sizeof(records_sandbox_cols[0]);
	sqlite3_stmt *st = NULL;
	json_t *arr = NULL, *obj = NULL;
	int ret = -EINVAL, rc;

	if (out)
		*out = NULL;
	if (!r || !out || !records_str_ok(tenant, RECORDS_NAME_MAX) || limit < 1 ||
	    limit > RECORDS_LIST_MAX)
		return ret;
	pthread_mutex_lock(&r->mu);
	ret = records_prepare(r,
			      RECORDS_SANDBOX_SELECT ", (SELECT count(*) FROM processes p"
			      " WHERE p.sandbox_id = s.id)"
			      " FROM sandboxes s WHERE tenant = ?1"
			      " ORDER BY created_ms DESC, s.rowid DESC LIMIT ?2",
			      &st);
	if (ret)
		goto out;
	records_bind_text(st, 1, tenant);
	sqlite3_bind_int(st, 2, (int)limit);
	ret = -ENOMEM;
	arr = json_array();
	if (!arr)
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int bad;

		ret = -ENOMEM;
		obj = json_object();
		if (!obj || records_put(obj, st, 0, records_sandbox_cols, ncols) ||
		    json_object_set_new(obj, "processes",
					json_integer(sqlite3_column_int64(st, (int)ncols))))
			goto out;
		bad = json_array_append_new(arr, obj); /* (takes obj even when it fails) */
		obj = NULL;
		if (bad)
			goto out;
	}
	ret = rc == SQLITE_DONE ? 0 : -EIO;
	if (!ret) {
		*out = arr;
		arr = NULL;
	}
out:
	json_decref(obj);
	json_decref(arr);
	sqlite3_finalize(st);
	pthread_mutex_unlock(&r->mu);
	return ret;
}

int records_get(struct records *r, const char *tenant, const char *id, json_t **out)
{
	const size_t ncols = sizeof(records_sandbox_cols) / sizeof(records_sandbox_cols[0]);
	const size_t npcols = sizeof(records_process_cols) / sizeof(records_process_cols[0]);
	sqlite3_stmt *st = NULL;
	json_t *obj = NULL, *procs = NULL, *p = NULL;
	int ret = -EINVAL, rc;

	if (out)
		*out = NULL;
	if (!r || !out || !records_str_ok(tenant, RECORDS_NAME_MAX) ||
	    !records_str_ok(id, RECORDS_NAME_MAX))
		return ret;
	pthread_mutex_lock(&r->mu);
	ret = records_prepare(r, RECORDS_SANDBOX_SELECT " FROM sandboxes WHERE id = ?1 AND tenant = ?2",
			      &st);
	if (ret)
		goto out;
	records_bind_text(st, 1, id);
	records_bind_text(st, 2, tenant);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		ret = rc == SQLITE_DONE ? -ENOENT : -EIO;
		goto out;
	}
	ret = -ENOMEM;
	obj = json_object();
	if (!obj || records_put(obj, st, 0, records_sandbox_cols, ncols))
		goto out;
	procs = json_array();
	if (!procs || json_object_set(obj, "processes", procs))
		goto out;
	sqlite3_finalize(st);
	ret = records_prepare(r,
			      "SELECT argv, started_ms, ended_ms, exit_code, signal, bytes_out"
			      " FROM processes WHERE sandbox_id = ?1 ORDER BY row LIMIT ?2",
			      &st);
	if (ret)
		goto out;
	records_bind_text(st, 1, id);
	sqlite3_bind_int(st, 2, RECORDS_PROCS_MAX);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int bad;

		ret = -ENOMEM;
		p = json_object();
		if (!p || records_put(p, st, 0, records_process_cols, npcols))
			goto out;
		bad = json_array_append_new(procs, p); /* (takes p even when it fails) */
		p = NULL;
		if (bad)
			goto out;
	}
	ret = rc == SQLITE_DONE ? 0 : -EIO;
	if (!ret) {
		*out = obj;
		obj = NULL;
	}
out:
	json_decref(p);
	json_decref(procs);
	json_decref(obj);
	sqlite3_finalize(st);
	pthread_mutex_unlock(&r->mu);
	return ret;
}
