package volume

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/internal/testroot"
)

// chainStage assembles a tiny real-mode boot stage, loaded at address base: it prints
// msg on COM1 and, when next is not 0, reads sector next into address load with the
// BIOS (int 13h, AH=42h) and jumps there. The first stage (the MBR) saves the boot
// drive at 0000:0500 for the later ones. A chain of these proves that a real BIOS
// runs the image's boot code, and finds the boot gap and the BIOS boot partition
// where GRUB 2 would.
func chainStage(base uint16, first bool, msg string, next uint64, load uint16) []byte {
	var c []byte
	c = append(c, 0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0x8E, 0xC0, 0x8E, 0xD0, 0xBC, 0x00, 0x7C, 0xFB) // cli; zero segments; sp=7C00; sti
	if first {
		c = append(c, 0x88, 0x16, 0x00, 0x05) // mov [0500h], dl
	}
	msgAt := len(c) + 1
	c = append(c, 0xBE, 0, 0) // mov si, msg
	c = append(c, 0xBA, 0xF8, 0x03, 0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8)
	dapAt := -1
	if next != 0 {
		c = append(c, 0x8A, 0x16, 0x00, 0x05) // mov dl, [0500h]
		dapAt = len(c) + 1
		c = append(c, 0xBE, 0, 0, 0xB4, 0x42, 0xCD, 0x13, 0x72, 0x05) // mov si, dap; mov ah, 42h; int 13h; jc halt
		c = append(c, 0xEA, byte(load), byte(load>>8), 0, 0)          // jmp 0000:load
	}
	c = append(c, 0xF4, 0xEB, 0xFD) // halt: hlt; jmp halt
	binary.LittleEndian.PutUint16(c[msgAt:], base+uint16(len(c)))
	c = append(append(c, msg...), 0)
	if dapAt >= 0 {
		binary.LittleEndian.PutUint16(c[dapAt:], base+uint16(len(c)))
		dap := []byte{0x10, 0, 1, 0, byte(load), byte(load >> 8), 0, 0}
		c = append(c, binary.LittleEndian.AppendUint64(dap, next)...)
	}
	return c
}

// TestBIOSChainBoot boots partitioned images made by Build with SeaBIOS (no kernel
// given to qemu): the boot code in sector 0, a stage in the boot gap and, for GPT,
// one in the BIOS boot partition must all run, as GRUB 2's boot.img, core.img would.
func TestBIOSChainBoot(t *testing.T) {
	testroot.Require(t)
	const marker = "INSTANCESTORE-BIOS-CHAIN-OK"
	for _, c := range []struct {
		name, table string
		part        int
		start       int64
		stages      map[int64][]byte
	}{
		{"mbr", "label: dos\nstart=2048, size=65536, type=83, bootable\n", 1, 2048, map[int64][]byte{
			0:    chainStage(0x7C00, true, "S1 ", 1, 0x7E00),
			1:    chainStage(0x7E00, false, "S2 ", 2000, 0x8000),
			2000: chainStage(0x8000, false, marker+"\r\n", 0, 0),
		}},
		{"gpt", "label: gpt\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\nstart=4096, size=65536, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n", 2, 4096, map[int64][]byte{
			0:    chainStage(0x7C00, true, "S1 ", 34, 0x7E00),
			34:   chainStage(0x7E00, false, "S2 ", 2048, 0x8000),
			2048: chainStage(0x8000, false, marker+"\r\n", 0, 0),
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			disk := filepath.Join(t.TempDir(), "disk")
			must(t, os.WriteFile(disk, nil, 0o600))
			must(t, os.Truncate(disk, 40<<20))
			if out, err := runStdin(strings.NewReader(c.table), "sfdisk", "-q", disk); err != nil {
				t.Fatalf("sfdisk: %v %s", err, out)
			}
			f, err := os.OpenFile(disk, os.O_RDWR, 0)
			must(t, err)
			for lba, code := range c.stages {
				if lba == 0 && len(code) > 440 {
					t.Fatalf("stage 1 is %d bytes, more than the 440 of the MBR boot code", len(code))
				}
				_, err := f.WriteAt(code, lba*512)
				must(t, err)
			}
			f.Close()
			src := newTestFS(t, disk, c.start*512, 32<<20, "mkfs.ext4", "-q")
			writeFile(t, filepath.Join(src.Dir, "etc/hostname"), []byte("chain\n"), 0o644)
			img, err := Build(context.Background(), Config{
				PlanConfig: PlanConfig{Volume: src.Dir, Scratch: t.TempDir()},
				sourceDisk: &SourceDisk{Path: disk, PartNumber: c.part, Start: c.start},
			})
			must(t, err)
			defer img.Remove()

			log := filepath.Join(t.TempDir(), "serial.log")
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "qemu-system-x86_64", "-accel", "tcg", "-m", "64", "-no-reboot",
				"-display", "none", "-monitor", "none", "-nic", "none", "-serial", "file:"+log,
				"-drive", "file="+img.Path+",format=raw,if=ide", "-boot", "c")
			must(t, cmd.Start())
			defer func() { cancel(); cmd.Wait() }()
			for {
				b, _ := os.ReadFile(log)
				if bytes.Contains(b, []byte("S1 S2 "+marker)) {
					return
				}
				if ctx.Err() != nil {
					t.Fatalf("the BIOS did not run the chain from the image within 120 s; serial: %q", b)
				}
				time.Sleep(300 * time.Millisecond)
			}
		})
	}
}
