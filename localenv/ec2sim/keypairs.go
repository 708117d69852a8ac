package ec2sim

import (
	"crypto/ed25519"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

type keyPairXML struct {
	ID          string `xml:"keyPairId"`
	Name        string `xml:"keyName"`
	Fingerprint string `xml:"keyFingerprint"`
	Type        string `xml:"keyType"`
	PublicKey   string `xml:"publicKey,omitempty"`
	CreateTime  string `xml:"createTime"`
	Tags        []tag  `xml:"tagSet>item"`
}

func colonHex(b []byte) string {
	h := hex.EncodeToString(b)
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

func validKeyName(name string) error {
	if name == "" {
		return apiErr(400, "MissingParameter", "The request must contain the parameter KeyName")
	}
	if len(name) > 255 {
		return apiErr(400, "InvalidParameterValue", "Value (%s) for parameter keyName is invalid. Length exceeds maximum of 255.", name)
	}
	return nil
}

func createKeyPair(c *call) (metaSetter, error) {
	name := c.p.get("KeyName")
	if err := validKeyName(name); err != nil {
		return nil, err
	}
	keyType := c.p.get("KeyType")
	if keyType == "" {
		keyType = "rsa"
	}
	format := c.p.get("KeyFormat")
	if format == "" {
		format = "pem"
	}
	if format != "pem" {
		return nil, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter KeyFormat is invalid; the simulator produces pem only", format)
	}
	var material, fp, pub string
	switch keyType {
	case "rsa":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		material = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
		// EC2's fingerprint of a key it created: SHA-1 of the PKCS#8 DER private key.
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		sum := sha1.Sum(der)
		fp = colonHex(sum[:])
		sp, _ := ssh.NewPublicKey(&k.PublicKey)
		pub = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	case "ed25519":
		pk, sk, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		b, err := ssh.MarshalPrivateKey(sk, "")
		if err != nil {
			return nil, err
		}
		material = string(pem.EncodeToMemory(b))
		sp, _ := ssh.NewPublicKey(pk)
		sum := sha256.Sum256(sp.Marshal())
		fp = base64.StdEncoding.EncodeToString(sum[:])
		pub = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	default:
		return nil, apiErr(400, "InvalidParameterValue", "Value (%s) for parameter KeyType is invalid. Valid values are rsa and ed25519.", keyType)
	}
	tags, err := c.p.tagSpecs("key-pair")
	if err != nil {
		return nil, err
	}
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if err := c.stillWanted(); err != nil {
		return nil, err
	}
	if _, ok := st.keyPairs[c.region+"/"+name]; ok {
		return nil, apiErr(400, "InvalidKeyPair.Duplicate", "The keypair already exists")
	}
	kp := &keyPair{id: newID("key"), name: name, region: c.region, fingerprint: fp, keyType: keyType, publicKey: pub + " " + name, created: time.Now().UTC(), seq: st.next()}
	st.keyPairs[c.region+"/"+name] = kp
	st.setTags(kp.id, tags)
	return &struct {
		ResponseMeta
		Name        string `xml:"keyName"`
		Fingerprint string `xml:"keyFingerprint"`
		Material    string `xml:"keyMaterial"`
		ID          string `xml:"keyPairId"`
		Tags        []tag  `xml:"tagSet>item"`
	}{Name: name, Fingerprint: fp, Material: material, ID: kp.id, Tags: st.tagsOf(kp.id)}, nil
}

func importKeyPair(c *call) (metaSetter, error) {
	name := c.p.get("KeyName")
	if err := validKeyName(name); err != nil {
		return nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(c.p.get("PublicKeyMaterial"))
	if err != nil || len(raw) == 0 {
		return nil, apiErr(400, "InvalidParameterValue", "Value for parameter PublicKeyMaterial is invalid: it must be the base64 of an OpenSSH public key")
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey(raw)
	if err != nil {
		return nil, apiErr(400, "InvalidKey.Format", "Key is not in valid OpenSSH public key format")
	}
	var fp, keyType string
	switch pk.Type() {
	case ssh.KeyAlgoRSA:
		keyType = "rsa"
		// EC2's fingerprint of an imported RSA key: MD5 of the DER public key.
		cp := pk.(ssh.CryptoPublicKey).CryptoPublicKey()
		der, _ := x509.MarshalPKIXPublicKey(cp)
		sum := md5.Sum(der)
		fp = colonHex(sum[:])
	case ssh.KeyAlgoED25519:
		keyType = "ed25519"
		sum := sha256.Sum256(pk.Marshal())
		fp = base64.StdEncoding.EncodeToString(sum[:])
	default:
		return nil, apiErr(400, "InvalidKey.Format", "Key type %s is not supported; EC2 takes rsa and ed25519", pk.Type())
	}
	tags, err := c.p.tagSpecs("key-pair")
	if err != nil {
		return nil, err
	}
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, ok := st.keyPairs[c.region+"/"+name]; ok {
		return nil, apiErr(400, "InvalidKeyPair.Duplicate", "The keypair already exists")
	}
	kp := &keyPair{id: newID("key"), name: name, region: c.region, fingerprint: fp, keyType: keyType,
		publicKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))) + " " + name, created: time.Now().UTC(), seq: st.next()}
	st.keyPairs[c.region+"/"+name] = kp
	st.setTags(kp.id, tags)
	return &struct {
		ResponseMeta
		Name        string `xml:"keyName"`
		Fingerprint string `xml:"keyFingerprint"`
		ID          string `xml:"keyPairId"`
		Tags        []tag  `xml:"tagSet>item"`
	}{Name: name, Fingerprint: fp, ID: kp.id, Tags: st.tagsOf(kp.id)}, nil
}

func deleteKeyPair(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	name, id := c.p.get("KeyName"), c.p.get("KeyPairId")
	if name == "" && id == "" {
		return nil, apiErr(400, "MissingParameter", "The request must contain the parameter KeyName or KeyPairId")
	}
	for k, kp := range st.keyPairs {
		if kp.region == c.region && (kp.name == name || kp.id == id) {
			delete(st.keyPairs, k)
			delete(st.tags, kp.id)
		}
	}
	// EC2 answers true even for a key pair that does not exist.
	return &struct {
		ResponseMeta
		Return bool   `xml:"return"`
		ID     string `xml:"keyPairId,omitempty"`
	}{Return: true, ID: id}, nil
}

func describeKeyPairs(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	names, ids := c.p.list("KeyName"), c.p.list("KeyPairId")
	all := st.regionKeyPairs(c.region)
	for _, n := range names {
		if _, ok := st.keyPairs[c.region+"/"+n]; !ok {
			return nil, apiErr(400, "InvalidKeyPair.NotFound", "The key pair '%s' does not exist", n)
		}
	}
	for _, id := range ids {
		found := false
		for _, kp := range all {
			found = found || kp.id == id
		}
		if !found {
			return nil, apiErr(400, "InvalidKeyPair.NotFound", "The key pair '%s' does not exist", id)
		}
	}
	incPub, _, _ := c.p.boolean("IncludePublicKey")
	fields := map[string]fieldFunc[*keyPair]{
		"key-name":    func(k *keyPair) []string { return []string{k.name} },
		"key-pair-id": func(k *keyPair) []string { return []string{k.id} },
		"fingerprint": func(k *keyPair) []string { return []string{k.fingerprint} },
		"key-type":    func(k *keyPair) []string { return []string{k.keyType} },
	}
	resp := &struct {
		ResponseMeta
		Keys []keyPairXML `xml:"keySet>item"`
	}{}
	for _, kp := range all {
		if len(names) > 0 && !contains(names, kp.name) || len(ids) > 0 && !contains(ids, kp.id) {
			continue
		}
		ok, err := matchFilters(kp, c.p.filters(), fields, st.tagsOf(kp.id))
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		x := keyPairXML{ID: kp.id, Name: kp.name, Fingerprint: kp.fingerprint, Type: kp.keyType,
			CreateTime: kp.created.Format(time.RFC3339), Tags: st.tagsOf(kp.id)}
		if incPub {
			x.PublicKey = kp.publicKey
		}
		resp.Keys = append(resp.Keys, x)
	}
	return resp, nil
}
