package instancestore

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"strings"
	"testing"

	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"golang.org/x/crypto/ssh"

	s3bundle "github.com/instancestore/packer-plugin-instancestore/s3"
)

func TestTemporaryPublicKeysOnlyForPackersKey(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := ssh.NewSignerFromKey(priv)
	want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))

	c := testConfig(t)
	comm := &c.RunConfig.Comm
	if comm.SSHTemporaryKeyPairName == "" {
		t.Fatal("Prepare named no temporary key pair")
	}
	// As StepKeyPair leaves it after creating the temporary key pair.
	comm.SSHKeyPairName, comm.SSHPrivateKey = comm.SSHTemporaryKeyPairName, pem.EncodeToMemory(block)
	keys, err := temporaryPublicKeys(c)
	if err != nil || len(keys) != 1 || keys[0] != want {
		t.Fatalf("temporary keys %v (%v), want [%s]", keys, err, want)
	}
	st := new(multistep.BasicStateBag)
	st.Put(keyBucket, (*s3bundle.Bucket)(nil))
	st.Put(keyAccountID, "123456789012")
	st.Put(keySourceImage, &ec2types.Image{})
	dc, err := driverConfig(c, nil, nil, st)
	if err != nil {
		t.Fatal(err)
	}
	if got := dc.Job.Volume.RemoveAuthorizedKeys; len(got) != 1 || got[0] != want {
		t.Errorf("the agent request removes %v, want [%s]", got, want)
	}

	// The user's own key pair stays in the image.
	own := testConfig(t, "ssh_keypair_name", "mine", "ssh_private_key_file", "testdata/user-key.pem")
	own.RunConfig.Comm.SSHPrivateKey = pem.EncodeToMemory(block)
	if keys, err := temporaryPublicKeys(own); err != nil || len(keys) != 0 {
		t.Errorf("with ssh_keypair_name the key %v (%v) would be removed", keys, err)
	}
}
