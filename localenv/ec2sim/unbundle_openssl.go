package ec2sim

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// The simulator decodes bundles with implementations independent of the plugin's own
// bundle reader, so that a bug shared by our writer and our reader cannot pass:
// openssl for the RSA unwrap and AES-128-CBC, gzip, and GNU tar for the sparse member.

// opensslKeyFile writes the EC2 private key where openssl can read it (once, 0600).
func (s *Server) opensslKeyFile() (string, error) {
	s.keyFileOnce.Do(func() {
		p := filepath.Join(s.cfg.DataDir, "ec2-key-openssl.pem")
		data := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(s.ec2Key.key)})
		s.keyFileErr = os.WriteFile(p, data, 0o600)
		s.keyFile = p
	})
	return s.keyFile, s.keyFileErr
}

// opensslUnwrap decrypts one hex-encoded RSAES-PKCS1-v1_5 value into the 32-character
// hex string it wraps.
func opensslUnwrap(ctx context.Context, keyFile, wrapped string) (string, error) {
	ct, err := hex.DecodeString(wrapped)
	if err != nil {
		return "", fmt.Errorf("not hex: %w", err)
	}
	cmd := exec.CommandContext(ctx, "openssl", "pkeyutl", "-decrypt", "-inkey", keyFile, "-pkeyopt", "rsa_padding_mode:pkcs1")
	cmd.Stdin = bytes.NewReader(ct)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("openssl pkeyutl: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	v := string(out)
	if len(v) != 32 || strings.Trim(v, "0123456789abcdef") != "" {
		return "", errors.New("the unwrapped value is not 32 lowercase hex characters")
	}
	return v, nil
}

// partStream reads the parts in order, checking each one's SHA-1 and counting bytes.
type partStream struct {
	src     *s3PartSource
	parts   []struct{ name, digest string }
	i       int
	cur     io.ReadCloser
	h       [20]byte
	hash    interface{ Sum([]byte) []byte }
	w       io.Writer
	bundled int64
	err     error // the first part that failed its check, reported before what openssl says
}

func (p *partStream) Read(b []byte) (int, error) {
	for {
		if p.cur == nil {
			if p.i == len(p.parts) {
				return 0, io.EOF
			}
			rc, err := p.src.OpenPart(p.parts[p.i].name)
			if err != nil {
				p.err = err
				return 0, err
			}
			h := sha1.New()
			p.cur, p.hash, p.w = rc, h, h
		}
		n, err := p.cur.Read(b)
		p.w.Write(b[:n])
		p.bundled += int64(n)
		if err == io.EOF {
			p.cur.Close()
			p.cur = nil
			if got := hex.EncodeToString(p.hash.Sum(nil)); got != p.parts[p.i].digest {
				p.err = fmt.Errorf("part %s has SHA-1 %s, the manifest says %s", p.parts[p.i].name, got, p.parts[p.i].digest)
				return n, p.err
			}
			p.i++
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

// opensslUnbundle decrypts, decompresses and untars the bundle into imgPath with
// openssl, gzip and GNU tar, checking part digests, the bundled size, the tar stream's
// SHA-1 and the image size against the manifest.
func opensslUnbundle(ctx context.Context, keyHex, ivHex string, m manifestFacts, src *s3PartSource, imgPath string) error {
	work, err := os.MkdirTemp(filepath.Dir(imgPath), ".unbundle-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// AES-128-CBC is Go's crypto/cipher (not the plugin's bundle reader): openssl enc
	// takes the raw key only on its command line (-K), where any local user sees it.
	keyB, err1 := hex.DecodeString(keyHex)
	ivB, err2 := hex.DecodeString(ivHex)
	if err1 != nil || err2 != nil {
		return errors.New("the unwrapped key or IV is not hex")
	}
	gz := exec.CommandContext(ctx, "gzip", "-dc")
	tr := exec.CommandContext(ctx, "tar", "-x", "--sparse", "--no-same-owner", "-C", work, "-f", "-")
	ps := &partStream{src: src, parts: m.parts}
	var gzErr, trErr bytes.Buffer
	gz.Stderr, tr.Stderr = &gzErr, &trErr
	gzIn, err := gz.StdinPipe()
	if err != nil {
		return err
	}
	tarOut, err := gz.StdoutPipe()
	if err != nil {
		return err
	}
	tarIn, err := tr.StdinPipe()
	if err != nil {
		return err
	}
	for _, c := range []*exec.Cmd{gz, tr} {
		if err := c.Start(); err != nil {
			cancel()
			return fmt.Errorf("starting %s: %w", c.Path, err)
		}
	}
	decDone := make(chan error, 1)
	go func() {
		err := cbcDecrypt(gzIn, ps, keyB, ivB)
		gzIn.Close()
		decDone <- err
	}()
	// The tar stream's SHA-1 is taken between gzip and tar.
	h := sha1.New()
	var wg sync.WaitGroup
	var copyErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, copyErr = io.Copy(io.MultiWriter(tarIn, h), tarOut)
		tarIn.Close()
	}()
	wg.Wait()
	errGz, errTr := gz.Wait(), tr.Wait()
	errDec := <-decDone
	switch {
	case ps.err != nil:
		return ps.err
	case errDec != nil:
		return fmt.Errorf("AES-128-CBC: %w", errDec)
	case errGz != nil:
		return fmt.Errorf("gzip -d: %v: %s", errGz, strings.TrimSpace(gzErr.String()))
	case copyErr != nil:
		return fmt.Errorf("reading the tar stream: %w", copyErr)
	case errTr != nil:
		return fmt.Errorf("tar -x: %v: %s", errTr, strings.TrimSpace(trErr.String()))
	}
	if ps.i != len(ps.parts) {
		return fmt.Errorf("only %d of %d parts were read", ps.i, len(ps.parts))
	}
	if ps.bundled != m.bundledSize {
		return fmt.Errorf("the parts hold %d bytes, the manifest's bundled_size is %d", ps.bundled, m.bundledSize)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != m.digest {
		return fmt.Errorf("the tar stream has SHA-1 %s, the manifest's digest is %s", got, m.digest)
	}
	ents, err := os.ReadDir(work)
	if err != nil {
		return err
	}
	if len(ents) != 1 || !ents[0].Type().IsRegular() || ents[0].Name() != m.name {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return fmt.Errorf("the tar holds %v, want the one file %q that the manifest names", names, m.name)
	}
	fi, err := ents[0].Info()
	if err != nil {
		return err
	}
	if fi.Size() != m.size {
		return fmt.Errorf("the image is %d bytes, the manifest's size is %d", fi.Size(), m.size)
	}
	return os.Rename(filepath.Join(work, m.name), imgPath)
}

// manifestFacts is what the unbundling checks against.
type manifestFacts struct {
	name              string
	digest            string
	size, bundledSize int64
	parts             []struct{ name, digest string }
}

// cbcDecrypt decrypts AES-128-CBC with PKCS#7 padding from r to w, holding back the
// last block until the end to strip and check the padding.
func cbcDecrypt(w io.Writer, r io.Reader, key, iv []byte) error {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	mode := cipher.NewCBCDecrypter(blk, iv)
	buf := make([]byte, 64<<10)
	var held []byte
	for {
		n, rerr := io.ReadFull(r, buf)
		chunk := append(held, buf[:n]...)
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			if len(chunk) == 0 || len(chunk)%aes.BlockSize != 0 {
				return fmt.Errorf("the ciphertext is %d bytes, not a whole number of blocks", len(chunk))
			}
			mode.CryptBlocks(chunk, chunk)
			pad := int(chunk[len(chunk)-1])
			if pad == 0 || pad > aes.BlockSize || !bytes.Equal(chunk[len(chunk)-pad:], bytes.Repeat([]byte{byte(pad)}, pad)) {
				return errors.New("bad PKCS#7 padding (wrong key, or the parts were changed)")
			}
			_, err := w.Write(chunk[:len(chunk)-pad])
			return err
		}
		if rerr != nil {
			return rerr
		}
		// Decrypt all whole blocks but the last one.
		keep := len(chunk) - aes.BlockSize
		keep -= keep % aes.BlockSize
		out := chunk[:keep]
		mode.CryptBlocks(out, out)
		if _, err := w.Write(out); err != nil {
			return err
		}
		held = append([]byte(nil), chunk[keep:]...)
	}
}
