package vm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// PVBoot is what PV-GRUB boots from a paravirtual image: the kernel and initrd paths
// inside the image's filesystem and the kernel command line.
type PVBoot struct {
	Kernel  string // e.g. /boot/vmlinuz-6.1.0-28-cloud-amd64
	Initrd  string // "" when the entry names none
	Cmdline string // the kernel's arguments, e.g. "root=LABEL=cloudimg-rootfs ro console=hvc0"
}

// ReadPVGrubConfig reads a boot loader configuration the way EC2's PV-GRUB does and
// returns the default entry: either GRUB legacy's menu.lst (/boot/grub/menu.lst:
// default, title, root, kernel, initrd) or a GRUB 2 grub.cfg (set default=N,
// menuentry { linux ...; initrd ... }), told apart by a menuentry. Paths keep only
// the file part: a leading GRUB device such as (hd0) or ($root) is dropped, since
// the filesystem is the image itself.
func ReadPVGrubConfig(r io.Reader) (PVBoot, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return PVBoot{}, err
	}
	text := string(b)
	if regexp.MustCompile(`(?m)^\s*menuentry\b`).MatchString(text) {
		return parseGrubCfg(text)
	}
	return parseMenuLst(text)
}

type pvEntry struct {
	title   string
	id      string
	kernel  []string // path, then the arguments
	initrds []string
	submenu bool
}

func (e pvEntry) boot() (PVBoot, error) {
	if e.submenu {
		return PVBoot{}, fmt.Errorf("default entry %q is a submenu", e.title)
	}
	if len(e.kernel) == 0 {
		return PVBoot{}, fmt.Errorf("entry %q names no kernel", e.title)
	}
	if len(e.initrds) > 1 {
		return PVBoot{}, fmt.Errorf("entry %q names %d initrds, only one can be booted", e.title, len(e.initrds))
	}
	p := PVBoot{Kernel: stripDevice(e.kernel[0]), Cmdline: strings.Join(e.kernel[1:], " ")}
	if len(e.initrds) == 1 {
		p.Initrd = stripDevice(e.initrds[0])
	}
	if p.Kernel == "" {
		return PVBoot{}, fmt.Errorf("entry %q names a kernel with no path", e.title)
	}
	return p, nil
}

// stripDevice drops a leading GRUB device: "(hd0,0)/boot/vmlinuz" -> "/boot/vmlinuz".
func stripDevice(p string) string {
	if strings.HasPrefix(p, "(") {
		if i := strings.Index(p, ")"); i >= 0 {
			p = p[i+1:]
		}
	}
	if p != "" && !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

// pickDefault chooses the entry "default" names: an index, or an entry's title or id
// (GRUB 2); anything else (saved, a variable) is the first entry, as GRUB falls back.
func pickDefault(entries []pvEntry, def string) (PVBoot, error) {
	if len(entries) == 0 {
		return PVBoot{}, errors.New("no boot entry (title or menuentry)")
	}
	def = strings.TrimSpace(def)
	if n, err := strconv.Atoi(def); err == nil {
		if n < 0 || n >= len(entries) {
			return PVBoot{}, fmt.Errorf("default entry %d, but there are %d entries", n, len(entries))
		}
		return entries[n].boot()
	}
	for _, e := range entries {
		if def != "" && (e.title == def || e.id == def) {
			return e.boot()
		}
	}
	return entries[0].boot()
}

// parseMenuLst reads GRUB legacy syntax: "command args" or "command=args" a line,
// '#' comments; title starts an entry.
func parseMenuLst(text string) (PVBoot, error) {
	var entries []pvEntry
	def := "0"
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cmd, rest := line, ""
		if i := strings.IndexAny(line, " \t="); i >= 0 {
			cmd, rest = line[:i], strings.TrimSpace(strings.TrimLeft(line[i:], " \t="))
		}
		switch cmd {
		case "default":
			def = rest
		case "title":
			entries = append(entries, pvEntry{title: rest})
		case "kernel", "initrd":
			if len(entries) == 0 {
				return PVBoot{}, fmt.Errorf("menu.lst: %s before any title", cmd)
			}
			e := &entries[len(entries)-1]
			if cmd == "kernel" {
				e.kernel = strings.Fields(rest)
			} else if f := strings.Fields(rest); len(f) > 0 {
				e.initrds = append(e.initrds, f[0])
			}
		}
	}
	if err := sc.Err(); err != nil {
		return PVBoot{}, err
	}
	b, err := pickDefault(entries, def)
	if err != nil {
		return PVBoot{}, fmt.Errorf("menu.lst: %w", err)
	}
	return b, nil
}

