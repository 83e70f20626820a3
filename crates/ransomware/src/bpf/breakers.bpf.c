// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Rampart ransomware protection: who breaks a lease. The kernel tells a lease's holder that its
 * lease is being broken with a signal naming the descriptor, not the writer; the agent found the
 * writer by reading /proc (the likely writers' system calls, then every process's), ~25 system
 * calls on the writer's way (it waits on the lease meanwhile). The lease code's own tracepoints
 * fire in the writer itself, as it starts waiting (or, opening without waiting, as it is
 * refused): each break is written here with the writer and the file, and wakes the agent's lease
 * thread at once — before the signal's own handler has run.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* a writer breaking a lease on a file: thread group and thread, the file's device (the
 * kernel's encoding) and inode */
struct lb_break {
	__u32 pid;
	__u32 tid;
	__u64 dev;
	__u64 ino;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} breaks SEC(".maps");

static __always_inline int announce(struct inode *inode)
{
	/* no room (the reader fell behind): the break is still told by the lease's signal */
	struct lb_break *b = bpf_ringbuf_reserve(&breaks, sizeof(*b), 0);
	if (!b)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	b->pid = id >> 32;
	b->tid = (__u32)id;
	b->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	b->ino = BPF_CORE_READ(inode, i_ino);
	/* the lease thread waits on the ring buffer: woken now */
	bpf_ringbuf_submit(b, BPF_RB_FORCE_WAKEUP);
	return 0;
}

/* (struct inode *inode, struct file_lease *fl): only the inode is read */
SEC("tp_btf/break_lease_block")
int BPF_PROG(lb_block, struct inode *inode)
{
	return announce(inode);
}

SEC("tp_btf/break_lease_noblock")
int BPF_PROG(lb_noblock, struct inode *inode)
{
	return announce(inode);
}
