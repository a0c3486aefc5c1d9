/*
 * Guest-supplied text made safe for a terminal or a log line.
 *
 * Everything a guest (or a process that speaks for it: the agent, the VMM's
 * log, kiln-net's log) says may be an attack on whoever reads it: ESC
 * sequences that retitle or clear the terminal, move the cursor over earlier
 * lines, or (on some terminals) answer back; C1 controls (0x80-0x9f raw, or
 * U+0080-U+009F in UTF-8) that 8-bit terminals treat as ESC sequences; CR and
 * backspace that overwrite what was printed; newlines that forge log lines;
 * bidirectional overrides that reorder what a reader sees.
 *
 * text_sanitize copies src into dst as one line of printable text: valid
 * UTF-8 outside those ranges is kept, every other byte is written as \xNN
 * (and a backslash as \\), so nothing is lost and nothing is interpreted.
 * The output is NUL-terminated and cut at a character boundary to fit dst,
 * with "..." at the end when cut. dstlen must be at least 4.
 */
#ifndef KILN_COMMON_SANITIZE_H
#define KILN_COMMON_SANITIZE_H

#include <stddef.h>

/* Returns dst. src need not be NUL-terminated (srclen bytes are read). */
char *text_sanitize(char *dst, size_t dstlen, const char *src, size_t srclen);
/* The same for a NUL-terminated string. */
char *text_sanitize_str(char *dst, size_t dstlen, const char *src);

#endif
