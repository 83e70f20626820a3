/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Filling one struct rp_event about the current task: shared by the kernel tier's programs and
 * the userspace tier's observer. Include after vmlinux.h and the libbpf headers. */
#ifndef RAMPART_EVENT_BPF_H
#define RAMPART_EVENT_BPF_H

#include "selfprotect.h"

static __always_inline void rp_fill_event(struct rp_event *e, __u32 hook, __u64 dev, __u64 ino,
					  __u32 target_tgid, __s64 detail)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	__u64 id = bpf_get_current_pid_tgid();
	e->hook = hook;
	e->pid = (__u32)id;
	e->tgid = id >> 32;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->target_tgid = target_tgid;
	e->detail = detail;
	e->dev = dev;
	e->ino = ino;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
}

#endif
