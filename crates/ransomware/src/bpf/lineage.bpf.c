// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Rampart ransomware protection: process creations, announced from the scheduler's own
 * tracepoints. Each fork of a process (not of a thread) and each exec is written to a ring
 * buffer that the agent reads on a tick; nothing wakes it. The proc connector it replaces sent
 * a netlink message to every listener at every fork, exec and exit of the host, on the
 * process's own way — measured, that alone cost a `sqlite3`-per-row loop in a protected folder
 * ~3 % (src/lineage.rs says more).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define RL_FORK 1
#define RL_EXEC 2

/* one announcement: a fork (parent, child: thread group ids) or an exec (child only) */
struct rl_creation {
	__u32 what;
	__u32 parent;
	__u32 child;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} creations SEC(".maps");

/* announcements the ring buffer had no room for (the reader fell behind) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

static __always_inline void announce(__u32 what, __u32 parent, __u32 child)
{
	struct rl_creation *c = bpf_ringbuf_reserve(&creations, sizeof(*c), 0);
	if (!c) {
		__u32 zero = 0;
		__u64 *n = bpf_map_lookup_elem(&lost, &zero);
		if (n)
			__sync_fetch_and_add(n, 1);
		return;
	}
	c->what = what;
	c->parent = parent;
	c->child = child;
	/* read on the agent's tick: no wakeup */
	bpf_ringbuf_submit(c, BPF_RB_NO_WAKEUP);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(rl_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 pid = BPF_CORE_READ(child, pid);
	__u32 tgid = BPF_CORE_READ(child, tgid);
	if (pid != tgid) /* a thread */
		return 0;
	announce(RL_FORK, BPF_CORE_READ(parent, tgid), tgid);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(rl_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	announce(RL_EXEC, 0, BPF_CORE_READ(p, tgid));
	return 0;
}
