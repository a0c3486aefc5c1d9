/*
 * File operations of the guest agent. Paths come from the host and must be
 * absolute; every function returns 0 or a negative errno.
 */
#ifndef KILN_GUEST_GFS_H
#define KILN_GUEST_GFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct proto_stat;

int gfs_check_path(const char *path);
int gfs_mkdir(const char *path, mode_t mode, bool parents);
int gfs_remove(const char *path, bool recursive);
int gfs_stat(const char *path, bool nofollow, struct proto_stat *st);
/* A regular file, created or truncated, with exactly mode; uid/gid ~0u: unchanged. */
int gfs_open_put(const char *path, mode_t mode, uint32_t uid, uint32_t gid, bool parents,
		 int *fd);
/* A regular file for reading (nothing that could block on open or read). */
int gfs_open_get(const char *path, int *fd);
int gfs_write_all(int fd, const void *buf, size_t n);

#endif
