package ec2sim

import (
	"strconv"
	"strings"
)

// nitroFamily is what the simulator knows of a current-generation family beyond
// types.go's table: whether EBS volumes show up as NVMe devices (the Nitro system),
// whether the AMI must have ENA support, and the NVMe instance store a "d" type has.
type nitroFamily struct {
	nvme        bool // EBS volumes (the root too) are NVMe devices: /dev/nvme0n1 ...
	enaRequired bool // EC2 refuses AMIs without enaSupport on these types
	storeGiB    int  // NVMe instance store of the .large size (0: none); doubles per size step
}

// nitroFamilies' details. t2 is Xen (no NVMe, no ENA); i3 is Xen too, with NVMe
// instance store (EBS stays xvd) and ENA that EC2 does not enforce at launch (an AMI
// without it starts, without network).
var nitroTable = map[string]nitroFamily{
	"t3": {true, true, 0}, "t3a": {true, true, 0}, "t4g": {true, true, 0},
	"m5": {true, true, 0}, "m5a": {true, true, 0}, "m5d": {true, true, 75},
	"m6i": {true, true, 0}, "m6id": {true, true, 118}, "m6g": {true, true, 0},
	"m7i": {true, true, 0}, "m7g": {true, true, 0},
	"c5": {true, true, 0}, "c5d": {true, true, 50}, "c6i": {true, true, 0}, "c6g": {true, true, 0},
	"c7i": {true, true, 0}, "c7g": {true, true, 0},
	"r5": {true, true, 0}, "r6i": {true, true, 0}, "r7i": {true, true, 0},
	"i4i": {true, true, 468},
	"i3":  {false, false, 475},
	"t2":  {false, false, 0},
}

// sizeSteps scales a family's .large instance store to other sizes (one disk; EC2's
// bigger sizes split it over two to four disks, which the simulator does not).
var sizeSteps = map[string]int{"large": 1, "xlarge": 2, "2xlarge": 4, "4xlarge": 8, "8xlarge": 16}

// nitroInfo fills the NVMe, ENA and instance store facts of a current-generation type.
func nitroInfo(fam, size string, info *instanceTypeInfo) {
	f, ok := nitroTable[fam]
	if !ok {
		return
	}
	info.nvme, info.enaRequired = f.nvme, f.enaRequired
	if f.storeGiB > 0 {
		if n, ok := sizeSteps[size]; ok {
			info.storeGiB = f.storeGiB * n
		}
	}
}

// nvmeDeviceName is the name a Nitro guest sees for the n-th NVMe EBS device (0: the
// root). The VM launcher gives each the volume id as its serial, as EC2 does, so udev's
// /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol... links work.
func nvmeDeviceName(n int) string { return "/dev/nvme" + strconv.Itoa(n) + "n1" }

// nvmeSerial is the NVMe serial EC2 gives an EBS volume: its id without the dash.
func nvmeSerial(volID string) string { return strings.Replace(volID, "-", "", 1) }

type ebsInfoXML struct {
	NvmeSupport string `xml:"nvmeSupport"` // required | unsupported
}

type netInfoXML struct {
	EnaSupport string `xml:"enaSupport"` // required | supported | unsupported
}

type storageInfoXML struct {
	TotalSizeInGB int              `xml:"totalSizeInGB"`
	Disks         []storageDiskXML `xml:"disks>item"`
	NvmeSupport   string           `xml:"nvmeSupport"`
}

type storageDiskXML struct {
	SizeInGB int    `xml:"sizeInGB"`
	Count    int    `xml:"count"`
	Type     string `xml:"type"`
}

// nitroTypeXML fills DescribeInstanceTypes' EBS, network and instance store facts.
func nitroTypeXML(info instanceTypeInfo, hypervisor *string, ebs *ebsInfoXML, net *netInfoXML, storage **storageInfoXML) {
	ebs.NvmeSupport, net.EnaSupport = "unsupported", "unsupported"
	if info.nvme {
		ebs.NvmeSupport = "required"
	} else if !info.instanceStoreRoot {
		*hypervisor = "xen" // t2, i3
	}
	if info.enaRequired {
		net.EnaSupport = "required"
	}
	if info.storeGiB > 0 {
		*storage = &storageInfoXML{TotalSizeInGB: info.storeGiB, NvmeSupport: "required",
			Disks: []storageDiskXML{{SizeInGB: info.storeGiB, Count: 1, Type: "ssd"}}}
	}
}
