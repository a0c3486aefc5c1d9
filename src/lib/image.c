/*
 * Images by name (image.h): the image dir and the defaults of an imported
 * image. NAME.json is read as untrusted: bounded size, list lengths and
 * string lengths, every field's type checked.
 */
#include "lib/image.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define CONFIG_MAX (1 << 20)
#define CONFIG_LIST_MAX 256
#define CONFIG_STR_MAX 65536

bool kiln_image_name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > KILN_IMAGE_NAME_MAX)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return false;
	return true;
}

void kiln_image_dir(const char *argv0, char *buf, size_t len)
{
	const char *env = getenv("KILN_IMAGE_DIR");
	char dir[PATH_MAX];

	if (env && env[0]) {
		snprintf(buf, len, "%s", env);
		return;
	}
	exe_dir(argv0, dir, sizeof(dir));
	snprintf(buf, len, "%s/images", dir);
}

int kiln_cache_dir(const char *sub, char *buf, size_t len)
{
	const char *k = getenv("KILN_CACHE"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
	int n;

	if (k && k[0])
		n = snprintf(buf, len, "%s/%s", k, sub);
	else if (x && x[0])
		n = snprintf(buf, len, "%s/kiln/%s", x, sub);
	else if (h && h[0])
		n = snprintf(buf, len, "%s/.cache/kiln/%s", h, sub);
	else
		return -1;
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

json_t *kiln_image_json_load(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	struct stat st;
	json_t *j = NULL;
	char *buf = NULL;
	ssize_t n;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > CONFIG_MAX)
		goto out;
	buf = malloc((size_t)st.st_size + 1);
	if (!buf)
		goto out;
	n = read(fd, buf, (size_t)st.st_size + 1);
	if (n < 0 || n > st.st_size)
		goto out;
	j = json_loadb(buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
	if (j && !json_is_object(j)) {
		json_decref(j);
		j = NULL;
	}
out:
	free(buf);
	close(fd);
	return j;
}

static void free_list(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

static char **str_array(json_t *a, bool need_eq, int *bad)
{
	size_t n, i;
	char **v;

	if (!a || json_is_null(a))
		return NULL;
	if (!json_is_array(a) || (n = json_array_size(a)) > CONFIG_LIST_MAX) {
		*bad = 1;
		return NULL;
	}
	v = calloc(n + 1, sizeof(*v));
	if (!v) {
		*bad = 1;
		return NULL;
	}
	for (i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(a, i));

		if (!s || strlen(s) > CONFIG_STR_MAX ||
		    strlen(s) != json_string_length(json_array_get(a, i)) ||
		    (need_eq && (!strchr(s, '=') || s[0] == '='))) {
			*bad = 1;
			break;
		}
		v[i] = strdup(s);
		if (!v[i]) {
			*bad = 1;
			break;
		}
	}
	if (*bad) {
		free_list(v);
		return NULL;
	}
	return v;
}

void kiln_image_config_free(struct kiln_image_config *c)
{
	free_list(c->env);
	free_list(c->entrypoint);
	free_list(c->cmd);
	free(c->workdir);
	free(c->user);
	memset(c, 0, sizeof(*c));
}

int kiln_image_config_load(const char *img_path, struct kiln_image_config *c, char *why,
			   size_t whylen)
{
	char path[PATH_MAX];
	size_t l = strlen(img_path);
	const char *s;
	json_t *j;
	int bad = 0;

	memset(c, 0, sizeof(*c));
	if (l < 4 || strcmp(img_path + l - 4, ".img") || l >= sizeof(path))
		return 0;
	snprintf(path, sizeof(path), "%.*s.json", (int)(l - 4), img_path);
	if (access(path, F_OK) < 0)
		return 0;
	j = kiln_image_json_load(path);
	if (!j) {
		snprintf(why, whylen, "%s is not an image config (JSON object of at most %d bytes)", path,
			 CONFIG_MAX);
		return -1;
	}
	c->env = str_array(json_object_get(j, "env"), true, &bad);
	c->entrypoint = str_array(json_object_get(j, "entrypoint"), false, &bad);
	c->cmd = str_array(json_object_get(j, "cmd"), false, &bad);
	s = json_string_value(json_object_get(j, "workdir"));
	if (s && s[0] == '/' && strlen(s) < 4096)
		c->workdir = strdup(s);
	else if (s && s[0])
		bad = 1;
	s = json_string_value(json_object_get(j, "user"));
	if (s && s[0] && strlen(s) < 256)
		c->user = strdup(s);
	else if (s && s[0])
		bad = 1;
	json_decref(j);
	if (bad) {
		kiln_image_config_free(c);
		snprintf(why, whylen, "%s: bad env, entrypoint, cmd, workdir or user", path);
		return -1;
	}
	return 0;
}
