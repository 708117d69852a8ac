package bundle

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// ParseManifest reads a manifest strictly: the elements of section 3 of the format in
// their order and nothing else, no DOCTYPE, entity declarations, comments or
// processing instructions besides the XML declaration, no unknown attributes, and a
// manifest that passes Validate. Every error names the element at fault.
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > maxManifestBytes {
		return nil, fmt.Errorf("manifest: %d bytes, larger than any real manifest (%d)", len(data), maxManifestBytes)
	}
	root, err := parseTree(data)
	if err != nil {
		return nil, err
	}
	m, err := manifestFromTree(root)
	if err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// node is one element of the parsed document.
type node struct {
	name  string
	path  string // "manifest/image/size", for errors
	attrs []xml.Attr
	text  strings.Builder
	kids  []*node
}

const maxManifestDepth = 6

// parseTree turns the document into a tree of nodes, refusing every XML feature a
// manifest never uses.
func parseTree(data []byte) (*node, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true
	var (
		root  *node
		stack []*node
		first = true
	)
	for {
		tok, err := d.RawToken()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("manifest: not well-formed XML: %w", err)
		}
		isFirst := first
		first = false
		switch t := tok.(type) {
		case xml.ProcInst:
			if t.Target != "xml" || !isFirst {
				return nil, fmt.Errorf("manifest: processing instruction <?%s?> is not allowed", t.Target)
			}
			if err := checkDeclaration(t.Inst); err != nil {
				return nil, err
			}
		case xml.Directive:
			return nil, fmt.Errorf("manifest: <!%s> is not allowed (no DOCTYPE or entity declarations in a manifest)", firstWord(t))
		case xml.Comment:
			return nil, fmt.Errorf("manifest: XML comments are not allowed")
		case xml.StartElement:
			if t.Name.Space != "" {
				return nil, fmt.Errorf("manifest: element <%s:%s>: namespaces are not allowed", t.Name.Space, t.Name.Local)
			}
			n := &node{name: t.Name.Local, attrs: t.Attr}
			if len(stack) == 0 {
				if root != nil {
					return nil, fmt.Errorf("manifest: second root element <%s>", n.name)
				}
				root = n
				n.path = n.name
			} else {
				parent := stack[len(stack)-1]
				parent.kids = append(parent.kids, n)
				n.path = parent.path + "/" + n.name
			}
			if len(stack) >= maxManifestDepth {
				return nil, fmt.Errorf("manifest: element <%s> nested too deep", n.path)
			}
			stack = append(stack, n)
		case xml.EndElement:
			// RawToken does not match end tags; do it here.
			if len(stack) == 0 || stack[len(stack)-1].name != t.Name.Local || t.Name.Space != "" {
				return nil, fmt.Errorf("manifest: unexpected end tag </%s>", t.Name.Local)
			}
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) == 0 {
				if len(bytes.TrimSpace(t)) != 0 {
					return nil, fmt.Errorf("manifest: text outside the <manifest> element")
				}
				continue
			}
			stack[len(stack)-1].text.Write(t)
		}
	}
	if len(stack) != 0 {
		return nil, fmt.Errorf("manifest: element <%s> is not closed", stack[len(stack)-1].path)
	}
	if root == nil {
		return nil, errors.New("manifest: no <manifest> element")
	}
	return root, nil
}

// The decoder expands only the predefined entities and character references (strict
// mode refuses any other entity) but does not check the declaration: do that here.
var reDeclaration = regexp.MustCompile(`^\s*version\s*=\s*['"]1\.0['"](\s+encoding\s*=\s*['"](?i:utf-8)['"])?\s*$`)

func checkDeclaration(inst []byte) error {
	if !reDeclaration.Match(inst) {
		return fmt.Errorf("manifest: XML declaration %q: want version 1.0 and no encoding other than UTF-8", inst)
	}
	return nil
}

func firstWord(b []byte) string {
	s := string(b)
	if i := strings.IndexAny(s, " \t\r\n["); i >= 0 {
		s = s[:i]
	}
	if len(s) > 20 {
		s = s[:20]
	}
	return s
}

