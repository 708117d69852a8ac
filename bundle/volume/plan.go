package volume

import (
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
)

// Action says what the copy does with one path.
type Action int

const (
	// Copy copies the entry (and, for a directory, descends into it).
	Copy Action = iota
	// Skip leaves the entry out of the image.
	Skip
	// EmptyDir creates the directory with its own metadata but copies nothing in it
	// (mount points of other filesystems, /mnt, /media, the scratch directory).
	EmptyDir
	// Partial descends into an excluded directory only to reach forced includes (-i)
	// below it.
	Partial
)

// Decision is what the plan says about one path, with the reason for the summary.
type Decision struct {
	Action Action
	Reason string
}

// PlanConfig says what goes into the image. Paths are absolute paths on the running
// system; those outside Volume are ignored (Scratch, Own) or rejected (Excludes,
// Includes).
type PlanConfig struct {
	Volume   string   // mount point of the filesystem to image; "" means "/"
	Excludes []string // -e: left out entirely
	Includes []string // -i: copied even when excluded, filtered or on another mount
	// Filter turns on ec2-bundle-vol's sensitive-file filter (SensitivePatterns).
	Filter  bool
	Scratch string   // its contents are never copied (the image is built there)
	Own     []string // the bundler's own files and directories: left out entirely
	Mounts  []Mount  // the mount table; nil reads /proc/self/mountinfo
}

// SensitivePatterns is ec2-bundle-vol's default filter (spec section 8), matched
// against the whole path with `*` also matching `/` (Ruby's File.fnmatch without
// FNM_PATHNAME). Off by default: it has removed TLS and apt keys from images.
var SensitivePatterns = []string{
	"*/#*#", "*/.#*", "*.sw", "*.swo", "*.swp", "*~", "*.pem", "*.priv",
	"*id_rsa*", "*id_dsa*", "*.gpg", "*.jks", "*/.ssh/authorized_keys", "*/.bash_history",
}

// alwaysEmptied are directories of the image whose contents are never copied.
// /dev is not among them: when devtmpfs is mounted on it, the Copier takes what the
// volume holds beneath the mount; when nothing is mounted there it is copied.
var alwaysEmptied = []string{"/proc", "/sys", "/run", "/mnt", "/media"}

// Plan decides, path by path, what the copy takes. Paths given to it are paths in the
// image ("/" is the volume's root).
type Plan struct {
	Volume  string // absolute mount point being imaged
	Source  Mount  // the mount at Volume
	exclude map[string]string
	own     map[string]bool // the bundler's files and work directory: excluded even from includes
	emptied map[string]string
	others  map[string]Mount // disk filesystems mounted under the volume, by image path
	pseudo  map[string]bool  // mount points of pseudo filesystems: never copied, even if included
	include []string
	filter  []*regexp.Regexp
	// what the summary reports
	skipped  map[string][]string // reason -> paths
	nskipped map[string]int
}

