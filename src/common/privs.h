/*
 * Dropping privileges, shared by kiln-vmm's jail and kiln-net's sandbox:
 * one fail-closed sequence each, checked after the fact.
 */
#ifndef KILN_COMMON_PRIVS_H
#define KILN_COMMON_PRIVS_H

#include <stdbool.h>
#include <sys/types.h>

/* In a fresh user namespace: map only uid and gid (our own), setgroups denied. */
int privs_map_ids(uid_t uid, gid_t gid);

/*
 * Clear the bounding and ambient capability sets; outside a user namespace
 * (userns false, the caller is root) drop supplementary groups and change
 * to gid/uid; clear every capability; then check that none is left and (not
 * userns) that no id is 0; NO_NEW_PRIVS; not dumpable. 0, or -errno with a
 * static description of the failed step in *what.
 */
int privs_drop(bool userns, uid_t uid, gid_t gid, const char **what);

int privs_set_limit(int resource, unsigned long long value);

#endif
