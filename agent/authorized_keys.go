package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// removeAuthorizedKeys deletes the lines of keys (matched by key type and base64 blob,
// whatever the options or comment) from every authorized_keys and authorized_keys2
// under the home directories of the image rooted at root: those /etc/passwd names,
// /root and /home/*. Other lines, the files' owners and modes stay. A symbolic link
// on the way is not followed: it could point out of the image.
func removeAuthorizedKeys(root string, keys []string, logf func(string, ...any)) error {
	drop := map[string]bool{}
	for _, k := range keys {
		if id := keyID(k); id != "" {
			drop[id] = true
		}
	}
	if len(drop) == 0 {
		return nil
	}
	homes := map[string]bool{"/root": true}
	if pw, err := os.ReadFile(filepath.Join(root, "etc", "passwd")); err == nil {
		for _, line := range strings.Split(string(pw), "\n") {
			if f := strings.Split(line, ":"); len(f) >= 6 && strings.HasPrefix(f[5], "/") {
				homes[filepath.Clean(f[5])] = true
			}
		}
	}
	if entries, err := os.ReadDir(filepath.Join(root, "home")); err == nil {
		for _, e := range entries {
			homes["/home/"+e.Name()] = true
		}
	}
	for home := range homes {
		for _, name := range []string{"authorized_keys", "authorized_keys2"} {
			rel := filepath.Join(home, ".ssh", name)
			p, ok := inImage(root, rel)
			if !ok {
				continue
			}
			n, err := dropLines(p, drop)
			if err != nil {
				return fmt.Errorf("removing the temporary SSH key from %s in the image: %w", rel, err)
			}
			if n > 0 {
				logf("removed %d temporary SSH key line(s) from %s in the image", n, rel)
			}
		}
	}
	return nil
}

// inImage returns root+rel when every component of it exists in the image and none
// is a symbolic link, and the last is a regular file.
func inImage(root, rel string) (string, bool) {
	p := root
	for _, c := range strings.Split(strings.Trim(rel, "/"), "/") {
		p = filepath.Join(p, c)
		st, err := os.Lstat(p)
		if err != nil || st.Mode()&os.ModeSymlink != 0 {
			return "", false
		}
	}
	st, err := os.Lstat(p)
	return p, err == nil && st.Mode().IsRegular()
}

// keyID is "type blob" of an authorized_keys line or public key, options skipped.
func keyID(line string) string {
	f := strings.Fields(line)
	for i := 0; i+1 < len(f); i++ {
		if strings.HasPrefix(f[i], "ssh-") || strings.HasPrefix(f[i], "ecdsa-") || strings.HasPrefix(f[i], "sk-") {
			return f[i] + " " + f[i+1]
		}
	}
	return ""
}

// dropLines rewrites p in place (same inode, owner and mode) without the lines whose
// key is in drop, and returns how many went.
func dropLines(p string, drop map[string]bool) (int, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	var out bytes.Buffer
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); !strings.HasPrefix(strings.TrimSpace(line), "#") && drop[keyID(line)] {
			n++
			continue
		}
		out.Write(sc.Bytes())
		out.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return 0, err
	}
	if _, err := f.Write(out.Bytes()); err != nil {
		f.Close()
		return 0, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, err
	}
	return n, f.Close()
}
