package bundle

import (
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// temporaryPublicKeys is the public key of the SSH key pair the builder made for this
// build (amazon-ebs's temporary key pair, for one), read from the provision data Packer
// hands provisioners: the agent deletes its lines from the image's authorized_keys, so
// the AMI does not open to the build's key (amazon-ebs clears it only after the
// provisioners, with ssh_clear_authorized_keys). A key the user gave
// (ssh_private_key_file) or an SSH agent's is the user's own and stays.
func temporaryPublicKeys(data map[string]interface{}) ([]string, error) {
	str := func(k string) string { s, _ := data[k].(string); return s }
	if t := str("ConnType"); t != "" && t != "ssh" {
		return nil, nil
	}
	if agent, _ := data["SSHAgentAuth"].(bool); agent || str("SSHPrivateKeyFile") != "" {
		return nil, nil
	}
	var keys []string
	if pub := strings.TrimSpace(str("SSHPublicKey")); pub != "" {
		keys = append(keys, pub)
	}
	if priv := str("SSHPrivateKey"); priv != "" {
		signer, err := ssh.ParsePrivateKey([]byte(priv))
		if err != nil {
			return nil, fmt.Errorf("reading the build's temporary SSH key to remove it from the image: %w", err)
		}
		keys = append(keys, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))))
	}
	return keys, nil
}
