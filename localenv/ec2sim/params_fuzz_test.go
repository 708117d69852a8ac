package ec2sim

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/instancestore/packer-plugin-instancestore/internal/fuzzcheck"
)

// FuzzParams: the Query-protocol decoder never panics on any body, costs a bounded
// allocation, and its views agree with the raw parameters: list and structs follow
// the numbered keys in increasing order, every value comes from the key it names,
// and a request written the SDK's way (Filter.N.Name, Filter.N.Value.M) decodes back
// to the filters it was made from.
func FuzzParams(f *testing.F) {
	f.Add("Action=DescribeImages&ImageId.1=ami-1&ImageId.2=ami-2&Filter.1.Name=state&Filter.1.Value.1=available", "a,b;c")
	f.Add("TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v", "x")
	f.Add("ImageId.10=b&ImageId.9=a&ImageId.0=z&ImageId.-1=y&ImageId.x=w&Filter.2.Value.1=", "")
	f.Add("MinCount=1&MaxCount=99999999999999999999&EbsOptimized=maybe", "name;v1,v2;;")
	fuzzcheck.CapMinimize(time.Second)
	f.Fuzz(func(t *testing.T, body, filters string) {
		if len(body) > 16<<10 || len(filters) > 4<<10 {
			return
		}
		fuzzcheck.Allocs(t, 256<<10+64*uint64(len(body)), func() { checkParams(t, body) })

		// filters "name,v1,v2;name2,v3" written as the SDK writes them reads back.
		var want []filter
		v := url.Values{}
		for i, spec := range strings.Split(filters, ";") {
			parts := strings.Split(spec, ",")
			fl := filter{name: parts[0], values: parts[1:]}
			v.Set(fmt.Sprintf("Filter.%d.Name", i+1), fl.name)
			for j, val := range fl.values {
				v.Set(fmt.Sprintf("Filter.%d.Value.%d", i+1, j+1), val)
			}
			want = append(want, fl)
		}
		form, err := url.ParseQuery(v.Encode())
		if err != nil {
			t.Fatalf("cannot parse our own encoding: %v", err)
		}
		got := newParams(form).filters()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("filters %v decoded as %v", want, got)
		}
	})
}

func checkParams(t *testing.T, body string) {
	form, err := url.ParseQuery(body)
	if err != nil && len(form) == 0 {
		return
	}
	p := newParams(form)
	for _, name := range []string{"ImageId", "Filter", "TagSpecification", "Filter.1.Value", "Tag"} {
		idx := p.indices(name)
		if !sort.IntsAreSorted(idx) {
			t.Fatalf("indices of %s not sorted: %v", name, idx)
		}
		for i, n := range idx {
			if n <= 0 || i > 0 && idx[i-1] == n {
				t.Fatalf("indices of %s: %v", name, idx)
			}
			found := false
			for k := range form {
				if strings.HasPrefix(k, name+"."+strconv.Itoa(n)) {
					found = true
				}
			}
			if !found {
				t.Fatalf("index %d of %s names no parameter", n, name)
			}
		}
		list := p.list(name)
		if len(list) != len(idx) {
			t.Fatalf("list %s has %d values for %d indices", name, len(list), len(idx))
		}
		for i, n := range idx {
			if list[i] != form.Get(name+"."+strconv.Itoa(n)) {
				t.Fatalf("%s.%d is %q, list says %q", name, n, form.Get(name+"."+strconv.Itoa(n)), list[i])
			}
		}
		if len(p.structs(name)) != len(idx) {
			t.Fatalf("structs and indices of %s disagree", name)
		}
	}
	_ = p.filters()
	_, _ = p.tagSpecs("instance")
	_, _, _ = p.boolean("EbsOptimized")
	_, _ = p.integer("MaxCount", 1)
}
