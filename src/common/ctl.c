#include "ctl.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void ctl_init(struct ctl_msg *m, enum ctl_type type, uint32_t id, int32_t result,
	      const char *text)
{
	memset(m, 0, sizeof(*m));
	m->magic = CTL_MAGIC;
	m->type = (uint16_t)type;
	m->id = id;
	m->result = result;
	if (text)
		snprintf(m->text, sizeof(m->text), "%s", text);
}

int ctl_check(const void *buf, size_t len, struct ctl_msg *out, const char **why)
{
	struct ctl_msg m;

	*why = NULL;
	if (len != sizeof(m)) {
		*why = "a control message is 160 bytes";
		return -EBADMSG;
	}
	memcpy(&m, buf, sizeof(m));
	if (m.magic != CTL_MAGIC)
		*why = "bad magic";
	else if (m.reserved)
		*why = "reserved field is not 0";
	else if (!memchr(m.text, 0, sizeof(m.text)))
		*why = "text is not NUL-terminated";
	else if (m.type != CTL_PAUSE && m.type != CTL_RESUME && m.type != CTL_STATUS &&
		 m.type != CTL_REPLY && m.type != CTL_EV_BOOTED && m.type != CTL_EV_EXIT)
		*why = "unknown message type";
	if (*why)
		return -EBADMSG;
	*out = m;
	return 0;
}
