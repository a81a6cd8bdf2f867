// SPDX-License-Identifier: MIT OR GPL-2.0
// Skyfill's kernel-side gate (see src/hsm/gate.rs): a BPF LSM program on `file_open`. An
// inode the daemon lists as a placeholder (its inode number and generation, in the pinned
// map below) may be opened only while a pre-content watcher covers it (the daemon's mark);
// with no daemon serving, the open fails with EAGAIN instead of reading zeros.
// Built by build.rs with clang -target bpf; the kernel structs are read through CO-RE
// (field offsets relocated from the running kernel's BTF), so no vmlinux.h is needed.
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct inode {
	__u32 i_fsnotify_mask;
	unsigned long i_ino;
	__u32 i_generation;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

/* The key the daemon writes (src/hsm/gate.rs `Key`): 16 bytes. */
struct key {
	__u64 ino;
	__u32 gen;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 24);
	__type(key, struct key);
	__type(value, __u8);
} skyfill_placeholders SEC(".maps");

/* include/linux/fsnotify_backend.h */
#define FS_PRE_ACCESS 0x00100000
#define EAGAIN 11

SEC("lsm/file_open")
int BPF_PROG(skyfill_gate, struct file *file, int ret)
{
	if (ret)
		return ret;
	struct inode *inode = file->f_inode;
	if (!inode)
		return 0;
	/* A mark with pre-content events covers the inode: the daemon answers its reads. */
	if (inode->i_fsnotify_mask & FS_PRE_ACCESS)
		return 0;
	struct key k = { .ino = inode->i_ino, .gen = inode->i_generation, .pad = 0 };
	if (bpf_map_lookup_elem(&skyfill_placeholders, &k))
		return -EAGAIN;
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
