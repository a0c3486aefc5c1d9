/*
 * User specs against an image's /etc/passwd and /etc/group, without NSS:
 * kiln-init runs processes as `name`, `uid`, `name:group`, `uid:gid`,
 * `name:gid` or `uid:group` (docs/images.md, "Users"). The files are
 * untrusted (they come from an image, or from whatever ran as root in the
 * VM): buffers and lines are bounded, malformed lines are skipped, as the C
 * library's files backend does.
 */
#ifndef KILN_COMMON_USERDB_H
#define KILN_COMMON_USERDB_H

#include <stddef.h>
#include <stdint.h>

#define USERDB_SPEC_MAX	  255u	   /* bytes of a spec (PROTO_NAME_MAX) */
#define USERDB_FILE_MAX	  (4u << 20) /* bytes of /etc/passwd or /etc/group */
#define USERDB_LINE_MAX	  65536u   /* a longer line is skipped */
#define USERDB_LINES_MAX  200000u  /* more lines: the file is refused */
#define USERDB_GROUPS_MAX 256u	   /* supplementary groups */
#define USERDB_HOME_MAX	  4095u

struct userdb_ids {
	uint32_t uid, gid;
	uint32_t groups[USERDB_GROUPS_MAX]; /* supplementary groups, the primary among them */
	unsigned ngroups;
	char home[USERDB_HOME_MAX + 1]; /* the passwd entry's, else /root for uid 0, / otherwise */
};

/*
 * Resolves spec (USER[:GROUP], each a name or a decimal id below 2^32 - 1)
 * against the two files' contents (NULL with length 0: no such file).
 *  - a name must be in passwd; a uid may be absent (its gid is then the uid);
 *  - without GROUP the gid is the passwd entry's, and the supplementary
 *    groups are every group of /etc/group listing the user (initgroups);
 *  - with GROUP (a name from /etc/group, or any gid) that is the only group.
 *  - "root" and "0" resolve to 0:0 even without the files.
 * 0, -ESRCH (no such user or group), -EINVAL (a malformed spec), -E2BIG (a
 * file over its caps, or more than USERDB_GROUPS_MAX groups); why says which.
 */
int userdb_resolve(const char *spec, const char *passwd, size_t passwd_len, const char *group,
		   size_t group_len, struct userdb_ids *out, char *why, size_t whylen);

/* The spec's syntax only (what a host checks before it asks a guest). */
int userdb_spec_ok(const char *spec);

#endif
