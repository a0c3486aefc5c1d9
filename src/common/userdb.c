/*
 * USER[:GROUP] against /etc/passwd and /etc/group contents (userdb.h). No
 * allocation: fields are views into the caller's buffers, every one bounded.
 */
#include "userdb.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define ID_MAX 4294967294u /* (uint32_t)-1 means "unchanged" to setuid(2) */

struct view {
	const char *p;
	size_t n;
};

/* A file's lines, one at a time; a line over USERDB_LINE_MAX or holding a
 * NUL comes back empty (skipped). -E2BIG past USERDB_LINES_MAX lines. */
struct lines {
	const char *p, *end;
	unsigned count;
};

static int next_line(struct lines *it, struct view *line)
{
	const char *nl;
	size_t n;

	if (!it->p || it->p >= it->end)
		return 0;
	if (++it->count > USERDB_LINES_MAX)
		return -E2BIG;
	nl = memchr(it->p, '\n', (size_t)(it->end - it->p));
	n = nl ? (size_t)(nl - it->p) : (size_t)(it->end - it->p);
	line->p = it->p;
	line->n = n;
	if (n > USERDB_LINE_MAX || memchr(it->p, 0, n))
		line->n = 0;
	it->p += n + (nl ? 1 : 0);
	return 1;
}

/* Exactly nf ':'-separated fields, else false. */
static bool split(struct view line, struct view *f, unsigned nf)
{
	const char *p = line.p, *end = line.p + line.n;
	unsigned i = 0;

	if (!line.n)
		return false;
	for (;;) {
		const char *c = memchr(p, ':', (size_t)(end - p));

		if (i == nf)
			return false;
		f[i].p = p;
		f[i].n = c ? (size_t)(c - p) : (size_t)(end - p);
		i++;
		if (!c)
			break;
		p = c + 1;
	}
	return i == nf;
}

/* A decimal id 0..ID_MAX, at most 10 digits, nothing else. */
static bool parse_id(struct view v, uint32_t *out)
{
	uint64_t x = 0;

	if (v.n == 0 || v.n > 10)
		return false;
	for (size_t i = 0; i < v.n; i++) {
		if (v.p[i] < '0' || v.p[i] > '9')
			return false;
		x = x * 10 + (uint64_t)(v.p[i] - '0');
	}
	if (x > ID_MAX)
		return false;
	*out = (uint32_t)x;
	return true;
}

static bool eq(struct view v, const char *s)
{
	return v.n == strlen(s) && !memcmp(v.p, s, v.n);
}

/* A name of a spec or a file: printable, no ':' ',' or space, 1..255 bytes. */
static bool name_ok(struct view v)
{
	if (v.n == 0 || v.n > USERDB_SPEC_MAX)
		return false;
	for (size_t i = 0; i < v.n; i++) {
		unsigned char c = (unsigned char)v.p[i];

		if (c <= 0x20 || c == 0x7f || c == ':' || c == ',')
			return false;
	}
	return true;
}

int userdb_spec_ok(const char *spec)
{
	size_t n = strnlen(spec, USERDB_SPEC_MAX + 1);
	const char *colon = memchr(spec, ':', n);
	struct view u = { spec, colon ? (size_t)(colon - spec) : n };

	if (n > USERDB_SPEC_MAX || !name_ok(u))
		return -EINVAL;
	if (colon && !name_ok((struct view){ colon + 1, n - u.n - 1 }))
		return -EINVAL;
	return 0;
}

struct pwent {
	struct view name, home;
	uint32_t uid, gid;
};

/* The first well-formed entry whose name (or, by_uid, uid) matches: 1, 0
 * when none, -E2BIG for a file over its caps. */
static int find_user(const char *buf, size_t len, struct view name, bool by_uid, uint32_t uid,
		     struct pwent *e)
{
	struct lines it = { buf, buf + len, 0 };
	struct view line, f[7];
	int r;

	while ((r = next_line(&it, &line)) > 0) {
		if (!split(line, f, 7) || !name_ok(f[0]) || !parse_id(f[2], &e->uid) ||
		    !parse_id(f[3], &e->gid))
			continue;
		if (by_uid ? e->uid != uid : (f[0].n != name.n || memcmp(f[0].p, name.p, name.n)))
			continue;
		e->name = f[0];
		e->home = f[5];
		return 1;
	}
	return r;
}

static bool home_ok(struct view h)
{
	if (h.n == 0 || h.n > USERDB_HOME_MAX || h.p[0] != '/')
		return false;
	for (size_t i = 0; i < h.n; i++)
		if ((unsigned char)h.p[i] < 0x20 || h.p[i] == 0x7f)
			return false;
	return true;
}

