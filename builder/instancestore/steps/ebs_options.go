//go:generate packer-sdc struct-markdown
//go:generate packer-sdc mapstructure-to-hcl2 -type EBSVolumeOptions

package steps

import (
	"fmt"
)

// EBSVolumeOptions are the options of the EBS root volume of every component that
// writes an image onto a new volume and registers its snapshot (the builder's
// `ebs_copy` block, the `instancestore-ebs` post-processor). Components embed it with
// `mapstructure:",squash"`: one definition, one set of checks.
type EBSVolumeOptions struct {
	// The EBS volume type of the new AMI's root volume, and of the volume the image
	// is written onto: `gp2`, `gp3`, `io1`, `io2`, `st1`, `sc1` or `standard`.
	// Default `gp3`.
	VolumeType string `mapstructure:"volume_type" required:"false"`
	// The size of the root volume in GiB. Default: the image's size, rounded up to a
	// whole GiB. A smaller size than that is refused before anything is written.
	VolumeSize int32 `mapstructure:"volume_size" required:"false"`
}

// DefaultEBSVolumeType is the volume type when volume_type is unset.
const DefaultEBSVolumeType = "gp3"

// Prepare applies the default and checks the options; prefix is how the component's
// user reaches them ("ebs_copy." in the builder, "" at the top level).
func (o *EBSVolumeOptions) Prepare(prefix string) []error {
	var errs []error
	switch o.VolumeType {
	case "":
		o.VolumeType = DefaultEBSVolumeType
	case "gp2", "gp3", "io1", "io2", "st1", "sc1", "standard":
	default:
		errs = append(errs, fmt.Errorf("%svolume_type %q: want gp2, gp3, io1, io2, st1, sc1 or standard", prefix, o.VolumeType))
	}
	if o.VolumeSize < 0 {
		errs = append(errs, fmt.Errorf("%svolume_size %d: give a size in GiB, or leave it unset for the image size", prefix, o.VolumeSize))
	}
	return errs
}

// SizeGiB is the root volume's size for an image of imageSize bytes: volume_size, or
// the image's size rounded up to GiB. A volume_size too small for the image is an
// error naming the option (with prefix) and the least size that fits.
func (o *EBSVolumeOptions) SizeGiB(prefix string, imageSize int64) (int32, error) {
	need := int32((imageSize + 1<<30 - 1) >> 30)
	if need == 0 {
		need = 1
	}
	if o.VolumeSize == 0 {
		return need, nil
	}
	if o.VolumeSize < need {
		return 0, fmt.Errorf("%svolume_size %d GiB is smaller than the %d-byte image: use at least %d, or leave it unset", prefix, o.VolumeSize, imageSize, need)
	}
	return o.VolumeSize, nil
}
