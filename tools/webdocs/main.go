// Command webdocs turns the docs rendered by `packer-sdc renderdocs` into the layout
// of the Packer integrations portal (.web-docs/README.md and
// .web-docs/components/<type>/<name>/README.md), and checks that every link in that
// layout works on the portal. scripts/check-generated.sh runs both.
//
//	go run ./tools/webdocs compile -src RENDERED -dst .web-docs -org instancestore
//	go run ./tools/webdocs check -repo . .web-docs
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "compile":
		fs := flag.NewFlagSet("compile", flag.ExitOnError)
		src := fs.String("src", ".docs", "docs rendered by packer-sdc renderdocs")
		dst := fs.String("dst", ".web-docs", "integration docs folder (its metadata.hcl is kept)")
		org := fs.String("org", "instancestore", "the integration's organization on the portal")
		_ = fs.Parse(os.Args[2:])
		if err := Compile(*src, *dst, *org); err != nil {
			fmt.Fprintln(os.Stderr, "webdocs compile:", err)
			os.Exit(1)
		}
	case "check":
		fs := flag.NewFlagSet("check", flag.ExitOnError)
		repo := fs.String("repo", ".", "repository root (for links to files of the repository)")
		_ = fs.Parse(os.Args[2:])
		if fs.NArg() != 1 {
			usage()
		}
		problems, err := Check(fs.Arg(0), *repo)
		if err != nil {
			fmt.Fprintln(os.Stderr, "webdocs check:", err)
			os.Exit(1)
		}
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, p)
		}
		if len(problems) > 0 {
			fmt.Fprintf(os.Stderr, "webdocs check: %d broken links in %s\n", len(problems), fs.Arg(0))
			os.Exit(1)
		}
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: webdocs compile -src DIR -dst DIR [-org ORG] | webdocs check [-repo DIR] WEBDOCS")
	os.Exit(2)
}
