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
//   - An EBS-backed instance (LaunchSpec.Volumes, root first) boots its root
//     volume's file in place: a read-write raw disk (-blockdev, writeback cache,
//     discard passed through), no overlay, so what the guest writes is the volume's
//     data across stop and start and in CreateSnapshot. On Nitro types (Volume.NVMe)
//     every volume is an NVMe controller whose serial is the volume id without its
//     dash, root first with bootindex 1 (SeaBIOS boots NVMe): /dev/nvme0n1, then the
//     other volumes and the "d" types' unformatted instance store disk (serial AWS +
//     17 hex digits), nvme1n1, ... in Volumes order. qemu 7.2's nvme device has no
//     model property: every controller says "QEMU NVMe Ctrl", not EC2's "Amazon
//     Elastic Block Store" or "Amazon EC2 NVMe Instance Storage"; tell them apart by
//     the serial. On other types the volumes are virtio disks (vda, vdb, ... with the
//     same serials, /dev/disk/by-id/virtio-vol...): qemu has no Xen block front-end,
//     so a guest never sees xvda or the DeviceName EC2 maps.
//   - Hot-plug (ec2sim.VolumeAttacher): AttachVolume is QMP blockdev-add and
//     device_add of an NVMe controller (or a virtio disk) on the i440fx PCI bus, which
//     the guest's ACPI PCI hot-plug finds; it is the next nvmeN. DetachVolume is
//     device_del, the DEVICE_DELETED event once the guest let go, then blockdev-del,
//     which closes (and flushes) the file.
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
//     and stdout carries hot-plug and powers the guest off at termination (a guest
//     with EBS volumes gets the ACPI power button and up to 90 seconds first, as EC2
//     shuts an instance down at stop and terminate, so that its file systems are
//     clean on the volume).
//   - Every VM's directory holds qemu's pid file, so Sweep (instancestore-localenv
//     down) removes what a killed process left.
//
// Accelerator (VMLauncher.Accel, $INSTANCESTORE_ACCEL): KVM with -cpu host when
// /dev/kvm is usable, else TCG; the launcher logs which and why. Usable means more
// than the device node answering: on the 2-core machines this was built on /dev/kvm
// opens, reports API version 12 and creates VMs, but qemu -accel kvm -cpu host aborts
// setting MSR 0x10a and other CPU models hang in SeaBIOS; on another, SeaBIOS runs
// under KVM but Debian's kernel spins once it leaves real mode. So the probe also
// runs SeaBIOS under qemu -accel kvm to its boot stage, then boots the seeds' kernel
// (VMLauncher.ProbeKernel) to its root-mount panic (probeKVM).
package vm
