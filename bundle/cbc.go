package bundle

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"io"
)

// cbcWriter encrypts what is written to it with AES-128-CBC and writes the ciphertext
// to w. Close adds the PKCS#7 padding (a whole block of 16s when the plaintext is a
// multiple of 16), so the output is what `openssl enc -aes-128-cbc -K .. -iv ..` makes.
type cbcWriter struct {
	w       io.Writer
	mode    cipher.BlockMode
	pending []byte // plaintext not yet a whole block, len < aes.BlockSize
	buf     []byte // ciphertext scratch, reused
	closed  bool
}

// cbcChunk bounds the scratch buffer: large writes are encrypted in pieces.
const cbcChunk = 256 << 10

func newCBCWriter(w io.Writer, k Key) (*cbcWriter, error) {
	block, err := aes.NewCipher(k.Key[:])
	if err != nil {
		return nil, err
	}
	return &cbcWriter{
		w:       w,
		mode:    cipher.NewCBCEncrypter(block, k.IV[:]),
		pending: make([]byte, 0, aes.BlockSize),
		buf:     make([]byte, cbcChunk),
	}, nil
}

func (c *cbcWriter) Write(p []byte) (int, error) {
	if c.closed {
		return 0, errors.New("aes-cbc: write after close")
	}
	n := len(p)
	if len(c.pending) > 0 {
		k := min(aes.BlockSize-len(c.pending), len(p))
		c.pending = append(c.pending, p[:k]...)
		p = p[k:]
		if len(c.pending) < aes.BlockSize {
			return n, nil
		}
		if err := c.encrypt(c.pending); err != nil {
			return 0, err
		}
		c.pending = c.pending[:0]
	}
	for len(p) >= aes.BlockSize {
		k := min(len(p), cbcChunk) &^ (aes.BlockSize - 1)
		if err := c.encrypt(p[:k]); err != nil {
			return 0, err
		}
		p = p[k:]
	}
	c.pending = append(c.pending, p...)
	return n, nil
}

// encrypt encrypts whole blocks (at most cbcChunk bytes) and writes them.
func (c *cbcWriter) encrypt(p []byte) error {
	out := c.buf[:len(p)]
	c.mode.CryptBlocks(out, p)
	_, err := c.w.Write(out)
	return err
}

// Close pads and writes the last block. It does not close the underlying writer.
func (c *cbcWriter) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	pad := aes.BlockSize - len(c.pending)
	for range pad {
		c.pending = append(c.pending, byte(pad))
	}
	return c.encrypt(c.pending)
}
