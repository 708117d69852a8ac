package bundle

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseManifestRejects(t *testing.T) {
	good := string(readSampleManifest(t))
	// edit returns the sample with old replaced by new (old must occur).
	edit := func(old, new string) string {
		if !strings.Contains(good, old) {
			t.Fatalf("sample has no %q", old)
		}
		return strings.Replace(good, old, new, 1)
	}
	const decl = "<?xml version='1.0'?>"
	body := strings.TrimPrefix(good, decl)
	manyParts := func(n int) string {
		var b strings.Builder
		fmt.Fprintf(&b, "<parts count='%d'>", n)
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "<part index='%d'><filename>p.%d</filename><digest algorithm='SHA1'>5050918fef7063c39bd76a064b5acd28b152786a</digest></part>", i, i)
		}
		b.WriteString("</parts>")
		return b.String()
	}
	sampleParts := good[strings.Index(good, "<parts ") : strings.Index(good, "</parts>")+len("</parts>")]

	cases := []struct {
		name, doc, wantErr string
	}{
		{"doctype", decl + "<!DOCTYPE manifest [<!ENTITY x 'y'>]>" + body, "DOCTYPE"},
		{"entity reference", edit("<name>sample</name>", "<name>&x;</name>"), "not well-formed"},
		{"external entity", decl + `<!DOCTYPE m SYSTEM "file:///etc/passwd">` + body, "DOCTYPE"},
		{"processing instruction", edit("<version>2007", "<?php x?><version>2007"), "processing instruction <?php?>"},
		{"second declaration", edit("<manifest>", "<?xml version='1.0'?><manifest>"), "processing instruction"},
		{"encoding", strings.Replace(good, decl, "<?xml version='1.0' encoding='ISO-8859-1'?>", 1), "ISO-8859-1"},
		{"comment", edit("<image>", "<!-- hi --><image>"), "comments are not allowed"},
		{"wrong order", edit("<user>123456789012</user><type>machine</type>", "<type>machine</type><user>123456789012</user>"), "found <type> where <user> belongs"},
		{"unknown element", edit("<kernel_id>", "<color>red</color><kernel_id>"), "unexpected element <color>"},
		{"unknown element at end", edit("</manifest>", "<extra/></manifest>"), "unexpected element <extra>"},
		{"missing element", edit("<type>machine</type>", ""), "found <digest> where <type> belongs"},
		{"unknown attribute", edit("<image>", "<image id='1'>"), "manifest/image>: unknown attribute id"},
		{"wrong algorithm", edit("<digest algorithm='SHA1'>16f0", "<digest algorithm='MD5'>16f0"), "algorithm='MD5', want 'SHA1'"},
		{"namespace", edit("<image>", "<x:image>"), "namespaces are not allowed"},
		{"text in container", edit("<image>", "<image>hello"), "unexpected text"},
		{"child in leaf", edit("<name>sample</name>", "<name><b>sample</b></name>"), "manifest/image/name>: unexpected element <b>"},
		{"bad size", edit("<size>2097152</size>", "<size>+2097152</size>"), "not a plain decimal"},
		{"leading zero", edit("<size>2097152</size>", "<size>02097152</size>"), "not a plain decimal"},
		{"absurd size", edit("<size>2097152</size>", "<size>99999999999999</size>"), "manifest <size>"},
		{"absurd count", edit("<parts count='1'>", "<parts count='1000000'>"), "more than the 2048 parts"},
		{"count mismatch", edit("<parts count='1'>", "<parts count='2'>"), "count='2' but 1 child"},
		{"index gap", edit("<part index='0'>", "<part index='1'>"), "want indexes 0..0 in order"},
		{"too many parts", strings.Replace(good, sampleParts, manyParts(2049), 1), "more than the 2048 parts"},
		{"bundled size too small for parts", strings.Replace(good, sampleParts, manyParts(3), 1), "manifest <bundled_size>"},
		{"path filename", edit("<filename>sample.part.0", "<filename>../x"), "not a plain file name"},
		{"dotdot filename", edit("<filename>sample.part.0", "<filename>.."), "is not a file name"},
		{"backslash filename", edit("<filename>sample.part.0", `<filename>a\b`), "not a plain file name"},
		{"empty filename", edit("<filename>sample.part.0", "<filename>"), "empty file name"},
		{"NUL filename", edit("<filename>sample.part.0", "<filename>a&#0;b"), "not well-formed"},
		{"control char filename", edit("<filename>sample.part.0", "<filename>a&#1;b"), "not well-formed"},
		{"slash image name", edit("<name>sample</name>", "<name>/etc/passwd</name>"), "manifest <name>"},
		{"bad digest", edit("16f07cd2c7b2067a6ed5fa1f51fb0f2c70249448", "16F07CD2C7B2067A6ED5FA1F51FB0F2C70249448"), "manifest <digest>"},
		{"bad user", edit("<user>123456789012", "<user>1234-5678-9012"), "manifest <user>"},
		{"bad version", edit("<version>2007-10-10", "<version>2008-01-01"), "manifest <version>"},
		{"bad arch", edit("<architecture>x86_64", "<architecture>arm64"), "manifest <architecture>"},
		{"unsorted mappings", edit("<mapping><virtual>ami</virtual><device>sda1</device></mapping><mapping><virtual>ephemeral0</virtual><device>sdb</device></mapping>",
			"<mapping><virtual>ephemeral0</virtual><device>sdb</device></mapping><mapping><virtual>ami</virtual><device>sda1</device></mapping>"), "not sorted"},
		{"bad virtual", edit("<virtual>ami</virtual>", "<virtual>abc</virtual>"), "virtual name \"abc\""},
		{"empty kernel", edit("<kernel_id>aki-12345678</kernel_id>", "<kernel_id></kernel_id>"), "omit the element"},
		{"unclosed", good[:len(good)-len("</manifest>")], "<manifest> is not closed"},
		{"trailing text", good + "junk", "text outside"},
		{"two roots", good + "<manifest/>", "second root"},
		{"wrong root", decl + "<manifesto/>", "want <manifest>"},
		{"empty", "", "no <manifest> element"},
		{"huge", decl + "<manifest>" + strings.Repeat(" ", maxManifestBytes) + "</manifest>", "larger than any real manifest"},
		{"deep", decl + "<manifest>" + strings.Repeat("<a>", 100) + strings.Repeat("</a>", 100) + "</manifest>", "nested too deep"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseManifest([]byte(c.doc))
			if err == nil {
				t.Fatalf("accepted")
			}
			if !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("error %q, want it to mention %q", err, c.wantErr)
			}
		})
	}
}

func TestParseManifestAccepts(t *testing.T) {
	good := string(readSampleManifest(t))
	for name, doc := range map[string]string{
		"no declaration":   strings.TrimPrefix(good, "<?xml version='1.0'?>"),
		"double quotes":    strings.Replace(good, "<?xml version='1.0'?>", `<?xml version="1.0" encoding="UTF-8"?>`, 1),
		"trailing newline": good + "\n",
		"unsigned":         good[:strings.Index(good, "<signature>")] + "</manifest>",
	} {
		if _, err := ParseManifest([]byte(doc)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
