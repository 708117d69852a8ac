package volume

import (
	"strings"
	"testing"
)

const sampleMountInfo = `22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:1 / / rw,relatime - ext4 /dev/root rw,discard
28 27 254:2 / /boot rw - ext4 /dev/vda2 rw
29 27 0:40 / /home/shared\040dir rw - nfs4 server:/export rw
30 27 254:16 / /mnt rw - ext4 /dev/vdb rw
31 27 0:22 / /run rw - tmpfs tmpfs rw
32 27 254:1 /srv /var/lib/bound rw - ext4 /dev/root rw
`

func samplePlan(t *testing.T, cfg PlanConfig) *Plan {
	t.Helper()
	mounts, err := parseMountInfo(strings.NewReader(sampleMountInfo))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Mounts = mounts
	p, err := NewPlan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseMountInfo(t *testing.T) {
	mounts, err := parseMountInfo(strings.NewReader(sampleMountInfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 7 {
		t.Fatalf("%d mounts, want 7", len(mounts))
	}
	m, err := MountAt(mounts, "/home/shared dir")
	if err != nil || m.FSType != "nfs4" || m.Source != "server:/export" {
		t.Errorf("MountAt(/home/shared dir) = %+v, %v", m, err)
	}
	root, err := MountAt(mounts, "/")
	if err != nil || root.Major != 254 || root.Minor != 1 || root.Source != "/dev/root" {
		t.Errorf("MountAt(/) = %+v, %v", root, err)
	}
	if _, err := MountAt(mounts, "/etc"); err == nil || !strings.Contains(err.Error(), "not a mount point") {
		t.Errorf("MountAt(/etc) error %v, want not a mount point", err)
	}
	if _, err := parseMountInfo(strings.NewReader("garbage line\n")); err == nil {
		t.Error("garbage mountinfo parsed without error")
	}
}

func TestPlanDecide(t *testing.T) {
	p := samplePlan(t, PlanConfig{
		Volume:   "/",
		Excludes: []string{"/var/cache", "/root/secret.txt"},
		Includes: []string{"/var/cache/keep", "/mnt/data/wanted"},
		Scratch:  "/var/tmp/scratch",
		Own:      []string{"/usr/local/bin/instancestore-bundler", "/var/lib/instancestore"},
		Filter:   true,
	})
	for _, c := range []struct {
		path string
		want Action
	}{
		{"/etc/passwd", Copy},
		{"/.dotfile", Copy},
		{"/proc", EmptyDir},
		{"/run", EmptyDir},
		{"/dev", Copy}, // not a mount point here: copied like any directory
		{"/sys", EmptyDir},
		{"/media", EmptyDir},
		{"/boot", EmptyDir},            // another filesystem
		{"/home/shared dir", EmptyDir}, // network filesystem
		{"/var/lib/bound", EmptyDir},   // bind mount of the same filesystem
		{"/var/tmp/scratch", EmptyDir}, // the scratch directory
		{"/usr/local/bin/instancestore-bundler", Skip},
		{"/var/lib/instancestore/key", Skip},
		{"/var/cache", Partial}, // excluded, but on the way to an include
		{"/var/cache/apt", Skip},
		{"/var/cache/keep", Copy},
		{"/var/cache/keep/deep/file", Copy},
		{"/mnt", Partial}, // mount point, on the way to an include
		{"/mnt/data/wanted/x", Copy},
		{"/root/secret.txt", Skip},
		{"/root/.ssh/authorized_keys", Skip}, // sensitive-file filter
		{"/home/u/.bash_history", Skip},
		{"/etc/ssl/private/site.pem", Skip},
		{"/home/u/notes.txt~", Skip},
		{"/home/u/.ssh/id_rsa.pub", Skip},
		{"/etc/ssl/certs/ca.crt", Copy},
	} {
		if got := p.Decide(c.path); got.Action != c.want {
			t.Errorf("Decide(%s) = %v (%s), want %v", c.path, got.Action, got.Reason, c.want)
		}
	}
	// The bundler's own files stay out even when an include covers them.
	q := samplePlan(t, PlanConfig{Includes: []string{"/var"}, Own: []string{"/var/tmp/instancestore-bundle-1"}})
	for _, c := range []struct {
		path string
		want Action
	}{
		{"/var/tmp/instancestore-bundle-1/image", Skip},
		{"/var/tmp/instancestore-bundle-1", Skip},
		{"/var/tmp/other", Copy},
	} {
		if got := q.Decide(c.path); got.Action != c.want {
			t.Errorf("Decide(%s) = %v (%s), want %v", c.path, got.Action, got.Reason, c.want)
		}
	}
	if !p.IncludeRelated("/var/cache/keep/x") || p.IncludeRelated("/var/cache/apt") {
		t.Error("IncludeRelated wrong for /var/cache children")
	}
	// The filter is off by default.
	p = samplePlan(t, PlanConfig{})
	if d := p.Decide("/etc/ssl/private/site.pem"); d.Action != Copy {
		t.Errorf("without --filter, a .pem is %v (%s)", d.Action, d.Reason)
	}
}

func TestPlanVolumeNotRoot(t *testing.T) {
	p := samplePlan(t, PlanConfig{Volume: "/boot", Excludes: []string{"/boot/old"}})
	if p.Decide("/old").Action != Skip || p.Decide("/grub").Action != Copy {
		t.Errorf("excludes are not mapped into the volume")
	}
	if p.SystemPath("/grub/grub.cfg") != "/boot/grub/grub.cfg" {
		t.Errorf("SystemPath = %s", p.SystemPath("/grub/grub.cfg"))
	}
	mounts, _ := parseMountInfo(strings.NewReader(sampleMountInfo))
	for _, c := range []struct {
		cfg  PlanConfig
		want string
	}{
		{PlanConfig{Volume: "/boot", Excludes: []string{"/etc"}}, "not under the volume"},
		{PlanConfig{Volume: "/etc"}, "not a mount point"},
		{PlanConfig{Volume: "/run"}, "tmpfs"},
		{PlanConfig{Excludes: []string{"relative/path"}}, "absolute"},
		{PlanConfig{Excludes: []string{"/"}}, "whole volume"},
	} {
		c.cfg.Mounts = mounts
		if _, err := NewPlan(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewPlan(%+v) error %v, want %q", c.cfg, err, c.want)
		}
	}
}

func TestGlobRegexp(t *testing.T) {
	for _, c := range []struct {
		pat, path string
		want      bool
	}{
		{"*.pem", "/a/b/c.pem", true},
		{"*.pem", "/a/b/c.pem.bak", false},
		{"*/#*#", "/home/u/#draft#", true},
		{"*/.#*", "/home/u/.#lock", true},
		{"*id_rsa*", "/root/.ssh/id_rsa", true},
		{"*/.ssh/authorized_keys", "/home/u/.ssh/authorized_keys", true},
		{"*/.ssh/authorized_keys", "/home/u/.ssh/authorized_keys2", false},
		{"file[0-9]", "file7", true},
		{"file[!0-9]", "file7", false},
		{"a?c", "abc", true},
	} {
		if got := globRegexp(c.pat).MatchString(c.path); got != c.want {
			t.Errorf("%s vs %s: %v, want %v", c.pat, c.path, got, c.want)
		}
	}
}

// TestCheckBootOnRoot: an EBS source whose /boot is its own partition is refused
// before imaging (the image would hold an empty /boot); /boot on the root passes.
func TestCheckBootOnRoot(t *testing.T) {
	p := samplePlan(t, PlanConfig{Volume: "/"}) // /boot is ext4 on /dev/vda2 there
	err := checkBootOnRoot(p)
	if err == nil || !strings.Contains(err.Error(), "/boot is a filesystem of its own (ext4 /dev/vda2") || !strings.Contains(err.Error(), "move /boot onto the root filesystem") {
		t.Errorf("separate /boot: got %v, want the refusal naming ext4 /dev/vda2 and what to do", err)
	}
	mounts, err := parseMountInfo(strings.NewReader(strings.ReplaceAll(sampleMountInfo, "28 27 254:2 / /boot rw - ext4 /dev/vda2 rw\n", "")))
	if err != nil {
		t.Fatal(err)
	}
	onRoot, err := NewPlan(PlanConfig{Volume: "/", Mounts: mounts})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkBootOnRoot(onRoot); err != nil {
		t.Errorf("/boot on the root: %v", err)
	}
}
