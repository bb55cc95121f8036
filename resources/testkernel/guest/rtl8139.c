// SPDX-License-Identifier: Apache-2.0
/* RTL8139 (normal and C+ mode) for test=nic: not written yet. */
#include "nic.h"

static int rtl_init(struct nic_dev *d)
{
	(void)d;
	fail("nic: the rtl8139 driver is not written yet");
	return -1;
}

const struct nic_driver rtl8139_driver = {
	.name = "rtl8139",
	.vendor = 0x10ec,
	.device = 0x8139,
	.init = rtl_init,
};

const struct nic_driver rtl8139cp_driver = {
	.name = "rtl8139cp",
	.vendor = 0x10ec,
	.device = 0x8139,
	.init = rtl_init,
};
