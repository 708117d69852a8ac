// Package volume turns a live, mounted Linux filesystem (usually the root of a running
// instance) into a disk image that EC2 can boot from an instance-store bundle: the
// Linux half of ec2-bundle-vol, done with full fidelity.
//
// The steps, each in its own file:
//
//   - plan.go: what is copied (the filesystem mounted at the volume only, dot-files
//     under / included, scratch and the bundler's own files excluded, -e/-i, the
//     optional ec2-bundle-vol sensitive-file filter);
//   - superblock.go, mkfs.go: the source filesystem's type, label, UUID and features,
//     and the mkfs command that reproduces them;
//   - disk.go, mbr.go, gpt.go: for HVM images, the partition table of the disk that
//     holds the root, rebuilt for the new size with the boot code and boot gap kept;
//   - loop.go, mount.go: loop devices and mounts by syscall, undone on every exit path;
//   - copy.go: the metadata-exact copy (sparse files, hard links, devices, FIFOs,
//     owners, modes, times, all xattrs and so POSIX ACLs); mount points and /dev are
//     read beneath their mounts, through a bind mount of the volume;
//   - health.go: after the copy, proof that every write reached the image (syncfs,
//     the filesystem's error state, fsync of the image file): a full or failing
//     scratch fails the build instead of making a corrupt image;
//   - image.go: Build, which strings them together into a sparse image file.
package volume
