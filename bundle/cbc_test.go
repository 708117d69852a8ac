package bundle

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"math/rand/v2"
	"testing"
)

// pkcs7CBC is the reference: pad, then encrypt in one call.
func pkcs7CBC(k Key, plain []byte) []byte {
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	padded := append(bytes.Clone(plain), bytes.Repeat([]byte{byte(pad)}, pad)...)
	block, _ := aes.NewCipher(k.Key[:])
	out := make([]byte, len(padded))
	cipher.NewCBCEncrypter(block, k.IV[:]).CryptBlocks(out, padded)
	return out
}

func TestCBCWriterMatchesReference(t *testing.T) {
	k := testKey(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 15, 16, 17, 31, 32, 33, 4096, cbcChunk - 1, cbcChunk, cbcChunk + 16, 3*cbcChunk + 7} {
		plain := make([]byte, n)
		for i := range plain {
			plain[i] = byte(rng.Uint32())
		}
		want := pkcs7CBC(k, plain)
		for _, split := range []string{"whole", "bytes", "random"} {
			t.Run(fmt.Sprintf("%d/%s", n, split), func(t *testing.T) {
				var out bytes.Buffer
				w, err := newCBCWriter(&out, k)
				if err != nil {
					t.Fatal(err)
				}
				for p := plain; len(p) > 0; {
					m := len(p)
					switch split {
					case "bytes":
						m = 1
					case "random":
						m = min(len(p), 1+rng.IntN(70000))
					}
					if split == "bytes" && n > 4096 {
						m = min(len(p), 1+rng.IntN(40))
					}
					if k, err := w.Write(p[:m]); err != nil || k != m {
						t.Fatalf("Write = %d, %v", k, err)
					}
					p = p[m:]
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				if len(out.Bytes())%aes.BlockSize != 0 || len(out.Bytes()) != n/16*16+16 {
					t.Errorf("ciphertext is %d bytes for %d bytes of plaintext, want %d", out.Len(), n, n/16*16+16)
				}
				if !bytes.Equal(out.Bytes(), want) {
					t.Errorf("ciphertext differs from crypto/cipher CBC with PKCS#7 at byte %d", firstDiff(out.Bytes(), want))
				}
				if err := w.Close(); err != nil {
					t.Errorf("second Close = %v", err)
				}
				if _, err := w.Write([]byte{1}); err == nil {
					t.Error("Write after Close succeeded")
				}
			})
		}
	}
}

// TestCBCWriterOpenSSL decrypts our ciphertext with the openssl command line.
func TestCBCWriterOpenSSL(t *testing.T) {
	needTools(t, "openssl")
	k := testKey(t)
	for _, n := range []int{0, 16, 1000, 48} {
		plain := bytes.Repeat([]byte("0123456789abcdefX"), 100)[:n]
		var out bytes.Buffer
		w, _ := newCBCWriter(&out, k)
		w.Write(plain)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		got := run(t, &out, "openssl", "enc", "-d", "-aes-128-cbc", "-K", k.KeyHex(), "-iv", k.IVHex())
		if !bytes.Equal(got, plain) {
			t.Errorf("%d bytes: openssl decrypts to %d different bytes", n, len(got))
		}
	}
}

type failWriter struct{ err error }

func (f failWriter) Write(p []byte) (int, error) { return 0, f.err }

func TestCBCWriterReportsErrors(t *testing.T) {
	boom := fmt.Errorf("disk full")
	w, _ := newCBCWriter(failWriter{boom}, testKey(t))
	if _, err := w.Write(make([]byte, 64)); err != boom {
		t.Errorf("Write = %v, want the underlying error", err)
	}
	w, _ = newCBCWriter(failWriter{boom}, testKey(t))
	w.Write(make([]byte, 5))
	if err := w.Close(); err != boom {
		t.Errorf("Close = %v, want the underlying error", err)
	}
}
