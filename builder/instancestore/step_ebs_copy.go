package instancestore

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/instancestore/packer-plugin-instancestore/agent/driver"
	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
)

// ebs_copy: the EBS-backed AMI of the very same image. The volume, attach, detach,
// snapshot and register steps are the shared ones (builder/instancestore/steps, as in
// the instancestore-ebs post-processor); the write is stepEBSCopyWrite, below.

// ebsCopySteps are ebs_copy's steps, none without the block. They run on the source
// instance right after the bundle is uploaded.
func (b *Builder) ebsCopySteps() []multistep.Step {
	c := &b.config
	e := c.EBSCopy
	if e == nil {
		return nil
	}
	return []multistep.Step{
		&steps.StepCreateVolume{
			Options:      &e.EBSVolumeOptions,
			OptionPrefix: "ebs_copy.",
			ImageSize:    bundledImageSize,
			// The build's tag: the sweep's and a lost CreateVolume's way to it.
			Tags:      map[string]string{"Name": "packer ebs_copy " + e.AMIName, BuildTagKey: c.buildID},
			UniqueTag: BuildTagKey,
		},
		&steps.StepAttachVolume{},
		&stepEBSCopyWrite{},
		&steps.StepDetachVolume{},
		&steps.StepSnapshot{
			Description: "packer-plugin-instancestore: root of " + e.AMIName,
			Tags:        func(state multistep.StateBag) ([]ec2types.Tag, error) { return ebsCopyTags(c, state) },
		},
		&steps.StepRegisterEBSAMI{Image: ebsCopyImage},
	}
}

// ebsCopyPreflight checks, before anything is launched, that no AMI has ebs_copy's
// name (the amazon plugin's check of ami_name; skipped, as for ami_name, with
// force_deregister, which does not remove an older EBS copy).
func (b *Builder) ebsCopyPreflight() []multistep.Step {
	c := &b.config
	if c.EBSCopy == nil {
		return nil
	}
	return []multistep.Step{&awscommon.StepPreValidate{DestAmiName: c.EBSCopy.AMIName, ForceDeregister: c.AMIForceDeregister}}
}

// bundleResult is the uploaded bundle's driver result (stepBundle's).
func bundleResult(state multistep.StateBag) (*driver.Result, error) {
	res, _ := state.Get(keyBundleResult).(*driver.Result)
	if res == nil || res.Manifest == nil {
		return nil, errors.New("ebs_copy: no bundle was uploaded: nothing to copy")
	}
	return res, nil
}

func bundledImageSize(state multistep.StateBag) (int64, error) {
	res, err := bundleResult(state)
	if err != nil {
		return 0, err
	}
	return res.Manifest.Size, nil
}

// stepEBSCopyWrite has the agent write the uploaded bundle onto the attached volume
// (driver.Restore): it streams the parts back from S3 through presigned GETs, checks
// each part's SHA-1 and the image digest against the manifest, and writes only data
// (the fresh volume reads zeros), with nothing on scratch. The key is the one the
// host made for the bundle, so no X.509 material is needed. Nothing to undo: the
// volume goes in StepCreateVolume's Cleanup.
type stepEBSCopyWrite struct{}

func (s *stepEBSCopyWrite) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	c := configOf(state)
	res, err := bundleResult(state)
	if err != nil {
		return halt(state, err)
	}
	comm, ok := state.Get(keyCommunicator).(packersdk.Communicator)
	if !ok {
		return halt(state, errors.New("ebs_copy: no communicator to the source instance"))
	}
	vol := steps.StateString(state, steps.KeyEBSVolume)
	ui(state).Say(fmt.Sprintf("Writing the image onto volume %s from the uploaded bundle...", vol))
	_, err = driver.Restore(ctx, driver.RestoreConfig{
		Comm: comm, Ui: ui(state), Bucket: bucketOf(state),
		ManifestXML: res.Manifest.Marshal(), Key: res.Key,
		VolumeID: vol, AttachName: steps.StateString(state, steps.KeyEBSDevice),
		Architecture: c.AMIArchitecture, AgentBinary: c.AgentBinary,
	})
	if err != nil {
		return haltf(state, "ebs_copy: writing the image onto volume %s: %w", vol, err)
	}
	return multistep.ActionContinue
}

func (s *stepEBSCopyWrite) Cleanup(multistep.StateBag) {}

// buildInfo is the template data of descriptions and tags, as the amazon steps
// render them: the build region and the source AMI.
func buildInfo(state multistep.StateBag) *awscommon.BuildInfoTemplate {
	info := &awscommon.BuildInfoTemplate{BuildRegion: region(state)}
	if img, ok := state.Get(keySourceImage).(*ec2types.Image); ok {
		info.SourceAMI, info.SourceAMIName = aws.ToString(img.ImageId), aws.ToString(img.Name)
		info.SourceAMICreationDate = aws.ToString(img.CreationDate)
		info.SourceAMIOwner, info.SourceAMIOwnerName = aws.ToString(img.OwnerId), aws.ToString(img.ImageOwnerAlias)
		info.SourceAMITags = map[string]string{}
		for _, t := range img.Tags {
			info.SourceAMITags[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
	}
	return info
}

// ebsCopyTags are ebs_copy's tags, rendered with the build's data.
func ebsCopyTags(c *Config, state multistep.StateBag) ([]ec2types.Tag, error) {
	tags, err := awscommon.TagMap(c.EBSCopy.AMITags).EC2Tags(c.ctx, region(state), state)
	if err != nil {
		return nil, fmt.Errorf("ebs_copy.tags: %w", err)
	}
	return tags, nil
}

// ebsCopyImage is the EBS-backed AMI: the instance store-backed AMI's architecture,
// hvm with BootMode legacy-bios (the image's MBR boot code), ENA support, the root
// device root_device_name, and the same instance store volumes (ephemeralN of
// ami_block_device_mappings and the source's).
func ebsCopyImage(state multistep.StateBag) (*steps.EBSImage, error) {
	c := configOf(state)
	e := c.EBSCopy
	res, err := bundleResult(state)
	if err != nil {
		return nil, err
	}
	ictx := c.ctx
	ictx.Data = buildInfo(state)
	desc, err := interpolate.Render(e.AMIDescription, &ictx)
	if err != nil {
		return nil, fmt.Errorf("ebs_copy.ami_description: %w", err)
	}
	tags, err := ebsCopyTags(c, state)
	if err != nil {
		return nil, err
	}
	size, err := e.SizeGiB("ebs_copy.", res.Manifest.Size)
	if err != nil {
		return nil, err
	}
	// The instance store-backed AMI's mapping (registerInput's).
	mappings := amiMappings(c, sourceImage(state))
	im := &steps.EBSImage{
		Name: e.AMIName, Description: desc,
		Architecture:   ec2types.ArchitectureValues(c.AMIArchitecture),
		Virtualization: ec2types.VirtualizationTypeHvm,
		RootDevice:     e.RootDeviceName,
		VolumeSize:     size,
		VolumeType:     e.VolumeType,
		InstanceStore:  driver.EC2Mappings(mappings),
		EnaSupport:     e.ENASupport,
		IMDSSupport:    c.AMIIMDSSupport,
		Tags:           tags,
	}
	if c.AMISriovNetSupport {
		im.SriovNetSupport = aws.String("simple")
	}
	return im, nil
}
