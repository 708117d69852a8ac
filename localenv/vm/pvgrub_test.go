package vm

import (
	"strings"
	"testing"
)

func TestReadPVGrubConfig(t *testing.T) {
	tests := []struct {
		name, cfg string
		want      PVBoot
		err       string
	}{
		{
			name: "seed menu.lst",
			cfg: `# PV-GRUB configuration
default 0
timeout 0

title Debian GNU/Linux, with Linux 6.1.0-28-cloud-amd64
root (hd0)
kernel /boot/vmlinuz-6.1.0-28-cloud-amd64 root=LABEL=cloudimg-rootfs ro console=hvc0 console=ttyS0
initrd /boot/initrd.img-6.1.0-28-cloud-amd64
`,
			want: PVBoot{Kernel: "/boot/vmlinuz-6.1.0-28-cloud-amd64", Initrd: "/boot/initrd.img-6.1.0-28-cloud-amd64",
				Cmdline: "root=LABEL=cloudimg-rootfs ro console=hvc0 console=ttyS0"},
		},
		{
			name: "menu.lst default=1 with devices and a separate /boot",
			cfg: `default=1
timeout=5
hiddenmenu
title old
	root (hd0,0)
	kernel (hd0,0)/vmlinuz-old root=/dev/xvda1
title new
	root (hd0,0)
	kernel (hd0,0)/vmlinuz-new root=UUID=abc ro   quiet
	initrd (hd0,0)/initrd-new
`,
			want: PVBoot{Kernel: "/vmlinuz-new", Initrd: "/initrd-new", Cmdline: "root=UUID=abc ro quiet"},
		},
		{
			name: "menu.lst with no initrd",
			cfg:  "title x\nkernel /boot/vmlinuz console=hvc0\n",
			want: PVBoot{Kernel: "/boot/vmlinuz", Cmdline: "console=hvc0"},
		},
		{name: "menu.lst default out of range", cfg: "default 3\ntitle x\nkernel /k\n", err: "default entry 3, but there are 1 entries"},
		{name: "menu.lst kernel before title", cfg: "kernel /k\n", err: "kernel before any title"},
		{name: "menu.lst entry without kernel", cfg: "title x\ninitrd /i\n", err: `entry "x" names no kernel`},
		{name: "empty", cfg: "# nothing\n", err: "no boot entry"},
		{
			name: "seed grub.cfg",
			cfg: `set default=0
set timeout=0
serial --unit=0 --speed=115200
search --no-floppy --fs-uuid --set=root 0b6c0a3e-4a7b-4e0e-9d0a-3b1f1f7c2a11
menuentry 'Debian GNU/Linux, with Linux 6.1.0-28-cloud-amd64' {
	linux /boot/vmlinuz-6.1.0-28-cloud-amd64 root=UUID=0b6c0a3e-4a7b-4e0e-9d0a-3b1f1f7c2a11 ro console=tty0 console=ttyS0,115200 net.ifnames=0
	initrd /boot/initrd.img-6.1.0-28-cloud-amd64
}
`,
			want: PVBoot{Kernel: "/boot/vmlinuz-6.1.0-28-cloud-amd64", Initrd: "/boot/initrd.img-6.1.0-28-cloud-amd64",
				Cmdline: "root=UUID=0b6c0a3e-4a7b-4e0e-9d0a-3b1f1f7c2a11 ro console=tty0 console=ttyS0,115200 net.ifnames=0"},
		},
		{
			name: "update-grub style, default by id, submenu skipped",
			cfg: `if [ -s $prefix/grubenv ]; then
  load_env
fi
set default="gnulinux-simple-abc"
menuentry 'Debian GNU/Linux' --class debian --id 'gnulinux-simple-abc' {
	load_video
	if [ x$feature_all_video_module = xy ]; then
	  insmod all_video
	fi
	echo	'Loading Linux 6.1.0-28-cloud-amd64 ...'
	linux	($root)/boot/vmlinuz-6.1.0-28-cloud-amd64 root=UUID=abc ro  console=tty0 console=ttyS0,115200 "quoted arg"
	initrd	/boot/initrd.img-6.1.0-28-cloud-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-abc' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-27-cloud-amd64' {
		linux /boot/vmlinuz-6.1.0-27-cloud-amd64 root=UUID=abc ro single
	}
}
`,
			want: PVBoot{Kernel: "/boot/vmlinuz-6.1.0-28-cloud-amd64", Initrd: "/boot/initrd.img-6.1.0-28-cloud-amd64",
				Cmdline: "root=UUID=abc ro console=tty0 console=ttyS0,115200 quoted arg"},
		},
		{
			name: "grub.cfg one-line entry, default 1",
			cfg:  "set default=1\nmenuentry a { linux /a; }\nmenuentry \"b c\" { linux16 /b x=1; initrd16 /ib; }\n",
			want: PVBoot{Kernel: "/b", Initrd: "/ib", Cmdline: "x=1"},
		},
		{
			name: "grub.cfg default is a submenu",
			cfg:  "set default=1\nmenuentry a { linux /a\n}\nsubmenu s {\nmenuentry b { linux /b\n}\n}\n",
			err:  `default entry "s" is a submenu`,
		},
		{
			name: "grub.cfg two initrds",
			cfg:  "menuentry a {\nlinux /a\ninitrd /ucode.img /initrd.img\n}\n",
			err:  "names 2 initrds",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadPVGrubConfig(strings.NewReader(tt.cfg))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}