// parseGrubCfg reads the parts of GRUB 2's script that choose a kernel: "set
// default=", top-level menuentry and submenu blocks, and linux/initrd commands inside
// them (linux16, linuxefi and initrdefi too).
func parseGrubCfg(text string) (PVBoot, error) {
	var entries []pvEntry
	def := "0"
	depth := 0       // brace depth
	entryDepth := -1 // depth of the open top-level entry's block
	command := func(words []string) {
		switch {
		case len(words) == 0:
		case words[0] == "set" && len(words) > 1 && strings.HasPrefix(words[1], "default=") && depth == 0:
			def = strings.TrimPrefix(words[1], "default=")
		case words[0] == "menuentry" || words[0] == "submenu":
			if depth == 0 {
				e := pvEntry{submenu: words[0] == "submenu"}
				if len(words) > 1 {
					e.title = words[1]
				}
				for i, w := range words {
					if w == "--id" && i+1 < len(words) {
						e.id = words[i+1]
					} else if strings.HasPrefix(w, "--id=") {
						e.id = strings.TrimPrefix(w, "--id=")
					}
				}
				entries = append(entries, e)
				entryDepth = depth + 1
			}
		case (words[0] == "linux" || words[0] == "linux16" || words[0] == "linuxefi") && depth == entryDepth && len(entries) > 0:
			entries[len(entries)-1].kernel = words[1:]
		case (words[0] == "initrd" || words[0] == "initrd16" || words[0] == "initrdefi") && depth == entryDepth && len(entries) > 0:
			entries[len(entries)-1].initrds = append(entries[len(entries)-1].initrds, words[1:]...)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		var words []string
		for _, t := range grubTokens(line) {
			if !t.op {
				words = append(words, t.s)
				continue
			}
			command(words)
			words = nil
			switch t.s {
			case "{":
				depth++
			case "}":
				depth--
				if depth < entryDepth {
					entryDepth = -1
				}
			}
		}
		command(words)
	}
	b, err := pickDefault(entries, def)
	if err != nil {
		return PVBoot{}, fmt.Errorf("grub.cfg: %w", err)
	}
	return b, nil
}

type grubToken struct {
	s  string
	op bool // one of ; { }
}

// grubTokens splits one line of GRUB 2 script into words and the operators ; { and }:
// single and double quotes and backslash escapes as the shell does, '#' starting a comment
// where a word could start.
func grubTokens(line string) []grubToken {
	var toks []grubToken
	var cur strings.Builder
	inWord := false
	var quote rune
	flush := func() {
		if inWord {
			toks = append(toks, grubToken{s: cur.String()})
			cur.Reset()
			inWord = false
		}
	}
	rs := []rune(line)
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && quote == '"' && i+1 < len(rs) {
				i++
				cur.WriteRune(rs[i])
			} else {
				cur.WriteRune(c)
			}
		case c == '\'' || c == '"':
			quote, inWord = c, true
		case c == '\\' && i+1 < len(rs):
			i++
			cur.WriteRune(rs[i])
			inWord = true
		case c == ' ' || c == '\t' || c == '\r':
			flush()
		case c == ';':
			flush()
			toks = append(toks, grubToken{s: ";", op: true})
		case c == '#' && !inWord:
			return toks
		case (c == '{' || c == '}') && !inWord:
			toks = append(toks, grubToken{s: string(c), op: true})
		default:
			cur.WriteRune(c)
			inWord = true
		}
	}
	flush()
	return toks
}