// cursor walks the children of one element in order.
type cursor struct {
	parent *node
	i      int
}

func kids(n *node) (*cursor, error) {
	if len(bytes.TrimSpace([]byte(n.text.String()))) != 0 {
		return nil, fmt.Errorf("manifest <%s>: unexpected text between elements", n.path)
	}
	return &cursor{parent: n}, nil
}

func (c *cursor) peek(name string) bool {
	return c.i < len(c.parent.kids) && c.parent.kids[c.i].name == name
}

// want returns the next child, which must be called name.
func (c *cursor) want(name string) (*node, error) {
	if !c.peek(name) {
		if c.i < len(c.parent.kids) {
			return nil, fmt.Errorf("manifest <%s>: found <%s> where <%s> belongs (unknown element or wrong order)", c.parent.path, c.parent.kids[c.i].name, name)
		}
		return nil, fmt.Errorf("manifest <%s>: missing <%s>", c.parent.path, name)
	}
	n := c.parent.kids[c.i]
	c.i++
	return n, nil
}

// optional returns the next child if it is called name, else nil.
func (c *cursor) optional(name string) *node {
	if !c.peek(name) {
		return nil
	}
	n := c.parent.kids[c.i]
	c.i++
	return n
}

// end checks that nothing follows.
func (c *cursor) end() error {
	if c.i < len(c.parent.kids) {
		return fmt.Errorf("manifest <%s>: unexpected element <%s> (unknown element or wrong order)", c.parent.path, c.parent.kids[c.i].name)
	}
	return nil
}

// checkAttrs accepts exactly the attributes named in want (name -> required value, or
// "" for any value) and returns their values.
func checkAttrs(n *node, want ...string) (map[string]string, error) {
	got := map[string]string{}
	for _, a := range n.attrs {
		if a.Name.Space != "" {
			return nil, fmt.Errorf("manifest <%s>: attribute %s:%s is not allowed", n.path, a.Name.Space, a.Name.Local)
		}
		known := false
		for i := 0; i+1 < len(want); i += 2 {
			if want[i] == a.Name.Local {
				known = true
				if want[i+1] != "" && a.Value != want[i+1] {
					return nil, fmt.Errorf("manifest <%s>: %s='%s', want '%s'", n.path, a.Name.Local, a.Value, want[i+1])
				}
			}
		}
		if !known {
			return nil, fmt.Errorf("manifest <%s>: unknown attribute %s", n.path, a.Name.Local)
		}
		if _, dup := got[a.Name.Local]; dup {
			return nil, fmt.Errorf("manifest <%s>: attribute %s given twice", n.path, a.Name.Local)
		}
		got[a.Name.Local] = a.Value
	}
	for i := 0; i+1 < len(want); i += 2 {
		if _, ok := got[want[i]]; !ok {
			return nil, fmt.Errorf("manifest <%s>: missing attribute %s", n.path, want[i])
		}
	}
	return got, nil
}

// leafText returns the text of an element that must have no children.
func leafText(n *node, attrs ...string) (string, error) {
	if len(n.kids) > 0 {
		return "", fmt.Errorf("manifest <%s>: unexpected element <%s> inside", n.path, n.kids[0].name)
	}
	if _, err := checkAttrs(n, attrs...); err != nil {
		return "", err
	}
	s := n.text.String()
	if err := checkText(n.path, s); err != nil {
		return "", err
	}
	return s, nil
}

// wantLeaf reads the next child as a leaf called name.
func (c *cursor) wantLeaf(name string, attrs ...string) (string, error) {
	n, err := c.want(name)
	if err != nil {
		return "", err
	}
	return leafText(n, attrs...)
}

// optionalLeaf reads the next child as a leaf if it is called name; an empty element
// is refused because Marshal would drop it.
func (c *cursor) optionalLeaf(name string) (string, error) {
	n := c.optional(name)
	if n == nil {
		return "", nil
	}
	s, err := leafText(n)
	if err == nil && s == "" {
		err = fmt.Errorf("manifest <%s>: empty (omit the element instead)", n.path)
	}
	return s, err
}