static bool member(struct view list, struct view name)
{
	const char *p = list.p, *end = list.p + list.n;

	while (p <= end) {
		const char *c = memchr(p, ',', (size_t)(end - p));
		size_t n = c ? (size_t)(c - p) : (size_t)(end - p);

		if (n == name.n && !memcmp(p, name.p, n))
			return true;
		if (!c)
			break;
		p = c + 1;
	}
	return false;
}

static int add_group(struct userdb_ids *out, uint32_t gid)
{
	for (unsigned i = 0; i < out->ngroups; i++)
		if (out->groups[i] == gid)
			return 0;
	if (out->ngroups >= USERDB_GROUPS_MAX)
		return -E2BIG;
	out->groups[out->ngroups++] = gid;
	return 0;
}

/* GROUP of a spec: a name from the file, or a number. */
static int find_group(const char *buf, size_t len, struct view g, uint32_t *gid)
{
	struct lines it = { buf, buf + len, 0 };
	struct view line, f[4];
	uint32_t id;
	int r;

	if (parse_id(g, gid))
		return 1;
	while ((r = next_line(&it, &line)) > 0) {
		if (split(line, f, 4) && name_ok(f[0]) && parse_id(f[2], &id) &&
		    f[0].n == g.n && !memcmp(f[0].p, g.p, g.n)) {
			*gid = id;
			return 1;
		}
	}
	return r;
}

/* Every group listing name as a member (initgroups). */
static int member_groups(const char *buf, size_t len, struct view name, struct userdb_ids *out)
{
	struct lines it = { buf, buf + len, 0 };
	struct view line, f[4];
	uint32_t id;
	int r;

	while ((r = next_line(&it, &line)) > 0) {
		if (!split(line, f, 4) || !name_ok(f[0]) || !parse_id(f[2], &id) ||
		    !member(f[3], name))
			continue;
		r = add_group(out, id);
		if (r)
			return r;
	}
	return r;
}

int userdb_resolve(const char *spec, const char *passwd, size_t passwd_len, const char *group,
		   size_t group_len, struct userdb_ids *out, char *why, size_t whylen)
{
	const char *colon;
	struct view u, g = { NULL, 0 }, name = { NULL, 0 };
	struct pwent e;
	bool numeric;
	int r, ret = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (userdb_spec_ok(spec)) {
		snprintf(why, whylen, "bad user '%.64s' (USER[:GROUP], names or numbers)", spec);
		goto out;
	}
	if (passwd_len > USERDB_FILE_MAX || group_len > USERDB_FILE_MAX) {
		ret = -E2BIG;
		snprintf(why, whylen, "the image's /etc/passwd or /etc/group is over %u bytes",
			 USERDB_FILE_MAX);
		goto out;
	}
	colon = strchr(spec, ':');
	u = (struct view){ spec, colon ? (size_t)(colon - spec) : strlen(spec) };
	if (colon)
		g = (struct view){ colon + 1, strlen(colon + 1) };
	numeric = parse_id(u, &out->uid);
	r = find_user(passwd, passwd_len, u, numeric, out->uid, &e);
	if (r < 0) {
		ret = r;
		snprintf(why, whylen, "/etc/passwd is too large (over %u lines)", USERDB_LINES_MAX);
		goto out;
	}
	if (r > 0) {
		out->uid = e.uid;
		out->gid = e.gid;
		name = e.name;
		if (home_ok(e.home))
			snprintf(out->home, sizeof(out->home), "%.*s", (int)e.home.n, e.home.p);
	} else if (numeric) {
		out->gid = out->uid;
	} else if (eq(u, "root")) {
		name = u;
	} else {
		ret = -ESRCH;
		snprintf(why, whylen, "no user '%.*s' in the image's /etc/passwd%s", (int)u.n, u.p,
			 passwd ? "" : " (it has none)");
		goto out;
	}
	if (!out->home[0])
		snprintf(out->home, sizeof(out->home), "%s", out->uid == 0 ? "/root" : "/");
	if (colon) {
		r = find_group(group, group_len, g, &out->gid);
		if (r == 0) {
			ret = -ESRCH;
			snprintf(why, whylen, "no group '%.*s' in the image's /etc/group%s", (int)g.n,
				 g.p, group ? "" : " (it has none)");
			goto out;
		}
		if (r < 0) {
			ret = r;
			snprintf(why, whylen, "/etc/group is too large (over %u lines)", USERDB_LINES_MAX);
			goto out;
		}
		out->groups[0] = out->gid;
		out->ngroups = 1;
		ret = 0;
		goto out;
	}
	out->groups[0] = out->gid;
	out->ngroups = 1;
	if (name.n) {
		r = member_groups(group, group_len, name, out);
		if (r < 0) {
			ret = r;
			snprintf(why, whylen, "user '%.*s': /etc/group is too large or lists it in more than %u groups",
				 (int)name.n, name.p, USERDB_GROUPS_MAX);
			goto out;
		}
	}
	ret = 0;
out:
	if (ret)
		memset(out, 0, sizeof(*out));
	return ret;
}
