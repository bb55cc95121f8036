// SPDX-License-Identifier: Apache-2.0
/* virtio-net (modern PCI transport, split ring) for test=nic: not written yet. */
#include "nic.h"

static int vn_init(struct nic_dev *d)
{
	(void)d;
	fail("nic: the virtio driver is not written yet");
	return -1;
}

const struct nic_driver virtio_net_driver = {
	.name = "virtio",
	.vendor = 0x1af4,
	.device = 0x1041,
	.init = vn_init,
};