var reDecimal = regexp.MustCompile(`^(0|[1-9][0-9]{0,17})$`)

// parseDecimal reads a canonical non-negative decimal (no sign, no leading zeros) so
// that serialization gives the same bytes back.
func parseDecimal(what, s string) (int64, error) {
	if !reDecimal.MatchString(s) {
		return 0, fmt.Errorf("manifest %s: %q is not a plain decimal number", what, s)
	}
	return strconv.ParseInt(s, 10, 64)
}

func manifestFromTree(root *node) (*Manifest, error) {
	if root.name != "manifest" {
		return nil, fmt.Errorf("manifest: root element is <%s>, want <manifest>", root.name)
	}
	if _, err := checkAttrs(root); err != nil {
		return nil, err
	}
	m := &Manifest{}
	c, err := kids(root)
	if err != nil {
		return nil, err
	}
	if m.Version, err = c.wantLeaf("version"); err != nil {
		return nil, err
	}
	if err := parseBundler(c, m); err != nil {
		return nil, err
	}
	mc, err := c.want("machine_configuration")
	if err != nil {
		return nil, err
	}
	if err := parseMachineConfiguration(mc, m); err != nil {
		return nil, err
	}
	img, err := c.want("image")
	if err != nil {
		return nil, err
	}
	if err := parseImage(img, m); err != nil {
		return nil, err
	}
	if m.Signature, err = c.optionalLeaf("signature"); err != nil {
		return nil, err
	}
	if err := c.end(); err != nil {
		return nil, err
	}
	return m, nil
}

func parseBundler(parent *cursor, m *Manifest) error {
	b, err := parent.want("bundler")
	if err != nil {
		return err
	}
	if _, err := checkAttrs(b); err != nil {
		return err
	}
	c, err := kids(b)
	if err != nil {
		return err
	}
	if m.Bundler.Name, err = c.wantLeaf("name"); err != nil {
		return err
	}
	if m.Bundler.Version, err = c.wantLeaf("version"); err != nil {
		return err
	}
	if m.Bundler.Release, err = c.wantLeaf("release"); err != nil {
		return err
	}
	return c.end()
}

func parseMachineConfiguration(mc *node, m *Manifest) error {
	// SignedBytes assumes <machine_configuration> and <image> carry no attributes.
	if _, err := checkAttrs(mc); err != nil {
		return err
	}
	c, err := kids(mc)
	if err != nil {
		return err
	}
	if m.Architecture, err = c.wantLeaf("architecture"); err != nil {
		return err
	}
	if bdm := c.optional("block_device_mapping"); bdm != nil {
		if _, err := checkAttrs(bdm); err != nil {
			return err
		}
		bc, err := kids(bdm)
		if err != nil {
			return err
		}
		for bc.peek("mapping") {
			mn, _ := bc.want("mapping")
			if _, err := checkAttrs(mn); err != nil {
				return err
			}
			mcur, err := kids(mn)
			if err != nil {
				return err
			}
			var v BlockDeviceMapping
			if v.Virtual, err = mcur.wantLeaf("virtual"); err != nil {
				return err
			}
			if v.Device, err = mcur.wantLeaf("device"); err != nil {
				return err
			}
			if err := mcur.end(); err != nil {
				return err
			}
			if n := len(m.BlockDeviceMappings); n > 0 && m.BlockDeviceMappings[n-1].Virtual > v.Virtual {
				return fmt.Errorf("manifest <%s>: mappings are not sorted by virtual name (%s after %s)", bdm.path, v.Virtual, m.BlockDeviceMappings[n-1].Virtual)
			}
			m.BlockDeviceMappings = append(m.BlockDeviceMappings, v)
		}
		if err := bc.end(); err != nil {
			return err
		}
		if len(m.BlockDeviceMappings) == 0 {
			return fmt.Errorf("manifest <%s>: empty (omit the element instead)", bdm.path)
		}
	}
	if m.KernelID, err = c.optionalLeaf("kernel_id"); err != nil {
		return err
	}
	if m.RamdiskID, err = c.optionalLeaf("ramdisk_id"); err != nil {
		return err
	}
	if pc := c.optional("product_codes"); pc != nil {
		if m.ProductCodes, err = leafList(pc, "product_code"); err != nil {
			return err
		}
	}
	return c.end()
}

