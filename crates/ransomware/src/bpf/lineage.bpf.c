// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Rampart ransomware protection: process creations, announced from the scheduler's own
 * tracepoints. Each fork of a process (not of a thread) and each exec — with what it runs and
 * its process group, which name the process once it is gone — is written to a ring buffer that
 * the agent reads on a tick; nothing wakes it. The proc connector it replaces sent
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

/* a fork: the new process (not a thread) and its parent (thread group ids) */
struct rl_fork {
	__u32 what;
	__u32 parent;
	__u32 child;
};

#define RL_NAME 128

/* an exec: what the process runs, as the kernel saw it — enough to name it once it is gone (a
 * script's `rm` deletes a document and exits before anyone reads /proc) */
struct rl_exec {
	__u32 what;
	__u32 parent;
	__u32 child;
	__u32 pgid;
	/* the executable (what /proc/PID/exe names): device (the kernel's encoding) and inode */
	__u64 dev;
	__u64 ino;
	/* the file given to execve (the script, for a #! script), and the interpreter a #! line
	 * named (empty for a binary) */
	char file[RL_NAME];
	char interp[RL_NAME];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} creations SEC(".maps");

/* announcements the ring buffer had no room for (the reader fell behind) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&lost, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline __u32 pgid_of(struct task_struct *t)
{
	return BPF_CORE_READ(t, signal, pids[PIDTYPE_PGID], numbers[0].nr);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(rl_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 pid = BPF_CORE_READ(child, pid);
	__u32 tgid = BPF_CORE_READ(child, tgid);
	if (pid != tgid) /* a thread */
		return 0;
	struct rl_fork *f = bpf_ringbuf_reserve(&creations, sizeof(*f), 0);
	if (!f) {
		count_lost();
		return 0;
	}
	f->what = RL_FORK;
	f->parent = BPF_CORE_READ(parent, tgid);
	f->child = tgid;
	/* read on the agent's tick: no wakeup */
	bpf_ringbuf_submit(f, BPF_RB_NO_WAKEUP);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(rl_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct rl_exec *e = bpf_ringbuf_reserve(&creations, sizeof(*e), 0);
	if (!e) {
		count_lost();
		return 0;
	}
	e->what = RL_EXEC;
	e->parent = BPF_CORE_READ(p, real_parent, tgid);
	e->child = BPF_CORE_READ(p, tgid);
	e->pgid = pgid_of(p);
	struct inode *exe = BPF_CORE_READ(p, mm, exe_file, f_inode);
	e->dev = BPF_CORE_READ(exe, i_sb, s_dev);
	e->ino = BPF_CORE_READ(exe, i_ino);
	const char *file = BPF_CORE_READ(bprm, filename);
	const char *interp = BPF_CORE_READ(bprm, interp);
	if (bpf_probe_read_kernel_str(e->file, sizeof(e->file), file) < 0)
		e->file[0] = 0;
	e->interp[0] = 0;
	if (interp != file && bpf_probe_read_kernel_str(e->interp, sizeof(e->interp), interp) < 0)
		e->interp[0] = 0;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}