// NewPlan builds the plan for cfg.
func NewPlan(cfg PlanConfig) (*Plan, error) {
	vol := cfg.Volume
	if vol == "" {
		vol = "/"
	}
	if !filepath.IsAbs(vol) {
		return nil, fmt.Errorf("volume %q: give an absolute path", vol)
	}
	vol = filepath.Clean(vol)
	mounts := cfg.Mounts
	if mounts == nil {
		var err error
		if mounts, err = ReadMounts(); err != nil {
			return nil, err
		}
	}
	src, err := MountAt(mounts, vol)
	if err != nil {
		return nil, err
	}
	if IsPseudoFS(src.FSType) {
		return nil, fmt.Errorf("volume %s is a %s filesystem: only disk filesystems (ext2/3/4, xfs) can be imaged", vol, src.FSType)
	}
	p := &Plan{
		Volume: vol, Source: src,
		exclude: map[string]string{}, own: map[string]bool{}, emptied: map[string]string{}, pseudo: map[string]bool{}, others: map[string]Mount{},
		skipped: map[string][]string{}, nskipped: map[string]int{},
	}
	for _, d := range alwaysEmptied {
		p.emptied[d] = "contents never copied"
	}
	// Other mounts under the volume: their mount points are created empty. A mount
	// hidden under a later mount on the same point is covered by the same rule.
	for _, m := range mounts {
		if m.ID == src.ID {
			continue
		}
		ip, ok := p.imagePath(m.Point)
		if !ok || ip == "/" {
			continue
		}
		p.emptied[ip] = fmt.Sprintf("mount point (%s %s), not descended", m.FSType, m.Source)
		if IsPseudoFS(m.FSType) {
			p.pseudo[ip] = true
		} else {
			p.others[ip] = m
		}
	}
	if cfg.Scratch != "" {
		if ip, ok := p.imagePath(absClean(cfg.Scratch)); ok && ip != "/" {
			p.emptied[ip] = "scratch directory"
		}
	}
	for _, o := range cfg.Own {
		if o == "" {
			continue
		}
		if ip, ok := p.imagePath(absClean(o)); ok && ip != "/" {
			p.exclude[ip] = "bundler's own files"
			p.own[ip] = true
		}
	}
	for _, e := range cfg.Excludes {
		ip, err := p.userPath("exclude", e)
		if err != nil {
			return nil, err
		}
		if ip == "/" {
			return nil, fmt.Errorf("-e %s excludes the whole volume", e)
		}
		p.exclude[ip] = "excluded (-e)"
	}
	for _, i := range cfg.Includes {
		ip, err := p.userPath("include", i)
		if err != nil {
			return nil, err
		}
		p.include = append(p.include, ip)
	}
	if cfg.Filter {
		for _, pat := range SensitivePatterns {
			p.filter = append(p.filter, globRegexp(pat))
		}
	}
	return p, nil
}

// OtherMount is the disk filesystem mounted at image path ip under the volume (/boot
// on its own partition), whose files the image does not hold.
func (p *Plan) OtherMount(ip string) (Mount, bool) {
	m, ok := p.others[ip]
	return m, ok
}

func absClean(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}

// imagePath maps a path of the running system to its path in the image.
func (p *Plan) imagePath(sys string) (string, bool) {
	if p.Volume == "/" {
		return sys, true
	}
	if sys == p.Volume {
		return "/", true
	}
	if rest, ok := strings.CutPrefix(sys, p.Volume+"/"); ok {
		return "/" + rest, true
	}
	return "", false
}

func (p *Plan) userPath(flag, path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("%s %q: give an absolute path on the running system", flag, path)
	}
	ip, ok := p.imagePath(filepath.Clean(path))
	if !ok {
		return "", fmt.Errorf("%s %s is not under the volume %s", flag, path, p.Volume)
	}
	return ip, nil
}

// SystemPath maps an image path back to the running system.
func (p *Plan) SystemPath(ip string) string {
	if p.Volume == "/" {
		return ip
	}
	if ip == "/" {
		return p.Volume
	}
	return p.Volume + ip
}

func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// Decide says what to do with the image path ip.
func (p *Plan) Decide(ip string) Decision {
	for dir := ip; ; dir = filepath.Dir(dir) {
		if p.own[dir] {
			return Decision{Skip, p.exclude[dir]}
		}
		if dir == "/" {
			break
		}
	}
	if p.pseudo[ip] {
		return Decision{EmptyDir, p.emptied[ip]}
	}
	for _, inc := range p.include {
		if within(ip, inc) {
			return Decision{Copy, "included (-i)"}
		}
	}
	partial := false
	for _, inc := range p.include {
		if within(inc, ip) {
			partial = true
		}
	}
	d := p.decideNoInclude(ip)
	if partial && d.Action != Copy {
		return Decision{Partial, d.Reason}
	}
	return d
}

