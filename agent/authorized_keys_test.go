package agent

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRemoveAuthorizedKeys(t *testing.T) {
	root := t.TempDir()
	temp := "ssh-rsa AAAAB3NzaTEMPORARY packer_6745"
	own := "ssh-ed25519 AAAAC3NzaOWN user@laptop"
	write := func(rel, data string, mode os.FileMode) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("etc/passwd", "root:x:0:0:root:/root:/bin/bash\nsvc:x:999:999::/srv/svc:/bin/sh\n", 0o644)
	admin := write("home/admin/.ssh/authorized_keys", own+"\n"+temp+"\n", 0o600)
	rootKeys := write("root/.ssh/authorized_keys", `no-port-forwarding,command="echo hi" ssh-rsa AAAAB3NzaTEMPORARY other-comment`+"\n# "+temp+"\n", 0o644)
	svc := write("srv/svc/.ssh/authorized_keys2", temp+"\n", 0o600)
	// A link out of the image is not followed.
	outside := filepath.Join(t.TempDir(), "authorized_keys")
	if err := os.WriteFile(outside, []byte(temp+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "home/linked/.ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "home/linked/.ssh/authorized_keys")); err != nil {
		t.Fatal(err)
	}

	if err := removeAuthorizedKeys(root, []string{"ssh-rsa AAAAB3NzaTEMPORARY"}, t.Logf); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{admin: own + "\n", rootKeys: "# " + temp + "\n", svc: "", outside: temp + "\n"} {
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if st, _ := os.Stat(rootKeys); st.Mode().Perm() != 0o644 {
		t.Errorf("mode changed to %v", st.Mode())
	}
}
