package bundle

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestTemporaryPublicKeys(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	privPEM := string(pem.EncodeToMemory(block))
	sshPub, _ := ssh.NewPublicKey(pub)
	want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub)))

	for _, c := range []struct {
		name string
		data map[string]interface{}
		want []string
	}{
		{"temporary key pair (amazon-ebs)", map[string]interface{}{"ConnType": "ssh", "SSHPrivateKey": privPEM, "SSHPrivateKeyFile": "", "SSHAgentAuth": false}, []string{want}},
		{"generated public key too", map[string]interface{}{"ConnType": "ssh", "SSHPublicKey": want + "\n", "SSHPrivateKey": privPEM}, []string{want, want}},
		{"the user's key file", map[string]interface{}{"ConnType": "ssh", "SSHPrivateKey": privPEM, "SSHPrivateKeyFile": "/home/me/.ssh/id"}, nil},
		{"an SSH agent", map[string]interface{}{"ConnType": "ssh", "SSHAgentAuth": true}, nil},
		{"password", map[string]interface{}{"ConnType": "ssh", "SSHPrivateKey": ""}, nil},
		{"winrm", map[string]interface{}{"ConnType": "winrm", "SSHPrivateKey": privPEM}, nil},
		{"no provision data", nil, nil},
	} {
		got, err := temporaryPublicKeys(c.data)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	if _, err := temporaryPublicKeys(map[string]interface{}{"SSHPrivateKey": "not a key"}); err == nil || !strings.Contains(err.Error(), "temporary SSH key") {
		t.Errorf("a broken key: %v", err)
	}
}
