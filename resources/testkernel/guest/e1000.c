// SPDX-License-Identifier: Apache-2.0
/* Intel 82540EM (e1000) for test=nic: not written yet. */
#include "nic.h"

static int e1k_init(struct nic_dev *d)
{
	(void)d;
	fail("nic: the e1000 driver is not written yet");
	return -1;
}

const struct nic_driver e1000_driver = {
	.name = "e1000",
	.vendor = 0x8086,
	.device = 0x100e,
	.init = e1k_init,
};
