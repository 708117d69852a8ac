package instancestore

import (
	"fmt"
	"sort"
	"strings"
)

// instanceStoreFamilies are the instance families that can boot an instance
// store-backed AMI (all of them previous generation), with the virtualization types each
// one runs. Every current-generation family needs an EBS root volume.
var instanceStoreFamilies = map[string][]string{
	"c1": {"paravirtual"},
	"c3": {"hvm", "paravirtual"},
	"d2": {"hvm"},
	"i2": {"hvm"},
	"m1": {"paravirtual"},
	"m2": {"paravirtual"},
	"m3": {"hvm", "paravirtual"},
	"r3": {"hvm"},
	"x1": {"hvm"},
}

func instanceFamily(instanceType string) string {
	family, _, _ := strings.Cut(instanceType, ".")
	return family
}

func familyNames() string {
	names := make([]string, 0, len(instanceStoreFamilies))
	for f := range instanceStoreFamilies {
		names = append(names, f)
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// isInstanceStoreFamily tells whether instanceType can boot an instance store-backed
// AMI (and so run an instance store-backed source).
func isInstanceStoreFamily(instanceType string) bool {
	_, ok := instanceStoreFamilies[instanceFamily(instanceType)]
	return ok
}

// checkVirtualization fails when instanceType cannot run an AMI of the given
// virtualization type.
func checkVirtualization(instanceType, virtualization string) error {
	kinds, ok := instanceStoreFamilies[instanceFamily(instanceType)]
	if !ok {
		return fmt.Errorf("instance_type %q cannot run an instance store-backed source AMI: only the previous-generation families %s can (for example m3.medium or c3.large); use one of them, or an EBS-backed source AMI, which any type runs", instanceType, familyNames())
	}
	for _, k := range kinds {
		if k == virtualization {
			return nil
		}
	}
	return fmt.Errorf("instance_type %q cannot run the %s source AMI: the %s family runs %s AMIs only", instanceType, virtualization, instanceFamily(instanceType), strings.Join(kinds, " and "))
}
