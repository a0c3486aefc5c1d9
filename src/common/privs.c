/* Privilege dropping (see privs.h). */
#include "privs.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util.h"

static int write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	int ret;

	if (fd < 0)
		return -errno;
	ret = write_full(fd, text, strlen(text));
	close(fd);
	return ret;
}

int privs_map_ids(uid_t uid, gid_t gid)
{
	char line[64];
	int ret;

	ret = write_text("/proc/self/setgroups", "deny");
	if (!ret) {
		snprintf(line, sizeof(line), "%u %u 1\n", (unsigned)uid, (unsigned)uid);
		ret = write_text("/proc/self/uid_map", line);
	}
	if (!ret) {
		snprintf(line, sizeof(line), "%u %u 1\n", (unsigned)gid, (unsigned)gid);
		ret = write_text("/proc/self/gid_map", line);
	}
	return ret;
}

static int failed(const char **what, const char *step, int err)
{
	*what = step;
	return -err;
}

int privs_drop(bool userns, uid_t uid, gid_t gid, const char **what)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct data[2];

	for (int cap = 0;; cap++) {
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0)
			continue;
		if (errno == EINVAL && cap > 0)
			break;
		return failed(what, "cannot drop the capability bounding set", errno);
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return failed(what, "cannot clear ambient capabilities", errno);
	if (!userns) {
		if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0)
			return failed(what, "cannot change to the jail's group", errno);
		if (setresuid(uid, uid, uid) < 0)
			return failed(what, "cannot change to the jail's user", errno);
	}
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capset, &hdr, data) < 0)
		return failed(what, "cannot clear capabilities", errno);
	/* Fail closed: check what we got rather than trust the calls above. */
	if (syscall(SYS_capget, &hdr, data) < 0)
		return failed(what, "cannot read capabilities back", errno);
	if (data[0].effective | data[0].permitted | data[1].effective | data[1].permitted |
	    data[0].inheritable | data[1].inheritable)
		return failed(what, "capabilities are left after dropping them", EPERM);
	if (!userns && (getuid() == 0 || geteuid() == 0 || getgid() == 0 || getegid() == 0))
		return failed(what, "still root after dropping privileges", EPERM);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return failed(what, "cannot set no_new_privs", errno);
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return failed(what, "cannot make the process undumpable", errno);
	return 0;
}

int privs_set_limit(int resource, unsigned long long value)
{
	struct rlimit rl = { (rlim_t)value, (rlim_t)value };

	return setrlimit(resource, &rl) < 0 ? -errno : 0;
}
