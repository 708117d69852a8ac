// Package vm is the local EC2's machine launcher (VMLauncher): every instance is a
// qemu-system-x86_64 guest that boots its AMI the way EC2 boots it.
//
//   - An hvm AMI's image is the guest's first disk, under a private copy-on-write
//     overlay (qemu's temporary qcow2 snapshot, in the instance's directory); SeaBIOS
//     runs the image's own MBR or GPT boot code, then GRUB 2, then the image's
//     kernel. No -kernel.
//   - A paravirtual AMI's image is a bare filesystem: the launcher reads
//     /boot/grub/menu.lst (or grub.cfg) from it with debugfs (no mount), copies out the
//     kernel and initrd the default entry names and boots them with its command line,
//     as PV-GRUB does; Xen's /dev/xvda1 root and hvc0 console become /dev/vda and the
//     serial port.
//   - Instance store volumes: the instance type's disks (EC2's table,
//     instancestore.go), sparse files formatted ext3 as EC2 pre-formats them (SSD
//     volumes with TRIM and NVMe ones stay unformatted), attached after the root disk
//     in device name order, only where the AMI's block device mapping names
//     ephemeralN.
//   - Network: qemu runs in a network namespace of its own (instance.NewNetwork), whose
//     address is the instance's private IP. Its user network (restricted to the
//     guest's subnet 169.254.0.0/16) forwards the namespace's 127.0.0.1:22 to the
//     guest's sshd, and a relay in the namespace carries the private IP's port 22
//     there (a client from loopback is what slirp can answer); guestfwd rules carry the guest's connections to 169.254.169.254:80
//     (the metadata service, Metadata, listening on the namespace's loopback) and to
//     169.254.0.50:PORT (each forwarded host service, e.g. S3) through a relay
//     process (relay.go). The guest's relay unit listens on 127.0.0.1:PORT, the
//     host:port the plugin presigned for (Metadata.Forwards). Nothing listens beyond
//     loopback and the namespace.
//   - The serial console goes to a log file (GetConsoleOutput); QMP on qemu's stdin
//     powers the guest off at termination.
//   - Every VM's directory holds qemu's pid file, so Sweep (instancestore-localenv
//     down) removes what a killed process left.
//
// TCG is used: /dev/kvm on the machines this was built on opens but hangs guests.
package vm
