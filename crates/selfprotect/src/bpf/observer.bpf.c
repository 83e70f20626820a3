// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Rampart self-protection, userspace tier: a tp_btf observer of system calls aimed at the
 * protected processes. Where the kernel will not load BPF LSM programs, signals and ptrace
 * cannot be refused; this names who tried, so every attempt is reported with its author. It
 * decides nothing: one map lookup per matching system call, then a ring buffer record.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "selfprotect.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define NR_PTRACE 101
#define NR_KILL 62
#define NR_RT_SIGQUEUEINFO 129
#define NR_TKILL 200
#define NR_TGKILL 234
#define NR_PROCESS_VM_WRITEV 311
#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206

/* protected process ids (tgid) and process groups (as negative pids), and trusted tgids */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __s32);
	__type(value, __u32);
} watched SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} observed SEC(".maps");

static __always_inline bool is_watched(__s32 pid)
{
	__u32 *f = bpf_map_lookup_elem(&watched, &pid);
	return f && (*f & RP_TASK_PROTECTED);
}

static __always_inline bool caller_trusted(void)
{
	__s32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 *f = bpf_map_lookup_elem(&watched, &tgid);
	return f && (*f & RP_TASK_TRUSTED);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(rp_observe_sys_enter, struct pt_regs *regs, long id)
{
	__u32 hook = 0;
	__s32 target = 0;
	__s64 detail = 0;
	if (id == NR_KILL || id == NR_RT_SIGQUEUEINFO || id == NR_TKILL || id == NR_TGKILL) {
		target = (__s32)BPF_CORE_READ(regs, di);
		detail = id == NR_TGKILL ? BPF_CORE_READ(regs, dx) : BPF_CORE_READ(regs, si);
		hook = RP_HOOK_TASK_KILL;
	} else if (id == NR_PTRACE) {
		long request = BPF_CORE_READ(regs, di);
		if (request != PTRACE_ATTACH && request != PTRACE_SEIZE)
			return 0;
		target = (__s32)BPF_CORE_READ(regs, si);
		detail = request;
		hook = RP_HOOK_PTRACE;
	} else if (id == NR_PROCESS_VM_WRITEV) {
		target = (__s32)BPF_CORE_READ(regs, di);
		hook = RP_HOOK_PTRACE;
	} else {
		return 0;
	}
	if (hook == RP_HOOK_TASK_KILL && detail == 0)
		return 0; /* signal 0 only asks whether the process exists */
	if (!is_watched(target) || caller_trusted())
		return 0;
	struct rp_event *e = bpf_ringbuf_reserve(&observed, sizeof(*e), 0);
	if (!e)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	e->hook = hook;
	e->pid = (__u32)pid_tgid;
	e->tgid = pid_tgid >> 32;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->target_tgid = target < 0 ? 0 : target;
	e->detail = detail;
	e->dev = 0;
	e->ino = 0;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}