// leafList reads an element holding one or more leaves called name.
func leafList(n *node, name string) ([]string, error) {
	if _, err := checkAttrs(n); err != nil {
		return nil, err
	}
	c, err := kids(n)
	if err != nil {
		return nil, err
	}
	var out []string
	for c.peek(name) {
		s, err := c.wantLeaf(name)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if err := c.end(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("manifest <%s>: empty (omit the element instead)", n.path)
	}
	return out, nil
}

func parseImage(img *node, m *Manifest) error {
	if _, err := checkAttrs(img); err != nil {
		return err
	}
	c, err := kids(img)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"name", &m.Name}, {"user", &m.User}, {"type", &m.Type}} {
		if *f.dst, err = c.wantLeaf(f.name); err != nil {
			return err
		}
	}
	if anc := c.optional("ancestry"); anc != nil {
		if m.Ancestors, err = leafList(anc, "ancestor_ami_id"); err != nil {
			return err
		}
	}
	if m.Digest, err = c.wantLeaf("digest", "algorithm", "SHA1"); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"size", &m.Size}, {"bundled_size", &m.BundledSize}} {
		s, err := c.wantLeaf(f.name)
		if err != nil {
			return err
		}
		if *f.dst, err = parseDecimal("<"+img.path+"/"+f.name+">", s); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name  string
		dst   *string
		attrs []string
	}{
		{"ec2_encrypted_key", &m.EC2EncryptedKey, []string{"algorithm", "AES-128-CBC"}},
		{"user_encrypted_key", &m.UserEncryptedKey, []string{"algorithm", "AES-128-CBC"}},
		{"ec2_encrypted_iv", &m.EC2EncryptedIV, nil},
		{"user_encrypted_iv", &m.UserEncryptedIV, nil},
	} {
		if *f.dst, err = c.wantLeaf(f.name, f.attrs...); err != nil {
			return err
		}
	}
	parts, err := c.want("parts")
	if err != nil {
		return err
	}
	if err := parseParts(parts, m); err != nil {
		return err
	}
	return c.end()
}

func parseParts(parts *node, m *Manifest) error {
	attrs, err := checkAttrs(parts, "count", "")
	if err != nil {
		return err
	}
	count, err := parseDecimal("<"+parts.path+" count>", attrs["count"])
	if err != nil {
		return err
	}
	if count > maxManifestParts {
		return fmt.Errorf("manifest <%s>: count='%d', more than the %d parts a 10 GiB image can need", parts.path, count, maxManifestParts)
	}
	if count != int64(len(parts.kids)) {
		return fmt.Errorf("manifest <%s>: count='%d' but %d child elements", parts.path, count, len(parts.kids))
	}
	c, err := kids(parts)
	if err != nil {
		return err
	}
	m.Parts = make([]ManifestPart, 0, count)
	for i := 0; i < int(count); i++ {
		pn, err := c.want("part")
		if err != nil {
			return err
		}
		a, err := checkAttrs(pn, "index", "")
		if err != nil {
			return err
		}
		idx, err := parseDecimal("<"+pn.path+" index>", a["index"])
		if err != nil {
			return err
		}
		if idx != int64(i) {
			return fmt.Errorf("manifest <%s index='%d'>: found at position %d, want indexes 0..%d in order", pn.path, idx, i, count-1)
		}
		pc, err := kids(pn)
		if err != nil {
			return err
		}
		p := ManifestPart{Index: i}
		if p.Filename, err = pc.wantLeaf("filename"); err != nil {
			return err
		}
		if p.Digest, err = pc.wantLeaf("digest", "algorithm", "SHA1"); err != nil {
			return err
		}
		if err := pc.end(); err != nil {
			return err
		}
		m.Parts = append(m.Parts, p)
	}
	return c.end()
}
