/*
 * Templates (issue 14): a booted, agent-ready microVM saved to disk, for
 * later sandboxes to restore instead of booting. One directory per template
 * in the template cache:
 *
 *   NAME/state          the VMM's state file (src/vmm/snapfile.h)
 *   NAME/mem            the guest RAM, sparse (holes for zero pages)
 *   NAME/scratch        the scratch disk at the same instant, sparse
 *   NAME/template.json  what it was made from and with (below)
 *
 * A template is built in a staging directory (.new-NAME.PID.XXXXXX) and
 * renamed into place in one step, so a crash leaves no half template under
 * NAME; staging directories whose creator is gone are swept. template.json
 * is read back as untrusted input (size cap, types checked). docs/snapshot.md.
 */
#ifndef KILN_LIB_TEMPLATE_H
#define KILN_LIB_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define KILN_TEMPLATE_NAME_MAX 63
#define KILN_TEMPLATE_FORMAT 1

/* 1 to KILN_TEMPLATE_NAME_MAX of [a-z0-9_-], not starting with '-'. */
bool kiln_template_name_ok(const char *s);

/* The template cache: $KILN_CACHE/templates, else
 * $XDG_CACHE_HOME/kiln/templates, else $HOME/.cache/kiln/templates.
 * 0, or -1 when none of them is set (or the path is too long). */
int kiln_template_dir(char *buf, size_t len);

/* One input file of a template (kernel, initrd, image), as it was: a
 * rebuilt file (other size or mtime) makes the template stale. */
struct kiln_template_file {
	char path[4096];
	uint64_t size;
	int64_t mtime_ns;
};

struct kiln_template_info {
	char name[KILN_TEMPLATE_NAME_MAX + 1];
	int64_t created;		/* unix time */
	struct kiln_template_file kernel, initrd, image;
	unsigned cpus;
	uint64_t mem_mib, disk_mib;
	uint64_t state_bytes;		/* the state file's size */
	uint64_t ram_bytes;		/* guest RAM bytes the VMM wrote (pages not all zero) */
	uint64_t boot_ms, snapshot_ms;	/* spawn to agent-ready; pause to saved */
	char warmup[1024];		/* the warm-up command, words joined by ' ' */
};

/* kiln template create --auto: the name run.c turns into the machine's
 * automatic template name (it is not a valid name, so it cannot clash). */
#define KILN_TEMPLATE_AUTO "@auto"
#define KILN_TEMPLATE_AUTO_PREFIX "auto-"

/* The automatic template of a machine: "auto-" and 16 hex digits of a hash
 * over the kernel, initramfs and image (path, size, mtime) and the vCPUs,
 * memory and disk. A rebuilt kernel or image gives another name, so `kiln
 * run` never restores a stale one. 0, or -errno when a file cannot be stat'ed. */
int kiln_template_auto_name(const char *kernel, const char *initrd, const char *image,
			    unsigned cpus, uint64_t mem_mib, uint64_t disk_mib, char *out,
			    size_t len);

/* Fill f from path's stat; -errno. */
int kiln_template_file_stat(struct kiln_template_file *f, const char *path);
/* Does f still describe the file at its path (same size and mtime)? */
bool kiln_template_file_current(const struct kiln_template_file *f);

/* template.json for info, and back: 0, or -1 with a one-line why (not a
 * template.json of this format, over 64 KiB, a field missing or of the wrong
 * type or out of range, a name that is not the directory's). */
json_t *kiln_template_info_json(const struct kiln_template_info *t);
int kiln_template_info_parse(const json_t *j, struct kiln_template_info *t, char *why,
			     size_t whylen);
int kiln_template_info_load(const char *dir, const char *name, struct kiln_template_info *t,
			    char *why, size_t whylen);

/* A new staging directory for NAME inside dir (created if missing, 0700):
 * 0 and its path in out, or -1 with why. */
int kiln_template_stage(const char *dir, const char *name, char *out, size_t outlen, char *why,
			size_t whylen);
/* Write template.json into the staging directory and rename it to dir/NAME,
 * which must not exist: 0, or -1 with why (-EEXIST's why names the template). */
int kiln_template_commit(const char *stage, const char *dir, const struct kiln_template_info *t,
			 char *why, size_t whylen);
/* Remove a template directory (or a staging one): the files a template
 * holds, then the directory. 0, -ENOENT, or -errno. Nothing else is removed:
 * a directory with other files in it stays (-ENOTEMPTY). */
int kiln_template_remove_dir(const char *path);
/* Remove the staging directories in dir whose creating process is gone. */
void kiln_template_sweep(const char *dir);

struct kiln_sandbox;
/* Save the booted sandbox sb as template t->name in dir: stage, pause and
 * snapshot it (kiln_sandbox_snapshot: state, RAM, and the scratch disk when
 * t->disk_mib), stat t's kernel/initrd/image paths, commit. The caller fills
 * name, the three paths, cpus, mem_mib, disk_mib, boot_ms, warmup; the rest
 * is filled here. The VM stays paused (the caller kills it). 0, or non-zero
 * with a one-line reason; nothing is left in dir on failure.
 * *disk_bytes (may be NULL): what the files take on disk. */
int kiln_template_save(struct kiln_sandbox *sb, const char *dir, struct kiln_template_info *t,
		       int timeout_ms, uint64_t *disk_bytes, char *err, size_t errlen);

/* Copy the regular file in_fd to out_fd keeping its holes (a reflink when the
 * file system can, else data extents only): 0 or -errno. out_fd ends with
 * in_fd's size. */
int kiln_copy_sparse(int in_fd, int out_fd);

#endif
