package instancestore

import (
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// temporaryPublicKeys is the public key of the SSH key pair Packer made for this build
// (none with ssh_keypair_name, ssh_private_key_file or an agent): the agent deletes its
// lines from the image's authorized_keys, so the AMI does not open to the build's key.
func temporaryPublicKeys(c *Config) ([]string, error) {
	comm := &c.RunConfig.Comm
	if comm.Type != "" && comm.Type != "ssh" || comm.SSHTemporaryKeyPairName == "" || comm.SSHKeyPairName != comm.SSHTemporaryKeyPairName || len(comm.SSHPrivateKey) == 0 {
		return nil, nil
	}
	signer, err := ssh.ParsePrivateKey(comm.SSHPrivateKey)
	if err != nil {
		return nil, fmt.Errorf("reading the temporary SSH key to remove it from the image: %w", err)
	}
	return []string{strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))}, nil
}
