// Package vm is the local EC2's machine launcher: every instance is a
// qemu-system-x86_64 guest that boots its AMI the way EC2 boots it.
//
//   - An hvm AMI's image is the guest's first disk, on a private qcow2 copy-on-write
//     overlay; SeaBIOS runs the image's own MBR or GPT boot code, then GRUB 2, then the
//     image's kernel. No -kernel.
//   - A paravirtual AMI's image is a bare filesystem: the launcher reads
//     /boot/grub/menu.lst (or grub.cfg) from it and boots the kernel and initrd the first
//     entry names with its command line, as PV-GRUB does.
//   - Instance store volumes: the instance type's disks (EC2's table), sparse files
//     formatted ext4, attached only where the AMI's block device mapping names
//     ephemeralN.
//   - Network: qemu user networking restricted to the guest's own subnet
//     (169.254.0.0/16), SSH forwarded from a loopback address of the host
//     (127.77.x.y:22), and guestfwd rules that carry the guest's connections to
//     169.254.169.254:80 (the metadata service, Metadata) and to the forwarded host
//     services through a relay process (relay.go). Nothing listens beyond loopback.
//   - The serial console goes to a log file (GetConsoleOutput).
//
// TCG is used: /dev/kvm on the machines this was built on opens but hangs guests.
package vm
