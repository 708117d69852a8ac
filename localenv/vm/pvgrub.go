package vm

// TEMPORARY (vm branch): a minimal PV-GRUB config reader so the launcher can boot
// paravirtual AMIs. The seeds engineer's localenv/vm/pvgrub.go, with the same
// ReadPVGrubConfig signature, replaces this file at merge.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// PVBoot is what PV-GRUB boots: the default entry's kernel and initrd (paths inside
// the root filesystem) and the kernel command line.
type PVBoot struct {
	Kernel, Initrd, Cmdline string
}

var grubDevice = regexp.MustCompile(`^\([^)]*\)`)

// ReadPVGrubConfig reads a GRUB legacy menu.lst or a GRUB 2 grub.cfg and returns its
// default entry (menu.lst "default N", else the first).
func ReadPVGrubConfig(r io.Reader) (PVBoot, error) {
	var entries []PVBoot
	def := 0
	cur := -1
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		switch f[0] {
		case "default":
			if len(f) > 1 {
				if n, err := strconv.Atoi(strings.TrimPrefix(f[1], "=")); err == nil {
					def = n
				}
			}
		case "title", "menuentry":
			entries = append(entries, PVBoot{})
			cur = len(entries) - 1
		case "kernel", "linux", "linux16":
			if cur < 0 || len(f) < 2 {
				continue
			}
			entries[cur].Kernel = grubDevice.ReplaceAllString(f[1], "")
			entries[cur].Cmdline = strings.Join(f[2:], " ")
		case "initrd", "initrd16":
			if cur < 0 || len(f) < 2 {
				continue
			}
			entries[cur].Initrd = grubDevice.ReplaceAllString(f[1], "")
		}
	}
	if err := sc.Err(); err != nil {
		return PVBoot{}, err
	}
	if len(entries) == 0 {
		return PVBoot{}, errors.New("no boot entry (title or menuentry)")
	}
	if def < 0 || def >= len(entries) {
		def = 0
	}
	if entries[def].Kernel == "" {
		return PVBoot{}, fmt.Errorf("boot entry %d names no kernel", def)
	}
	return entries[def], nil
}
