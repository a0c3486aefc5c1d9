/*
 * Host names as RFC 1123 has them: labels of 1..63 letters, digits and '-',
 * neither starting nor ending with '-', joined by '.'. Shared by the guest's
 * kiln.hostname boot parameter and the agent protocol's IDENTITY request.
 */
#ifndef KILN_COMMON_HOSTNAME_H
#define KILN_COMMON_HOSTNAME_H

#include <stdbool.h>
#include <stddef.h>

#define HOSTNAME_LABEL_MAX 63

/* One label: n bytes (no NUL needed), 1..HOSTNAME_LABEL_MAX. */
bool hostname_label_ok(const char *s, size_t n);
/* Labels joined by '.', 1..max bytes in all (no empty label, no final '.'). */
bool hostname_ok(const char *s, size_t n, size_t max);

#endif
