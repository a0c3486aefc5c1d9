/* RFC 1123 host names (see hostname.h). */
#include "hostname.h"

#include <string.h>

static bool label_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-';
}

bool hostname_label_ok(const char *s, size_t n)
{
	if (!s || n < 1 || n > HOSTNAME_LABEL_MAX || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!label_char(s[i]))
			return false;
	return true;
}

bool hostname_ok(const char *s, size_t n, size_t max)
{
	size_t start = 0;

	if (!s || n < 1 || n > max)
		return false;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] != '.')
			continue;
		if (!hostname_label_ok(s + start, i - start))
			return false;
		start = i + 1;
	}
	return true;
}