func (p *Plan) decideNoInclude(ip string) Decision {
	for dir := ip; ; dir = filepath.Dir(dir) {
		if r, ok := p.exclude[dir]; ok {
			return Decision{Skip, r}
		}
		if dir == "/" {
			break
		}
	}
	if r, ok := p.emptied[ip]; ok {
		return Decision{EmptyDir, r}
	}
	for i, re := range p.filter {
		if re.MatchString(ip) {
			return Decision{Skip, "sensitive-file filter " + SensitivePatterns[i]}
		}
	}
	return Decision{Copy, ""}
}

// IncludeRelated reports whether ip is inside a forced include or on the way to one:
// the only children of a Partial directory that are copied.
func (p *Plan) IncludeRelated(ip string) bool {
	for _, inc := range p.include {
		if within(ip, inc) || within(inc, ip) {
			return true
		}
	}
	return false
}

// Note records a decision for the summary.
func (p *Plan) Note(ip string, d Decision) {
	if d.Action == Copy || d.Action == Partial {
		return
	}
	key := d.Reason
	if d.Action == EmptyDir {
		key = "created empty: " + d.Reason
	}
	p.nskipped[key]++
	if len(p.skipped[key]) < 20 {
		p.skipped[key] = append(p.skipped[key], ip)
	}
}

// WriteSummary prints what was left out of the image and why.
func (p *Plan) WriteSummary(w io.Writer) {
	keys := make([]string, 0, len(p.nskipped))
	for k := range p.nskipped {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		fmt.Fprintln(w, "excluded: nothing")
		return
	}
	fmt.Fprintln(w, "excluded from the image:")
	for _, k := range keys {
		paths := p.skipped[k]
		more := ""
		if n := p.nskipped[k]; n > len(paths) {
			more = fmt.Sprintf(" (+%d more)", n-len(paths))
		}
		fmt.Fprintf(w, "  %s: %s%s\n", k, strings.Join(paths, " "), more)
	}
}

// globRegexp turns an fnmatch pattern (no FNM_PATHNAME: `*` matches `/` too) into an
// anchored regexp.
func globRegexp(pat string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(pat); i++ {
		switch c := pat[i]; c {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		case '[':
			j := strings.IndexByte(pat[i+1:], ']')
			if j < 0 {
				b.WriteString(`\[`)
				continue
			}
			class := pat[i+1 : i+1+j]
			if strings.HasPrefix(class, "!") {
				class = "^" + class[1:]
			}
			b.WriteString("[" + strings.ReplaceAll(class, `\`, `\\`) + "]")
			i += j + 1
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// leftOutBytes estimates the space, on the volume's own filesystem, of what the plan
// leaves out: -e paths, the bundler's files and the contents of emptied directories.
// Forced includes are not subtracted (the estimate errs towards "fits").
func (p *Plan) leftOutBytes() int64 {
	var root syscall.Stat_t
	if syscall.Lstat(p.Volume, &root) != nil {
		return 0
	}
	var dirs []string
	for ip := range p.exclude {
		dirs = append(dirs, ip)
	}
	for ip := range p.emptied {
		if !p.pseudo[ip] {
			dirs = append(dirs, ip)
		}
	}
	sort.Strings(dirs)
	seen := map[uint64]bool{}
	var total int64
	var counted []string
	for _, ip := range dirs {
		if slices.ContainsFunc(counted, func(c string) bool { return within(ip, c) }) {
			continue // counted with its parent
		}
		counted = append(counted, ip)
		filepath.WalkDir(p.SystemPath(ip), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			var st syscall.Stat_t
			if syscall.Lstat(path, &st) != nil || st.Dev != root.Dev {
				if d != nil && d.IsDir() {
					return filepath.SkipDir // another mount: not on the volume
				}
				return nil
			}
			if d.IsDir() && path == p.SystemPath(ip) && p.emptied[ip] != "" {
				return nil // an emptied directory itself is created
			}
			if st.Nlink > 1 && !d.IsDir() {
				if seen[st.Ino] {
					return nil
				}
				seen[st.Ino] = true
			}
			total += st.Blocks * 512
			return nil
		})
	}
	return total
}
